//! The lab's starter image: a root filesystem made from Debian's static busybox, so
//! pods run without any registry (pulling images comes with minion-runtime's store).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::error::io_err;
use crate::net::run;
use crate::LabError;

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Builds a busybox root filesystem at `dir`: /bin/busybox, a symlink per applet,
/// and the few files a process expects (/etc/passwd, /etc/group, /tmp).
pub fn build_busybox_rootfs(busybox: &Path, dir: &Path) -> Result<(), LabError> {
    if !busybox.exists() {
        return Err(LabError::MissingBinary(busybox.to_path_buf()));
    }
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    let tmp = dir.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(io_err(&tmp))?;
    let target = dir.join("bin/busybox");
    std::fs::copy(busybox, &target).map_err(io_err(&target))?;
    let list = run(Command::new(busybox).arg("--list"))?;
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", &link).map_err(io_err(&link))?;
        }
    }
    write(dir, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")?;
    write(dir, "etc/group", "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

fn write(dir: &Path, rel: &str, text: &str) -> Result<(), LabError> {
    let p = dir.join(rel);
    std::fs::write(&p, text).map_err(io_err(&p))
}
