//! Deployment status and conditions, pure (upstream `calculateStatus`,
//! `syncRolloutStatus`, `checkPausedConditions` and the condition functions of
//! deployment_util): what `kubectl rollout status` and `kubectl get deploy` read.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition type: enough pods are available.
pub const AVAILABLE: &str = "Available";
/// Condition type: the rollout is moving (or done, or stuck).
pub const PROGRESSING: &str = "Progressing";
/// Condition type: a ReplicaSet failed to create or delete pods.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Progressing reason: the new ReplicaSet was just created.
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
/// Progressing reason: an existing ReplicaSet matches the template.
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
/// Progressing reason: pods moved since the last sync.
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
/// Progressing reason: the rollout is complete.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// Progressing reason: no progress within `progressDeadlineSeconds`.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// Progressing reason: the Deployment is paused.
pub const PAUSED: &str = "DeploymentPaused";
/// Progressing reason: the Deployment was resumed.
pub const RESUMED: &str = "DeploymentResumed";
/// Progressing reason: creating the new ReplicaSet failed.
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

fn rs_spec(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The condition of `type_`, if present.
pub fn get<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// A condition stamped `now` (both update and transition time).
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream `SetDeploymentCondition`: no change if status and reason are the same;
/// otherwise replaces the condition, keeping its transition time if the status did
/// not change.
pub fn set(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get(status, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove(status, &c.type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

/// Removes the condition of `type_`.
pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = status.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
    }
}

/// Upstream `calculateStatus`: counts from the ReplicaSets, the Available condition
/// (`availableReplicas >= replicas - maxUnavailable`), the other conditions and the
/// collision count carried over from `prev`.
pub fn calculate(
    d: &Deployment,
    prev: &DeploymentStatus,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    max_unavailable: i32,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let total_spec: i32 = all.iter().map(|rs| rs_spec(rs)).sum();
    let available: i32 = all.iter().map(|rs| rs_status(rs).2).sum();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| rs_status(rs).0).sum()),
        updated_replicas: Some(new.map(|rs| rs_status(rs).0).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(|rs| rs_status(rs).1).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_spec - available).max(0)),
        collision_count: prev.collision_count,
        conditions: prev.conditions.clone(),
        ..Default::default()
    };
    let c = if available >= replicas(d) - max_unavailable {
        new_condition(
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        )
    };
    set(&mut s, c);
    s
}

/// Upstream `DeploymentComplete`: every replica updated and available, no old ones,
/// and the latest generation observed.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

/// Upstream `DeploymentProgressing`: more pods updated, ready or available, or fewer
/// old pods, than the last recorded status.
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

fn deadline(d: &Deployment) -> Option<i64> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).map(i64::from)
}

/// Upstream `DeploymentTimedOut`: the Progressing condition was last updated more
/// than `progressDeadlineSeconds` ago (a complete rollout never times out).
pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    let Some(limit) = deadline(d) else { return false };
    let Some(c) = get(s, PROGRESSING) else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0.as_second() + limit < now.as_second()),
    }
}

fn subject(new_rs: Option<&str>, d: &Deployment) -> String {
    match new_rs {
        Some(n) => format!("ReplicaSet \"{n}\""),
        None => format!("Deployment \"{}\"", d.metadata.name.as_deref().unwrap_or_default()),
    }
}

