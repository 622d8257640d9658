//! Rootfs setup inside the container's mount namespace: propagation, overlay or
//! bind rootfs, the spec's mounts, /dev, pivot_root, masked/readonly paths.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Spec;

use super::{io, sys, Error, InitConfig};
use crate::cgroups::Mode;

pub(super) const NONE: Option<&str> = None;

/// Parsed `mounts[].options`.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Propagation changes applied after the mount (rprivate, rslave...).
    pub propagation: Vec<MsFlags>,
    /// Filesystem data (`mode=755,size=65536k`...).
    pub data: String,
    pub bind: bool,
}

/// Splits OCI mount options into flags, propagation and fs data.
pub fn parse_mount_options(opts: &[String]) -> MountOptions {
    let mut o = MountOptions { flags: MsFlags::empty(), propagation: vec![], data: String::new(), bind: false };
    let mut data = Vec::new();
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                let mut f = match opt.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if opt.starts_with('r') {
                    f |= MsFlags::MS_REC;
                }
                o.propagation.push(f);
                continue;
            }
            _ => {
                data.push(opt.clone());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o.data = data.join(",");
    o
}

/// Joins a container path under the rootfs, resolving symlinks as if the rootfs
/// were `/` (like runc's securejoin), so an image's symlink cannot point a mount
/// or a created file outside the rootfs.
pub fn under(rootfs: &Path, dest: &Path) -> PathBuf {
    use std::path::Component;
    let mut todo: Vec<std::ffi::OsString> =
        dest.components().rev().filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        }).collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&part);
        match fs::read_link(rootfs.join(&next)) {
            Ok(target) if links < 255 => {
                links += 1;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => cur = next,
        }
    }
    rootfs.join(cur)
}

/// Propagation, rootfs mount (overlay or bind) and the spec's mounts + /dev.
pub fn prepare_rootfs(cfg: &InitConfig) -> Result<(), Error> {
    let prop = cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .map(|p| parse_mount_options(&[p]).propagation)
        .unwrap_or_default();
    let prop = prop.first().copied().unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(NONE, "/", NONE, prop, NONE).map_err(sys("make / propagation", format!("{prop:?}")))?;
    mount_rootfs(cfg)?;
    for m in cfg.spec.mounts().clone().unwrap_or_default() {
        let opts = parse_mount_options(&m.options().clone().unwrap_or_default());
        let typ = m.typ().clone().unwrap_or_else(|| if opts.bind { "bind".into() } else { "none".into() });
        // A relative source is bundle-relative only for binds; for proc, tmpfs...
        // it is the device name shown in /proc/mounts (as with runc).
        let is_bind = opts.bind || typ == "bind";
        let src = m.source().clone().map(|s| if s.is_absolute() || !is_bind { s } else { cfg.bundle.join(s) });
        let dest = under(&cfg.rootfs, m.destination());
        mount_one(cfg, &typ, src.as_deref(), &dest, &opts)?;
    }
    super::dev::setup_dev(&cfg.rootfs, &cfg.spec)
}

fn mount_rootfs(cfg: &InitConfig) -> Result<(), Error> {
    let rootfs = &cfg.rootfs;
    match &cfg.image_rootfs {
        Some(lower) => {
            let upper = cfg.state_dir.join("upper");
            let work = cfg.state_dir.join("work");
            for d in [rootfs, &upper, &work] {
                fs::create_dir_all(d).map_err(io("create", d))?;
            }
            let data = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
            mount(Some("overlay"), rootfs, Some("overlay"), MsFlags::empty(), Some(data.as_str()))
                .map_err(sys("mount overlay", format!("{} ({data})", rootfs.display())))
        }
        None => mount(Some(rootfs), rootfs, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
            .map_err(sys("bind-mount rootfs", rootfs.display())),
    }
}

fn mount_one(cfg: &InitConfig, typ: &str, src: Option<&Path>, dest: &Path, o: &MountOptions) -> Result<(), Error> {
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(cfg, src, dest, o);
    }
    if o.bind || typ == "bind" {
        let src = src.ok_or_else(|| Error::Invalid(format!("bind mount {} has no source", dest.display())))?;
        let meta = fs::metadata(src).map_err(io("stat bind source", src))?;
        make_target(dest, meta.is_dir())?;
        let flags = MsFlags::MS_BIND | (o.flags & MsFlags::MS_REC);
        mount(Some(src), dest, NONE, flags, NONE).map_err(sys("bind-mount", format!("{} on {}", src.display(), dest.display())))?;
        let rest = o.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            mount(NONE, dest, NONE, rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT, NONE)
                .map_err(sys("remount bind", format!("{} ({rest:?})", dest.display())))?;
        }
    } else {
        make_target(dest, true)?;
        let source = src.map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| typ.to_string());
        let data = (!o.data.is_empty()).then_some(o.data.as_str());
        mount(Some(source.as_str()), dest, Some(typ), o.flags, data)
            .map_err(sys("mount", format!("{typ} on {} ({})", dest.display(), o.data)))?;
    }
    for p in &o.propagation {
        mount(NONE, dest, NONE, *p, NONE).map_err(sys("set propagation", dest.display()))?;
    }
    Ok(())
}

