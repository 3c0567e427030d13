//! Deployment controller (pkg/controller/deployment): manages ReplicaSets for a
//! Deployment's pod template, rolls out changes with RollingUpdate
//! (maxSurge/maxUnavailable) or Recreate, keeps revision history and reports status
//! and conditions that `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{controller_of, owner_ref, record, reference, selector_string};
use crate::rollout;

const COMPONENT: &str = "deployment-controller";
const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

struct Ctx {
    client: kube::Client,
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// The template without the hash label, for comparing a ReplicaSet with the Deployment.
fn template_without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    t
}

async fn scale(ctx: &Ctx, d: &Deployment, rs: &ReplicaSet, replicas: i32, revision: Option<i64>) -> Result<(), Error> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let want_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (surge, _) = fenceposts(d);
    let mut annotations =
        json!({DESIRED: want_replicas.to_string(), MAX_REPLICAS: (want_replicas + surge).to_string()});
    if let Some(r) = revision {
        annotations[REVISION] = json!(r.to_string());
        // The new ReplicaSet carries the Deployment's own annotations (what
        // `kubectl rollout undo` copies back).
        for (k, v) in copied_annotations(d) {
            annotations[k] = json!(v);
        }
    }
    let old = spec_replicas(rs);
    let same_annotations = rs.metadata.annotations.as_ref().is_some_and(|a| {
        annotations
            .as_object()
            .expect("object")
            .iter()
            .all(|(k, v)| a.get(k).map(String::as_str) == v.as_str())
    });
    if old == replicas && same_annotations {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}});
    Api::<ReplicaSet>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    if old != replicas {
        let verb = if replicas > old { "up" } else { "down" };
        record(
            &ctx.client,
            reference("apps/v1", "Deployment", &d.metadata),
            EventType::Normal,
            "ScalingReplicaSet",
            &format!("Scaled {verb} replica set {name} from {old} to {replicas}"),
            COMPONENT,
        )
        .await;
    }
    Ok(())
}

