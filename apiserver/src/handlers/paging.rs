//! List pagination (`limit` / `continue`) and the list `resourceVersion` /
//! `resourceVersionMatch` semantics. A continue token is, as in kube-apiserver,
//! base64 of `{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<next key>"}`: the next
//! page is served at the same revision, and 410 Expired once that revision has left
//! the kept history.

use serde_json::{json, Value};

use super::Req;
use crate::error::ApiError;
use crate::store::Revision;

/// Where and how much to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPlan {
    /// Revision to serve at (None: the latest).
    pub at: Option<Revision>,
    /// At least this revision must be served (NotOlderThan).
    pub not_older_than: Option<Revision>,
    /// First key to include (from a continue token).
    pub start: Option<String>,
    /// Most items to return (0: all).
    pub limit: usize,
}

/// Reads `limit`, `continue`, `resourceVersion` and `resourceVersionMatch`.
pub fn plan(req: &Req) -> Result<ListPlan, ApiError> {
    let limit = match req.param("limit") {
        None | Some("") => 0,
        Some(s) => s.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {s:?}")))?.max(0) as usize,
    };
    let rv = req.param("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = req.param("resourceVersionMatch").filter(|s| !s.is_empty());
    if let Some(token) = req.param("continue").filter(|s| !s.is_empty()) {
        if rv.is_some() {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        let (at, start) = decode_token(token)?;
        return Ok(ListPlan { at: Some(at), not_older_than: None, start: Some(start), limit });
    }
    let parsed = match rv {
        None => None,
        Some(s) => Some(s.parse::<Revision>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?),
    };
    match (rv_match, parsed) {
        (None, _) | (Some("NotOlderThan"), Some(_)) => {
            Ok(ListPlan { at: None, not_older_than: parsed.filter(|r| *r > 0), start: None, limit })
        }
        (Some("Exact"), Some(r)) if r > 0 => Ok(ListPlan { at: Some(r), not_older_than: None, start: None, limit }),
        (Some("Exact"), _) => Err(ApiError::bad_request(
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\" or an unset resourceVersion",
        )),
        (Some("NotOlderThan"), None) => Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        (Some(other), _) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// The continue token for the page after `next_key` at `rev`.
pub fn encode_token(rev: Revision, next_key: &str) -> String {
    let text = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": next_key}).to_string();
    crate::admission::base64(text.as_bytes())
}

fn decode_token(token: &str) -> Result<(Revision, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes = base64_decode(token).ok_or_else(bad)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?.to_string();
    if !start.starts_with("/registry/") {
        return Err(bad());
    }
    Ok((rev, start))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// 410 for a continue token whose revision has been compacted away.
pub fn expired_token() -> ApiError {
    ApiError::expired(
        "The provided continue parameter is too old to display a consistent list result. \
         You can start a new list without the continue parameter.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        for key in ["/registry/pods/default/a", "/registry/pods/x/web-7d9c5", "/registry/n"] {
            let t = encode_token(42, key);
            assert_eq!(decode_token(&t).unwrap(), (42, key.to_string()));
        }
        assert!(decode_token("!!").is_err());
    }
}
