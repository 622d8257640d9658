//! Privileged tests: the built minion-netd run as a CNI plugin inside a throwaway node
//! namespace, wiring throwaway pod namespaces. Nothing touches the host netns.

mod common;

use common::*;

fn strip_prefix(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

fn add(node: &Netns, pod: &Netns, id: &str, config: &str) -> serde_json::Value {
    let inv = Invocation {
        command: "ADD",
        container_id: id,
        netns: &pod.path(),
        ifname: "eth0",
    };
    let out = run_plugin(&netd_bin(), node, &inv, config);
    assert!(out.success, "ADD failed: {} {}", out.stdout, out.stderr);
    out.json()
}

fn verb(node: &Netns, command: &str, id: &str, netns: &str, config: &str) -> PluginOutput {
    let inv = Invocation {
        command,
        container_id: id,
        netns,
        ifname: "eth0",
    };
    run_plugin(&netd_bin(), node, &inv, config)
}

#[test]
fn add_check_ping_del() {
    if !require_root() {
        return;
    }
    let node = Netns::new("node");
    let (pod_a, pod_b) = (Netns::new("pod"), Netns::new("pod"));
    let dir = data_dir();
    let config = netd_config("10.244.41.0/24", dir.path());

    let a = add(&node, &pod_a, "pod-a", &config);
    assert_eq!(a["cniVersion"], "1.0.0");
    let ifs = a["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3);
    assert_eq!(ifs[0]["name"], "cni0");
    let veth = ifs[1]["name"].as_str().unwrap().to_string();
    assert!(veth.starts_with("veth") && veth.len() == 12, "{veth}");
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], pod_a.path());
    assert_eq!(a["ips"][0]["address"], "10.244.41.2/24");
    assert_eq!(a["ips"][0]["gateway"], "10.244.41.1");
    assert_eq!(a["ips"][0]["interface"], 2);
    assert_eq!(
        a["routes"][0],
        serde_json::json!({"dst": "0.0.0.0/0", "gw": "10.244.41.1"})
    );
    assert_eq!(a["dns"], serde_json::json!({}));
    // The reported MACs are the real ones.
    let node_links = node.sh(&["ip", "-o", "link", "show"]);
    for iface in &ifs[..2] {
        assert!(
            node_links.contains(iface["mac"].as_str().unwrap()),
            "{node_links}"
        );
    }
    assert!(pod_a
        .sh(&["ip", "-o", "link", "show", "eth0"])
        .contains(ifs[2]["mac"].as_str().unwrap()));

    // Node side: bridge up with the gateway, veth enslaved with hairpin, forwarding on.
    assert!(node
        .sh(&["ip", "-o", "addr", "show", "cni0"])
        .contains("inet 10.244.41.1/24"));
    assert!(node
        .sh(&["ip", "-o", "link", "show", "cni0"])
        .contains(",UP"));
    let veth_d = node.sh(&["ip", "-d", "link", "show", &veth]);
    assert!(
        veth_d.contains("master cni0") && veth_d.contains("hairpin on") && veth_d.contains(",UP"),
        "{veth_d}"
    );
    assert_eq!(
        node.sh(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );

    // Pod side: address, lo up, default route.
    assert!(pod_a
        .sh(&["ip", "-o", "addr", "show", "eth0"])
        .contains("inet 10.244.41.2/24"));
    assert!(pod_a
        .sh(&["ip", "-o", "link", "show", "lo"])
        .contains(",UP"));
    assert!(pod_a
        .sh(&["ip", "route", "show", "default"])
        .contains("default via 10.244.41.1 dev eth0"));
    assert!(ipam_file(dir.path(), "10.244.41.2").exists());
    assert_eq!(
        std::fs::read_to_string(ipam_file(dir.path(), "10.244.41.2")).unwrap(),
        "pod-a\neth0"
    );
    assert!(ping(&node, "10.244.41.2"), "node cannot ping pod a");

    // Second pod: another address, pods reach each other.
    let b = add(&node, &pod_b, "pod-b", &config);
    let ip_b = b["ips"][0]["address"].as_str().unwrap();
    assert_eq!(ip_b, "10.244.41.3/24");
    assert!(ping(&pod_a, strip_prefix(ip_b)), "pod a cannot ping pod b");
    assert!(ping(&pod_b, "10.244.41.2"), "pod b cannot ping pod a");

    // CHECK passes; re-ADD of the same container keeps its address.
    let check = verb(&node, "CHECK", "pod-a", &pod_a.path(), &config);
    assert!(
        check.success,
        "CHECK failed: {} {}",
        check.stdout, check.stderr
    );
    let again = add(&node, &pod_a, "pod-a", &config);
    assert_eq!(again["ips"][0]["address"], "10.244.41.2/24");
    assert!(
        ping(&node, "10.244.41.2"),
        "node cannot ping pod a after re-ADD"
    );

    // DEL releases the allocation, sets the host veth down and strips the pod's
    // address and routes; the pair itself goes with the pod netns. A second DEL also
    // succeeds; CHECK then fails.
    let del = verb(&node, "DEL", "pod-a", &pod_a.path(), &config);
    assert!(
        del.success && del.stdout.is_empty(),
        "DEL: {} {}",
        del.stdout,
        del.stderr
    );
    assert_host_veth_isolated(&node, &veth);
    assert_pod_unconfigured(&pod_a);
    let answered = node.exec(&["/bin/busybox", "ping", "-c1", "-W1", "10.244.41.2"]);
    assert!(!answered.status.success(), "pod a still answers after DEL");
    assert!(!ipam_file(dir.path(), "10.244.41.2").exists());
    assert!(verb(&node, "DEL", "pod-a", &pod_a.path(), &config).success);
    let check = verb(&node, "CHECK", "pod-a", &pod_a.path(), &config);
    assert!(!check.success);
    assert_eq!(check.json()["code"], 104);
    assert!(
        ping(&node, strip_prefix(ip_b)),
        "pod b lost connectivity after DEL of a"
    );
}

/// The host veth exists, is down and has no carrier on the bridge.
fn assert_host_veth_isolated(node: &Netns, veth: &str) {
    let link = node.sh(&["ip", "-o", "link", "show", veth]);
    assert!(
        link.contains("state DOWN") && !link.contains(",UP"),
        "host veth not down: {link}"
    );
}

/// The pod's eth0 (if still there) has no IPv4 address and the pod has no IPv4 route.
fn assert_pod_unconfigured(pod: &Netns) {
    let addrs = pod.sh(&["ip", "-o", "-4", "addr", "show"]);
    assert!(
        addrs.lines().all(|l| !l.contains("eth0")),
        "pod address left: {addrs}"
    );
    let routes = pod.sh(&["ip", "-4", "route", "show", "table", "main"]);
    assert!(routes.trim().is_empty(), "pod routes left: {routes}");
}

/// Polls (bounded: 100 x 50 ms) until `veth` is gone from `node`.
fn wait_link_gone(node: &Netns, veth: &str) -> bool {
    for _ in 0..100 {
        if !node.exec(&["ip", "link", "show", veth]).status.success() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

fn host_veth(result: &serde_json::Value) -> String {
    result["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// After DEL the veth pair stays until the runtime deletes the pod netns; then the
/// kernel removes both ends.
#[test]
fn deleting_the_pod_netns_after_del_removes_the_host_veth() {
    if !require_root() {
        return;
    }
    let node = Netns::new("node");
    let mut pod = Netns::new("pod");
    let dir = data_dir();
    let config = netd_config("10.244.45.0/24", dir.path());
    let veth = host_veth(&add(&node, &pod, "gone-later", &config));
    assert!(verb(&node, "DEL", "gone-later", &pod.path(), &config).success);
    assert_host_veth_isolated(&node, &veth);
    let path = pod.path();
    pod.delete();
    assert!(
        wait_link_gone(&node, &veth),
        "host veth {veth} outlived its pod netns by 5 s"
    );
    assert!(verb(&node, "DEL", "gone-later", &path, &config).success);
}

/// A sandbox restarting in the same netns: ADD after DEL, with the same container ID
/// (its old host veth is in the way) and with another one (its old pod-side eth0 is).
/// The address an old, kept interface held can go to another pod, which answers.
#[test]
fn add_after_del_in_the_same_netns_and_address_reuse() {
    if !require_root() {
        return;
    }
    let node = Netns::new("node");
    let (pod, other) = (Netns::new("pod"), Netns::new("pod"));
    let dir = data_dir();
    let config = serde_json::json!({
        "cniVersion": "1.0.0", "name": "minion", "type": "minion-netd", "bridge": "cni0",
        "isGateway": true, "hairpinMode": true,
        "ipam": {"subnet": "10.244.46.0/24", "rangeStart": "10.244.46.10",
                 "rangeEnd": "10.244.46.11", "dataDir": dir.path().display().to_string()}
    })
    .to_string();
    let first = add(&node, &pod, "restart", &config);
    assert_eq!(first["ips"][0]["address"], "10.244.46.10/24");
    assert!(verb(&node, "DEL", "restart", &pod.path(), &config).success);
    let again = add(&node, &pod, "restart", &config);
    assert_eq!(again["ips"][0]["address"], "10.244.46.11/24");
    assert_eq!(host_veth(&again), host_veth(&first));
    assert!(ping(&node, "10.244.46.11"), "pod unreachable after re-ADD");
    assert!(verb(&node, "DEL", "restart", &pod.path(), &config).success);

    let next = add(&node, &pod, "restart-2", &config);
    assert!(ping(
        &node,
        next["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
    ));
    assert!(
        !node
            .exec(&["ip", "link", "show", &host_veth(&first)])
            .status
            .success(),
        "the old pair outlived the re-ADD that replaced its pod side"
    );
    let eth0 = pod.sh(&["ip", "-o", "link", "show", "eth0"]);
    assert!(
        eth0.contains(next["interfaces"][2]["mac"].as_str().unwrap()),
        "{eth0}"
    );
    assert!(verb(&node, "DEL", "restart-2", &pod.path(), &config).success);

    // Both addresses free, both old pairs still in `pod` (down, no address): a new pod
    // in another netns gets one and is the one that answers.
    let reuse = add(&node, &other, "reuse", &config);
    let ip = reuse["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(ping(&node, &ip), "reused address {ip} unreachable");
    assert!(
        ping(&other, "10.244.46.1"),
        "new pod cannot reach the gateway"
    );
    assert_pod_unconfigured(&pod);

    // An interface by that name that is not ours is not replaced.
    let mut foreign = Netns::new("pod");
    foreign.sh(&[
        "ip",
        "link",
        "add",
        "eth0",
        "address",
        "02:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "eth0p",
    ]);
    let out = verb(&node, "ADD", "foreign", &foreign.path(), &config);
    assert!(!out.success, "ADD replaced a foreign eth0: {}", out.stdout);
    assert!(
        out.json()["msg"]
            .as_str()
            .unwrap()
            .contains("not made by this plugin"),
        "{}",
        out.stdout
    );
    assert!(foreign
        .sh(&["ip", "-o", "link", "show", "eth0"])
        .contains("eth0"));
    foreign.delete();
}

#[test]
fn del_after_netns_is_gone_succeeds() {
    if !require_root() {
        return;
    }
    let node = Netns::new("node");
    let mut pod = Netns::new("pod");
    let dir = data_dir();
    let config = netd_config("10.244.42.0/24", dir.path());
    add(&node, &pod, "gone", &config);
    let path = pod.path();
    pod.delete();
    let del = verb(&node, "DEL", "gone", &path, &config);
    assert!(del.success, "DEL: {} {}", del.stdout, del.stderr);
    assert!(!ipam_file(dir.path(), "10.244.42.2").exists());
    let del = verb(&node, "DEL", "gone", "", &config);
    assert!(
        del.success,
        "DEL without netns: {} {}",
        del.stdout, del.stderr
    );
}

#[test]
fn bad_input_gives_cni_error_json() {
    if !require_root() {
        return;
    }
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let dir = data_dir();
    let cases = [
        (r#"{"cniVersion":"1.0.0","name":"minion","type":"minion-netd","ipam":{}}"#.to_string(), 7),
        ("this is not json".to_string(), 6),
        (r#"{"cniVersion":"0.3.1","name":"minion","type":"minion-netd","ipam":{"subnet":"10.244.43.0/24"}}"#.to_string(), 1),
    ];
    for (config, code) in cases {
        let out = verb(&node, "ADD", "bad", &pod.path(), &config);
        assert!(!out.success, "ADD with {config} succeeded");
        let v = out.json();
        assert_eq!(v["code"], code, "{config}: {v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(v["cniVersion"].is_string());
    }
    // Missing env: code 4.
    let good = netd_config("10.244.43.0/24", dir.path());
    let out = verb(&node, "ADD", "", &pod.path(), &good);
    assert!(!out.success);
    assert_eq!(out.json()["code"], 4);
    // A netns that does not exist: an error, and no allocation is left.
    let out = verb(
        &node,
        "ADD",
        "nons",
        "/run/netns/mtest-does-not-exist",
        &good,
    );
    assert!(!out.success);
    assert_eq!(out.json()["code"], 103);
    assert!(!ipam_file(dir.path(), "10.244.43.2").exists());
    // VERSION.
    let out = verb(&node, "VERSION", "", "", r#"{"cniVersion":"1.0.0"}"#);
    assert!(out.success);
    assert_eq!(
        out.json()["supportedVersions"],
        serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
    );
}

/// Runs Debian's reference bridge + host-local once and compares the result shape.
#[test]
fn result_shape_matches_reference_bridge() {
    if !require_root() {
        return;
    }
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipping: /usr/lib/cni/bridge not installed");
        return;
    }
    let (ref_node, ref_pod) = (Netns::new("node"), Netns::new("pod"));
    let (node, pod) = (Netns::new("node"), Netns::new("pod"));
    let (ref_dir, dir) = (data_dir(), data_dir());
    let ref_config = serde_json::json!({
        "cniVersion": "1.0.0", "name": "minion", "type": "bridge", "bridge": "cni0",
        "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
        "ipam": {"type": "host-local", "subnet": "10.244.44.0/24", "dataDir": ref_dir.path().display().to_string()}
    })
    .to_string();
    let inv = Invocation {
        command: "ADD",
        container_id: "shape",
        netns: &ref_pod.path(),
        ifname: "eth0",
    };
    let reference = run_plugin("/usr/lib/cni/bridge", &ref_node, &inv, &ref_config);
    assert!(
        reference.success,
        "reference ADD: {} {}",
        reference.stdout, reference.stderr
    );
    let r = reference.json();
    let ours = add(
        &node,
        &pod,
        "shape",
        &netd_config("10.244.44.0/24", dir.path()),
    );

    // Same interface list (names, sandbox only on the pod side), same ips entry.
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (rn, on) = (names(&r), names(&ours));
    assert_eq!((&rn[0], &rn[2]), (&on[0], &on[2]));
    // The reference names its host veth randomly; ours is a hash (same length/prefix).
    assert!(rn[1].starts_with("veth") && rn[1].len() == on[1].len());
    for v in [&r, &ours] {
        assert!(v["interfaces"][1].get("sandbox").is_none());
        assert!(v["interfaces"][2]["sandbox"]
            .as_str()
            .unwrap()
            .starts_with("/run/netns/mtest-pod-"));
    }
    assert_eq!(r["ips"], ours["ips"]);
    assert_eq!(r["dns"], ours["dns"]);
    // Allocation files hold the same lines (host-local separates them with \r\n, we with \n).
    assert_eq!(
        std::fs::read_to_string(ref_dir.path().join("minion/10.244.44.2"))
            .unwrap()
            .replace("\r\n", "\n"),
        std::fs::read_to_string(dir.path().join("minion/10.244.44.2")).unwrap()
    );
    // minion-netd always behaves like the reference's isDefaultGateway=true: default route
    // installed in the pod and reported in `routes`.
    assert_eq!(r["routes"], ours["routes"], "reference: {r}");
    assert!(ref_pod
        .sh(&["ip", "route", "show", "default"])
        .contains("via 10.244.44.1"));
    assert!(pod
        .sh(&["ip", "route", "show", "default"])
        .contains("via 10.244.44.1"));
    let del = run_plugin(
        "/usr/lib/cni/bridge",
        &ref_node,
        &Invocation {
            command: "DEL",
            ..inv
        },
        &ref_config,
    );
    assert!(del.success);
}

/// Exhaustion through the real plugin: code 102 naming the range, and the failed ADD
/// leaves no veth and no allocation. STATUS succeeds silently. GC keeps the attachments
/// listed as valid and releases the rest (cniVersion 1.1.0).
#[test]
fn exhaustion_status_and_gc() {
    if !require_root() {
        return;
    }
    let node = Netns::new("node");
    let (pod_a, pod_b) = (Netns::new("pod"), Netns::new("pod"));
    let dir = data_dir();
    let config = serde_json::json!({
        "cniVersion": "1.1.0", "name": "minion", "type": "minion-netd", "bridge": "cni0",
        "isGateway": true,
        "ipam": {"subnet": "10.244.44.0/24", "rangeStart": "10.244.44.10",
                 "rangeEnd": "10.244.44.10", "dataDir": dir.path().display().to_string()}
    });
    let text = config.to_string();
    let a = add(&node, &pod_a, "only", &text);
    assert_eq!(a["ips"][0]["address"], "10.244.44.10/24");

    let out = verb(&node, "ADD", "full", &pod_b.path(), &text);
    assert!(
        !out.success,
        "ADD into a full range succeeded: {}",
        out.stdout
    );
    let e = out.json();
    assert_eq!(e["code"], 102, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .is_some_and(|m| m.contains("10.244.44.10")),
        "{e}"
    );
    let links = node.sh(&["ip", "-o", "link", "show"]);
    assert_eq!(links.matches("veth").count(), 1, "a veth leaked: {links}");
    assert!(pod_b
        .sh(&["ip", "-o", "link", "show"])
        .lines()
        .all(|l| !l.contains("eth0")));

    let out = verb(&node, "STATUS", "", "", &text);
    assert!(
        out.success && out.stdout.trim().is_empty(),
        "STATUS: {} {}",
        out.stdout,
        out.stderr
    );

    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "only", "ifname": "eth0"}]);
    let out = verb(&node, "GC", "", "", &gc.to_string());
    assert!(out.success, "GC: {} {}", out.stdout, out.stderr);
    assert!(
        ipam_file(dir.path(), "10.244.44.10").exists(),
        "GC released a valid attachment"
    );

    gc["cni.dev/valid-attachments"] = serde_json::json!([]);
    let out = verb(&node, "GC", "", "", &gc.to_string());
    assert!(out.success, "GC: {} {}", out.stdout, out.stderr);
    assert!(
        !ipam_file(dir.path(), "10.244.44.10").exists(),
        "GC kept a stale attachment"
    );
    // The freed address serves the next pod.
    let b = add(&node, &pod_b, "next", &text);
    assert_eq!(b["ips"][0]["address"], "10.244.44.10/24");
}
