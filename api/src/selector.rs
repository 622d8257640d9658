//! Label and field selectors, as `?labelSelector=` and `?fieldSelector=` carry them.
//!
//! Grammar (the subset kube-apiserver accepts): comma-separated requirements, each
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`
//! (exists) or `!key` (does not exist). Field selectors accept only `=`, `==`, `!=`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;
use thiserror::Error;

/// A selector that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unable to parse selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Requirement {
    fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Requirement::Equals(k, v) => get(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k).as_deref() != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        }
    }
}

impl Selector {
    /// Parses a label selector string.
    pub fn parse_labels(input: &str) -> Result<Selector, SelectorError> {
        parse(input, true)
    }

    /// Parses a field selector string (only `=`, `==` and `!=`).
    pub fn parse_fields(input: &str) -> Result<Selector, SelectorError> {
        parse(input, false)
    }

    /// Converts a `metav1.LabelSelector` (Deployments, NetworkPolicies...).
    pub fn from_label_selector(sel: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements: Vec<Requirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for expr in sel.match_expressions.iter().flatten() {
            let values = expr.values.clone().unwrap_or_default();
            let key = expr.key.clone();
            requirements.push(match expr.operator.as_str() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                op => {
                    return Err(SelectorError {
                        input: format!("{key} {op}"),
                        reason: format!("unknown operator {op:?}"),
                    })
                }
            });
        }
        Ok(Selector { requirements })
    }

    /// Selects everything whose labels equal `labels` on each key (a Service's selector).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Selector {
        let requirements =
            labels.iter().map(|(k, v)| Requirement::Equals(k.clone(), v.clone())).collect();
        Selector { requirements }
    }

    /// True when the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Matches a label map.
    pub fn matches_labels(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k).cloned());
        self.requirements.iter().all(|r| r.matches(&get))
    }

    /// Matches a JSON object's fields by dotted path (`metadata.name`, `spec.nodeName`,
    /// `status.phase`). A missing field reads as the empty string, as in Kubernetes.
    pub fn matches_fields(&self, object: &Value) -> bool {
        let get = |path: &str| Some(field_value(object, path));
        self.requirements.iter().all(|r| r.matches(&get))
    }
}

/// The value of a dotted field path in a JSON object, as a field selector compares it.
pub fn field_value(object: &Value, path: &str) -> String {
    let mut cur = object;
    for part in path.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse(input: &str, labels: bool) -> Result<Selector, SelectorError> {
    let err = |reason: &str| SelectorError { input: input.to_string(), reason: reason.to_string() };
    let mut requirements = Vec::new();
    for term in split_terms(input).map_err(|r| err(&r))? {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        requirements.push(parse_term(term, labels).map_err(|r| err(&r))?);
    }
    Ok(Selector { requirements })
}

/// Splits on commas that are not inside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err("unbalanced ')'".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    out.push(&input[start..]);
    Ok(out)
}

fn parse_term(term: &str, labels: bool) -> Result<Requirement, String> {
    let key = |k: &str| -> Result<String, String> {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(format!("invalid key {k:?}"));
        }
        Ok(k.to_string())
    };
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, v.trim().to_string()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, v.trim().to_string()));
    }
    if !labels {
        return Err(format!("invalid field selector term {term:?}: expected =, == or !="));
    }
    if let Some(k) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(k)?));
    }
    for (op, notin) in [(" notin ", true), (" in ", false)] {
        if let Some((k, rest)) = term.split_once(op) {
            let values = parse_set(rest)?;
            let k = key(k)?;
            return Ok(if notin { Requirement::NotIn(k, values) } else { Requirement::In(k, values) });
        }
    }
    Ok(Requirement::Exists(key(term)?))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {rest:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_grammar() {
        let s = Selector::parse_labels("app=web,tier!=db,env in (a, b),!legacy,team").unwrap();
        assert_eq!(s.requirements.len(), 5);
        let l = labels(&[("app", "web"), ("env", "b"), ("team", "x")]);
        assert!(s.matches_labels(Some(&l)));
        let l2 = labels(&[("app", "web"), ("env", "c"), ("team", "x")]);
        assert!(!s.matches_labels(Some(&l2)));
        assert!(!s.matches_labels(None));
    }

    #[test]
    fn empty_selector_selects_all() {
        assert!(Selector::parse_labels("").unwrap().matches_labels(None));
    }

    #[test]
    fn bad_selectors_are_errors() {
        assert!(Selector::parse_labels("env in (a").is_err());
        assert!(Selector::parse_fields("spec.nodeName").is_err());
    }

    #[test]
    fn field_selector_like_describe_node() {
        let s = Selector::parse_fields(
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
        )
        .unwrap();
        let pod = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(s.matches_fields(&pod));
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert!(!s.matches_fields(&done));
        let unbound = json!({"spec": {}});
        assert!(Selector::parse_fields("spec.nodeName=").unwrap().matches_fields(&unbound));
    }

    #[test]
    fn from_label_selector_expressions() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]
        }))
        .unwrap();
        let s = Selector::from_label_selector(&sel).unwrap();
        assert!(s.matches_labels(Some(&labels(&[("app", "web")]))));
        assert!(!s.matches_labels(Some(&labels(&[("app", "web"), ("env", "prod")]))));
    }
}
