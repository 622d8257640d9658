//! Races and crashes of the image store, against a real registry in a test
//! namespace: `image rm` / `image gc` racing a pull of the same image never
//! leave an image whose layers are gone (the pull's lease holds them); a pull
//! killed with SIGKILL in the middle of a layer download or of an unpack leaves
//! only temporaries that the next store open removes and no pull trusts; a
//! connection cut in the middle of a layer fails clearly.

mod common;
#[path = "common/image_env.rs"]
mod image_env;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::oci_fixture::{build_image, push, require_tools, Netns, Registry, TestImage};
use common::require_root;
use image_env::{count, err, in_netns, ok, ok_status, Env, BIN, WHITEOUT_SCRIPT};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Checks that every blob in the store hashes to its name.
fn blobs_verified(store: &Path) {
    for ent in fs::read_dir(store.join("blobs/sha256")).unwrap() {
        let p = ent.unwrap().path();
        let hex = format!("{:x}", Sha256::digest(fs::read(&p).unwrap()));
        assert_eq!(p.file_name().unwrap().to_str().unwrap(), hex, "blob {} is not what its name says", p.display());
    }
}

/// The image is either absent or whole (all snapshots and layer blobs there).
fn absent_or_whole(env: &Env, store: &Path, reference: &str) -> bool {
    let o = env.rt(store, &["image", "inspect", reference]);
    if !o.status.success() {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("not found in store"), "broken image after a race: {e}");
        return false;
    }
    let img: Value = serde_json::from_slice(&o.stdout).unwrap();
    for dir in img["rootfs"].as_str().unwrap().split(':') {
        assert!(Path::new(dir).is_dir(), "snapshot {dir} is gone");
    }
    for l in &env.layers {
        assert!(store.join("blobs/sha256").join(l.trim_start_matches("sha256:")).is_file(), "layer blob {l} is gone");
    }
    true
}

#[test]
fn rm_and_gc_racing_a_pull_never_leave_a_broken_image() {
    let Some(env) = Env::new() else { return };
    let store = env.store("images");
    let reference = "127.0.0.1:5000/test/multi:v1";
    ok(&env.pull(&store, reference));
    let (mut present, mut absent) = (0, 0);
    for i in 0..16u64 {
        let pull = env
            .cmd(&store, &["image", "pull", "-q", reference, "--insecure-registry", &env.reg.addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(i * 7 % 80));
        let removed = if i % 2 == 0 {
            env.rt(&store, &["image", "rm", reference])
        } else {
            env.rt(&store, &["image", "gc", "--high-percent", "0", "--low-percent", "0"])
        };
        let pulled = pull.wait_with_output().unwrap();
        ok_status(&pulled);
        if !removed.status.success() {
            let e = String::from_utf8_lossy(&removed.stderr);
            assert!(e.contains("not found in store"), "rm failed: {e}");
        }
        if absent_or_whole(&env, &store, reference) {
            present += 1;
        } else {
            absent += 1;
            ok(&env.pull(&store, reference));
        }
    }
    eprintln!("after the races: image present {present} times, removed {absent} times");
    assert_eq!(count(&store.join("tmp")), 0, "temporaries left behind");
    blobs_verified(&store);
    let img = ok(&env.pull(&store, reference));
    assert_eq!(env.run_in(&store, img["rootfs"].as_str().unwrap(), WHITEOUT_SCRIPT), Some(0));
}

/// Writes through to `inner`, hashing what passes.
struct HashW<W> {
    inner: W,
    h: Sha256,
}

impl<W: Write> Write for HashW<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.h.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Appends a gzip layer holding one file of `len` zero bytes at `path` to the
/// layout's image (small to send, long to unpack); returns its diff id.
fn add_zero_layer(img: &TestImage, path: &str, len: u64) -> String {
    let blobs = img.layout.join("blobs/sha256");
    let put = |data: &[u8]| -> String {
        let d = format!("sha256:{:x}", Sha256::digest(data));
        fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let read = |d: &str| -> Value { serde_json::from_slice(&fs::read(blobs.join(d.trim_start_matches("sha256:"))).unwrap()).unwrap() };
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(HashW { inner: gz, h: Sha256::new() });
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(len);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, path, std::io::repeat(0).take(len)).unwrap();
    let hw = b.into_inner().unwrap();
    let diff_id = format!("sha256:{:x}", hw.h.finalize());
    let blob = hw.inner.finish().unwrap();
    let layer = put(&blob);

    let index_path = img.layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(json!(diff_id));
    let cb = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = json!(put(&cb));
    manifest["config"]["size"] = json!(cb.len());
    manifest["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": blob.len()}));
    let mb = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = json!(put(&mb));
    index["manifests"][0]["size"] = json!(mb.len());
    fs::write(&index_path, index.to_string()).unwrap();
    diff_id
}

