//! Kubernetes resource quantities (`128Mi`, `500m`, `1.5`, `2G`), as used in
//! `resources.limits` / `resources.requests`.

/// Why a quantity string could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantityError {
    /// The string is not a number followed by a known suffix.
    #[error("invalid quantity {0:?}")]
    Invalid(String),
}

const SUFFIXES: [(&str, f64); 14] = [
    ("Ki", 1024.0),
    ("Mi", 1048576.0),
    ("Gi", 1073741824.0),
    ("Ti", 1099511627776.0),
    ("Pi", 1125899906842624.0),
    ("Ei", 1152921504606846976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
];

/// Parses a quantity into its value in base units (bytes for memory, cores for cpu).
pub fn parse(input: &str) -> Result<f64, QuantityError> {
    let s = input.trim();
    let invalid = || QuantityError::Invalid(input.to_string());
    if s.is_empty() {
        return Err(invalid());
    }
    let (number, multiplier) = split_suffix(s);
    let value: f64 = number.parse().map_err(|_| invalid())?;
    if !value.is_finite() || number.starts_with('+') && number.len() == 1 {
        return Err(invalid());
    }
    Ok(value * multiplier)
}

fn split_suffix(s: &str) -> (&str, f64) {
    if let Some(pos) = s.find(['e', 'E']) {
        // Decimal exponent form (1e3) is handled by f64 parsing.
        if s[pos + 1..].chars().all(|c| c.is_ascii_digit() || c == '-' || c == '+') {
            return (s, 1.0);
        }
    }
    for (suffix, mult) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix) {
            return (n, mult);
        }
    }
    (s, 1.0)
}

/// A memory quantity in bytes (rounded up, like the kubelet does).
pub fn parse_bytes(input: &str) -> Result<i64, QuantityError> {
    let v = parse(input)?;
    if v < 0.0 {
        return Err(QuantityError::Invalid(input.to_string()));
    }
    Ok(v.ceil() as i64)
}

/// A cpu quantity in millicores (rounded up).
pub fn parse_millicores(input: &str) -> Result<i64, QuantityError> {
    let v = parse(input)?;
    if v < 0.0 {
        return Err(QuantityError::Invalid(input.to_string()));
    }
    Ok((v * 1000.0 - 1e-9).ceil() as i64)
}

/// CFS period used for cpu limits (µs), as the kubelet uses.
pub const CPU_PERIOD: u64 = 100_000;

/// cpu limit in millicores → CFS quota (µs per [`CPU_PERIOD`]); at least 1000 like the kubelet.
pub fn millicores_to_quota(millicores: i64) -> i64 {
    (millicores * CPU_PERIOD as i64 / 1000).max(1000)
}

/// cpu request in millicores → cgroup v1 cpu.shares (min 2), as the kubelet computes it.
pub fn millicores_to_shares(millicores: i64) -> u64 {
    ((millicores * 1024) / 1000).max(2) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_suffixes() {
        assert_eq!(parse_bytes("128Mi"), Ok(134217728));
        assert_eq!(parse_bytes("1Gi"), Ok(1073741824));
        assert_eq!(parse_bytes("64Ki"), Ok(65536));
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("2M"), Ok(2000000));
        assert_eq!(parse_bytes("1G"), Ok(1000000000));
        assert_eq!(parse_bytes("12345"), Ok(12345));
        assert_eq!(parse_bytes("1.5Gi"), Ok(1610612736));
        assert_eq!(parse_bytes("1e3"), Ok(1000));
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_millicores("500m"), Ok(500));
        assert_eq!(parse_millicores("1"), Ok(1000));
        assert_eq!(parse_millicores("0.25"), Ok(250));
        assert_eq!(parse_millicores("2"), Ok(2000));
        assert_eq!(millicores_to_quota(500), 50000);
        assert_eq!(millicores_to_quota(1), 1000);
        assert_eq!(millicores_to_shares(250), 256);
        assert_eq!(millicores_to_shares(0), 2);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("").is_err());
        assert!(parse("Mi").is_err());
        assert!(parse("12Xi").is_err());
        assert!(parse("abc").is_err());
        assert!(parse_bytes("-1Mi").is_err());
    }
}
