//! An in-process API server for the tests of the components that talk to it (proxy,
//! dnsd, netd...): plain HTTP on 127.0.0.1 at a free port (`--insecure`, anonymous
//! allowed), state under a given dir, and a kubeconfig pointing at it; or the same over
//! TLS with a bearer token ([`start_local_tls`]). Not used by the server itself.

use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use crate::{run_with_listener, Config};

/// Starts a server on 127.0.0.1:0 with its data under `dir/api`; returns its port and
/// a sender that stops it (dropping the sender stops it too).
pub async fn start_local(dir: &Path) -> std::io::Result<(u16, oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let listen = listener.local_addr()?;
    let data_dir = dir.join("api");
    std::fs::create_dir_all(&data_dir)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let config = Config { listen, data_dir, advertise_address: None, security: crate::Security::insecure(), storage: Default::default() };
    tokio::spawn(async move {
        let _ = run_with_listener(listener, config, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok((listen.port(), stop))
}

/// Starts a TLS server on 127.0.0.1:0 with its data under `dir/api`, a generated CA,
/// serving certificate and admin token; returns its port, a stopper and the admin
/// kubeconfig it wrote (`dir/api/admin.kubeconfig`). Restarting over the same `dir`
/// reuses the certificates and the token.
pub async fn start_local_tls(dir: &Path) -> std::io::Result<(u16, oneshot::Sender<()>, PathBuf)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let listen = listener.local_addr()?;
    let data_dir = dir.join("api");
    std::fs::create_dir_all(&data_dir)?;
    let kubeconfig = data_dir.join(crate::security::ADMIN_KUBECONFIG);
    match std::fs::remove_file(&kubeconfig) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let config = Config { listen, data_dir, advertise_address: None, security: crate::Security::default(), storage: Default::default() };
    let handle = tokio::spawn(run_with_listener(listener, config, async {
        let _ = stopped.await;
    }));
    for _ in 0..200 {
        if kubeconfig.exists() {
            return Ok((listen.port(), stop, kubeconfig));
        }
        if handle.is_finished() {
            let why = match handle.await {
                Ok(Err(e)) => e.to_string(),
                other => format!("{other:?}"),
            };
            return Err(std::io::Error::other(format!("the TLS server on {listen} stopped: {why}")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(std::io::Error::other(format!("the TLS server on {listen} wrote no {} in 10s", kubeconfig.display())))
}

/// Writes `dir/kubeconfig-<port>` naming http://127.0.0.1:`port`, and returns its path.
pub fn write_kubeconfig(dir: &Path, port: u16) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("kubeconfig-{port}"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
         current-context: c\n"
    );
    std::fs::write(&path, text)?;
    Ok(path)
}
