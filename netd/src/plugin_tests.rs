//! Orchestration tests of the CNI verbs against the recording fake (no root needed).

use std::path::PathBuf;

use super::*;
use crate::netops::{Call, RecordingOps};

const NETNS: &str = "/run/netns/pod-a";

fn conf_json(dir: &std::path::Path, version: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"minion","type":"minion-netd","bridge":"cni0",
        "isGateway":true,"hairpinMode":true,"ipam":{{"subnet":"10.244.1.0/24","dataDir":"{}"}}}}"#,
        dir.display()
    )
}

fn env(command: &str, id: &str) -> CniEnv {
    CniEnv {
        command: command.into(),
        container_id: id.into(),
        netns: NETNS.into(),
        ifname: "eth0".into(),
    }
}

fn fake() -> RecordingOps {
    RecordingOps {
        netns_present: vec![PathBuf::from(NETNS)],
        ..Default::default()
    }
}

fn run<O: NetOps>(ops: &mut O, env: &CniEnv, stdin: &str) -> Result<Option<String>, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(dispatch(ops, env, stdin.as_bytes()))
}

#[test]
fn veth_name_is_hash_of_id_and_ifname() {
    let name = host_veth_name("abc123", "eth0");
    assert_eq!(name.len(), 12);
    assert!(name.starts_with("veth"));
    let digest = Sha256::digest(b"abc123eth0");
    assert_eq!(
        &name[4..],
        format!(
            "{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        )
    );
    assert_ne!(name, host_veth_name("abc123", "eth1"));
}

#[test]
fn add_wires_bridge_veth_and_pod_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let out = run(
        &mut ops,
        &env("ADD", "pod-a"),
        &conf_json(tmp.path(), "1.0.0"),
    )
    .unwrap()
    .unwrap();
    let host = host_veth_name("pod-a", "eth0");
    let gw: Ipv4Network = "10.244.1.1/24".parse().unwrap();
    let expected = vec![
        Call::EnsureBridge("cni0".into(), None, Some(gw)),
        Call::EnableIpForward,
        Call::CreateVeth(VethSpec {
            host_name: host.clone(),
            container_ifname: "eth0".into(),
            netns: NETNS.into(),
            mtu: None,
            master: 1,
            hairpin: true,
            container_mac: [0x0a, 0x58, 10, 244, 1, 2],
            host_mac: host_veth_mac("pod-a", "eth0"),
        }),
        Call::ConfigurePod(
            NETNS.into(),
            "eth0".into(),
            PodAddress {
                address: "10.244.1.2/24".parse().unwrap(),
                gateway: "10.244.1.1".parse().unwrap(),
            },
        ),
    ];
    assert_eq!(ops.calls, expected);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["interfaces"][0]["name"], "cni0");
    assert_eq!(v["interfaces"][1]["name"], host.as_str());
    assert_eq!(v["interfaces"][2]["name"], "eth0");
    assert_eq!(v["interfaces"][2]["sandbox"], NETNS);
    assert!(v["interfaces"][1].get("sandbox").is_none());
    assert_eq!(v["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(v["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(v["ips"][0]["interface"], 2);
    assert!(v["ips"][0].get("version").is_none());
    assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(v["routes"][0]["gw"], "10.244.1.1");
    assert_eq!(v["dns"], serde_json::json!({}));
    assert!(tmp.path().join("minion/10.244.1.2").exists());
}

#[test]
fn add_is_idempotent_and_pods_get_distinct_ips() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let conf = conf_json(tmp.path(), "1.1.0");
    let ip_of = |out: Option<String>| -> String {
        let v: serde_json::Value = serde_json::from_str(&out.unwrap()).unwrap();
        v["ips"][0]["address"].as_str().unwrap().to_string()
    };
    let a1 = ip_of(run(&mut ops, &env("ADD", "a"), &conf).unwrap());
    let b = ip_of(run(&mut ops, &env("ADD", "b"), &conf).unwrap());
    let a2 = ip_of(run(&mut ops, &env("ADD", "a"), &conf).unwrap());
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
}

