//! `cargo bench -p minion-runtime --bench pull`: cold pull + unpack of the same
//! multi-layer image from a real registry (Debian's docker-registry on 127.0.0.1
//! in a private network namespace), ours (`minion-runtime image pull`: download,
//! verify, unpack to overlay snapshots) against `skopeo copy` + `umoci unpack`
//! (download to an OCI layout, then unpack to a rootfs). Same run, alternating,
//! medians and the ratio ours/peer.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::oci_fixture::{build_image_with, push, Netns, Registry};

const BIN: &str = env!("CARGO_BIN_EXE_minion-runtime");
const ROUNDS: usize = 5;
const PAYLOAD_LAYERS: usize = 4;
const PAYLOAD_BYTES: usize = 8 << 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run_ok(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench pull: skipped (needs root for netns and overlay snapshots)");
        return;
    }
    for t in ["docker-registry", "skopeo", "umoci", "curl"] {
        if !Command::new("sh").arg("-c").arg(format!("command -v {t}")).output().is_ok_and(|o| o.status.success()) {
            eprintln!("bench pull: skipped ({t} missing)");
            return;
        }
    }
    let ns = Netns::new();
    let reg = Registry::start(&ns, 5000);
    let work = tempfile::tempdir().unwrap();
    // umoci 0.4.7 cannot read zstd layers, so the bench image is all gzip.
    let img = build_image_with(&work.path().join("layout"), "v1", PAYLOAD_LAYERS, PAYLOAD_BYTES, false);
    push(&ns, &img, &reg, "bench/img");
    let reference = format!("{}/bench/img:v1", reg.addr);
    let blob_bytes: u64 = img.layers.iter().map(|d| std::fs::metadata(reg.blob_file(d)).map(|m| m.len()).unwrap_or(0)).sum();
    println!("image: {} layers, {:.1} MiB compressed", img.layers.len(), blob_bytes as f64 / 1_048_576.0);

    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let d = work.path().join(format!("ours-{round}"));
        let mut c = ns.cmd(BIN);
        c.arg("--image-root").arg(&d).args(["image", "pull", "-q", &reference, "--insecure-registry", &reg.addr]);
        let t = Instant::now();
        run_ok(c, "minion-runtime image pull");
        ours.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&d);

        let d = work.path().join(format!("peer-{round}"));
        std::fs::create_dir_all(&d).unwrap();
        let mut c = ns.cmd("skopeo");
        c.args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false", &format!("docker://{reference}")])
            .arg(format!("oci:{}:v1", d.join("layout").display()));
        let mut u = Command::new("umoci");
        u.arg("unpack").arg("--image").arg(format!("{}:v1", d.join("layout").display())).arg(d.join("bundle"));
        let t = Instant::now();
        run_ok(c, "skopeo copy");
        run_ok(u, "umoci unpack");
        peer.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&d);
    }
    let (o, p) = (median(ours.clone()), median(peer.clone()));
    println!("ours  (minion-runtime image pull):  median {:>8.1} ms  all {:?}", o.as_secs_f64() * 1e3, ms(&ours));
    println!("peer  (skopeo copy + umoci unpack): median {:>8.1} ms  all {:?}", p.as_secs_f64() * 1e3, ms(&peer));
    println!("ratio ours/peer: {:.2}x (goal <= 1.0x)", o.as_secs_f64() / p.as_secs_f64());
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("loadavg: {}", l.trim());
    }
}

fn ms(v: &[Duration]) -> Vec<u64> {
    v.iter().map(|d| d.as_millis() as u64).collect()
}
