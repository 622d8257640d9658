//! Pod status computation (the kubelet's `generateAPIPodStatus`): runtime container
//! states + what the pod worker knows → `PodStatus` (phase, conditions,
//! containerStatuses). Pure, so every rule is unit-tested.

use k8s_openapi::api::core::v1::{
    ContainerState as KState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::cri::{ContainerState, RuntimeStatus};

/// What the pod worker knows about one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Image as written in the pod spec.
    pub image: String,
    /// Resolved image id/name from `image inspect` (empty until known).
    pub image_id: String,
    /// Runtime container id, once created.
    pub container_id: Option<String>,
    /// Latest runtime state, if the container exists.
    pub state: Option<ContainerState>,
    /// A waiting reason that overrides the runtime state (ErrImagePull, CrashLoopBackOff...).
    pub waiting: Option<(String, String)>,
    /// Restarts so far.
    pub restart_count: i32,
    /// The previous run's termination, once restarted.
    pub last_terminated: Option<ContainerStateTerminated>,
}

/// Inputs of a pod status computation.
#[derive(Debug, Clone)]
pub struct PodView<'a> {
    /// The pod as last seen from the API.
    pub pod: &'a Pod,
    /// Pod IP once the sandbox is up.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
    /// When the kubelet first acknowledged the pod.
    pub start_time: Timestamp,
    /// One per spec container, in spec order.
    pub containers: Vec<ContainerView>,
    /// One per init container, in spec order.
    pub init_containers: Vec<ContainerView>,
    /// Now (for condition transition times).
    pub now: Timestamp,
}

/// Parses an RFC 3339 timestamp from the runtime.
pub fn parse_time(s: Option<&str>) -> Option<Time> {
    s.and_then(|s| s.parse::<Timestamp>().ok()).map(Time)
}

/// The pod's restartPolicy (default Always).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

/// Whether an exited container with `exit_code` is restarted under `policy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The Kubernetes state of a runtime container.
pub fn terminated(state: &ContainerState, container_id: Option<&str>) -> ContainerStateTerminated {
    let exit_code = state.exit_code.unwrap_or(0);
    let default_reason = if exit_code == 0 { "Completed" } else { "Error" };
    ContainerStateTerminated {
        exit_code,
        reason: Some(state.reason.clone().unwrap_or_else(|| default_reason.to_string())),
        started_at: parse_time(state.started_at.as_deref()),
        finished_at: parse_time(state.finished_at.as_deref()),
        container_id: container_id.map(|id| format!("minion://{id}")),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: &str) -> KState {
    KState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: Some(message.to_string()).filter(|m| !m.is_empty()),
        }),
        ..Default::default()
    }
}

fn container_state(c: &ContainerView) -> KState {
    if let Some((reason, message)) = &c.waiting {
        return waiting(reason, message);
    }
    match &c.state {
        Some(s) if s.status == RuntimeStatus::Running => KState {
            running: Some(ContainerStateRunning { started_at: parse_time(s.started_at.as_deref()) }),
            ..Default::default()
        },
        Some(s) if s.status == RuntimeStatus::Stopped => {
            KState { terminated: Some(terminated(s, c.container_id.as_deref())), ..Default::default() }
        }
        _ => waiting("ContainerCreating", ""),
    }
}

/// One containerStatuses entry.
pub fn container_status(c: &ContainerView) -> ContainerStatus {
    let state = container_state(c);
    let running = state.running.is_some();
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.as_ref().filter(|_| c.state.is_some()).map(|id| format!("minion://{id}")),
        ready: running,
        started: Some(running),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: c.last_terminated.clone().map(|t| KState { terminated: Some(t), ..Default::default() }),
        ..Default::default()
    }
}

