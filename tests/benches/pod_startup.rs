//! Pod create → Running latency on a one-node lab, image already imported.
//!
//! `cargo bench -p minion-tests --bench pod_startup` (as root, after
//! `cargo build --workspace --bins`). Creates 20 pods one after another with the real
//! kubectl and times, for each, from the moment `kubectl create` is started to the
//! moment a watch (`kubectl get pods -w`, started before the first create) prints the
//! pod as Running. Prints every sample, the median and the 90th percentile.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use minion_tests::{bin_dir, require_root, Lab};

const PODS: usize = 20;

fn pod_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    bench: startup\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    \
         command: [\"sleep\", \"3600\"]\n"
    )
}

fn main() -> Result<()> {
    if !require_root("pod_startup bench") {
        return Ok(());
    }
    let lab = Lab::up("bench", 1)?;
    let lab_bin = bin_dir().join("minion-lab");
    let mut watch = Command::new(&lab_bin)
        .arg("--state-dir")
        .arg(&lab.state_root)
        .args(["kubectl", &lab.name, "--", "get", "pods", "-w", "--no-headers"])
        .args(["-o", "custom-columns=NAME:.metadata.name,PHASE:.status.phase"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting kubectl get pods -w")?;
    let stdout = watch.stdout.take().context("watch stdout")?;
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut f = line.split_whitespace();
            if let (Some(name), Some("Running")) = (f.next(), f.next()) {
                let _ = tx.send((name.to_string(), Instant::now()));
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let mut samples = Vec::new();
    let mut early: HashMap<String, Instant> = HashMap::new();
    for i in 0..PODS {
        let name = format!("startup-{i}");
        let start = Instant::now();
        let mut create = Command::new(&lab_bin)
            .arg("--state-dir")
            .arg(&lab.state_root)
            .args(["kubectl", &lab.name, "--", "create", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        create.stdin.take().context("stdin")?.write_all(pod_yaml(&name).as_bytes())?;
        if !create.wait()?.success() {
            bail!("kubectl create {name} failed");
        }
        let running = loop {
            if let Some(t) = early.remove(&name) {
                break t;
            }
            let (n, t) = rx.recv_timeout(Duration::from_secs(60)).with_context(|| format!("{name} never Running"))?;
            if n == name {
                break t;
            }
            early.entry(n).or_insert(t);
        };
        let ms = running.duration_since(start).as_secs_f64() * 1000.0;
        println!("{name}: {ms:.0} ms");
        samples.push(ms);
    }
    let _ = watch.kill();
    let _ = watch.wait();
    samples.sort_by(f64::total_cmp);
    let median = (samples[PODS / 2 - 1] + samples[PODS / 2]) / 2.0;
    let p90 = samples[(PODS * 9) / 10 - 1];
    println!("pod create -> Running, {PODS} pods: median {median:.0} ms, p90 {p90:.0} ms, min {:.0} ms, max {:.0} ms", samples[0], samples[PODS - 1]);
    drop(lab);
    Ok(())
}
