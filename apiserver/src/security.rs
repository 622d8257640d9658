//! How the API server is secured, put together at start: serving TLS (see [`crate::tls`]),
//! bearer tokens (see [`crate::auth`]) and the admin kubeconfig, kubeadm's
//! `admin.conf`. Without `--token-auth-file` a token file with one random admin token is
//! generated (`<data-dir>/tokens.csv`) and kept for later starts. `--insecure` serves plain
//! HTTP with anonymous requests allowed, and only on a loopback address.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::auth::{self, AuthError, Authenticator, TokenEntry, UserInfo};
use crate::tls::{self, TlsError};

/// The token file generated when none is given.
pub const GENERATED_TOKEN_FILE: &str = "tokens.csv";
/// The admin kubeconfig the server writes into its data dir.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";

/// The serving and authentication settings.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Plain HTTP, requests without credentials allowed; refused unless the listen
    /// address is loopback.
    pub insecure: bool,
    /// PEM serving certificate (chain); with `tls_private_key_file`. Without them a CA
    /// and a certificate are generated under `<data-dir>/pki`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// kube-apiserver static token CSV. Without it `<data-dir>/tokens.csv` is used,
    /// generated with an admin token on first start.
    pub token_auth_file: Option<PathBuf>,
    /// The bearer token this server presents to kubelets (`pods/log`), one token in a
    /// file; kube-apiserver presents a client certificate instead.
    pub kubelet_client_token_file: Option<PathBuf>,
}

impl Security {
    /// Plain HTTP, anonymous allowed (tests on 127.0.0.1).
    pub fn insecure() -> Security {
        Security { insecure: true, ..Security::default() }
    }
}

/// Why the server could not be secured as asked.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("--insecure serves plain HTTP without authentication and is only allowed on a loopback address, not {0}")]
    InsecureNotLoopback(IpAddr),
    #[error("--tls-cert-file and --tls-private-key-file go together")]
    HalfCertPair,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("kubelet client token file {path}: {reason}")]
    KubeletToken { path: PathBuf, reason: String },
}

/// The token presented to kubelets, read from `--kubelet-client-token-file`.
pub fn kubelet_client_token(security: &Security) -> Result<Option<String>, SecurityError> {
    let Some(path) = &security.kubelet_client_token_file else { return Ok(None) };
    let bad = |reason: String| SecurityError::KubeletToken { path: path.clone(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(bad("must hold exactly one token".into()));
    }
    Ok(Some(token.to_string()))
}

/// What the server runs with: who may call it, and TLS unless insecure.
pub struct Prepared {
    pub authenticator: Arc<Authenticator>,
    pub tls: Option<TlsAcceptor>,
}

/// Refuses `--insecure` on anything but a loopback address.
pub fn check_listen(security: &Security, listen: IpAddr) -> Result<(), SecurityError> {
    if security.insecure && !listen.is_loopback() {
        return Err(SecurityError::InsecureNotLoopback(listen));
    }
    Ok(())
}

/// Loads or generates the tokens and certificates, and writes the admin kubeconfig
/// (TLS only). `listen` is the bound address, `advertise` the address clients use.
pub fn prepare(security: &Security, data_dir: &Path, listen: SocketAddr, advertise: IpAddr) -> Result<Prepared, SecurityError> {
    check_listen(security, listen.ip())?;
    let tokens = match &security.token_auth_file {
        Some(path) => auth::load_token_file(path)?,
        None if security.insecure => Vec::new(),
        None => generated_tokens(data_dir)?,
    };
    let authenticator = Arc::new(Authenticator::new(&tokens, security.insecure));
    if security.insecure {
        tracing::warn!(addr = %listen, "serving plain HTTP without authentication (--insecure)");
        return Ok(Prepared { authenticator, tls: None });
    }
    let cert = match (&security.tls_cert_file, &security.tls_private_key_file) {
        (Some(cert), Some(key)) => tls::load_given(cert, key)?,
        (None, None) => tls::ensure_pki(data_dir, &tls::serving_sans(advertise, listen.ip()))?,
        _ => return Err(SecurityError::HalfCertPair),
    };
    match tokens.iter().find(|e| e.user.groups.iter().any(|g| g == auth::MASTERS_GROUP)) {
        Some(admin) => {
            let path = data_dir.join(ADMIN_KUBECONFIG);
            let server = server_url(advertise, listen.port());
            tls::write_file(&path, &kubeconfig_yaml(&server, &cert.ca_pem, &admin.user.name, &admin.token), 0o600)?;
            tracing::info!(path = %path.display(), user = %admin.user.name, "wrote the admin kubeconfig");
        }
        None => tracing::warn!("no token in group system:masters: no admin kubeconfig written"),
    }
    Ok(Prepared { authenticator, tls: Some(tls::acceptor(&cert)?) })
}

/// `https://<ip>:<port>`, brackets around IPv6.
pub fn server_url(ip: IpAddr, port: u16) -> String {
    format!("https://{}", SocketAddr::new(ip, port))
}

/// `<data-dir>/tokens.csv`, made with one random admin token when missing.
fn generated_tokens(data_dir: &Path) -> Result<Vec<TokenEntry>, SecurityError> {
    let path = data_dir.join(GENERATED_TOKEN_FILE);
    if !path.exists() {
        let entry = TokenEntry { token: random_token()?, user: UserInfo::admin() };
        let text = format!("# token,user,uid,groups (kube-apiserver --token-auth-file format)\n{}\n", entry.to_csv_line());
        tls::write_file(&path, &text, 0o600)?;
        tracing::info!(path = %path.display(), "generated a token file with an admin token");
    }
    Ok(auth::load_token_file(&path)?)
}

/// 32 random bytes, hex.
pub fn random_token() -> Result<String, TlsError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| TlsError::Io {
        path: PathBuf::from("(system random source)"),
        source: std::io::Error::other("no randomness"),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A kubeconfig with one cluster (CA embedded) and one token user.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: minion\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: {user}@minion\n  context:\n    cluster: minion\n    user: {user}\n\
         current-context: {user}@minion\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_only_on_loopback() {
        let insecure = Security::insecure();
        assert!(check_listen(&insecure, "127.0.0.1".parse().unwrap()).is_ok());
        assert!(check_listen(&insecure, "::1".parse().unwrap()).is_ok());
        let err = check_listen(&insecure, "0.0.0.0".parse().unwrap()).unwrap_err().to_string();
        assert!(err.contains("only allowed on a loopback address, not 0.0.0.0"), "{err}");
        assert!(check_listen(&Security::default(), "0.0.0.0".parse().unwrap()).is_ok());
    }

    #[test]
    fn generated_token_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = generated_tokens(dir.path()).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].user, UserInfo::admin());
        assert_eq!(first[0].token.len(), 64);
        assert_eq!(generated_tokens(dir.path()).unwrap(), first);
    }

    #[test]
    fn server_url_brackets_ipv6() {
        assert_eq!(server_url("::1".parse().unwrap(), 6443), "https://[::1]:6443");
        assert_eq!(server_url("10.0.0.1".parse().unwrap(), 6443), "https://10.0.0.1:6443");
    }
}
