//! The commands on a container's processes: `kill` (the init, or with `--all`
//! every process in the container's cgroup, as the kubelet's pod deletion and
//! containerd's shim ask) and `ps`.

use super::{cerr, load_state, Error, Globals};
use crate::signal::{parse_signal, Sig};
use crate::state::{pid_matches, ContainerState, Status};

/// `kill ID [SIGNAL] [--all]`: `--all` signals every process in the
/// container's cgroup.
pub fn kill(g: &Globals, id: &str, sig: &str, all: bool) -> Result<(), Error> {
    let sig = parse_signal(sig)?;
    let st = load_state(g, id)?;
    if !all {
        return signal_init(&st, sig);
    }
    // runc mode: containerd's shim sends `kill --all` after the init exited
    // when the container shares a pid namespace, to end what is left in its
    // cgroup, so a stopped container is no error there (as with runc).
    if st.status == Status::Stopped && !st.runc_mode {
        return Err(cerr(id, "is not running"));
    }
    for pid in cgroup_pids(&st)? {
        match sig.send(pid) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(cerr(id, format!("kill pid {pid} with {sig}: {e}"))),
        }
    }
    Ok(())
}

/// Signals the init, never a process that reused its pid.
pub(super) fn signal_init(st: &ContainerState, sig: Sig) -> Result<(), Error> {
    // The pidfd first, then the start-time check: if it matches, the pidfd is
    // the init's, and the signal cannot reach a process that reused its pid
    // (None: the init is gone, or an old kernel without pidfds).
    let pidfd = crate::sys::pidfd_open(st.pid);
    if st.status == Status::Stopped || !pid_matches(st.pid, st.init_start_time) {
        // containerd's shim recognises runc's wording ("already finished").
        return Err(cerr(&st.id, if st.runc_mode { "container not running" } else { "is not running" }));
    }
    match &pidfd {
        Some(fd) => crate::sys::pidfd_send_signal(fd, sig.number()),
        None => sig.send(st.pid),
    }
    .map_err(|e| cerr(&st.id, format!("kill pid {} with {sig}: {e}", st.pid)))
}

/// Pids in the container's cgroup (host pid namespace), sorted.
pub fn cgroup_pids(st: &ContainerState) -> Result<Vec<i32>, Error> {
    let Some(leaf) = st.cgroup_paths.first() else { return Ok(vec![]) };
    let p = leaf.join("cgroup.procs");
    let data = match std::fs::read_to_string(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => return Err(Error::Io { op: "read", path: p, source }),
    };
    let mut pids: Vec<i32> = data.lines().filter_map(|l| l.trim().parse().ok()).collect();
    pids.sort_unstable();
    Ok(pids)
}

/// `ps ID`: the processes in the container's cgroup as (pid, command line).
pub fn ps(g: &Globals, id: &str) -> Result<Vec<(i32, String)>, Error> {
    let st = load_state(g, id)?;
    Ok(cgroup_pids(&st)?
        .into_iter()
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd: Vec<String> =
                cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            (pid, cmd.join(" "))
        })
        .collect())
}

