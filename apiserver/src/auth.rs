//! Authentication, as kube-apiserver's static token authenticator does it: bearer tokens
//! from a `--token-auth-file` (CSV `token,user,uid,"group1,group2"`), each naming a user
//! (`admin` in `system:masters`, `system:node:<name>` in `system:nodes`...).
//!
//! A request with an `Authorization: Bearer` header must carry a known token, else it
//! gets 401 with a `Status` of reason `Unauthorized`, whatever the path. A request
//! without credentials is `system:anonymous`: refused with 401, except on the paths
//! kube-apiserver's `system:public-info-viewer` role opens to everyone (`/healthz`,
//! `/livez`, `/readyz`, `/version`), or everywhere when the server runs `--insecure`
//! on loopback. Authorization (RBAC) is not done: every authenticated user may do
//! everything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The group of the cluster admins (full access upstream).
pub const MASTERS_GROUP: &str = "system:masters";
/// The group of the node identities.
pub const NODES_GROUP: &str = "system:nodes";
/// The user name of a request without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of a request without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// Paths anyone may read without credentials (`system:public-info-viewer`).
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("token file {path}, line {line}: {reason}")]
    Line { path: PathBuf, line: usize, reason: String },
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// `system:node:<name>` in `system:nodes`, as the kubelet's identity.
    pub fn node(node: &str) -> UserInfo {
        UserInfo { name: format!("system:node:{node}"), uid: node.to_string(), groups: vec![NODES_GROUP.to_string()] }
    }

    /// The cluster admin (`system:masters`).
    pub fn admin() -> UserInfo {
        UserInfo { name: "admin".into(), uid: "admin".into(), groups: vec![MASTERS_GROUP.to_string()] }
    }

    fn anonymous() -> UserInfo {
        UserInfo { name: ANONYMOUS_USER.into(), uid: String::new(), groups: vec![UNAUTHENTICATED_GROUP.into()] }
    }
}

/// One line of a token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub token: String,
    pub user: UserInfo,
}

impl TokenEntry {
    /// The entry as a token-file line (groups quoted).
    pub fn to_csv_line(&self) -> String {
        format!("{},{},{},\"{}\"", self.token, self.user.name, self.user.uid, self.user.groups.join(","))
    }
}

/// Parses a static token file. Blank lines and lines starting with `#` are skipped.
/// A line needs at least three columns and a non-empty token and user; a token may
/// appear only once. Errors name the 1-based line.
pub fn parse_token_file(text: &str, path: &Path) -> Result<Vec<TokenEntry>, AuthError> {
    let mut entries: Vec<TokenEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |reason: String| AuthError::Line { path: path.to_path_buf(), line, reason };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields = split_csv(trimmed).map_err(|r| bad(r.to_string()))?;
        if fields.len() < 3 {
            return Err(bad(format!("need at least 3 columns (token, user name, user uid), found {}", fields.len())));
        }
        if fields[0].is_empty() {
            return Err(bad("empty token".into()));
        }
        if fields[1].is_empty() {
            return Err(bad("empty user name".into()));
        }
        if entries.iter().any(|e| e.token == fields[0]) {
            return Err(bad(format!("duplicate token (user {})", fields[1])));
        }
        let groups = match fields.get(3) {
            Some(g) if !g.is_empty() => g.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            _ => Vec::new(),
        };
        let user = UserInfo { name: fields[1].clone(), uid: fields[2].clone(), groups };
        entries.push(TokenEntry { token: fields[0].clone(), user });
    }
    Ok(entries)
}

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn split_csv(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field"),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => return Err("text after a closing quote"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote inside an unquoted field"),
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field.trim().to_string());
    }
}

/// Reads and parses a token file.
pub fn load_token_file(path: &Path) -> Result<Vec<TokenEntry>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io { path: path.to_path_buf(), source })?;
    parse_token_file(&text, path)
}

/// Decides who a request is.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    /// Let requests without credentials in everywhere (`--insecure` on loopback).
    allow_anonymous: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A bearer token that is not in the token file (or empty).
    InvalidToken,
    /// No credentials on a path that needs them.
    Anonymous,
}

impl Authenticator {
    /// An authenticator over the given token entries.
    pub fn new(entries: &[TokenEntry], allow_anonymous: bool) -> Authenticator {
        let tokens = entries.iter().map(|e| (e.token.clone(), e.user.clone())).collect();
        Authenticator { tokens, allow_anonymous }
    }

