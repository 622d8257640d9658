//! Privileged tests of `minion-runtime image pull` against a real registry
//! (Debian's docker-registry on 127.0.0.1 inside a namespace the test makes):
//! a multi-layer image with a whiteout and an opaque dir, run on overlayfs;
//! a second pull transfers no layer; corrupt blob, registry down and missing
//! tag each fail clearly and leave nothing trusted behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::oci_fixture::{build_image, push, push_as, require_tools, wrap_in_index, Netns, Registry};
use common::{require_root, unique};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_minion-runtime");

/// A namespace with a registry holding the test image as `test/multi:v1`.
struct Env {
    ns: Netns,
    reg: Registry,
    tmp: tempfile::TempDir,
    layers: Vec<String>,
}

impl Env {
    fn new() -> Option<Env> {
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

    fn store(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Runs minion-runtime inside the namespace with the given image root.
    fn rt(&self, store: &Path, args: &[&str]) -> Output {
        self.ns
            .cmd(BIN)
            .arg("--root")
            .arg(self.tmp.path().join("state"))
            .arg("--image-root")
            .arg(store)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs minion-runtime in the host namespaces (`ip netns exec` remounts /sys,
    /// hiding the cgroup mounts a container needs).
    fn rt_host(&self, store: &Path, args: &[&str]) -> Output {
        std::process::Command::new(BIN)
            .arg("--root")
            .arg(self.tmp.path().join("state"))
            .arg("--image-root")
            .arg(store)
            .args(args)
            .output()
            .unwrap()
    }

    fn pull(&self, store: &Path, reference: &str) -> Output {
        self.rt(store, &["image", "pull", reference, "--insecure-registry", &self.reg.addr])
    }
}

fn ok(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "unexpected success: {}", String::from_utf8_lossy(&o.stdout));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("expected error: {}", e.trim());
    e
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn bundle(dir: &Path, rootfs: &str, script: &str) -> PathBuf {
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

#[test]
fn pull_run_whiteouts_and_second_pull_transfers_nothing() {
    let Some(env) = Env::new() else { return };
    let store = env.store("images");
    let out = env.pull(&store, "127.0.0.1:5000/test/multi:v1");
    let img = ok(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("layers 3/3 done"), "{progress}");
    assert_eq!(img["name"], "127.0.0.1:5000/test/multi:v1");
    assert_eq!(img["layers"], 3);
    assert!(img["repoDigest"].as_str().unwrap().starts_with("127.0.0.1:5000/test/multi@sha256:"));
    let rootfs = img["rootfs"].as_str().unwrap().to_string();
    let lowers: Vec<&str> = rootfs.split(':').collect();
    assert_eq!(lowers.len(), 3, "{rootfs}");
    assert!(Path::new(lowers[2]).join("bin/busybox").exists(), "bottom layer last");
    assert_eq!(count(&store.join("blobs/sha256")), 4, "3 layers + config");
    assert_eq!(count(&store.join("tmp")), 0);

    let script = "test ! -e /etc/gone && test -e /etc/kept && test ! -e /dir/old && test -e /dir/new && test -e /etc/third";
    let b = bundle(env.tmp.path(), &rootfs, script);
    let run = env.rt_host(&store, &["run", &unique("ctr"), "--bundle", b.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "whiteout/opaque not honoured: {}", String::from_utf8_lossy(&run.stderr));
    let b = bundle(env.tmp.path(), &rootfs, "test -e /etc/gone");
    let run = env.rt_host(&store, &["run", &unique("ctr"), "--bundle", b.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "the check itself must be able to fail");

    let before = env.reg.blob_gets();
    assert!(before >= 4, "registry log should count blob GETs: {before}\n{}", env.reg.log());
    let again = ok(&env.pull(&store, "127.0.0.1:5000/test/multi:v1"));
    assert_eq!(again["id"], img["id"]);
    assert_eq!(env.reg.blob_gets(), before, "second pull fetched blobs");

    // Same content by digest under another name: still no transfer.
    let by_digest = format!("127.0.0.1:5000/test/multi@{}", img["repoDigest"].as_str().unwrap().split('@').nth(1).unwrap());
    ok(&env.pull(&store, &by_digest));
    assert_eq!(env.reg.blob_gets(), before);

    // export / re-import of a pulled multi-layer image keeps the same layers.
    let oci = env.tmp.path().join("exp.tar");
    ok_status(&env.rt(&store, &["image", "export", "127.0.0.1:5000/test/multi:v1", oci.to_str().unwrap()]));
    let store2 = env.store("images2");
    let imp = ok(&env.rt(&store2, &["image", "import", "re/imported:1", oci.to_str().unwrap()]));
    assert_eq!(imp["id"], img["id"]);
    assert_eq!(imp["layers"], 3);
    let da = env.tmp.path().join("docker.tar");
    ok_status(&env.rt(&store, &["image", "export", "--format", "docker-archive", "127.0.0.1:5000/test/multi:v1", da.to_str().unwrap()]));
    let imp = ok(&env.rt(&store2, &["image", "import", "re/docker:1", da.to_str().unwrap()]));
    assert_eq!(imp["id"], img["id"]);

    ok_status(&env.rt(&store, &["image", "rm", "127.0.0.1:5000/test/multi:v1"]));
    ok_status(&env.rt(&store, &["image", "rm", by_digest.as_str()]));
    assert_eq!(count(&store.join("snapshots")), 0);
    assert_eq!(count(&store.join("blobs/sha256")), 0);
}

fn ok_status(o: &Output) {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn corrupt_blob_missing_tag_and_registry_down_fail_clearly() {
    let Some(env) = Env::new() else { return };
    let store = env.store("images");

    let e = err(&env.pull(&store, "127.0.0.1:5000/test/multi:nope"));
    assert!(e.starts_with("minion-runtime: error: pulling 127.0.0.1:5000/test/multi:nope from 127.0.0.1:5000"), "{e}");
    assert!(e.to_lowercase().contains("manifest unknown") || e.contains("not found"), "{e}");

    let e = err(&env.rt(&store, &["image", "pull", "127.0.0.1:5999/test/multi:v1", "--insecure-registry", "127.0.0.1:5999"]));
    assert!(e.contains("registry 127.0.0.1:5999 unreachable"), "{e}");

    // Tamper with the middle layer in the registry's storage (same length).
    let victim = &env.layers[1];
    let f = env.reg.blob_file(victim);
    let mut data = fs::read(&f).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&f, &data).unwrap();
    let e = err(&env.pull(&store, "127.0.0.1:5000/test/multi:v1"));
    assert!(e.contains("digest mismatch") && e.contains(victim.as_str()), "{e}");
    let hex = victim.trim_start_matches("sha256:");
    assert!(!store.join("blobs/sha256").join(hex).exists(), "corrupt blob was kept");
    assert_eq!(count(&store.join("tmp")), 0, "temp files left behind");
    assert_eq!(count(&store.join("images")), 0, "image recorded despite corruption");
    let e = err(&env.rt(&store, &["image", "inspect", "127.0.0.1:5000/test/multi:v1"]));
    assert!(e.contains("not found in store"), "{e}");

    // Truncate it: also refused (the registry sends fewer bytes than the manifest says).
    fs::write(&f, &data[..data.len() / 2]).unwrap();
    let e = err(&env.pull(&store, "127.0.0.1:5000/test/multi:v1"));
    assert!(e.contains(victim.as_str()), "{e}");
    assert!(!store.join("blobs/sha256").join(hex).exists());
    assert_eq!(count(&store.join("tmp")), 0);
}

/// bcrypt of "s3cret" (cost 4), for the htpasswd-protected registry.
const HTPASSWD: &str = "minion:$2b$04$FQMU9B8m3Y8uFlpeIZi4tejeYRzTfcUee4pPkRAdFjJ4uL9JI.IrS";

#[test]
fn credentials_from_a_docker_config_json() {
    if !require_root() || !require_tools() {
        return;
    }
    let ns = Netns::new();
    let reg = Registry::start_with(&ns, 5000, Some(HTPASSWD));
    let tmp = tempfile::tempdir().unwrap();
    let img = build_image(&tmp.path().join("layout"), "v1", 0, 0);
    push_as(&ns, &img, &reg, "private/app", Some("minion:s3cret"));
    let store = tmp.path().join("images");
    let rt = |args: &[&str]| ns.cmd(BIN).arg("--image-root").arg(&store).args(args).output().unwrap();
    let reference = "127.0.0.1:5000/private/app:v1";

    let e = err(&rt(&["image", "pull", reference, "--insecure-registry", "127.0.0.1:5000"]));
    assert!(e.contains("pulling 127.0.0.1:5000/private/app:v1 from 127.0.0.1:5000"), "{e}");

    let wrong = tmp.path().join("wrong.json");
    fs::write(&wrong, r#"{"auths":{"127.0.0.1:5000":{"auth":"bWluaW9uOm5vcGU="}}}"#).unwrap();
    err(&rt(&["image", "pull", reference, "--insecure-registry", "127.0.0.1:5000", "--auth-file", wrong.to_str().unwrap()]));

    // "minion:s3cret", as a kubernetes.io/dockerconfigjson Secret holds it.
    let good = tmp.path().join("config.json");
    fs::write(&good, r#"{"auths":{"http://127.0.0.1:5000":{"auth":"bWluaW9uOnMzY3JldA=="}}}"#).unwrap();
    let img = ok(&rt(&["image", "pull", reference, "--insecure-registry", "127.0.0.1:5000", "--auth-file", good.to_str().unwrap()]));
    assert_eq!(img["layers"], 3);
}

#[test]
fn image_index_resolves_to_linux_amd64() {
    let Some(env) = Env::new() else { return };
    let img = build_image(&env.tmp.path().join("multiarch"), "multi", 0, 0);
    wrap_in_index(&img);
    push(&env.ns, &img, &env.reg, "test/multiarch");
    let store = env.store("images");
    let got = ok(&env.pull(&store, "127.0.0.1:5000/test/multiarch:multi"));
    assert_eq!(got["config"]["Cmd"], json!(["sh"]), "the arm64 manifest was chosen: {got}");
    let top = fs::read_to_string(img.layout.join("index.json")).unwrap();
    let index_digest = serde_json::from_str::<Value>(&top).unwrap()["manifests"][0]["digest"].clone();
    assert_eq!(got["repoDigest"], json!(format!("127.0.0.1:5000/test/multiarch@{}", index_digest.as_str().unwrap())));
}
