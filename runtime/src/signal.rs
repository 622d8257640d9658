//! Signal names for `minion-runtime kill` (what the kubelet sends on pod deletion:
//! SIGTERM, then SIGKILL after the grace period; containerd passes any number,
//! real-time signals included, as runc accepts them).
#![allow(unsafe_code)]

use std::str::FromStr;

use nix::sys::signal::Signal;

/// A signal that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid signal {0:?}: expected a name like TERM/SIGKILL/SIGRTMIN+3 or a number from 1 to {max}", max = rt_max())]
pub struct SignalError(pub String);

/// A signal number from 1 to SIGRTMAX (standard or real-time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sig(i32);

/// SIGKILL.
pub const SIGKILL: Sig = Sig(libc::SIGKILL);

/// The C library's SIGRTMIN (34 with glibc: it keeps 32 and 33 for itself).
fn rt_min() -> i32 {
    libc::SIGRTMIN()
}

/// SIGRTMAX (64 on Linux).
fn rt_max() -> i32 {
    libc::SIGRTMAX()
}

impl Sig {
    /// The signal number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// A signal by number, 1..=SIGRTMAX.
    pub fn from_number(n: i32) -> Option<Sig> {
        (1..=rt_max()).contains(&n).then_some(Sig(n))
    }

    /// Sends the signal to `pid` (kill(2)).
    pub fn send(self, pid: i32) -> Result<(), nix::errno::Errno> {
        // SAFETY: kill(2) with plain integers.
        nix::errno::Errno::result(unsafe { libc::kill(pid, self.0) }).map(drop)
    }
}

impl std::fmt::Display for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Signal::try_from(self.0) {
            Ok(s) => f.write_str(s.as_str()),
            Err(_) if self.0 >= rt_min() => write!(f, "SIGRTMIN+{}", self.0 - rt_min()),
            Err(_) => write!(f, "signal {}", self.0),
        }
    }
}

/// Parses `TERM`, `SIGTERM`, `sigterm`, `15`, `37`, `SIGRTMIN+3`, `RTMIN+3`,
/// `SIGRTMAX-2` or `RTMAX` into a signal.
pub fn parse_signal(s: &str) -> Result<Sig, SignalError> {
    let bad = || SignalError(s.to_string());
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Sig::from_number(n).ok_or_else(bad);
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rt) = parse_rt(name) {
        return rt.and_then(Sig::from_number).filter(|s| s.0 >= rt_min()).ok_or_else(bad);
    }
    Signal::from_str(&format!("SIG{name}")).map(|s| Sig(s as i32)).map_err(|_| bad())
}

/// `RTMIN`, `RTMIN+N`, `RTMAX`, `RTMAX-N`: Some(number) (None inside when the
/// offset is malformed); None when `name` is no real-time name at all.
fn parse_rt(name: &str) -> Option<Option<i32>> {
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let n: i32 = rest.strip_prefix(sign)?.parse().ok()?;
        (n >= 0).then_some(n)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return Some(offset(rest, '+').map(|n| rt_min() + n));
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return Some(offset(rest, '-').map(|n| rt_max() - n));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> i32 {
        parse_signal(s).unwrap().number()
    }

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(n("TERM"), libc::SIGTERM);
        assert_eq!(n("SIGKILL"), libc::SIGKILL);
        assert_eq!(n("sighup"), libc::SIGHUP);
        assert_eq!(n("9"), 9);
        assert_eq!(n("15"), 15);
    }

    #[test]
    fn real_time_signals() {
        assert_eq!(n("37"), 37);
        assert_eq!(n("64"), 64);
        assert_eq!(n("32"), 32);
        assert_eq!(n("SIGRTMIN"), libc::SIGRTMIN());
        assert_eq!(n("SIGRTMIN+3"), libc::SIGRTMIN() + 3);
        assert_eq!(n("rtmin+3"), libc::SIGRTMIN() + 3);
        assert_eq!(n("SIGRTMAX"), 64);
        assert_eq!(n("RTMAX-2"), 62);
        assert_eq!(parse_signal("37").unwrap().to_string(), format!("SIGRTMIN+{}", 37 - libc::SIGRTMIN()));
        assert_eq!(parse_signal("TERM").unwrap().to_string(), "SIGTERM");
    }

    #[test]
    fn rejects_garbage() {
        for s in ["NOPE", "999", "65", "0", "-1", "", "SIGRTMIN+31", "RTMAX-31", "RTMIN-1", "RTMAX+1", "RTMIN+x"] {
            assert!(parse_signal(s).is_err(), "{s:?} was accepted");
        }
    }
}
