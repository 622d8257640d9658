//! Without root: the translation as data, the exported BPF's shape, and the
//! kernel's verdicts in forked children (no_new_privs lets any user load a
//! filter).

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpSyscall};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::plan::{plan, Rule};
use super::*;

fn profile(v: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(v).unwrap()
}

fn nr(name: &str) -> ScmpSyscall {
    ScmpSyscall::from_name(name).unwrap()
}

fn rule(name: &str, action: ScmpAction, conds: Vec<ScmpArgCompare>) -> Rule {
    Rule { name: name.into(), nr: nr(name), action, conds }
}

#[test]
fn denylist_plan_maps_actions_like_runc_and_skips_unknown_and_default() {
    let p = plan(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [
            {"names": ["mkdir", "no_such_call"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["chdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["getppid"], "action": "SCMP_ACT_KILL"},
            {"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["getpid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getuid"], "action": "SCMP_ACT_LOG"},
            {"names": ["getgid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socketcall"], "action": "SCMP_ACT_ERRNO"}
        ]
    })))
    .unwrap();
    assert_eq!(p.default, ScmpAction::Allow);
    assert_eq!(p.arches, vec![ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32]);
    assert_eq!(p.flags, (libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_TSYNC) as u32);
    assert_eq!(p.unknown, vec!["no_such_call".to_string()]);
    assert_eq!(p.entries, 9);
    let eperm = ScmpAction::Errno(libc::EPERM);
    assert_eq!(
        p.rules[..6],
        [
            rule("mkdir", eperm, vec![]),
            rule("chdir", ScmpAction::Errno(13), vec![]),
            rule("getppid", ScmpAction::KillThread, vec![]),
            rule("sync", ScmpAction::KillProcess, vec![]),
            rule("getpid", ScmpAction::Trap, vec![]),
            rule("getuid", ScmpAction::Log, vec![]),
        ]
    );
    // getgid's rule equals the default (skipped before its bad index is
    // looked at, as in runc); socketcall is i386-only: a pseudo number.
    assert_eq!(p.rules.len(), 7);
    assert_eq!(p.rules[6].name, "socketcall");
    assert!(p.rules[6].nr.as_raw_syscall() < 0);
}

#[test]
fn conditions_are_anded_unless_one_index_repeats() {
    let p = plan(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 1, "value": 0, "op": "SCMP_CMP_NE"}, {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_GT"}, {"index": 2, "value": 4, "op": "SCMP_CMP_LE"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    })))
    .unwrap();
    assert_eq!(p.default, ScmpAction::Errno(38));
    let allow = ScmpAction::Allow;
    assert_eq!(
        p.rules,
        vec![
            rule("clone", allow, vec![ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(2114060288), 0)]),
            rule("kill", allow, vec![ScmpArgCompare::new(1, ScmpCompareOp::NotEqual, 0)]),
            rule("kill", allow, vec![ScmpArgCompare::new(1, ScmpCompareOp::Equal, 9)]),
            rule(
                "mmap",
                allow,
                vec![ScmpArgCompare::new(0, ScmpCompareOp::Greater, 0), ScmpArgCompare::new(2, ScmpCompareOp::LessOrEqual, 4)]
            ),
            // MASKED_EQ without valueTwo compares with 0, as runc does.
            rule("personality", allow, vec![ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(8), 0)]),
        ]
    );
}

#[test]
fn notify_bad_index_unknown_flag_and_action_are_errors() {
    let err = |v: serde_json::Value| compile(&profile(v)).unwrap_err().to_string();
    let e = err(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}));
    assert!(e.contains("SCMP_ACT_NOTIFY"), "{e}");
    let e = err(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
    assert!(e.contains("SCMP_ACT_NOTIFY"), "{e}");
    let e = err(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}));
    assert!(e.contains("out of range"), "{e}");
    let e = err(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}));
    assert!(e.contains("WAIT_KILLABLE_RECV"), "{e}");
    let bad: Result<LinuxSeccomp, _> = serde_json::from_value(serde_json::json!({"defaultAction": "SCMP_ACT_WHATEVER"}));
    assert!(bad.is_err());
}

/// ld [4] (arch) first, a ret last, within the kernel's 4096 instructions.
#[test]
fn exported_program_checks_the_architecture_first() {
    let f = compile(&profile(serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]})))
    .unwrap();
    let first = f.prog[0];
    assert_eq!((first.code, first.k), ((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 4));
    let last = f.prog[f.prog.len() - 1];
    assert_eq!(last.code & 0x07, libc::BPF_RET as u16);
    assert!(f.prog.len() < 4096);
    assert!(format!("{f:?}").contains("instructions"));
}

