use super::*;
use crate::applier::{Call, RecordingApplier};
use crate::model::tests::{endpoints, service};
use serde_json::json;

pub(super) fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: "10.244.0.0/16".into(),
        node_name: None,
    }
}

/// A syncer over a fresh fake applier (legacy iptables), and the fake.
fn syncer() -> (RecordingApplier, Syncer<RecordingApplier>) {
    syncer_on(RecordingApplier::default())
}

/// A syncer over a fresh fake applier that reports iptables-nft, and the fake.
fn nft_syncer() -> (RecordingApplier, Syncer<RecordingApplier>) {
    syncer_on(RecordingApplier {
        nft: true,
        ..Default::default()
    })
}

fn syncer_on(fake: RecordingApplier) -> (RecordingApplier, Syncer<RecordingApplier>) {
    let s = Syncer::new(fake.clone(), cfg());
    (fake, s)
}

/// Per-service chains written by one sync of `snapshot`.
fn written(s: &mut Syncer<RecordingApplier>, snapshot: &Snapshot, full: bool) -> usize {
    s.sync(snapshot, full).unwrap().chains_written
}

/// The fake's nat chains that are per-service ones.
fn per_service_chains(fake: &RecordingApplier) -> Vec<String> {
    let chains = fake.current_chains("nat").unwrap().into_iter();
    chains.filter(|c| is_per_service_chain(c)).collect()
}

/// The calls the fake recorded that match `pred`.
fn calls_where(fake: &RecordingApplier, pred: impl Fn(&Call) -> bool) -> usize {
    let calls = fake.calls.lock().unwrap();
    calls.iter().filter(|c| pred(c)).count()
}

/// `default/web` with endpoints `web_eps` (port 80 → 8080), and with `with_api`
/// also `default/kubernetes` with one endpoint.
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
    let (fake, mut s) = syncer();
    let stats = s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    assert_eq!(
        stats,
        SyncStats {
            service_ports: 2,
            chains_written: 4,
            chains_skipped: 0,
            chains_deleted: 0,
            restores: 1,
            commits: 2,
            rules: 15,
            conntrack_deletes: 0,
        }
    );
    s.sync(&snap(&["10.244.0.2"], true), true).unwrap();
    let calls = fake.calls.lock().unwrap().clone();
    let first = calls.iter().find(|c| !matches!(c, Call::CurrentChains(_)));
    assert!(matches!(first, Some(Call::Apply(_))));
    let jumps = |c: &Call| matches!(c, Call::EnsureRule(_));
    assert_eq!(
        calls_where(&fake, jumps),
        7,
        "jump rules are ensured once, after the chains exist"
    );
    s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    assert_eq!(
        calls_where(&fake, jumps),
        7,
        "not re-checked while syncs succeed"
    );
    assert_eq!(fake.applied().len(), 2, "the unchanged partial sync applied nothing");
    let chains = fake.current_chains("nat").unwrap();
    assert!(chains.contains("KUBE-SVC-NPX46M4PTMTKRN6Y"));
}

#[test]
fn partial_sync_rewrites_only_changed_service() {
    let (fake, mut s) = syncer();
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
    let (_, mut s) = syncer();
    s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    assert_eq!(written(&mut s, &snap(&["10.244.0.2"], true), false), 0);
    assert_eq!(written(&mut s, &snap(&["10.244.0.2"], true), true), 4);
}

#[test]
fn unchanged_partial_sync_runs_no_restore_so_counters_survive() {
    let (fake, mut s) = syncer();
    s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    let stats = s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    assert_eq!((stats.restores, stats.chains_skipped), (0, 4));
    assert_eq!(fake.applied().len(), 1, "a no-op sync must not rewrite KUBE-SERVICES");
    s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    let lists = calls_where(&fake, |c| matches!(c, Call::CurrentChains(_)));
    assert_eq!(
        lists, 1,
        "no-op syncs keep the tracked chains instead of listing them again"
    );
    s.sync(&snap(&["10.244.0.2", "10.244.0.3"], true), false).unwrap();
    assert_eq!(fake.applied().len(), 2);
    s.sync(&snap(&["10.244.0.2", "10.244.0.3"], true), true).unwrap();
    assert_eq!(fake.applied().len(), 3, "a full sync always rewrites");
}

