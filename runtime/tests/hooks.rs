//! Privileged tests of the OCI hooks: every kind runs at its lifecycle point,
//! in order, with the state JSON on stdin; failures fail create/start where
//! the runtime-spec says so, and only get logged for poststart/poststop.

mod common;

use std::fs;

use common::bundle::Bx;
use common::require_root;
use serde_json::{json, Value};

/// A hook appending `<name> <status> <mnt ns>` to `log` (a path as the hook
/// sees it) and saving its stdin next to it.
fn recorder(name: &str, log: &str) -> Value {
    let script = format!(
        "s=$(cat); echo \"$s\" > {log}.{name}.json; echo {name} $(echo \"$s\" | grep -o '\"status\":\"[a-z]*\"') $(readlink /proc/self/ns/mnt) >> {log}"
    );
    json!({"path": "/bin/sh", "args": ["sh", "-c", script], "env": ["PATH=/bin:/usr/bin"]})
}

fn lines(p: &std::path::Path) -> Vec<String> {
    fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn every_hook_runs_in_order_with_the_state() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    fs::create_dir_all(f.path("bundle/rootfs/hooklog")).unwrap();
    let host_log = f.path("bundle/rootfs/hooklog/order");
    let h = host_log.to_str().unwrap();
    let b = f.bundle(&["sleep", "100"], |cfg| {
        cfg["hooks"] = json!({
            "prestart": [recorder("prestart", h)],
            "createRuntime": [recorder("createRuntime", h)],
            "createContainer": [recorder("createContainer", h)],
            "startContainer": [recorder("startContainer", "/hooklog/order")],
            "poststart": [recorder("poststart", h)],
            "poststop": [recorder("poststop", h)]
        });
    });
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    let l = lines(&host_log);
    assert_eq!(l.len(), 3, "{l:?}");
    let host_mnt = fs::read_link("/proc/self/ns/mnt").unwrap().to_string_lossy().into_owned();
    assert!(l[0].starts_with("prestart \"status\":\"creating\"") && l[0].ends_with(&host_mnt), "{l:?}");
    assert!(l[1].starts_with("createRuntime \"status\":\"creating\"") && l[1].ends_with(&host_mnt), "{l:?}");
    assert!(l[2].starts_with("createContainer") && !l[2].ends_with(&host_mnt), "createContainer runs in the container's mount ns: {l:?}");
    let st: Value = serde_json::from_str(&fs::read_to_string(format!("{h}.createRuntime.json")).unwrap()).unwrap();
    assert_eq!(st["id"], f.id.as_str());
    assert_eq!(st["pid"], f.state()["pid"]);
    assert_eq!(st["bundle"], b.to_str().unwrap());
    f.rt_ok(&["start", &f.id]);
    let l = lines(&host_log);
    assert_eq!(l.len(), 5, "{l:?}");
    assert!(l[3].starts_with("startContainer \"status\":\"created\""), "{l:?}");
    assert!(l[4].starts_with("poststart \"status\":\"running\"") && l[4].ends_with(&host_mnt), "{l:?}");
    f.rt_ok(&["delete", "--force", &f.id]);
    let l = lines(&host_log);
    assert_eq!(l.len(), 6, "{l:?}");
    assert!(l[5].starts_with("poststop \"status\":\"stopped\""), "{l:?}");
}

fn failing(msg: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {msg} >&2; exit 3")]})
}

#[test]
fn failing_hooks_fail_create_and_start_but_not_poststart() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    let b = f.bundle(&["sleep", "100"], |cfg| cfg["hooks"] = json!({"createRuntime": [failing("no-gpu-here")]}));
    let out = f.rt(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("createRuntime hook /bin/sh: exit status 3: no-gpu-here"), "{err}");
    assert!(!f.rt(&["state", &f.id]).status.success(), "a failed create leaves nothing");

    let b = f.bundle(&["sleep", "100"], |cfg| {
        cfg["hooks"] = json!({"createContainer": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]})
    });
    let err = String::from_utf8_lossy(&f.rt(&["create", "--bundle", b.to_str().unwrap(), &f.id]).stderr).into_owned();
    assert!(err.contains("createContainer hook /bin/sleep: timed out after 1s"), "{err}");

    let b = f.bundle(&["sleep", "100"], |cfg| cfg["hooks"] = json!({"startContainer": [failing("refused")]}));
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    let err = String::from_utf8_lossy(&f.rt(&["start", &f.id]).stderr).into_owned();
    assert!(err.contains("startContainer hook /bin/sh: exit status 3: refused"), "{err}");
    f.rt_ok(&["delete", "--force", &f.id]);

    let b = f.bundle(&["sleep", "100"], |cfg| {
        cfg["hooks"] = json!({"poststart": [failing("late")], "poststop": [failing("later")]})
    });
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    f.rt_ok(&["start", &f.id]);
    assert_eq!(f.state()["status"], "running");
    f.rt_ok(&["delete", "--force", &f.id]);
}
