//! Pod sandbox network namespaces: one netns per pod, bind-mounted at a path
//! (like `ip netns add`), which every container of the pod joins by path.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

const NONE: Option<&str> = None;

/// Errors of netns management.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netns {}: {step}: {source}", path.display())]
    Sys { path: PathBuf, step: &'static str, source: nix::Error },
    #[error("netns {}: {op}: {source}", path.display())]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    #[error("netns {}: already exists", path.display())]
    Exists { path: PathBuf },
}

fn sys(path: &Path, step: &'static str) -> impl FnOnce(nix::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Sys { path, step, source }
}

/// Makes the directory a shared mount point (bind-mounting it onto itself first
/// if it is not a mount point), as iproute2 does for /run/netns, so namespace
/// mounts made later propagate to mount namespaces made earlier.
fn make_dir_shared(dir: &Path) -> Result<(), Error> {
    let flags = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(NONE, dir, NONE, flags, NONE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(Some(dir), dir, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE).map_err(sys(dir, "bind-mount dir onto itself"))?;
            mount(NONE, dir, NONE, flags, NONE).map_err(sys(dir, "make dir shared"))
        }
        Err(e) => Err(sys(dir, "make dir shared")(e)),
    }
}

/// Creates a new network namespace bind-mounted at `path`. Call only from a
/// single-threaded process that exits soon (the caller is moved into the netns).
pub fn add(path: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), op: "create dir", source })?;
    if is_mounted(path) {
        return Err(Error::Exists { path: path.to_path_buf() });
    }
    make_dir_shared(dir)?;
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|source| Error::Io { path: path.to_path_buf(), op: "create mount point", source })?;
    let res = unshare(CloneFlags::CLONE_NEWNET)
        .map_err(sys(path, "unshare CLONE_NEWNET"))
        .and_then(|()| {
            mount(Some("/proc/self/ns/net"), path, NONE, MsFlags::MS_BIND, NONE).map_err(sys(path, "bind-mount /proc/self/ns/net"))
        });
    if res.is_err() {
        let _ = fs::remove_file(path);
    }
    res
}

/// Whether `path` is a mount point in /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&p))
}

/// Unmounts and removes a namespace file; a missing one is success.
pub fn del(path: &Path) -> Result<(), Error> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(sys(path, "umount")(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io { path: path.to_path_buf(), op: "remove", source }),
    }
}
