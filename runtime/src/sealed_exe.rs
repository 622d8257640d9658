//! CVE-2019-5736 protection for runc mode: before anything enters a container,
//! the runtime re-executes itself from a sealed in-memory copy of its binary.
//!
//! The container's init and `exec`'s helper are forks of the runtime, so until
//! they exec, a process in the container can reach the binary they run through
//! /proc/<pid>/exe (or an entrypoint of `#!/proc/self/exe`) and reopen it for
//! writing once the runtime has exited. In monitor mode the per-container monitor
//! keeps the host binary busy (ETXTBSY) for as long as the container lives (see
//! `crate::monitor`). In runc mode there is no monitor, so, as runc did, `create`,
//! `run` and `exec` copy /proc/self/exe into a memfd, seal it against any change
//! (F_SEAL_SEAL|SHRINK|GROW|WRITE) and fexecve it: every process that later touches
//! the container runs the sealed copy, and the host binary is never reachable.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The seals that make the copy immutable.
pub const SEALS: libc::c_int = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
/// Name of the memfd (shows as `/memfd:minion-runc (deleted)` in /proc/<pid>/exe).
pub const MEMFD_NAME: &str = "minion-runc";
/// Set in the re-executed process: if its binary is then still not sealed,
/// fail instead of looping.
const GUARD_ENV: &str = "_MINION_RUNC_SEALED";
/// `MFD_EXEC` (Linux 6.3+): needed when vm.memfd_noexec forbids exec by default.
const MFD_EXEC: libc::c_uint = 0x0010;

/// Errors of the sealed copy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sealed runtime copy: {step}: {source}")]
    Sys { step: &'static str, source: std::io::Error },
    #[error("sealed runtime copy: re-executed from a memfd but /proc/self/exe is still not sealed")]
    NotSealed,
    #[error("sealed runtime copy: {step}: {source}: the vm.memfd_noexec sysctl forbids executable memfds (set it to 0 or 1)")]
    NoExec { step: &'static str, source: std::io::Error },
    #[error("sealed runtime copy: {what} {item:?} contains a NUL byte")]
    Nul { what: &'static str, item: OsString },
}

fn sys(step: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Sys { step, source }
}

/// The seals of an open file (None for a file that cannot be sealed).
pub fn seals_of(f: &File) -> Option<libc::c_int> {
    // SAFETY: F_GET_SEALS takes no argument and only reads the file's seals.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    (r >= 0).then_some(r)
}

/// Whether the running binary is already the sealed copy.
pub fn running_sealed() -> bool {
    File::open("/proc/self/exe").ok().and_then(|f| seals_of(&f)).is_some_and(|s| s & SEALS == SEALS)
}

/// Returns when the process runs from a sealed memfd; otherwise makes one and
/// re-executes the same argv and environment from it (never returns then).
pub fn ensure() -> Result<(), Error> {
    if running_sealed() {
        return Ok(());
    }
    if std::env::var_os(GUARD_ENV).is_some() {
        return Err(Error::NotSealed);
    }
    let memfd = sealed_copy()?;
    let argv = cstrings("argument", std::env::args_os())?;
    let mut env: Vec<OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .collect();
    env.push(format!("{GUARD_ENV}=1").into());
    let envp = cstrings("environment variable", env)?;
    let ptrs = |v: &[CString]| v.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect::<Vec<_>>();
    let (argv_p, envp_p) = (ptrs(&argv), ptrs(&envp));
    // SAFETY: both arrays are NULL-terminated and point into CStrings that live
    // until the call returns (it returns only on failure).
    unsafe { libc::fexecve(memfd.as_raw_fd(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let source = std::io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::EACCES) && memfd_noexec() == Some(2) {
        return Err(Error::NoExec { step: "fexecve", source });
    }
    Err(Error::Sys { step: "fexecve", source })
}

/// The vm.memfd_noexec sysctl (Linux 6.3+; None before): 2 forbids
/// executable memfds altogether.
fn memfd_noexec() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/vm/memfd_noexec").ok()?.trim().parse().ok()
}

/// Drops the loop guard from the environment of the re-executed process (its
/// children, hooks included, must not see it).
pub fn clear_guard() {
    if std::env::var_os(GUARD_ENV).is_some() {
        std::env::remove_var(GUARD_ENV);
    }
}

fn cstrings(what: &'static str, items: impl IntoIterator<Item = OsString>) -> Result<Vec<CString>, Error> {
    items.into_iter().map(|s| CString::new(s.as_bytes()).map_err(|_| Error::Nul { what, item: s })).collect()
}

/// A memfd holding a copy of /proc/self/exe, sealed against writes and resizes.
pub fn sealed_copy() -> Result<OwnedFd, Error> {
    let name = CString::new(MEMFD_NAME).map_err(|e| Error::Sys { step: "memfd name", source: std::io::Error::other(e) })?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; returns a new fd or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above (a kernel without MFD_EXEC).
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        let source = std::io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EACCES) {
            // MFD_EXEC is refused only when vm.memfd_noexec is 2.
            return Err(Error::NoExec { step: "memfd_create(MFD_EXEC)", source });
        }
        return Err(Error::Sys { step: "memfd_create", source });
    }
    // SAFETY: memfd_create returned a fresh fd that nobody else owns.
    let mut mem = unsafe { File::from_raw_fd(fd) };
    let mut exe = File::open("/proc/self/exe").map_err(sys("open /proc/self/exe"))?;
    std::io::copy(&mut exe, &mut mem).map_err(sys("copy /proc/self/exe"))?;
    // SAFETY: F_ADD_SEALS with an integer argument on our own memfd.
    let r = unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) };
    if r < 0 {
        return Err(Error::Sys { step: "F_ADD_SEALS", source: std::io::Error::last_os_error() });
    }
    // An fd open for writing would make execve fail with ETXTBSY: exec a
    // read-only reopening and drop the writable one.
    let ro = File::open(format!("/proc/self/fd/{}", mem.as_raw_fd())).map_err(sys("reopen the memfd read-only"))?;
    Ok(OwnedFd::from(ro))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn copy_is_identical_and_immutable() {
        let fd = sealed_copy().unwrap();
        let mut mem = File::from(fd);
        assert_eq!(seals_of(&mem).unwrap() & SEALS, SEALS);
        let mut a = Vec::new();
        File::open("/proc/self/exe").unwrap().read_to_end(&mut a).unwrap();
        let mut b = Vec::new();
        std::io::Seek::rewind(&mut mem).unwrap();
        mem.read_to_end(&mut b).unwrap();
        assert!(a == b, "copy differs from /proc/self/exe");
        // Even a writable reopening cannot change it.
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(format!("/proc/self/fd/{}", mem.as_raw_fd())) {
            assert!(w.write_all(b"x").is_err(), "a sealed memfd accepted a write");
            assert!(w.set_len(1).is_err(), "a sealed memfd was truncated");
        }
        assert!(!running_sealed(), "the test binary does not run from a memfd");
    }
}