/// How a call ends under the filter, in a forked child: Ok(errno, 0 for
/// success) or Err(signal).
fn verdict(f: &Filter, call: &dyn Fn() -> i64) -> Result<i32, i32> {
    // SAFETY: the child only calls prctl, seccomp, the given raw syscall and
    // _exit (async-signal-safe, no allocation: load uses the built program).
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || f.load().is_err() {
                libc::_exit(200);
            }
            let r = call();
            libc::_exit(if r < 0 { (-r) as i32 } else { 0 })
        },
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, 200) => panic!("loading the filter failed"),
            WaitStatus::Exited(_, c) => Ok(c),
            WaitStatus::Signaled(_, s, _) => Err(s as i32),
            other => panic!("{other:?}"),
        },
    }
}

fn sys(nr: libc::c_long, a: libc::c_long, b: libc::c_long) -> i64 {
    // SAFETY: only called with harmless calls and arguments below.
    let r = unsafe { libc::syscall(nr, a, b, 0, 0) };
    if r < 0 {
        -(nix::errno::Errno::last_raw() as i64)
    } else {
        r
    }
}

const SIGSYS: Result<i32, i32> = Err(libc::SIGSYS);

#[test]
fn the_kernel_applies_actions_and_conditions() {
    let f = compile(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [
            {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getppid"], "action": "SCMP_ACT_KILL"},
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22, "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 65280, "valueTwo": 256, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    })))
    .unwrap();
    // mkdirat(AT_FDCWD, NULL): EPERM under the filter instead of EFAULT.
    assert_eq!(verdict(&f, &|| sys(libc::SYS_mkdirat, libc::AT_FDCWD as _, 0)), Ok(libc::EPERM));
    assert_eq!(verdict(&f, &|| sys(libc::SYS_getppid, 0, 0)), SIGSYS);
    assert_eq!(verdict(&f, &|| sys(libc::SYS_getpid, 0, 0)), Ok(0));
    // Two conditions on argument 0: ORed.
    assert_eq!(verdict(&f, &|| sys(libc::SYS_getpriority, 1, 0)), Ok(13));
    assert_eq!(verdict(&f, &|| sys(libc::SYS_getpriority, 2, 0)), Ok(13));
    assert_eq!(verdict(&f, &|| sys(libc::SYS_getpriority, 0, 0)), Ok(0));
    // Conditions on arguments 0 and 1: ANDed; (who & 0xff00) == 0x100.
    assert_eq!(verdict(&f, &|| sys(libc::SYS_getpriority, 0, 0x1ff)), Ok(22));
    assert_ne!(verdict(&f, &|| sys(libc::SYS_getpriority, 0, 0x2ff)), Ok(22));
}

/// An i386 call (int 0x80, arguments in ebx and ecx); rbx is LLVM's, so it
/// is swapped in and out.
#[cfg(target_arch = "x86_64")]
fn int80(nr: u64, a: u64) -> i64 {
    let ret: u64;
    // SAFETY: a compat syscall; the registers it may change are declared.
    unsafe {
        std::arch::asm!("xchg {b}, rbx", "int 0x80", "xchg {b}, rbx",
            b = inout(reg) a => _, inlateout("rax") nr => ret, in("rcx") 0u64,
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _);
    }
    (ret as u32 as i32) as i64
}

#[cfg(target_arch = "x86_64")]
#[test]
fn i386_calls_are_filtered_when_listed_and_killed_otherwise() {
    const I386_MKDIR: u64 = 39;
    let deny = |arches: serde_json::Value| {
        compile(&profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": arches,
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})))
        .unwrap()
    };
    let none = compile(&profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"]}))).unwrap();
    match verdict(&none, &|| int80(I386_MKDIR, 0)) {
        Ok(e) if e == libc::EFAULT => {}
        other => {
            eprintln!("skip: no i386 emulation here ({other:?})");
            return;
        }
    }
    let f = deny(serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]));
    assert_eq!(verdict(&f, &|| int80(I386_MKDIR, 0)), Ok(13));
    assert_eq!(verdict(&f, &|| sys(libc::SYS_mkdirat, libc::AT_FDCWD as _, 0)), Ok(13));
    let f = deny(serde_json::json!(["SCMP_ARCH_X86_64"]));
    assert_eq!(verdict(&f, &|| int80(I386_MKDIR, 0)), SIGSYS);
    assert_eq!(verdict(&f, &|| sys(libc::SYS_mkdirat, libc::AT_FDCWD as _, 0)), Ok(13));
}
