use super::*;
use crate::applier::{Call, RecordingApplier};
use crate::model::tests::{endpoints, service};
use serde_json::json;

fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
    }
}

fn snap(web_eps: &[&str], with_api: bool) -> Snapshot {
    let addrs: Vec<_> = web_eps.iter().map(|ip| json!({"ip": ip})).collect();
    let mut s = Snapshot {
        services: vec![service(
            "default",
            "web",
            "10.96.0.20",
            json!([{"name": "http", "port": 80}]),
        )],
        endpoints: vec![endpoints(
            "default",
            "web",
            json!([{"addresses": addrs, "ports": [{"name": "http", "port": 8080}]}]),
        )],
    };
    if with_api {
        s.services.push(service(
            "default",
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443}]),
        ));
        s.endpoints.push(endpoints(
            "default",
            "kubernetes",
            json!([{"addresses": [{"ip": "172.18.0.1"}], "ports": [{"name": "https", "port": 6443}]}]),
        ));
    }
    s
}

#[test]
fn first_sync_is_one_restore_then_jumps_once() {
    let fake = RecordingApplier::default();
    let mut s = Syncer::new(fake.clone(), cfg());
    let stats = s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    assert_eq!(
        stats,
        SyncStats {
            service_ports: 2,
            chains_written: 4,
            chains_skipped: 0,
            chains_deleted: 0
        }
    );
    s.sync(&snap(&["10.244.0.2"], true), true).unwrap();
    let calls = fake.calls.lock().unwrap().clone();
    assert!(matches!(calls[0], Call::Apply(_)));
    let jumps: Vec<_> = calls
        .iter()
        .filter(|c| matches!(c, Call::EnsureRule(_)))
        .collect();
    assert_eq!(
        jumps.len(),
        5,
        "jump rules are ensured once, after the chains exist"
    );
    assert_eq!(fake.applied().len(), 2);
    let chains = fake.current_chains("nat").unwrap();
    assert!(chains.contains("KUBE-SVC-NPX46M4PTMTKRN6Y"));
}

#[test]
fn partial_sync_rewrites_only_changed_service() {
    let fake = RecordingApplier::default();
    let mut s = Syncer::new(fake.clone(), cfg());
    s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    let stats = s
        .sync(&snap(&["10.244.0.2", "10.244.0.3"], true), false)
        .unwrap();
    assert_eq!(stats.chains_written, 3, "web's SVC + 2 SEPs");
    assert_eq!(stats.chains_skipped, 2, "kubernetes' SVC + SEP untouched");
    let input = fake.applied().pop().unwrap();
    assert!(!input.contains(":KUBE-SVC-NPX46M4PTMTKRN6Y"));
    assert!(
        input.contains("-j KUBE-SVC-NPX46M4PTMTKRN6Y\n"),
        "the KUBE-SERVICES jump is still written"
    );
    assert!(input.contains("--probability 0.5000000000"));
}

#[test]
fn unchanged_snapshot_writes_no_service_chains_unless_full() {
    let fake = RecordingApplier::default();
    let mut s = Syncer::new(fake.clone(), cfg());
    s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    assert_eq!(
        s.sync(&snap(&["10.244.0.2"], true), false)
            .unwrap()
            .chains_written,
        0
    );
    assert_eq!(
        s.sync(&snap(&["10.244.0.2"], true), true)
            .unwrap()
            .chains_written,
        4
    );
}

#[test]
fn removed_service_chains_are_deleted() {
    let fake = RecordingApplier::default();
    let mut s = Syncer::new(fake.clone(), cfg());
    s.sync(&snap(&["10.244.0.2", "10.244.0.3"], true), false)
        .unwrap();
    let stats = s.sync(&snap(&["10.244.0.3"], false), false).unwrap();
    assert_eq!(
        stats.chains_deleted, 3,
        "kubernetes SVC+SEP and web's old SEP"
    );
    let input = fake.applied().pop().unwrap();
    assert!(input.contains("-X KUBE-SVC-NPX46M4PTMTKRN6Y\n"));
    let left: Vec<_> = fake
        .current_chains("nat")
        .unwrap()
        .into_iter()
        .filter(|c| is_per_service_chain(c))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn failed_apply_forces_full_rewrite_next_time() {
    let fake = RecordingApplier::default();
    let mut s = Syncer::new(fake.clone(), cfg());
    s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    *fake.fail_apply.lock().unwrap() = Some("boom".into());
    let err = s.sync(&snap(&["10.244.0.2"], true), false).unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    *fake.fail_apply.lock().unwrap() = None;
    assert_eq!(
        s.sync(&snap(&["10.244.0.2"], true), false)
            .unwrap()
            .chains_written,
        4
    );
}

#[test]
fn foreign_chains_are_never_deleted() {
    let fake = RecordingApplier::default();
    fake.nat_chains.lock().unwrap().insert("DOCKER".into());
    let mut s = Syncer::new(fake.clone(), cfg());
    let stats = s.sync(&Snapshot::default(), false).unwrap();
    assert_eq!(stats.chains_deleted, 0);
    assert!(fake.current_chains("nat").unwrap().contains("DOCKER"));
}
