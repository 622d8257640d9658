//! The lab's credentials, as kubeadm hands them out: a random bearer token for the admin
//! (`system:masters`) and one per node (`system:node:<name>` in `system:nodes`), in the
//! API server's `--token-auth-file`, and a kubeconfig for each that trusts the cluster
//! CA the API server generates on its first start.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::io_err;
use crate::topology::Topology;
use crate::LabError;

/// The admin's user name (as in kubeadm's admin.conf, `kubernetes-admin`).
pub const ADMIN_USER: &str = "kubernetes-admin";

/// One identity of the lab and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: String,
    pub groups: String,
    pub token: String,
}

/// The admin first, then one identity per node.
pub fn identities(t: &Topology, mut token: impl FnMut() -> Result<String, LabError>) -> Result<Vec<Identity>, LabError> {
    let mut all = vec![Identity { user: ADMIN_USER.into(), uid: ADMIN_USER.into(), groups: "system:masters".into(), token: token()? }];
    for node in t.node_names() {
        all.push(Identity { user: format!("system:node:{node}"), uid: node.clone(), groups: "system:nodes".into(), token: token()? });
    }
    Ok(all)
}

/// The token file's text (kube-apiserver's static token CSV).
pub fn token_file_text(ids: &[Identity]) -> String {
    let mut text = String::from("# token,user,uid,\"groups\"\n");
    for id in ids {
        text.push_str(&format!("{},{},{},\"{}\"\n", id.token, id.user, id.uid, id.groups));
    }
    text
}

/// 32 bytes from the kernel's random source, hex.
pub fn random_token() -> Result<String, LabError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut bytes)).map_err(io_err(path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a secret file readable by root only.
pub fn write_secret(path: &Path, text: &str) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io_err(path))?;
    // `mode` applies only to a new file: an older, wider file is narrowed too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    f.write_all(text.as_bytes()).map_err(io_err(path))
}

/// Generates the identities and writes the token file for the API server, and the
/// token it presents to kubelets.
pub fn write_token_file(t: &Topology) -> Result<Vec<Identity>, LabError> {
    let ids = identities(t, random_token)?;
    write_secret(&t.token_file(), &token_file_text(&ids))?;
    write_secret(&t.kubelet_client_token_file(), &format!("{}\n", random_token()?))?;
    Ok(ids)
}

/// Writes the admin kubeconfig (for `minion-lab kubectl`) and each node's.
pub fn write_kubeconfigs(t: &Topology, ids: &[Identity]) -> Result<(), LabError> {
    for id in ids {
        let path = match id.user.strip_prefix("system:node:") {
            Some(node) => {
                std::fs::create_dir_all(t.node_dir(node)).map_err(io_err(t.node_dir(node)))?;
                t.node_kubeconfig(node)
            }
            None => t.kubeconfig(),
        };
        write_secret(&path, &t.kubeconfig_yaml(&id.user, &id.token))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_then_one_identity_per_node() {
        let t = Topology::new("demo", 2, Path::new("/run/minion-lab")).unwrap();
        let mut n = 0;
        let ids = identities(&t, || {
            n += 1;
            Ok(format!("tok{n}"))
        })
        .unwrap();
        let text = token_file_text(&ids);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines, vec![
            "tok1,kubernetes-admin,kubernetes-admin,\"system:masters\"",
            "tok2,system:node:node-1,node-1,\"system:nodes\"",
            "tok3,system:node:node-2,node-2,\"system:nodes\"",
        ]);
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn secrets_are_root_only_even_over_an_older_wider_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&path, "new").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode, std::fs::read_to_string(&path).unwrap().as_str()), (0o600, "new"));
    }
}
