//! Job controller (upstream pkg/controller/job, batch/v1): runs pods until
//! `completions` of them succeed, at most `parallelism` at a time.
//!
//! - **Completion modes**: `NonIndexed` pods are interchangeable; `Indexed` pods each
//!   get a completion index in `0..completions` (annotation and label
//!   `batch.kubernetes.io/job-completion-index`, env `JOB_COMPLETION_INDEX`, hostname
//!   `<job>-<index>`) and the Job completes when every index has succeeded
//!   (`status.completedIndexes`). Without `completions` (a work queue) the Job
//!   completes once any pod succeeded and none is left running.
//! - **Tracking with finalizers** (KEP-2307): every pod carries the
//!   `batch.kubernetes.io/job-tracking` finalizer. A finished pod's uid is first
//!   written to `status.uncountedTerminatedPods`, then its finalizer is removed, then
//!   it moves into `status.succeeded`/`status.failed`; so each pod is counted exactly
//!   once even when it is deleted right after it finished. Status writes carry the
//!   Job's resourceVersion, so a stale cache can never count twice.
//! - **Failure**: more failed pods than `backoffLimit` (for `restartPolicy:
//!   OnFailure`, container restarts count too), or running longer than
//!   `activeDeadlineSeconds`, adds `FailureTarget`; active pods are then deleted and,
//!   once none is left terminating, `Failed`. Success adds `SuccessCriteriaMet` and
//!   then `Complete` with `completionTime` (upstream 1.33 ordering of conditions).
//!   Failed pods are replaced after an exponential backoff (10 s doubling, at most
//!   6 min), as upstream.
//! - **Suspend** deletes active pods and sets the `Suspended` condition; resuming
//!   resets `startTime` (so `activeDeadlineSeconds` counts from the resume).
//! - **ttlSecondsAfterFinished** (upstream's TTL-after-finished controller, folded in
//!   here): a finished Job is deleted with foreground propagation once the TTL since
//!   it finished has passed.
//!
//! Pods come from a watch-fed [`PodCache`]; creations and deletions are guarded by
//! [`Expectations`] as in the ReplicaSet controller. The decision of what to do is
//! the pure [`decide`]; accounting of finished pods is the pure [`newly_finished`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, future, stream};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Config, applier};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use skiff_api::events::EventType;
use skiff_api::selector::LabelSelector;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{
    controller_of, has_true_condition, is_conflict, is_not_found, owner_ref, record, reference, set_controller_ref,
};
use crate::expectations::Expectations;
use crate::pod_cache::{self, PodCache, PodChange};
use crate::replicaset::{BURST_REPLICAS, claim, rank_for_deletion};

const COMPONENT: &str = "job-controller";
/// Finalizer on every Job pod until the Job controller has counted it (KEP-2307).
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation and label with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Label with the uid of the Job a pod belongs to (the default selector).
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Label with the name of the Job a pod belongs to.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// Pre-1.27 spelling of [`CONTROLLER_UID`], still set by upstream.
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
/// Pre-1.27 spelling of [`JOB_NAME`], still set by upstream.
pub const LEGACY_JOB_NAME: &str = "job-name";
/// Environment variable with the completion index in Indexed Job containers.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// First delay before replacing a failed pod; it doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest delay before replacing a failed pod.
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);

