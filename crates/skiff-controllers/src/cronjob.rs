//! CronJob controller (upstream pkg/controller/cronjob, batch/v1 "v2" controller):
//! creates a Job from `spec.jobTemplate` at each time of `spec.schedule`.
//!
//! - The schedule is a standard cron expression ([`crate::cron`]) evaluated in
//!   `spec.timeZone` (an IANA name) or, without one, the controller's local zone.
//! - Only the most recent missed time is run; a time older than
//!   `startingDeadlineSeconds` is skipped. More than 100 missed times are reported
//!   with a `TooManyMissedTimes` warning (the most recent still runs).
//! - `concurrencyPolicy`: `Allow` runs Jobs side by side, `Forbid` skips a time while
//!   a Job is active, `Replace` deletes the active Jobs first.
//! - `suspend` stops new Jobs (running ones continue).
//! - Jobs are named `<cronjob>-<scheduled time in minutes since the epoch>`, carry
//!   the `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation (RFC 3339 in
//!   the schedule's zone) and a controller reference; finished Jobs beyond
//!   `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` are deleted oldest first.
//! - `status.active` lists running Jobs; `lastScheduleTime` and
//!   `lastSuccessfulTime` record the latest schedule and completion.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config, applier};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{controller_of, is_conflict, is_not_found, owner_ref, record, reference};
use crate::cron::Schedule;

const COMPONENT: &str = "cronjob-controller";
/// Annotation on a CronJob's Job with the time it was scheduled for (RFC 3339).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed times beyond which upstream warns (`TooManyMissedTimes`).
pub const MAX_MISSED: usize = 100;

struct Ctx {
    client: kube::Client,
    jobs: Store<Job>,
}

/// The Job's terminal condition: `Some("Complete")`, `Some("Failed")` or `None`.
pub fn job_finished(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    for (ty, out) in [("Complete", "Complete"), ("Failed", "Failed")] {
        if conds.iter().any(|c| c.type_ == ty && c.status == "True") {
            return Some(out);
        }
    }
    None
}

/// The time zone of a CronJob: `spec.timeZone`, else the local zone.
pub fn time_zone(cj: &CronJob) -> Result<TimeZone, String> {
    match cj.spec.as_ref().and_then(|s| s.time_zone.as_deref()) {
        Some(name) => TimeZone::get(name).map_err(|e| format!("unknown time zone {name}: {e}")),
        None => Ok(TimeZone::system()),
    }
}

/// The outcome of looking for a time to run (upstream `mostRecentScheduleTime`
/// plus the deadline check).
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// The most recent unmet scheduled time, if it should run now.
    pub run: Option<Timestamp>,
    /// A scheduled time that was skipped because `startingDeadlineSeconds` passed.
    pub missed_deadline: Option<Timestamp>,
    /// More than [`MAX_MISSED`] times were missed.
    pub too_many_missed: bool,
    /// The next scheduled time after `now`.
    pub next: Option<Timestamp>,
}

/// Finds the time a Job should run for: the latest scheduled time after
/// `lastScheduleTime` (else the creation time) and not after `now`; with
/// `startingDeadlineSeconds` only times within that many seconds of `now` count.
pub fn due(
    schedule: &Schedule,
    tz: &TimeZone,
    created: Timestamp,
    last_schedule: Option<Timestamp>,
    starting_deadline: Option<i64>,
    now: Timestamp,
) -> Due {
    let mut earliest = last_schedule.unwrap_or(created);
    if let Some(sds) = starting_deadline {
        let window = now - jiff::SignedDuration::from_secs(sds.max(0));
        // Times before the window can never run; don't walk them.
        if window > earliest {
            earliest = window - jiff::SignedDuration::from_secs(1);
        }
    }
    let mut latest = None;
    let mut missed = 0usize;
    let mut t = earliest;
    let next = loop {
        match schedule.next_after(t, tz) {
            Some(n) if n <= now => {
                latest = Some(n);
                missed += 1;
                t = n;
            }
            other => break other,
        }
    };
    let too_late = |t: Timestamp| starting_deadline.is_some_and(|s| t + jiff::SignedDuration::from_secs(s) < now);
    Due {
        run: latest.filter(|t| !too_late(*t)),
        missed_deadline: latest.filter(|t| too_late(*t)),
        too_many_missed: missed > MAX_MISSED,
        next,
    }
}