#[test]
fn removed_service_chains_are_deleted() {
    let (fake, mut s) = syncer();
    s.sync(&snap(&["10.244.0.2", "10.244.0.3"], true), false)
        .unwrap();
    let stats = s.sync(&snap(&["10.244.0.3"], false), false).unwrap();
    assert_eq!(
        stats.chains_deleted, 3,
        "kubernetes SVC+SEP and web's old SEP"
    );
    let input = fake.applied().pop().unwrap();
    assert!(input.contains("-X KUBE-SVC-NPX46M4PTMTKRN6Y\n"));
    let left = per_service_chains(&fake);
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn failed_apply_forces_full_rewrite_next_time() {
    let (fake, mut s) = syncer();
    s.sync(&snap(&["10.244.0.2"], true), false).unwrap();
    *fake.fail_apply.lock().unwrap() = Some("boom".into());
    let err = s.sync(&snap(&["10.244.0.2", "10.244.0.3"], true), false).unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    *fake.fail_apply.lock().unwrap() = None;
    assert_eq!(written(&mut s, &snap(&["10.244.0.2"], true), false), 4);
}

#[test]
fn foreign_chains_are_never_deleted() {
    let (fake, mut s) = syncer();
    fake.nat_chains.lock().unwrap().insert("DOCKER".into());
    let stats = s.sync(&Snapshot::default(), false).unwrap();
    assert_eq!(stats.chains_deleted, 0);
    assert!(fake.current_chains("nat").unwrap().contains("DOCKER"));
}

#[test]
fn chains_are_listed_once_then_tracked_in_memory() {
    let (fake, mut s) = syncer();
    fake.nat_chains
        .lock()
        .unwrap()
        .insert("KUBE-SEP-LEFTOVER0000000".into());
    let stats = s.sync(&snap(&["10.244.0.2"], false), true).unwrap();
    assert_eq!(
        stats.chains_deleted, 1,
        "a previous run's chain is found once"
    );
    // A chain appearing behind our back is not looked for again.
    fake.nat_chains
        .lock()
        .unwrap()
        .insert("KUBE-SEP-LATER00000000000".into());
    let stats = s.sync(&snap(&["10.244.0.2"], false), true).unwrap();
    assert_eq!(stats.chains_deleted, 0);
}

/// `n` Services with 3 endpoints each.
pub(super) fn many(n: usize) -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..n {
        let name = format!("svc{i}");
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        s.services.push(service(
            "ns",
            &name,
            &ip,
            json!([{"name": "http", "port": 80}]),
        ));
        let addrs: Vec<_> = (0..3)
            .map(|e| json!({"ip": format!("10.244.{}.{}", i / 80, (i % 80) * 3 + e + 1)}))
            .collect();
        s.endpoints.push(endpoints(
            "ns",
            &name,
            json!([{"addresses": addrs, "ports": [{"name": "http", "port": 8080}]}]),
        ));
    }
    s
}

/// The `*nat ... COMMIT` sections of a restore input, in order.
fn nat_sections(input: &str) -> Vec<&str> {
    input
        .split("*nat\n")
        .skip(1)
        .map(|s| s.split("COMMIT\n").next().unwrap())
        .collect()
}

