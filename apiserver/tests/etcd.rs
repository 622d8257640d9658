//! The etcd backend against a real etcd (Debian's etcd-server, started on loopback by
//! the tests): compare-and-swap semantics, lists at old revisions, watch resume, 410
//! after compaction, two API servers sharing one etcd (watch visibility, distinct
//! ClusterIPs, one controller leader with take-over), kill -9 durability, a clear
//! error when etcd is unreachable, and the watch cache re-listing after etcd
//! compacted events it never saw.

mod common;
#[path = "common/etcd.rs"]
mod etcd_common;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http;
use etcd_common::{free_port, have_etcd, ApiServer, Etcd};
use minion_apiserver::store::{object_revision, EtcdStore, EventType, Store, StoreError};
use serde_json::{json, Value};

async fn connect(etcd: &Etcd, prefix: &str) -> Arc<EtcdStore> {
    let ep = etcd.endpoint.clone();
    let prefix = prefix.to_string();
    Arc::new(tokio::task::spawn_blocking(move || EtcdStore::connect(&[ep], &prefix)).await.unwrap().expect("connect"))
}

/// Runs blocking store calls on tokio's blocking pool, as the server does.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// An in-process API server state over `s`, for driving one controller pass; the
/// sender keeps its shutdown signal open.
fn app_state(s: &Arc<EtcdStore>) -> (Arc<minion_apiserver::server::AppState>, tokio::sync::watch::Sender<bool>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = Arc::new(minion_apiserver::server::AppState {
        db: minion_apiserver::db::Db::new(s.clone()),
        ips: Mutex::new(minion_apiserver::ipalloc::ClusterIpAllocator::service_cidr()),
        shutdown: stop_rx,
        metrics: Default::default(),
        kubelet_token: None,
    });
    (app, stop_tx)
}

fn obj(name: &str, v: i64) -> Value {
    json!({"metadata": {"name": name}, "v": v})
}

