//! Settings of minion-proxy (kube-proxy's `KubeProxyConfiguration` subset) and the
//! parsers its flags use.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// kubeconfig naming the API server.
    pub kubeconfig: PathBuf,
    /// Pod CIDR of the cluster (`10.244.0.0/16`); ClusterIP traffic from outside it is
    /// masqueraded.
    pub cluster_cidr: String,
    /// `iptables-restore` binary.
    pub iptables_restore: PathBuf,
    /// `iptables` binary (jump rules, chain listing); its `-V` tells nft from legacy.
    pub iptables: PathBuf,
    /// Interval of full resyncs.
    pub sync_period: Duration,
    /// Least time between two syncs (batches bursts of changes).
    pub min_sync_period: Duration,
    /// The node this proxy serves: endpoints whose `nodeName` equals it are local
    /// (`externalTrafficPolicy: Local`).
    pub hostname: Option<String>,
    /// Where to serve `/metrics` and `/healthz`; nothing listens when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// A flag value that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not an IPv4 CIDR.
    #[error("invalid IPv4 CIDR {0:?} (want a.b.c.d/n)")]
    Cidr(String),
    /// Not a duration.
    #[error("invalid duration {0:?} (want e.g. 30s, 500ms, 1m, 1h)")]
    Duration(String),
}

/// Checks an IPv4 CIDR such as `10.244.0.0/16` and returns it normalised.
pub fn parse_cidr(s: &str) -> Result<String, ConfigError> {
    let err = || ConfigError::Cidr(s.to_string());
    let (ip, len) = s.split_once('/').ok_or_else(err)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| err())?;
    let len: u8 = len.parse().map_err(|_| err())?;
    if len > 32 {
        return Err(err());
    }
    Ok(format!("{ip}/{len}"))
}

/// Parses Go-style durations with one unit: `ms`, `s`, `m`, `h`.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration(s.to_string());
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs).ok_or_else(err);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.244.0.0/16").unwrap(), "10.244.0.0/16");
        assert!(parse_cidr("10.244.0.0").is_err());
        assert!(parse_cidr("10.244.0.0/33").is_err());
        assert!(parse_cidr("x/8").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
