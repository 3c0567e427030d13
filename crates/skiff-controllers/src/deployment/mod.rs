//! Deployment controller (upstream pkg/controller/deployment): manages ReplicaSets
//! for a Deployment's pod template.
//!
//! - The **new** ReplicaSet is the one whose template equals the Deployment's
//!   (ignoring the `pod-template-hash` label); it is created as `<name>-<hash>` with
//!   the hash added to its selector and template labels.
//! - **RollingUpdate** scales the new ReplicaSet up within `maxSurge` and old ones
//!   down within `maxUnavailable` (unhealthy old pods first); **Recreate** scales all
//!   old ones to zero, waits until their pods are gone, then creates the new one.
//! - Resizing a Deployment mid-rollout scales its ReplicaSets proportionally;
//!   pausing stops rollouts but not resizing.
//! - Revisions live in `deployment.kubernetes.io/revision` on ReplicaSets and the
//!   Deployment; old ReplicaSets beyond `revisionHistoryLimit` are deleted.
//! - `status` and the Available/Progressing/ReplicaFailure conditions are computed in
//!   [`status`]; `ScalingReplicaSet` events record every resize.

pub mod status;
mod sync;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{controller_of, owner_ref, record, reference, selector_string};
use crate::rollout;
use sync::Sync;

const COMPONENT: &str = "deployment-controller";
/// Label that tells ReplicaSets of one Deployment apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Annotation with a ReplicaSet's (and the Deployment's current) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation listing earlier revisions a reused ReplicaSet had.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Annotation with the Deployment's `spec.replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation with `spec.replicas + maxSurge` when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

struct Ctx {
    client: kube::Client,
}

fn spec_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_spec(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A ReplicaSet's revision (0 if unset).
pub fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        != Some("Recreate")
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    rollout::fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), spec_replicas(d))
}

/// Upstream `MaxUnavailable`: 0 for Recreate or zero replicas, else the resolved
/// `maxUnavailable` capped at `spec.replicas`.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || spec_replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(spec_replicas(d))
}

/// Upstream `MaxSurge`: 0 for Recreate, else the resolved `maxSurge`.
pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    t
}

/// Upstream `EqualIgnoreHash`: templates equal once the hash label is removed.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The index of the new ReplicaSet: the oldest whose template matches.
pub fn find_new(d: &Deployment, rss: &[ReplicaSet]) -> Option<usize> {
    let template = &d.spec.as_ref()?.template;
    rss.iter()
        .enumerate()
        .filter(|(_, rs)| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignoring_hash(t, template))
        })
        .min_by_key(|(_, rs)| (created(rs), rs.metadata.name.clone()))
        .map(|(i, _)| i)
}

/// The template's `pod-template-hash` (with the collision count mixed in).
pub fn template_hash(d: &Deployment) -> Result<String, Error> {
    let template = d.spec.as_ref().map(|s| without_hash(&s.template)).unwrap_or_default();
    let json = serde_json::to_string(&template)?;
    Ok(rollout::template_hash(
        &json,
        d.status.as_ref().and_then(|s| s.collision_count),
    ))
}

/// Deployment annotations copied to its new ReplicaSet (upstream
/// `copyDeploymentAnnotationsToReplicaSet`): all but kubectl's last-applied
/// configuration and the controller's own bookkeeping.
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    const SKIP: &[&str] = &[
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
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

/// Upstream `IsSaturated`: the new ReplicaSet has all replicas, all available.
fn saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let want = spec_replicas(d);
    rs_spec(rs) == want
        && annotation(&rs.metadata, DESIRED_REPLICAS).and_then(|v| v.parse().ok()) == Some(want)
        && rs_available(rs) == want
}

/// Upstream `isScalingEvent`: an active ReplicaSet was scaled for another size.
fn is_scaling_event(d: &Deployment, rss: &[ReplicaSet]) -> bool {
    rss.iter().filter(|rs| rs_spec(rs) > 0).any(|rs| {
        annotation(&rs.metadata, DESIRED_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|desired| desired != spec_replicas(d))
    })
}

