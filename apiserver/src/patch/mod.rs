//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes
//! strategic merge patch.

pub mod strategic;

use serde_json::Value;

/// The patch formats kube-apiserver accepts (apply-patch excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`), approximated as a strategic
    /// merge of the applied configuration (no field ownership, no pruning).
    Apply,
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the body of the request was in an unknown format: {0}")]
    Decode(String),
    #[error("the server rejected our request due to an error in our request: {0}")]
    Apply(String),
}

impl PatchType {
    /// Maps a Content-Type header to a patch type.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies a patch body to `current`.
pub fn apply(kind: PatchType, current: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let patch: Value = if kind == PatchType::Apply {
        parse_apply_body(body)?
    } else {
        serde_json::from_slice(body).map_err(|e| PatchError::Decode(e.to_string()))?
    };
    let mut doc = current.clone();
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(PatchError::Decode("a merge patch must be a JSON object".into()));
            }
            json_patch::merge(&mut doc, &patch);
        }
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| PatchError::Decode(e.to_string()))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::Apply(e.to_string()))?;
        }
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err(PatchError::Decode("a strategic merge patch must be a JSON object".into()));
            }
            doc = strategic::merge(current, &patch).map_err(PatchError::Apply)?;
        }
    }
    Ok(doc)
}

/// Parses a server-side apply body (YAML or JSON) into a JSON object.
pub fn parse_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    let value: Value = serde_yaml::from_slice(body).map_err(|e| PatchError::Decode(e.to_string()))?;
    if !value.is_object() {
        return Err(PatchError::Decode("an apply configuration must be an object".into()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patch() {
        let cur = json!({"metadata":{"labels":{"a":"1","b":"2"}}});
        let out = apply(PatchType::Merge, &cur, br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#).unwrap();
        assert_eq!(out, json!({"metadata":{"labels":{"b":"2","c":"3"}}}));
        let out = apply(PatchType::Json, &cur, br#"[{"op":"replace","path":"/metadata/labels/a","value":"x"}]"#).unwrap();
        assert_eq!(out["metadata"]["labels"]["a"], "x");
        assert!(apply(PatchType::Json, &cur, br#"[{"op":"test","path":"/x","value":1}]"#).is_err());
        assert!(apply(PatchType::Merge, &cur, b"not json").is_err());
        let out = apply(PatchType::Apply, &cur, b"metadata:\n  labels:\n    c: '3'\n").unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a":"1","b":"2","c":"3"}));
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), Some(PatchType::Apply));
    }
}
