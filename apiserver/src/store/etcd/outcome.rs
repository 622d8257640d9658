//! Turning etcd results into [`StoreError`]s: what a failed compare-and-swap
//! transaction means, and which gRPC failures are "compacted" (HTTP 410 Gone).

use crate::store::{Revision, StoreError};

/// The write a transaction attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Update { expected: Option<Revision> },
    Delete { expected: Option<Revision> },
}

/// Why a transaction's compare failed, given the key's current mod_revision from the
/// else-branch read (None: the key does not exist).
pub fn failed(key: &str, write: Write, current: Option<Revision>) -> StoreError {
    match (write, current) {
        (Write::Create, _) => StoreError::AlreadyExists { key: key.into() },
        (Write::Update { .. } | Write::Delete { .. }, None) => StoreError::NotFound { key: key.into() },
        (Write::Update { expected } | Write::Delete { expected }, Some(actual)) => match expected {
            Some(expected) => StoreError::Conflict { key: key.into(), expected, actual },
            // Without an expected revision only existence is compared; it exists now,
            // so it was recreated in between: report it as a conflict too.
            None => StoreError::Conflict { key: key.into(), expected: 0, actual },
        },
    }
}

/// True when an etcd error says the requested revision was compacted away.
pub fn is_compacted(message: &str) -> bool {
    message.contains("required revision has been compacted")
}

/// True when an etcd error says the requested revision is in the future.
pub fn is_future(message: &str) -> bool {
    message.contains("required revision is a future revision")
}

/// Maps an etcd failure of a read at revision `requested` (compacted: Expired).
pub fn read_error(err: &etcd_client::Error, requested: Option<Revision>, compacted_at: Revision) -> StoreError {
    let text = err.to_string();
    match requested {
        Some(requested) if is_compacted(&text) => StoreError::Expired { requested, oldest: compacted_at },
        _ => StoreError::Etcd(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_on_existing_key_is_already_exists() {
        assert!(matches!(failed("/k", Write::Create, Some(4)), StoreError::AlreadyExists { .. }));
    }

    #[test]
    fn missing_key_is_not_found() {
        for w in [Write::Update { expected: Some(3) }, Write::Delete { expected: None }, Write::Update { expected: None }] {
            assert!(matches!(failed("/k", w, None), StoreError::NotFound { .. }), "{w:?}");
        }
    }

    #[test]
    fn stale_revision_is_conflict_with_actual() {
        let e = failed("/k", Write::Update { expected: Some(3) }, Some(7));
        assert!(matches!(e, StoreError::Conflict { expected: 3, actual: 7, .. }));
        let e = failed("/k", Write::Delete { expected: Some(2) }, Some(5));
        assert!(matches!(e, StoreError::Conflict { expected: 2, actual: 5, .. }));
    }

    #[test]
    fn compacted_messages() {
        assert!(is_compacted("grpc request error: status: OutOfRange, message: \"etcdserver: mvcc: required revision has been compacted\""));
        assert!(!is_compacted("etcdserver: mvcc: required revision is a future revision"));
        assert!(is_future("etcdserver: mvcc: required revision is a future revision"));
        let err = etcd_client::Error::WatchError("etcdserver: mvcc: required revision has been compacted".into());
        assert!(matches!(read_error(&err, Some(3), 9), StoreError::Expired { requested: 3, oldest: 9 }));
        assert!(matches!(read_error(&err, None, 9), StoreError::Etcd(_)));
    }
}