/// Lists the Deployment's ReplicaSets: those it controls plus matching orphans,
/// which it adopts (after re-reading the Deployment, as upstream's
/// `RecheckDeletionTimestamp`).
async fn claim_replica_sets(ctx: &Ctx, d: &Deployment) -> Result<Vec<ReplicaSet>, Error> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = d
        .spec
        .as_ref()
        .map(|s| selector_string(&s.selector))
        .unwrap_or_default();
    let mut owned = Vec::new();
    let mut orphans = Vec::new();
    for rs in api.list(&ListParams::default().labels(&selector)).await?.items {
        match controller_of(&rs.metadata) {
            Some(r) if r.uid == uid => owned.push(rs),
            Some(_) => {}
            None if rs.metadata.deletion_timestamp.is_none() => orphans.push(rs),
            None => {}
        }
    }
    if !orphans.is_empty() && d.metadata.deletion_timestamp.is_none() {
        let fresh = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .get(d.metadata.name.as_deref().unwrap_or_default())
            .await?;
        if fresh.metadata.uid.as_deref() == Some(uid.as_str()) && fresh.metadata.deletion_timestamp.is_none() {
            for rs in orphans {
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(owner_ref("apps/v1", "Deployment", &d.metadata));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid}});
                match api
                    .patch(
                        rs.metadata.name.as_deref().unwrap_or_default(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(rs) => owned.push(rs),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(owned)
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let selector_empty = d.spec.as_ref().is_none_or(|s| {
        s.selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
    });
    if selector_empty {
        record(
            &ctx.client,
            reference("apps/v1", "Deployment", &d.metadata),
            EventType::Warning,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.",
            COMPONENT,
        )
        .await;
        return Ok(Action::await_change());
    }
    let rss = claim_replica_sets(&ctx, &d).await?;
    let mut sync = Sync {
        ctx: &ctx,
        d: &d,
        rss,
        status: d.status.clone().unwrap_or_default(),
        now: jiff::Timestamp::now(),
    };
    if d.metadata.deletion_timestamp.is_some() {
        let new = sync.new_rs(false).await?;
        return sync.finish(new, false).await;
    }
    status::sync_paused_condition(&d, &mut sync.status, sync.now);
    let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
    if paused || is_scaling_event(&d, &sync.rss) {
        let new = sync.new_rs(false).await?;
        sync.scale_for_resize(new).await?;
        if paused {
            sync.cleanup(new).await?;
        }
        return sync.finish(new, false).await;
    }
    let new = if is_rolling(&d) {
        let n = sync.new_rs(true).await?;
        if let Some(n) = n {
            sync.rolling(n).await?;
        }
        n
    } else {
        sync.recreate().await?
    };
    let all: Vec<&ReplicaSet> = sync.rss.iter().collect();
    let projected = status::calculate(
        &d,
        &sync.status,
        &all,
        new.map(|i| &sync.rss[i]),
        max_unavailable(&d),
        sync.now,
    );
    if status::complete(&d, &projected) {
        sync.cleanup(new).await?;
    }
    sync.finish(new, true).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;

    fn deploy(strategy: serde_json::Value, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "strategy": strategy,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn fenceposts_by_strategy() {
        let rolling = deploy(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 5}}),
            3,
        );
        assert_eq!(
            (max_surge(&rolling), max_unavailable(&rolling)),
            (2, 3),
            "unavailable capped at replicas"
        );
        let recreate = deploy(json!({"type": "Recreate"}), 3);
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
        let zero = deploy(json!({}), 0);
        assert_eq!(max_unavailable(&zero), 0);
    }

    #[test]
    fn the_new_replica_set_matches_the_template_ignoring_the_hash() {
        let d = deploy(json!({}), 3);
        let hash = template_hash(&d).unwrap();
        assert_eq!(hash, template_hash(&d).unwrap(), "stable");
        let mut t = d.spec.as_ref().unwrap().template.clone();
        t.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), hash);
        let rs = |name: &str, template: PodTemplateSpec| -> ReplicaSet {
            ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                spec: Some(ReplicaSetSpec {
                    template: Some(template),
                    ..Default::default()
                }),
                status: None,
            }
        };
        let mut other = t.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("busybox:1.35".into());
        let rss = vec![rs("old", other), rs("new", t)];
        assert_eq!(find_new(&d, &rss), Some(1));
        let mut changed = d.clone();
        changed
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("nginx".into());
        assert_eq!(find_new(&changed, &rss), None);
        assert_ne!(template_hash(&changed).unwrap(), template_hash(&d).unwrap());
    }
}
