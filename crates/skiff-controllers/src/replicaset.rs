//! ReplicaSet controller (upstream pkg/controller/replicaset): keeps `spec.replicas`
//! active pods matching the selector, each owned through a controller reference.
//!
//! Pods come from a watch-fed [`PodCache`]; creations and deletions are guarded by
//! [`Expectations`], so a slow watch never makes the controller act twice. Each
//! sync claims pods (adopts matching orphans, releases owned pods that stopped
//! matching), creates missing pods from the template in slow-start batches (1, 2,
//! 4, ...) or deletes the surplus in upstream's ranking order, and writes `status`
//! (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
//! observedGeneration, the ReplicaFailure condition) through the status subresource.
//!
//! The sync is generic over [`ReplicaOwner`]: the ReplicationController controller
//! ([`crate::replication`]) runs this same loop over core/v1
//! ReplicationControllers, as upstream's pkg/controller/replication runs the
//! ReplicaSet controller through an adapter.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use serde_json::{Value, json};
use skiff_api::events::EventType;
use skiff_api::selector::LabelSelector;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{
    ControllerParts, controller_of, delete_pod, is_available, is_inactive, owner_ref, ready_since, record, reference,
    run_controller,
};
use crate::expectations::Expectations;
use crate::pod_cache::{PodCache, PodChange, PodInformer};

/// What the replica sync needs from the kind it manages: a ReplicaSet or a
/// ReplicationController. Conditions and status are read as JSON, in the shape
/// both kinds share (`replicas`, `fullyLabeledReplicas`, `readyReplicas`,
/// `availableReplicas`, `observedGeneration`, `conditions`).
pub trait ReplicaOwner:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    /// `source.component` of the controller's events (upstream:
    /// `replicaset-controller`, `replication-controller`).
    const COMPONENT: &'static str;

    /// The pod selector.
    ///
    /// # Errors
    /// A selector that does not parse (the message names the problem).
    fn selector(&self) -> Result<LabelSelector, String>;
    /// `spec.replicas` (1 when unset, as defaulting makes it).
    fn replicas(&self) -> i32;
    /// `spec.minReadySeconds` (0 when unset).
    fn min_ready_seconds(&self) -> i32;
    /// `spec.template`.
    fn template(&self) -> Option<PodTemplateSpec>;
    /// `status` as JSON (`{}` when unset).
    fn status_json(&self) -> Value;
}

impl ReplicaOwner for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn selector(&self) -> Result<LabelSelector, String> {
        let sel = self.spec.as_ref().map(|s| &s.selector);
        let v = serde_json::to_value(sel).map_err(|e| e.to_string())?;
        LabelSelector::from_label_selector_json(&v).map_err(|e| e.to_string())
    }

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }

    fn template(&self) -> Option<PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.clone())
    }

    fn status_json(&self) -> Value {
        serde_json::to_value(self.status.clone().unwrap_or_default()).unwrap_or_else(|_| json!({}))
    }
}

fn kind_of<K: ReplicaOwner>() -> String {
    K::kind(&()).into_owned()
}

fn api_version_of<K: ReplicaOwner>() -> String {
    K::api_version(&()).into_owned()
}

/// The API group of an `apiVersion` (`""` for core `v1`).
fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}
/// Most pods created or deleted in one sync (upstream `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// Annotation with the relative cost of deleting a pod (lower goes first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

