//! StatefulSet controller (upstream pkg/controller/statefulset): pods with stable
//! identities `<sts>-<ordinal>` and stable storage.
//!
//! - Each pod gets `hostname: <pod>` and `subdomain: <serviceName>`, the labels
//!   `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//!   `controller-revision-hash` (the ControllerRevision's name, as upstream), and a
//!   PersistentVolumeClaim `<claim>-<sts>-<ordinal>` per `volumeClaimTemplates`
//!   entry, created before the pod and mounted in place of the same-named volume.
//! - `OrderedReady` creates pods one at a time in ordinal order, each only after
//!   its predecessors are Running and Ready, and removes surplus pods one at a time
//!   from the highest ordinal; `Parallel` creates and removes all at once.
//! - Failed (or succeeded) pods are deleted and recreated with the same identity.
//! - Templates are ControllerRevisions ([`crate::revision`]). `RollingUpdate`
//!   replaces pods from the highest ordinal down to `partition`, one at a time, each
//!   after the previous one is Ready again; pods below the partition are recreated
//!   from the current revision. `OnDelete` only recreates deleted pods from the
//!   update revision.
//! - `status`: replicas, readyReplicas, availableReplicas, currentReplicas,
//!   updatedReplicas, currentRevision, updateRevision (the current revision
//!   becomes the update revision once every pod is updated and ready),
//!   observedGeneration.
//!
//! The ordering decisions are the pure [`plan`]; [`status`] is pure too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{
    ControllerParts, controller_of, delete_pod, is_available, is_conflict, is_not_found, owner_ref, ready_since,
    record, reference, run_controller,
};
use crate::pod_cache::{PodCache, PodChange, PodInformer};
use crate::revision::{self, REVISION_HASH};

const COMPONENT: &str = "statefulset-controller";
/// Label with a StatefulSet pod's name (so a Service can select one pod).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct Ctx {
    client: kube::Client,
    pods: Arc<PodCache>,
}

/// The ordinal of a pod named `<sts>-<ordinal>`, if it is one of this set's.
pub fn ordinal(sts_name: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let rest = name.strip_prefix(sts_name)?.strip_prefix('-')?;
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse::<i32>().ok().filter(|o| *o >= 0)
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Running, Ready for `minReadySeconds`, and not being deleted (upstream
/// `isHealthy` with availability).
fn healthy(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    !terminating(p) && phase(p) == "Running" && is_available(p, min_ready, now)
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref()?.get(REVISION_HASH).map(String::as_str)
}

/// One pod to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// Its ordinal.
    pub ordinal: i32,
    /// Built from the current revision (below the partition) rather than the update revision.
    pub from_current: bool,
}

/// What a sync should do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pods to create.
    pub create: Vec<Create>,
    /// Pods to delete.
    pub delete: Vec<Arc<Pod>>,
}

/// Decides the next steps (upstream `StatefulSetControl.UpdateStatefulSet`):
/// create missing and replace failed pods in ordinal order, scale down from the
/// highest ordinal, then roll pods to `update_revision` from the highest ordinal
/// down to the partition. With `OrderedReady` it stops at the first pod that is
/// missing, terminating or not healthy.
pub fn plan(sts: &StatefulSet, pods: &[Arc<Pod>], update_revision: &str, now: Timestamp) -> Plan {
    let spec = sts.spec.clone().unwrap_or_default();
    let name = sts.metadata.name.clone().unwrap_or_default();
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let end = start + spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = strategy.rolling_update.as_ref().and_then(|r| r.partition);
    let current_replicas = sts.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0);
    let from_current = |ordinal: i32| {
        rolling
            && match partition {
                Some(p) => ordinal < p,
                None => ordinal - start < current_replicas,
            }
    };

    let mut in_range: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
    for p in pods {
        match ordinal(&name, p) {
            Some(o) if o >= start && o < end => {
                in_range.insert(o, p.clone());
            }
            Some(o) => condemned.push((o, p.clone())),
            None => {}
        }
    }
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));

    let mut out = Plan::default();
    for ordinal in start..end {
        match in_range.get(&ordinal) {
            None => {
                out.create.push(Create {
                    ordinal,
                    from_current: from_current(ordinal),
                });
                if !parallel {
                    return out;
                }
            }
            Some(p) if !terminating(p) && matches!(phase(p), "Failed" | "Succeeded") => {
                out.delete.push(p.clone());
                if !parallel {
                    return out;
                }
            }
            Some(p) if !healthy(p, min_ready, now) && !parallel => return out,
            Some(_) => {}
        }
    }

    if parallel {
        out.delete.extend(
            condemned
                .iter()
                .filter(|(_, p)| !terminating(p))
                .map(|(_, p)| p.clone()),
        );
    } else if let Some((_, victim)) = condemned.first() {
        // One at a time, and only while every other pod is healthy.
        let others_ok = in_range.values().all(|p| healthy(p, min_ready, now))
            && condemned[1..].iter().all(|(_, p)| !terminating(p));
        if others_ok && !terminating(victim) {
            out.delete.push(victim.clone());
        }
        return out;
    }
    if !out.create.is_empty() || !out.delete.is_empty() {
        return out;
    }

    if rolling {
        let min = partition.unwrap_or(0).max(start);
        for ordinal in (min..end).rev() {
            let Some(p) = in_range.get(&ordinal) else { continue };
            if revision_of(p) != Some(update_revision) && !terminating(p) {
                out.delete.push(p.clone());
                return out;
            }
            if !healthy(p, min_ready, now) {
                return out;
            }
        }
    }
    out
}