#[test]
fn add_0_4_0_result_carries_ip_version() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        &mut fake(),
        &env("ADD", "a"),
        &conf_json(tmp.path(), "0.4.0"),
    )
    .unwrap()
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["ips"][0]["version"], "4");
}

#[test]
fn add_failure_rolls_back_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = RecordingOps::default(); // no netns present
    let err = run(&mut ops, &env("ADD", "a"), &conf_json(tmp.path(), "1.0.0")).unwrap_err();
    assert_eq!(err.code, code::NETNS);
    assert!(err.msg.contains(NETNS));
    let files: Vec<_> = std::fs::read_dir(tmp.path().join("minion"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Ipv4Addr>().ok())
        .collect();
    assert!(files.is_empty(), "allocation left behind: {files:?}");
    assert_eq!(
        ops.calls.last(),
        Some(&Call::DeleteLink(host_veth_name("a", "eth0")))
    );
}

#[test]
fn del_releases_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let conf = conf_json(tmp.path(), "1.0.0");
    run(&mut ops, &env("ADD", "a"), &conf).unwrap();
    let host = host_veth_name("a", "eth0");
    assert!(ops.links.contains(&host));
    ops.calls.clear();
    assert_eq!(run(&mut ops, &env("DEL", "a"), &conf).unwrap(), None);
    // The host veth is set down, the pod's address removed; the pair itself is left to
    // the namespace's destruction (no synchronous delete).
    assert_eq!(
        ops.calls,
        vec![
            Call::IsolateLink(host.clone()),
            Call::UnconfigurePod(NETNS.into(), "eth0".into())
        ]
    );
    assert!(ops.down.contains(&host));
    assert!(ops.pod_addrs.is_empty());
    assert!(!tmp.path().join("minion/10.244.1.2").exists());
    // Second DEL, and DEL with no netns at all: success.
    assert_eq!(run(&mut ops, &env("DEL", "a"), &conf).unwrap(), None);
    let mut no_ns = env("DEL", "a");
    no_ns.netns = String::new();
    assert_eq!(
        run(&mut RecordingOps::default(), &no_ns, &conf).unwrap(),
        None
    );
}

#[test]
fn check_verifies_allocation_veth_and_address() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let conf = conf_json(tmp.path(), "1.0.0");
    assert_eq!(
        run(&mut ops, &env("CHECK", "a"), &conf).unwrap_err().code,
        code::CHECK_FAILED
    );
    run(&mut ops, &env("ADD", "a"), &conf).unwrap();
    assert_eq!(run(&mut ops, &env("CHECK", "a"), &conf).unwrap(), None);
    ops.pod_addrs.clear();
    let err = run(&mut ops, &env("CHECK", "a"), &conf).unwrap_err();
    assert_eq!(err.code, code::CHECK_FAILED);
    assert!(err.msg.contains("10.244.1.2/24"), "{}", err.msg);
}

#[test]
fn version_and_bad_configs() {
    let mut ops = fake();
    let out = run(&mut ops, &env("VERSION", ""), r#"{"cniVersion":"1.1.0"}"#)
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
    );
    assert_eq!(
        run(&mut ops, &env("ADD", "a"), "{").unwrap_err().code,
        code::DECODING_FAILURE
    );
    let no_subnet = r#"{"cniVersion":"1.0.0","name":"n","type":"minion-netd","ipam":{}}"#;
    assert_eq!(
        run(&mut ops, &env("ADD", "a"), no_subnet).unwrap_err().code,
        code::INVALID_NETWORK_CONFIG
    );
    assert!(ops.calls.is_empty());
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let conf = conf_json(tmp.path(), "1.1.0");
    run(&mut ops, &env("ADD", "a"), &conf).unwrap();
    run(&mut ops, &env("ADD", "b"), &conf).unwrap();
    let mut gc: serde_json::Value = serde_json::from_str(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = serde_json::json!([{"containerID": "b", "ifname": "eth0"}]);
    run(&mut ops, &env("GC", ""), &gc.to_string()).unwrap();
    assert!(!tmp.path().join("minion/10.244.1.2").exists());
    assert!(tmp.path().join("minion/10.244.1.3").exists());
}

#[test]
fn run_plugin_reports_env_errors_as_cni_json() {
    let out = run_plugin(
        |k| (k == "CNI_COMMAND").then(|| "ADD".to_string()),
        br#"{"cniVersion":"1.1.0","name":"n"}"#,
        std::path::Path::new("/nonexistent"),
    );
    assert_eq!(out.exit_code, 1);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["code"], 4);
    assert_eq!(v["cniVersion"], "1.1.0");
    let version = run_plugin(
        |k| (k == "CNI_COMMAND").then(|| "VERSION".to_string()),
        b"",
        std::path::Path::new("/x"),
    );
    assert_eq!(version.exit_code, 0);
    assert!(version.stdout.contains("supportedVersions"));
}

