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

/// Every allocation is found through the index (the invariant a crash may not break).
/// A /28 network "n" in a fresh data dir: the dir (kept alive by the guard), the
/// store's directory and its address range.
fn index_fixture() -> (tempfile::TempDir, PathBuf, AddressRange) {
    let tmp = tempfile::tempdir().unwrap();
    let c = conf("10.0.0.0/28", None, None, tmp.path());
    let (dir, r) = (c.network_dir("n"), AddressRange::from_conf(&c));
    (tmp, dir, r)
}

fn assert_index_consistent(store: &IpamStore) {
    for (ip, owner) in store.list().unwrap() {
        assert_eq!(store.find(&owner).unwrap(), Some(ip), "{owner:?} at {ip}");
    }
}

fn index_dir(store_dir: &Path) -> PathBuf {
    store_dir.join(index::INDEX_DIR)
}

fn entries(store_dir: &Path) -> usize {
    fs::read_dir(index_dir(store_dir)).unwrap().count()
}

#[test]
fn the_index_follows_add_del_and_gc() {
    let (_tmp, dir, r) = index_fixture();
    let store = IpamStore::open(&dir).unwrap();
    let a = store.allocate(&r, &Owner::new("a", "eth0")).unwrap();
    let b = store.allocate(&r, &Owner::new("b", "eth0")).unwrap();
    store.allocate(&r, &Owner::new("c", "eth0")).unwrap();
    assert_index_consistent(&store);
    assert_eq!(entries(&dir), 3);
    // Each entry is the allocation file's inode (a hard link), no second file.
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<u64> = fs::read_dir(index_dir(&dir))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().ino())
        .collect();
    assert!(inodes.contains(&fs::metadata(dir.join(a.to_string())).unwrap().ino()));
    assert_eq!(fs::metadata(dir.join(a.to_string())).unwrap().nlink(), 2);
    // Same owner again: the same address, no second entry.
    assert_eq!(store.allocate(&r, &Owner::new("a", "eth0")).unwrap(), a);
    assert_eq!(entries(&dir), 3);
    // DEL removes file and entry; a second DEL finds nothing.
    assert_eq!(store.release(&Owner::new("a", "eth0")).unwrap(), vec![a]);
    assert_eq!(entries(&dir), 2);
    assert!(store.release(&Owner::new("a", "eth0")).unwrap().is_empty());
    // GC's removal takes the entry too.
    store.remove(b, &Owner::new("b", "eth0")).unwrap();
    assert_eq!(entries(&dir), 1);
    assert_eq!(store.find(&Owner::new("b", "eth0")).unwrap(), None);
    assert_index_consistent(&store);
}

#[test]
fn the_index_survives_a_crash_at_every_step() {
    let (_tmp, dir, r) = index_fixture();
    let store = IpamStore::open(&dir).unwrap();
    let a = Owner::new("a", "eth0");
    // ADD crashed after writing the entry, before linking the allocation file: the
    // entry dangles, the owner has nothing, and the next ADD allocates once.
    store.index.write(&a, ip("10.0.0.2")).unwrap();
    assert_eq!(store.find(&a).unwrap(), None);
    assert_eq!(store.allocate(&r, &a).unwrap(), ip("10.0.0.2"));
    assert_eq!(store.list().unwrap().len(), 1);
    assert_index_consistent(&store);
    // ADD crashed after linking, before the hint: consistent already.
    // DEL crashed after removing the allocation file, before the entry: nothing is
    // held, and another owner may take the address while the entry still names it.
    fs::remove_file(dir.join("10.0.0.2")).unwrap();
    assert_eq!(store.find(&a).unwrap(), None);
    assert_eq!(entries(&dir), 1);
    let b = Owner::new("b", "eth0");
    fs::write(dir.join(LAST_RESERVED_FILE), "10.0.0.14").unwrap();
    assert_eq!(store.allocate(&r, &b).unwrap(), ip("10.0.0.2"));
    assert_eq!(
        store.find(&a).unwrap(),
        None,
        "a's stale entry names b's address"
    );
    assert_eq!(entries(&dir), 2);
    // A repeated DEL of `a` clears its stale entry and leaves b alone.
    assert!(store.release(&a).unwrap().is_empty());
    assert_eq!(entries(&dir), 1);
    assert_eq!(store.list().unwrap(), vec![(ip("10.0.0.2"), b.clone())]);
    // A new ADD of `a` goes on round-robin; a stale entry left by a crash (written,
    // never linked) is replaced.
    store.index.write(&a, ip("10.0.0.9")).unwrap();
    assert_eq!(store.allocate(&r, &a).unwrap(), ip("10.0.0.3"));
    assert_eq!(entries(&dir), 2);
    // An address taken by a file that is not ours is skipped and left alone.
    fs::write(dir.join("10.0.0.5"), "x\neth0").unwrap();
    let c = Owner::new("c", "eth0");
    fs::write(dir.join("10.0.0.4"), "y\neth0").unwrap();
    assert_eq!(store.allocate(&r, &c).unwrap(), ip("10.0.0.6"));
    assert_eq!(fs::read_to_string(dir.join("10.0.0.5")).unwrap(), "x\neth0");
    fs::remove_file(dir.join("10.0.0.4")).unwrap();
    fs::remove_file(dir.join("10.0.0.5")).unwrap();
    assert_index_consistent(&store);
}

#[test]
fn a_store_without_index_gets_one_built_at_open() {
    let (_tmp, dir, r) = index_fixture();
    // Allocations written before the index existed, and a build that crashed.
    fs::create_dir_all(dir.join("owners.new")).unwrap();
    fs::write(dir.join("owners.new").join("junk"), "").unwrap();
    fs::write(dir.join("10.0.0.5"), "old\neth0").unwrap();
    fs::write(dir.join("10.0.0.6"), "older\neth1").unwrap();
    let store = IpamStore::open(&dir).unwrap();
    assert!(!dir.join("owners.new").exists());
    assert_eq!(entries(&dir), 2);
    assert_index_consistent(&store);
    // The old files are linked as they are.
    assert_eq!(
        fs::read_to_string(dir.join("10.0.0.5")).unwrap(),
        "old\neth0"
    );
    assert_eq!(store.list().unwrap()[1].1, Owner::new("older", "eth1"));
    // Idempotent ADD of a pre-index allocation: the same address, none twice.
    assert_eq!(
        store.allocate(&r, &Owner::new("old", "eth0")).unwrap(),
        ip("10.0.0.5")
    );
    assert_eq!(store.list().unwrap().len(), 2);
    drop(store);
    // Opened again: the index is kept as it is.
    let store = IpamStore::open(&dir).unwrap();
    assert_eq!(entries(&dir), 2);
    assert_index_consistent(&store);
}

#[test]
fn owners_with_path_characters_are_hashed() {
    let (tmp, dir, r) = index_fixture();
    let store = IpamStore::open(&dir).unwrap();
    let odd = Owner::new("../../x", "eth0/1");
    let got = store.allocate(&r, &odd).unwrap();
    assert_eq!(store.find(&odd).unwrap(), Some(got));
    // "a"+"beth0" and "ab"+"eth0" are different owners.
    let x = store.allocate(&r, &Owner::new("a", "beth0")).unwrap();
    let y = store.allocate(&r, &Owner::new("ab", "eth0")).unwrap();
    assert_ne!(x, y);
    assert_eq!(entries(&dir), 3);
    assert!(
        fs::read_dir(tmp.path()).unwrap().count() == 1,
        "nothing outside the store"
    );
}
