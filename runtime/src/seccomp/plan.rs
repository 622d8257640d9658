//! Translation of an OCI `linux.seccomp` profile into libseccomp terms, with
//! runc's semantics, as plain data (no filter context, no kernel): the plan
//! is what [`super::compile`] hands to libseccomp.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpSyscall};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompArg, LinuxSeccompFilterFlag as Flag,
    LinuxSeccompOperator as Op,
};

use super::Error;

/// One libseccomp rule: `action` when `nr` is called and all `conds` hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The profile's name for the call.
    pub name: String,
    /// Its number on the native architecture (libseccomp's pseudo number,
    /// below zero, for a call that only other architectures have).
    pub nr: ScmpSyscall,
    pub action: ScmpAction,
    pub conds: Vec<ScmpArgCompare>,
}

/// A profile translated for libseccomp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub default: ScmpAction,
    /// Architectures added to the native one.
    pub arches: Vec<ScmpArch>,
    /// SECCOMP_FILTER_FLAG_* bits for seccomp(2).
    pub flags: u32,
    pub rules: Vec<Rule>,
    /// Names libseccomp does not know (skipped, as runc does).
    pub unknown: Vec<String>,
    /// Number of (name, action) entries of the profile, as runc counts them
    /// to decide on libseccomp's binary-tree optimization.
    pub entries: usize,
}

/// The action, as runc maps it: SCMP_ACT_KILL kills the thread, ERRNO and
/// TRACE without errnoRet return EPERM; NOTIFY needs a seccomp agent.
pub fn action(a: Action, errno: Option<u32>) -> Result<ScmpAction, Error> {
    let ret = |e: Option<u32>| e.map(|e| (e & 0xffff) as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        Action::ScmpActKill | Action::ScmpActKillThread => ScmpAction::KillThread,
        Action::ScmpActKillProcess => ScmpAction::KillProcess,
        Action::ScmpActTrap => ScmpAction::Trap,
        Action::ScmpActErrno => ScmpAction::Errno(ret(errno)),
        Action::ScmpActTrace => ScmpAction::Trace(ret(errno) as u16),
        Action::ScmpActLog => ScmpAction::Log,
        Action::ScmpActAllow => ScmpAction::Allow,
        Action::ScmpActNotify => return Err(Error::Action("SCMP_ACT_NOTIFY")),
    })
}

fn flags(list: &[Flag]) -> Result<u32, Error> {
    let mut bits = 0;
    for f in list {
        bits |= match f {
            Flag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC as u32,
            Flag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG as u32,
            Flag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32,
            Flag::SeccompFilterFlagWaitKillableRecv => {
                return Err(Error::Flag("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (only for SCMP_ACT_NOTIFY)"))
            }
        };
    }
    Ok(bits)
}

fn arch(a: &oci_spec::runtime::Arch) -> Result<ScmpArch, Error> {
    let name = serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    name.parse().map_err(|source| Error::Libseccomp { step: format!("architecture {name:?}"), source })
}

fn cond(name: &str, a: &LinuxSeccompArg) -> Result<ScmpArgCompare, Error> {
    let index = u32::try_from(a.index()).ok().filter(|i| *i < 6).ok_or_else(|| Error::Arg {
        name: name.into(),
        msg: format!("argument index {} is out of range (0-5)", a.index()),
    })?;
    let (op, datum) = match a.op() {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, a.value()),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, a.value()),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, a.value()),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, a.value()),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, a.value()),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, a.value()),
        // value is the mask, valueTwo the value (0 when absent, as in runc).
        Op::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(a.value()), a.value_two().unwrap_or(0)),
    };
    Ok(ScmpArgCompare::new(index, op, datum))
}

/// Translates a profile. Per syscall name: an entry whose action equals the
/// default is skipped; a name libseccomp does not know is skipped and
/// listed; conditions are ANDed in one rule, unless two name the same
/// argument, then each becomes a rule of its own (ORed), as runc does.
pub fn plan(s: &LinuxSeccomp) -> Result<Plan, Error> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    let arches = s.architectures().as_deref().unwrap_or_default().iter().map(arch).collect::<Result<_, _>>()?;
    let flags = flags(s.flags().as_deref().unwrap_or_default())?;
    let mut plan = Plan { default, arches, flags, rules: Vec::new(), unknown: Vec::new(), entries: 0 };
    for sc in s.syscalls().as_deref().unwrap_or_default() {
        let act = action(sc.action(), sc.errno_ret())?;
        let args = sc.args().as_deref().unwrap_or_default();
        for name in sc.names() {
            plan.entries += 1;
            if act == default {
                continue;
            }
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                plan.unknown.push(name.clone());
                continue;
            };
            let conds = args.iter().map(|a| cond(name, a)).collect::<Result<Vec<_>, _>>()?;
            let repeated = (0..6u64).any(|i| args.iter().filter(|a| a.index() as u64 == i).count() > 1);
            if repeated {
                plan.rules.extend(conds.into_iter().map(|c| Rule { name: name.clone(), nr, action: act, conds: vec![c] }));
            } else {
                plan.rules.push(Rule { name: name.clone(), nr, action: act, conds });
            }
        }
    }
    Ok(plan)
}
