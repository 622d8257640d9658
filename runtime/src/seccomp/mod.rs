//! Seccomp: the syscall filter a Pod's `securityContext.seccompProfile` (e.g.
//! `RuntimeDefault`) becomes in the OCI config's `linux.seccomp`, compiled by
//! libseccomp as runc, crun and youki do.
//!
//! The profile is translated with runc's semantics ([`plan`]): SCMP_ACT_KILL
//! kills the thread, ERRNO/TRACE without errnoRet return EPERM; syscall names
//! libseccomp does not know are skipped with a log line; an entry whose action
//! is the default one is skipped; an entry's conditions are ANDed unless two
//! name the same argument, then each is a rule of its own (ORed); the listed
//! `architectures` are added to the native one (x86 and x32 calls are filtered
//! by their own numbers; a call of an architecture not listed kills the
//! thread, libseccomp's bad-arch action). SCMP_ACT_NOTIFY needs a seccomp
//! agent and is refused with an error, as is an unknown action, at create.
//!
//! libseccomp builds the filter and exports it as classic BPF when the
//! profile is compiled (it allocates); loading is one raw seccomp(2) call,
//! with the SECCOMP_FILTER_FLAG_* bits of `flags`. The container's init loads
//! it as late as possible: right before execve when `noNewPrivileges` is set,
//! else before capabilities are dropped (loading needs CAP_SYS_ADMIN without
//! no_new_privs), like runc; `exec` loads the same filter the same way.
//! runc's -ENOSYS stub for calls newer than the profile is not added.
#![allow(unsafe_code)]

pub mod plan;

use std::io::{Read, Seek};

use libseccomp::error::SeccompError;
use libseccomp::ScmpFilterContext;
use oci_spec::runtime::LinuxSeccomp;

/// Errors of translating, compiling or loading a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("linux.seccomp: action {0} is not supported by minion-runtime (no seccomp agent)")]
    Action(&'static str),
    #[error("linux.seccomp: flag {0} is not supported by minion-runtime")]
    Flag(&'static str),
    #[error("linux.seccomp: syscall {name:?}: {msg}")]
    Arg { name: String, msg: String },
    #[error("linux.seccomp: libseccomp: {step}: {source}")]
    Libseccomp { step: String, source: SeccompError },
    #[error("linux.seccomp: export the BPF program of libseccomp: {0}")]
    Export(std::io::Error),
    #[error("load seccomp filter ({len} instructions, flags {flags:#x}): {source}")]
    Load { len: usize, flags: u32, source: nix::Error },
    #[error("load seccomp filter with SECCOMP_FILTER_FLAG_TSYNC: thread {0} could not be synchronized")]
    Tsync(i64),
}

/// A compiled filter, ready to load.
#[derive(Clone)]
pub struct Filter {
    /// The BPF program libseccomp generated.
    pub prog: Vec<libc::sock_filter>,
    /// SECCOMP_FILTER_FLAG_* bits.
    pub flags: u32,
    /// Syscall names of the profile that libseccomp does not know (skipped).
    pub unknown: Vec<String>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.prog.len())
            .field("flags", &self.flags)
            .field("unknown", &self.unknown)
            .finish()
    }
}

fn lib(step: impl Into<String>) -> impl FnOnce(SeccompError) -> Error {
    let step = step.into();
    move |source| Error::Libseccomp { step, source }
}

/// Builds the libseccomp filter context of a plan.
pub fn context(p: &plan::Plan, log: bool, ssb: bool) -> Result<ScmpFilterContext, Error> {
    let mut ctx = ScmpFilterContext::new(p.default).map_err(lib("create filter"))?;
    for a in &p.arches {
        ctx.add_arch(*a).map_err(lib(format!("add architecture {a:?}")))?;
    }
    // Checks that libseccomp and the kernel support the flags (loading
    // passes them to seccomp(2) itself).
    if log {
        ctx.set_ctl_log(true).map_err(lib("SECCOMP_FILTER_FLAG_LOG"))?;
    }
    if ssb {
        ctx.set_ctl_ssb(true).map_err(lib("SECCOMP_FILTER_FLAG_SPEC_ALLOW"))?;
    }
    // runc's threshold: libseccomp <= 2.5.4 misbehaves with the binary tree
    // and no rules; it is worth it for long lists only.
    if p.entries > 32 {
        if let Err(e) = ctx.set_ctl_optimize(2) {
            tracing::debug!(error = %e, "seccomp: binary tree optimization not available");
        }
    }
    for r in &p.rules {
        ctx.add_rule_conditional(r.action, r.nr, &r.conds).map_err(lib(format!("add rule for syscall {:?}", r.name)))?;
    }
    Ok(ctx)
}

/// The BPF program of a filter context (seccomp_export_bpf into a memfd).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, Error> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"minion-seccomp", MFdFlags::MFD_CLOEXEC).map_err(|e| Error::Export(e.into()))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file).map_err(lib("export BPF"))?;
    let mut bytes = Vec::new();
    file.rewind().and_then(|_| file.read_to_end(&mut bytes)).map_err(Error::Export)?;
    let size = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % size != 0 {
        return Err(Error::Export(std::io::Error::other(format!("{} bytes is not a BPF program", bytes.len()))));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Translates and compiles an OCI seccomp profile.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter, Error> {
    let p = plan::plan(s)?;
    if !p.unknown.is_empty() {
        tracing::info!(unknown = ?p.unknown, "seccomp: skipping syscalls unknown to libseccomp");
    }
    let log = p.flags & libc::SECCOMP_FILTER_FLAG_LOG as u32 != 0;
    let ssb = p.flags & libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32 != 0;
    let prog = export(&context(&p, log, ssb)?)?;
    if prog.len() > u16::MAX as usize {
        return Err(Error::Export(std::io::Error::other(format!("{} instructions is too long", prog.len()))));
    }
    Ok(Filter { prog, flags: p.flags, unknown: p.unknown })
}

impl Filter {
    /// Installs the filter on the calling thread (seccomp(2)
    /// SECCOMP_SET_MODE_FILTER). Needs no_new_privs or CAP_SYS_ADMIN.
    /// Allocates nothing.
    pub fn load(&self) -> Result<(), Error> {
        let fprog = libc::sock_fprog { len: self.prog.len() as u16, filter: self.prog.as_ptr().cast_mut() };
        // SAFETY: seccomp reads `fprog` and the `len` instructions it points
        // to (only reads, despite the *mut), which live until it returns.
        let r = unsafe {
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, self.flags as libc::c_ulong, &fprog as *const libc::sock_fprog)
        };
        // With TSYNC a positive result is the id of the thread that could not be
        // synchronized: a failure, not a success.
        match r {
            0 => Ok(()),
            tid if tid > 0 => Err(Error::Tsync(tid)),
            _ => Err(Error::Load { len: self.prog.len(), flags: self.flags, source: nix::errno::Errno::last() }),
        }
    }
}

/// The spec's filter, compiled (None without `linux.seccomp`).
pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Result<Option<Filter>, Error> {
    spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()).map(compile).transpose()
}

#[cfg(test)]
mod tests;
