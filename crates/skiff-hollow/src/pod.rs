//! The pod statuses a hollow node writes, as pure functions over the pod: the status
//! a kubelet reports once every container is running (phase `Running`, a pod IP,
//! conditions `PodReadyToStartContainers`, `Initialized`, `Ready`, `ContainersReady`,
//! `PodScheduled`, init containers completed, sidecars and app containers running and
//! ready), and the status of a pod whose containers all exited 0 (`Succeeded`).
//! Shapes follow the kubelet's `generateAPIPodStatus`.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

/// Whether the pod's containers run only to completion (`restartPolicy` `Never` or
/// `OnFailure`), so that a hollow node may finish it.
pub fn runs_to_completion(pod: &Pod) -> bool {
    matches!(
        pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()),
        Some("Never" | "OnFailure")
    )
}

/// Whether the pod uses the node's network namespace (its IP is the node's).
pub fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// The phase in the pod's status (`Pending` when unset).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether the pod has finished (`Succeeded` or `Failed`).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// The pod's IP as reported in its status, if any.
pub fn reported_ip(pod: &Pod) -> Option<std::net::Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

fn existing_transition(pod: &Pod, type_: &str, status: &str) -> Option<Value> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)?
        .last_transition_time
        .as_ref()
        .map(|t| json!(t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn condition(pod: &Pod, type_: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = existing_transition(pod, type_, status).unwrap_or_else(|| json!(now));
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason.filter(|_| !ok) {
        c["reason"] = json!(r);
    }
    c
}

fn container_id(pod_uid: &str, name: &str) -> String {
    format!("hollow://{pod_uid}-{name}")
}

fn running(c: &Container, pod_uid: &str, started_at: &str) -> Value {
    json!({
        "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
        "containerID": container_id(pod_uid, &c.name),
        "ready": true, "started": true, "restartCount": 0,
        "state": {"running": {"startedAt": started_at}}, "lastState": {},
    })
}

fn completed(c: &Container, pod_uid: &str, started_at: &str, finished_at: &str, ready: bool) -> Value {
    json!({
        "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
        "containerID": container_id(pod_uid, &c.name),
        "ready": ready, "started": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started_at,
                                 "finishedAt": finished_at, "containerID": container_id(pod_uid, &c.name)}},
        "lastState": {},
    })
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn addresses(status: &mut Value, host_ip: &str, pod_ip: &str) {
    status["hostIP"] = json!(host_ip);
    status["hostIPs"] = json!([{"ip": host_ip}]);
    status["podIP"] = json!(pod_ip);
    status["podIPs"] = json!([{"ip": pod_ip}]);
}

/// The status of the pod with its sandbox up at `pod_ip` on the node at `host_ip` and
/// every container started at `now`: init containers completed (sidecars running),
/// app containers running and ready, phase `Running`. For a merge patch of `status`.
pub fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str, now: &str) -> Value {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut s = json!({
        "phase": "Running",
        "conditions": [
            condition(pod, "PodReadyToStartContainers", true, None, now),
            condition(pod, "Initialized", true, None, now),
            condition(pod, "Ready", true, None, now),
            condition(pod, "ContainersReady", true, None, now),
            condition(pod, "PodScheduled", true, None, now),
        ],
        "startTime": pod.status.as_ref().and_then(|s| s.start_time.as_ref())
            .map(|t| json!(t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
            .unwrap_or_else(|| json!(now)),
        "containerStatuses": spec.containers.iter().map(|c| running(c, uid, now)).collect::<Vec<_>>(),
    });
    addresses(&mut s, host_ip, pod_ip);
    if let Some(init) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
        s["initContainerStatuses"] = init
            .iter()
            .map(|c| {
                if is_sidecar(c) {
                    running(c, uid, now)
                } else {
                    completed(c, uid, now, now, true)
                }
            })
            .collect();
    }
    s
}

/// The status of a run-to-completion pod whose containers all exited 0 at `now`
/// (started at `started_at`): phase `Succeeded`, `Ready`/`ContainersReady` False with
/// reason `PodCompleted`, the sandbox gone (`PodReadyToStartContainers` False), the
/// pod IP kept as the kubelet keeps it.
pub fn succeeded_status(pod: &Pod, host_ip: &str, pod_ip: &str, started_at: &str, now: &str) -> Value {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut s = json!({
        "phase": "Succeeded",
        "conditions": [
            condition(pod, "PodReadyToStartContainers", false, None, now),
            condition(pod, "Initialized", true, None, now),
            condition(pod, "Ready", false, Some("PodCompleted"), now),
            condition(pod, "ContainersReady", false, Some("PodCompleted"), now),
            condition(pod, "PodScheduled", true, None, now),
        ],
        "startTime": started_at,
        "containerStatuses": spec.containers.iter().map(|c| completed(c, uid, started_at, now, false)).collect::<Vec<_>>(),
    });
    addresses(&mut s, host_ip, pod_ip);
    if let Some(init) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
        s["initContainerStatuses"] = init
            .iter()
            .map(|c| completed(c, uid, started_at, if is_sidecar(c) { now } else { started_at }, false))
            .collect();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn running_status_is_ready_with_ip_and_keeps_scheduled_time() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "hollow-0",
                     "initContainers": [{"name": "init", "image": "busybox"},
                                        {"name": "side", "image": "envoy", "restartPolicy": "Always"}],
                     "containers": [{"name": "web", "image": "nginx"}, {"name": "log", "image": "busybox"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }));
        let s = running_status(&p, "100.64.0.1", "10.128.0.2", "2026-01-01T00:00:05Z");
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.128.0.2");
        assert_eq!(s["podIPs"][0]["ip"], "10.128.0.2");
        assert_eq!(s["hostIP"], "100.64.0.1");
        let conds = s["conditions"].as_array().unwrap();
        let types: Vec<&str> = conds.iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert!(conds.iter().all(|c| c["status"] == "True"));
        assert_eq!(conds[4]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(conds[2]["lastTransitionTime"], "2026-01-01T00:00:05Z");
        let cs = s["containerStatuses"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["name"], "web");
        assert_eq!(cs[0]["ready"], true);
        assert_eq!(cs[0]["state"]["running"]["startedAt"], "2026-01-01T00:00:05Z");
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(
            s["initContainerStatuses"][1]["state"]["running"]["startedAt"],
            "2026-01-01T00:00:05Z"
        );
        // The status deserializes as a PodStatus.
        let _: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(s).unwrap();
    }

    #[test]
    fn succeeded_status_reports_completion() {
        let p = pod(json!({
            "metadata": {"name": "j", "uid": "u2"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox"}]},
        }));
        assert!(runs_to_completion(&p));
        let s = succeeded_status(&p, "100.64.0.1", "10.128.0.3", "T0", "T1");
        assert_eq!(s["phase"], "Succeeded");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "PodCompleted");
        let t = &s["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 0);
        assert_eq!(t["reason"], "Completed");
        assert_eq!(t["startedAt"], "T0");
        assert_eq!(t["finishedAt"], "T1");
    }
}
