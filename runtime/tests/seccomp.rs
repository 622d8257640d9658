//! Privileged tests of `linux.seccomp`: the filter compiled by minion-runtime is
//! loaded in the container (and in `exec`ed processes) and does what the
//! profile says, seen from busybox inside.

mod common;

use common::bundle::Bx;
use common::require_root;
use serde_json::{json, Value};

fn with_seccomp(profile: Value) -> impl FnOnce(&mut Value) {
    move |cfg| cfg["linux"]["seccomp"] = profile
}

#[test]
fn errno_rule_makes_mkdir_fail_in_init_and_exec() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    let profile = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat", "not_a_syscall"], "action": "SCMP_ACT_ERRNO"}]});
    let b = f.bundle(&["sh", "-c", "mkdir /tmp/x; echo rc=$?; grep Seccomp: /proc/self/status"], with_seccomp(profile.clone()));
    let (code, out) = f.run(&b);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted") && out.contains("rc=1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");

    let b = f.bundle(&["sleep", "100"], with_seccomp(profile));
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    f.rt_ok(&["start", &f.id]);
    let out = f.rt(&["exec", &f.id, "--", "mkdir", "/tmp/y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
    f.rt_ok(&["delete", "--force", &f.id]);
}

#[test]
fn kill_action_ends_the_process_with_sigsys() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    let b = f.bundle(&["mkdir", "/tmp/x"], with_seccomp(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}]})));
    let (code, out) = f.run(&b);
    assert_eq!(code, 128 + 31, "{out}");
}

#[test]
fn argument_conditioned_rule() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    // kill(pid, SIGUSR1) is refused with EACCES; kill(pid, 0) is not.
    let b = f.bundle(&["sh", "-c", "kill -USR1 $$; echo usr1=$?; kill -0 $$; echo zero=$?"], with_seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
            "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}]})));
    let (code, out) = f.run(&b);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("usr1=1") && out.contains("zero=0"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
}

/// Like docker's default profile: default ERRNO, an allowlist of everyday
/// calls, clone allowed only without namespace flags, clone3 ENOSYS.
fn docker_like() -> Value {
    let deny = ["mount", "umount2", "unshare", "setns", "ptrace", "reboot", "kexec_load", "kexec_file_load", "init_module",
        "finit_module", "delete_module", "swapon", "swapoff", "pivot_root", "bpf", "perf_event_open", "open_by_handle_at",
        "clone", "clone3", "acct", "settimeofday", "clock_settime", "add_key", "keyctl", "request_key", "userfaultfd"];
    // Every x86_64 call libseccomp knows, by number.
    let allow: Vec<String> = (0..1024)
        .filter_map(|nr| libseccomp::ScmpSyscall::from(nr).get_name().ok())
        .filter(|n| !deny.contains(&n.as_str()))
        .collect();
    assert!(allow.len() > 300, "{allow:?}");
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": allow, "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    })
}

#[test]
fn docker_like_allowlist_runs_busybox_sh() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    // Without no_new_privs the filter is loaded before capabilities are dropped.
    let b = f.bundle(&["sh", "-c", "echo hello; ls / | wc -l; mkdir /tmp/d && echo made; (echo sub) ; grep Seccomp: /proc/self/status"], |cfg| {
        cfg["process"]["noNewPrivileges"] = json!(false);
        cfg["linux"]["seccomp"] = docker_like();
    });
    let (code, out) = f.run(&b);
    assert_eq!(code, 0, "{out}");
    for want in ["hello", "made", "sub", "Seccomp:\t2"] {
        assert!(out.contains(want), "{want:?} missing: {out}");
    }
}

#[test]
fn filter_flags_and_foreign_architectures_load() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    // x86 and x32 rules are compiled by libseccomp with their own numbers
    // (socketcall exists on x86 only); the flags go to seccomp(2).
    let b = f.bundle(&["sh", "-c", "mkdir /tmp/x; echo rc=$?; grep Seccomp: /proc/self/status"], with_seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["mkdir", "mkdirat", "socketcall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30}]})));
    let (code, out) = f.run(&b);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Read-only file system") && out.contains("rc=1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}
