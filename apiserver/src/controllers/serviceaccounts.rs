//! The ServiceAccount controller (kube-controller-manager's `serviceaccount`):
//! every active Namespace has a ServiceAccount named `default`.

use super::list_all;
use crate::error::ApiError;
use crate::handlers::create_object;
use crate::objects::{name, namespace};
use crate::resources;
use crate::server::AppState;

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// One pass: creates the missing `default` ServiceAccounts.
pub async fn reconcile(app: &AppState) -> Result<(), ApiError> {
    let Some(res) = resources::find("", "serviceaccounts") else { return Ok(()) };
    let accounts = list_all(app, "", "serviceaccounts", None).await?;
    for ns in list_all(app, "", "namespaces", None).await? {
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let ns_name = name(&ns);
        if accounts.iter().any(|a| namespace(a) == ns_name && name(a) == DEFAULT_SERVICE_ACCOUNT) {
            continue;
        }
        let sa = serde_json::json!({"metadata": {"name": DEFAULT_SERVICE_ACCOUNT}});
        match create_object(app, res, Some(ns_name), sa).await {
            Ok(_) => tracing::debug!(namespace = ns_name, "created the default serviceaccount"),
            Err(e) if e.code == 409 || e.code == 403 || e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
