//! API errors as Kubernetes `meta/v1 Status` objects, with kube-apiserver's messages
//! (`pods "x" not found`, `Operation cannot be fulfilled on ...`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::store::StoreError;

/// A request failure, rendered as a `Status` with `reason` and `code`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (NotFound, AlreadyExists, Conflict, Invalid, ...).
    pub reason: &'static str,
    /// Human readable message, in kube-apiserver's words.
    pub message: String,
    /// `details.name`.
    pub name: Option<String>,
    /// `details.kind` (the resource, e.g. `pods`, or the kind for Invalid).
    pub kind: Option<String>,
    /// `details.causes`: one per invalid field.
    pub causes: Vec<Cause>,
}

/// One `details.causes` entry (`FieldValueInvalid`, `FieldValueRequired`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl Cause {
    /// A cause from `field`, a reason and a message such as `Invalid value: "x": ...`.
    pub fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Cause { reason, message: message.into(), field: field.into() }
    }

    /// Parses `field: Message` (the shape of kube-apiserver's field errors).
    pub fn from_detail(detail: &str) -> Self {
        let (field, message) = detail.split_once(": ").unwrap_or(("", detail));
        let reason = if message.starts_with("Required value") {
            "FieldValueRequired"
        } else if message.starts_with("Duplicate value") {
            "FieldValueDuplicate"
        } else if message.starts_with("Forbidden") {
            "FieldValueForbidden"
        } else if message.starts_with("Unsupported value") {
            "FieldValueNotSupported"
        } else if message.starts_with("Too long") {
            "FieldValueTooLong"
        } else {
            "FieldValueInvalid"
        };
        Cause::new(field, reason, message)
    }

    fn text(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError { code, reason, message, name: None, kind: None, causes: Vec::new() }
    }

    fn with(mut self, kind: &str, name: &str) -> Self {
        self.kind = Some(kind.to_string());
        self.name = Some(name.to_string());
        self
    }

    /// 404 `<resource> "<name>" not found`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found")).with(resource, name)
    }

    /// 413 RequestEntityTooLarge for a body over `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("the request body is larger than the limit of {limit} bytes"))
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    /// 409 `<resource> "<name>" already exists`.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists"))
            .with(resource, name)
    }

    /// 409 Conflict on a stale resourceVersion or a precondition.
    pub fn conflict(resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"),
        )
        .with(resource, name)
    }

    /// 409 for a stale resourceVersion.
    pub fn stale(resource: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 `<Kind> "<name>" is invalid: <field>: <detail>`.
    pub fn invalid(kind: &str, name: &str, detail: &str) -> Self {
        Self::invalid_causes(kind, name, vec![Cause::from_detail(detail)])
    }

    /// 422 Invalid with one cause per field (kube-apiserver's aggregate message).
    pub fn invalid_causes(kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let texts: Vec<String> = causes.iter().map(Cause::text).collect();
        let detail = if texts.len() == 1 { texts[0].clone() } else { format!("[{}]", texts.join(", ")) };
        let mut err = Self::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {detail}")).with(kind, name);
        err.causes = causes;
        err
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 403 Forbidden.
    pub fn forbidden(resource: &str, name: &str, why: &str) -> Self {
        Self::new(403, "Forbidden", format!("{resource} \"{name}\" is forbidden: {why}"))
            .with(resource, name)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method} {path})"),
        )
    }

    /// 410 Expired: the watch asked for history that is gone.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }

    /// 504 Timeout (a list asked for a revision newer than the store's).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message.into())
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// Maps a storage failure on `resource`/`name` to its Status.
    pub fn from_store(err: StoreError, resource: &str, name: &str) -> Self {
        match err {
            StoreError::NotFound { .. } => Self::not_found(resource, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(resource, name),
            StoreError::Conflict { .. } => Self::stale(resource, name),
            StoreError::Expired { requested, oldest } => Self::expired(format!(
                "too old resource version: {requested} ({oldest})"
            )),
            other => Self::internal(other.to_string()),
        }
    }

    /// The `meta/v1 Status` body.
    pub fn status(&self) -> Value {
        let mut details = serde_json::Map::new();
        if let Some(name) = &self.name {
            details.insert("name".into(), json!(name));
        }
        if let Some(kind) = &self.kind {
            details.insert("kind".into(), json!(kind));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.status())
    }
}

/// A JSON response with the given status.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

impl ApiError {
    /// 415 UnsupportedMediaType (an unknown PATCH content type).
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ),
        )
    }
}
