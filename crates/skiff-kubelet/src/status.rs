//! Pod status as the kubelet reports it (pkg/kubelet/kubelet_pods.go
//! `generateAPIPodStatus`): phase, conditions and container statuses computed from
//! what the runtime reports plus the kubelet's own waiting reasons and probe results.
//! Pure functions over plain data, so every rule is unit-testable.

use serde_json::{Value, json};

/// A container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeContainer {
    /// Runtime id.
    pub id: String,
    /// Restart attempt (0 for the first run).
    pub attempt: u32,
    /// Running, exited, created or unknown.
    pub state: RuntimeState,
    /// Start time, ns since the epoch (0 if never started).
    pub started_at: i64,
    /// Finish time, ns since the epoch (0 if not finished).
    pub finished_at: i64,
    /// Exit code (valid when exited).
    pub exit_code: i32,
    /// Runtime reason (e.g. `OOMKilled`, `Completed`, `Error`).
    pub reason: String,
    /// Runtime message.
    pub message: String,
    /// Image as requested.
    pub image: String,
    /// Resolved image reference (digest).
    pub image_ref: String,
}

/// Runtime container states (CRI `ContainerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// Unknown.
    Unknown,
}

/// Everything known about one container of the pod spec.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    /// Name from the spec.
    pub name: String,
    /// Image from the spec.
    pub image: String,
    /// Latest runtime container (highest attempt).
    pub current: Option<RuntimeContainer>,
    /// The one before it (for `lastState`).
    pub previous: Option<RuntimeContainer>,
    /// A waiting reason the kubelet sets (`ContainerCreating`, `ErrImagePull`,
    /// `ImagePullBackOff`, `CrashLoopBackOff`, `CreateContainerConfigError`, ...) and message.
    pub waiting: Option<(String, String)>,
    /// Readiness from probes (true when running without a readiness probe).
    pub ready: bool,
}

fn rfc3339(ns: i64) -> Value {
    if ns <= 0 {
        return Value::Null;
    }
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Value::Null,
    }
}

fn terminated(c: &RuntimeContainer) -> Value {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    let mut t = json!({"exitCode": c.exit_code, "reason": reason, "startedAt": rfc3339(c.started_at),
        "finishedAt": rfc3339(c.finished_at), "containerID": format!("containerd://{}", c.id)});
    if !c.message.is_empty() {
        t["message"] = json!(c.message);
    }
    t
}

/// The `ContainerStatus` of one container.
pub fn container_status(v: &ContainerView) -> Value {
    let mut s = json!({"name": v.name, "image": v.image, "imageID": "", "ready": false, "restartCount": 0, "started": false, "state": {}, "lastState": {}});
    if let Some(c) = &v.current {
        s["containerID"] = json!(format!("containerd://{}", c.id));
        s["imageID"] = json!(c.image_ref);
        s["restartCount"] = json!(c.attempt);
    }
    if let Some(p) = &v.previous {
        s["lastState"] = json!({"terminated": terminated(p)});
    }
    match (&v.waiting, &v.current) {
        (Some((reason, message)), cur) => {
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            s["state"] = json!({"waiting": w});
            if let Some(c) = cur.as_ref().filter(|c| c.state == RuntimeState::Exited) {
                s["lastState"] = json!({"terminated": terminated(c)});
            }
        }
        (None, Some(c)) if c.state == RuntimeState::Running => {
            s["state"] = json!({"running": {"startedAt": rfc3339(c.started_at)}});
            s["ready"] = json!(v.ready);
            s["started"] = json!(true);
        }
        (None, Some(c)) if c.state == RuntimeState::Exited => {
            s["state"] = json!({"terminated": terminated(c)});
        }
        (None, _) => {
            s["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
        }
    }
    s
}

/// Pod phase from the app containers (upstream `getPhase`).
pub fn phase(restart_policy: &str, init_done: bool, app: &[ContainerView]) -> &'static str {
    if !init_done {
        return "Pending";
    }
    let mut running = 0;
    let mut waiting_never_ran = 0;
    let mut succeeded = 0;
    let mut failed = 0;
    for c in app {
        match &c.current {
            Some(rc) if rc.state == RuntimeState::Running => running += 1,
            Some(rc) if rc.state == RuntimeState::Exited => {
                if rc.exit_code == 0 {
                    succeeded += 1
                } else {
                    failed += 1
                }
            }
            _ => waiting_never_ran += 1,
        }
    }
    if waiting_never_ran > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    match restart_policy {
        "Always" => "Running",
        "OnFailure" if failed > 0 => "Running",
        _ if failed > 0 => "Failed",
        _ if succeeded == app.len() => "Succeeded",
        _ => "Running",
    }
}

/// A pod condition, keeping `lastTransitionTime` from `prev` when the status is unchanged.
pub fn condition(prev: Option<&Value>, type_: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let transition = prev
        .and_then(|p| p.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .filter(|c| c["status"] == status)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or(json!(now));
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": transition});
    if let Some(r) = reason.filter(|_| !ok) {
        c["reason"] = json!(r);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(state: RuntimeState, exit: i32, attempt: u32) -> RuntimeContainer {
        RuntimeContainer {
            id: format!("id{attempt}"),
            attempt,
            state,
            started_at: 1_700_000_000_000_000_000,
            finished_at: if state == RuntimeState::Exited {
                1_700_000_001_000_000_000
            } else {
                0
            },
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            image: "busybox".into(),
            image_ref: "sha256:x".into(),
        }
    }

    fn view(cur: Option<RuntimeContainer>, waiting: Option<&str>) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "busybox".into(),
            current: cur,
            previous: None,
            waiting: waiting.map(|w| (w.into(), String::new())),
            ready: true,
        }
    }

    #[test]
    fn phases_follow_restart_policy() {
        assert_eq!(
            phase("Always", true, &[view(None, Some("ContainerCreating"))]),
            "Pending"
        );
        assert_eq!(
            phase("Always", true, &[view(Some(rc(RuntimeState::Running, 0, 0)), None)]),
            "Running"
        );
        assert_eq!(
            phase("Never", true, &[view(Some(rc(RuntimeState::Exited, 0, 0)), None)]),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", true, &[view(Some(rc(RuntimeState::Exited, 1, 0)), None)]),
            "Failed"
        );
        assert_eq!(
            phase(
                "OnFailure",
                true,
                &[view(Some(rc(RuntimeState::Exited, 1, 0)), Some("CrashLoopBackOff"))]
            ),
            "Running"
        );
        assert_eq!(
            phase(
                "Always",
                true,
                &[view(Some(rc(RuntimeState::Exited, 0, 3)), Some("CrashLoopBackOff"))]
            ),
            "Running"
        );
        assert_eq!(phase("Always", false, &[]), "Pending");
    }

    #[test]
    fn crash_loop_status_carries_last_termination() {
        let s = container_status(&view(Some(rc(RuntimeState::Exited, 2, 4)), Some("CrashLoopBackOff")));
        assert_eq!(s["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(s["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(s["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(s["restartCount"], 4);
        let s = container_status(&view(Some(rc(RuntimeState::Running, 0, 0)), None));
        assert_eq!(s["ready"], true);
        assert_eq!(s["state"]["running"]["startedAt"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn conditions_keep_transition_time() {
        let prev = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "T0"}]});
        assert_eq!(
            condition(Some(&prev), "Ready", true, None, "T1")["lastTransitionTime"],
            "T0"
        );
        assert_eq!(
            condition(Some(&prev), "Ready", false, Some("ContainersNotReady"), "T1")["lastTransitionTime"],
            "T1"
        );
    }
}
