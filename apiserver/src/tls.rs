//! Serving TLS, as kubeadm lays it out: a cluster CA (`pki/ca.crt`, `pki/ca.key`) and the
//! API server's serving certificate signed by it (`pki/apiserver.crt`, `pki/apiserver.key`),
//! generated on first start and reused afterwards, or read from `--tls-cert-file` and
//! `--tls-private-key-file`. Then the accept loop that serves the router over rustls
//! (HTTP/2 and HTTP/1.1 by ALPN, as kube-apiserver offers them).

use std::future::Future;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The folder under the data dir holding the generated CA and serving certificate.
pub const PKI_DIR: &str = "pki";
/// How long generated certificates are valid.
const VALID_YEARS: i32 = 10;
/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish once the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{dir} is incomplete ({missing} is missing); remove the folder to generate a new CA and certificate")]
    Incomplete { dir: PathBuf, missing: String },
    #[error("cannot generate the {what}: {source}")]
    Generate { what: &'static str, source: rcgen::Error },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What the server presents, and the CA clients should trust.
#[derive(Debug)]
pub struct ServingCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// PEM of the CA a client trusts to reach this server.
    pub ca_pem: String,
}

/// The subject alternative names of the serving certificate: loopback, the advertise and
/// listen addresses, the `kubernetes` Service's ClusterIP and its DNS names.
pub fn serving_sans(advertise: IpAddr, listen: IpAddr) -> Vec<String> {
    let domain = minion_api::CLUSTER_DOMAIN;
    let mut sans: Vec<String> = vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{domain}"),
        "127.0.0.1".into(),
        minion_api::KUBERNETES_SERVICE_IP.into(),
        advertise.to_string(),
    ];
    if !listen.is_unspecified() {
        sans.push(listen.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// Loads `<data_dir>/pki`, generating a CA and a serving certificate for `sans` when the
/// folder holds none. Later starts reuse both; when `sans` names an address the
/// serving certificate lacks (a new `--advertise-address`), the serving certificate
/// alone is issued again by the same CA, for the old names plus the new ones.
pub fn ensure_pki(data_dir: &Path, sans: &[String]) -> Result<ServingCert, TlsError> {
    let dir = data_dir.join(PKI_DIR);
    let names = ["ca.crt", "ca.key", "apiserver.crt", "apiserver.key"];
    let present: Vec<bool> = names.iter().map(|n| dir.join(n).exists()).collect();
    if present.iter().all(|p| !p) {
        generate(&dir, sans)?;
    } else if let Some(i) = present.iter().position(|p| !p) {
        return Err(TlsError::Incomplete { dir, missing: names[i].to_string() });
    } else {
        let known = std::fs::read_to_string(dir.join(SANS_FILE)).unwrap_or_default();
        let mut all: Vec<String> = known.lines().map(str::to_string).collect();
        let missing: Vec<&String> = sans.iter().filter(|s| !all.contains(s)).collect();
        if !missing.is_empty() {
            tracing::info!(missing = ?missing, "the serving certificate lacks names: issuing it again");
            all.extend(missing.into_iter().cloned());
            reissue_serving(&dir, &all)?;
        }
    }
    let ca_path = dir.join("ca.crt");
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(|source| TlsError::Io { path: ca_path, source })?;
    let (chain, key) = load_files(&dir.join("apiserver.crt"), &dir.join("apiserver.key"))?;
    Ok(ServingCert { chain, key, ca_pem })
}

/// Reads a PEM certificate chain and its private key (`--tls-cert-file`,
/// `--tls-private-key-file`). Clients are told to trust the chain's last certificate.
pub fn load_given(cert: &Path, key: &Path) -> Result<ServingCert, TlsError> {
    let (chain, key) = load_files(cert, key)?;
    let last = chain.last().ok_or_else(|| TlsError::Pem { path: cert.into(), reason: "no certificate".into() })?;
    let ca_pem = pem_encode("CERTIFICATE", last.as_ref());
    Ok(ServingCert { chain, key, ca_pem })
}

fn load_files(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    fn pem_err(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
        move |e| TlsError::Pem { path: path.into(), reason: e.to_string() }
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: cert.into(), reason: "no CERTIFICATE block".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    Ok((chain, key))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The names the serving certificate was issued for, one per line, beside it.
const SANS_FILE: &str = "apiserver.sans";

fn gen(what: &'static str) -> impl Fn(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

/// The CA's parameters: its subject and usages (its key identifies it).
fn ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let (start, years) = validity_start();
    let ymd = |year: i32| rcgen::date_time_ymd(year, start.1, start.2);
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(gen("CA"))?;
    ca.distinguished_name.push(DnType::CommonName, "minion-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (ymd(start.0), ymd(start.0 + years));
    Ok(ca)
}

/// Issues a new serving key and certificate for `sans` with the CA in `dir`.
fn reissue_serving(dir: &Path, sans: &[String]) -> Result<(), TlsError> {
    let path = dir.join("ca.key");
    let pem = std::fs::read_to_string(&path).map_err(|source| TlsError::Io { path: path.clone(), source })?;
    let ca_key = rcgen::KeyPair::from_pem(&pem).map_err(gen("CA key (reading ca.key)"))?;
    write_serving(dir, sans, &rcgen::Issuer::new(ca_params()?, &ca_key))
}

/// Writes `apiserver.key`, `apiserver.crt` and the names file, issued by `issuer`.
fn write_serving(dir: &Path, sans: &[String], issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>) -> Result<(), TlsError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let (start, years) = validity_start();
    let ymd = |year: i32| rcgen::date_time_ymd(year, start.1, start.2);
    let key = KeyPair::generate().map_err(gen("serving key"))?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(gen("serving certificate"))?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = (ymd(start.0), ymd(start.0 + years));
    let cert = params.signed_by(&key, issuer).map_err(gen("serving certificate"))?;
    write_file(&dir.join("apiserver.key"), &key.serialize_pem(), 0o600)?;
    write_file(&dir.join("apiserver.crt"), &cert.pem(), 0o644)?;
    write_file(&dir.join(SANS_FILE), &format!("{}\n", sans.join("\n")), 0o644)
}

/// Generates the CA and the serving certificate into `dir` (keys mode 0600).
fn generate(dir: &Path, sans: &[String]) -> Result<(), TlsError> {
    use rcgen::{Issuer, KeyPair};
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io { path: dir.into(), source })?;
    let ca_key = KeyPair::generate().map_err(gen("CA key"))?;
    let ca = ca_params()?;
    let ca_cert = ca.self_signed(&ca_key).map_err(gen("CA certificate"))?;

    write_file(&dir.join("ca.key"), &ca_key.serialize_pem(), 0o600)?;
    write_serving(dir, sans, &Issuer::new(ca, &ca_key))?;
    // ca.crt last: its presence tells watchers (the lab) the folder is complete.
    write_file(&dir.join("ca.crt"), &ca_cert.pem(), 0o644)?;
    tracing::info!(dir = %dir.display(), sans = %sans.join(","), "generated a CA and a serving certificate");
    Ok(())
}

/// Certificates are valid from yesterday (clock skew; (year, month, day)) for
/// [`VALID_YEARS`].
fn validity_start() -> ((i32, u8, u8), i32) {
    use chrono::Datelike;
    let start = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    ((start.year(), start.month() as u8, start.day().min(28) as u8), VALID_YEARS)
}

/// Writes a file atomically (a temporary file renamed into place) with `mode`.
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io { path: path.into(), source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A rustls acceptor presenting `cert`, offering h2 and http/1.1.
pub fn acceptor(cert: &ServingCert) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then gives open
/// connections [`DRAIN_TIMEOUT`] to finish.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // TCP_NODELAY as Go (kube-apiserver) sets it: see `server::run_with_listener`.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_cover_loopback_service_and_addresses() {
        let sans = serving_sans("172.18.0.1".parse().unwrap(), "0.0.0.0".parse().unwrap());
        for want in ["localhost", "127.0.0.1", "10.96.0.1", "172.18.0.1", "kubernetes.default.svc.cluster.local"] {
            assert!(sans.iter().any(|s| s == want), "{want} missing from {sans:?}");
        }
        assert!(!sans.iter().any(|s| s == "0.0.0.0"));
        let same = serving_sans("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap());
        assert_eq!(same.iter().filter(|s| *s == "127.0.0.1").count(), 1);
    }

    #[test]
    fn pki_is_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sans = serving_sans("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap());
        let first = ensure_pki(dir.path(), &sans).unwrap();
        let second = ensure_pki(dir.path(), &sans).unwrap();
        assert_eq!(first.chain, second.chain);
        assert_eq!(first.ca_pem, second.ca_pem);
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "apiserver.key"] {
            let mode = std::fs::metadata(dir.path().join("pki").join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        acceptor(&first).unwrap();
        std::fs::remove_file(dir.path().join("pki/apiserver.key")).unwrap();
        let err = ensure_pki(dir.path(), &sans).unwrap_err().to_string();
        assert!(err.contains("apiserver.key is missing"), "{err}");
    }

    #[test]
    fn a_new_advertise_address_reissues_the_serving_certificate_from_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let old = serving_sans("172.18.0.1".parse().unwrap(), "0.0.0.0".parse().unwrap());
        let first = ensure_pki(dir.path(), &old).unwrap();
        let new = serving_sans("192.168.56.10".parse().unwrap(), "0.0.0.0".parse().unwrap());
        let second = ensure_pki(dir.path(), &new).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem, "the CA stays");
        assert_ne!(first.chain, second.chain, "the serving certificate is new");
        let pki = dir.path().join("pki");
        let names = std::fs::read_to_string(pki.join(SANS_FILE)).unwrap();
        assert!(names.lines().any(|l| l == "172.18.0.1") && names.lines().any(|l| l == "192.168.56.10"), "{names}");
        // openssl agrees: the new certificate chains to the old CA and names both addresses.
        let verify = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"]).arg(pki.join("ca.crt")).arg(pki.join("apiserver.crt")).output();
        if let Ok(out) = verify {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
            let text = std::process::Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(pki.join("apiserver.crt")).output().unwrap();
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(text.contains("IP Address:192.168.56.10") && text.contains("IP Address:172.18.0.1"), "{text}");
        } else {
            assert!(std::env::var_os("CI").is_none(), "openssl is missing");
        }
        assert_eq!(ensure_pki(dir.path(), &new).unwrap().chain, second.chain, "then reused");
    }

    #[test]
    fn given_files_trust_the_last_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let sans = serving_sans("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap());
        ensure_pki(dir.path(), &sans).unwrap();
        let pki = dir.path().join("pki");
        let given = load_given(&pki.join("apiserver.crt"), &pki.join("apiserver.key")).unwrap();
        assert_eq!(given.ca_pem.trim(), std::fs::read_to_string(pki.join("apiserver.crt")).unwrap().trim());
        let err = load_given(&pki.join("nope.crt"), &pki.join("apiserver.key")).unwrap_err().to_string();
        assert!(err.contains("nope.crt"), "{err}");
    }
}
