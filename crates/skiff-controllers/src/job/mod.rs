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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, future};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use serde_json::json;
use skiff_api::events::EventType;
use skiff_api::selector::LabelSelector;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{
    ControllerParts, controller_of, delete_pod, has_true_condition, is_conflict, is_not_found, owner_ref, record,
    reference, run_controller, set_controller_ref,
};
use crate::expectations::Expectations;
use crate::pod_cache::{PodCache, PodChange, PodInformer};
use crate::replicaset::claim;

mod logic;

pub use logic::{
    Decision, NewlyFinished, Observed, Verdict, backoff_delay, decide, finished_at, format_indexes, is_active,
    is_failed, is_succeeded, newly_finished, parse_indexes, pod_from_template, pod_index, ttl_expiry,
};
use logic::{condition, has_finalizer, is_indexed, phase, secs_until, set_condition, uid_of};

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
            (p, delete_pod(&api, p).await)
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

/// Runs the Job controller until `shutdown`, with a pod informer of its own.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let pods = PodInformer::start(client.clone(), shutdown.clone());
    run_with_pods(client, pods, shutdown).await
}

/// [`run`] reading pods from a shared [`PodInformer`] (the caller runs it).
pub async fn run_with_pods(client: kube::Client, pods: Arc<PodInformer>, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.cache(),
        expectations: Mutex::new(Expectations::new()),
        backoff: Mutex::new(HashMap::new()),
    });
    let (store, writer) = reflector::store::<Job>();
    let (trigger_tx, triggers) = futures::channel::mpsc::unbounded::<ObjectRef<Job>>();
    let (orphan_tx, orphan_rx) = futures::channel::mpsc::unbounded::<Arc<Pod>>();
    let pods_ready = {
        let (hook_ctx, store) = (ctx.clone(), store.clone());
        pods.subscribe(move |change: PodChange| {
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
        })
    };
    tokio::spawn(clean_orphan_finalizers(ctx.clone(), orphan_rx));
    let exp_ctx = ctx.clone();
    let on_delete = move |j: &Job| {
        let uid = j.metadata.uid.clone().unwrap_or_default();
        exp_ctx.expectations.lock().expect("expectations").remove(&uid);
        exp_ctx.backoff.lock().expect("backoff").remove(&uid);
    };
    let parts = ControllerParts {
        ctx,
        store,
        writer,
        triggers,
        pods_ready,
    };
    run_controller(
        Api::<Job>::all(client),
        parts,
        on_delete,
        reconcile,
        error_policy,
        shutdown,
    )
    .await
}