/// Upstream `syncRolloutStatus`'s condition logic on top of [`calculate`]:
/// Progressing becomes NewReplicaSetAvailable when complete, ReplicaSetUpdated
/// (with a fresh update time) on progress, ProgressDeadlineExceeded when stuck;
/// ReplicaFailure mirrors the ReplicaSets'.
pub fn sync_rollout_conditions(
    d: &Deployment,
    s: &mut DeploymentStatus,
    new_rs: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    now: jiff::Timestamp,
) {
    let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
    let name = new_rs.and_then(|rs| rs.metadata.name.as_deref());
    if !paused && deadline(d).is_some() {
        let current = get(s, PROGRESSING).cloned();
        if complete(d, s) {
            let msg = format!("{} has successfully progressed.", subject(name, d));
            set(s, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, &msg, now));
        } else if progressing(d, s) {
            let msg = format!("{} is progressing.", subject(name, d));
            let mut c = new_condition(PROGRESSING, "True", RS_UPDATED, &msg, now);
            // Progress refreshes lastUpdateTime even when the reason is unchanged.
            if let Some(cur) = current.filter(|c| c.status == "True") {
                c.last_transition_time = cur.last_transition_time;
            }
            remove(s, PROGRESSING);
            s.conditions.get_or_insert_with(Vec::new).push(c);
        } else if timed_out(d, s, now) {
            let msg = format!("{} has timed out progressing.", subject(name, d));
            set(s, new_condition(PROGRESSING, "False", TIMED_OUT, &msg, now));
        }
    }
    let failure = all
        .iter()
        .filter_map(|rs| rs.status.as_ref()?.conditions.as_ref())
        .flatten()
        .find(|c| c.type_ == REPLICA_FAILURE)
        .cloned();
    match failure {
        Some(f) => set(
            s,
            DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: f.status,
                reason: f.reason,
                message: f.message,
                last_transition_time: f.last_transition_time.clone(),
                last_update_time: f.last_transition_time,
            },
        ),
        None => remove(s, REPLICA_FAILURE),
    }
}

/// Upstream `checkPausedConditions`: Progressing=Unknown with DeploymentPaused when
/// paused, DeploymentResumed when resumed; a timed-out condition is left alone.
/// Returns whether the status changed.
pub fn sync_paused_condition(d: &Deployment, s: &mut DeploymentStatus, now: jiff::Timestamp) -> bool {
    if deadline(d).is_none() {
        return false;
    }
    let cur = get(s, PROGRESSING).and_then(|c| c.reason.clone());
    if cur.as_deref() == Some(TIMED_OUT) {
        return false;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
    let paused_cond = cur.as_deref() == Some(PAUSED);
    if paused && !paused_cond {
        set(
            s,
            new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now),
        );
        true
    } else if !paused && paused_cond {
        set(
            s,
            new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now),
        );
        true
    } else {
        false
    }
}

/// Upstream `requeueStuckDeployment`: when a rollout is neither complete nor timed
/// out, how long until it would time out (so the deadline is noticed without events).
pub fn requeue_after(d: &Deployment, s: &DeploymentStatus, now: jiff::Timestamp) -> Option<Duration> {
    let limit = deadline(d)?;
    let c = get(s, PROGRESSING)?;
    if complete(d, s) || timed_out(d, s, now) {
        return None;
    }
    let updated = c.last_update_time.as_ref()?.0.as_second();
    let left = (updated + limit - now.as_second()).max(0) as u64;
    Some(Duration::from_secs(left + 1))
}

