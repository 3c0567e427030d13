//! The Job controller's pure logic: pod classification, completion indexes,
//! backoff, the pod template, accounting of finished pods and the sync decision.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::{
    BACKOFF_BASE, BACKOFF_MAX, COMPLETION_INDEX, COMPLETION_INDEX_ENV, CONTROLLER_UID, JOB_NAME,
    JOB_TRACKING_FINALIZER, LEGACY_CONTROLLER_UID, LEGACY_JOB_NAME,
};
use crate::common::owner_ref;
use crate::replicaset::{BURST_REPLICAS, rank_for_deletion};

pub(super) fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

pub(super) fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

pub(super) fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == JOB_TRACKING_FINALIZER))
}

/// A pod that finished successfully.
pub fn is_succeeded(p: &Pod) -> bool {
    phase(p) == "Succeeded"
}

/// A pod counted as failed: phase `Failed`, or being deleted before it succeeded
/// (upstream's default `podReplacementPolicy: TerminatingOrFailed`).
pub fn is_failed(p: &Pod) -> bool {
    phase(p) == "Failed" || (p.metadata.deletion_timestamp.is_some() && phase(p) != "Succeeded")
}

/// A pod still running or about to: neither finished nor being deleted.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
}

/// The completion index of an Indexed Job pod (annotation, else label).
pub fn pod_index(p: &Pod) -> Option<i32> {
    let from = |m: &Option<BTreeMap<String, String>>| m.as_ref()?.get(COMPLETION_INDEX)?.parse::<i32>().ok();
    from(&p.metadata.annotations)
        .or_else(|| from(&p.metadata.labels))
        .filter(|i| *i >= 0)
}

/// Parses `status.completedIndexes` (`"1,3-5,7"`), keeping indexes below `completions`.
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            out.extend((a.max(0)..=b.min(completions - 1)).filter(|i| *i < completions));
        }
    }
    out
}

/// Formats indexes as upstream's `completedIndexes`: ascending, runs of three or
/// more consecutive indexes as `a-b`, pairs and singles comma-separated.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        match end - start {
            0 => parts.push(start.to_string()),
            1 => parts.push(format!("{start},{end}")),
            _ => parts.push(format!("{start}-{end}")),
        }
    }
    parts.join(",")
}

/// Delay before replacing pods after `consecutive` failures: 10 s doubled per
/// further failure, at most 6 minutes; none without failures.
pub fn backoff_delay(consecutive: u32) -> Duration {
    if consecutive == 0 {
        return Duration::ZERO;
    }
    let shift = (consecutive - 1).min(16);
    (BACKOFF_BASE * (1u32 << shift)).min(BACKOFF_MAX)
}

pub(super) fn is_indexed(spec: &JobSpec) -> bool {
    spec.completion_mode.as_deref() == Some("Indexed")
}