#[test]
fn nft_splits_big_syncs_into_bounded_transactions_then_top_level() {
    let (fake, mut s) = nft_syncer();
    let stats = s.sync(&many(1200), true).unwrap();
    assert_eq!(stats.chains_written, 4800);
    assert_eq!(stats.restores, 1, "one iptables-restore run");
    assert_eq!(
        stats.commits, 14,
        "12 transactions of <= 400 chains + filter + the nat top level"
    );
    let inputs = fake.applied();
    assert_eq!(inputs.len(), 1);
    let input = &inputs[0];
    assert_eq!(input.matches("COMMIT\n").count(), 14);
    let sections = nat_sections(input);
    assert_eq!(sections.len(), 13);
    for section in &sections[..12] {
        let decls = section.lines().filter(|l| l.starts_with(":KUBE-S")).count();
        assert!(decls <= 400, "{decls} chains in one transaction");
        assert!(
            !section.contains("-A KUBE-SERVICES"),
            "sections leave KUBE-SERVICES alone"
        );
    }
    assert_eq!(input.matches("*filter").count(), 1);
    let last = sections.last().unwrap();
    assert!(
        !last.contains(":KUBE-SVC-"),
        "the final transaction writes no service chain"
    );
    assert_eq!(last.matches("-A KUBE-SERVICES").count(), 1201);
    assert!(
        input.find("*filter").unwrap() > input.find(sections[11]).unwrap(),
        "the top level comes after every service chain it jumps to"
    );
    // A one-Service change stays a single small transaction.
    let mut snap = many(1200);
    snap.endpoints[7].subsets.as_mut().unwrap()[0]
        .addresses
        .as_mut()
        .unwrap()
        .pop();
    let stats = s.sync(&snap, false).unwrap();
    assert_eq!(
        (
            stats.restores,
            stats.commits,
            stats.chains_written,
            stats.chains_deleted
        ),
        (1, 2, 3, 1)
    );
}

#[test]
fn legacy_applies_big_syncs_in_one_restore() {
    let (_, mut s) = syncer();
    let stats = s.sync(&many(600), true).unwrap();
    assert_eq!((stats.restores, stats.commits), (1, 2));
}

#[test]
fn removed_udp_endpoint_gets_its_conntrack_entries_deleted() {
    let (fake, mut s) = syncer();
    let dns = |ips: &[&str]| {
        let addrs: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        Snapshot {
            services: vec![service(
                "kube-system",
                "kube-dns",
                "10.96.0.10",
                json!([{"name": "dns", "port": 53, "protocol": "UDP"}]),
            )],
            endpoints: vec![endpoints(
                "kube-system",
                "kube-dns",
                json!([{"addresses": addrs, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}]),
            )],
        }
    };
    assert_eq!(
        s.sync(&dns(&["10.244.0.5", "10.244.0.6"]), true)
            .unwrap()
            .conntrack_deletes,
        0
    );
    let stats = s.sync(&dns(&["10.244.0.6"]), false).unwrap();
    assert_eq!(stats.conntrack_deletes, 1);
    let calls = fake.calls.lock().unwrap().clone();
    let last = calls.last().unwrap();
    assert_eq!(
        last,
        &Call::Conntrack(
            "-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.0.5"
                .split(' ')
                .map(String::from)
                .collect()
        )
    );
}

#[test]
fn nft_deletes_many_stale_chains_in_a_trailing_transaction() {
    let (fake, mut s) = nft_syncer();
    s.sync(&many(100), true).unwrap();
    let stats = s.sync(&many(10), false).unwrap();
    assert_eq!(stats.chains_deleted, 360);
    assert_eq!(stats.commits, 3, "filter, nat top level, stale deletion");
    let input = fake.applied().pop().unwrap();
    assert_eq!(input.matches("COMMIT\n").count(), 3);
    let sections = nat_sections(&input);
    assert_eq!(sections.len(), 2);
    assert!(!sections[0].contains("-X "), "top level deletes nothing");
    assert_eq!(sections[0].matches("-A KUBE-SERVICES").count(), 11);
    let stale = sections[1];
    assert_eq!(stale.matches("-X ").count(), 360);
    assert_eq!(stale.lines().count(), 720, "only flushes and deletes");
    let left = per_service_chains(&fake);
    assert_eq!(left.len(), 40, "{left:?}");
    // A few stale chains stay in the top-level transaction.
    let stats = s.sync(&many(9), false).unwrap();
    assert_eq!((stats.commits, stats.chains_deleted), (2, 4));
    let input = fake.applied().pop().unwrap();
    let sections = nat_sections(&input);
    assert_eq!(sections.len(), 1);
    assert_eq!(sections[0].matches("-X ").count(), 4);
}

#[test]
fn legacy_deletes_stale_chains_in_its_single_transaction() {
    let (fake, mut s) = syncer();
    s.sync(&many(100), true).unwrap();
    let stats = s.sync(&many(10), false).unwrap();
    assert_eq!((stats.commits, stats.chains_deleted), (2, 360));
    let input = fake.applied().pop().unwrap();
    assert_eq!(nat_sections(&input).len(), 1);
}
