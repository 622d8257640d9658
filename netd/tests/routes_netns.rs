//! host-gw route reconciliation against the real kernel, for a node of a 3-node cluster:
//! the daemon's reconcile (NetlinkRoutes) inside a throwaway node namespace installs one
//! route per other node, moves a route when a node's InternalIP changes, removes it when
//! the node is deleted, removes routes left by a crash (ours, `proto 109`) at start, and
//! never touches routes it did not make.

mod common;

use std::path::PathBuf;

use common::{require_root, Netns};
use minion_netd::daemon::route_netlink::NetlinkRoutes;
use minion_netd::daemon::routes::{desired_routes, reconcile, NodeRoute, ReconcileStats};
use nix::sched::{setns, CloneFlags};

fn node(name: &str, cidr: &str, ip: &str) -> NodeRoute {
    NodeRoute {
        name: name.to_string(),
        pod_cidr: Some(cidr.parse().expect("cidr")),
        internal_ip: Some(ip.parse().expect("ip")),
    }
}

/// Runs one reconcile for `node-1` with `nodes`, from a thread inside `netns`.
fn reconcile_in(netns: &Netns, nodes: Vec<NodeRoute>) -> ReconcileStats {
    let ns = std::fs::File::open(PathBuf::from(netns.path())).expect("open node netns");
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns node");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut ops = NetlinkRoutes::connect().expect("netlink");
            reconcile(&mut ops, &desired_routes(&nodes, "node-1"))
                .await
                .expect("reconcile")
        })
    })
    .join()
    .expect("reconcile thread")
}

/// Our routes (`proto 109`), one per line, sorted.
fn our_routes(netns: &Netns) -> Vec<String> {
    let out = netns.sh(&["ip", "-4", "route", "show", "proto", "109"]);
    let mut v: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v
}

#[test]
fn three_node_routes_follow_nodes_and_survive_a_crash() {
    if !require_root() {
        return;
    }
    let n1 = Netns::new("rt-node1");
    // The node's underlay interface (a veth pair: no dummy module on every kernel).
    n1.sh(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    n1.sh(&["ip", "addr", "add", "172.18.0.11/24", "dev", "eth0"]);
    n1.sh(&["ip", "link", "set", "eth0p", "up"]);
    n1.sh(&["ip", "link", "set", "eth0", "up"]);
    // Left by a crashed daemon (ours) and by someone else (not ours).
    n1.sh(&["ip", "route", "add", "10.244.8.0/24", "via", "172.18.0.18", "proto", "109"]);
    n1.sh(&["ip", "route", "add", "10.244.9.0/24", "via", "172.18.0.19"]);

    let mut nodes = vec![
        node("node-1", "10.244.1.0/24", "172.18.0.11"),
        node("node-2", "10.244.2.0/24", "172.18.0.12"),
        node("node-3", "10.244.3.0/24", "172.18.0.13"),
    ];
    let s = reconcile_in(&n1, nodes.clone());
    assert_eq!((s.added, s.deleted), (2, 1), "{s:?}");
    assert_eq!(
        our_routes(&n1),
        vec![
            "10.244.2.0/24 via 172.18.0.12 dev eth0",
            "10.244.3.0/24 via 172.18.0.13 dev eth0"
        ]
    );
    let all = n1.sh(&["ip", "-4", "route", "show"]);
    assert!(all.contains("10.244.9.0/24 via 172.18.0.19"), "foreign route touched: {all}");

    // A restart (same nodes) changes nothing.
    let s = reconcile_in(&n1, nodes.clone());
    assert_eq!((s.added, s.deleted), (0, 0), "{s:?}");

    // node-3's InternalIP changes: its route moves.
    nodes[2] = node("node-3", "10.244.3.0/24", "172.18.0.33");
    let s = reconcile_in(&n1, nodes.clone());
    assert_eq!((s.added, s.deleted), (1, 1), "{s:?}");
    assert_eq!(
        our_routes(&n1),
        vec![
            "10.244.2.0/24 via 172.18.0.12 dev eth0",
            "10.244.3.0/24 via 172.18.0.33 dev eth0"
        ]
    );

    // node-2 is deleted: its route goes.
    nodes.retain(|n| n.name != "node-2");
    let s = reconcile_in(&n1, nodes);
    assert_eq!((s.added, s.deleted), (0, 1), "{s:?}");
    assert_eq!(our_routes(&n1), vec!["10.244.3.0/24 via 172.18.0.33 dev eth0"]);
    let all = n1.sh(&["ip", "-4", "route", "show"]);
    assert!(all.contains("10.244.9.0/24 via 172.18.0.19"), "foreign route touched: {all}");
}