/// The pod phase from its container statuses, as the kubelet's getPhase.
pub fn phase(policy: &str, statuses: &[ContainerStatus]) -> &'static str {
    let (mut pending, mut running, mut stopped, mut succeeded, mut restartable) = (0, 0, 0, 0, 0);
    for s in statuses {
        let st = s.state.as_ref();
        if st.and_then(|s| s.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = st.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
            if should_restart(policy, t.exit_code) {
                restartable += 1;
            }
        } else if s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).is_some() {
            // waiting to restart (CrashLoopBackOff): counts as a restarting container
            restartable += 1;
            stopped += 1;
        } else {
            pending += 1;
        }
    }
    if pending > 0 || statuses.is_empty() {
        "Pending"
    } else if running > 0 || restartable > 0 {
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else {
        "Failed"
    }
}

fn condition(pod: &Pod, kind: &str, ok: bool, reason: Option<&str>, now: Timestamp) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind));
    let transition = match previous {
        Some(p) if p.status == status && p.last_transition_time.is_some() => p.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    PodCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.filter(|_| !ok).map(String::from),
        last_transition_time: transition,
        ..Default::default()
    }
}

/// The QoS class (Guaranteed / Burstable / BestEffort) of a pod.
pub fn qos_class(pod: &Pod) -> &'static str {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let (mut any, mut guaranteed) = (false, true);
    for c in containers {
        let res = c.resources.as_ref();
        let limits = res.and_then(|r| r.limits.clone()).unwrap_or_default();
        let requests = res.and_then(|r| r.requests.clone()).unwrap_or_default();
        any |= !limits.is_empty() || !requests.is_empty();
        for key in ["cpu", "memory"] {
            let limit = limits.get(key);
            if limit.is_none() || requests.get(key).is_some_and(|r| Some(r) != limit) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn init_status(c: &ContainerView) -> ContainerStatus {
    let mut s = container_status(c);
    let completed = s.state.as_ref().and_then(|st| st.terminated.as_ref()).is_some_and(|t| t.exit_code == 0);
    s.ready = completed;
    s
}

fn init_failed(policy: &str, s: &ContainerStatus) -> bool {
    policy == "Never" && s.state.as_ref().and_then(|st| st.terminated.as_ref()).is_some_and(|t| t.exit_code != 0)
}

fn pod_initializing(c: &ContainerView) -> ContainerView {
    let mut c = c.clone();
    if c.state.is_none() && c.waiting.is_none() {
        c.waiting = Some(("PodInitializing".into(), String::new()));
    }
    c
}

/// Computes the whole PodStatus.
pub fn compute(view: &PodView) -> PodStatus {
    let policy = restart_policy(view.pod);
    let init_statuses: Vec<ContainerStatus> = view.init_containers.iter().map(init_status).collect();
    let pending_inits: Vec<String> = init_statuses.iter().filter(|s| !s.ready).map(|s| s.name.clone()).collect();
    let initialized = pending_inits.is_empty();
    let statuses: Vec<ContainerStatus> = if initialized {
        view.containers.iter().map(container_status).collect()
    } else {
        view.containers.iter().map(|c| container_status(&pod_initializing(c))).collect()
    };
    let phase = if init_statuses.iter().any(|s| init_failed(policy, s)) {
        "Failed"
    } else if !initialized {
        "Pending"
    } else {
        phase(policy, &statuses)
    };
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let not_ready = if terminal { "PodCompleted" } else { "ContainersNotReady" };
    let conditions = vec![
        condition(view.pod, "PodReadyToStartContainers", view.pod_ip.is_some(), None, view.now),
        condition(view.pod, "Initialized", initialized, Some("ContainersNotInitialized"), view.now),
        condition(view.pod, "Ready", all_ready, Some(not_ready), view.now),
        condition(view.pod, "ContainersReady", all_ready, Some(not_ready), view.now),
        condition(view.pod, "PodScheduled", true, None, view.now),
    ];
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: view.host_ip.clone() }]),
        pod_ip: view.pod_ip.clone(),
        pod_ips: view.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(view.start_time)),
        container_statuses: Some(statuses),
        init_container_statuses: Some(init_statuses).filter(|s| !s.is_empty()),
        qos_class: Some(qos_class(view.pod).to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