async fn recv(sub: &mut minion_apiserver::store::Subscription) -> Arc<minion_apiserver::store::Event> {
    tokio::time::timeout(Duration::from_secs(10), sub.rx.recv()).await.expect("watch event in time").expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_conflicts_list_at_and_watch() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let s = connect(&etcd, "/crud").await;
    let key = "/registry/configmaps/d/a";
    let st = s.clone();
    let (rv1, rv2) = blocking(move || {
        let a = st.create(key, obj("a", 1)).unwrap();
        let rv1 = object_revision(&a);
        assert!(rv1 > 0);
        assert!(matches!(st.create(key, obj("a", 1)), Err(StoreError::AlreadyExists { .. })));
        let b = st.update(key, obj("a", 2), Some(rv1)).unwrap();
        let rv2 = object_revision(&b);
        assert!(rv2 > rv1);
        let stale = st.update(key, obj("a", 3), Some(rv1)).unwrap_err();
        assert!(matches!(stale, StoreError::Conflict { expected, actual, .. } if expected == rv1 && actual == rv2), "{stale}");
        assert!(matches!(st.delete(key, Some(rv1)), Err(StoreError::Conflict { .. })));
        let got = st.get(key).unwrap().unwrap();
        assert_eq!((got["v"].as_i64(), object_revision(&got)), (Some(2), rv2));
        // The list as it was at rv1 (etcd range at that revision).
        let (old, served) = st.list_at("/registry/configmaps/", Some(rv1)).unwrap();
        assert_eq!(served, rv1);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0]["v"], 1);
        assert_eq!(object_revision(&old[0]), rv1);
        let (now, rev) = st.list("/registry/configmaps/").unwrap();
        assert_eq!((now.len(), now[0]["v"].as_i64()), (1, Some(2)));
        assert!(rev >= rv2);
        assert!(matches!(st.update("/registry/configmaps/d/none", obj("x", 0), None), Err(StoreError::NotFound { .. })));
        assert!(matches!(st.delete("/registry/configmaps/d/none", None), Err(StoreError::NotFound { .. })));
        (rv1, rv2)
    })
    .await;

    // Resume from rv1: the update comes with its previous value, from the history, or
    // live when etcd's watch stream has not delivered it to this server yet.
    let st = s.clone();
    let mut sub = blocking(move || st.watch("/registry/configmaps/", Some(rv1)).unwrap()).await;
    assert!(sub.backlog.len() <= 1, "{} events after rv1", sub.backlog.len());
    let update = match sub.backlog.first() {
        Some(ev) => ev.clone(),
        None => recv(&mut sub).await,
    };
    assert_eq!((update.kind, update.rev), (EventType::Modified, rv2));
    assert_eq!(update.prev.as_ref().map(|p| p["v"].clone()), Some(json!(1)));

    // Live: a delete carries the last state.
    let st = s.clone();
    let deleted = blocking(move || st.delete(key, Some(rv2)).unwrap()).await;
    let ev = recv(&mut sub).await;
    assert_eq!((ev.kind, ev.rev, ev.key.as_str()), (EventType::Deleted, object_revision(&deleted), key));
    assert_eq!(ev.object["v"], 2);
    assert_eq!(s.revision(), ev.rev);
    // The watch-fed cache the controllers list from follows.
    let st = s.clone();
    let (cached, cached_rev) = blocking(move || st.list_shared("/registry/configmaps/").unwrap()).await;
    assert!(cached.is_empty());
    assert_eq!(cached_rev, ev.rev);

    // A watch without a revision starts with the current objects.
    let st = s.clone();
    let all = blocking(move || {
        st.create("/registry/configmaps/d/b", obj("b", 1)).unwrap();
        st.create("/registry/configmapsx/d/c", obj("c", 1)).unwrap();
        st.watch("/registry/configmaps/", None).unwrap()
    })
    .await;
    let names: Vec<&str> = all.backlog.iter().map(|e| e.object["metadata"]["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["b"]);
    // A store connected now loads its cache from etcd.
    let fresh = connect(&etcd, "/crud").await;
    let (cached, _) = blocking(move || fresh.list_shared("/registry/configmaps/").unwrap()).await;
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0]["metadata"]["name"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_before_start_and_expire_after_compaction() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let first = connect(&etcd, "/resume").await;
    let st = first.clone();
    let revs: Vec<u64> = blocking(move || {
        (0..5).map(|i| object_revision(&st.create(&format!("/registry/pods/d/p{i}"), obj("p", i)).unwrap())).collect()
    })
    .await;

    // A store connected later has no history that far back: it replays from etcd.
    let later = connect(&etcd, "/resume").await;
    let st = later.clone();
    let from = revs[0];
    let mut sub = blocking(move || st.watch("/registry/pods/", Some(from)).unwrap()).await;
    for want in &revs[1..] {
        let ev = recv(&mut sub).await;
        assert_eq!((ev.rev, ev.kind), (*want, EventType::Added));
    }

    // Compact everything before the last revision: old lists and watches are Expired.
    let mut client = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.expect("etcd client");
    client.compact(revs[4] as i64, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("compact");
    let st = later.clone();
    let (list_err, watch_err) = blocking(move || {
        (st.list_at("/registry/pods/", Some(from)).unwrap_err(), st.watch("/registry/pods/", Some(from)).unwrap_err())
    })
    .await;
    assert!(matches!(list_err, StoreError::Expired { .. }), "{list_err}");
    assert!(matches!(watch_err, StoreError::Expired { .. }), "{watch_err}");

    // Over HTTP: 410 Gone for a list at a compacted revision, and for a watch from it.
    let tmp = tempfile::tempdir().unwrap();
    let server = ApiServer::start(tmp.path(), etcd.storage("/resume")).await;
    let (code, body) = server.http("GET", &format!("/api/v1/pods?resourceVersion={from}&resourceVersionMatch=Exact"), None).await;
    assert_eq!(code, 410, "{body}");
    let (code, body) = server.http("GET", &format!("/api/v1/pods?watch=1&resourceVersion={from}&timeoutSeconds=2"), None).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"code\":410"), "{body}");
    server.stop().await;
}

