use super::*;

fn res() -> Resources {
    Resources {
        memory_limit: Some(16 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        pids_limit: Some(64),
        ..Default::default()
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn v1_fixture_create_and_apply() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    for c in ["memory", "cpu", "pids", "cpuset"] {
        fs::create_dir(root.join(c)).unwrap();
    }
    fs::write(root.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
    fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
    let cg = Cgroup::new(root, Mode::V1, "/minion/pod1/c1").unwrap();
    let leaves = cg.create(&res()).unwrap();
    assert_eq!(leaves.len(), 4);
    assert!(root.join("memory/minion/pod1/c1").is_dir());
    assert_eq!(read(&root.join("cpuset/minion/pod1/c1/cpuset.cpus")), "0-1");
    assert_eq!(read(&root.join("cpuset/minion/cpuset.mems")), "0");
    cg.apply(&res()).unwrap();
    assert_eq!(read(&root.join("memory/minion/pod1/c1/memory.limit_in_bytes")), "16777216");
    assert_eq!(read(&root.join("cpu/minion/pod1/c1/cpu.shares")), "512");
    assert_eq!(read(&root.join("cpu/minion/pod1/c1/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&root.join("cpu/minion/pod1/c1/cpu.cfs_period_us")), "100000");
    assert_eq!(read(&root.join("pids/minion/pod1/c1/pids.max")), "64");
    for leaf in &leaves {
        fs::write(leaf.join("tasks"), "").unwrap();
    }
    enter_self(&leaves).unwrap();
    let mut r = res();
    r.devices = vec![(true, "c 1:11 rw".into())];
    fs::create_dir_all(root.join("devices/minion/pod1/c1")).unwrap();
    cg.apply(&r).unwrap();
    // fs::write truncates: the last write is the last default rule; on cgroupfs
    // every write appends a rule.
    assert_eq!(read(&root.join("devices/minion/pod1/c1/devices.allow")), "c 10:200 rwm");
    assert_eq!(read(&root.join("devices/minion/pod1/c1/devices.deny")), "a");
    // v1: the thread moves itself through `tasks`, never `cgroup.procs`.
    assert_eq!(read(&root.join("pids/minion/pod1/c1/tasks")), "0");
    assert!(!root.join("pids/minion/pod1/c1/cgroup.procs").exists());
    fs::write(root.join("memory/minion/pod1/c1/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
        .unwrap();
    assert_eq!(cg.oom_kill_count(), 2);
}

#[test]
fn v1_missing_controller_is_error() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("cpu")).unwrap();
    let cg = Cgroup::new(d.path(), Mode::V1, "/x/y").unwrap();
    let e = cg.create(&res()).unwrap_err().to_string();
    assert!(e.contains("controller memory needed for memory limit"), "{e}");
}

#[test]
fn v2_fixture_create_and_apply() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids\n").unwrap();
    let cg = Cgroup::new(root, Mode::V2, "minion/pod1/c1").unwrap();
    let leaves = cg.create(&res()).unwrap();
    assert_eq!(leaves, vec![root.join("minion/pod1/c1")]);
    assert_eq!(read(&root.join("cgroup.subtree_control")), "+cpuset +cpu +io +memory +pids");
    assert!(root.join("minion/pod1/cgroup.subtree_control").exists());
    let leaf = root.join("minion/pod1/c1");
    // The files only: the device program needs a real cgroup (tested in the VM).
    v2::apply_limits(&leaf, &res()).unwrap();
    assert_eq!(read(&leaf.join("memory.max")), "16777216");
    assert_eq!(read(&leaf.join("cpu.max")), "50000 100000");
    assert_eq!(read(&leaf.join("cpu.weight")), v2::shares_to_weight(512).to_string());
    assert_eq!(read(&leaf.join("pids.max")), "64");
    fs::write(leaf.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
    assert_eq!(cg.oom_kill_count(), 1);
    // v2 has no `tasks`: the process moves through `cgroup.procs`.
    enter_self(&leaves).unwrap();
    assert_eq!(read(&leaf.join("cgroup.procs")), "0");
}

#[test]
fn v2_missing_controller_is_error() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("cgroup.controllers"), "cpu\n").unwrap();
    let cg = Cgroup::new(d.path(), Mode::V2, "/a/b").unwrap();
    assert!(cg.create(&res()).unwrap_err().to_string().contains("controller memory"));
}

#[test]
fn shares_conversion_and_paths() {
    assert_eq!(v2::shares_to_weight(2), 1);
    assert_eq!(v2::shares_to_weight(262_144), 10000);
    assert_eq!(v2::shares_to_weight(1024), 39);
    assert!(Cgroup::new(Path::new("/x"), Mode::V1, "/").is_err());
    assert!(Cgroup::new(Path::new("/x"), Mode::V1, "/a/../b").is_err());
    assert!(Cgroup::new(Path::new("/x"), Mode::V1, "system.slice:minion:c").is_err());
    assert_eq!(Cgroup::new(Path::new("/x"), Mode::V1, "/a/b/c").unwrap().levels(), 3);
}

#[test]
fn remove_keeps_first_element() {
    let d = tempfile::tempdir().unwrap();
    let leaf = d.path().join("mem/minion/pod/c");
    fs::create_dir_all(&leaf).unwrap();
    Cgroup::remove_paths(std::slice::from_ref(&leaf), 3).unwrap();
    assert!(!d.path().join("mem/minion/pod").exists());
    assert!(d.path().join("mem/minion").exists());
}

#[test]
fn v2_device_rules_follow_v1_order() {
    let mut r = res();
    r.devices = vec![(true, "c 1:11 rw".into()), (false, "a".into())];
    let rules = v2::device_rules(&r).unwrap();
    assert_eq!(rules.len(), 3 + v1::DEFAULT_DEVICE_RULES.len());
    assert!(!rules[0].allow && rules[0].typ.is_none());
    assert_eq!((rules[1].allow, rules[1].major, rules[1].minor), (true, Some(1), Some(11)));
    assert!(rules.last().unwrap().allow);
    let spec = oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
        .allow(true).typ(oci_spec::runtime::LinuxDeviceType::C).major(-1).minor(5).access("rw").build().unwrap();
    assert_eq!(device_rule(&spec), (true, "c *:5 rw".to_string()));
}
