//! The registry token flow, for real: Debian's docker-registry with `auth: token`
//! trusting a certificate the test makes, and a token server the test runs on
//! 127.0.0.1 in the same namespace. It checks basic-auth credentials and returns
//! an ES256 JWT (`x5c` header) granting the requested scope, as Docker Hub's
//! auth.docker.io does: anonymous callers get a token without access.
//! `minion-runtime image pull` must fail anonymously with the registry's 401,
//! fail with the token service's refusal on wrong credentials, and succeed with
//! the right ones from a docker config json (an imagePullSecret).

mod common;
#[path = "common/image_env.rs"]
mod image_env;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::oci_fixture::{build_image, push_as, require_tools, Netns, Registry};
use common::require_root;
use image_env::{err, listen_in, ok, BIN};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

const SERVICE: &str = "minion-test-registry";
const ISSUER: &str = "minion-test-token-issuer";
const USER: &str = "minion";
const PASSWORD: &str = "s3cret";

/// A self-signed P-256 certificate and its PKCS#8 key, made with openssl.
struct Cert {
    pem_path: std::path::PathBuf,
    der: Vec<u8>,
    key_pkcs8: Vec<u8>,
}

fn make_cert(dir: &Path) -> Cert {
    let run = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem"]);
    run(&["pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-outform", "DER", "-out", "key.der"]);
    run(&["req", "-x509", "-new", "-key", "ec.pem", "-subj", "/CN=minion-token-test", "-days", "2", "-out", "cert.pem"]);
    run(&["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"]);
    Cert { pem_path: dir.join("cert.pem"), der: fs::read(dir.join("cert.der")).unwrap(), key_pkcs8: fs::read(dir.join("key.der")).unwrap() }
}

/// One request the token server answered: (user or "", scope, status).
type Seen = Arc<Mutex<Vec<(String, String, u16)>>>;

/// The token server, stopped and joined on drop.
struct TokenServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: Seen,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A signed registry token granting `access` (distribution's ClaimSet).
fn sign_token(cert: &Cert, subject: &str, access: Value) -> String {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &cert.key_pkcs8, &rng).expect("P-256 PKCS#8 key");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = json!({"typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&cert.der)]});
    let claims = json!({"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
        "iat": now, "jti": format!("{now}-{}", std::process::id()), "access": access});
    let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let sig = key.sign(&rng, signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64url(sig.as_ref()))
}

/// Answers one HTTP/1.1 token request on `conn`.
fn serve_one(conn: TcpStream, cert: &Cert, seen: &Seen) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rd = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if rd.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let query: BTreeMap<String, String> = target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let scope = query.get("scope").cloned().unwrap_or_default();
    let creds = headers.get("authorization").and_then(|a| a.strip_prefix("Basic ")).map(|b| {
        let raw = base64::engine::general_purpose::STANDARD.decode(b.trim()).unwrap_or_default();
        String::from_utf8_lossy(&raw).into_owned()
    });
    let (status, body, user) = match creds.as_deref() {
        Some(c) if c == format!("{USER}:{PASSWORD}") => {
            // `repository:NAME:ACTIONS`: grant what was asked.
            let access = match scope.splitn(3, ':').collect::<Vec<_>>()[..] {
                ["repository", name, actions] => json!([{"type": "repository", "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>()}]),
                _ => json!([]),
            };
            let t = sign_token(cert, USER, access);
            (200, json!({"token": t, "access_token": t, "expires_in": 300}).to_string(), USER.to_string())
        }
        Some(c) => {
            let user = c.split(':').next().unwrap_or("").to_string();
            (401, json!({"details": "incorrect username or password"}).to_string(), user)
        }
        None => (200, json!({"token": sign_token(cert, "", json!([]))}).to_string(), String::new()),
    };
    seen.lock().unwrap().push((user, scope, status));
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn start_token_server(listener: TcpListener, cert: Cert) -> TokenServer {
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let (stop2, seen2) = (stop.clone(), seen.clone());
    let thread = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    serve_one(conn, &cert, &seen2);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    TokenServer { stop, thread: Some(thread), seen }
}

#[test]
fn token_auth_anonymous_wrong_and_right_credentials() {
    if !require_root() || !require_tools() {
        return;
    }
    if !Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "openssl missing (CI is set, refusing to skip)");
        eprintln!("skipping token test: openssl missing");
        return;
    }
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let cert = make_cert(tmp.path());
    let realm = "http://127.0.0.1:5001/token";
    let auth_yaml = format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        cert.pem_path.display()
    );
    let tokens = start_token_server(listen_in(&ns, 5001), cert);
    let reg = Registry::start_in(&ns, 5000, tempfile::tempdir().unwrap(), &auth_yaml);
    let img = build_image(&tmp.path().join("layout"), "v1", 0, 0);
    // skopeo goes through the same token flow to push.
    push_as(&ns, &img, &reg, "private/app", Some(&format!("{USER}:{PASSWORD}")));

    let store = tmp.path().join("images");
    let rt = |args: &[&str]| ns.cmd(BIN).arg("--image-root").arg(&store).args(args).output().unwrap();
    let reference = "127.0.0.1:5000/private/app:v1";
    let pull = |extra: &[&str]| {
        let mut a = vec!["image", "pull", reference, "--insecure-registry", "127.0.0.1:5000"];
        a.extend_from_slice(extra);
        rt(&a)
    };

    // Anonymous: the token server hands out a token without access; the
    // registry answers 401.
    let e = err(&pull(&[]));
    assert!(e.starts_with("minion-runtime: error: pulling 127.0.0.1:5000/private/app:v1 from 127.0.0.1:5000"), "{e}");
    assert!(e.contains("401 Unauthorized") && e.contains("anonymously"), "{e}");
    assert!(tokens.seen.lock().unwrap().iter().any(|(u, s, st)| u.is_empty() && s == "repository:private/app:pull" && *st == 200));

    // Wrong password: the token service refuses, and the error says so.
    let wrong = tmp.path().join("wrong.json");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    fs::write(&wrong, json!({"auths": {"127.0.0.1:5000": {"auth": b64(&format!("{USER}:nope"))}}}).to_string()).unwrap();
    let e = err(&pull(&["--auth-file", wrong.to_str().unwrap()]));
    assert!(e.contains("token service refused") && e.contains("\"minion\"") && e.contains("incorrect username or password"), "{e}");
    assert!(e.contains(wrong.to_str().unwrap()), "names the auth file: {e}");
    assert!(!e.contains("nope"), "leaks the password: {e}");
    assert_eq!(count_images(&store), 0);

    // Right credentials, as a kubernetes.io/dockerconfigjson Secret holds them.
    let good = tmp.path().join("config.json");
    fs::write(&good, json!({"auths": {"http://127.0.0.1:5000": {"auth": b64(&format!("{USER}:{PASSWORD}"))}}}).to_string()).unwrap();
    let got = ok(&pull(&["--auth-file", good.to_str().unwrap()]));
    assert_eq!(got["layers"], 3);
    assert_eq!(got["config"]["Cmd"], json!(["sh"]));
    assert!(tokens.seen.lock().unwrap().iter().any(|(u, s, st)| u == USER && s == "repository:private/app:pull" && *st == 200));
    assert!(reg.blob_gets() >= 4, "blobs came through the registry: {}", reg.log());

    drop(tokens);
}

fn count_images(store: &Path) -> usize {
    fs::read_dir(store.join("images")).map(|d| d.count()).unwrap_or(0)
}
