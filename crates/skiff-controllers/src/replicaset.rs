//! ReplicaSet controller (pkg/controller/replicaset): keeps `spec.replicas` active
//! pods matching the selector, owned through a controller reference.
//!
//! Each reconcile lists the pods from the apiserver (a consistent read), so a slow
//! watch can never make it create pods twice; the list is the expectation.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use skiff_api::events::EventType;
use skiff_api::selector::LabelSelector;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{controller_of, is_available, is_inactive, owner_ref, record, reference, selector_string};

const COMPONENT: &str = "replicaset-controller";
/// Upstream's burst limit for creations per sync.
const BURST: usize = 500;

struct Ctx {
    client: kube::Client,
}

/// Scale-down order (upstream `ActivePods` ranking): unscheduled before scheduled,
/// pending before running, not-ready before ready, more restarts first, newer first.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, i64, i64) {
    let scheduled = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let ready = crate::common::ready_since(p).is_some();
    let restarts: i32 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        scheduled as u8,
        (phase == "Running") as u8,
        ready as u8,
        -(restarts as i64),
        -created,
    )
}

/// Sorts pods so the first ones are the best to delete.
pub fn rank_for_deletion(pods: &mut [Pod]) {
    pods.sort_by_key(deletion_rank);
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = LabelSelector::from_label_selector_json(&serde_json::to_value(&spec.selector)?)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let listed = pods_api
        .list(&ListParams::default().labels(&selector_string(&spec.selector)))
        .await?;
    let mut owned = Vec::new();
    for pod in listed.items {
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => owned.push(pod),
            Some(_) => {}
            None if rs.metadata.deletion_timestamp.is_none() && pod.metadata.deletion_timestamp.is_none() => {
                // Adopt an orphan that matches the selector.
                let labels = serde_json::to_value(&pod.metadata)?;
                if selector.matches_object(&json!({"metadata": labels})) {
                    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(owner_ref("apps/v1", "ReplicaSet", &rs.metadata));
                    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
                    let pname = pod.metadata.name.clone().unwrap_or_default();
                    match pods_api
                        .patch(&pname, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(p) => owned.push(p),
                        Err(e) => tracing::debug!(error = %e, "adopting pod failed"),
                    }
                }
            }
            None => {}
        }
    }
    let mut active: Vec<Pod> = owned.iter().filter(|p| !is_inactive(p)).cloned().collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    if rs.metadata.deletion_timestamp.is_none() {
        if active.len() < want {
            let n = (want - active.len()).min(BURST);
            let template = spec.template.clone().unwrap_or_default();
            for _ in 0..n {
                let mut meta = template.metadata.clone().unwrap_or_default();
                meta.generate_name = Some(format!("{name}-"));
                meta.namespace = Some(ns.clone());
                meta.owner_references = Some(vec![owner_ref("apps/v1", "ReplicaSet", &rs.metadata)]);
                let pod = Pod {
                    metadata: meta,
                    spec: template.spec.clone(),
                    status: None,
                };
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        let pname = p.metadata.name.clone().unwrap_or_default();
                        record(
                            &ctx.client,
                            reference("apps/v1", "ReplicaSet", &rs.metadata),
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {pname}"),
                            COMPONENT,
                        )
                        .await;
                        active.push(p);
                    }
                    Err(e) => {
                        record(
                            &ctx.client,
                            reference("apps/v1", "ReplicaSet", &rs.metadata),
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {e}"),
                            COMPONENT,
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
        } else if active.len() > want {
            rank_for_deletion(&mut active);
            let excess = active.len() - want;
            for pod in active.drain(..excess) {
                let pname = pod.metadata.name.clone().unwrap_or_default();
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: pod.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match pods_api.delete(&pname, &dp).await {
                    Ok(_) => {
                        record(
                            &ctx.client,
                            reference("apps/v1", "ReplicaSet", &rs.metadata),
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {pname}"),
                            COMPONENT,
                        )
                        .await
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    // Status.
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let ready = active
        .iter()
        .filter(|p| crate::common::ready_since(p).is_some())
        .count();
    let available = active.iter().filter(|p| is_available(p, min_ready, now)).count();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let status = json!({
        "replicas": active.len(), "fullyLabeledReplicas": fully_labeled, "readyReplicas": ready,
        "availableReplicas": available, "observedGeneration": rs.metadata.generation,
    });
    let current = serde_json::to_value(rs.status.clone().unwrap_or_default())?;
    let changed = [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .any(|k| current.get(*k).cloned().unwrap_or(json!(0)) != status[*k]);
    if changed {
        rs_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await?;
    }
    if ready > available {
        return Ok(Action::requeue(Duration::from_secs(min_ready.max(1) as u64)));
    }
    Ok(Action::await_change())
}

fn error_policy(_rs: Arc<ReplicaSet>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "replicaset sync failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the ReplicaSet controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx { client: client.clone() });
    Controller::new(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client), watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn scale_down_prefers_unscheduled_then_not_ready_then_newer() {
        let mut pods = vec![
            pod("ready-old", Some("n"), "Running", true, "2026-01-01T00:00:00Z"),
            pod("ready-new", Some("n"), "Running", true, "2026-01-02T00:00:00Z"),
            pod("unscheduled", None, "Pending", false, "2026-01-01T00:00:00Z"),
            pod("notready", Some("n"), "Running", false, "2026-01-01T00:00:00Z"),
        ];
        rank_for_deletion(&mut pods);
        let names: Vec<_> = pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, vec!["unscheduled", "notready", "ready-new", "ready-old"]);
    }
}
