//! Signal names for `minion-runtime kill` (what the kubelet sends on pod deletion:
//! SIGTERM, then SIGKILL after the grace period).

use std::str::FromStr;

use nix::sys::signal::Signal;

/// A signal that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid signal {0:?}: expected a name like TERM/SIGKILL or a number")]
pub struct SignalError(pub String);

/// Parses `TERM`, `SIGTERM`, `sigterm` or `15` into a signal.
pub fn parse_signal(s: &str) -> Result<Signal, SignalError> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| SignalError(s.to_string()));
    }
    let up = t.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    Signal::from_str(&name).map_err(|_| SignalError(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sighup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
        assert!(parse_signal("").is_err());
    }
}
