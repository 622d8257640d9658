use super::*;
use serde_json::json;

fn pod(container: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "1234-abcd", "labels": {"app": "web"}},
        "spec": {"nodeName": "node1", "containers": [container]}
    }))
    .unwrap()
}

fn image() -> ImageConfig {
    ImageConfig {
        cmd: Some(vec!["serve".into(), "--port=80".into()]),
        entrypoint: Some(vec!["/bin/app".into()]),
        env: Some(vec!["PATH=/app/bin:/bin".into(), "MODE=image".into()]),
        working_dir: Some("/app".into()),
    }
}

fn spec_for(pod: &Pod, image: &ImageConfig) -> Result<Spec, BundleError> {
    let container = &pod.spec.as_ref().unwrap().containers[0];
    build_spec(&BundleParams {
        pod,
        container,
        image,
        image_rootfs: "/images/busybox/rootfs",
        pod_ip: "10.244.1.5",
        host_ip: "172.18.0.11",
        node_name: "node1",
        netns_path: Some(Path::new("/run/netns/minion-1234-abcd")),
        etc_dir: Path::new("/var/lib/minion/pods/1234-abcd/etc"),
        log_path: Path::new("/var/lib/minion/pods/1234-abcd/logs/app/0.log"),
        cgroup_parent: "minion",
    })
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn args_resolution_follows_kubernetes() {
    let img = image();
    assert_eq!(resolve_args(&[], &[], &img), s(&["/bin/app", "serve", "--port=80"]));
    assert_eq!(resolve_args(&s(&["sh", "-c"]), &[], &img), s(&["sh", "-c"]));
    assert_eq!(resolve_args(&s(&["sh"]), &s(&["-c", "x"]), &img), s(&["sh", "-c", "x"]));
    assert_eq!(resolve_args(&[], &s(&["--debug"]), &img), s(&["/bin/app", "--debug"]));
    let no_entry = ImageConfig { entrypoint: None, cmd: Some(s(&["sh"])), ..Default::default() };
    assert_eq!(resolve_args(&[], &[], &no_entry), s(&["sh"]));
    assert_eq!(resolve_args(&[], &s(&["echo", "hi"]), &no_entry), s(&["echo", "hi"]));
}

#[test]
fn env_merges_image_and_container_with_field_refs() {
    let p = pod(json!({"name": "app", "image": "busybox", "env": [
        {"name": "MODE", "value": "pod"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
    ]}));
    let spec = spec_for(&p, &image()).unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(env.contains(&"PATH=/app/bin:/bin".to_string()));
    assert!(env.contains(&"MODE=pod".to_string()));
    assert!(!env.contains(&"MODE=image".to_string()));
    assert!(env.contains(&"POD_NAME=web".to_string()));
    assert!(env.contains(&"POD_NS=shop".to_string()));
    assert!(env.contains(&"POD_IP=10.244.1.5".to_string()));
    assert!(env.contains(&"NODE=node1".to_string()));
    assert!(env.contains(&"APP=web".to_string()));
    assert!(env.contains(&"KUBERNETES_SERVICE_HOST=10.96.0.1".to_string()));
}

#[test]
fn spec_has_mounts_namespaces_cgroup_and_annotations() {
    let p = pod(json!({"name": "app", "image": "busybox", "command": ["sleep", "3600"]}));
    let spec = spec_for(&p, &image()).unwrap();
    let v = serde_json::to_value(&spec).unwrap();
    assert_eq!(v["process"]["args"], json!(["sleep", "3600"]));
    assert_eq!(v["process"]["cwd"], "/app");
    assert_eq!(v["hostname"], "web");
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["annotations"][ANNOTATION_ROOTFS], "/images/busybox/rootfs");
    assert_eq!(v["annotations"][ANNOTATION_LOG_PATH], "/var/lib/minion/pods/1234-abcd/logs/app/0.log");
    assert_eq!(v["linux"]["cgroupsPath"], "/minion/pod1234-abcd/app");
    let dests: Vec<&str> = v["mounts"].as_array().unwrap().iter().map(|m| m["destination"].as_str().unwrap()).collect();
    assert_eq!(dests, vec!["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
        "/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]);
    let hosts = &v["mounts"][7];
    assert_eq!(hosts["source"], "/var/lib/minion/pods/1234-abcd/etc/hosts");
    assert_eq!(hosts["type"], "bind");
    let ns: Vec<(String, Option<String>)> = v["linux"]["namespaces"].as_array().unwrap().iter()
        .map(|n| (n["type"].as_str().unwrap().to_string(), n["path"].as_str().map(String::from))).collect();
    assert!(ns.contains(&("pid".into(), None)));
    assert!(ns.contains(&("mount".into(), None)));
    assert!(ns.contains(&("uts".into(), None)));
    assert!(ns.contains(&("ipc".into(), None)));
    assert!(ns.contains(&("network".into(), Some("/run/netns/minion-1234-abcd".into()))));
    let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
    assert!(caps.contains(&json!("CAP_NET_RAW")));
    assert!(caps.contains(&json!("CAP_CHOWN")));
    assert!(!caps.contains(&json!("CAP_SYS_ADMIN")));
}

#[test]
fn working_dir_defaults_to_root() {
    let p = pod(json!({"name": "app", "image": "busybox", "command": ["true"]}));
    let spec = spec_for(&p, &ImageConfig::default()).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/"));
    let p = pod(json!({"name": "app", "image": "busybox", "command": ["true"], "workingDir": "/data"}));
    let spec = spec_for(&p, &image()).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/data"));
}

#[test]
fn resources_become_cgroup_limits() {
    let p = pod(json!({"name": "app", "image": "busybox", "command": ["true"], "resources": {
        "limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}}}));
    let v = serde_json::to_value(spec_for(&p, &image()).unwrap()).unwrap();
    assert_eq!(v["linux"]["resources"]["memory"]["limit"], 67108864);
    assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50000);
    assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100000);
    assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 256);
}

#[test]
fn bad_quantity_and_missing_command_are_errors() {
    let p = pod(json!({"name": "app", "image": "busybox", "command": ["true"],
        "resources": {"limits": {"memory": "lots"}}}));
    let err = spec_for(&p, &image()).unwrap_err().to_string();
    assert!(err.contains("limits.memory"), "{err}");
    let p = pod(json!({"name": "app", "image": "scratch"}));
    assert!(matches!(spec_for(&p, &ImageConfig::default()), Err(BundleError::NoCommand(_))));
}

#[test]
fn dollar_paren_expansion_like_kubernetes() {
    let lookup = |k: &str| (k == "NAME").then(|| "web".to_string());
    assert_eq!(expand("hi $(NAME)!", &lookup), "hi web!");
    assert_eq!(expand("$(MISSING) x", &lookup), "$(MISSING) x");
    assert_eq!(expand("$$(NAME) $HOME $", &lookup), "$(NAME) $HOME $");
    assert_eq!(expand("$(unterminated", &lookup), "$(unterminated");
    let p = pod(json!({"name": "app", "image": "busybox", "command": ["echo", "$(POD_NAME)", "$(A)"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "A", "value": "a-$(POD_NAME)"}]}));
    let spec = spec_for(&p, &image()).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().args().clone().unwrap(), s(&["echo", "web", "a-web"]));
}