/// Lists a resource through `server`: (names, list resourceVersion).
async fn list(server: &ApiServer, path: &str) -> (Vec<Value>, String) {
    let (code, body) = server.http("GET", path, None).await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    (v["items"].as_array().cloned().unwrap_or_default(), v["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string())
}

async fn lease_holder(server: &ApiServer) -> Option<String> {
    let (code, body) =
        server.http("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/minion-controller-manager", None).await;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["spec"]["holderIdentity"].as_str().filter(|h| !h.is_empty()).map(String::from)
}

async fn wait_bound(server: &ApiServer, pod: &str) -> String {
    common::eventually(&format!("pod {pod} bound"), || async {
        let (code, body) = server.http("GET", &format!("/api/v1/namespaces/default/pods/{pod}"), None).await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200).then(|| v["spec"]["nodeName"].as_str().unwrap_or("").to_string()).filter(|n| !n.is_empty())
    })
    .await
}

const NODE: &str = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node1"},
 "status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;

fn pod(name: &str) -> String {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_api_servers_share_one_etcd() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both bootstrap the same empty etcd at once.
    let (a, b) = tokio::join!(ApiServer::start(da.path(), etcd.storage("/registry")), ApiServer::start(db.path(), etcd.storage("/registry")));
    let (svcs, _) = list(&a, "/api/v1/services").await;
    assert_eq!(svcs.len(), 2, "default/kubernetes and kube-system/kube-dns once each");

    // A write through A is seen by a watch on B.
    let (_, rv) = list(&b, "/api/v1/namespaces/default/configmaps").await;
    let watch_port = b.port;
    let watch = tokio::spawn(async move {
        common::http(watch_port, "GET", &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=3"), None)
            .await
            .expect("watch")
    });
    let (code, body) = a.http("POST", "/api/v1/namespaces/default/configmaps", Some(r#"{"metadata":{"name":"from-a"},"data":{"k":"v"}}"#)).await;
    assert_eq!(code, 201, "{body}");
    let (code, seen) = watch.await.expect("watch task");
    assert_eq!(code, 200);
    assert!(seen.contains("\"ADDED\"") && seen.contains("from-a"), "watch on B saw: {seen}");

    // Services created through both at once get distinct ClusterIPs.
    let mut creates = Vec::new();
    for i in 0..16 {
        let server_port = if i % 2 == 0 { a.port } else { b.port };
        let body = json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}}).to_string();
        creates.push(tokio::spawn(async move {
            common::http(server_port, "POST", "/api/v1/namespaces/default/services", Some(("application/json", &body))).await.expect("post")
        }));
    }
    for c in creates {
        let (code, body) = c.await.expect("create task");
        assert_eq!(code, 201, "{body}");
    }
    let (svcs, _) = list(&b, "/api/v1/services").await;
    let ips: Vec<&str> = svcs.iter().filter_map(|s| s["spec"]["clusterIP"].as_str()).collect();
    assert_eq!(ips.len(), 18);
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), 18, "duplicate ClusterIPs: {ips:?}");

    // Exactly one of them holds the controller lease and runs the scheduler.
    let holder = common::eventually("a lease holder", || lease_holder(&a)).await;
    let (leader, follower) = if holder.contains(&format!("127.0.0.1:{}_", a.port)) {
        (a, b)
    } else {
        assert!(holder.contains(&format!("127.0.0.1:{}_", b.port)), "holder {holder} is neither server");
        (b, a)
    };
    assert_eq!(follower.http("POST", "/api/v1/nodes", Some(NODE)).await.0, 201);
    assert_eq!(follower.http("POST", "/api/v1/namespaces/default/pods", Some(&pod("p1"))).await.0, 201);
    assert_eq!(wait_bound(&follower, "p1").await, "node1");

    // The leader stops: the other takes over and schedules the next pod.
    leader.stop().await;
    let next = common::eventually("the follower to take over", || async {
        lease_holder(&follower).await.filter(|h| h.contains(&format!("127.0.0.1:{}_", follower.port)))
    })
    .await;
    assert_ne!(next, holder);
    assert_eq!(follower.http("POST", "/api/v1/namespaces/default/pods", Some(&pod("p2"))).await.0, 201);
    assert_eq!(wait_bound(&follower, "p2").await, "node1");
    follower.stop().await;
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_binary(port: u16, dir: &std::path::Path, endpoint: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_minion-apiserver"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--insecure")
        .arg("--storage")
        .arg("etcd")
        .arg("--etcd-endpoints")
        .arg(endpoint)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    cmd
}

