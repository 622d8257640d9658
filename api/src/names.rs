//! Object name rules (DNS-1123 label and subdomain), as kube-apiserver enforces them.

use thiserror::Error;

/// Why a name is not valid.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("{name:?} must be no more than {max} characters")]
    TooLong { name: String, max: usize },
    #[error("{name:?} must consist of lower case alphanumeric characters{extra}, and must start and end with an alphanumeric character")]
    BadChars { name: String, extra: &'static str },
}

/// Checks a DNS-1123 label (namespaces, services, `metadata.name` of most kinds):
/// at most 63 characters of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn validate_dns1123_label(name: &str) -> Result<(), NameError> {
    check(name, 63, false)
}

/// Checks a DNS-1123 subdomain (pods, nodes, endpoints): at most 253 characters of
/// `[a-z0-9-.]`, each dot-separated part starting and ending alphanumeric.
pub fn validate_dns1123_subdomain(name: &str) -> Result<(), NameError> {
    check(name, 253, true)?;
    if name.split('.').any(|part| part.is_empty() || part.starts_with('-') || part.ends_with('-')) {
        return Err(bad(name, true));
    }
    Ok(())
}

fn check(name: &str, max: usize, dots: bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong { name: name.to_string(), max });
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !name.chars().all(ok_char) || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(bad(name, dots));
    }
    Ok(())
}

fn bad(name: &str, dots: bool) -> NameError {
    let extra = if dots { ", '-' or '.'" } else { " or '-'" };
    NameError::BadChars { name: name.to_string(), extra }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(validate_dns1123_label("web-1").is_ok());
        assert!(validate_dns1123_label("Web").is_err());
        assert!(validate_dns1123_label("-web").is_err());
        assert!(validate_dns1123_label("web.x").is_err());
        assert_eq!(validate_dns1123_label(""), Err(NameError::Empty));
        assert!(validate_dns1123_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn subdomains() {
        assert!(validate_dns1123_subdomain("node-1.lab").is_ok());
        assert!(validate_dns1123_subdomain("a..b").is_err());
        assert!(validate_dns1123_subdomain("a.-b").is_err());
        assert!(validate_dns1123_subdomain(&"a".repeat(254)).is_err());
    }
}