struct Ctx<K> {
    _kind: std::marker::PhantomData<K>,
    client: kube::Client,
    pods: Arc<PodCache>,
    expectations: Mutex<Expectations>,
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn phase_ordinal(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(p: &Pod) -> i64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|c| c.parse::<i32>().ok())
        .unwrap_or(0) as i64
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

/// Sorts `pods` so the first ones are the best to delete (upstream
/// `ActivePodsWithRanks`): unscheduled before scheduled; Pending, then Unknown,
/// then Running; not ready before ready; lower `pod-deletion-cost` first; pods
/// sharing a node with more of `related` first; more recently ready first; more
/// restarts first; newer first.
pub fn rank_for_deletion(pods: &mut [Arc<Pod>], related: &[Arc<Pod>]) {
    let mut per_node: HashMap<&str, i64> = HashMap::new();
    for p in related {
        if let Some(n) = node_of(p) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let key = |p: &Arc<Pod>| {
        let ready = ready_since(p);
        let restarts = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().map(|c| c.restart_count).max())
            .unwrap_or(0);
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
        (
            node_of(p).is_some(),
            phase_ordinal(p),
            ready.is_some(),
            deletion_cost(p),
            Reverse(node_of(p).and_then(|n| per_node.get(n)).copied().unwrap_or(0)),
            Reverse(ready.map(|t| t.as_second()).unwrap_or(i64::MAX)),
            Reverse(restarts),
            Reverse(created.unwrap_or(i64::MAX)),
        )
    };
    pods.sort_by_cached_key(key);
}

/// A new pod from the ReplicaSet's template (upstream `GetPodFromTemplate`): the
/// template's labels, annotations, finalizers and spec, `generateName: <rs>-`, and
/// a controller reference to the ReplicaSet.
pub fn pod_from_template<K: ReplicaOwner>(rs: &K) -> Pod {
    let template = rs.template().unwrap_or_default();
    let meta = rs.meta();
    let tm = template.metadata.unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: meta.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(&api_version_of::<K>(), &kind_of::<K>(), meta)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The claim step's outcome (upstream `PodControllerRefManager.ClaimPods`).
#[derive(Debug, Default)]
pub struct Claim {
    /// Owned pods that match the selector.
    pub owned: Vec<Arc<Pod>>,
    /// Orphans that match the selector: adopt them.
    pub adopt: Vec<Arc<Pod>>,
    /// Owned pods that no longer match: release them.
    pub release: Vec<Arc<Pod>>,
}

/// Sorts candidate pods into owned, to adopt and to release. Pods being deleted
/// are never adopted; a ReplicaSet being deleted adopts nothing.
pub fn claim(selector: &LabelSelector, controlled: Vec<Arc<Pod>>, orphans: Vec<Arc<Pod>>, rs_deleting: bool) -> Claim {
    let empty = Default::default();
    let matches = |p: &Pod| selector.matches(p.metadata.labels.as_ref().unwrap_or(&empty));
    let mut c = Claim::default();
    for p in controlled {
        if matches(&p) {
            c.owned.push(p);
        } else if p.metadata.deletion_timestamp.is_none() {
            c.release.push(p);
        }
    }
    if !rs_deleting {
        c.adopt = orphans
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && matches(p))
            .collect();
    }
    c
}

/// The status the ReplicaSet should report for its active pods (upstream
/// `calculateStatus`), without conditions.
pub fn calculate_status<K: ReplicaOwner>(rs: &K, active: &[Arc<Pod>], now: jiff::Timestamp) -> Value {
    let min_ready = rs.min_ready_seconds();
    let template_labels = rs
        .template()
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| ready_since(p).is_some()).count();
    let available = active.iter().filter(|p| is_available(p, min_ready, now)).count();
    json!({
        "replicas": active.len(), "fullyLabeledReplicas": fully_labeled, "readyReplicas": ready,
        "availableReplicas": available, "observedGeneration": rs.meta().generation,
    })
}

/// Kind of a failed manage step, for the ReplicaFailure condition.
#[derive(Debug)]
enum ManageError {
    Create(kube::Error),
    Delete(kube::Error),
}

impl<K: ReplicaOwner> Ctx<K> {
    async fn event(&self, rs: &K, ty: EventType, reason: &str, message: &str) {
        record(
            &self.client,
            reference(&api_version_of::<K>(), &kind_of::<K>(), rs.meta()),
            ty,
            reason,
            message,
            K::COMPONENT,
        )
        .await;
    }