async fn wait_healthy(port: u16) {
    for _ in 0..200 {
        if let Ok((200, _)) = common::http(port, "GET", "/healthz", None).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("apiserver on {port} did not become healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Child(spawn_binary(port, dir.path(), &etcd.endpoint).stderr(Stdio::null()).spawn().expect("spawn"));
    wait_healthy(port).await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..5_000 {
                let name = format!("c-{w}-{i}");
                let body = json!({"metadata": {"name": name}}).to_string();
                match common::http(port, "POST", "/api/v1/namespaces/default/configmaps", Some(("application/json", &body))).await {
                    Ok((201, _)) => acked.lock().expect("acked").push(name),
                    _ => return,
                }
            }
        }));
    }
    let started = Instant::now();
    while acked.lock().expect("acked").len() < 200 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.0.kill().expect("kill -9");
    let _ = child.0.wait();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(20), w).await;
    }
    let acked: Vec<String> = acked.lock().expect("acked").clone();
    assert!(acked.len() >= 200, "only {} creates acknowledged", acked.len());

    let port = free_port();
    let _restarted = Child(spawn_binary(port, dir.path(), &etcd.endpoint).stderr(Stdio::null()).spawn().expect("spawn"));
    wait_healthy(port).await;
    let (status, body) = common::http(port, "GET", "/api/v1/namespaces/default/configmaps", None).await.expect("list");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).expect("json");
    let names: HashSet<&str> = list["items"].as_array().expect("items").iter().filter_map(|p| p["metadata"]["name"].as_str()).collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !names.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged creates lost: {:?}", missing.len(), acked.len(), &missing[..missing.len().min(5)]);
}

#[test]
fn unreachable_etcd_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = spawn_binary(free_port(), dir.path(), &endpoint).output().expect("run");
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("minion-apiserver: error:")).unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(line.contains("etcd") && line.contains(&endpoint), "{line}");
}

