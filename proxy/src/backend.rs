//! Which iptables the node uses — `iptables v1.8.9 (nf_tables)` or `(legacy)` — and
//! the restore strategy each one needs. Measured on iptables 1.8.9 (see the
//! `sync` bench): legacy's `iptables-restore --noflush` replaces the whole table in
//! the kernel and stays linear; on nft the cost of one `--noflush` transaction grows
//! with the square of its size (500 services' chains in one transaction 0.9 s, 2,500
//! 15 s), while each transaction (`COMMIT`) also costs in proportion to the table
//! and each process fetches the table's chains once (0.25 s at 10k services). So on
//! nft a big sync is one `iptables-restore` run whose input holds many small
//! transactions of whole Service ports ([`NFT_MAX_CHAINS_PER_COMMIT`]), each one
//! atomic and each one leaving a consistent ruleset behind (2,500 services as 50
//! transactions: 2.1 s, as 5: 3.8 s, as 5 processes: 4.5 s).

use std::collections::BTreeSet;

/// The kernel interface behind the `iptables` binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables-nft: rules are nf_tables objects in the `ip nat`/`ip filter` tables.
    Nft,
    /// iptables-legacy: x_tables blobs, replaced whole per table.
    Legacy,
}

/// Most per-service chains written by one `--noflush` transaction on nft.
/// Measured at 10k Services (chains per commit: CPU time of the full sync's
/// `iptables-restore`, best of 3 on a shared machine, against 3.4–4.0 s for the
/// whole-table replace): 200: 3.7 s, 400: 3.0–3.2 s, 800: 3.6 s, 1,000: 3.8 s,
/// 2,000: 5.0 s. Fewer, bigger transactions pay iptables-nft's sorted chain-name list
/// (quadratic in a transaction's size, see the docs of `render/restore.rs`);
/// more, smaller ones pay the kernel, which validates the whole table and walks
/// all its chains at every commit (4–8 ms each at 10k Services).
pub const NFT_MAX_CHAINS_PER_COMMIT: usize = 400;

/// Most stale chains deleted inside the top-level nat transaction on nft; more get
/// their own transaction after it. Declared before the `KUBE-SERVICES` rules, each
/// stale `KUBE-SEP-` name costs every one of those rules a string compare in
/// iptables-nft, while one more commit costs a few milliseconds.
pub const NFT_MAX_STALE_IN_TOP_LEVEL: usize = 64;

impl Backend {
    /// Parses `iptables -V` output: `iptables v1.8.9 (nf_tables)` or
    /// `iptables v1.8.9 (legacy)`; versions before 1.8 print no mode and are legacy.
    pub fn from_version(version: &str) -> Option<Backend> {
        let line = version.lines().next()?.trim();
        if !line.starts_with("iptables") {
            return None;
        }
        if line.contains("nf_tables") {
            Some(Backend::Nft)
        } else {
            Some(Backend::Legacy)
        }
    }

    /// Lowercase name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// Largest number of per-service chains one transaction may write, if bounded.
    pub fn max_chains_per_commit(self) -> Option<usize> {
        match self {
            Backend::Nft => Some(NFT_MAX_CHAINS_PER_COMMIT),
            Backend::Legacy => None,
        }
    }

    /// Largest number of stale chains deleted in the top-level transaction, if
    /// bounded (beyond it they get a transaction of their own).
    pub fn max_stale_in_top_level(self) -> Option<usize> {
        match self {
            Backend::Nft => Some(NFT_MAX_STALE_IN_TOP_LEVEL),
            Backend::Legacy => None,
        }
    }
}

/// Chains of table `ip <table>` in `nft list chains ip` output (a listing without
/// rules: 0.5 s at 40k chains where `iptables-nft -S` takes 25 s).
pub fn parse_nft_chains(listing: &str, table: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_table = false;
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            in_table = rest.trim_end_matches('{').trim() == format!("ip {table}");
        } else if let Some(rest) = line.strip_prefix("chain ") {
            if in_table {
                out.insert(rest.trim_end_matches('{').trim().to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_backend_from_version() {
        assert_eq!(
            Backend::from_version("iptables v1.8.9 (nf_tables)\n"),
            Some(Backend::Nft)
        );
        assert_eq!(
            Backend::from_version("iptables v1.8.9 (legacy)\n"),
            Some(Backend::Legacy)
        );
        assert_eq!(
            Backend::from_version("iptables v1.6.1\n"),
            Some(Backend::Legacy)
        );
        assert_eq!(Backend::from_version("bash: not found"), None);
    }

    #[test]
    fn parses_nft_chain_listing_per_table() {
        let listing = "table ip nat {\n\tchain KUBE-SERVICES {\n\t}\n\tchain PREROUTING {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n}\ntable ip filter {\n\tchain KUBE-SVC-X {\n\t}\n}\n";
        let nat: Vec<_> = parse_nft_chains(listing, "nat").into_iter().collect();
        assert_eq!(nat, vec!["KUBE-SERVICES", "PREROUTING"]);
        let filter: Vec<_> = parse_nft_chains(listing, "filter").into_iter().collect();
        assert_eq!(filter, vec!["KUBE-SVC-X"]);
    }
}