struct Ctx {
    client: kube::Client,
    pods: Arc<PodCache>,
    expectations: Mutex<Expectations>,
    /// Per Job uid: consecutive counted failures and when the last was counted
    /// (upstream keeps this backoff record in memory too).
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

fn has_finalizer(p: &Pod) -> bool {
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

fn is_indexed(spec: &JobSpec) -> bool {
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

fn secs_until(t: Timestamp, now: Timestamp) -> Duration {
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

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
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
fn set_condition(status: &mut JobStatus, type_: &str, value: bool, reason: &str, message: &str, now: Timestamp) {
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

impl Ctx {
    async fn event(&self, job: &Job, ty: EventType, reason: &str, message: &str) {
        record(
            &self.client,
            reference("batch/v1", "Job", &job.metadata),
            ty,
            reason,
            message,
            COMPONENT,
        )
        .await;
    }

    /// Writes `status` with the Job's resourceVersion as precondition and returns
    /// the updated Job.
    async fn write_status(&self, job: &Job, status: JobStatus) -> Result<Job, Error> {
        let mut next = job.clone();
        next.status = Some(status);
        let api: Api<Job> = Api::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or_default(),
        );
        Ok(api
            .replace_status(
                job.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &next,
            )
            .await?)
    }

    /// Removes the tracking finalizer; `Ok` also when the pod is already gone.
    async fn remove_finalizer(&self, pod: &Pod) -> Result<(), kube::Error> {
        let finalizers: Vec<&String> = pod
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != JOB_TRACKING_FINALIZER)
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "uid": pod.metadata.uid,
            "resourceVersion": pod.metadata.resource_version}});
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        match api
            .patch(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_pods(&self, job: &Job, indexes: &[Option<i32>]) -> Result<(), Error> {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or_default(),
        );
        self.expectations
            .lock()
            .expect("expectations")
            .expect_creations(&uid, indexes.len(), Instant::now());
        let results = future::join_all(indexes.iter().map(|i| {
            let pod = pod_from_template(job, *i);
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pod).await }
        }))
        .await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(p) => {
                    let msg = format!("Created pod: {}", p.metadata.name.as_deref().unwrap_or_default());
                    self.event(job, EventType::Normal, "SuccessfulCreate", &msg).await;
                }
                Err(e) => {
                    self.expectations.lock().expect("expectations").creation_observed(&uid);
                    self.event(job, EventType::Warning, "FailedCreate", &format!("Error creating: {e}"))
                        .await;
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }

