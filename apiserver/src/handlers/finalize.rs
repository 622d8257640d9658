//! Finalizers and deletion propagation: an object with `metadata.finalizers` is
//! only marked (deletionTimestamp) and removed once its finalizers are gone.
//! `propagationPolicy: Foreground` adds the `foregroundDeletion` finalizer (the
//! garbage collector deletes the dependents first), `Orphan` adds `orphan` (the
//! collector strips the dependents' ownerReferences first); Background removes the
//! object now and lets the collector delete the dependents afterwards.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::objects::{self, object_mut, str_at};
use crate::resources::ResourceInfo;
use crate::server::AppState;
use crate::store::object_revision;

/// The finalizer of a Foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an Orphan deletion.
pub const ORPHAN: &str = "orphan";

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    /// From `propagationPolicy` (or the legacy `orphanDependents`).
    pub fn parse(policy: Option<&str>, orphan_dependents: Option<bool>) -> Result<Option<Self>, ApiError> {
        match (policy, orphan_dependents) {
            (Some("Background"), _) => Ok(Some(Self::Background)),
            (Some("Foreground"), _) => Ok(Some(Self::Foreground)),
            (Some("Orphan"), _) => Ok(Some(Self::Orphan)),
            (Some(other), _) => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
            (None, Some(true)) => Ok(Some(Self::Orphan)),
            (None, _) => Ok(None),
        }
    }

    /// The finalizer this policy adds, if any.
    pub fn finalizer(self) -> Option<&'static str> {
        match self {
            Self::Foreground => Some(FOREGROUND),
            Self::Orphan => Some(ORPHAN),
            Self::Background => None,
        }
    }
}

/// The object's finalizers.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

/// Marks `key` as being deleted (deletionTimestamp, grace period, an added
/// finalizer); the object stays until its finalizers are removed.
pub async fn mark_deleting(
    app: &AppState,
    res: &ResourceInfo,
    key: &str,
    name: &str,
    add: Option<&str>,
    grace: i64,
) -> Result<Value, ApiError> {
    app.db
        .guaranteed_update(key, res.plural, name, |mut obj| {
            let mut list = finalizers(&obj);
            if let Some(f) = add {
                if !list.iter().any(|x| x == f) {
                    list.push(f.to_string());
                }
            }
            let meta = object_mut(&mut obj, "metadata");
            if meta.get("deletionTimestamp").is_none_or(Value::is_null) {
                let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                meta.insert("deletionTimestamp".into(), json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
            }
            let current = meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
            if current.is_none_or(|c| grace < c) {
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            meta.insert("finalizers".into(), json!(list));
            Ok(Some(obj))
        })
        .await
}

/// After an update: an object being deleted whose finalizers are all gone (and,
/// for a scheduled Pod, whose grace period is over) is removed now.
pub async fn complete_if_done(app: &AppState, res: &ResourceInfo, key: &str, obj: &Value) -> Result<bool, ApiError> {
    if obj.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) || !finalizers(obj).is_empty() {
        return Ok(false);
    }
    if res.kind == "Pod" && !str_at(obj, "/spec/nodeName").is_empty() {
        let grace = obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
        if grace > 0 {
            return Ok(false);
        }
    }
    if res.kind == "Namespace" {
        return Ok(false);
    }
    match app.db.delete(key, Some(object_revision(obj))).await {
        Ok(_) => Ok(true),
        Err(crate::store::StoreError::Conflict { .. } | crate::store::StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(ApiError::from_store(e, res.plural, objects::name(obj))),
    }
}
