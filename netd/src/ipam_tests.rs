//! Allocator tests on temp dirs (no root needed).

use super::*;
use ipnetwork::Ipv4Network;

fn conf(subnet: &str, start: Option<&str>, end: Option<&str>, dir: &Path) -> IpamConf {
    let subnet: Ipv4Network = subnet.parse().unwrap();
    let first = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    let last = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);
    IpamConf {
        subnet,
        gateway: first,
        range_start: start.map(|s| s.parse().unwrap()).unwrap_or(first),
        range_end: end.map(|s| s.parse().unwrap()).unwrap_or(last),
        data_dir: dir.to_path_buf(),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn candidates_skip_gateway_and_wrap() {
    let dir = Path::new("/nonexistent");
    let r = AddressRange::from_conf(&conf("10.0.0.0/29", None, None, dir));
    let all: Vec<_> = r.candidates(None).collect();
    assert_eq!(
        all,
        ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"].map(ip)
    );
    let after: Vec<_> = r.candidates(Some(ip("10.0.0.4"))).collect();
    assert_eq!(
        after,
        ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map(ip)
    );
    let outside: Vec<_> = r.candidates(Some(ip("192.168.0.1"))).collect();
    assert_eq!(outside[0], ip("10.0.0.2"));
}

#[test]
fn allocates_in_order_and_writes_files() {
    let tmp = tempfile::tempdir().unwrap();
    let c = conf("10.244.1.0/24", None, None, tmp.path());
    let store = IpamStore::open(&c.network_dir("minion")).unwrap();
    let r = AddressRange::from_conf(&c);
    assert_eq!(
        store.allocate(&r, &Owner::new("a", "eth0")).unwrap(),
        ip("10.244.1.2")
    );
    assert_eq!(
        store.allocate(&r, &Owner::new("b", "eth0")).unwrap(),
        ip("10.244.1.3")
    );
    let dir = tmp.path().join("minion");
    assert_eq!(
        fs::read_to_string(dir.join("10.244.1.2")).unwrap(),
        "a\neth0"
    );
    assert_eq!(
        fs::read_to_string(dir.join(LAST_RESERVED_FILE)).unwrap(),
        "10.244.1.3"
    );
    assert!(dir.join(LOCK_FILE).exists());
    // Same owner again: same address (idempotent ADD).
    assert_eq!(
        store.allocate(&r, &Owner::new("a", "eth0")).unwrap(),
        ip("10.244.1.2")
    );
    // Same container, another interface: another address.
    assert_eq!(
        store.allocate(&r, &Owner::new("a", "eth1")).unwrap(),
        ip("10.244.1.4")
    );
}

#[test]
fn release_then_round_robin_then_reuse() {
    let tmp = tempfile::tempdir().unwrap();
    let c = conf("10.0.0.0/29", None, None, tmp.path());
    let store = IpamStore::open(&c.network_dir("n")).unwrap();
    let r = AddressRange::from_conf(&c);
    for id in ["a", "b", "c"] {
        store.allocate(&r, &Owner::new(id, "eth0")).unwrap();
    }
    assert_eq!(
        store.release(&Owner::new("a", "eth0")).unwrap(),
        vec![ip("10.0.0.2")]
    );
    assert!(store.release(&Owner::new("a", "eth0")).unwrap().is_empty());
    assert_eq!(store.find(&Owner::new("a", "eth0")).unwrap(), None);
    // Round-robin continues after the last reserved before reusing the freed one.
    assert_eq!(
        store.allocate(&r, &Owner::new("d", "eth0")).unwrap(),
        ip("10.0.0.5")
    );
    assert_eq!(
        store.allocate(&r, &Owner::new("e", "eth0")).unwrap(),
        ip("10.0.0.6")
    );
    assert_eq!(
        store.allocate(&r, &Owner::new("f", "eth0")).unwrap(),
        ip("10.0.0.2")
    );
}

#[test]
fn exhaustion_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let c = conf("10.0.0.0/30", None, None, tmp.path());
    let store = IpamStore::open(&c.network_dir("n")).unwrap();
    let r = AddressRange::from_conf(&c);
    assert_eq!(
        store.allocate(&r, &Owner::new("a", "eth0")).unwrap(),
        ip("10.0.0.2")
    );
    let err = store.allocate(&r, &Owner::new("b", "eth0")).unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }));
    assert_eq!(
        err.to_string(),
        "no IP addresses available in range set: 10.0.0.1-10.0.0.2"
    );
}

#[test]
fn range_start_and_end_are_respected() {
    let tmp = tempfile::tempdir().unwrap();
    let c = conf(
        "10.0.0.0/24",
        Some("10.0.0.10"),
        Some("10.0.0.11"),
        tmp.path(),
    );
    let store = IpamStore::open(&c.network_dir("n")).unwrap();
    let r = AddressRange::from_conf(&c);
    assert_eq!(
        store.allocate(&r, &Owner::new("a", "eth0")).unwrap(),
        ip("10.0.0.10")
    );
    assert_eq!(
        store.allocate(&r, &Owner::new("b", "eth0")).unwrap(),
        ip("10.0.0.11")
    );
    assert!(store.allocate(&r, &Owner::new("c", "eth0")).is_err());
}

#[test]
fn concurrent_allocations_never_collide() {
    let tmp = tempfile::tempdir().unwrap();
    let c = conf("10.0.0.0/24", None, None, tmp.path());
    let dir = c.network_dir("n");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (dir, c) = (dir.clone(), c.clone());
            std::thread::spawn(move || {
                (0..5)
                    .map(|j| {
                        // A fresh open per allocation: each takes the flock like a process.
                        let store = IpamStore::open(&dir).unwrap();
                        store
                            .allocate(
                                &AddressRange::from_conf(&c),
                                &Owner::new(&format!("c{i}-{j}"), "eth0"),
                            )
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40);
}

#[test]
fn the_hint_is_rewritten_in_place_when_shorter_and_over_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let c = conf("10.244.1.0/24", None, None, tmp.path());
    let store = IpamStore::open(&c.network_dir("minion")).unwrap();
    let r = AddressRange::from_conf(&c);
    let hint = tmp.path().join("minion").join(LAST_RESERVED_FILE);
    // Unparseable (longer than any address): the scan starts at rangeStart, and the
    // new hint is the exact text, nothing of the old one left.
    fs::write(&hint, "not an address, and longer than one").unwrap();
    assert_eq!(
        store.allocate(&r, &Owner::new("a", "eth0")).unwrap(),
        ip("10.244.1.2")
    );
    assert_eq!(fs::read_to_string(&hint).unwrap(), "10.244.1.2");
    // Longer, then shorter.
    fs::write(&hint, "10.244.1.99").unwrap();
    assert_eq!(
        store.allocate(&r, &Owner::new("b", "eth0")).unwrap(),
        ip("10.244.1.100")
    );
    assert_eq!(fs::read_to_string(&hint).unwrap(), "10.244.1.100");
    fs::write(&hint, "10.244.1.254").unwrap();
    assert_eq!(
        store.allocate(&r, &Owner::new("c", "eth0")).unwrap(),
        ip("10.244.1.3")
    );
    assert_eq!(fs::read_to_string(&hint).unwrap(), "10.244.1.3");
}
