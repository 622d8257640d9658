//! `kubectl logs` end to end (issue 3, pods/log): kubectl → apiserver → the node's
//! kubelet server → the CRI log files, with --tail, --timestamps, -c, -f and --previous,
//! through the real kubectl on a one-node lab.

use std::io::Read;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use minion_tests::{output, require_root, wait_until, Lab};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: echo
spec:
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "for i in 1 2 3 4 5; do echo line-$i; done; trap 'exit 0' TERM; while true; do if [ -f /tmp/more ]; then rm /tmp/more; echo late-line; fi; sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: duo
spec:
  containers:
  - name: left
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo left-says-hi; trap 'exit 0' TERM; sleep 3600 & wait"]
  - name: right
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo right-says-hi; trap 'exit 0' TERM; sleep 3600 & wait"]
---
apiVersion: v1
kind: Pod
metadata:
  name: crash
spec:
  restartPolicy: Always
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo run-$(cat /proc/sys/kernel/random/uuid); echo crash-marker; sleep 2; exit 1"]
"#;

fn step(what: &str) {
    eprintln!("logs: {what}");
}

#[test]
fn kubectl_logs() -> Result<()> {
    if !require_root("kubectl_logs") {
        return Ok(());
    }
    let lab = Lab::up("logs", 1)?;
    let path = lab.state_dir().join("logs.yaml");
    std::fs::write(&path, MANIFEST)?;
    lab.kubectl(&["apply", "-f", &path.display().to_string()])?;
    lab.wait_running(&["--field-selector", "metadata.name=echo"], 1, Duration::from_secs(90))?;
    lab.wait_running(&["--field-selector", "metadata.name=duo"], 1, Duration::from_secs(60))?;

    step("node publishes its kubelet port");
    let port = lab.kubectl(&["get", "node", "node-1", "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}"])?;
    ensure!(port.trim() == "10250", "kubelet port published: {port:?}");
    let ip = lab.kubectl(&["get", "node", "node-1", "-o", "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}"])?;
    let url = format!("http://{}:10250/containerLogs/default/echo/main", ip.trim());
    let code = lab.exec("node-1", &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", &url])?;
    ensure!(code.trim() == "401", "the kubelet API without the API server's token answered {code:?}");

    step("kubectl logs shows what the container wrote");
    let all = "line-1\nline-2\nline-3\nline-4\nline-5\n";
    let logs = wait_until("echo's five lines", Duration::from_secs(20), || lab.kubectl(&["logs", "echo"]).ok().filter(|l| l == all))?;
    ensure!(logs == all, "logs: {logs:?}");

    step("--tail=2 and --timestamps");
    let tail = lab.kubectl(&["logs", "echo", "--tail=2"])?;
    ensure!(tail == "line-4\nline-5\n", "--tail=2: {tail:?}");
    let stamped = lab.kubectl(&["logs", "echo", "--timestamps", "--tail=3"])?;
    let lines: Vec<&str> = stamped.lines().collect();
    ensure!(lines.len() == 3, "--timestamps: {stamped:?}");
    for (line, want) in lines.iter().zip(["line-3", "line-4", "line-5"]) {
        let (ts, text) = line.split_once(' ').context("no timestamp")?;
        ensure!(text == want && ts.len() == 30 && ts.ends_with('Z') && ts.contains('T'), "--timestamps line {line:?}");
    }

    step("-c picks a container of a two-container pod; without it the API asks for one");
    ensure!(lab.kubectl(&["logs", "duo", "-c", "right"])? == "right-says-hi\n", "-c right");
    ensure!(lab.kubectl(&["logs", "duo", "-c", "left"])? == "left-says-hi\n", "-c left");
    let raw = output(&mut lab.kubectl_cmd(&["get", "--raw", "/api/v1/namespaces/default/pods/duo/log"]))?;
    let err = String::from_utf8_lossy(&raw.stderr);
    ensure!(
        !raw.status.success() && err.contains("a container name must be specified for pod duo, choose one of: [left right]"),
        "raw log without container: {err}"
    );
    // kubectl itself defaults to the first container and says so.
    let defaulted = output(&mut lab.kubectl_cmd(&["logs", "duo"]))?;
    let (out, err) = (String::from_utf8_lossy(&defaulted.stdout), String::from_utf8_lossy(&defaulted.stderr));
    ensure!(out == "left-says-hi\n" && err.contains("Defaulted container \"left\""), "logs duo: {out:?} {err:?}");
    let bad = output(&mut lab.kubectl_cmd(&["logs", "duo", "-c", "nope"]))?;
    let err = String::from_utf8_lossy(&bad.stderr);
    ensure!(!bad.status.success() && err.contains("container nope is not valid for pod duo"), "-c nope: {err}");

    step("-f streams a line written after it started");
    follow_gets_new_line(&lab)?;

    step("--previous after a restart");
    previous_after_restart(&lab)?;
    lab.down()
}

fn follow_gets_new_line(lab: &Lab) -> Result<()> {
    let mut child = lab.kubectl_cmd(&["logs", "-f", "echo"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                break;
            }
        }
    });
    let result = (|| -> Result<()> {
        let mut seen = String::new();
        let wait_for = |want: &str, seen: &mut String| -> Result<()> {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while !seen.contains(want) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let chunk = rx.recv_timeout(left).with_context(|| format!("-f: no {want:?} within 15s; saw {seen:?}"))?;
                seen.push_str(&chunk);
            }
            Ok(())
        };
        wait_for("line-5\n", &mut seen)?;
        ensure!(!seen.contains("late-line"), "late-line before it was written: {seen:?}");
        let pod = lab.running_pods(&["--field-selector", "metadata.name=echo"])?.remove(0);
        lab.in_pod(&pod, "main", &["touch", "/tmp/more"])?;
        wait_for("late-line\n", &mut seen)?;
        ensure!(child.try_wait()?.is_none(), "kubectl logs -f ended while the container runs");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    result
}

fn restart_count(lab: &Lab) -> Option<i64> {
    let pod = lab.json(&["get", "pod", "crash", "-o", "json"]).ok()?;
    pod["status"]["containerStatuses"][0]["restartCount"].as_i64()
}

fn run_id(text: &str) -> Option<String> {
    text.lines().find(|l| l.starts_with("run-")).map(String::from)
}

fn previous_after_restart(lab: &Lab) -> Result<()> {
    wait_until("crash restarted", Duration::from_secs(60), || restart_count(lab).filter(|n| *n >= 1))?;
    let (prev, cur) = wait_until("previous and current runs' logs", Duration::from_secs(20), || {
        let prev = lab.kubectl(&["logs", "crash", "--previous"]).ok()?;
        let cur = lab.kubectl(&["logs", "crash"]).ok()?;
        (run_id(&prev).is_some() && run_id(&cur).is_some()).then_some((prev, cur))
    })?;
    ensure!(prev.contains("crash-marker\n"), "--previous: {prev:?}");
    ensure!(run_id(&prev) != run_id(&cur), "--previous shows the current run: {prev:?} vs {cur:?}");
    // A container that never restarted has no previous run: the kubelet's error.
    let none = output(&mut lab.kubectl_cmd(&["logs", "duo", "-c", "left", "--previous"]))?;
    let err = String::from_utf8_lossy(&none.stderr);
    ensure!(
        !none.status.success() && err.contains("previous terminated container \"left\" in pod \"duo\" not found"),
        "--previous without a restart: {err}"
    );
    Ok(())
}
