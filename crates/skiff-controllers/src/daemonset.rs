//! DaemonSet controller (upstream pkg/controller/daemon): one pod of the template
//! on every eligible node.
//!
//! - A node is eligible when the template's `nodeSelector` and required node
//!   affinity admit it and its `NoSchedule`/`NoExecute` taints are tolerated, with
//!   the tolerations upstream adds to every daemon pod ([`daemon_tolerations`]). An
//!   untolerated `NoExecute` taint also evicts a running daemon pod.
//! - Pods are pinned to their node through required node affinity on
//!   `metadata.name` ([`pin_to_node`]) and left to the scheduler, as upstream.
//! - Failed daemon pods are deleted and replaced; surplus pods on a node are
//!   deleted (the oldest one is kept); pods on nodes that should not run them go.
//! - Each template is a ControllerRevision ([`crate::revision`]); pods carry its
//!   hash in `controller-revision-hash`. `RollingUpdate` deletes outdated pods while
//!   at most `maxUnavailable` (int or percent of the desired count, rounded up)
//!   nodes lack an available pod, unavailable outdated pods first; `OnDelete`
//!   replaces a pod only after someone deleted it.
//! - `status`: desired/current/updated numbers scheduled, misscheduled, ready,
//!   available, unavailable, observedGeneration.
//!
//! Pods come from a watch-fed [`PodCache`] guarded by [`Expectations`]; the
//! per-node decisions are the pure [`plan`] and [`status`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, future};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use skiff_api::events::EventType;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{
    ControllerParts, controller_of, delete_pod, is_available, is_conflict, is_not_found, owner_ref, ready_since,
    record, reference, run_controller,
};
use crate::expectations::Expectations;
use crate::pod_cache::{PodCache, PodChange, PodInformer};
use crate::revision::{self, REVISION_HASH};
use crate::scheduling::{node_matches, untolerated};

const COMPONENT: &str = "daemonset-controller";
/// Deprecated label upstream still sets on daemon pods: the DaemonSet's generation.
pub const TEMPLATE_GENERATION: &str = "pod-template-generation";

struct Ctx {
    client: kube::Client,
    pods: Arc<PodCache>,
    nodes: Store<Node>,
    expectations: Mutex<Expectations>,
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Default::default()
    }
}

/// The tolerations upstream adds to daemon pods (`util.AddOrUpdateDaemonPodTolerations`):
/// `not-ready` and `unreachable` NoExecute (without `tolerationSeconds`), and
/// `disk-pressure`, `memory-pressure`, `pid-pressure`, `unschedulable` NoSchedule,
/// plus `network-unavailable` NoSchedule for host-network pods. Existing
/// tolerations with the same key and effect are replaced.
pub fn daemon_tolerations(spec: &mut PodSpec) {
    let mut add = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        add.push(toleration("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for t in add {
        list.retain(|e| !(e.key == t.key && e.effect == t.effect));
        list.push(t);
    }
}

/// Pins a pod spec to `node` (upstream `ReplaceDaemonSetPodNodeNameNodeAffinity`):
/// every required node selector term gets `metadata.name In [node]` as its only
/// field expression (a single such term when there are none), keeping the label
/// expressions.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let req = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.to_string()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![req.clone()]);
    }
}

/// The node a daemon pod runs on or is pinned to.
pub fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Whether a node should run the daemon pod and whether a running one may stay
/// (upstream `NodeShouldRunDaemonPod`): `nodeName` in the template must match;
/// selector and affinity must match; untolerated NoSchedule/NoExecute taints block
/// new pods, untolerated NoExecute taints evict running ones.
pub fn should_run(template: &PodSpec, node: &Node) -> (bool, bool) {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if template
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    if !node_matches(template, node) {
        return (false, false);
    }
    let mut spec = template.clone();
    daemon_tolerations(&mut spec);
    let tols = spec.tolerations.as_deref().unwrap_or_default();
    let evicting = !untolerated(node, tols, "NoExecute").is_empty();
    let blocked = evicting || !untolerated(node, tols, "NoSchedule").is_empty();
    (!blocked, !evicting)
}

fn pod_hash(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref()?.get(REVISION_HASH).map(String::as_str)
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

/// What a sync should do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Nodes to create a daemon pod on.
    pub create_on: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<Arc<Pod>>,
}

/// The pods of the DaemonSet grouped by node (terminating ones left out).
pub fn by_node(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut m: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        if let Some(n) = pod_node(p) {
            m.entry(n).or_default().push(p.clone());
        }
    }
    for list in m.values_mut() {
        list.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    }
    m
}