/// The status for the current pods (upstream `computeReplicaStatus` and
/// `completeRollingUpdate`).
pub fn status(
    sts: &StatefulSet,
    pods: &[Arc<Pod>],
    current_revision: &str,
    update_revision: &str,
    now: Timestamp,
) -> StatefulSetStatus {
    let spec = sts.spec.clone().unwrap_or_default();
    let name = sts.metadata.name.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mine: Vec<&Arc<Pod>> = pods.iter().filter(|p| ordinal(&name, p).is_some()).collect();
    let mut s = StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        collision_count: Some(sts.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0)),
        conditions: sts.status.as_ref().and_then(|s| s.conditions.clone()),
        current_revision: Some(current_revision.to_string()),
        update_revision: Some(update_revision.to_string()),
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for p in mine.iter().filter(|p| !terminating(p)) {
        s.replicas += 1;
        if phase(p) == "Running" && ready_since(p).is_some() {
            ready += 1;
        }
        if healthy(p, min_ready, now) {
            available += 1;
        }
        if revision_of(p) == Some(current_revision) {
            current += 1;
        }
        if revision_of(p) == Some(update_revision) {
            updated += 1;
        }
    }
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    s.current_replicas = Some(current);
    s.updated_replicas = Some(updated);
    let want = spec.replicas.unwrap_or(1);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling && updated == want && ready == want && s.replicas == want {
        s.current_revision = Some(update_revision.to_string());
        s.current_replicas = Some(updated);
    }
    s
}

/// The name of a pod's claim for a template: `<claim>-<sts>-<ordinal>`.
pub fn claim_name(claim: &str, sts: &str, ordinal: i32) -> String {
    format!("{claim}-{sts}-{ordinal}")
}