/// What the test proxy does to the registry's answers.
#[derive(Clone)]
enum Mode {
    /// At most this many bytes a second per connection.
    Throttle(usize),
    /// Cuts the connection this many bytes into the answer to a GET of this blob.
    CutBlob(String, usize),
}

/// A TCP proxy on 127.0.0.1:`port` in the namespace in front of the registry.
struct Proxy {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    cuts: Arc<AtomicUsize>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Proxy {
    fn start(ns: &Netns, port: u16, upstream: u16, mode: Mode) -> Proxy {
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (stop2, cuts2) = (stop.clone(), cuts.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = in_netns(ns, move || {
            let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let armed = Arc::new(AtomicBool::new(false));
                let (c2, s2, a2, m2) = (client.try_clone().unwrap(), server.try_clone().unwrap(), armed.clone(), mode.clone());
                std::thread::spawn(move || requests(c2, s2, a2, &m2));
                let (m2, k2) = (mode.clone(), cuts2.clone());
                std::thread::spawn(move || answers(server, client, armed, &m2, &k2));
            }
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("proxy listening");
        Proxy { stop, thread: Some(thread), cuts }
    }
}

/// Client to registry; arms the cut when the request names the blob.
fn requests(mut from: TcpStream, mut to: TcpStream, armed: Arc<AtomicBool>, mode: &Mode) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Mode::CutBlob(digest, _) = mode {
            if String::from_utf8_lossy(&buf[..n]).contains(&format!("/blobs/{digest}")) {
                armed.store(true, Ordering::SeqCst);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Registry to client, throttled or cut.
fn answers(mut from: TcpStream, mut to: TcpStream, armed: Arc<AtomicBool>, mode: &Mode, cuts: &AtomicUsize) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut since_armed = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match mode {
            Mode::Throttle(rate) => std::thread::sleep(Duration::from_secs_f64(n as f64 / *rate as f64)),
            Mode::CutBlob(_, after) if armed.load(Ordering::SeqCst) => {
                if since_armed + n >= *after {
                    let _ = to.write_all(&buf[..after - since_armed]);
                    cuts.fetch_add(1, Ordering::SeqCst);
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
                since_armed += n;
            }
            Mode::CutBlob(..) => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Polls `what` every 2 ms for up to `secs`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Entries (recursively, files and dirs) under the store's tmp/.
fn tmp_entries(store: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                out.push(e.path());
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&store.join("tmp"), &mut out);
    out
}

/// SIGKILLs a running `minion-runtime` (by pid; `ip netns exec` execs it).
fn kill9(mut child: Child) {
    let pid = child.id() as i32;
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.to_string_lossy().contains("minion-runtime"), "pid {pid} is {}", exe.display());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let st = child.wait().unwrap();
    assert!(!st.success(), "the pull finished before it was killed");
}

const BIG: u64 = 128 << 20;

#[test]
fn a_pull_killed_mid_download_or_mid_unpack_leaves_nothing_trusted() {
    if !require_root() || !require_tools() {
        return;
    }
    let ns = Netns::new();
    let reg = Registry::start(&ns, 5000);
    let tmp = tempfile::tempdir().unwrap();
    // busybox, whiteouts, a 4 MiB payload layer, and 128 MiB of zeros.
    let img = build_image(&tmp.path().join("layout"), "v1", 1, 4 << 20);
    let big_diff = add_zero_layer(&img, "big/zeros", BIG);
    push(&ns, &img, &reg, "test/big");
    let _slow = Proxy::start(&ns, 5002, 5000, Mode::Throttle(512 << 10));
    let store = tmp.path().join("images");
    let pull = |addr: &str| {
        ns.cmd(BIN)
            .arg("--image-root")
            .arg(&store)
            .args(["image", "pull", "-q", &format!("{addr}/test/big:v1"), "--insecure-registry", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // 1. Killed in the middle of a layer download (through a slow proxy).
    let child = pull("127.0.0.1:5002");
    wait_for(60, "a partial layer download", || {
        tmp_entries(&store).iter().any(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("blob-") && fs::metadata(p).is_ok_and(|m| m.len() >= 256 << 10)
        })
    });
    kill9(child);
    let left = tmp_entries(&store);
    assert!(!left.is_empty(), "the killed pull left no temporaries: the test did not kill it mid-download");
    eprintln!("left by the pull killed mid-download: {left:?}");
    blobs_verified(&store);
    assert_eq!(count(&store.join("images")), 0);
    // The next store open sweeps them.
    ok(&ns.cmd(BIN).arg("--image-root").arg(&store).args(["image", "ls"]).output().unwrap());
    assert_eq!(tmp_entries(&store), Vec::<PathBuf>::new());

    // 2. Killed in the middle of unpacking the big layer.
    let big_hex = big_diff.trim_start_matches("sha256:");
    let child = pull("127.0.0.1:5000");
    wait_for(60, "the big layer being unpacked", || {
        tmp_entries(&store).iter().any(|p| p.ends_with("big/zeros"))
    });
    kill9(child);
    let left = tmp_entries(&store);
    assert!(left.iter().any(|p| p.ends_with("big/zeros")), "no partial snapshot left: {left:?}");
    assert!(!store.join("snapshots").join(big_hex).exists(), "a half-unpacked snapshot was committed");
    assert_eq!(count(&store.join("images")), 0);

    // 3. The next pull sweeps the leftovers, fetches and unpacks what was never
    // finished, and the image is whole.
    let out = pull("127.0.0.1:5000").wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tmp_entries(&store), Vec::<PathBuf>::new(), "temporaries left behind");
    let zeros = store.join("snapshots").join(big_hex).join("big/zeros");
    assert_eq!(fs::metadata(&zeros).unwrap().len(), BIG);
    assert_eq!(count(&store.join("blobs/sha256")), 6, "5 layers + config");
    blobs_verified(&store);
    let inspect = ok(&ns.cmd(BIN).arg("--image-root").arg(&store).args(["image", "inspect", "127.0.0.1:5000/test/big:v1"]).output().unwrap());
    assert_eq!(inspect["layers"], 5);
}

#[test]
fn a_connection_cut_mid_layer_fails_clearly_and_keeps_nothing() {
    let Some(env) = Env::new() else { return };
    let victim = env.layers[0].clone();
    let proxy = Proxy::start(&env.ns, 5003, 5000, Mode::CutBlob(victim.clone(), 100 << 10));
    let store = env.store("images");
    let e = err(&env.rt(&store, &["image", "pull", "127.0.0.1:5003/test/multi:v1", "--insecure-registry", "127.0.0.1:5003"]));
    assert!(proxy.cuts.load(Ordering::SeqCst) >= 1, "the proxy never cut the layer");
    assert!(e.contains("pulling 127.0.0.1:5003/test/multi:v1 from 127.0.0.1:5003"), "{e}");
    assert!(e.contains(victim.as_str()), "names the layer: {e}");
    assert!(!store.join("blobs/sha256").join(victim.trim_start_matches("sha256:")).exists(), "truncated blob kept");
    assert_eq!(count(&store.join("images")), 0);
    assert_eq!(count(&store.join("tmp")), 0);
    blobs_verified(&store);
    // Through the registry itself the same store then pulls the whole image.
    let img = ok(&env.pull(&store, "127.0.0.1:5000/test/multi:v1"));
    assert_eq!(img["layers"], 3);
}
