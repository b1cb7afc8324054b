//! The pod status the agent reports, computed from what the runtime says, as upstream's kubelet
//! shapes it: phase, conditions (PodReadyToStartContainers, Initialized, ContainersReady,
//! Ready; other owners' conditions such as PodScheduled are kept), container statuses with
//! state, lastState, restartCount, ready and started, the pod and host IPs, startTime and
//! qosClass. Only the agent's own conditions are in it; it is posted as a strategic merge
//! patch, which merges conditions by type, so other owners' conditions (PodScheduled,
//! DisruptionTarget) are never overwritten with a stale copy.
//!
//! Pure: the worker gathers the inputs, this module only shapes them.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::spec::ANNOTATION_RESTART_COUNT;
use crate::cri::proto;

/// Why a container is not running, when the runtime cannot say (image missing, back-off...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// Why the agent itself ended a pod (eviction, `activeDeadlineSeconds`): the pod's reason and
/// message, and whether a `DisruptionTarget` condition says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Killed {
    pub reason: String,
    pub message: String,
    pub disruption: bool,
}

/// Everything the status is computed from.
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    pub sandbox_ready: bool,
    pub pod_ips: &'a [String],
    pub host_ips: &'a [String],
    /// Per container name, its instances' statuses, newest first.
    pub instances: &'a HashMap<String, Vec<proto::ContainerStatus>>,
    pub waiting: &'a HashMap<String, Waiting>,
    /// Per container name, whether its readiness probe passes (absent: no probe).
    pub ready: &'a HashMap<String, bool>,
    /// Per container name, whether its startup probe passed (absent: no probe).
    pub started: &'a HashMap<String, bool>,
    pub initialized: bool,
    /// `Succeeded` or `Failed` once the pod is finished.
    pub terminal: Option<&'static str>,
    pub start_time: Time,
    /// Set when the agent itself ended the pod.
    pub killed: Option<&'a Killed>,
}

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0).then(|| Time(Utc.timestamp_nanos(nanos)))
}

fn now() -> Time {
    Time(Utc::now())
}

/// `containerd://<id>`.
pub fn container_id(id: &str) -> String {
    format!("containerd://{id}")
}

/// The reason a terminated container shows: the runtime's (OOMKilled...) or Completed/Error.
pub fn terminated_reason(s: &proto::ContainerStatus) -> String {
    if !s.reason.is_empty() && s.reason != "Completed" && s.reason != "Error" {
        return s.reason.clone();
    }
    if s.exit_code == 0 { "Completed".into() } else { "Error".into() }
}

fn terminated(s: &proto::ContainerStatus) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: s.exit_code,
            reason: Some(terminated_reason(s)),
            message: (!s.message.is_empty()).then(|| s.message.clone()),
            started_at: time(s.started_at),
            finished_at: time(s.finished_at),
            container_id: Some(container_id(&s.id)),
            signal: None,
        }),
        ..Default::default()
    }
}

fn state_of(s: &proto::ContainerStatus) -> ContainerState {
    match proto::ContainerState::try_from(s.state) {
        Ok(proto::ContainerState::ContainerRunning) => ContainerState {
            running: Some(ContainerStateRunning { started_at: time(s.started_at) }),
            ..Default::default()
        },
        Ok(proto::ContainerState::ContainerExited) => terminated(s),
        _ => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some("ContainerCreating".into()), message: None }),
            ..Default::default()
        },
    }
}

/// The restart count recorded on an instance.
pub fn restart_count(s: &proto::ContainerStatus) -> i32 {
    s.annotations.get(ANNOTATION_RESTART_COUNT).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn container_status(c: &Container, inp: &Inputs<'_>, init: bool) -> ContainerStatus {
    let list = inp.instances.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
    let newest = list.first();
    let waiting = inp.waiting.get(&c.name);
    let running = newest.is_some_and(|s| s.state == proto::ContainerState::ContainerRunning as i32);
    let (state, last_state) = match (newest, waiting) {
        // A waiting reason (back-off, image pull) means a new instance is due: the newest one is
        // history.
        (Some(n), Some(w)) if !running => (waiting_state(w), Some(terminated_or_state(n))),
        (None, Some(w)) => (waiting_state(w), None),
        (Some(n), _) => (state_of(n), list.get(1).map(terminated_or_state)),
        (None, None) => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(if init { "PodInitializing" } else { "ContainerCreating" }.into()),
                    message: None,
                }),
                ..Default::default()
            },
            None,
        ),
    };
    let restart_count = newest.map(restart_count).unwrap_or(0);
    let ready = running && inp.ready.get(&c.name).copied().unwrap_or(true);
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: newest.map(|s| s.image_ref.clone()).unwrap_or_default(),
        container_id: newest.map(|s| container_id(&s.id)),
        ready,
        started: Some(running && inp.started.get(&c.name).copied().unwrap_or(true)),
        restart_count,
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

