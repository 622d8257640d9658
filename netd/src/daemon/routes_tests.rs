use super::*;

fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> NodeRoute {
    NodeRoute {
        name: name.into(),
        pod_cidr: cidr.map(|c| c.parse().unwrap()),
        internal_ip: ip.map(|i| i.parse().unwrap()),
    }
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn cluster() -> Vec<NodeRoute> {
    vec![
        node("node-1", Some("10.244.1.0/24"), Some("172.18.0.11")),
        node("node-2", Some("10.244.2.0/24"), Some("172.18.0.12")),
        node("node-3", Some("10.244.3.0/24"), Some("172.18.0.13")),
    ]
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn desired_skips_self_and_incomplete_nodes() {
    let mut nodes = cluster();
    nodes.push(node("no-cidr", None, Some("172.18.0.20")));
    nodes.push(node("no-ip", Some("10.244.9.0/24"), None));
    let d = desired_routes(&nodes, "node-1");
    assert_eq!(
        d.into_iter().collect::<Vec<_>>(),
        vec![
            (net("10.244.2.0/24"), ip("172.18.0.12")),
            (net("10.244.3.0/24"), ip("172.18.0.13"))
        ]
    );
}

#[test]
fn duplicate_cidr_goes_to_first_node_by_name() {
    let nodes = vec![
        node("b", Some("10.244.5.0/24"), Some("172.18.0.22")),
        node("a", Some("10.244.5.0/24"), Some("172.18.0.21")),
    ];
    let d = desired_routes(&nodes, "me");
    assert_eq!(d.get(&net("10.244.5.0/24")), Some(&ip("172.18.0.21")));
}

#[test]
fn plan_adds_missing_and_deletes_stale_and_moved() {
    let desired = desired_routes(&cluster(), "node-1");
    let current = vec![
        (net("10.244.2.0/24"), ip("172.18.0.12")), // kept
        (net("10.244.3.0/24"), ip("172.18.0.99")), // node-3 moved
        (net("10.244.7.0/24"), ip("172.18.0.17")), // node gone
    ];
    let p = plan(&current, &desired);
    assert_eq!(
        p.delete,
        vec![
            (net("10.244.3.0/24"), ip("172.18.0.99")),
            (net("10.244.7.0/24"), ip("172.18.0.17"))
        ]
    );
    assert_eq!(p.add, vec![(net("10.244.3.0/24"), ip("172.18.0.13"))]);
    assert!(plan(&p_apply(&current, &p), &desired).is_empty());
}

fn p_apply(
    current: &[(Ipv4Network, Ipv4Addr)],
    p: &RoutePlan,
) -> Vec<(Ipv4Network, Ipv4Addr)> {
    let mut out: Vec<_> = current.iter().filter(|r| !p.delete.contains(r)).copied().collect();
    out.extend(p.add.iter().copied());
    out
}

#[test]
fn reconcile_is_idempotent() {
    let mut ops = RecordingRoutes::default();
    let desired = desired_routes(&cluster(), "node-2");
    let s = run(reconcile(&mut ops, &desired)).unwrap();
    assert_eq!((s.added, s.deleted, s.installed), (2, 0, 2));
    ops.calls.clear();
    let s = run(reconcile(&mut ops, &desired)).unwrap();
    assert_eq!((s.added, s.deleted), (0, 0));
    assert_eq!(ops.calls, vec![RouteCall::List]);
}

#[test]
fn node_deleted_then_address_changed() {
    let mut ops = RecordingRoutes::default();
    let mut nodes = cluster();
    run(reconcile(&mut ops, &desired_routes(&nodes, "node-1"))).unwrap();
    nodes.retain(|n| n.name != "node-2");
    ops.calls.clear();
    run(reconcile(&mut ops, &desired_routes(&nodes, "node-1"))).unwrap();
    assert_eq!(
        ops.calls,
        vec![RouteCall::List, RouteCall::Delete(net("10.244.2.0/24"), ip("172.18.0.12"))]
    );
    nodes[1].internal_ip = Some(ip("172.18.0.33"));
    ops.calls.clear();
    run(reconcile(&mut ops, &desired_routes(&nodes, "node-1"))).unwrap();
    assert_eq!(
        ops.calls,
        vec![
            RouteCall::List,
            RouteCall::Delete(net("10.244.3.0/24"), ip("172.18.0.13")),
            RouteCall::Add(net("10.244.3.0/24"), ip("172.18.0.33")),
        ]
    );
    assert_eq!(ops.routes, vec![(net("10.244.3.0/24"), ip("172.18.0.33"))]);
}

#[test]
fn leftovers_from_a_crash_are_removed_at_start() {
    let mut ops = RecordingRoutes {
        routes: vec![(net("10.244.8.0/24"), ip("172.18.0.18"))],
        ..Default::default()
    };
    let s = run(reconcile(&mut ops, &desired_routes(&cluster(), "node-1"))).unwrap();
    assert_eq!((s.added, s.deleted), (2, 1));
    assert!(!ops.routes.contains(&(net("10.244.8.0/24"), ip("172.18.0.18"))));
}