/// A `cgroup` mount: cgroup2 on a v2 node; on a v1 node, like runc, a tmpfs
/// holding one read-only bind of the container's own cgroup per hierarchy.
/// The spec's source is kept (as runc does: `cgroup` shows in /proc/mounts).
fn mount_cgroup(cfg: &InitConfig, src: Option<&Path>, dest: &Path, o: &MountOptions) -> Result<(), Error> {
    make_target(dest, true)?;
    match cfg.cgroup_mode {
        Mode::V2 => mount(Some(src.unwrap_or(Path::new("cgroup"))), dest, Some("cgroup2"), o.flags, NONE)
            .map_err(sys("mount cgroup2", dest.display())),
        Mode::V1 => super::dev::mount_cgroup_v1(cfg, dest, o),
    }
}

pub(super) fn make_target(dest: &Path, dir: bool) -> Result<(), Error> {
    if dir {
        fs::create_dir_all(dest).map_err(io("create mount point", dest))
    } else {
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(io("create mount point parent", p))?;
        }
        if fs::symlink_metadata(dest).is_err() {
            fs::write(dest, b"").map_err(io("create mount point file", dest))?;
        }
        Ok(())
    }
}

/// pivot_root into the rootfs and detach the old root.
pub fn pivot(rootfs: &Path) -> Result<(), Error> {
    nix::unistd::chdir(rootfs).map_err(sys("chdir", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root", rootfs.display()))?;
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE).map_err(sys("make old root rslave", "/"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("umount old root", "/"))?;
    nix::unistd::chdir("/").map_err(sys("chdir", "/"))
}

/// After pivot: masked and read-only paths, read-only root.
pub fn finish_rootfs(spec: &Spec) -> Result<(), Error> {
    let linux = spec.linux().clone().unwrap_or_default();
    for p in linux.masked_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        let Ok(meta) = fs::metadata(path) else { continue };
        let res = if meta.is_dir() {
            mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, NONE)
        } else {
            mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE)
        };
        res.map_err(sys("mask path", &p))?;
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        if fs::metadata(&p).is_err() {
            continue;
        }
        mount(Some(p.as_str()), p.as_str(), NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
            .map_err(sys("bind readonly path", &p))?;
        let fl = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(NONE, p.as_str(), NONE, fl, NONE).map_err(sys("remount readonly path", &p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        mount(NONE, "/", NONE, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, NONE)
            .map_err(sys("remount root read-only", "/"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = parse_mount_options(&v(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(!o.bind);
        let o = parse_mount_options(&v(&["rbind", "ro", "rprivate"]));
        assert!(o.bind);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        let o = parse_mount_options(&v(&["ro", "rw"]));
        assert_eq!(o.flags, MsFlags::empty());
    }

    #[test]
    fn under_rootfs() {
        assert_eq!(under(Path::new("/r"), Path::new("/etc/hosts")), PathBuf::from("/r/etc/hosts"));
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::create_dir_all(r.join("real")).unwrap();
        symlink("/etc/passwd", r.join("etc/hosts")).unwrap();
        symlink("../../../../real", r.join("etc/up")).unwrap();
        assert_eq!(under(r, Path::new("/etc/hosts")), r.join("etc/passwd"));
        assert_eq!(under(r, Path::new("/etc/up/x")), r.join("real/x"));
        assert_eq!(under(r, Path::new("/../../x")), r.join("x"));
    }
}