#[test]
fn check_compares_against_prev_result() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let conf = conf_json(tmp.path(), "1.0.0");
    let result = run(&mut ops, &env("ADD", "a"), &conf).unwrap().unwrap();
    let with_prev = |prev: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&conf).unwrap();
        v["prevResult"] = serde_json::from_str(prev).unwrap();
        v.to_string()
    };
    assert_eq!(
        run(&mut ops, &env("CHECK", "a"), &with_prev(&result)).unwrap(),
        None
    );
    let wrong = result.replace("10.244.1.2/24", "10.244.1.77/24");
    let err = run(&mut ops, &env("CHECK", "a"), &with_prev(&wrong)).unwrap_err();
    assert_eq!(err.code, code::CHECK_FAILED);
    assert!(err.msg.contains("10.244.1.77/24"), "{}", err.msg);
    let host = host_veth_name("a", "eth0");
    let other_veth = result.replace(&host, "veth00000000");
    let err = run(&mut ops, &env("CHECK", "a"), &with_prev(&other_veth)).unwrap_err();
    assert!(err.msg.contains("veth00000000"), "{}", err.msg);
}

#[test]
fn add_replaces_a_leftover_host_veth_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let host = host_veth_name("a", "eth0");
    ops.links.push(host.clone());
    run(&mut ops, &env("ADD", "a"), &conf_json(tmp.path(), "1.0.0")).unwrap();
    let creates = ops
        .calls
        .iter()
        .filter(|c| matches!(c, Call::CreateVeth(_)))
        .count();
    assert_eq!(creates, 2);
    assert!(ops.calls.contains(&Call::DeleteLink(host)));
}

#[test]
fn del_with_the_netns_gone_releases_and_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let conf = conf_json(tmp.path(), "1.0.0");
    run(&mut ops, &env("ADD", "a"), &conf).unwrap();
    ops.netns_present.clear();
    assert_eq!(run(&mut ops, &env("DEL", "a"), &conf).unwrap(), None);
    assert!(!tmp.path().join("minion/10.244.1.2").exists());
}

#[test]
fn add_after_del_in_the_same_netns_replaces_the_leftover() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = fake();
    let conf = conf_json(tmp.path(), "1.0.0");
    run(&mut ops, &env("ADD", "a"), &conf).unwrap();
    run(&mut ops, &env("DEL", "a"), &conf).unwrap();
    // Same sandbox again: its old host veth is in the way and is deleted.
    ops.calls.clear();
    run(&mut ops, &env("ADD", "a"), &conf).unwrap();
    let host_a = host_veth_name("a", "eth0");
    assert!(ops.calls.contains(&Call::DeleteLink(host_a.clone())));
    run(&mut ops, &env("DEL", "a"), &conf).unwrap();
    // Another sandbox in the same netns: the old pod-side eth0 is in the way.
    ops.calls.clear();
    run(&mut ops, &env("ADD", "b"), &conf).unwrap();
    assert!(ops
        .calls
        .contains(&Call::RemoveStalePodLink(NETNS.into(), "eth0".into())));
    assert!(
        !ops.links.contains(&host_a),
        "the pair went with its pod side"
    );
    assert!(ops.links.contains(&host_veth_name("b", "eth0")));
    assert_eq!(ops.pod_links.len(), 1);
}