/// Whether two statuses differ in anything but condition timestamps being re-stamped
/// with equal values (a plain equality, kept as a function for clarity at call sites).
pub fn changed(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    old.cloned().unwrap_or_default() != *new
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn deploy(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 600, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    fn rs(name: &str, spec: i32, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available}}))
        .unwrap()
    }

    #[test]
    fn counts_and_availability() {
        let d = deploy(json!({}));
        let (new, old) = (rs("new", 2, 2, 1), rs("old", 2, 2, 2));
        let s = calculate(
            &d,
            &d.status.clone().unwrap_or_default(),
            &[&new, &old],
            Some(&new),
            1,
            at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(s.replicas, Some(4));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(3));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(get(&s, AVAILABLE).unwrap().status, "True");
        let s = calculate(
            &d,
            &d.status.clone().unwrap_or_default(),
            &[&new],
            Some(&new),
            1,
            at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(
            get(&s, AVAILABLE).unwrap().reason.as_deref(),
            Some("MinimumReplicasUnavailable")
        );
    }

    #[test]
    fn progressing_condition_life_cycle() {
        let t0 = at("2026-01-01T00:00:00Z");
        let d = deploy(json!({"replicas": 3, "updatedReplicas": 1, "availableReplicas": 3,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated",
                "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}));
        let (new, old) = (rs("web-2", 2, 2, 1), rs("web-1", 2, 2, 2));
        let t1 = at("2026-01-01T00:01:00Z");
        let mut s = calculate(
            &d,
            &d.status.clone().unwrap_or_default(),
            &[&new, &old],
            Some(&new),
            0,
            t1,
        );
        sync_rollout_conditions(&d, &mut s, Some(&new), &[&new, &old], t1);
        let c = get(&s, PROGRESSING).unwrap();
        assert_eq!(c.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(c.message.as_deref(), Some("ReplicaSet \"web-2\" is progressing."));
        assert_eq!(c.last_update_time.as_ref().unwrap().0, t1);
        assert_eq!(
            c.last_transition_time.as_ref().unwrap().0,
            t0,
            "still True: transition kept"
        );

        // No progress for longer than the deadline.
        let stuck = deploy(serde_json::to_value(&s).unwrap());
        let late = at("2026-01-01T00:12:00Z");
        let mut s2 = calculate(
            &stuck,
            &stuck.status.clone().unwrap_or_default(),
            &[&new, &old],
            Some(&new),
            0,
            late,
        );
        sync_rollout_conditions(&stuck, &mut s2, Some(&new), &[&new, &old], late);
        let c = get(&s2, PROGRESSING).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some(TIMED_OUT)));
        assert_eq!(requeue_after(&stuck, &s2, late), None);

        // Completion.
        let done = rs("web-2", 3, 3, 3);
        let mut s3 = calculate(
            &stuck,
            &stuck.status.clone().unwrap_or_default(),
            &[&done],
            Some(&done),
            0,
            late,
        );
        sync_rollout_conditions(&stuck, &mut s3, Some(&done), &[&done], late);
        assert!(complete(&stuck, &s3));
        let c = get(&s3, PROGRESSING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some(NEW_RS_AVAILABLE))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-2\" has successfully progressed.")
        );
    }

    #[test]
    fn stuck_rollouts_are_requeued_for_their_deadline() {
        let d = deploy(
            json!({"conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
            "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        );
        let s = d.status.clone().unwrap();
        assert_eq!(
            requeue_after(&d, &s, at("2026-01-01T00:09:00Z")),
            Some(Duration::from_secs(61))
        );
    }

    #[test]
    fn pause_and_resume_conditions() {
        let t = at("2026-01-01T00:00:00Z");
        let mut d = deploy(json!({}));
        d.spec.as_mut().unwrap().paused = Some(true);
        let mut s = DeploymentStatus::default();
        assert!(sync_paused_condition(&d, &mut s, t));
        assert_eq!(get(&s, PROGRESSING).unwrap().reason.as_deref(), Some(PAUSED));
        assert!(!sync_paused_condition(&d, &mut s, t));
        d.spec.as_mut().unwrap().paused = Some(false);
        assert!(sync_paused_condition(&d, &mut s, t));
        assert_eq!(get(&s, PROGRESSING).unwrap().reason.as_deref(), Some(RESUMED));
    }

    #[test]
    fn replica_failures_are_mirrored() {
        let t = at("2026-01-01T00:00:00Z");
        let d = deploy(json!({}));
        let mut failing = rs("web-1", 3, 0, 0);
        failing.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({
            "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota"}))
            .unwrap(),
        ]);
        let mut s = calculate(
            &d,
            &d.status.clone().unwrap_or_default(),
            &[&failing],
            Some(&failing),
            0,
            t,
        );
        sync_rollout_conditions(&d, &mut s, Some(&failing), &[&failing], t);
        assert_eq!(
            get(&s, REPLICA_FAILURE).unwrap().reason.as_deref(),
            Some("FailedCreate")
        );
    }
}
