//! The registry test environment shared by tests/pull.rs and tests/image_*.rs
//! (included with `#[path]`): a namespace with a registry holding the test image,
//! `minion-runtime` invocations against an image store, output checks, bundles,
//! and servers the test runs itself inside the namespace (token server, proxy).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;

use serde_json::{json, Value};

use crate::common::oci_fixture::{build_image, push, require_tools, Netns, Registry};
use crate::common::{require_root, unique};

pub const BIN: &str = env!("CARGO_BIN_EXE_minion-runtime");

/// A namespace with a registry holding the test image as `test/multi:v1`.
pub struct Env {
    pub ns: Netns,
    pub reg: Registry,
    pub tmp: tempfile::TempDir,
    pub layers: Vec<String>,
}

impl Env {
    pub fn new() -> Option<Env> {
        if !require_root() || !require_tools() {
            return None;
        }
        let ns = Netns::new();
        let reg = Registry::start(&ns, 5000);
        let tmp = tempfile::tempdir().unwrap();
        let img = build_image(&tmp.path().join("layout"), "v1", 0, 0);
        push(&ns, &img, &reg, "test/multi");
        Some(Env { ns, reg, tmp, layers: img.layers })
    }

    pub fn store(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// minion-runtime inside the namespace with the given image root.
    pub fn cmd(&self, store: &Path, args: &[&str]) -> Command {
        let mut c = self.ns.cmd(BIN);
        c.arg("--root").arg(self.tmp.path().join("state")).arg("--image-root").arg(store).args(args);
        c
    }

    /// Runs minion-runtime inside the namespace with the given image root.
    pub fn rt(&self, store: &Path, args: &[&str]) -> Output {
        self.cmd(store, args).output().unwrap()
    }

    /// Runs minion-runtime in the host namespaces (`ip netns exec` remounts /sys,
    /// hiding the cgroup mounts a container needs).
    pub fn rt_host(&self, store: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(self.tmp.path().join("state"))
            .arg("--image-root")
            .arg(store)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn pull(&self, store: &Path, reference: &str) -> Output {
        self.rt(store, &["image", "pull", reference, "--insecure-registry", &self.reg.addr])
    }

    /// Runs `script` in a container on the image's rootfs; returns its exit code.
    pub fn run_in(&self, store: &Path, rootfs: &str, script: &str) -> Option<i32> {
        let b = bundle(self.tmp.path(), rootfs, script);
        let run = self.rt_host(store, &["run", &unique("ctr"), "--bundle", b.to_str().unwrap()]);
        if run.status.code() != Some(0) {
            eprintln!("container stderr: {}", String::from_utf8_lossy(&run.stderr));
        }
        run.status.code()
    }
}

/// The whiteout and opaque-dir checks of the test image, as a shell script.
pub const WHITEOUT_SCRIPT: &str =
    "test ! -e /etc/gone && test -e /etc/kept && test ! -e /dir/old && test -e /dir/new && test -e /etc/third";

pub fn ok(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

pub fn ok_status(o: &Output) {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
}

pub fn err(o: &Output) -> String {
    assert!(!o.status.success(), "unexpected success: {}", String::from_utf8_lossy(&o.stdout));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("expected error: {}", e.trim());
    e
}

pub fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

pub fn bundle(dir: &Path, rootfs: &str, script: &str) -> PathBuf {
    let b = dir.join(unique("bundle"));
    fs::create_dir_all(b.join("rootfs")).unwrap();
    let cfg = json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["/bin/sh", "-c", script], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "annotations": {"io.minion.image.rootfs": rootfs},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]}
    });
    fs::write(b.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    b
}

/// Runs `f` on a new thread that has joined the namespace's network namespace:
/// sockets it makes live there (a server for minion-runtime inside it to reach).
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = PathBuf::from("/run/netns").join(&ns.0);
    std::thread::spawn(move || {
        let fd = fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the test netns");
        f()
    })
}

/// A TCP listener on 127.0.0.1:`port` inside the namespace.
pub fn listen_in(ns: &Netns, port: u16) -> std::net::TcpListener {
    in_netns(ns, move || std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind in netns")).join().unwrap()
}
