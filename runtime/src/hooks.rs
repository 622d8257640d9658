//! OCI lifecycle hooks (what containerd's NRI/CDI and device plugins' runtime
//! hooks plug into on a Kubernetes node): each hook is run with its path, args
//! (args[0] as argv[0]) and env only, the container's state JSON on stdin, and
//! is killed after `timeout` seconds. Where they run:
//!
//! - prestart (deprecated) and createRuntime: by the monitor, in the runtime's
//!   namespaces, once the init made the container's namespaces and mounts and
//!   before pivot_root; a failure fails `create`.
//! - createContainer: by the init, in the container's namespaces, before
//!   pivot_root (the path is the host's); a failure fails `create`.
//! - startContainer: by the init after `start`, before the process is
//!   executed, inside the container's root; a failure fails `start`.
//! - poststart: by the `start` command once the monitor reports the process
//!   executed, before `start` returns (as runc runs it, so a slow hook never stalls
//!   the monitor draining the container's output); poststop: by `delete`, after
//!   the container is gone. Their
//!   failures are logged, not fatal (runtime-spec).

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use oci_spec::runtime::{Hook, Hooks, Spec};

/// Errors of running a hook.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} hook {path}: {msg}")]
    Failed { kind: &'static str, path: String, msg: String },
}

/// The lifecycle points that have hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    /// The config.json name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }

    fn of(self, h: &Hooks) -> Option<&Vec<Hook>> {
        match self {
            Kind::Prestart => h.prestart().as_ref(),
            Kind::CreateRuntime => h.create_runtime().as_ref(),
            Kind::CreateContainer => h.create_container().as_ref(),
            Kind::StartContainer => h.start_container().as_ref(),
            Kind::Poststart => h.poststart().as_ref(),
            Kind::Poststop => h.poststop().as_ref(),
        }
    }
}

/// The spec's hooks of one kind.
pub fn of(spec: &Spec, kind: Kind) -> &[Hook] {
    spec.hooks().as_ref().and_then(|h| kind.of(h)).map(Vec::as_slice).unwrap_or_default()
}

/// Runs the spec's hooks of `kind` in order; the first failure stops.
pub fn run(spec: &Spec, kind: Kind, state: &[u8]) -> Result<(), Error> {
    for h in of(spec, kind) {
        run_one(h, kind, state)?;
    }
    Ok(())
}

/// Runs every hook of `kind` even when some fail (poststart, poststop: their
/// failures are only reported); returns the failures.
pub fn run_all(spec: &Spec, kind: Kind, state: &[u8]) -> Vec<Error> {
    of(spec, kind).iter().filter_map(|h| run_one(h, kind, state).err()).collect()
}

/// Runs one hook and waits for it (killing it after its timeout).
pub fn run_one(h: &Hook, kind: Kind, state: &[u8]) -> Result<(), Error> {
    let path = h.path().display().to_string();
    let fail = |msg: String| Error::Failed { kind: kind.name(), path: path.clone(), msg };
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args() {
        if let Some(a0) = args.first() {
            cmd.arg0(a0);
        }
        cmd.args(args.iter().skip(1));
    }
    cmd.env_clear();
    for e in h.env().as_deref().unwrap_or_default() {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine (EPIPE ignored).
        let _ = stdin.write_all(state);
    }
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = s.by_ref().take(64 * 1024).read_to_end(&mut out);
            out
        })
    });
    if let Some(secs) = h.timeout().filter(|t| *t > 0) {
        let pid = child.id() as i32;
        if !crate::sys::wait_exit(pid, Some(Duration::from_secs(secs as u64))) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("timed out after {secs}s (killed)")));
        }
    }
    let status = child.wait().map_err(|e| fail(format!("wait: {e}")))?;
    if status.success() {
        return Ok(());
    }
    // The hook's own stderr, unless something it started keeps the pipe open.
    let text = stderr
        .filter(|t| {
            let deadline = std::time::Instant::now() + Duration::from_millis(200);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            t.is_finished()
        })
        .and_then(|t| t.join().ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".into(),
    };
    Err(fail(if text.is_empty() { how } else { format!("{how}: {text}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(v: serde_json::Value) -> Hook {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn args_env_stdin_and_failure_text() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let script = format!("echo \"$0 $1 $FOO\" > {0}; cat >> {0}", out.display());
        let h = hook(serde_json::json!({"path": "/bin/sh", "args": ["myhook", "-c", script, "zero", "one"], "env": ["FOO=bar"]}));
        run_one(&h, Kind::Poststop, b"{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "zero one bar\n{\"id\":\"x\"}");
        let h = hook(serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}));
        let e = run_one(&h, Kind::CreateRuntime, b"{}").unwrap_err().to_string();
        assert!(e.contains("createRuntime hook /bin/sh: exit status 3: nope"), "{e}");
        let e = run_one(&hook(serde_json::json!({"path": "/nonexistent/hook"})), Kind::Prestart, b"{}").unwrap_err().to_string();
        assert!(e.contains("cannot start"), "{e}");
    }

    #[test]
    fn timeout_kills_the_hook() {
        let h = hook(serde_json::json!({"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}));
        let t = std::time::Instant::now();
        let e = run_one(&h, Kind::StartContainer, b"{}").unwrap_err().to_string();
        assert!(e.contains("timed out after 1s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
