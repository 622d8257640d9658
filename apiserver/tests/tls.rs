//! The server over TLS with bearer tokens, driven by real clients: kubectl with the admin
//! kubeconfig the server writes, the kube crate, the Python client and curl (which checks
//! the certificate's names). Requests without a token or with a wrong one get kube-apiserver's
//! 401 `Status`; `--insecure` is refused off loopback; the CA, certificate and token
//! survive a restart.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use minion_apiserver::testing::start_local_tls;

async fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--cache-dir", cache.to_str().unwrap()];
    all.extend_from_slice(args);
    run("/usr/bin/kubectl", &all, &[("KUBECONFIG", kubeconfig)]).await
}

/// `curl` status code and body; `extra` adds headers or --connect-to.
async fn curl(ca: &Path, url: &str, extra: &[&str]) -> (u16, String) {
    let mut args = vec!["-sS", "--max-time", "10", "--cacert", ca.to_str().unwrap(), "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    let (ok, stdout, stderr) = run("curl", &args, &[]).await;
    assert!(ok, "curl {url} failed: {stderr}");
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn ca_file(dir: &Path) -> PathBuf {
    dir.join("api/pki/ca.crt")
}

fn admin_token(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("api/tokens.csv")).unwrap();
    let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
    line.split(',').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_with_the_generated_admin_kubeconfig() {
    if !common::have_kubectl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (port, _stop, kubeconfig) = start_local_tls(tmp.path()).await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&format!("server: https://127.0.0.1:{port}")), "{text}");
    assert!(text.contains("certificate-authority-data: "), "{text}");
    let cache = tmp.path().join("cache");
    let (ok, out, err) = kubectl(&kubeconfig, &cache, &["get", "namespaces"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("kube-system"), "{out}");
    let manifest = tmp.path().join("cm.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: b\n").unwrap();
    let (ok, _, err) = kubectl(&kubeconfig, &cache, &["create", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(&kubeconfig, &cache, &["get", "configmap", "c", "-o", "jsonpath={.data.a}"]).await;
    assert!(ok && out == "b", "{out} {err}");
    // The same kubeconfig with another token is refused as kube-apiserver refuses it.
    let token = admin_token(tmp.path());
    let wrong = tmp.path().join("wrong.kubeconfig");
    std::fs::write(&wrong, text.replace(&token, "not-a-token")).unwrap();
    let (ok, _, err) = kubectl(&wrong, &cache, &["get", "namespaces"]).await;
    assert!(!ok && err.contains("Unauthorized"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_a_wrong_one_gets_401_status_except_public_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, _stop, _) = start_local_tls(tmp.path()).await.unwrap();
    let ca = ca_file(tmp.path());
    let base = format!("https://127.0.0.1:{port}");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    for (path, headers) in [
        ("/api/v1/namespaces", vec![]),
        ("/api/v1/namespaces", vec!["-H".to_string(), bearer("wrong")]),
        ("/healthz", vec!["-H".to_string(), bearer("wrong")]),
        ("/apis", vec![]),
    ] {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (code, body) = curl(&ca, &format!("{base}{path}"), &headers).await;
        assert_eq!(code, 401, "{path} {headers:?}: {body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Unauthorized");
        assert_eq!(status["code"], 401);
        assert_eq!(status["message"], "Unauthorized");
    }
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let (code, body) = curl(&ca, &format!("{base}{path}"), &[]).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let auth = bearer(&admin_token(tmp.path()));
    let (code, body) = curl(&ca, &format!("{base}/api/v1/namespaces"), &["-H", &auth]).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_names_loopback_and_the_kubernetes_service() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, _stop, _) = start_local_tls(tmp.path()).await.unwrap();
    let ca = ca_file(tmp.path());
    let to_loopback = format!("::127.0.0.1:{port}");
    for (url, extra) in [
        (format!("https://127.0.0.1:{port}/healthz"), vec![]),
        (format!("https://localhost:{port}/healthz"), vec![]),
        // Names the certificate must carry, reached on loopback (--connect-to).
        (format!("https://kubernetes.default.svc:{port}/healthz"), vec!["--connect-to", to_loopback.as_str()]),
        (format!("https://kubernetes.default.svc.cluster.local:{port}/healthz"), vec!["--connect-to", to_loopback.as_str()]),
        (format!("https://10.96.0.1:{port}/healthz"), vec!["--connect-to", to_loopback.as_str()]),
    ] {
        let (code, body) = curl(&ca, &url, &extra).await;
        assert_eq!((code, body.as_str()), (200, "ok"), "{url}");
    }
    // A name it does not carry fails verification.
    let url = format!("https://example.invalid:{port}/healthz");
    let (ok, _, err) = run("curl", &["-sS", "--max-time", "10", "--cacert", ca.to_str().unwrap(), "--connect-to", &to_loopback, &url], &[]).await;
    assert!(!ok && err.contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_certificate_and_token_are_reused_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("api/pki");
    let (_, stop, _) = start_local_tls(tmp.path()).await.unwrap();
    let read = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let before: Vec<Vec<u8>> = ["ca.crt", "ca.key", "apiserver.crt", "apiserver.key"].iter().map(|n| read(n)).collect();
    let token = admin_token(tmp.path());
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (port, _stop, _) = start_local_tls(tmp.path()).await.unwrap();
    let after: Vec<Vec<u8>> = ["ca.crt", "ca.key", "apiserver.crt", "apiserver.key"].iter().map(|n| read(n)).collect();
    assert_eq!(before, after);
    assert_eq!(admin_token(tmp.path()), token);
    let (code, _) = curl(&ca_file(tmp.path()), &format!("https://127.0.0.1:{port}/api"), &["-H", &format!("Authorization: Bearer {token}")]).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_crate_client_over_tls() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::{Api, ListParams, PostParams};
    let tmp = tempfile::tempdir().unwrap();
    let (_, _stop, kubeconfig) = start_local_tls(tmp.path()).await.unwrap();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc.clone(), &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let names: Vec<String> =
        Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|n| n.metadata.name).collect();
    assert!(names.iter().any(|n| n == "default"), "{names:?}");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("from-kube".into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    // Without the token the same client gets the 401 Status.
    let mut anonymous = kc;
    for user in anonymous.auth_infos.iter_mut() {
        if let Some(info) = user.auth_info.as_mut() {
            info.token = None;
        }
    }
    let config = kube::Config::from_custom_kubeconfig(anonymous, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let err = Api::<Namespace>::all(client).list(&ListParams::default()).await.unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized")),
        other => panic!("expected a 401 Status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_certificate_files_and_token_file_are_used() {
    // A CA and certificate made by one server serve another, whose tokens come from a file.
    let tmp = tempfile::tempdir().unwrap();
    let (_, stop, _) = start_local_tls(&tmp.path().join("first")).await.unwrap();
    let _ = stop.send(());
    let pki = tmp.path().join("first/api/pki");
    let tokens = tmp.path().join("tokens.csv");
    std::fs::write(&tokens, "t-admin,root,1,\"system:masters\"\nt-node,system:node:n1,n1,\"system:nodes\"\n").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = listener.local_addr().unwrap();
    let data_dir = tmp.path().join("second");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = minion_apiserver::Config {
        listen,
        data_dir: data_dir.clone(),
        advertise_address: None,
        security: minion_apiserver::Security {
            insecure: false,
            tls_cert_file: Some(pki.join("apiserver.crt")),
            tls_private_key_file: Some(pki.join("apiserver.key")),
            token_auth_file: Some(tokens),
            ..Default::default()
        },
        storage: Default::default(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(minion_apiserver::run_with_listener(listener, config, async move {
        let _ = rx.await;
    }));
    let kubeconfig = data_dir.join("admin.kubeconfig");
    common::eventually("the admin kubeconfig", || {
        let k = kubeconfig.clone();
        async move { k.exists().then_some(()) }
    })
    .await;
    assert!(!data_dir.join("pki").exists(), "given files, yet a CA was generated");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains("token: t-admin") && text.contains("name: root"), "{text}");
    let url = format!("https://127.0.0.1:{}/api/v1/nodes", listen.port());
    let (code, body) = curl(&pki.join("apiserver.crt"), &url, &["-H", "Authorization: Bearer t-node"]).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = curl(&pki.join("ca.crt"), &url, &["-H", "Authorization: Bearer t-other"]).await;
    assert_eq!(code, 401);
    let _ = tx.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_is_refused_off_loopback_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_minion-apiserver");
    let dir = tmp.path().to_str().unwrap();
    let (ok, _, err) = run(bin, &["--insecure", "--listen", "0.0.0.0:0", "--data-dir", dir], &[]).await;
    assert!(!ok);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("minion-apiserver: error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("--insecure") && lines[0].contains("loopback") && lines[0].contains("0.0.0.0"), "{err}");
    assert!(!tmp.path().join("minion.db").exists(), "it opened the datastore before refusing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_over_tls_with_the_admin_kubeconfig() {
    let py = match std::env::var_os("MINION_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyk8s/bin/python"),
    };
    if !py.exists() {
        let why = "no python with the kubernetes package (set MINION_PYTHON or make target/pyk8s)";
        assert!(std::env::var_os("CI").is_none(), "CI is set and {why}: refusing to skip");
        eprintln!("skipping: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_, _stop, kubeconfig) = start_local_tls(tmp.path()).await.unwrap();
    let script = "import sys\nfrom kubernetes import client, config\nconfig.load_kube_config(config_file=sys.argv[1])\n\
                  names = [n.metadata.name for n in client.CoreV1Api().list_namespace().items]\n\
                  assert 'default' in names, names\nprint('python tls ok')\n";
    let (ok, out, err) = run(py.to_str().unwrap(), &["-c", script, kubeconfig.to_str().unwrap()], &[]).await;
    assert!(ok && out.contains("python tls ok"), "{out}\n{err}");
}