/// The pod for `ordinal` from `template` (upstream `newVersionedStatefulSetPod`):
/// identity (name, hostname, subdomain, labels), storage (claims replace the
/// same-named volumes), the revision label and a controller reference.
pub fn pod_for(sts: &StatefulSet, template: &PodTemplateSpec, revision_name: &str, ordinal: i32) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let set = sts.metadata.name.clone().unwrap_or_default();
    let name = format!("{set}-{ordinal}");
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.to_string(), name.clone());
    labels.insert(POD_INDEX_LABEL.to_string(), ordinal.to_string());
    labels.insert(REVISION_HASH.to_string(), revision_name.to_string());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
        pod_spec.subdomain = spec.service_name.clone();
    }
    for claim in spec.volume_claim_templates.iter().flatten() {
        let cname = claim.metadata.name.clone().unwrap_or_default();
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != cname);
        volumes.push(Volume {
            name: cname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&cname, &set, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref("apps/v1", "StatefulSet", &sts.metadata)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// The claims of a pod (upstream `getPersistentVolumeClaims`): each template named
/// `<claim>-<sts>-<ordinal>`, labelled with the selector's `matchLabels`; owned by
/// the StatefulSet only when the retention policy deletes them with it.
pub fn claims_for(sts: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let spec = sts.spec.clone().unwrap_or_default();
    let set = sts.metadata.name.clone().unwrap_or_default();
    let delete_with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    let match_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let cname = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&cname, &set, ordinal)),
                    namespace: sts.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: delete_with_set.then(|| vec![owner_ref("apps/v1", "StatefulSet", &sts.metadata)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

fn template_of(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

impl Ctx {
    async fn event(&self, sts: &StatefulSet, ty: EventType, reason: &str, message: &str) {
        record(
            &self.client,
            reference("apps/v1", "StatefulSet", &sts.metadata),
            ty,
            reason,
            message,
            COMPONENT,
        )
        .await;
    }
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let name = sts.metadata.name.clone().unwrap_or_default();
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let now = Timestamp::now();

    let revisions = revision::owned(&ctx.client, &ns, &uid).await?;
    let update = revision::ensure(
        &ctx.client,
        "apps/v1",
        "StatefulSet",
        &sts.metadata,
        &spec.template,
        &revisions,
    )
    .await?;
    let update_name = update.metadata.name.clone().unwrap_or_default();
    let current = sts
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_ref())
        .and_then(|c| revisions.iter().find(|r| r.metadata.name.as_ref() == Some(c)))
        .cloned()
        .unwrap_or_else(|| update.clone());
    let current_name = current.metadata.name.clone().unwrap_or_default();
    let current_template = template_of(&current).unwrap_or_else(|| spec.template.clone());

    let pods = ctx.pods.controlled_by(&uid);
    let plan = plan(&sts, &pods, &update_name, now);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for p in &plan.delete {
        let pod_name = p.metadata.name.clone().unwrap_or_default();
        match delete_pod(&pod_api, p).await {
            Ok(_) => {
                let msg = format!("delete Pod {pod_name} in StatefulSet {name} successful");
                ctx.event(&sts, EventType::Normal, "SuccessfulDelete", &msg).await;
            }
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for c in &plan.create {
        for claim in claims_for(&sts, c.ordinal) {
            match pvc_api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    let msg = format!(
                        "create Claim {} for Pod {name}-{} in StatefulSet {name} success",
                        claim.metadata.name.as_deref().unwrap_or_default(),
                        c.ordinal
                    );
                    ctx.event(&sts, EventType::Normal, "SuccessfulCreate", &msg).await;
                }
                Err(e) if is_conflict(&e) => {}
                Err(e) => {
                    ctx.event(
                        &sts,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("create Claim failed: {e}"),
                    )
                    .await;
                    return Err(e.into());
                }
            }
        }
        let (template, rev) = if c.from_current {
            (&current_template, &current_name)
        } else {
            (&spec.template, &update_name)
        };
        let pod = pod_for(&sts, template, rev, c.ordinal);
        match pod_api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                let msg = format!("create Pod {name}-{} in StatefulSet {name} successful", c.ordinal);
                ctx.event(&sts, EventType::Normal, "SuccessfulCreate", &msg).await;
            }
            // Created by an earlier sync the cache has not shown yet.
            Err(e) if is_conflict(&e) => {}
            Err(e) => {
                let msg = format!(
                    "create Pod {name}-{} in StatefulSet {name} failed error: {e}",
                    c.ordinal
                );
                ctx.event(&sts, EventType::Warning, "FailedCreate", &msg).await;
                return Err(e.into());
            }
        }
    }

    let new_status = status(&sts, &pods, &current_name, &update_name, now);
    let in_use: Vec<Arc<str>> = pods
        .iter()
        .filter_map(|p| revision_of(p).map(Arc::from))
        .chain([Arc::from(current_name.as_str())])
        .collect();
    // Revision names are the pods' labels here; match them as hashes too.
    let in_use_hashes: Vec<Arc<str>> = revisions
        .iter()
        .filter(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| in_use.iter().any(|u| **u == *n))
        })
        .filter_map(|r| {
            r.metadata
                .labels
                .as_ref()?
                .get(REVISION_HASH)
                .map(|h| Arc::from(h.as_str()))
        })
        .collect();
    revision::truncate(
        &ctx.client,
        &revisions,
        &update_name,
        &in_use_hashes,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    if sts.status.as_ref() != Some(&new_status) {
        let mut next = (*sts).clone();
        next.status = Some(new_status.clone());
        Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
            .replace_status(&name, &PostParams::default(), &next)
            .await?;
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && new_status.available_replicas != new_status.ready_replicas {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

fn error_policy(_sts: Arc<StatefulSet>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    match e {
        Error::Kube(k) if is_conflict(k) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::warn!(error = %e, "statefulset sync failed");
            Action::requeue(Duration::from_secs(2))
        }
    }
}

/// Runs the StatefulSet controller until `shutdown`, with a pod informer of its own.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let pods = PodInformer::start(client.clone(), shutdown.clone());
    run_with_pods(client, pods, shutdown).await
}

/// [`run`] reading pods from a shared [`PodInformer`] (the caller runs it).
pub async fn run_with_pods(client: kube::Client, pods: Arc<PodInformer>, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.cache(),
    });
    let (store, writer) = reflector::store::<StatefulSet>();
    let (trigger_tx, triggers) = futures::channel::mpsc::unbounded::<ObjectRef<StatefulSet>>();
    let pods_ready = pods.subscribe(move |change: PodChange| {
        let pods = match &change {
            PodChange::Added(p) | PodChange::Deleted(p) => vec![p.clone()],
            PodChange::Updated { old, new } => vec![old.clone(), new.clone()],
        };
        for p in pods {
            if let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "StatefulSet") {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let _ = trigger_tx.unbounded_send(ObjectRef::new(&r.name).within(&ns));
            }
        }
    });
    let parts = ControllerParts {
        ctx,
        store,
        writer,
        triggers,
        pods_ready,
    };
    run_controller(
        Api::<StatefulSet>::all(client),
        parts,
        |_| {},
        reconcile,
        error_policy,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(extra: serde_json::Value) -> StatefulSet {
        let mut spec = json!({"replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
                "volumes": [{"name": "data", "emptyDir": {}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}],
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "su", "generation": 4}, "spec": spec}),
        )
        .unwrap()
    }

    fn pod(ordinal: i32, rev: &str, phase: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("web-{ordinal}"), "uid": format!("u{ordinal}"),
                    "labels": {REVISION_HASH: rev}},
                "spec": {"containers": []},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
            }))
            .unwrap(),
        )
    }

    fn now() -> Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    fn deleted(p: &Plan) -> Vec<String> {
        p.delete.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    fn created(p: &Plan) -> Vec<i32> {
        p.create.iter().map(|c| c.ordinal).collect()
    }

    #[test]
    fn ordinals_come_only_from_exact_names() {
        let named = |n: &str| Pod {
            metadata: ObjectMeta {
                name: Some(n.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(ordinal("web", &named("web-0")), Some(0));
        assert_eq!(ordinal("web", &named("web-12")), Some(12));
        assert_eq!(ordinal("web", &named("web-01")), None);
        assert_eq!(ordinal("web", &named("webx-1")), None);
        assert_eq!(ordinal("web", &named("web-")), None);
        assert_eq!(ordinal("web", &named("web-a")), None);
    }

    #[test]
    fn ordered_ready_creates_and_removes_one_pod_at_a_time() {
        let s = sts(json!({}));
        let ready = |o| pod(o, "r1", "Running", true);
        type Case = (&'static str, StatefulSet, Vec<Arc<Pod>>, Vec<i32>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            ("first pod", s.clone(), vec![], vec![0], vec![]),
            (
                "waits for web-0 to be ready",
                s.clone(),
                vec![pod(0, "r1", "Running", false)],
                vec![],
                vec![],
            ),
            ("next ordinal once ready", s.clone(), vec![ready(0)], vec![1], vec![]),
            (
                "fills a gap first",
                s.clone(),
                vec![ready(0), ready(2)],
                vec![1],
                vec![],
            ),
            (
                "failed pod replaced",
                s.clone(),
                vec![ready(0), pod(1, "r1", "Failed", false), ready(2)],
                vec![],
                vec!["web-1"],
            ),
            (
                "scale down highest first",
                sts(json!({"replicas": 1})),
                vec![ready(0), ready(1), ready(2)],
                vec![],
                vec!["web-2"],
            ),
            (
                "no scale down while unhealthy",
                sts(json!({"replicas": 1})),
                vec![pod(0, "r1", "Running", false), ready(1), ready(2)],
                vec![],
                vec![],
            ),
            (
                "parallel creates all",
                sts(json!({"podManagementPolicy": "Parallel"})),
                vec![],
                vec![0, 1, 2],
                vec![],
            ),
            (
                "parallel removes all surplus",
                sts(json!({"podManagementPolicy": "Parallel", "replicas": 1})),
                vec![pod(0, "r1", "Pending", false), ready(1), ready(2)],
                vec![],
                vec!["web-2", "web-1"],
            ),
        ];
        for (name, s, pods, want_create, want_delete) in cases {
            let p = plan(&s, &pods, "r1", now());
            assert_eq!(created(&p), want_create, "{name}: create");
            assert_eq!(deleted(&p), want_delete, "{name}: delete");
        }
    }

    #[test]
    fn rolling_update_goes_down_from_the_highest_ordinal_to_the_partition() {
        let s = sts(json!({}));
        let old = |o| pod(o, "r1", "Running", true);
        let new = |o| pod(o, "r2", "Running", true);
        assert_eq!(
            deleted(&plan(&s, &[old(0), old(1), old(2)], "r2", now())),
            vec!["web-2"]
        );
        assert_eq!(
            deleted(&plan(&s, &[old(0), old(1), new(2)], "r2", now())),
            vec!["web-1"]
        );
        let waiting = [old(0), old(1), pod(2, "r2", "Running", false)];
        assert!(
            plan(&s, &waiting, "r2", now()).delete.is_empty(),
            "waits for the updated pod to be ready"
        );
        let partitioned = sts(json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}));
        assert!(
            plan(&partitioned, &[old(0), old(1), new(2)], "r2", now())
                .delete
                .is_empty()
        );
        let p = plan(&partitioned, &[old(0), new(2)], "r2", now());
        assert_eq!(
            p.create,
            vec![Create {
                ordinal: 1,
                from_current: true
            }],
            "below the partition: current revision"
        );
        let on_delete = sts(json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(
            plan(&on_delete, &[old(0), old(1), old(2)], "r2", now())
                .delete
                .is_empty()
        );
        assert_eq!(
            plan(&on_delete, &[old(0), old(2)], "r2", now()).create,
            vec![Create {
                ordinal: 1,
                from_current: false
            }]
        );
    }

    #[test]
    fn pods_have_stable_identity_and_storage() {
        let s = sts(json!({}));
        let p = pod_for(&s, &s.spec.as_ref().unwrap().template, "web-abc", 2);
        assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_HASH], "web-abc");
        assert_eq!(labels["app"], "web");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 1, "the claim replaces the same-named volume");
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-web-2"
        );
        let claims = claims_for(&s, 2);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data-web-2"));
        assert_eq!(claims[0].metadata.labels.as_ref().unwrap()["app"], "web");
        assert!(claims[0].metadata.owner_references.is_none(), "retained by default");
        let deleting =
            sts(json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}));
        assert!(claims_for(&deleting, 0)[0].metadata.owner_references.is_some());
    }

    #[test]
    fn status_counts_revisions_and_completes_the_rollout() {
        let s = sts(json!({}));
        let mid = [
            pod(0, "r1", "Running", true),
            pod(1, "r1", "Running", false),
            pod(2, "r2", "Running", true),
        ];
        let st = status(&s, &mid, "r1", "r2", now());
        assert_eq!(st.replicas, 3);
        assert_eq!(st.ready_replicas, Some(2));
        assert_eq!(st.current_replicas, Some(2));
        assert_eq!(st.updated_replicas, Some(1));
        assert_eq!(st.current_revision.as_deref(), Some("r1"));
        assert_eq!(st.observed_generation, Some(4));
        let done = [
            pod(0, "r2", "Running", true),
            pod(1, "r2", "Running", true),
            pod(2, "r2", "Running", true),
        ];
        let st = status(&s, &done, "r1", "r2", now());
        assert_eq!(st.current_revision.as_deref(), Some("r2"));
        assert_eq!(st.current_replicas, Some(3));
    }
}