/// Waits (bounded) until `check` holds on the store's watch-fed cache.
async fn cache_eventually(s: &Arc<EtcdStore>, what: &str, check: impl Fn(&[Arc<Value>]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = s.clone();
        let (items, _) = blocking(move || st.list_shared("/registry/configmaps/").unwrap()).await;
        if check(&items) {
            return;
        }
        assert!(Instant::now() < deadline, "cache never showed {what}: {items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names_and_v(items: &[Arc<Value>]) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = items
        .iter()
        .map(|o| (o["metadata"]["name"].as_str().unwrap_or("").to_string(), o["v"].as_i64().unwrap_or(-1)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cache_relists_after_missing_compacted_events() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let s = connect(&etcd, "/relist").await;
    let writer = connect(&etcd, "/relist").await;
    let st = s.clone();
    let (old_rv, mut live) = blocking(move || {
        st.create("/registry/configmaps/d/a", obj("a", 1)).unwrap();
        let b = st.create("/registry/configmaps/d/b", obj("b", 1)).unwrap();
        let rv = object_revision(&b);
        (rv, st.watch("/registry/configmaps/", Some(rv)).unwrap())
    })
    .await;
    cache_eventually(&s, "a and b", |items| items.len() == 2).await;

    // While this server's watch is down, other writes happen and etcd compacts them.
    let pause = s.pause_watch();
    let w = writer.clone();
    let last = blocking(move || {
        let a = w.get("/registry/configmaps/d/a").unwrap().unwrap();
        w.update("/registry/configmaps/d/a", obj("a", 2), Some(object_revision(&a))).unwrap();
        w.delete("/registry/configmaps/d/b", None).unwrap();
        object_revision(&w.create("/registry/configmaps/d/c", obj("c", 1)).unwrap())
    })
    .await;
    let mut client = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.expect("etcd client");
    client.compact(last as i64, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("compact");
    drop(pause);

    // The cache is rebuilt from a fresh list: the missed writes show.
    cache_eventually(&s, "a=2 and c=1 without b", |items| {
        names_and_v(items) == vec![("a".to_string(), 2), ("c".to_string(), 1)]
    })
    .await;
    // The live subscription ends (its client must re-list), after at most old events.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match live.rx.recv().await {
                Ok(ev) => assert!(ev.rev <= old_rv, "unexpected event {ev:?}"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the live watch did not end after the re-list");
    // A resourceVersion from before the compaction is 410 Expired.
    let st = s.clone();
    let err = blocking(move || st.watch("/registry/configmaps/", Some(old_rv)).unwrap_err()).await;
    assert!(matches!(err, StoreError::Expired { .. }), "{err}");

    // Watching resumes from the list revision: new writes, including every key of a
    // multi-key transaction, reach the cache and new watches.
    let st = s.clone();
    let mut sub = blocking(move || st.watch("/registry/configmaps/", Some(last)).unwrap()).await;
    let keys = minion_apiserver::store::KeyMap::new("/relist");
    let txn = etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::put(keys.to_etcd("/registry/configmaps/d/x"), obj("x", 1).to_string(), None),
        etcd_client::TxnOp::put(keys.to_etcd("/registry/configmaps/d/y"), obj("y", 1).to_string(), None),
    ]);
    client.txn(txn).await.expect("txn");
    let (e1, e2) = (recv(&mut sub).await, recv(&mut sub).await);
    assert_eq!(e1.rev, e2.rev);
    assert_eq!((e1.key.as_str(), e2.key.as_str()), ("/registry/configmaps/d/x", "/registry/configmaps/d/y"));
    cache_eventually(&s, "a, c, x and y", |items| items.len() == 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_finalizer_waits_for_objects_the_cache_has_not_seen() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let s = connect(&etcd, "/nsfinal").await;
    let (app, _stop_tx) = app_state(&s);
    let ns_key = "/registry/namespaces/going";
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "going", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}});
    let st = s.clone();
    blocking(move || st.create(ns_key, ns).unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.list_shared("/registry/namespaces/").unwrap().0.is_empty() {
        assert!(Instant::now() < deadline, "the cache never saw the namespace");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An object lands in the namespace while this server's cache lags behind etcd.
    let pause = s.pause_watch();
    let st = s.clone();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": "going"}});
    blocking(move || st.create("/registry/configmaps/going/late", cm).unwrap()).await;
    minion_apiserver::controllers::namespaces::reconcile(&app).await.expect("reconcile");
    let st = s.clone();
    let kept = blocking(move || st.get(ns_key).unwrap()).await.expect("the namespace is still there");
    assert_eq!(kept["spec"]["finalizers"], json!(["kubernetes"]), "finalized with an object left: {kept}");
    drop(pause);

    // Once the cache catches up, the object goes and then the namespace does.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        minion_apiserver::controllers::namespaces::reconcile(&app).await.expect("reconcile");
        let st = s.clone();
        let (ns, cm) = blocking(move || (st.get(ns_key).unwrap(), st.get("/registry/configmaps/going/late").unwrap())).await;
        if ns.is_none() {
            assert!(cm.is_none(), "namespace removed before its content");
            break;
        }
        assert!(Instant::now() < deadline, "the namespace was never finalized: {ns:?} {cm:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A ClusterIP record no Service holds (a server died between claiming and creating)
/// is released once older than the grace period; held and fresh ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterip_repair_releases_only_old_orphaned_claims() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start().await;
    let s = connect(&etcd, "/repair").await;
    let (app, _stop_tx) = app_state(&s);
    let old = (chrono::Utc::now() - chrono::Duration::seconds(300)).to_rfc3339();
    let fresh = chrono::Utc::now().to_rfc3339();
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.50", "clusterIPs": ["10.96.0.50"]}});
    let claim = |ip: &str, at: &str| json!({"metadata": {"name": ip}, "service": "default/x", "claimedAt": at});
    let st = s.clone();
    let (held, orphan, in_flight) = (claim("10.96.0.50", &old), claim("10.96.0.51", &old), claim("10.96.0.52", &fresh));
    blocking(move || {
        st.create("/registry/services/default/web", svc).unwrap();
        st.create("/registry/ranges/serviceips/10.96.0.50", held).unwrap();
        st.create("/registry/ranges/serviceips/10.96.0.51", orphan).unwrap();
        st.create("/registry/ranges/serviceips/10.96.0.52", in_flight).unwrap();
    })
    .await;
    minion_apiserver::controllers::ipallocrepair::reconcile(&app).await.expect("repair");
    let st = s.clone();
    let left = blocking(move || st.list("/registry/ranges/serviceips/").unwrap().0).await;
    let names: Vec<&str> = left.iter().filter_map(|c| c["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["10.96.0.50", "10.96.0.52"], "{left:?}");
}