/// Deployment annotations copied to its new ReplicaSet (upstream
/// `copyDeploymentAnnotationsToReplicaSet`): all but kubectl's last-applied
/// configuration and the controller's own bookkeeping.
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    const SKIP: &[&str] = &[
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        DESIRED,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    ];
    d.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !SKIP.contains(&k.as_str()))
        .collect()
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return (0, 0);
    }
    let ru = strategy.rolling_update.unwrap_or_default();
    rollout::fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), replicas)
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let all = rs_api
        .list(&ListParams::default().labels(&selector_string(&spec.selector)))
        .await?;
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in all.items {
        match controller_of(&rs.metadata) {
            Some(r) if r.uid == uid => owned.push(rs),
            Some(_) => {}
            None => {
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(owner_ref("apps/v1", "Deployment", &d.metadata));
                let rname = rs.metadata.name.clone().unwrap_or_default();
                if let Ok(rs) = rs_api
                    .patch(
                        &rname,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"ownerReferences": refs}})),
                    )
                    .await
                {
                    owned.push(rs);
                }
            }
        }
    }
    let template = spec.template.clone();
    let template_json = serde_json::to_string(&template_without_hash(&template))?;
    let hash = rollout::template_hash(&template_json, d.status.as_ref().and_then(|s| s.collision_count));
    let max_revision = owned.iter().map(revision_of).max().unwrap_or(0);
    let new_idx = owned.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(template_without_hash)
            .as_ref()
            .map(serde_json::to_string)
            .and_then(Result::ok)
            == Some(template_json.clone())
    });
    let (surge, unavailable) = fenceposts(&d);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let paused = spec.paused == Some(true);
    let mut new_rs = new_idx.map(|i| owned.remove(i));
    let mut old: Vec<ReplicaSet> = owned;
    old.sort_by_key(|rs| {
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0)
    });

    if !paused {
        // The new ReplicaSet carries the highest revision.
        let new_revision = match &new_rs {
            Some(rs) if old.iter().all(|o| revision_of(o) < revision_of(rs)) => revision_of(rs),
            _ => max_revision + 1,
        };
        if new_rs.is_none() {
            let old_total: i32 = old.iter().map(spec_replicas).sum();
            let initial = if recreate {
                0
            } else {
                rollout::new_rs_replicas(replicas, surge, old_total, 0)
            };
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone());
            let mut tmpl = template.clone();
            tmpl.metadata.get_or_insert_with(Default::default).labels = Some(labels.clone());
            let mut selector: LabelSelector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(HASH_LABEL.into(), hash.clone());
            let mut annotations = copied_annotations(&d);
            annotations.insert(REVISION.into(), new_revision.to_string());
            annotations.insert(DESIRED.into(), replicas.to_string());
            annotations.insert(MAX_REPLICAS.into(), (replicas + surge).to_string());
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{hash}")),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    owner_references: Some(vec![owner_ref("apps/v1", "Deployment", &d.metadata)]),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                    replicas: Some(initial),
                    min_ready_seconds: spec.min_ready_seconds,
                    selector,
                    template: Some(tmpl),
                }),
                status: None,
            };
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => {
                    record(
                        &ctx.client,
                        reference("apps/v1", "Deployment", &d.metadata),
                        EventType::Normal,
                        "ScalingReplicaSet",
                        &format!(
                            "Scaled up replica set {} from 0 to {initial}",
                            created.metadata.name.clone().unwrap_or_default()
                        ),
                        COMPONENT,
                    )
                    .await;
                    new_rs = Some(created);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // A ReplicaSet with this name but another template: a hash collision.
                    let count = d.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0) + 1;
                    Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"collisionCount": count}})),
                        )
                        .await?;
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let new = new_rs.clone().expect("new ReplicaSet exists");
        if recreate {
            let old_active: i32 = old.iter().map(|rs| status_of(rs).0).sum();
            for rs in &old {
                scale(&ctx, &d, rs, 0, None).await?;
            }
            let pods_left = if old_active == 0 {
                count_old_pods(&ctx, &ns, &old).await?
            } else {
                old_active
            };
            if pods_left == 0 {
                scale(&ctx, &d, &new, replicas, Some(new_revision)).await?;
            } else {
                scale(&ctx, &d, &new, spec_replicas(&new), Some(new_revision)).await?;
            }
        } else {
            let total: i32 = old.iter().map(spec_replicas).sum::<i32>() + spec_replicas(&new);
            let target = if spec_replicas(&new) > replicas {
                replicas
            } else {
                rollout::new_rs_replicas(replicas, surge, total, spec_replicas(&new))
            };
            scale(&ctx, &d, &new, target, Some(new_revision)).await?;
            // Scale down old ReplicaSets as far as availability allows.
            let all_pods: i32 = old.iter().map(spec_replicas).sum::<i32>() + target;
            let mut budget = rollout::max_scaled_down(all_pods, replicas, unavailable, target, status_of(&new).2);
            // First old pods that are not available anyway.
            for rs in old.iter_mut() {
                if budget <= 0 {
                    break;
                }
                let unhealthy = spec_replicas(rs) - status_of(rs).2;
                if unhealthy > 0 {
                    let by = unhealthy.min(budget);
                    scale(&ctx, &d, rs, spec_replicas(rs) - by, None).await?;
                    rs.spec.get_or_insert_with(Default::default).replicas = Some(spec_replicas(rs) - by);
                    budget -= by;
                }
            }
            // Then available ones, oldest first, keeping minAvailable.
            let available: i32 =
                old.iter().map(|rs| status_of(rs).2.min(spec_replicas(rs))).sum::<i32>() + status_of(&new).2;
            let mut can = (available - (replicas - unavailable)).min(budget).max(0);
            for rs in old.iter_mut() {
                if can <= 0 {
                    break;
                }
                let by = spec_replicas(rs).min(can);
                if by > 0 {
                    scale(&ctx, &d, rs, spec_replicas(rs) - by, None).await?;
                    rs.spec.get_or_insert_with(Default::default).replicas = Some(spec_replicas(rs) - by);
                    can -= by;
                }
            }
        }
        // Revision history: delete the oldest fully scaled-down old ReplicaSets.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut dead: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
            .collect();
        dead.sort_by_key(|rs| revision_of(rs));
        if dead.len() > limit {
            for rs in &dead[..dead.len() - limit] {
                let _ = rs_api
                    .delete(
                        rs.metadata.name.as_deref().unwrap_or_default(),
                        &DeleteParams::background(),
                    )
                    .await;
            }
        }
        // The Deployment carries the current revision.
        let dep_rev = d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
        if dep_rev != Some(new_revision.to_string()) {
            Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {REVISION: new_revision.to_string()}}})),
                )
                .await?;
        }
    }
    sync_status(&ctx, &d, new_rs.as_ref(), &old, unavailable).await
}