    /// The user behind a request's headers, for `path`.
    pub fn authenticate(&self, headers: &HeaderMap, path: &str) -> Result<UserInfo, Refusal> {
        match bearer_token(headers) {
            Some(token) => {
                let mut user = self.tokens.get(token).cloned().ok_or(Refusal::InvalidToken)?;
                if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                    user.groups.push(AUTHENTICATED_GROUP.into());
                }
                Ok(user)
            }
            None if self.allow_anonymous || PUBLIC_PATHS.contains(&path) => Ok(UserInfo::anonymous()),
            None => Err(Refusal::Anonymous),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; `Some("")` for an empty one
/// (which no entry matches), `None` for no header or another scheme.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The axum middleware: authenticates, records the user on the request (as a
/// [`UserInfo`] extension) and in the trace, or answers 401.
pub async fn middleware(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    match auth.authenticate(req.headers(), req.uri().path()) {
        Ok(user) => {
            tracing::debug!(user = %user.name, method = %req.method(), path = %req.uri().path(), "authenticated");
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(why) => {
            tracing::info!(?why, method = %req.method(), path = %req.uri().path(), "refused: 401 Unauthorized");
            unauthorized()
        }
    }
}

/// kube-apiserver's 401 body.
pub fn unauthorized() -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    });
    crate::error::json_response(StatusCode::UNAUTHORIZED, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<TokenEntry>, AuthError> {
        parse_token_file(text, Path::new("/etc/tokens.csv"))
    }

    #[test]
    fn parses_kube_apiserver_format() {
        let text = "# comment\n\nt1,admin,admin-uid,\"system:masters\"\nt2,system:node:n1,n1,\"system:nodes,extra\"\nt3,bob,42\n";
        let e = parse(text).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].user, UserInfo { name: "admin".into(), uid: "admin-uid".into(), groups: vec!["system:masters".into()] });
        assert_eq!(e[1].user.groups, vec!["system:nodes", "extra"]);
        assert!(e[2].user.groups.is_empty());
        assert_eq!(parse(&e[1].to_csv_line()).unwrap()[0], e[1]);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let cases = [
            ("a,b,c\nonly,two\n", 2, "at least 3 columns"),
            ("\n\n,user,uid\n", 3, "empty token"),
            ("a,,uid\n", 1, "empty user name"),
            ("a,b,c\nx,y,z\na,d,e\n", 3, "duplicate token"),
            ("a,b,c,\"g1,g2\n", 1, "unterminated"),
            ("a,b,c,\"g\"x\n", 1, "after a closing quote"),
        ];
        for (text, line, reason) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("token file /etc/tokens.csv, line {line}: ")), "{err}");
            assert!(err.contains(reason), "{err}");
        }
    }

    #[test]
    fn quoted_quotes_and_spaces() {
        assert_eq!(split_csv("a, b ,\"c,\"\"d\"\"\"").unwrap(), vec!["a", "b", "c,\"d\""]);
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = auth {
            h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_anonymous_and_public_paths() {
        let entries = vec![TokenEntry { token: "secret".into(), user: UserInfo::node("n1") }];
        let strict = Authenticator::new(&entries, false);
        let user = strict.authenticate(&headers(Some("Bearer secret")), "/api/v1/pods").unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, vec![NODES_GROUP, AUTHENTICATED_GROUP]);
        assert_eq!(strict.authenticate(&headers(Some("bearer secret")), "/api").unwrap().name, "system:node:n1");
        assert_eq!(strict.authenticate(&headers(Some("Bearer wrong")), "/api"), Err(Refusal::InvalidToken));
        assert_eq!(strict.authenticate(&headers(Some("Bearer ")), "/healthz"), Err(Refusal::InvalidToken));
        assert_eq!(strict.authenticate(&headers(Some("Bearer wrong")), "/healthz"), Err(Refusal::InvalidToken));
        assert_eq!(strict.authenticate(&headers(None), "/api/v1/pods"), Err(Refusal::Anonymous));
        assert_eq!(strict.authenticate(&headers(Some("Basic abc")), "/api"), Err(Refusal::Anonymous));
        for p in ["/healthz", "/livez", "/readyz", "/version"] {
            assert_eq!(strict.authenticate(&headers(None), p).unwrap().name, ANONYMOUS_USER, "{p}");
        }
        let open = Authenticator::new(&entries, true);
        assert_eq!(open.authenticate(&headers(None), "/api/v1/pods").unwrap().name, ANONYMOUS_USER);
        assert_eq!(open.authenticate(&headers(Some("Bearer wrong")), "/api"), Err(Refusal::InvalidToken));
    }
}
