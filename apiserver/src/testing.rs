//! An in-process API server for the tests of the components that talk to it (proxy,
//! dnsd, netd...): plain HTTP on 127.0.0.1 at a free port, state under a given dir, and
//! a kubeconfig pointing at it. Not used by the server itself.

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
    let config = Config { listen, data_dir, advertise_address: None };
    tokio::spawn(async move {
        let _ = run_with_listener(listener, config, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok((listen.port(), stop))
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
