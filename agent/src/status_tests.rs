use super::*;
use serde_json::json;

fn pod(policy: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
        "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox"}]}
    }))
    .unwrap()
}

fn state(status: RuntimeStatus, exit: Option<i32>) -> ContainerState {
    ContainerState {
        id: "u1-a".into(),
        status,
        pid: 42,
        bundle: None,
        annotations: None,
        exit_code: exit,
        reason: None,
        started_at: Some("2026-01-01T00:00:01Z".into()),
        finished_at: exit.map(|_| "2026-01-01T00:00:05Z".into()),
    }
}

fn view(state: Option<ContainerState>) -> ContainerView {
    ContainerView {
        name: "a".into(),
        image: "busybox".into(),
        image_id: "docker.io/library/busybox:latest".into(),
        container_id: state.as_ref().map(|_| "u1-a".into()),
        state,
        ..Default::default()
    }
}

fn compute_for(pod: &Pod, containers: Vec<ContainerView>) -> PodStatus {
    compute(&PodView {
        pod,
        pod_ip: Some("10.244.1.5".into()),
        host_ip: "172.18.0.11".into(),
        start_time: "2026-01-01T00:00:00Z".parse().unwrap(),
        containers,
        init_containers: Vec::new(),
        now: "2026-01-01T00:00:10Z".parse().unwrap(),
    })
}

fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a PodCondition {
    s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == kind).unwrap()
}

#[test]
fn creating_container_is_pending() {
    let p = pod("Always");
    let s = compute_for(&p, vec![view(None)]);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(cs.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("ContainerCreating"));
    assert!(!cs.ready);
    assert_eq!(cs.container_id, None);
    assert_eq!(cond(&s, "Ready").status, "False");
    assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("ContainersNotReady"));
}

#[test]
fn running_container_is_running_and_ready() {
    let p = pod("Always");
    let s = compute_for(&p, vec![view(Some(state(RuntimeStatus::Running, None)))]);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.5"));
    assert_eq!(s.host_ips.as_ref().unwrap()[0].ip, "172.18.0.11");
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready);
    assert_eq!(cs.started, Some(true));
    assert_eq!(cs.container_id.as_deref(), Some("minion://u1-a"));
    assert!(cs.state.as_ref().unwrap().running.as_ref().unwrap().started_at.is_some());
    assert_eq!(cond(&s, "Ready").status, "True");
    assert_eq!(cond(&s, "ContainersReady").status, "True");
    assert_eq!(cond(&s, "PodScheduled").status, "True");
    assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
}

#[test]
fn image_pull_error_stays_pending() {
    let p = pod("Always");
    let mut v = view(None);
    v.waiting = Some(("ErrImagePull".into(), "image \"nope\" not found in store /x".into()));
    let s = compute_for(&p, vec![v]);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let w = s.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
    assert!(w.message.unwrap().contains("not found"));
}

#[test]
fn exited_containers_follow_restart_policy() {
    let never = pod("Never");
    let ok = compute_for(&never, vec![view(Some(state(RuntimeStatus::Stopped, Some(0))))]);
    assert_eq!(ok.phase.as_deref(), Some("Succeeded"));
    assert_eq!(cond(&ok, "Ready").reason.as_deref(), Some("PodCompleted"));
    let t = ok.container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!(t.reason.as_deref(), Some("Completed"));
    assert!(t.finished_at.is_some());
    let bad = compute_for(&never, vec![view(Some(state(RuntimeStatus::Stopped, Some(2))))]);
    assert_eq!(bad.phase.as_deref(), Some("Failed"));
    let on_failure = pod("OnFailure");
    let s = compute_for(&on_failure, vec![view(Some(state(RuntimeStatus::Stopped, Some(1))))]);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let s = compute_for(&on_failure, vec![view(Some(state(RuntimeStatus::Stopped, Some(0))))]);
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
}

#[test]
fn crash_loop_shows_waiting_last_state_and_restarts() {
    let p = pod("Always");
    let mut v = view(Some(state(RuntimeStatus::Stopped, Some(1))));
    v.waiting = Some(("CrashLoopBackOff".into(), "back-off 10s restarting failed container".into()));
    v.restart_count = 3;
    v.last_terminated = Some(terminated(&state(RuntimeStatus::Stopped, Some(1)), Some("u1-a")));
    let s = compute_for(&p, vec![v]);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(cs.restart_count, 3);
    assert_eq!(cs.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 1);
    assert!(!cs.ready);
}

#[test]
fn oom_reason_is_kept() {
    let mut st = state(RuntimeStatus::Stopped, Some(137));
    st.reason = Some("OOMKilled".into());
    assert_eq!(terminated(&st, None).reason.as_deref(), Some("OOMKilled"));
}

#[test]
fn transition_time_is_kept_when_status_unchanged() {
    let mut p = pod("Always");
    let first = compute_for(&p, vec![view(Some(state(RuntimeStatus::Running, None)))]);
    p.status = Some(first.clone());
    let later = compute(&PodView {
        pod: &p,
        pod_ip: Some("10.244.1.5".into()),
        host_ip: "172.18.0.11".into(),
        start_time: "2026-01-01T00:00:00Z".parse().unwrap(),
        containers: vec![view(Some(state(RuntimeStatus::Running, None)))],
        init_containers: Vec::new(),
        now: "2026-01-01T00:05:00Z".parse().unwrap(),
    });
    assert_eq!(cond(&later, "Ready").last_transition_time, cond(&first, "Ready").last_transition_time);
    assert_eq!(later, first);
}

#[test]
fn qos_classes() {
    let g: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "a",
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}})).unwrap();
    assert_eq!(qos_class(&g), "Guaranteed");
    let b: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "a",
        "resources": {"requests": {"memory": "1Gi"}}}]}})).unwrap();
    assert_eq!(qos_class(&b), "Burstable");
}

fn compute_with_init(pod: &Pod, init: ContainerView, main: ContainerView) -> PodStatus {
    compute(&PodView {
        pod,
        pod_ip: Some("10.244.1.5".into()),
        host_ip: "172.18.0.11".into(),
        start_time: "2026-01-01T00:00:00Z".parse().unwrap(),
        containers: vec![main],
        init_containers: vec![init],
        now: "2026-01-01T00:00:10Z".parse().unwrap(),
    })
}

#[test]
fn init_containers_gate_initialized_and_phase() {
    let p = pod("Always");
    let mut init = view(Some(state(RuntimeStatus::Running, None)));
    init.name = "setup".into();
    let s = compute_with_init(&p, init.clone(), view(None));
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(cond(&s, "Initialized").status, "False");
    assert_eq!(cond(&s, "Initialized").reason.as_deref(), Some("ContainersNotInitialized"));
    let main = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(main.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("PodInitializing"));
    init.state = Some(state(RuntimeStatus::Stopped, Some(0)));
    let s = compute_with_init(&p, init.clone(), view(Some(state(RuntimeStatus::Running, None))));
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Initialized").status, "True");
    assert!(s.init_container_statuses.as_ref().unwrap()[0].ready);
    init.state = Some(state(RuntimeStatus::Stopped, Some(1)));
    let s = compute_with_init(&pod("Never"), init, view(None));
    assert_eq!(s.phase.as_deref(), Some("Failed"));
}