/// Decides creations and deletions (upstream `manage` followed by
/// `rollingUpdate`). `hash` is the current revision's hash.
pub fn plan(ds: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>], hash: &str, now: Timestamp) -> Plan {
    let spec = ds.spec.clone().unwrap_or_default();
    let template = spec.template.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let grouped = by_node(pods);
    // Nodes whose pod is still terminating get their new pod once it is gone.
    let terminating: BTreeSet<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter_map(|p| pod_node(p))
        .collect();
    let mut p = Plan::default();
    let mut desired = 0;
    let mut unavailable = 0;
    let mut old: Vec<(bool, Arc<Pod>)> = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (run, keep) = should_run(&template, node);
        let on_node = grouped.get(&name).cloned().unwrap_or_default();
        if run {
            desired += 1;
        }
        if run && on_node.is_empty() {
            if !terminating.contains(&name) {
                p.create_on.push(name);
            }
            unavailable += 1;
            continue;
        }
        if !keep {
            p.delete.extend(on_node);
            continue;
        }
        if !run {
            // Tolerated before, no longer schedulable: a running pod may stay.
            continue;
        }
        let (failed, live): (Vec<_>, Vec<_>) = on_node.into_iter().partition(|p| phase(p) == "Failed");
        let replace_failed = !failed.is_empty();
        p.delete.extend(failed);
        let mut live = live.into_iter();
        let Some(first) = live.next() else {
            if replace_failed {
                // Created after the failed pod is gone (next sync).
                unavailable += 1;
            }
            continue;
        };
        // Keep the oldest pod (an updated one if any), delete the rest.
        let rest: Vec<Arc<Pod>> = live.collect();
        let mut all: Vec<Arc<Pod>> = std::iter::once(first).chain(rest).collect();
        if let Some(i) = all.iter().position(|p| pod_hash(p) == Some(hash)) {
            let keep = all.remove(i);
            all.insert(0, keep);
        }
        let keep = all.remove(0);
        p.delete.extend(all);
        let available = is_available(&keep, min_ready, now);
        if !available {
            unavailable += 1;
        }
        if pod_hash(&keep) != Some(hash) {
            old.push((available, keep));
        }
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate" {
        let ru = strategy.rolling_update.unwrap_or_default();
        let max_unavailable =
            crate::rollout::resolve(ru.max_unavailable.as_ref(), desired, true, 0).max(if desired > 0 { 1 } else { 0 });
        // Unavailable outdated pods can always go; available ones within the budget.
        old.sort_by_key(|(available, _)| *available);
        let mut budget = max_unavailable - unavailable;
        for (available, pod) in old {
            if !available {
                p.delete.push(pod);
            } else if budget > 0 {
                budget -= 1;
                p.delete.push(pod);
            }
        }
    }
    p
}

/// The status for the current pods (upstream `updateDaemonSetStatus`).
pub fn status(ds: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>], hash: &str, now: Timestamp) -> DaemonSetStatus {
    let spec = ds.spec.clone().unwrap_or_default();
    let template = spec.template.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let grouped = by_node(pods);
    let mut s = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut ready, mut available, mut updated) = (0, 0, 0);
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (run, _) = should_run(&template, node);
        let on_node: Vec<&Arc<Pod>> = grouped
            .get(&name)
            .into_iter()
            .flatten()
            .filter(|p| phase(p) != "Failed")
            .collect();
        if run {
            s.desired_number_scheduled += 1;
            if let Some(p) = on_node.first() {
                s.current_number_scheduled += 1;
                if ready_since(p).is_some() {
                    ready += 1;
                }
                if is_available(p, min_ready, now) {
                    available += 1;
                }
                if on_node.iter().any(|p| pod_hash(p) == Some(hash)) {
                    updated += 1;
                }
            }
        } else if !on_node.is_empty() {
            s.number_misscheduled += 1;
        }
    }
    s.number_ready = ready;
    s.number_available = Some(available);
    s.updated_number_scheduled = Some(updated);
    s.number_unavailable = Some(s.desired_number_scheduled - available);
    s
}

/// A daemon pod for `node` from the template: the revision hash and template
/// generation labels, the daemon tolerations, the node pin and a controller
/// reference; `generateName: <ds>-`.
pub fn pod_for_node(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let spec = ds.spec.clone().unwrap_or_default();
    let tm = spec.template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.to_string(), hash.to_string());
    if let Some(g) = ds.metadata.generation {
        labels.insert(TEMPLATE_GENERATION.to_string(), g.to_string());
    }
    let mut pod_spec = spec.template.spec.unwrap_or_default();
    daemon_tolerations(&mut pod_spec);
    pin_to_node(&mut pod_spec, node);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or_default())),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref("apps/v1", "DaemonSet", &ds.metadata)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