/// The name of the Job for a scheduled time: `<cronjob>-<minutes since epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// A Job from the CronJob's template for `scheduled` (upstream `getJobFromTemplate2`):
/// the template's labels and annotations plus the scheduled-timestamp annotation,
/// and a controller reference.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let stamp = scheduled
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let stamp = stamp.replace("+00:00", "Z");
    annotations.insert(SCHEDULED_TIMESTAMP.to_string(), stamp);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner_ref("batch/v1", "CronJob", &cj.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// What to do at a scheduled time (upstream `syncCronJob` concurrency handling).
#[derive(Debug)]
pub enum Start {
    /// The Job for this time exists already (an earlier sync created it): only
    /// record the time.
    AlreadyCreated,
    /// `Forbid` with a Job still running: skip this time.
    Skip,
    /// Create the Job, after deleting these running ones (`Replace`).
    Create {
        /// Running Jobs to delete first.
        replace: Vec<Arc<Job>>,
    },
}

/// Applies `concurrencyPolicy` (`Allow`, `Forbid`, `Replace`) to the CronJob's
/// Jobs for the Job named `name`.
pub fn start(policy: &str, name: &str, children: &[Arc<Job>]) -> Start {
    if children.iter().any(|j| j.metadata.name.as_deref() == Some(name)) {
        return Start::AlreadyCreated;
    }
    let running: Vec<Arc<Job>> = children
        .iter()
        .filter(|j| job_finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    match policy {
        "Forbid" if !running.is_empty() => Start::Skip,
        "Replace" => Start::Create { replace: running },
        _ => Start::Create { replace: Vec::new() },
    }
}

fn started(j: &Job) -> Option<Timestamp> {
    j.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(j.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// Finished Jobs to delete so at most `successful` Complete and `failed` Failed
/// ones remain, oldest (by start time) first (upstream `cleanupFinishedJobs`).
pub fn over_history(jobs: &[Arc<Job>], successful: Option<i32>, failed: Option<i32>) -> Vec<Arc<Job>> {
    let mut out = Vec::new();
    for (kind, limit) in [("Complete", successful), ("Failed", failed)] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<Arc<Job>> = jobs.iter().filter(|j| job_finished(j) == Some(kind)).cloned().collect();
        done.sort_by_key(|j| started(j));
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        out.extend(done.into_iter().take(excess));
    }
    out
}

impl Ctx {
    async fn event(&self, cj: &CronJob, ty: EventType, reason: &str, message: &str) {
        record(
            &self.client,
            reference("batch/v1", "CronJob", &cj.metadata),
            ty,
            reason,
            message,
            COMPONENT,
        )
        .await;
    }

    async fn delete_job(&self, cj: &CronJob, job: &Job, why: &str) -> Result<(), Error> {
        let api: Api<Job> = Api::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        let name = job.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &dp).await {
            Ok(_) => {
                self.event(
                    cj,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted job {name}{why}"),
                )
                .await;
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn job_ref(j: &Job) -> k8s_openapi::api::core::v1::ObjectReference {
    let mut r = reference("batch/v1", "Job", &j.metadata);
    r.resource_version = j.metadata.resource_version.clone();
    r
}

fn requeue_at(next: Option<Timestamp>, now: Timestamp) -> Action {
    match next {
        // A little after the time, as upstream, so the clock has surely passed it.
        Some(t) => Action::requeue(Duration::from_millis(
            (t.as_millisecond() - now.as_millisecond()).max(0) as u64 + 100,
        )),
        None => Action::await_change(),
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();

    let children: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| {
            j.metadata.namespace.as_deref() == Some(ns.as_str())
                && controller_of(&j.metadata).is_some_and(|r| r.uid == uid)
        })
        .collect();
    let mut status: CronJobStatus = cj.status.clone().unwrap_or_default();
    let before = status.clone();

    // Active list and last successful time from the children.
    let mut active: Vec<_> = children
        .iter()
        .filter(|j| job_finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .map(|j| job_ref(j))
        .collect();
    for j in &children {
        if job_finished(j) == Some("Complete")
            && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && status.last_successful_time.as_ref().is_none_or(|t| t.0 < done.0)
        {
            status.last_successful_time = Some(done);
        }
    }
    let was_active: std::collections::BTreeSet<String> =
        before.active.iter().flatten().filter_map(|r| r.uid.clone()).collect();
    for j in children.iter().filter(|j| job_finished(j).is_some()) {
        if was_active.contains(j.metadata.uid.as_deref().unwrap_or_default()) {
            let msg = format!(
                "Saw completed job: {}, condition: {}",
                j.metadata.name.as_deref().unwrap_or_default(),
                job_finished(j).unwrap_or_default()
            );
            ctx.event(&cj, EventType::Normal, "SawCompletedJob", &msg).await;
        }
    }

    // History limits.
    for j in over_history(
        &children,
        spec.successful_jobs_history_limit,
        spec.failed_jobs_history_limit,
    ) {
        ctx.delete_job(&cj, &j, "").await?;
    }

    let mut action = Action::await_change();
    if cj.metadata.deletion_timestamp.is_none() {
        let parsed = Schedule::parse(&spec.schedule).map_err(|e| e.to_string());
        let tz = time_zone(&cj);
        match (parsed, tz) {
            (Err(e), _) | (_, Err(e)) => {
                ctx.event(&cj, EventType::Warning, "InvalidSchedule", &e).await;
            }
            (Ok(schedule), Ok(tz)) => {
                let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
                let last = status.last_schedule_time.as_ref().map(|t| t.0);
                let d = due(&schedule, &tz, created, last, spec.starting_deadline_seconds, now);
                action = requeue_at(d.next, now);
                if d.too_many_missed {
                    ctx.event(
                        &cj,
                        EventType::Warning,
                        "TooManyMissedTimes",
                        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                    )
                    .await;
                }
                if let Some(t) = d.missed_deadline {
                    let msg = format!("Missed scheduled time to start a job: {t}");
                    ctx.event(&cj, EventType::Warning, "MissSchedule", &msg).await;
                }
                let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                let suspended = spec.suspend == Some(true);
                if let Some(scheduled) = d.run.filter(|_| !suspended) {
                    let step = start(policy, &job_name(&name, scheduled), &children);
                    match step {
                        Start::AlreadyCreated => {
                            status.last_schedule_time = Some(Time(scheduled));
                        }
                        Start::Skip => {
                            let msg =
                                "Not starting job because prior execution is running and concurrency policy is Forbid";
                            ctx.event(&cj, EventType::Normal, "JobAlreadyActive", msg).await;
                        }
                        Start::Create { replace } => {
                            for j in &replace {
                                ctx.delete_job(&cj, j, " (concurrency policy Replace)").await?;
                            }
                            if !replace.is_empty() {
                                active.clear();
                            }
                            let job = job_from_template(&cj, scheduled, &tz);
                            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
                            let created = match jobs.create(&PostParams::default(), &job).await {
                                Ok(j) => {
                                    let msg = format!("Created job {}", j.metadata.name.as_deref().unwrap_or_default());
                                    ctx.event(&cj, EventType::Normal, "SuccessfulCreate", &msg).await;
                                    Some(j)
                                }
                                Err(e) if is_conflict(&e) => {
                                    // Created by an earlier sync whose status write was lost.
                                    let existing = jobs.get(job.metadata.name.as_deref().unwrap_or_default()).await?;
                                    if controller_of(&existing.metadata).is_none_or(|r| r.uid != uid) {
                                        ctx.event(&cj, EventType::Warning, "FailedCreate", &e.to_string()).await;
                                        return Err(e.into());
                                    }
                                    Some(existing)
                                }
                                Err(e) => {
                                    ctx.event(
                                        &cj,
                                        EventType::Warning,
                                        "FailedCreate",
                                        &format!("Error creating job: {e}"),
                                    )
                                    .await;
                                    return Err(e.into());
                                }
                            };
                            if let Some(j) = created {
                                if job_finished(&j).is_none() && !active.iter().any(|r| r.uid == j.metadata.uid) {
                                    active.push(job_ref(&j));
                                }
                                status.last_schedule_time = Some(Time(scheduled));
                            }
                        }
                    }
                }
            }
        }
    }

    active.sort_by(|a, b| a.name.cmp(&b.name));
    status.active = (!active.is_empty()).then_some(active);
    let norm = |s: &CronJobStatus| {
        let mut s = s.clone();
        for r in s.active.iter_mut().flatten() {
            r.resource_version = None;
        }
        s
    };
    if norm(&status) != norm(&before) {
        let mut next = (*cj).clone();
        next.status = Some(status);
        // The resourceVersion makes a write from a stale cache fail instead of
        // forgetting a Job (or a schedule time) recorded meanwhile.
        api.replace_status(&name, &PostParams::default(), &next).await?;
    }
    Ok(action)
}

fn error_policy(_cj: Arc<CronJob>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    match e {
        Error::Kube(k) if is_conflict(k) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::warn!(error = %e, "cronjob sync failed");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// Runs the CronJob controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let (jobs, job_writer) = reflector::store::<Job>();
    let (cronjobs, cj_writer) = reflector::store::<CronJob>();
    // Jobs feed the cache the reconciler reads and trigger their owning CronJob.
    let job_events = watcher(Api::<Job>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(job_writer)
        .applied_objects()
        .map_ok(|j: Job| {
            let ns = j.metadata.namespace.clone().unwrap_or_default();
            let owner = controller_of(&j.metadata)
                .filter(|r| r.kind == "CronJob")
                .map(|r| ObjectRef::<CronJob>::new(&r.name).within(&ns));
            stream::iter(owner.into_iter().map(Ok::<_, watcher::Error>))
        })
        .try_flatten();
    let cj_events = watcher(Api::<CronJob>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(cj_writer)
        .applied_objects()
        .map_ok(|cj| ObjectRef::from_obj(&cj));
    let ctx = Arc::new(Ctx { client, jobs });
    let queue = stream::select(cj_events, job_events);
    let token = shutdown.clone();
    let reconciler = |cj, ctx| Box::pin(reconcile(cj, ctx));
    applier(reconciler, error_policy, ctx, cronjobs, queue, Config::default())
        .take_until(async move { token.cancelled().await })
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn due_runs_only_the_most_recent_missed_time() {
        let every_minute = Schedule::parse("*/1 * * * *").unwrap();
        let utc = TimeZone::UTC;
        let created = ts("2026-03-01T10:00:30Z");
        struct Case {
            name: &'static str,
            last: Option<&'static str>,
            deadline: Option<i64>,
            now: &'static str,
            run: Option<&'static str>,
            missed: Option<&'static str>,
            next: &'static str,
        }
        let cases = [
            Case {
                name: "not yet",
                last: None,
                deadline: None,
                now: "2026-03-01T10:00:50Z",
                run: None,
                missed: None,
                next: "2026-03-01T10:01:00Z",
            },
            Case {
                name: "first time",
                last: None,
                deadline: None,
                now: "2026-03-01T10:01:02Z",
                run: Some("2026-03-01T10:01:00Z"),
                missed: None,
                next: "2026-03-01T10:02:00Z",
            },
            Case {
                name: "already ran",
                last: Some("2026-03-01T10:01:00Z"),
                deadline: None,
                now: "2026-03-01T10:01:30Z",
                run: None,
                missed: None,
                next: "2026-03-01T10:02:00Z",
            },
            Case {
                name: "several missed: latest",
                last: Some("2026-03-01T10:01:00Z"),
                deadline: None,
                now: "2026-03-01T10:05:10Z",
                run: Some("2026-03-01T10:05:00Z"),
                missed: None,
                next: "2026-03-01T10:06:00Z",
            },
            Case {
                name: "within the deadline",
                last: None,
                deadline: Some(20),
                now: "2026-03-01T10:01:15Z",
                run: Some("2026-03-01T10:01:00Z"),
                missed: None,
                next: "2026-03-01T10:02:00Z",
            },
            Case {
                name: "deadline passed",
                last: None,
                deadline: Some(10),
                now: "2026-03-01T10:01:15Z",
                run: None,
                missed: None,
                next: "2026-03-01T10:02:00Z",
            },
        ];
        for c in cases {
            let d = due(&every_minute, &utc, created, c.last.map(ts), c.deadline, ts(c.now));
            assert_eq!(d.run, c.run.map(ts), "{}: run", c.name);
            assert_eq!(d.missed_deadline, c.missed.map(ts), "{}: missed", c.name);
            assert_eq!(d.next, Some(ts(c.next)), "{}: next", c.name);
            assert!(!d.too_many_missed, "{}", c.name);
        }
        let hourly = Schedule::parse("@hourly").unwrap();
        let d = due(&hourly, &utc, created, None, Some(600), ts("2026-03-01T11:20:00Z"));
        assert_eq!(d.run, None, "an hour-old time is past a 10-minute deadline");
        let d = due(&every_minute, &utc, created, None, None, ts("2026-03-01T13:00:00Z"));
        assert!(d.too_many_missed);
        assert_eq!(d.run, Some(ts("2026-03-01T13:00:00Z")));
    }

    #[test]
    fn jobs_are_named_and_annotated_after_their_scheduled_time() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "report", "namespace": "ns", "uid": "cu"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"metadata": {"labels": {"app": "r"}},
                "spec": {"template": {"spec": {"containers": []}}}}}
        }))
        .unwrap();
        let t = ts("2026-03-01T10:01:00Z");
        let j = job_from_template(&cj, t, &TimeZone::UTC);
        assert_eq!(
            j.metadata.name.as_deref(),
            Some(format!("report-{}", t.as_second() / 60).as_str())
        );
        assert_eq!(
            j.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
            "2026-03-01T10:01:00Z"
        );
        assert_eq!(j.metadata.labels.as_ref().unwrap()["app"], "r");
        let owner = &j.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("CronJob", Some(true)));
        let ny = TimeZone::get("America/New_York").unwrap();
        let j = job_from_template(&cj, t, &ny);
        assert_eq!(
            j.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
            "2026-03-01T05:01:00-05:00"
        );
    }

    #[test]
    fn concurrency_policy_decides_how_a_time_starts() {
        let job = |name: &str, cond: Option<&str>| -> Arc<Job> {
            let conds = cond.map(|c| json!([{"type": c, "status": "True"}]));
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": name}, "status": {"conditions": conds}})).unwrap(),
            )
        };
        let running = vec![job("cj-1", None), job("cj-0", Some("Complete"))];
        let done = vec![job("cj-0", Some("Complete"))];
        assert!(matches!(start("Allow", "cj-2", &running), Start::Create { replace } if replace.is_empty()));
        assert!(matches!(start("Forbid", "cj-2", &running), Start::Skip));
        assert!(matches!(start("Forbid", "cj-2", &done), Start::Create { .. }));
        let Start::Create { replace } = start("Replace", "cj-2", &running) else {
            panic!("Replace creates")
        };
        assert_eq!(replace.len(), 1);
        assert_eq!(replace[0].metadata.name.as_deref(), Some("cj-1"));
        assert!(matches!(start("Forbid", "cj-1", &running), Start::AlreadyCreated));
        assert!(matches!(start("Replace", "cj-1", &running), Start::AlreadyCreated));
    }

    #[test]
    fn history_limits_delete_the_oldest_finished_jobs() {
        let job = |name: &str, cond: Option<&str>, start: &str| -> Arc<Job> {
            let conds = cond.map(|c| json!([{"type": c, "status": "True"}]));
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": name},
                    "status": {"startTime": start, "conditions": conds}}))
                .unwrap(),
            )
        };
        let jobs = vec![
            job("ok-new", Some("Complete"), "2026-01-03T00:00:00Z"),
            job("ok-old", Some("Complete"), "2026-01-01T00:00:00Z"),
            job("ok-mid", Some("Complete"), "2026-01-02T00:00:00Z"),
            job("bad-old", Some("Failed"), "2026-01-01T00:00:00Z"),
            job("bad-new", Some("Failed"), "2026-01-02T00:00:00Z"),
            job("running", None, "2026-01-01T00:00:00Z"),
        ];
        let names = |v: Vec<Arc<Job>>| v.iter().map(|j| j.metadata.name.clone().unwrap()).collect::<Vec<_>>();
        assert_eq!(
            names(over_history(&jobs, Some(1), Some(1))),
            vec!["ok-old", "ok-mid", "bad-old"]
        );
        assert_eq!(
            names(over_history(&jobs, Some(0), None)),
            vec!["ok-old", "ok-mid", "ok-new"]
        );
        assert!(over_history(&jobs, Some(3), Some(2)).is_empty());
    }
}
