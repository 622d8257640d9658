use super::*;
use crate::applier::{RecordingApplier, RulesetApplier};
use crate::model::tests::{endpoints, service};
use crate::render::render_blocks;
use crate::sync::Syncer;
use serde_json::json;

fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
        node_name: Some("n1".into()),
    }
}

fn svc(name: &str, i: usize, port: i64) -> Service {
    let ip = format!("10.96.0.{}", i + 10);
    service("ns", name, &ip, json!([{"name": "http", "port": port}]))
}

fn eps(name: &str, ips: &[&str]) -> Endpoints {
    let addrs: Vec<_> = ips
        .iter()
        .map(|ip| json!({"ip": ip, "nodeName": "n1"}))
        .collect();
    endpoints(
        "ns",
        name,
        json!([{"addresses": addrs, "ports": [{"name": "http", "port": 8080}]}]),
    )
}

fn snap() -> Snapshot {
    let names = ["c", "a", "b"];
    Snapshot {
        services: names
            .iter()
            .enumerate()
            .map(|(i, n)| svc(n, i, 80))
            .collect(),
        endpoints: names
            .iter()
            .enumerate()
            .map(|(i, n)| eps(n, &[&format!("10.244.0.{}", i + 2)]))
            .collect(),
    }
}

/// The tracker's blocks equal rendering the snapshot from scratch.
fn check(t: &mut PortTracker, s: &Snapshot, full: bool) {
    let d = t.update(s, &cfg(), full);
    let fresh = render_blocks(s, &cfg());
    let got: Vec<ServicePortRules> = d.blocks.iter().map(|b| b.as_ref().clone()).collect();
    assert_eq!(got, fresh);
    let prints: Vec<u64> = fresh.iter().map(|b| b.fingerprint()).collect();
    assert_eq!(d.prints, prints);
    let ports = s.service_ports_on(cfg().node_name.as_deref());
    assert_eq!(d.udp, conntrack::udp_ports(&ports));
}

/// A tracker that has derived [`snap`] once (checked), and that snapshot.
fn tracked() -> (PortTracker, Snapshot) {
    let (mut t, s) = (PortTracker::default(), snap());
    check(&mut t, &s, false);
    (t, s)
}

#[test]
fn a_changed_service_is_the_only_one_re_derived() {
    let (mut t, mut s) = tracked();
    assert_eq!(t.last_derived(), 3);
    check(&mut t, &s, false);
    assert_eq!(t.last_derived(), 0, "nothing changed");
    s.services[2] = svc("b", 2, 81);
    check(&mut t, &s, false);
    assert_eq!(t.last_derived(), 1);
    check(&mut t, &s, true);
    assert_eq!(t.last_derived(), 3, "a full sync re-derives everything");
}

#[test]
fn an_endpoints_only_change_is_picked_up() {
    let (mut t, mut s) = tracked();
    s.endpoints[1] = eps("a", &["10.244.0.3", "10.244.0.9"]);
    check(&mut t, &s, false);
    assert_eq!(t.last_derived(), 1);
    s.endpoints.remove(1);
    check(&mut t, &s, false);
    assert_eq!(t.last_derived(), 1, "Endpoints deleted");
}

#[test]
fn added_deleted_and_duplicate_services_match_a_fresh_render() {
    let (mut t, mut s) = tracked();
    s.services.push(svc("d", 3, 80));
    check(&mut t, &s, false);
    assert_eq!(t.last_derived(), 1);
    s.services.remove(0);
    check(&mut t, &s, false);
    assert_eq!(t.last_derived(), 0, "a deletion re-derives nothing");
    s.services.push(svc("a", 5, 80));
    check(&mut t, &s, false);
    s.services.pop();
    check(&mut t, &s, false);
}

#[test]
fn resource_versions_decide_when_both_objects_have_one() {
    let versioned = |mut s: Service, rv: &str| {
        s.metadata.resource_version = Some(rv.into());
        s.metadata.uid = Some("u1".into());
        s
    };
    let mut t = PortTracker::default();
    let mut s = snap();
    s.services[0] = versioned(svc("c", 0, 80), "7");
    check(&mut t, &s, false);
    s.services[0] = versioned(svc("c", 0, 80), "7");
    t.update(&s, &cfg(), false);
    assert_eq!(t.last_derived(), 0);
    s.services[0] = versioned(svc("c", 0, 81), "8");
    check(&mut t, &s, false);
    assert_eq!(t.last_derived(), 1);
}

#[test]
fn syncer_writes_only_the_service_whose_endpoints_changed() {
    let mut syncer = Syncer::new(RecordingApplier::default(), cfg());
    let mut s = snap();
    syncer.sync(&s, true).unwrap();
    s.endpoints[0] = eps("c", &["10.244.0.2", "10.244.0.7"]);
    let stats = syncer.sync(&s, false).unwrap();
    assert_eq!(syncer.last_derived(), 1);
    assert_eq!(stats.chains_written, 3, "c's SVC + 2 SEPs");
    assert_eq!(stats.chains_skipped, 4);
    let again = syncer.sync(&s, false).unwrap();
    assert_eq!((again.restores, syncer.last_derived()), (0, 0));
}

#[test]
fn partial_syncs_match_syncs_that_look_every_block_up() {
    let (fast, slow) = (RecordingApplier::default(), RecordingApplier::default());
    let mut a = Syncer::new(fast.clone(), cfg());
    let mut b = Syncer::new(slow.clone(), cfg());
    let mut s = snap();
    let mut rng = 12345u64;
    for round in 0..60 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (rng >> 33) as usize;
        let n = format!("s{}", r % 7);
        match r % 5 {
            0 => s.services.push(svc(&n, r % 200, 80)),
            1 if !s.services.is_empty() => {
                s.services.remove(r % s.services.len());
            }
            2 => {
                let ips: Vec<String> = (0..r % 4)
                    .map(|k| format!("10.244.1.{}", k + r % 5))
                    .collect();
                let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                s.endpoints
                    .retain(|e| e.metadata.name.as_deref() != Some(n.as_str()));
                s.endpoints.push(eps(&n, &ips));
            }
            3 => s
                .services
                .retain(|x| x.metadata.name.as_deref() != Some(n.as_str())),
            _ => {}
        }
        // Duplicate names are possible here: those syncs take the slow path.
        let full = round % 17 == 16;
        b.forget_checkpoint();
        let (x, y) = (a.sync(&s, full).unwrap(), b.sync(&s, full).unwrap());
        assert_eq!(x, y, "round {round}");
        assert_eq!(fast.applied(), slow.applied(), "round {round}");
        assert_eq!(
            fast.current_chains("nat").unwrap(),
            slow.current_chains("nat").unwrap()
        );
    }
}
