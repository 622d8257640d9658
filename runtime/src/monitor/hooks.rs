//! The monitor's part in the OCI hooks (see `crate::hooks`): prestart and
//! createRuntime when the init reports that namespaces and mounts are made, in the
//! runtime's namespaces; and the state the init's createContainer and
//! startContainer hooks get. poststart runs in the `start` command itself.

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use oci_spec::runtime::Spec;

use crate::hooks::{self, Kind};
use crate::state::ContainerState;

/// What the init sends on the sync pipe when the runtime's hooks are due.
pub(crate) const HOOKS_DUE: &str = "hooks";
/// The byte the monitor answers once they ran.
pub(crate) const HOOKS_DONE: &str = "h";

/// Whether the init must stop before pivot_root for prestart/createRuntime.
pub(crate) fn runtime_hooks_before_pivot(spec: &Spec) -> bool {
    !hooks::of(spec, Kind::Prestart).is_empty() || !hooks::of(spec, Kind::CreateRuntime).is_empty()
}

/// Whether the init needs the state JSON (for its own hooks).
pub(crate) fn init_needs_state(spec: &Spec) -> bool {
    !hooks::of(spec, Kind::CreateContainer).is_empty() || !hooks::of(spec, Kind::StartContainer).is_empty()
}

/// The monitor's own pid namespace, kept when it will run hooks or `always`
/// (runc mode, whose `run` goes on to `start` and its poststart hooks in the
/// same process): after the init is forked into the container's pid
/// namespace, the process returns to its own, so that hooks run in the
/// runtime's namespace and threads can still be made (CLONE_THREAD fails while
/// the pid namespace for children differs from one's own).
pub(super) fn own_pidns(spec: &Spec, always: bool) -> Result<Option<OwnedFd>, String> {
    if !always && !runtime_hooks_before_pivot(spec) {
        return Ok(None);
    }
    // Without it hooks would silently run in the container's pid namespace.
    nix::fcntl::open("/proc/self/ns/pid", OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map(Some)
        .map_err(|e| format!("open /proc/self/ns/pid (the runtime's pid namespace, for hooks): {e}"))
}

/// Back to the monitor's own pid namespace for later children.
pub(super) fn restore_pidns(fd: Option<OwnedFd>) -> Result<(), String> {
    match fd {
        Some(fd) => nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWPID).map_err(|e| format!("setns back to the runtime pid namespace: {e}")),
        None => Ok(()),
    }
}

/// The state JSON hooks read on stdin.
pub(crate) fn state_json(st: &ContainerState) -> Vec<u8> {
    serde_json::to_vec(st).unwrap_or_default()
}

/// prestart then createRuntime; the first failure fails `create`.
pub(super) fn run_create_runtime(spec: &Spec, st: &ContainerState) -> Result<(), String> {
    let json = state_json(st);
    hooks::run(spec, Kind::Prestart, &json).map_err(|e| e.to_string())?;
    hooks::run(spec, Kind::CreateRuntime, &json).map_err(|e| e.to_string())
}