impl Ctx {
    async fn event(&self, ds: &DaemonSet, ty: EventType, reason: &str, message: &str) {
        record(
            &self.client,
            reference("apps/v1", "DaemonSet", &ds.metadata),
            ty,
            reason,
            message,
            COMPONENT,
        )
        .await;
    }

    async fn apply_plan(&self, ds: &DaemonSet, plan: &Plan, hash: &str) -> Result<(), Error> {
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            ds.metadata.namespace.as_deref().unwrap_or_default(),
        );
        {
            let mut exp = self.expectations.lock().expect("expectations");
            exp.expect_creations(&uid, plan.create_on.len(), Instant::now());
            exp.expect_deletions(&uid, plan.delete.iter().map(|p| uid_of(p)), Instant::now());
        }
        let deletes = future::join_all(plan.delete.iter().map(|p| {
            let api = api.clone();
            async move { (p, delete_pod(&api, p).await) }
        }));
        let creates = future::join_all(plan.create_on.iter().map(|n| {
            let (api, pod) = (api.clone(), pod_for_node(ds, n, hash));
            async move { (n, api.create(&PostParams::default(), &pod).await) }
        }));
        let (deleted, created) = futures::join!(deletes, creates);
        let mut first_error: Option<kube::Error> = None;
        for (p, r) in deleted {
            let name = p.metadata.name.clone().unwrap_or_default();
            match r {
                Ok(_) => {
                    self.event(
                        ds,
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
        for (node, r) in created {
            match r {
                Ok(p) => {
                    let msg = format!("Created pod: {}", p.metadata.name.as_deref().unwrap_or_default());
                    self.event(ds, EventType::Normal, "SuccessfulCreate", &msg).await;
                }
                Err(e) => {
                    self.expectations.lock().expect("expectations").creation_observed(&uid);
                    let msg = format!("Error creating pod on node {node}: {e}");
                    self.event(ds, EventType::Warning, "FailedCreate", &msg).await;
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let template = spec.template.clone();

    let revisions = revision::owned(&ctx.client, &ns, &uid).await?;
    let current = revision::ensure(&ctx.client, "apps/v1", "DaemonSet", &ds.metadata, &template, &revisions).await?;
    let hash = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH))
        .cloned()
        .unwrap_or_default();

    let pods = ctx.pods.controlled_by(&uid);
    let mut nodes: Vec<Arc<Node>> = ctx.nodes.state();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let now = Timestamp::now();
    // Pods on nodes that no longer exist go too.
    let known: BTreeSet<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
    let satisfied = ctx
        .expectations
        .lock()
        .expect("expectations")
        .satisfied(&uid, Instant::now());
    let mut act_error = None;
    if satisfied {
        let mut plan = plan(&ds, &nodes, &pods, &hash, now);
        plan.delete.extend(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| pod_node(p).is_none_or(|n| !known.contains(&n)))
                .cloned(),
        );
        if let Err(e) = ctx.apply_plan(&ds, &plan, &hash).await {
            act_error = Some(e);
        }
    }

    let in_use: Vec<Arc<str>> = pods.iter().filter_map(|p| pod_hash(p).map(Arc::from)).collect();
    let current_name = current.metadata.name.clone().unwrap_or_default();
    revision::truncate(
        &ctx.client,
        &revisions,
        &current_name,
        &in_use,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    let new_status = status(&ds, &nodes, &pods, &hash, now);
    if ds.status.as_ref() != Some(&new_status) {
        let mut next = (*ds).clone();
        next.status = Some(new_status.clone());
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .replace_status(&name, &PostParams::default(), &next)
            .await?;
    }
    if let Some(e) = act_error {
        return Err(e);
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && new_status.number_available != Some(new_status.number_ready) {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

fn error_policy(_ds: Arc<DaemonSet>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    match e {
        Error::Kube(k) if is_conflict(k) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::warn!(error = %e, "daemonset sync failed");
            Action::requeue(Duration::from_secs(2))
        }
    }
}

fn ds_owner(p: &Pod) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    controller_of(&p.metadata).filter(|r| r.kind == "DaemonSet" && r.api_version.starts_with("apps/"))
}

fn observe(change: &PodChange, exp: &Mutex<Expectations>) -> Vec<ObjectRef<DaemonSet>> {
    let mut exp = exp.lock().expect("expectations");
    let mut out = Vec::new();
    let mut push = |p: &Pod| {
        if let Some(r) = ds_owner(p) {
            out.push(ObjectRef::new(&r.name).within(p.metadata.namespace.as_deref().unwrap_or_default()));
        }
    };
    match change {
        PodChange::Added(p) => {
            if let Some(r) = ds_owner(p) {
                exp.creation_observed(&r.uid);
            }
            push(p);
        }
        PodChange::Updated { old, new } => {
            if new.metadata.deletion_timestamp.is_some()
                && old.metadata.deletion_timestamp.is_none()
                && let Some(r) = ds_owner(new)
            {
                exp.deletion_observed(&r.uid, &uid_of(new));
            }
            push(new);
        }
        PodChange::Deleted(p) => {
            if let Some(r) = ds_owner(p) {
                exp.deletion_observed(&r.uid, &uid_of(p));
            }
            push(p);
        }
    }
    out
}

/// Runs the DaemonSet controller until `shutdown`, with a pod informer of its own.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let pods = PodInformer::start(client.clone(), shutdown.clone());
    run_with_pods(client, pods, shutdown).await
}

/// [`run`] reading pods from a shared [`PodInformer`] (the caller runs it).
pub async fn run_with_pods(client: kube::Client, pods: Arc<PodInformer>, shutdown: CancellationToken) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.cache(),
        nodes,
        expectations: Mutex::new(Expectations::new()),
    });
    let (store, writer) = reflector::store::<DaemonSet>();
    let (trigger_tx, triggers) = futures::channel::mpsc::unbounded::<ObjectRef<DaemonSet>>();
    let pods_ready = {
        let hook_ctx = ctx.clone();
        let tx = trigger_tx.clone();
        pods.subscribe(move |change: PodChange| {
            for r in observe(&change, &hook_ctx.expectations) {
                let _ = tx.unbounded_send(r);
            }
        })
    };
    // Any node change may change where daemon pods belong: resync every DaemonSet.
    {
        let (store, token) = (store.clone(), shutdown.clone());
        let mut node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(node_writer)
            .touched_objects()
            .boxed();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    e = node_events.next() => match e {
                        None => return,
                        Some(Err(_)) => continue,
                        Some(Ok(_)) => {
                            for ds in store.state() {
                                let _ = trigger_tx.unbounded_send(ObjectRef::from_obj(ds.as_ref()));
                            }
                        }
                    },
                }
            }
        });
    }
    let exp_ctx = ctx.clone();
    let on_delete = move |d: &DaemonSet| {
        let uid = d.metadata.uid.clone().unwrap_or_default();
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
        Api::<DaemonSet>::all(client),
        parts,
        on_delete,
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

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}))
                .unwrap(),
        )
    }

    fn ds(extra: serde_json::Value) -> DaemonSet {
        let mut spec = json!({"selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(
            json!({"metadata": {"name": "d", "namespace": "ns", "uid": "du", "generation": 2}, "spec": spec}),
        )
        .unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str, phase: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "uid": name, "labels": {REVISION_HASH: hash},
                    "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"containers": [], "nodeName": node},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
            }))
            .unwrap(),
        )
    }

    fn now() -> Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        let mut v: Vec<String> = pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn daemon_pods_tolerate_node_conditions_and_are_pinned() {
        let mut spec: PodSpec = serde_json::from_value(json!({"containers": [], "hostNetwork": true,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "os", "operator": "In", "values": ["linux"]}]}]}}}}))
        .unwrap();
        daemon_tolerations(&mut spec);
        daemon_tolerations(&mut spec);
        let tols = spec.tolerations.clone().unwrap();
        assert_eq!(
            tols.len(),
            7,
            "six defaults plus network-unavailable for host network, no duplicates"
        );
        let not_ready = tols
            .iter()
            .find(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready"))
            .unwrap();
        assert_eq!(
            not_ready.toleration_seconds, None,
            "daemon pods are never evicted for not-ready"
        );
        pin_to_node(&mut spec, "n7");
        let terms = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert_eq!(
            terms[0].match_expressions.as_ref().unwrap()[0].key,
            "os",
            "label expressions kept"
        );
        assert_eq!(
            terms[0].match_fields.as_ref().unwrap()[0].values.as_ref().unwrap(),
            &vec!["n7".to_string()]
        );
        let p = Pod {
            spec: Some(spec),
            ..Default::default()
        };
        assert_eq!(pod_node(&p).as_deref(), Some("n7"));
    }

    #[test]
    fn eligibility_follows_selectors_and_taints() {
        let template: PodSpec =
            serde_json::from_value(json!({"containers": [], "nodeSelector": {"role": "edge"}})).unwrap();
        let cases = [
            (node("a", json!({"role": "edge"}), json!([])), (true, true)),
            (node("b", json!({"role": "core"}), json!([])), (false, false)),
            (
                node(
                    "c",
                    json!({"role": "edge"}),
                    json!([{"key": "gpu", "effect": "NoSchedule"}]),
                ),
                (false, true),
            ),
            (
                node(
                    "d",
                    json!({"role": "edge"}),
                    json!([{"key": "gpu", "effect": "NoExecute"}]),
                ),
                (false, false),
            ),
            (
                node(
                    "e",
                    json!({"role": "edge"}),
                    json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
                ),
                (true, true),
            ),
            (
                node(
                    "f",
                    json!({"role": "edge"}),
                    json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
                ),
                (true, true),
            ),
            (
                node(
                    "g",
                    json!({"role": "edge"}),
                    json!([{"key": "x", "effect": "PreferNoSchedule"}]),
                ),
                (true, true),
            ),
        ];
        for (n, want) in cases {
            assert_eq!(
                should_run(&template, &n),
                want,
                "node {}",
                n.metadata.name.as_deref().unwrap()
            );
        }
    }

    #[test]
    fn plan_creates_missing_replaces_failed_and_drops_extras() {
        let d = ds(json!({}));
        let nodes = vec![
            node("n1", json!({}), json!([])),
            node("n2", json!({}), json!([])),
            node("n3", json!({}), json!([])),
            node("tainted", json!({}), json!([{"key": "k", "effect": "NoExecute"}])),
        ];
        let pods = vec![
            pod("on-n1", "n1", "h", "Running", true),
            pod("failed-n2", "n2", "h", "Failed", false),
            pod("a-n3", "n3", "h", "Running", true),
            pod("b-n3", "n3", "h", "Running", true),
            pod("evicted", "tainted", "h", "Running", true),
        ];
        let p = plan(&d, &nodes, &pods, "h", now());
        assert!(p.create_on.is_empty(), "n2 gets its pod once the failed one is gone");
        assert_eq!(names(&p.delete), vec!["b-n3", "evicted", "failed-n2"]);
        let p = plan(&d, &nodes, &pods[..1], "h", now());
        assert_eq!(p.create_on, vec!["n2", "n3"]);
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let nodes: Vec<Arc<Node>> = (1..=4).map(|i| node(&format!("n{i}"), json!({}), json!([]))).collect();
        let pods: Vec<Arc<Pod>> = (1..=4)
            .map(|i| pod(&format!("old{i}"), &format!("n{i}"), "old", "Running", true))
            .collect();
        let p = plan(&ds(json!({})), &nodes, &pods, "new", now());
        assert_eq!(p.delete.len(), 1, "maxUnavailable=1");
        let half = ds(json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}}));
        assert_eq!(plan(&half, &nodes, &pods, "new", now()).delete.len(), 2);
        // An unready outdated pod is replaced regardless, and uses up the budget.
        let mut mixed = pods.clone();
        mixed[0] = pod("old1", "n1", "old", "Running", false);
        assert_eq!(
            names(&plan(&ds(json!({})), &nodes, &mixed, "new", now()).delete),
            vec!["old1"]
        );
        let on_delete = ds(json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(plan(&on_delete, &nodes, &pods, "new", now()).delete.is_empty());
    }

    #[test]
    fn status_counts_per_node() {
        let d = ds(json!({}));
        let nodes = vec![
            node("n1", json!({}), json!([])),
            node("n2", json!({}), json!([])),
            node("n3", json!({}), json!([])),
            node("blocked", json!({}), json!([{"key": "k", "effect": "NoSchedule"}])),
        ];
        let pods = vec![
            pod("p1", "n1", "new", "Running", true),
            pod("p2", "n2", "old", "Running", false),
            pod("p4", "blocked", "new", "Running", true),
        ];
        let s = status(&d, &nodes, &pods, "new", now());
        assert_eq!(s.desired_number_scheduled, 3);
        assert_eq!(s.current_number_scheduled, 2);
        assert_eq!(s.number_misscheduled, 1);
        assert_eq!(s.number_ready, 1);
        assert_eq!(s.number_available, Some(1));
        assert_eq!(s.number_unavailable, Some(2));
        assert_eq!(s.updated_number_scheduled, Some(1));
        assert_eq!(s.observed_generation, Some(2));
    }
}
