//! The container's /dev (a fresh tmpfs with the standard nodes, devpts
//! `newinstance`, the /proc/self/fd links) and, on cgroup v1 nodes, the
//! container's view of /sys/fs/cgroup. Both follow runc so that a process sees
//! the same thing under either runtime.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceType, Spec};

use super::mounts::{make_target, under, MountOptions, NONE};
use super::{io, sys, Error, InitConfig};

/// The nodes every container gets (name, major, minor), like runc's defaults.
const STANDARD_DEVICES: &[(&str, u64, u64)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

fn has_mount(spec: &Spec, dest: &str) -> bool {
    spec.mounts().as_ref().is_some_and(|ms| ms.iter().any(|m| m.destination() == Path::new(dest)))
}

/// mknod (mode applied exactly, owner set); a node that exists is kept, and
/// where mknod is not permitted the host's node is bind-mounted instead.
fn make_node(target: &Path, kind: SFlag, major: u64, minor: u64, mode: u32, uid: u32, gid: u32) -> Result<(), Error> {
    let host = Path::new("/dev");
    match mknod(target, kind, Mode::from_bits_truncate(mode), makedev(major, minor)) {
        Ok(()) => {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(io("chmod device", target))?;
            nix::unistd::chown(target, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(sys("chown device", target.display()))
        }
        Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let name = target.file_name().map(|n| host.join(n)).unwrap_or_default();
            make_target(target, false)?;
            mount(Some(&name), target, NONE, MsFlags::MS_BIND, NONE)
                .map_err(sys("bind-mount device", format!("{} on {}", name.display(), target.display())))
        }
        Err(e) => Err(sys("mknod", target.display())(e)),
    }
}

/// /dev: a tmpfs unless the spec mounts one, devpts `newinstance` unless the
/// spec mounts one, the standard nodes, the spec's devices and the symlinks.
pub fn setup_dev(rootfs: &Path, spec: &Spec) -> Result<(), Error> {
    let dev = under(rootfs, Path::new("/dev"));
    fs::create_dir_all(&dev).map_err(io("create", &dev))?;
    if !has_mount(spec, "/dev") {
        mount(Some("tmpfs"), &dev, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME, Some("mode=755,size=65536k"))
            .map_err(sys("mount tmpfs", dev.display()))?;
    }
    if !has_mount(spec, "/dev/pts") {
        let pts = dev.join("pts");
        fs::create_dir_all(&pts).map_err(io("create", &pts))?;
        mount(Some("devpts"), &pts, Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=0620"))
            .map_err(sys("mount devpts", pts.display()))?;
    }
    for (name, major, minor) in STANDARD_DEVICES {
        make_node(&dev.join(name), SFlag::S_IFCHR, *major, *minor, 0o666, 0, 0)?;
    }
    let devices = spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default();
    for d in devices {
        let target = under(rootfs, d.path());
        if let Some(p) = target.parent() {
            fs::create_dir_all(p).map_err(io("create", p))?;
        }
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = d.file_mode().unwrap_or(0o666);
        make_node(&target, kind, d.major() as u64, d.minor() as u64, mode, d.uid().unwrap_or(0), d.gid().unwrap_or(0))?;
    }
    let mut links = vec![("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")];
    if Path::new("/proc/kcore").exists() {
        links.push(("core", "/proc/kcore"));
    }
    for (name, to) in links {
        let l = dev.join(name);
        if fs::symlink_metadata(&l).is_err() {
            symlink(to, &l).map_err(io("symlink", &l))?;
        }
    }
    Ok(())
}

/// A v1 `cgroup` mount as runc makes it: a tmpfs at `dest` and, per hierarchy
/// under the cgroup root, a read-only bind of the container's own cgroup (so
/// `/sys/fs/cgroup/memory/memory.limit_in_bytes` is the container's limit).
/// Hierarchies without a container cgroup and the cgroup2 mount are left out.
pub fn mount_cgroup_v1(cfg: &InitConfig, dest: &Path, o: &MountOptions) -> Result<(), Error> {
    let base = o.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    mount(Some("tmpfs"), dest, Some("tmpfs"), base, Some("mode=755")).map_err(sys("mount tmpfs", dest.display()))?;
    let rel = cfg.cgroups_path.trim_start_matches('/');
    let rd = fs::read_dir(&cfg.cgroup_root).map_err(io("read dir", &cfg.cgroup_root))?;
    let mut names: Vec<_> = rd.flatten().collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name();
        let target = dest.join(&name);
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            if let Ok(to) = fs::read_link(e.path()) {
                symlink(&to, &target).map_err(io("symlink", &target))?;
            }
            continue;
        }
        let src = e.path().join(rel);
        let v1 = nix::sys::statfs::statfs(&e.path()).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP_SUPER_MAGIC);
        if !v1 || rel.is_empty() || !src.is_dir() {
            continue;
        }
        fs::create_dir_all(&target).map_err(io("create mount point", &target))?;
        mount(Some(&src), &target, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
            .map_err(sys("bind-mount cgroup", format!("{} on {}", src.display(), target.display())))?;
        let fl = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base;
        mount(NONE, &target, NONE, fl, NONE).map_err(sys("remount cgroup read-only", target.display()))?;
    }
    if o.flags.contains(MsFlags::MS_RDONLY) {
        mount(NONE, dest, NONE, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base, Some("mode=755"))
            .map_err(sys("remount read-only", dest.display()))?;
    }
    Ok(())
}