async fn count_old_pods(ctx: &Ctx, ns: &str, old: &[ReplicaSet]) -> Result<i32, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut n = 0;
    for rs in old {
        let sel = rs
            .spec
            .as_ref()
            .map(|s| selector_string(&s.selector))
            .unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        n += pods
            .list(&ListParams::default().labels(&sel))
            .await?
            .items
            .iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
            .count() as i32;
    }
    Ok(n)
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, prev: Option<&Value>, now: &str) -> Value {
    let same = prev.is_some_and(|p| p["status"] == status);
    let transition = if same {
        prev.map(|p| p["lastTransitionTime"].clone()).unwrap_or(json!(now))
    } else {
        json!(now)
    };
    let same_reason = prev.is_some_and(|p| p["reason"] == reason && p["message"] == message);
    let update = if same_reason {
        prev.map(|p| p["lastUpdateTime"].clone()).unwrap_or(json!(now))
    } else {
        json!(now)
    };
    json!({"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": transition, "lastUpdateTime": update})
}

async fn sync_status(
    ctx: &Ctx,
    d: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    max_unavailable: i32,
) -> Result<Action, Error> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let all: Vec<&ReplicaSet> = new.into_iter().chain(old.iter()).collect();
    let total: i32 = all.iter().map(|rs| status_of(rs).0).sum();
    let ready: i32 = all.iter().map(|rs| status_of(rs).1).sum();
    let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
    let updated = new.map(|rs| status_of(rs).0).unwrap_or(0);
    let now = skiff_api::events::now_string();
    let prev: Vec<Value> = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
        .unwrap_or_default();
    let find = |t: &str| prev.iter().find(|c| c["type"] == t);
    let available_cond = if available >= replicas - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            find("Available"),
            &now,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            find("Available"),
            &now,
        )
    };
    let new_name = new.and_then(|rs| rs.metadata.name.clone()).unwrap_or_default();
    let old_active: i32 = old.iter().map(|rs| spec_replicas(rs).max(status_of(rs).0)).sum();
    let complete = new.is_some_and(|rs| spec_replicas(rs) == replicas)
        && updated == replicas
        && available >= replicas
        && old_active == 0
        && total == replicas;
    let deadline = spec.progress_deadline_seconds.unwrap_or(600) as i64;
    let prev_progress = find("Progressing");
    let progressing = if spec.paused == Some(true) {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            prev_progress,
            &now,
        )
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            prev_progress,
            &now,
        )
    } else {
        let c = condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{new_name}\" is progressing."),
            prev_progress,
            &now,
        );
        let since = c["lastUpdateTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let moved = d.status.as_ref().is_some_and(|s| {
            s.updated_replicas.unwrap_or(0) != updated || s.available_replicas.unwrap_or(0) != available
        });
        if !moved && since.is_some_and(|t| jiff::Timestamp::now().as_second() - t.as_second() > deadline) {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                prev_progress,
                &now,
            )
        } else if moved {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{new_name}\" is progressing."),
                None,
                &now,
            )
        } else {
            c
        }
    };
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": total, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": (replicas - available).max(0),
        "conditions": [available_cond, progressing],
    });
    let current = serde_json::to_value(d.status.clone().unwrap_or_default())?;
    let keys = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "conditions",
    ];
    let norm = |v: &Value, k: &str| -> Value {
        match v.get(k) {
            None | Some(Value::Null) if k != "conditions" => json!(0),
            Some(x) => x.clone(),
            None => json!([]),
        }
    };
    if keys.iter().any(|k| norm(&current, k) != norm(&status, k)) {
        // Conditions are replaced wholesale: a merge patch of the full list.
        Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await?;
    }
    if !complete {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    Ok(Action::await_change())
}

fn error_policy(_d: Arc<Deployment>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "deployment sync failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the Deployment controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx { client: client.clone() });
    Controller::new(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .owns(Api::<ReplicaSet>::all(client), watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