fn terminated_or_state(s: &proto::ContainerStatus) -> ContainerState {
    if s.state == proto::ContainerState::ContainerExited as i32 { terminated(s) } else { state_of(s) }
}

fn waiting_state(w: &Waiting) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(w.reason.clone()),
            message: (!w.message.is_empty()).then(|| w.message.clone()),
        }),
        ..Default::default()
    }
}

fn condition(
    previous: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let transition = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(transition),
        last_probe_time: None,
    }
}

/// The status the agent posts.
pub fn compute(inp: &Inputs<'_>) -> PodStatus {
    let pod = inp.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let previous = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let init_statuses: Vec<ContainerStatus> =
        spec.init_containers.iter().flatten().map(|c| container_status(c, inp, true)).collect();
    let statuses: Vec<ContainerStatus> = spec.containers.iter().map(|c| container_status(c, inp, false)).collect();
    let phase = match inp.terminal {
        Some(p) => p,
        None if inp.initialized
            && statuses.iter().any(|s| {
                s.state.as_ref().is_some_and(|st| st.running.is_some() || st.terminated.is_some())
                    || s.restart_count > 0
            }) =>
        {
            "Running"
        }
        None => "Pending",
    };
    let not_ready: Vec<&str> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let containers_ready = not_ready.is_empty() && phase == "Running";
    let unready_message =
        (!not_ready.is_empty()).then(|| format!("containers with unready status: [{}]", not_ready.join(" ")));
    let uninit: Vec<&str> = init_statuses
        .iter()
        .filter(|s| s.state.as_ref().and_then(|st| st.terminated.as_ref()).is_none_or(|t| t.exit_code != 0))
        .map(|s| s.name.as_str())
        .collect();
    let ready_reason = if phase == "Succeeded" || phase == "Failed" { "PodCompleted" } else { "ContainersNotReady" };
    let conditions = vec![
        condition(&previous, "PodReadyToStartContainers", inp.sandbox_ready, None, None),
        if inp.initialized || spec.init_containers.as_ref().is_none_or(|l| l.is_empty()) {
            condition(&previous, "Initialized", true, None, None)
        } else {
            condition(
                &previous,
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!("containers with incomplete status: [{}]", uninit.join(" "))),
            )
        },
        if containers_ready {
            condition(&previous, "ContainersReady", true, None, None)
        } else {
            condition(&previous, "ContainersReady", false, Some(ready_reason), unready_message.clone())
        },
        if containers_ready {
            condition(&previous, "Ready", true, None, None)
        } else {
            condition(&previous, "Ready", false, Some(ready_reason), unready_message)
        },
    ];
    let mut conditions = conditions;
    if let Some(k) = inp.killed.filter(|k| k.disruption) {
        conditions.push(condition(
            &previous,
            "DisruptionTarget",
            true,
            Some("TerminationByKubelet"),
            Some(k.message.clone()),
        ));
    }
    let host_ips = inp.host_ips.to_vec();
    let old = pod.status.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let pod_ips: Vec<String> = if host_network { host_ips.clone() } else { inp.pod_ips.to_vec() };
    let pod_ips =
        if pod_ips.is_empty() { old.pod_ips.iter().flatten().map(|p| p.ip.clone()).collect() } else { pod_ips };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: host_ips.first().cloned(),
        host_ips: Some(host_ips.into_iter().map(|ip| HostIP { ip }).collect()),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty()).then(|| pod_ips.into_iter().map(|ip| PodIP { ip }).collect()),
        start_time: Some(old.start_time.unwrap_or_else(|| inp.start_time.clone())),
        qos_class: Some(super::spec::qos_class(pod).into()),
        nominated_node_name: old.nominated_node_name,
        reason: inp.killed.map(|k| k.reason.clone()),
        message: inp.killed.map(|k| k.message.clone()),
        ..Default::default()
    }
}

/// When an instance finished, for back-off.
pub fn finished_at(s: &proto::ContainerStatus) -> Option<DateTime<Utc>> {
    (s.finished_at > 0).then(|| Utc.timestamp_nanos(s.finished_at))
}
