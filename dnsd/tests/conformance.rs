//! The Kubernetes DNS specification as a table, asserted with `dig` against a running
//! minion-dnsd (`minion_dnsd::run`) fed by a real minion-apiserver started in-process.
//! Every row is one question and its asserted answer: rcode, answer RRs, SOA in the
//! authority section, TTL.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{json, Value};

const TTL: u32 = 30;

async fn create<K>(client: &Client, ns: Option<&str>, value: Value)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let obj: K = serde_json::from_value(value).unwrap();
    let api: Api<K> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");
}

async fn populate(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["conf", "empty-ns"] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &obj)
            .await
            .expect("namespace");
    }
    let svc = |name: &str, spec: Value| json!({"metadata": {"name": name, "namespace": "conf"}, "spec": spec});
    let eps = |name: &str, subsets: Value| json!({"metadata": {"name": name, "namespace": "conf"}, "subsets": subsets});
    for s in [
        svc(
            "web",
            json!({"clusterIP": "10.96.100.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        ),
        svc(
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
        svc(
            "pub",
            json!({"clusterIP": "None", "publishNotReadyAddresses": true, "ports": [{"port": 80}]}),
        ),
        svc(
            "none",
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        ),
        svc(
            "ext",
            json!({"type": "ExternalName", "externalName": "example.org"}),
        ),
        svc("big", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
    ] {
        create::<Service>(client, Some("conf"), s).await;
    }
    let big: Vec<Value> = (1..=60)
        .map(|i| json!({"ip": format!("10.244.9.{i}")}))
        .collect();
    for e in [
        eps(
            "db",
            json!([{"addresses": [{"ip": "10.244.1.5", "hostname": "db-0"}, {"ip": "10.244.1.6"}],
                          "notReadyAddresses": [{"ip": "10.244.1.7"}],
                          "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]),
        ),
        eps(
            "pub",
            json!([{"notReadyAddresses": [{"ip": "10.244.1.8"}], "ports": [{"port": 80}]}]),
        ),
        eps(
            "none",
            json!([{"notReadyAddresses": [{"ip": "10.244.1.9"}], "ports": [{"port": 80}]}]),
        ),
        eps("big", json!([{"addresses": big, "ports": [{"port": 80}]}])),
    ] {
        create::<Endpoints>(client, Some("conf"), e).await;
    }
}

struct Dnsd {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), minion_dnsd::RunError>>,
}

async fn start_dnsd(kubeconfig: std::path::PathBuf) -> Dnsd {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let config = minion_dnsd::Config {
        kubeconfig,
        listen: addr,
        cluster_domain: "cluster.local".into(),
        advertise_address: None,
        node_name: None,
        ttl: TTL,
        upstreams: Vec::new(),
        resolv_conf: None,
        cache_entries: 100,
        udp_workers: 2,
        udp_spin: std::time::Duration::from_micros(minion_dnsd::spin::DEFAULT_UDP_SPIN_US),
        lameduck: std::time::Duration::ZERO,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(minion_dnsd::run(config, async move {
        let _ = stopped.await;
    }));
    Dnsd {
        addr,
        stop: Some(stop),
        task,
    }
}

impl Dnsd {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("dnsd stops")
            .expect("join")
            .expect("dnsd ran");
    }
}

/// One row: question, expected rcode, expected answer RDATA (sorted), SOA expected.
struct Row {
    args: &'static [&'static str],
    status: &'static str,
    answer: &'static [&'static str],
    soa: bool,
}

const fn row(
    args: &'static [&'static str],
    status: &'static str,
    answer: &'static [&'static str],
    soa: bool,
) -> Row {
    Row {
        args,
        status,
        answer,
        soa,
    }
}

const ROWS: &[Row] = &[
    // ClusterIP Service: A, case-insensitive, NODATA for AAAA, SRV for its named port.
    row(
        &["web.conf.svc.cluster.local", "A"],
        "NOERROR",
        &["10.96.100.10"],
        false,
    ),
    row(
        &["WEB.Conf.SVC.cluster.LOCAL", "A"],
        "NOERROR",
        &["10.96.100.10"],
        false,
    ),
    row(
        &["web.conf.svc.cluster.local", "AAAA"],
        "NOERROR",
        &[],
        true,
    ),
    row(
        &["_http._tcp.web.conf.svc.cluster.local", "SRV"],
        "NOERROR",
        &["0 100 80 web.conf.svc.cluster.local."],
        false,
    ),
    row(
        &["_nope._tcp.web.conf.svc.cluster.local", "SRV"],
        "NXDOMAIN",
        &[],
        true,
    ),
    // Headless: one A per ready endpoint, per-hostname names, SRV per endpoint.
    row(
        &["db.conf.svc.cluster.local", "A"],
        "NOERROR",
        &["10.244.1.5", "10.244.1.6"],
        false,
    ),
    row(
        &["db-0.db.conf.svc.cluster.local", "A"],
        "NOERROR",
        &["10.244.1.5"],
        false,
    ),
    row(
        &["10-244-1-6.db.conf.svc.cluster.local", "A"],
        "NOERROR",
        &["10.244.1.6"],
        false,
    ),
    row(
        &["10-244-1-7.db.conf.svc.cluster.local", "A"],
        "NXDOMAIN",
        &[],
        true,
    ),
    row(
        &["_pg._tcp.db.conf.svc.cluster.local", "SRV"],
        "NOERROR",
        &[
            "0 100 5432 10-244-1-6.db.conf.svc.cluster.local.",
            "0 100 5432 db-0.db.conf.svc.cluster.local.",
        ],
        false,
    ),
    // publishNotReadyAddresses, and a headless Service without ready endpoints.
    row(
        &["pub.conf.svc.cluster.local", "A"],
        "NOERROR",
        &["10.244.1.8"],
        false,
    ),
    row(&["none.conf.svc.cluster.local", "A"], "NXDOMAIN", &[], true),
    // ExternalName.
    row(
        &["ext.conf.svc.cluster.local", "A"],
        "NOERROR",
        &["example.org."],
        false,
    ),
    row(
        &["ext.conf.svc.cluster.local", "CNAME"],
        "NOERROR",
        &["example.org."],
        false,
    ),
    // PTR for a ClusterIP and for a headless endpoint.
    row(
        &["-x", "10.96.100.10"],
        "NOERROR",
        &["web.conf.svc.cluster.local."],
        false,
    ),
    row(
        &["-x", "10.244.1.5"],
        "NOERROR",
        &["db-0.db.conf.svc.cluster.local."],
        false,
    ),
    // The schema version.
    row(
        &["dns-version.cluster.local", "TXT"],
        "NOERROR",
        &["\"1.1.0\""],
        false,
    ),
    // Existing namespaces (with and without Services) and structural names: NODATA.
    row(&["conf.svc.cluster.local", "A"], "NOERROR", &[], true),
    row(&["empty-ns.svc.cluster.local", "A"], "NOERROR", &[], true),
    row(&["svc.cluster.local", "A"], "NOERROR", &[], true),
    row(&["cluster.local", "A"], "NOERROR", &[], true),
    // Unknown names: NXDOMAIN.
    row(&["nope.conf.svc.cluster.local", "A"], "NXDOMAIN", &[], true),
    row(&["web.nons.svc.cluster.local", "A"], "NXDOMAIN", &[], true),
    row(&["nons.svc.cluster.local", "A"], "NXDOMAIN", &[], true),
    // The API server's own Services.
    row(
        &["kubernetes.default.svc.cluster.local", "A"],
        "NOERROR",
        &["10.96.0.1"],
        false,
    ),
    row(
        &["kube-dns.kube-system.svc.cluster.local", "A"],
        "NOERROR",
        &["10.96.0.10"],
        false,
    ),
    // TCP answers the same.
    row(
        &["+tcp", "web.conf.svc.cluster.local", "A"],
        "NOERROR",
        &["10.96.100.10"],
        false,
    ),
    row(
        &["+tcp", "nope.conf.svc.cluster.local", "A"],
        "NXDOMAIN",
        &[],
        true,
    ),
    // Outside the zone without an upstream.
    row(&["example.com", "A"], "REFUSED", &[], false),
];

fn check(addr: SocketAddr, r: &Row, d: &Dig) {
    let ctx = format!("dig {:?}:\n{}", r.args, d.raw);
    assert_eq!(d.status, r.status, "{ctx}");
    assert_eq!(
        d.data(),
        r.answer.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "{ctx}"
    );
    for rr in &d.answer {
        assert_eq!(rr.ttl, TTL, "{ctx}");
    }
    if r.soa {
        assert_eq!(d.authority.len(), 1, "{ctx}");
        let soa = &d.authority[0];
        assert_eq!(
            (soa.name.as_str(), soa.rtype.as_str(), soa.ttl),
            ("cluster.local.", "SOA", TTL),
            "{ctx}"
        );
        assert!(
            soa.data
                .starts_with("ns.dns.cluster.local. hostmaster.cluster.local."),
            "{ctx}"
        );
    } else {
        assert!(d.authority.is_empty(), "{ctx}");
    }
    if r.status != "REFUSED" {
        assert!(d.flags.contains(&"aa".to_string()), "{ctx}");
    }
    let _ = addr;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_table_against_a_real_api_server() {
    let dir = tempfile::tempdir().unwrap();
    // Before any sync (API server unreachable): SERVFAIL for names in the zone.
    let dead = write_kubeconfig(dir.path(), free_port("127.0.0.1"));
    let unsynced = start_dnsd(dead).await;
    wait_until(Duration::from_secs(10), "unsynced dnsd answering", || {
        dig(unsynced.addr, &["web.conf.svc.cluster.local", "A"]).status == "SERVFAIL"
    })
    .await;
    unsynced.stop().await;

    let (port, stop_api) = start_apiserver(dir.path()).await;
    let kubeconfig = write_kubeconfig(dir.path(), port);
    let client = minion_dnsd::kube_client(&kubeconfig).await.expect("client");
    populate(&client).await;
    let dnsd = start_dnsd(kubeconfig).await;
    let addr = dnsd.addr;
    wait_until(Duration::from_secs(15), "dnsd synced", || {
        dig(addr, &["big.conf.svc.cluster.local", "A"]).status == "NOERROR"
    })
    .await;

    for r in ROWS {
        let d = adig(addr, r.args).await;
        check(addr, r, &d);
    }

    // UDP answers too large for the client are truncated; TCP carries them whole.
    let tc = adig(
        addr,
        &["+noedns", "+ignore", "big.conf.svc.cluster.local", "A"],
    )
    .await;
    assert!(tc.flags.contains(&"tc".to_string()), "{}", tc.raw);
    assert!(tc.answer.is_empty(), "{}", tc.raw);
    let whole = adig(addr, &["+tcp", "big.conf.svc.cluster.local", "A"]).await;
    assert_eq!(whole.answer.len(), 60, "{}", whole.raw);
    let retried = adig(addr, &["+noedns", "big.conf.svc.cluster.local", "A"]).await;
    assert_eq!(
        retried.answer.len(),
        60,
        "dig retries over TCP: {}",
        retried.raw
    );
    let edns = adig(addr, &["+bufsize=4096", "big.conf.svc.cluster.local", "A"]).await;
    assert_eq!(edns.answer.len(), 60, "{}", edns.raw);
    assert!(edns.raw.contains("EDNS: version: 0"), "{}", edns.raw);

    // A change is visible within a second of the API write.
    let started = std::time::Instant::now();
    create::<Service>(
        &client,
        Some("conf"),
        json!({"metadata": {"name": "late", "namespace": "conf"},
        "spec": {"clusterIP": "10.96.100.11", "ports": [{"port": 80}]}}),
    )
    .await;
    wait_until(Duration::from_secs(5), "late Service answered", || {
        dig(addr, &["late.conf.svc.cluster.local", "A"]).data() == ["10.96.100.11"]
    })
    .await;
    let visible = started.elapsed();
    eprintln!("new Service visible after {visible:?}");
    assert!(
        visible < Duration::from_secs(1),
        "visible after {visible:?}"
    );

    dnsd.stop().await;
    let _ = stop_api.send(());
}
