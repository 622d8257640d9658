//! Test fixtures for image pulling, shared by tests/pull.rs and benches/pull.rs:
//! a network namespace with loopback up, Debian's `docker-registry` serving on
//! 127.0.0.1 inside it, and a hand-written multi-layer OCI image layout made from
//! busybox-static with a whiteout and an opaque directory in a later layer.
#![allow(dead_code)]

use std::fs;

use super::unique;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

/// The tools the registry tests drive; missing ones skip (or fail under CI).
pub fn require_tools() -> bool {
    super::require_commands(&["docker-registry", "skopeo", "ip", "curl"], "registry tests")
}

/// A network namespace deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Self {
        let name = unique("mpull");
        let st = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(st.success(), "ip netns add {name}");
        let ns = Netns(name);
        let st = Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]).status().unwrap();
        assert!(st.success());
        ns
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, prog]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `docker-registry serve` inside a namespace, killed (by pid) on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub addr: String,
}

impl Registry {
    pub fn start(ns: &Netns, port: u16) -> Self {
        Self::start_with(ns, port, None)
    }

    /// A registry requiring basic auth with the given htpasswd line (`user:bcrypt`).
    pub fn start_with(ns: &Netns, port: u16, htpasswd: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth = htpasswd.map(|line| {
            let p = dir.path().join("htpasswd");
            fs::write(&p, format!("{line}\n")).unwrap();
            format!("auth:\n  htpasswd:\n    realm: minion-test\n    path: {}\n", p.display())
        });
        Self::start_in(ns, port, dir, auth.as_deref().unwrap_or(""))
    }