    async fn delete_pods(&self, job: &Job, victims: &[Arc<Pod>]) -> Result<(), Error> {
        if victims.is_empty() {
            return Ok(());
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        self.expectations.lock().expect("expectations").expect_deletions(
            &uid,
            victims.iter().map(|p| uid_of(p)),
            Instant::now(),
        );
        let results = future::join_all(victims.iter().map(|p| async move {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or_default());
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            (p, api.delete(p.metadata.name.as_deref().unwrap_or_default(), &dp).await)
        }))
        .await;
        let mut first_error = None;
        for (p, r) in results {
            let name = p.metadata.name.clone().unwrap_or_default();
            match r {
                Ok(_) => {
                    self.event(
                        job,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    )
                    .await
                }
                Err(e) => {
                    self.expectations
                        .lock()
                        .expect("expectations")
                        .deletion_observed(&uid, &uid_of(p));
                    if !is_not_found(&e) {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}

/// Removes the tracking finalizer from every pod in `pods` that has it.
async fn release_all(ctx: &Ctx, pods: &[Arc<Pod>]) -> Result<(), Error> {
    for p in pods.iter().filter(|p| has_finalizer(p)) {
        ctx.remove_finalizer(p).await?;
    }
    Ok(())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let now = Timestamp::now();
    let owned = ctx.pods.controlled_by(&uid);

    // Finished: only finalizer cleanup and the TTL remain.
    if finished_at(&job).is_some() {
        release_all(&ctx, &owned).await?;
        ctx.backoff.lock().expect("backoff").remove(&uid);
        if let Some(expiry) = ttl_expiry(&job) {
            if expiry > now {
                return Ok(Action::requeue(secs_until(expiry, now)));
            }
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match Api::<Job>::namespaced(ctx.client.clone(), &ns).delete(&name, &dp).await {
                Ok(_) => tracing::info!(job = %format!("{ns}/{name}"), "deleted finished job after its TTL"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Action::await_change());
    }
    if job.metadata.deletion_timestamp.is_some() {
        release_all(&ctx, &owned).await?;
        return Ok(Action::await_change());
    }

    // Claim pods (adopt matching orphans, release mismatches).
    let selector = LabelSelector::from_label_selector_json(&serde_json::to_value(&spec.selector)?)
        .map_err(|e| Error::Invalid(format!("job {ns}/{name}: {e}")))?;
    if selector.is_empty() {
        return Err(Error::Invalid(format!("job {ns}/{name} has an empty selector")));
    }
    let c = claim(&selector, owned, ctx.pods.orphans_in(&ns), false);
    let mut pods = c.owned;
    for p in &c.release {
        match set_controller_ref(&ctx.client, p, &uid, None).await {
            Ok(p) if has_finalizer(&p) => ctx.remove_finalizer(&p).await?,
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for p in &c.adopt {
        match set_controller_ref(&ctx.client, p, &uid, Some(owner_ref("batch/v1", "Job", &job.metadata))).await {
            Ok(p) => pods.push(Arc::new(p)),
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }

    // 1. Record newly finished pods as uncounted before touching their finalizers.
    let mut job: Job = (*job).clone();
    let mut status = job.status.clone().unwrap_or_default();
    let completions = spec.completions.unwrap_or(1);
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let fresh = newly_finished(&spec, &pods, &uncounted);
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or_default(), completions);
    if !fresh.succeeded.is_empty() || !fresh.failed.is_empty() {
        uncounted
            .succeeded
            .get_or_insert_with(Vec::new)
            .extend(fresh.succeeded.iter().cloned());
        uncounted
            .failed
            .get_or_insert_with(Vec::new)
            .extend(fresh.failed.iter().cloned());
        completed.extend(fresh.indexes.iter().copied());
        status.uncounted_terminated_pods = Some(uncounted.clone());
        if is_indexed(&spec) {
            status.completed_indexes = Some(format_indexes(&completed));
        }
        job = ctx.write_status(&job, status.clone()).await?;
        status = job.status.clone().unwrap_or_default();
        let mut b = ctx.backoff.lock().expect("backoff");
        let rec = b.entry(uid.clone()).or_insert((0, Instant::now()));
        if fresh.failed.is_empty() {
            rec.0 = 0;
        } else {
            *rec = (rec.0 + fresh.failed.len() as u32, Instant::now());
        }
    }
    // 2. Remove finalizers of uncounted pods; 3. move those done into the counters.
    let by_uid: HashMap<String, &Arc<Pod>> = pods.iter().map(|p| (uid_of(p), p)).collect();
    let mut still = UncountedTerminatedPods::default();
    let (mut new_succeeded, mut new_failed) = (0, 0);
    for (list, failed) in [(&uncounted.succeeded, false), (&uncounted.failed, true)] {
        for u in list.iter().flatten() {
            let released = match by_uid.get(u) {
                Some(p) if has_finalizer(p) => ctx.remove_finalizer(p).await.is_ok(),
                _ => true,
            };
            match (released, failed) {
                (true, false) => new_succeeded += 1,
                (true, true) => new_failed += 1,
                (false, false) => still.succeeded.get_or_insert_with(Vec::new).push(u.clone()),
                (false, true) => still.failed.get_or_insert_with(Vec::new).push(u.clone()),
            }
        }
    }
    status.succeeded = Some(status.succeeded.unwrap_or(0) + new_succeeded);
    status.failed = Some(status.failed.unwrap_or(0) + new_failed);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(still.succeeded.clone().unwrap_or_default()),
        failed: Some(still.failed.clone().unwrap_or_default()),
    });
    let pending_uncounted = still.succeeded.iter().flatten().count() + still.failed.iter().flatten().count();

    // 4. Decide.
    let active: Vec<Arc<Pod>> = pods.iter().filter(|p| is_active(p)).cloned().collect();
    let terminating = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed"))
        .count() as i32;
    let suspended = spec.suspend == Some(true);
    let was_suspended = condition(&status, "Suspended").is_some();
    if !suspended && (status.start_time.is_none() || was_suspended) {
        status.start_time = Some(Time(now));
    }
    if suspended && !was_suspended {
        set_condition(&mut status, "Suspended", true, "JobSuspended", "Job suspended", now);
        ctx.event(&job, EventType::Normal, "Suspended", "Job suspended").await;
    } else if !suspended && was_suspended {
        set_condition(&mut status, "Suspended", false, "JobResumed", "Job resumed", now);
        ctx.event(&job, EventType::Normal, "Resumed", "Job resumed").await;
    }
    let target = if condition(&status, "FailureTarget").is_some() {
        let c = condition(&status, "FailureTarget").cloned().unwrap_or_default();
        Some(Verdict::Failed(
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default(),
        ))
    } else if condition(&status, "SuccessCriteriaMet").is_some() {
        Some(Verdict::Succeeded)
    } else {
        None
    };
    let backoff_until = {
        let b = ctx.backoff.lock().expect("backoff");
        b.get(&uid).filter(|r| r.0 > 0).map(|(n, at)| {
            let elapsed = at.elapsed();
            now + backoff_delay(*n).saturating_sub(elapsed)
        })
    };
    let uncounted_succeeded = still.succeeded.iter().flatten().count() as i32;
    let uncounted_failed = still.failed.iter().flatten().count() as i32;
    let observed = Observed {
        spec: &spec,
        succeeded: status.succeeded.unwrap_or(0) + uncounted_succeeded,
        failed: status.failed.unwrap_or(0) + uncounted_failed,
        completed_indexes: &completed,
        active: &active,
        start_time: status.start_time.as_ref().map(|t| t.0),
        target: target.clone(),
        backoff_until,
        now,
    };
    let decision = decide(&observed);
    if target.is_none() {
        match &decision.verdict {
            Some(Verdict::Succeeded) => set_condition(
                &mut status,
                "SuccessCriteriaMet",
                true,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ),
            Some(Verdict::Failed(reason, message)) => {
                set_condition(&mut status, "FailureTarget", true, reason, message, now);
                ctx.event(&job, EventType::Warning, reason, message).await;
            }
            _ => {}
        }
    }

    // 5. Act, if the watch has caught up with earlier actions.
    let satisfied = ctx
        .expectations
        .lock()
        .expect("expectations")
        .satisfied(&uid, Instant::now());
    let mut act_error = None;
    if satisfied {
        if let Err(e) = ctx.delete_pods(&job, &decision.delete).await {
            act_error = Some(e);
        } else if let Err(e) = ctx.create_pods(&job, &decision.create).await {
            act_error = Some(e);
        }
    }

    // 6. Status: counts from this sync's view, terminal condition once no pod is
    // left running or terminating.
    let deleted: BTreeSet<String> = decision.delete.iter().map(|p| uid_of(p)).collect();
    let still_active: Vec<&Arc<Pod>> = active.iter().filter(|p| !deleted.contains(&uid_of(p))).collect();
    status.active = Some(still_active.len() as i32 + if satisfied { decision.create.len() as i32 } else { 0 });
    status.ready = Some(still_active.iter().filter(|p| has_true_condition(p, "Ready")).count() as i32);
    status.terminating = Some(terminating + deleted.len() as i32);
    let verdict = decision.verdict.clone();
    let drained = status.active == Some(0) && status.terminating == Some(0) && pending_uncounted == 0;
    if drained {
        match &verdict {
            Some(Verdict::Succeeded) => {
                set_condition(
                    &mut status,
                    "Complete",
                    true,
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                );
                status.completion_time = Some(Time(now));
                ctx.event(&job, EventType::Normal, "Completed", "Job completed").await;
            }
            Some(Verdict::Failed(reason, message)) => {
                set_condition(&mut status, "Failed", true, reason, message, now);
            }
            None | Some(Verdict::Running) => {}
        }
    }
    if job.status.as_ref() != Some(&status) {
        job = ctx.write_status(&job, status).await?;
    }
    if let Some(e) = act_error {
        return Err(e);
    }
    if let Some(expiry) = ttl_expiry(&job) {
        return Ok(Action::requeue(secs_until(expiry, Timestamp::now())));
    }
    Ok(decision.requeue.map_or_else(Action::await_change, Action::requeue))
}

fn error_policy(_job: Arc<Job>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    match e {
        // A stale cached Job: retry as soon as the watch delivers the new version.
        Error::Kube(k) if is_conflict(k) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::warn!(error = %e, "job sync failed");
            Action::requeue(Duration::from_secs(2))
        }
    }
}

fn job_owner(p: &Pod) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    controller_of(&p.metadata).filter(|r| r.kind == "Job" && r.api_version.starts_with("batch/"))
}

/// The Jobs a pod change concerns, observing expectations on the way: the pod's
/// controlling Job, or for an orphan every Job in its namespace whose selector
/// matches it.
fn affected(change: &PodChange, store: &Store<Job>, exp: &Mutex<Expectations>) -> Vec<ObjectRef<Job>> {
    let mut out = Vec::new();
    let mut trigger = |p: &Pod| {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        match job_owner(p) {
            Some(r) => out.push(ObjectRef::new(&r.name).within(&ns)),
            None if controller_of(&p.metadata).is_none() => {
                let empty = Default::default();
                let labels = p.metadata.labels.as_ref().unwrap_or(&empty);
                for job in store.state() {
                    if job.metadata.namespace.as_deref() != Some(ns.as_str()) {
                        continue;
                    }
                    let sel = job
                        .spec
                        .as_ref()
                        .and_then(|s| serde_json::to_value(&s.selector).ok())
                        .and_then(|v| LabelSelector::from_label_selector_json(&v).ok());
                    if sel.is_some_and(|s| !s.is_empty() && s.matches(labels)) {
                        out.push(ObjectRef::from_obj(job.as_ref()));
                    }
                }
            }
            None => {}
        }
    };
    let mut exp = exp.lock().expect("expectations");
    match change {
        PodChange::Added(p) => {
            if let Some(r) = job_owner(p) {
                exp.creation_observed(&r.uid);
                if p.metadata.deletion_timestamp.is_some() {
                    exp.deletion_observed(&r.uid, &uid_of(p));
                }
            }
            trigger(p);
        }
        PodChange::Updated { old, new } => {
            if new.metadata.deletion_timestamp.is_some()
                && old.metadata.deletion_timestamp.is_none()
                && let Some(r) = job_owner(new)
            {
                exp.deletion_observed(&r.uid, &uid_of(new));
            }
            trigger(new);
            if controller_of(&old.metadata).map(|r| &r.uid) != controller_of(&new.metadata).map(|r| &r.uid)
                || old.metadata.labels != new.metadata.labels
            {
                trigger(old);
            }
        }
        PodChange::Deleted(p) => {
            if let Some(r) = job_owner(p) {
                exp.deletion_observed(&r.uid, &uid_of(p));
            }
            trigger(p);
        }
    }
    out
}

/// Removes the tracking finalizer from pods whose Job no longer exists (upstream's
/// orphan pod cleanup): without it they could never be deleted.
async fn clean_orphan_finalizers(ctx: Arc<Ctx>, mut rx: futures::channel::mpsc::UnboundedReceiver<Arc<Pod>>) {
    while let Some(pod) = rx.next().await {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let owner = job_owner(&pod).cloned();
        let gone = match owner {
            None => true,
            Some(r) => match Api::<Job>::namespaced(ctx.client.clone(), &ns).get_opt(&r.name).await {
                Ok(Some(j)) => j.metadata.uid.as_deref() != Some(r.uid.as_str()),
                Ok(None) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "checking a pod's job failed");
                    false
                }
            },
        };
        if gone && let Err(e) = ctx.remove_finalizer(&pod).await {
            tracing::debug!(error = %e, "removing an orphaned job pod's finalizer failed");
        }
    }
}

/// Runs the Job controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: Arc::new(PodCache::new()),
        expectations: Mutex::new(Expectations::new()),
        backoff: Mutex::new(HashMap::new()),
    });
    let (store, writer) = reflector::store::<Job>();
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded::<ObjectRef<Job>>();
    let (orphan_tx, orphan_rx) = futures::channel::mpsc::unbounded::<Arc<Pod>>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    {
        let (hook_ctx, store) = (ctx.clone(), store.clone());
        let on_change = move |change: PodChange| {
            let refs = affected(&change, &store, &hook_ctx.expectations);
            let pod = match &change {
                PodChange::Added(p) | PodChange::Deleted(p) | PodChange::Updated { new: p, .. } => p,
            };
            // A tracked pod that lost its Job (or was released) needs its finalizer removed.
            let orphaned = !matches!(change, PodChange::Deleted(_))
                && has_finalizer(pod)
                && (job_owner(pod).is_none() || pod.metadata.deletion_timestamp.is_some());
            if orphaned {
                let _ = orphan_tx.unbounded_send(pod.clone());
            }
            for r in refs {
                let _ = trigger_tx.unbounded_send(r);
            }
        };
        tokio::spawn(pod_cache::run(
            client.clone(),
            ctx.pods.clone(),
            on_change,
            ready_tx,
            shutdown.clone(),
        ));
    }
    tokio::spawn(clean_orphan_finalizers(ctx.clone(), orphan_rx));
    tokio::select! {
        _ = shutdown.cancelled() => return,
        r = ready_rx => if r.is_err() { return },
    }
    let exp_ctx = ctx.clone();
    let events = watcher(Api::<Job>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .map_ok(move |event| {
            let refs: Vec<ObjectRef<Job>> = match event {
                watcher::Event::Apply(j) | watcher::Event::InitApply(j) => vec![ObjectRef::from_obj(&j)],
                watcher::Event::Delete(j) => {
                    let uid = j.metadata.uid.clone().unwrap_or_default();
                    exp_ctx.expectations.lock().expect("expectations").remove(&uid);
                    exp_ctx.backoff.lock().expect("backoff").remove(&uid);
                    Vec::new()
                }
                watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
            };
            stream::iter(refs.into_iter().map(Ok::<_, watcher::Error>))
        })
        .try_flatten();
    let queue = stream::select(events, trigger_rx.map(Ok::<_, watcher::Error>));
    let token = shutdown.clone();
    let reconciler = |job, ctx| Box::pin(reconcile(job, ctx));
    applier(reconciler, error_policy, ctx, store, queue, Config::default())
        .take_until(async move { token.cancelled().await })
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