/// A new pod from the Job's template (upstream `GetPodFromTemplate` plus the Job
/// specifics): `generateName: <job>-` (`<job>-<index>-` when Indexed), the Job
/// labels (unless `manualSelector`), the tracking finalizer, a controller reference
/// and, for Indexed Jobs, the completion index as annotation, label, hostname and
/// `JOB_COMPLETION_INDEX` env (from the annotation through the downward API).
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let spec = job.spec.clone().unwrap_or_default();
    let tm = spec.template.metadata.unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    if spec.manual_selector != Some(true) {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        for (k, v) in [
            (CONTROLLER_UID, &uid),
            (LEGACY_CONTROLLER_UID, &uid),
            (JOB_NAME, &name),
            (LEGACY_JOB_NAME, &name),
        ] {
            labels.entry(k.to_string()).or_insert_with(|| v.clone());
        }
    }
    let mut finalizers = tm.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == JOB_TRACKING_FINALIZER) {
        finalizers.push(JOB_TRACKING_FINALIZER.to_string());
    }
    let mut pod_spec = spec.template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.to_string(), i.to_string());
            annotations.insert(COMPLETION_INDEX.to_string(), i.to_string());
            if pod_spec.hostname.is_none() {
                pod_spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.to_string(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let containers = pod_spec
                .containers
                .iter_mut()
                .chain(pod_spec.init_containers.iter_mut().flatten());
            for c in containers {
                let list = c.env.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
                    list.push(env.clone());
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![owner_ref("batch/v1", "Job", &job.metadata)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// Finished pods still carrying the tracking finalizer that are not yet in
/// `uncountedTerminatedPods` (upstream `trackJobStatusAndRemoveFinalizers`, first
/// half): their uids go to the succeeded or failed list, and succeeded pods' valid
/// indexes to the completed indexes (Indexed Jobs).
#[derive(Debug, Default, PartialEq)]
pub struct NewlyFinished {
    /// Uids of pods that succeeded.
    pub succeeded: Vec<String>,
    /// Uids of pods that failed (or were deleted before succeeding).
    pub failed: Vec<String>,
    /// Completion indexes of the succeeded pods (Indexed Jobs only).
    pub indexes: BTreeSet<i32>,
}

/// Sorts owned pods with the finalizer into [`NewlyFinished`], skipping uids
/// already in `uncounted`.
pub fn newly_finished(spec: &JobSpec, pods: &[Arc<Pod>], uncounted: &UncountedTerminatedPods) -> NewlyFinished {
    let known: BTreeSet<&String> = uncounted
        .succeeded
        .iter()
        .flatten()
        .chain(uncounted.failed.iter().flatten())
        .collect();
    let completions = spec.completions.unwrap_or(1);
    let mut out = NewlyFinished::default();
    for p in pods.iter().filter(|p| has_finalizer(p)) {
        let uid = uid_of(p);
        if known.contains(&uid) {
            continue;
        }
        if is_succeeded(p) {
            if is_indexed(spec)
                && let Some(i) = pod_index(p).filter(|i| *i < completions)
            {
                out.indexes.insert(i);
            }
            out.succeeded.push(uid);
        } else if is_failed(p) {
            out.failed.push(uid);
        }
    }
    out
}

/// What the Job has reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Still running.
    Running,
    /// Enough pods succeeded (`SuccessCriteriaMet`, then `Complete`).
    Succeeded,
    /// The Job failed (`FailureTarget`, then `Failed`) with this reason and message.
    Failed(String, String),
}

/// The inputs of [`decide`], all already counted.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The Job's spec.
    pub spec: &'a JobSpec,
    /// Succeeded pods, counted and uncounted.
    pub succeeded: i32,
    /// Failed pods, counted and uncounted.
    pub failed: i32,
    /// Completed indexes (Indexed Jobs).
    pub completed_indexes: &'a BTreeSet<i32>,
    /// Active pods (not finished, not being deleted).
    pub active: &'a [Arc<Pod>],
    /// When the Job started (`status.startTime`).
    pub start_time: Option<Timestamp>,
    /// A verdict already recorded as `SuccessCriteriaMet`/`FailureTarget`.
    pub target: Option<Verdict>,
    /// No new pods before this instant (failure backoff).
    pub backoff_until: Option<Timestamp>,
    /// Now.
    pub now: Timestamp,
}

/// What the Job controller should do.
#[derive(Debug, Default)]
pub struct Decision {
    /// The verdict (a new one is recorded as the interim condition).
    pub verdict: Option<Verdict>,
    /// Pods to create: `None` for NonIndexed, `Some(index)` for Indexed.
    pub create: Vec<Option<i32>>,
    /// Active pods to delete.
    pub delete: Vec<Arc<Pod>>,
    /// Sync again after this long (deadline or backoff), if nothing happens sooner.
    pub requeue: Option<Duration>,
}

fn restarts(p: &Pod) -> i32 {
    let s = p.status.as_ref();
    s.and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(s.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

pub(super) fn secs_until(t: Timestamp, now: Timestamp) -> Duration {
    let d = t.as_millisecond() - now.as_millisecond();
    Duration::from_millis(d.max(0) as u64)
}

/// Decides what to do for a running Job (upstream `syncJob` / `manageJob`):
/// success or failure verdicts, pods to create up to `parallelism` (lowest missing
/// indexes first when Indexed), surplus or duplicate-index pods to delete. A
/// verdict, a suspended Job or a passed deadline deletes every active pod.
pub fn decide(o: &Observed) -> Decision {
    let spec = o.spec;
    let mut d = Decision::default();
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let completions = spec.completions;
    let active = o.active.len();

    let mut verdict = o.target.clone();
    if verdict.is_none() {
        let on_failure_restarts: i32 =
            if spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure") {
                o.active.iter().map(|p| restarts(p)).sum()
            } else {
                0
            };
        let deadline = spec
            .active_deadline_seconds
            .zip(o.start_time)
            .map(|(s, t)| t + jiff::SignedDuration::from_secs(s));
        let done = if is_indexed(spec) {
            o.completed_indexes.len() as i32 >= completions.unwrap_or(1)
        } else {
            match completions {
                Some(c) => o.succeeded >= c,
                None => o.succeeded > 0 && active == 0,
            }
        };
        if o.failed + on_failure_restarts > backoff_limit {
            verdict = Some(Verdict::Failed(
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        } else if done {
            verdict = Some(Verdict::Succeeded);
        } else if let Some(deadline) = deadline {
            if deadline <= o.now {
                verdict = Some(Verdict::Failed(
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                d.requeue = Some(secs_until(deadline, o.now));
            }
        }
    }
    if verdict.is_some() || spec.suspend == Some(true) {
        d.delete = o.active.to_vec();
        d.verdict = verdict;
        return d;
    }

    let backing_off = o.backoff_until.filter(|t| *t > o.now);
    if is_indexed(spec) {
        let completions = completions.unwrap_or(1).max(0);
        let mut by_index: BTreeMap<i32, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in o.active {
            match pod_index(p) {
                Some(i) if i < completions && !o.completed_indexes.contains(&i) => {
                    by_index.entry(i).or_default().push(p.clone())
                }
                // Out of range, unindexed or already completed: not needed.
                _ => d.delete.push(p.clone()),
            }
        }
        for pods in by_index.values_mut() {
            if pods.len() > 1 {
                rank_for_deletion(pods, o.active);
                let keep = pods.pop();
                d.delete.append(pods);
                pods.extend(keep);
            }
        }
        let running = by_index.len();
        if running > parallelism {
            let mut extra: Vec<Arc<Pod>> = by_index.values().flatten().cloned().collect();
            rank_for_deletion(&mut extra, o.active);
            extra.truncate(running - parallelism);
            d.delete.extend(extra);
        } else if backing_off.is_none() {
            let missing = (0..completions).filter(|i| !o.completed_indexes.contains(i) && !by_index.contains_key(i));
            d.create = missing.take(parallelism - running).map(Some).collect();
        }
    } else {
        let want = match completions {
            Some(c) => ((c - o.succeeded).max(0) as usize).min(parallelism),
            None if o.succeeded > 0 => active.min(parallelism),
            None => parallelism,
        };
        if active > want {
            let mut extra = o.active.to_vec();
            rank_for_deletion(&mut extra, o.active);
            extra.truncate(active - want);
            d.delete = extra;
        } else if active < want && backing_off.is_none() {
            d.create = vec![None; want - active];
        }
    }
    d.create.truncate(BURST_REPLICAS);
    d.delete.truncate(BURST_REPLICAS);
    if let Some(t) = backing_off
        && (d.create.is_empty() && (active < parallelism))
    {
        let wait = secs_until(t, o.now);
        d.requeue = Some(d.requeue.map_or(wait, |r| r.min(wait)));
    }
    d
}

pub(super) fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// The time the Job finished (`Complete` or `Failed` condition True), if it did.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let s = job.status.as_ref()?;
    let c = condition(s, "Complete").or_else(|| condition(s, "Failed"))?;
    Some(
        s.completion_time
            .as_ref()
            .or(c.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now),
    )
}

/// When a finished Job with `ttlSecondsAfterFinished` may be deleted.
pub fn ttl_expiry(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    Some(finished_at(job)? + jiff::SignedDuration::from_secs(ttl.max(0) as i64))
}

/// Sets condition `type_` True (or False) with reason and message, keeping the
/// transition time when the status does not change.
pub(super) fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let value = if value { "True" } else { "False" };
    let now = Time(now);
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(now.clone());
            }
            c.status = value.to_string();
            c.reason = Some(reason.to_string());
            c.message = Some(message.to_string());
            c.last_probe_time = Some(now);
        }
        None => conds.push(JobCondition {
            type_: type_.to_string(),
            status: value.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_probe_time: Some(now.clone()),
            last_transition_time: Some(now),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(spec: serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "pi", "namespace": "ns", "uid": "ju"}, "spec": spec}))
            .unwrap()
    }

    fn pod(name: &str, phase: &str, index: Option<i32>, finalizer: bool) -> Arc<Pod> {
        let ann = index.map(|i| json!({COMPLETION_INDEX: i.to_string()}));
        let fin = finalizer.then(|| json!([JOB_TRACKING_FINALIZER]));
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "uid": name, "annotations": ann, "finalizers": fin,
                    "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"containers": []},
                "status": {"phase": phase}
            }))
            .unwrap(),
        )
    }

    fn spec(v: serde_json::Value) -> JobSpec {
        serde_json::from_value(json!({"template": {"spec": {"containers": [], "restartPolicy": "Never"}}}))
            .and_then(|mut s: serde_json::Value| {
                json_merge(&mut s, v);
                serde_json::from_value(s)
            })
            .unwrap()
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
            a.extend(b);
        }
    }

    #[test]
    fn completed_indexes_round_trip_in_upstream_format() {
        let set = parse_indexes("0,2-4,7,8", 10);
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 7, 8]);
        assert_eq!(format_indexes(&set), "0,2-4,7,8");
        assert_eq!(format_indexes(&parse_indexes("1-9", 5)), "1-4", "out of range dropped");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_six_minutes() {
        let cases = [(0, 0), (1, 10), (2, 20), (3, 40), (6, 320), (7, 360), (40, 360)];
        for (n, secs) in cases {
            assert_eq!(backoff_delay(n), Duration::from_secs(secs), "{n} failures");
        }
    }

    #[test]
    fn indexed_pods_carry_their_index_and_job_labels() {
        let j = job(json!({"completionMode": "Indexed", "completions": 3,
            "template": {"metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}}));
        let p = pod_from_template(&j, Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[COMPLETION_INDEX], "2");
        assert_eq!(labels[CONTROLLER_UID], "ju");
        assert_eq!(labels[LEGACY_JOB_NAME], "pi");
        assert_eq!(labels["app"], "x");
        assert_eq!(p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX], "2");
        assert_eq!(
            p.metadata.finalizers.as_deref(),
            Some(&[JOB_TRACKING_FINALIZER.to_string()][..])
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, COMPLETION_INDEX_ENV);
        assert!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path
                .contains(COMPLETION_INDEX)
        );
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
        assert_eq!(pod_index(&p), Some(2));

        let plain = pod_from_template(&j, None);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("pi-"));
        assert_eq!(pod_index(&plain), None);
    }

    #[test]
    fn finished_pods_are_recorded_once() {
        let s = spec(json!({"completionMode": "Indexed", "completions": 3}));
        let pods = vec![
            pod("a", "Succeeded", Some(0), true),
            pod("b", "Failed", Some(1), true),
            pod("c", "Running", Some(2), true),
            pod("d", "Succeeded", Some(1), false),
            pod("e", "Succeeded", Some(9), true),
        ];
        let none = UncountedTerminatedPods::default();
        let got = newly_finished(&s, &pods, &none);
        assert_eq!(got.succeeded, vec!["a", "e"]);
        assert_eq!(got.failed, vec!["b"]);
        assert_eq!(
            got.indexes.into_iter().collect::<Vec<_>>(),
            vec![0],
            "index 9 is out of range"
        );
        let known = UncountedTerminatedPods {
            succeeded: Some(vec!["a".into()]),
            failed: Some(vec!["b".into()]),
        };
        assert_eq!(newly_finished(&s, &pods, &known).succeeded, vec!["e"]);
    }

    fn observe<'a>(spec: &'a JobSpec, active: &'a [Arc<Pod>], done: &'a BTreeSet<i32>) -> Observed<'a> {
        Observed {
            spec,
            succeeded: 0,
            failed: 0,
            completed_indexes: done,
            active,
            start_time: None,
            target: None,
            backoff_until: None,
            now: "2026-01-01T00:10:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn decisions_follow_upstream_sync_job() {
        let none = BTreeSet::new();
        let running =
            |n: usize| -> Vec<Arc<Pod>> { (0..n).map(|i| pod(&format!("p{i}"), "Running", None, true)).collect() };
        struct Case {
            name: &'static str,
            spec: serde_json::Value,
            active: usize,
            succeeded: i32,
            failed: i32,
            want_create: usize,
            want_delete: usize,
            want: Option<Verdict>,
        }
        let cases = [
            Case {
                name: "starts parallelism pods",
                spec: json!({"completions": 3, "parallelism": 2}),
                active: 0,
                succeeded: 0,
                failed: 0,
                want_create: 2,
                want_delete: 0,
                want: None,
            },
            Case {
                name: "never more than the remaining completions",
                spec: json!({"completions": 3, "parallelism": 2}),
                active: 1,
                succeeded: 2,
                failed: 0,
                want_create: 0,
                want_delete: 0,
                want: None,
            },
            Case {
                name: "parallelism lowered",
                spec: json!({"completions": 9, "parallelism": 1}),
                active: 3,
                succeeded: 0,
                failed: 0,
                want_create: 0,
                want_delete: 2,
                want: None,
            },
            Case {
                name: "completions reached",
                spec: json!({"completions": 3, "parallelism": 2}),
                active: 0,
                succeeded: 3,
                failed: 0,
                want_create: 0,
                want_delete: 0,
                want: Some(Verdict::Succeeded),
            },
            Case {
                name: "work queue done when one succeeded and none run",
                spec: json!({"parallelism": 2}),
                active: 0,
                succeeded: 1,
                failed: 0,
                want_create: 0,
                want_delete: 0,
                want: Some(Verdict::Succeeded),
            },
            Case {
                name: "work queue creates nothing after a success",
                spec: json!({"parallelism": 3}),
                active: 1,
                succeeded: 1,
                failed: 0,
                want_create: 0,
                want_delete: 0,
                want: None,
            },
            Case {
                name: "backoff limit exceeded",
                spec: json!({"completions": 1, "backoffLimit": 1}),
                active: 1,
                succeeded: 0,
                failed: 2,
                want_create: 0,
                want_delete: 1,
                want: Some(Verdict::Failed(
                    "BackoffLimitExceeded".into(),
                    "Job has reached the specified backoff limit".into(),
                )),
            },
            Case {
                name: "at the backoff limit it retries",
                spec: json!({"completions": 1, "backoffLimit": 1}),
                active: 0,
                succeeded: 0,
                failed: 1,
                want_create: 1,
                want_delete: 0,
                want: None,
            },
            Case {
                name: "suspended deletes active pods",
                spec: json!({"completions": 2, "suspend": true}),
                active: 2,
                succeeded: 0,
                failed: 0,
                want_create: 0,
                want_delete: 2,
                want: None,
            },
        ];
        for c in cases {
            let s = spec(c.spec);
            let active = running(c.active);
            let mut o = observe(&s, &active, &none);
            o.succeeded = c.succeeded;
            o.failed = c.failed;
            let d = decide(&o);
            assert_eq!(d.create.len(), c.want_create, "{}: create", c.name);
            assert_eq!(d.delete.len(), c.want_delete, "{}: delete", c.name);
            assert_eq!(d.verdict, c.want, "{}: verdict", c.name);
        }
    }

    #[test]
    fn indexed_jobs_fill_the_lowest_missing_indexes_and_drop_duplicates() {
        let s = spec(json!({"completionMode": "Indexed", "completions": 5, "parallelism": 3}));
        let done: BTreeSet<i32> = [0].into();
        let active = vec![
            pod("one", "Running", Some(1), true),
            pod("one-dup", "Pending", Some(1), true),
            pod("done", "Running", Some(0), true),
        ];
        let d = decide(&observe(&s, &active, &done));
        assert_eq!(d.create, vec![Some(2), Some(3)]);
        let mut deleted: Vec<String> = d.delete.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        deleted.sort();
        assert_eq!(deleted, vec!["done", "one-dup"]);
        let all: BTreeSet<i32> = (0..5).collect();
        assert_eq!(decide(&observe(&s, &[], &all)).verdict, Some(Verdict::Succeeded));
    }

    #[test]
    fn deadline_and_backoff_delay_work() {
        let s = spec(json!({"completions": 1, "activeDeadlineSeconds": 60}));
        let none = BTreeSet::new();
        let mut o = observe(&s, &[], &none);
        o.start_time = Some("2026-01-01T00:09:30Z".parse().unwrap());
        let d = decide(&o);
        assert_eq!(d.create.len(), 1);
        assert_eq!(d.requeue, Some(Duration::from_secs(30)), "wakes up at the deadline");
        o.start_time = Some("2026-01-01T00:08:00Z".parse().unwrap());
        assert!(matches!(decide(&o).verdict, Some(Verdict::Failed(r, _)) if r == "DeadlineExceeded"));

        let s = spec(json!({"completions": 1}));
        let mut o = observe(&s, &[], &none);
        o.failed = 1;
        o.backoff_until = Some("2026-01-01T00:10:05Z".parse().unwrap());
        let d = decide(&o);
        assert!(d.create.is_empty(), "no replacement during backoff");
        assert_eq!(d.requeue, Some(Duration::from_secs(5)));
    }

    #[test]
    fn on_failure_restarts_count_toward_the_backoff_limit() {
        let s: JobSpec = serde_json::from_value(json!({"completions": 1, "backoffLimit": 2,
            "template": {"spec": {"containers": [], "restartPolicy": "OnFailure"}}}))
        .unwrap();
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "uid": "p"},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
                "ready": false, "restartCount": 3}]}}))
        .unwrap();
        let active = vec![Arc::new(p)];
        let none = BTreeSet::new();
        assert!(
            matches!(decide(&observe(&s, &active, &none)).verdict, Some(Verdict::Failed(r, _)) if r == "BackoffLimitExceeded")
        );
    }

    #[test]
    fn ttl_counts_from_completion() {
        let j: Job = serde_json::from_value(
            json!({"metadata": {"name": "j"}, "spec": {"ttlSecondsAfterFinished": 100,
            "template": {"spec": {"containers": []}}},
            "status": {"completionTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Complete", "status": "True"}]}}),
        )
        .unwrap();
        assert_eq!(ttl_expiry(&j), Some("2026-01-01T00:01:40Z".parse().unwrap()));
        let running: Job = serde_json::from_value(json!({"metadata": {"name": "j"},
            "spec": {"ttlSecondsAfterFinished": 0, "template": {"spec": {"containers": []}}}}))
        .unwrap();
        assert_eq!(ttl_expiry(&running), None);
    }
}
