use super::*;
use crate::ipam::{AddressRange, Owner};
use crate::netops::{Call, RecordingOps};

fn link(name: &str, index: u32, up: bool, master: Option<u32>) -> HostLink {
    HostLink {
        name: name.to_string(),
        index,
        up,
        master,
        veth: true,
    }
}

fn bridge() -> HostLink {
    HostLink {
        veth: false,
        ..link("cni0", 1, true, None)
    }
}

fn range() -> AddressRange {
    AddressRange {
        start: "10.244.1.2".parse().unwrap(),
        end: "10.244.1.20".parse().unwrap(),
        gateway: "10.244.1.1".parse().unwrap(),
        network: "10.244.1.0".parse().unwrap(),
        broadcast: "10.244.1.255".parse().unwrap(),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn name_shape_is_the_plugins() {
    assert!(is_our_veth_name(&host_veth_name("abc", "eth0")));
    assert!(is_our_veth_name("veth0123abcd"));
    for other in [
        "veth0123abc",
        "veth0123abcde",
        "vethABCDEF12",
        "veth0123abcg",
        "eth0",
        "cni0",
        "xveth0123abcd",
    ] {
        assert!(!is_our_veth_name(other), "{other}");
    }
}

#[test]
fn candidates_are_our_down_veths_on_our_bridge_or_detached() {
    let links = vec![
        bridge(),
        link("veth000000a1", 2, true, Some(1)), // up: a live pod or a DEL under way
        link("veth000000a2", 3, false, Some(1)), // down on our bridge
        link("veth000000a3", 4, false, None),   // down, detached
        link("veth000000a4", 5, false, Some(9)), // on another bridge
        HostLink {
            veth: false,
            ..link("veth000000a5", 6, false, None)
        }, // not a veth
        link("vethfoo", 7, false, None),        // not our name shape
        link("eth0", 8, false, None),
    ];
    let names: Vec<String> = leftover_candidates(&links, "cni0")
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["veth000000a2", "veth000000a3"]);
    // Without our bridge only detached links qualify.
    let names: Vec<String> = leftover_candidates(&links[1..], "cni0")
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["veth000000a3"]);
}

#[test]
fn selection_skips_live_allocations_and_is_bounded() {
    let c = vec![
        link("veth000000b1", 2, false, None),
        link("veth000000b2", 3, false, None),
        link("veth000000b3", 4, false, None),
    ];
    let live: HashSet<String> = ["veth000000b2".to_string()].into();
    let pick = |limit| -> Vec<String> {
        select_stale(c.clone(), &live, limit)
            .into_iter()
            .map(|l| l.name)
            .collect()
    };
    assert_eq!(pick(8), ["veth000000b1", "veth000000b3"]);
    assert_eq!(pick(1), ["veth000000b1"]);
}

#[test]
fn sweep_deletes_only_down_unallocated_veths_by_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("minion");
    let store = IpamStore::open(&dir).unwrap();
    store
        .allocate(&range(), &Owner::new("live", "eth0"))
        .unwrap();
    store
        .allocate(&range(), &Owner::new("live-down", "eth0"))
        .unwrap();
    drop(store);
    let (live, live_down) = (
        host_veth_name("live", "eth0"),
        host_veth_name("live-down", "eth0"),
    );
    let (dead, deleting) = (
        host_veth_name("dead", "eth0"),
        host_veth_name("deleting", "eth0"),
    );
    let mut ops = RecordingOps {
        dump: vec![
            bridge(),
            link(&live, 2, true, Some(1)),
            link(&live_down, 3, false, Some(1)), // allocated: kept even though down
            link(&dead, 4, false, Some(1)),      // DEL'd, netns never deleted
            link(&deleting, 5, true, Some(1)),   // DEL released, not yet set down
        ],
        ..Default::default()
    };
    let removed = block_on(sweep_once(&mut ops, &dir, "cni0", MAX_PER_PASS)).unwrap();
    assert_eq!(removed, [dead.as_str()]);
    assert_eq!(ops.calls, [Call::HostLinks, Call::DeleteLinkIndex(4, dead)]);
    // A second pass finds nothing.
    assert!(block_on(sweep_once(&mut ops, &dir, "cni0", MAX_PER_PASS))
        .unwrap()
        .is_empty());
    assert_eq!(ops.dump.len(), 4);
}

#[test]
fn sweep_without_allocation_dir_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = RecordingOps {
        dump: vec![bridge(), link("veth000000c1", 2, false, Some(1))],
        ..Default::default()
    };
    let absent = tmp.path().join("absent");
    assert!(
        block_on(sweep_once(&mut ops, &absent, "cni0", MAX_PER_PASS))
            .unwrap()
            .is_empty()
    );
    assert!(!absent.exists(), "the sweep must not create the data dir");
    assert_eq!(ops.calls, [Call::HostLinks]);
}

#[test]
fn sweep_counts_removals_in_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("minion");
    std::fs::create_dir_all(&dir).unwrap();
    let ops = RecordingOps {
        dump: vec![bridge(), link("veth000000d1", 2, false, None)],
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::default());
    let task = run_periodic(
        ops,
        dir,
        "cni0".into(),
        metrics.clone(),
        Duration::from_secs(3600),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // The first pass runs at once; the loop then sleeps and is dropped at the timeout.
    rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(200), task)
            .await
            .unwrap_err()
    });
    assert_eq!(metrics.stale_veths_removed.load(Ordering::Relaxed), 1);
    assert!(metrics
        .render()
        .contains("\nminion_netd_stale_veths_removed_total 1\n"));
}