    /// Adds (`add`) or removes this ReplicaSet's controller reference on a pod; the
    /// patch carries the pod's uid as a precondition.
    async fn set_owner(&self, rs: &K, pod: &Pod, add: bool) -> Result<Pod, kube::Error> {
        let rs_uid = rs.meta().uid.clone().unwrap_or_default();
        let mut refs: Vec<_> = pod
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != rs_uid)
            .collect();
        if add {
            refs.push(owner_ref(&api_version_of::<K>(), &kind_of::<K>(), rs.meta()));
        }
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
        Api::<Pod>::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        )
        .patch(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    }

    /// Creates `count` pods in slow-start batches, stopping at the first failure.
    async fn create_pods(&self, rs: &K, count: usize) -> Result<(), ManageError> {
        let uid = rs.meta().uid.clone().unwrap_or_default();
        let ns = rs.meta().namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        self.expectations
            .lock()
            .expect("expectations")
            .expect_creations(&uid, count, Instant::now());
        let template = pod_from_template(rs);
        let (mut remaining, mut batch) = (count, 1usize);
        while remaining > 0 {
            let n = batch.min(remaining);
            let pp = PostParams::default();
            let results = future::join_all((0..n).map(|_| api.create(&pp, &template))).await;
            remaining -= n;
            let mut first_error = None;
            for r in results {
                match r {
                    Ok(p) => {
                        let msg = format!("Created pod: {}", p.metadata.name.as_deref().unwrap_or_default());
                        self.event(rs, EventType::Normal, "SuccessfulCreate", &msg).await;
                    }
                    Err(e) => {
                        self.expectations.lock().expect("expectations").creation_observed(&uid);
                        self.event(rs, EventType::Warning, "FailedCreate", &format!("Error creating: {e}"))
                            .await;
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                // The pods not attempted will not show up either.
                let mut exp = self.expectations.lock().expect("expectations");
                for _ in 0..remaining {
                    exp.creation_observed(&uid);
                }
                return Err(ManageError::Create(e));
            }
            batch *= 2;
        }
        Ok(())
    }

    /// Deletes `victims` (all at once), with their uids as preconditions.
    async fn delete_pods(&self, rs: &K, victims: Vec<Arc<Pod>>) -> Result<(), ManageError> {
        let uid = rs.meta().uid.clone().unwrap_or_default();
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
                        rs,
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
                    if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        self.event(rs, EventType::Warning, "FailedDelete", &format!("Error deleting: {e}"))
                            .await;
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(ManageError::Delete(e)))
    }
}