    /// A registry whose config ends with `auth_yaml` (an `auth:` section, or
    /// nothing), keeping its data in `dir`.
    pub fn start_in(ns: &Netns, port: u16, dir: tempfile::TempDir, auth_yaml: &str) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        cfg.push_str(auth_yaml);
        fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = ns
            .cmd("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = Registry { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let code = ns.cmd("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/v2/", r.addr)]).output().unwrap();
            if matches!(&code.stdout[..], b"200" | b"401") {
                break;
            }
            assert!(Instant::now() < deadline, "registry did not come up: {}", r.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// GET requests for blobs the registry has answered so far.
    pub fn blob_gets(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("response completed") && l.contains("http.request.method=GET") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// The stored data file of a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic filler bytes (half compressible), for payload layers.
fn filler(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        v.extend_from_slice(&b[..4]);
        v.extend_from_slice(b"abcd");
    }
    v.truncate(n);
    v
}

enum E<'a> {
    Dir(&'a str),
    File(&'a str, Vec<u8>, u32),
    Link(&'a str, &'a str),
}

fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The multi-layer test image, as an OCI image layout on disk.
pub struct TestImage {
    pub layout: PathBuf,
    pub tag: String,
    /// Layer blob digests, bottom first.
    pub layers: Vec<String>,
}

/// Writes the test image into `dir` (an OCI layout): layer 1 busybox + files,
/// layer 2 (zstd) deletes /etc/gone by whiteout and makes /dir opaque, layer 3
/// adds a file; then `payload_layers` gzip layers of `payload_bytes` filler each.
pub fn build_image(dir: &Path, tag: &str, payload_layers: usize, payload_bytes: usize) -> TestImage {
    build_image_with(dir, tag, payload_layers, payload_bytes, true)
}

/// [`build_image`], with layer 2 gzip instead of zstd when `zstd` is false.
pub fn build_image_with(dir: &Path, tag: &str, payload_layers: usize, payload_bytes: usize, zstd: bool) -> TestImage {
    let busybox = fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    let mut l1 = vec![E::Dir("bin"), E::Dir("etc"), E::Dir("dir"), E::File("bin/busybox", busybox, 0o755)];
    for a in ["sh", "test", "cat", "ls", "echo"] {
        l1.push(E::Link(Box::leak(format!("bin/{a}").into_boxed_str()), "busybox"));
    }
    l1.extend([E::File("etc/gone", b"old".to_vec(), 0o644), E::File("etc/kept", b"kept".to_vec(), 0o644), E::File("dir/old", b"o".to_vec(), 0o644)]);
    let l2 = vec![E::File("etc/.wh.gone", vec![], 0o644), E::File("dir/.wh..wh..opq", vec![], 0o644), E::File("dir/new", b"n".to_vec(), 0o644)];
    let l3 = vec![E::File("etc/third", b"3".to_vec(), 0o644)];
    let mut tars = vec![(layer_tar(&l1), "gzip"), (layer_tar(&l2), if zstd { "zstd" } else { "gzip" }), (layer_tar(&l3), "gzip")];
    for i in 0..payload_layers {
        let name = format!("payload/p{i}");
        let t = layer_tar(&[E::Dir("payload"), E::File(Box::leak(name.into_boxed_str()), filler(payload_bytes, i as u64 + 7), 0o644)]);
        tars.push((t, "gzip"));
    }
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let d = digest(data);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for (t, comp) in &tars {
        diff_ids.push(digest(t));
        let (blob, mt) = match *comp {
            "zstd" => (zstd::encode_all(&t[..], 3).unwrap(), "application/vnd.oci.image.layer.v1.tar+zstd"),
            _ => (gzip(t), "application/vnd.oci.image.layer.v1.tar+gzip"),
        };
        let d = put(&blob);
        descs.push(json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        layers.push(d);
    }
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let cb = serde_json::to_vec(&config).unwrap();
    let cd = put(&cb);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()},
        "layers": descs,
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    let md = put(&mb);
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": mb.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    TestImage { layout: dir.to_path_buf(), tag: tag.to_string(), layers }
}

/// Turns the layout's image into a multi-platform image index: an arm64 entry
/// first (same layers, a config whose Cmd is `["arm64"]`), then the amd64 one.
pub fn wrap_in_index(img: &TestImage) {
    let blobs = img.layout.join("blobs/sha256");
    let read = |d: &str| fs::read(blobs.join(d.trim_start_matches("sha256:"))).unwrap();
    let put = |data: &[u8]| -> String {
        let d = digest(data);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let index: serde_json::Value = serde_json::from_slice(&fs::read(img.layout.join("index.json")).unwrap()).unwrap();
    let amd = index["manifests"][0].clone();
    let mut manifest: serde_json::Value = serde_json::from_slice(&read(amd["digest"].as_str().unwrap())).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&read(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    config["architecture"] = json!("arm64");
    config["config"]["Cmd"] = json!(["arm64"]);
    let cb = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = json!(put(&cb));
    manifest["config"]["size"] = json!(cb.len());
    let mb = serde_json::to_vec(&manifest).unwrap();
    let arm_digest = put(&mb);
    let entry = |d: &serde_json::Value, size: &serde_json::Value, arch: &str| {
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": size,
               "platform": {"os": "linux", "architecture": arch}})
    };
    let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        entry(&json!(arm_digest), &json!(mb.len()), "arm64"),
        entry(&amd["digest"], &amd["size"], "amd64"),
    ]});
    let ib = serde_json::to_vec(&idx).unwrap();
    let id = put(&ib);
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": id, "size": ib.len(), "annotations": {"org.opencontainers.image.ref.name": img.tag}}]});
    fs::write(img.layout.join("index.json"), top.to_string()).unwrap();
}

/// Pushes an OCI layout to the registry with skopeo (inside the namespace).
pub fn push(ns: &Netns, img: &TestImage, reg: &Registry, repo: &str) {
    push_as(ns, img, reg, repo, None)
}

/// [`push`] with `user:password` credentials.
pub fn push_as(ns: &Netns, img: &TestImage, reg: &Registry, repo: &str, creds: Option<&str>) {
    let mut c = ns.cmd("skopeo");
    c.args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]);
    if let Some(cr) = creds {
        c.arg(format!("--dest-creds={cr}"));
    }
    let out: Output = c
        .arg("--all")
        .arg(format!("oci:{}:{}", img.layout.display(), img.tag))
        .arg(format!("docker://{}/{repo}:{}", reg.addr, img.tag))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
}
