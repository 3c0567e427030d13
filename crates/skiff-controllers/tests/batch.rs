//! Job (and CronJob) behaviour through a real in-process apiserver. There is no
//! kubelet: the tests finish pods by writing their `status.phase`, as a kubelet
//! would.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut s = json!({"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox"}]}}});
    s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": s})).unwrap()
}

async fn job_pods(client: &kube::Client, name: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

async fn set_phase(client: &kube::Client, p: &Pod, phase: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let _ = api
        .patch_status(
            p.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase}})),
        )
        .await;
}

fn has_condition(j: &Job, ty: &str) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == ty && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_completions_with_bounded_parallelism_and_completes() {
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let jobs: Api<Job> = Api::namespaced(cp.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("work", json!({"completions": 3, "parallelism": 2})),
    )
    .await
    .unwrap();
    let created = jobs.get("work").await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert_eq!(
        created
            .spec
            .as_ref()
            .unwrap()
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["batch.kubernetes.io/controller-uid"],
        uid,
        "the apiserver generated the selector"
    );

    // Finish pods one at a time as they appear, checking the parallelism bound.
    let max_running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = eventually("the job to complete", WAIT, || {
        let (client, jobs) = (cp.client.clone(), jobs.clone());
        let max_running = max_running.clone();
        async move {
            let pods = job_pods(&client, "work").await;
            let running: Vec<&Pod> = pods
                .iter()
                .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none())
                .collect();
            max_running.fetch_max(running.len(), std::sync::atomic::Ordering::SeqCst);
            if let Some(p) = running.first() {
                set_phase(&client, p, "Succeeded").await;
            }
            let j = jobs.get("work").await.ok()?;
            has_condition(&j, "Complete").then_some(j)
        }
    })
    .await;
    let max_running = max_running.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        max_running <= 2,
        "at most parallelism=2 pods ran at once, saw {max_running}"
    );
    let s = done.status.clone().unwrap();
    assert_eq!(s.succeeded, Some(3));
    assert_eq!(s.failed.unwrap_or(0), 0);
    assert_eq!(s.active.unwrap_or(0), 0);
    assert!(s.start_time.is_some() && s.completion_time.is_some());
    assert!(
        has_condition(&done, "SuccessCriteriaMet"),
        "SuccessCriteriaMet precedes Complete"
    );

    let pods = job_pods(&cp.client, "work").await;
    assert_eq!(pods.len(), 3, "exactly three pods were created");
    for p in &pods {
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(labels["job-name"], "work");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    }
    // The tracking finalizers are removed once the pods are counted.
    eventually("finalizers removed", WAIT, || async {
        let pods = job_pods(&cp.client, "work").await;
        pods.iter()
            .all(|p| p.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_fails_once_the_backoff_limit_is_exceeded() {
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let jobs: Api<Job> = Api::namespaced(cp.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("flaky", json!({"backoffLimit": 1})))
        .await
        .unwrap();
    // The second failure (after the 10 s backoff) exceeds backoffLimit=1.
    let failed = eventually("the job to fail", WAIT + Duration::from_secs(10), || async {
        for p in job_pods(&cp.client, "flaky").await {
            if phase(&p) == "Pending" {
                set_phase(&cp.client, &p, "Failed").await;
            }
        }
        let j = jobs.get("flaky").await.ok()?;
        has_condition(&j, "Failed").then_some(j)
    })
    .await;
    let s = failed.status.clone().unwrap();
    assert_eq!(s.failed, Some(2));
    let cond = s.conditions.unwrap().into_iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(cond.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert!(has_condition(&failed, "FailureTarget"));
    assert_eq!(job_pods(&cp.client, "flaky").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_completes_every_index_and_is_deleted_after_its_ttl() {
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let jobs: Api<Job> = Api::namespaced(cp.client.clone(), "default");
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "ttlSecondsAfterFinished": 1});
    jobs.create(&PostParams::default(), &job("idx", spec)).await.unwrap();
    let pods = eventually("three indexed pods", WAIT, || async {
        let pods = job_pods(&cp.client, "idx").await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    let mut indexes: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"].clone())
        .collect();
    indexes.sort();
    assert_eq!(indexes, vec!["0", "1", "2"]);
    for p in &pods {
        let i = &p.metadata.labels.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"];
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        assert!(
            spec.containers[0]
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == "JOB_COMPLETION_INDEX")
        );
        assert!(
            p.metadata
                .finalizers
                .as_ref()
                .unwrap()
                .iter()
                .any(|f| f == "batch.kubernetes.io/job-tracking")
        );
        set_phase(&cp.client, p, "Succeeded").await;
    }
    let done = eventually("the indexed job to complete", WAIT, || async {
        let j = jobs.get("idx").await.ok()?;
        has_condition(&j, "Complete").then_some(j)
    })
    .await;
    assert_eq!(done.status.unwrap().completed_indexes.as_deref(), Some("0-2"));
    eventually("the finished job deleted after its TTL", WAIT, || async {
        jobs.get_opt("idx").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_runs_the_missed_schedule_on_resume_and_tracks_the_job() {
    use k8s_openapi::api::batch::v1::CronJob;
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let cronjobs: Api<CronJob> = Api::namespaced(cp.client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick"},
        "spec": {"schedule": "*/1 * * * *", "timeZone": "Etc/UTC", "suspend": true,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"metadata": {"labels": {"app": "tick"}}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}},
    }))
    .unwrap();
    cronjobs.create(&PostParams::default(), &cj).await.unwrap();
    // Pretend the last run was two minutes ago; resuming then owes one run: the
    // most recent whole minute.
    let two_minutes_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120);
    cronjobs
        .patch_status(
            "tick",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(two_minutes_ago)}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs: Api<Job> = Api::namespaced(cp.client.clone(), "default");
    assert!(
        jobs.list(&ListParams::default()).await.unwrap().items.is_empty(),
        "a suspended CronJob starts nothing"
    );
    cronjobs
        .patch(
            "tick",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    let job = eventually("a job from the cronjob", WAIT, || async {
        jobs.list(&ListParams::default()).await.ok()?.items.into_iter().next()
    })
    .await;
    let name = job.metadata.name.clone().unwrap();
    let stamp = &job.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/cronjob-scheduled-timestamp"];
    let scheduled: jiff::Timestamp = stamp.parse().unwrap();
    assert_eq!(scheduled.as_second() % 60, 0, "scheduled on a whole minute");
    assert_eq!(name, format!("tick-{}", scheduled.as_second() / 60));
    assert_eq!(job.metadata.labels.as_ref().unwrap()["app"], "tick");
    let status = eventually("the job listed as active", WAIT, || async {
        let s = cronjobs.get("tick").await.ok()?.status?;
        s.active
            .as_ref()
            .is_some_and(|a| a.iter().any(|r| r.name.as_deref() == Some(name.as_str())))
            .then_some(s)
    })
    .await;
    assert_eq!(status.last_schedule_time.map(|t| t.0), Some(scheduled));

    // The Job's pod succeeds: the CronJob records a successful run.
    let status = eventually("lastSuccessfulTime", WAIT, || async {
        for p in job_pods(&cp.client, &name).await {
            if phase(&p) == "Pending" {
                set_phase(&cp.client, &p, "Succeeded").await;
            }
        }
        let s = cronjobs.get("tick").await.ok()?.status?;
        (s.last_successful_time.is_some() && s.active.as_ref().is_none_or(|a| a.is_empty())).then_some(s)
    })
    .await;
    assert!(status.last_successful_time.unwrap().0 >= scheduled);
    // Only the most recent missed time ran, not the older one.
    for j in jobs.list(&ListParams::default()).await.unwrap().items {
        assert!(j.metadata.name.unwrap() >= name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_job_starts_on_resume_and_deadline_fails_it() {
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let jobs: Api<Job> = Api::namespaced(cp.client.clone(), "default");
    let spec = json!({"completions": 4, "parallelism": 2, "suspend": true, "activeDeadlineSeconds": 2});
    jobs.create(&PostParams::default(), &job("later", spec)).await.unwrap();
    let suspended = eventually("the Suspended condition", WAIT, || async {
        let j = jobs.get("later").await.ok()?;
        has_condition(&j, "Suspended").then_some(j)
    })
    .await;
    assert!(
        suspended.status.unwrap().start_time.is_none(),
        "a suspended job has not started"
    );
    assert!(job_pods(&cp.client, "later").await.is_empty());

    jobs.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    eventually("two pods after resuming", WAIT, || async {
        (job_pods(&cp.client, "later").await.len() == 2).then_some(())
    })
    .await;
    // Nothing finishes: the deadline (counted from the resume) fails the job and
    // its running pods are removed.
    let failed = eventually("the deadline to fail the job", WAIT, || async {
        let j = jobs.get("later").await.ok()?;
        has_condition(&j, "Failed").then_some(j)
    })
    .await;
    let s = failed.status.clone().unwrap();
    let cond = s.conditions.unwrap().into_iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(cond.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(s.active.unwrap_or(0), 0);
    assert!(!has_condition(&failed, "Suspended"));
    eventually("the job's pods removed", WAIT, || async {
        job_pods(&cp.client, "later").await.is_empty().then_some(())
    })
    .await;
}