async fn reconcile<K: ReplicaOwner>(rs: Arc<K>, ctx: Arc<Ctx<K>>) -> Result<Action, Error> {
    let meta = rs.meta();
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let kind = kind_of::<K>().to_lowercase();
    let rs_api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = rs
        .selector()
        .map_err(|e| Error::Invalid(format!("{kind} {ns}/{name}: {e}")))?;
    if selector.is_empty() {
        return Err(Error::Invalid(format!("{kind} {ns}/{name} has an empty selector")));
    }
    let needs_sync = ctx
        .expectations
        .lock()
        .expect("expectations")
        .satisfied(&uid, Instant::now());
    let deleting = meta.deletion_timestamp.is_some();
    let c = claim(
        &selector,
        ctx.pods.controlled_by(&uid),
        ctx.pods.orphans_in(&ns),
        deleting,
    );
    let mut owned = c.owned;
    for p in &c.release {
        if let Err(e) = ctx.set_owner(&rs, p, false).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            return Err(e.into());
        }
    }
    if !c.adopt.is_empty() {
        // Adopt only if this ReplicaSet is still the one we think (upstream
        // `RecheckDeletionTimestamp` with a live read).
        let fresh = rs_api.get(&name).await?;
        if fresh.meta().uid.as_deref() == Some(uid.as_str()) && fresh.meta().deletion_timestamp.is_none() {
            for p in &c.adopt {
                match ctx.set_owner(&rs, p, true).await {
                    Ok(p) => owned.push(Arc::new(p)),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| !is_inactive(p)).collect();
    let want = rs.replicas().max(0) as usize;
    let mut manage_error = None;
    if needs_sync && !deleting {
        let result = if active.len() < want {
            ctx.create_pods(&rs, (want - active.len()).min(BURST_REPLICAS)).await
        } else if active.len() > want {
            let mut victims = active.clone();
            rank_for_deletion(&mut victims, &active);
            victims.truncate((active.len() - want).min(BURST_REPLICAS));
            ctx.delete_pods(&rs, victims).await
        } else {
            Ok(())
        };
        manage_error = result.err();
    }

    // Status, from the pods this sync saw (as upstream).
    let mut status = calculate_status(rs.as_ref(), &active, jiff::Timestamp::now());
    let current = rs.status_json();
    let prev_conditions = current
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut conditions: Vec<Value> = prev_conditions
        .iter()
        .filter(|c| c["type"] != "ReplicaFailure")
        .cloned()
        .collect();
    if let Some(e) = &manage_error {
        let (reason, err) = match e {
            ManageError::Create(e) => ("FailedCreate", e),
            ManageError::Delete(e) => ("FailedDelete", e),
        };
        let prev = prev_conditions.iter().find(|c| c["type"] == "ReplicaFailure");
        let since = prev
            .filter(|c| c["status"] == "True")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(String::from)
            .unwrap_or_else(skiff_api::events::now_string);
        conditions.push(json!({"type": "ReplicaFailure", "status": "True", "reason": reason,
            "message": err.to_string(), "lastTransitionTime": since}));
    }
    status["conditions"] = if conditions.is_empty() {
        Value::Null
    } else {
        json!(conditions)
    };
    let norm = |v: &Value, k: &str| match v.get(k) {
        None | Some(Value::Null) if k == "conditions" => json!([]),
        None | Some(Value::Null) => json!(0),
        Some(x) => x.clone(),
    };
    let keys = [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
        "conditions",
    ];
    if keys.iter().any(|k| norm(&current, k) != norm(&status, k)) {
        rs_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await?;
    }
    if let Some(e) = manage_error {
        return Err(match e {
            ManageError::Create(e) | ManageError::Delete(e) => e.into(),
        });
    }
    let min_ready = rs.min_ready_seconds();
    if min_ready > 0 && status["readyReplicas"] != status["availableReplicas"] {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

fn error_policy<K: ReplicaOwner>(_rs: Arc<K>, e: &Error, _ctx: Arc<Ctx<K>>) -> Action {
    tracing::warn!(error = %e, kind = %kind_of::<K>(), "replica sync failed");
    Action::requeue(Duration::from_secs(2))
}

/// The ReplicaSets a pod change concerns, observing expectations on the way
/// (upstream `addPod` / `updatePod` / `deletePod`): the pod's controller, or for an
/// orphan every ReplicaSet in its namespace whose selector matches it.
fn affected<K: ReplicaOwner>(change: &PodChange, rs_store: &Store<K>, exp: &Mutex<Expectations>) -> Vec<ObjectRef<K>> {
    let kind = kind_of::<K>();
    let group = K::group(&()).into_owned();
    let rs_owner = |p: &Pod| {
        controller_of(&p.metadata)
            .filter(|r| r.kind == kind && group_of(&r.api_version) == group)
            .cloned()
    };
    let mut out = Vec::new();
    let mut trigger = |p: &Pod| {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        match controller_of(&p.metadata) {
            Some(r) => {
                if r.kind == kind && group_of(&r.api_version) == group {
                    out.push(ObjectRef::new(&r.name).within(&ns));
                }
            }
            None => {
                let empty = Default::default();
                let labels = p.metadata.labels.as_ref().unwrap_or(&empty);
                for rs in rs_store.state() {
                    if rs.meta().namespace.as_deref() != Some(ns.as_str()) {
                        continue;
                    }
                    let sel = rs.selector().ok();
                    if sel.is_some_and(|s| !s.is_empty() && s.matches(labels)) {
                        out.push(ObjectRef::from_obj(rs.as_ref()));
                    }
                }
            }
        }
    };
    let mut exp = exp.lock().expect("expectations");
    match change {
        PodChange::Added(p) => {
            if let Some(r) = rs_owner(p) {
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
                && let Some(r) = rs_owner(new)
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
            if let Some(r) = rs_owner(p) {
                exp.deletion_observed(&r.uid, &uid_of(p));
            }
            trigger(p);
        }
    }
    out
}

/// Runs the ReplicaSet controller until `shutdown`, with a pod informer of its own.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    run_for::<ReplicaSet>(client, shutdown).await
}

/// Runs the replica sync for objects of kind `K` (ReplicaSets or
/// ReplicationControllers) until `shutdown`, with a pod informer of its own.
pub async fn run_for<K: ReplicaOwner>(client: kube::Client, shutdown: CancellationToken) {
    let pods = PodInformer::start(client.clone(), shutdown.clone());
    run_for_with_pods::<K>(client, pods, shutdown).await
}

/// [`run_for`] reading pods from a shared [`PodInformer`] (the caller runs it).
pub async fn run_for_with_pods<K: ReplicaOwner>(
    client: kube::Client,
    pods: Arc<PodInformer>,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(Ctx::<K> {
        _kind: std::marker::PhantomData,
        client: client.clone(),
        pods: pods.cache(),
        expectations: Mutex::new(Expectations::new()),
    });
    let (store, writer) = reflector::store::<K>();
    let (trigger_tx, triggers) = futures::channel::mpsc::unbounded::<ObjectRef<K>>();
    let pods_ready = {
        let (hook_ctx, store) = (ctx.clone(), store.clone());
        pods.subscribe(move |change: PodChange| {
            for r in affected(&change, &store, &hook_ctx.expectations) {
                let _ = trigger_tx.unbounded_send(r);
            }
        })
    };
    let exp_ctx = ctx.clone();
    let on_delete = move |rs: &K| {
        let uid = rs.meta().uid.clone().unwrap_or_default();
        exp_ctx.expectations.lock().expect("expectations").remove(&uid);
    };
    let parts = ControllerParts {
        ctx,
        store,
        writer,
        triggers,
        pods_ready,
    };
    run_controller(
        Api::<K>::all(client),
        parts,
        on_delete,
        reconcile::<K>,
        error_policy::<K>,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: Option<&str>, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "uid": name, "creationTimestamp": created, "labels": {"app": "web"}},
                "spec": {"containers": [], "nodeName": node},
                "status": {"phase": phase, "conditions": [{"type": "Ready",
                    "status": if ready.is_some() {"True"} else {"False"},
                    "lastTransitionTime": ready.unwrap_or(created)}]}
            }))
            .unwrap(),
        )
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn scale_down_ranking_follows_upstream() {
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-02T00:00:00Z";
        let mut pods = vec![
            pod("ready-old", Some("n3"), "Running", Some(t0), t0),
            pod("ready-recently", Some("n4"), "Running", Some(t1), t0),
            pod("unscheduled", None, "Pending", None, t0),
            pod("pending", Some("n1"), "Pending", None, t0),
            pod("notready", Some("n1"), "Running", None, t0),
        ];
        let related = pods.clone();
        rank_for_deletion(&mut pods, &related);
        assert_eq!(
            names(&pods),
            vec!["unscheduled", "pending", "notready", "ready-recently", "ready-old"]
        );
    }

    #[test]
    fn deletion_cost_and_doubled_up_nodes_rank_before_age() {
        let t0 = "2026-01-01T00:00:00Z";
        let mut costly: Pod = (*pod("costly", Some("n2"), "Running", Some(t0), t0)).clone();
        costly.metadata.annotations = Some([(POD_DELETION_COST.to_string(), "100".to_string())].into());
        let mut pods = vec![
            Arc::new(costly),
            pod("alone", Some("n3"), "Running", Some(t0), t0),
            pod("crowded", Some("n1"), "Running", Some(t0), t0),
        ];
        let related = vec![pods[2].clone(), pod("sibling", Some("n1"), "Running", Some(t0), t0)];
        rank_for_deletion(&mut pods, &related);
        assert_eq!(names(&pods), vec!["crowded", "alone", "costly"]);
    }

    #[test]
    fn claim_adopts_matching_orphans_and_releases_mismatches() {
        let sel = LabelSelector::parse("app=web").unwrap();
        let mut relabeled = (*pod("relabeled", None, "Pending", None, "2026-01-01T00:00:00Z")).clone();
        relabeled.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        let mut other_orphan = relabeled.clone();
        other_orphan.metadata.name = Some("stranger".into());
        let mine = pod("mine", None, "Pending", None, "2026-01-01T00:00:00Z");
        let orphan = pod("orphan", None, "Pending", None, "2026-01-01T00:00:00Z");
        let c = claim(
            &sel,
            vec![mine, Arc::new(relabeled)],
            vec![orphan.clone(), Arc::new(other_orphan)],
            false,
        );
        assert_eq!(names(&c.owned), vec!["mine"]);
        assert_eq!(names(&c.adopt), vec!["orphan"]);
        assert_eq!(names(&c.release), vec!["relabeled"]);
        assert!(
            claim(&sel, vec![], vec![orphan], true).adopt.is_empty(),
            "a deleting ReplicaSet adopts nothing"
        );
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_reference() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns", "uid": "u1"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"name": "ignored", "labels": {"app": "web"}, "annotations": {"a": "b"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap();
        let p = pod_from_template(&rs);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.name, None);
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("ReplicaSet", "u1"));
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 3},
            "spec": {"minReadySeconds": 30, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "front"}}}}
        }))
        .unwrap();
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let pods = vec![
            pod(
                "long-ready",
                Some("n"),
                "Running",
                Some("2026-01-01T00:00:00Z"),
                "2026-01-01T00:00:00Z",
            ),
            pod(
                "just-ready",
                Some("n"),
                "Running",
                Some("2026-01-01T00:00:50Z"),
                "2026-01-01T00:00:00Z",
            ),
            pod("starting", Some("n"), "Running", None, "2026-01-01T00:00:00Z"),
        ];
        let s = calculate_status(&rs, &pods, now);
        assert_eq!(s["replicas"], 3);
        assert_eq!(s["readyReplicas"], 2);
        assert_eq!(s["availableReplicas"], 1);
        assert_eq!(s["fullyLabeledReplicas"], 0, "no pod has tier=front");
        assert_eq!(s["observedGeneration"], 3);
    }
}
