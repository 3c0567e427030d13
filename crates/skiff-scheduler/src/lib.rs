//! The Skiff scheduler: places unbound pods on nodes the way kube-scheduler does.
//!
//! It watches pods and nodes through the apiserver (kube-rs reflectors), filters
//! nodes with the plugins in [`plugins`], scores the feasible ones (LeastAllocated),
//! and binds through `pods/{name}/binding`. A pod that fits nowhere gets a
//! `FailedScheduling` event with the upstream-style message, its `PodScheduled=False`
//! condition (reason `Unschedulable`), and is retried with backoff (1 s doubling to
//! 10 s) and whenever pods or nodes change.
#![deny(missing_docs)]

pub mod plugins;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Event, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use skiff_api::events::{EventType, new_event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use plugins::Resources;

/// Name pods select this scheduler by (`spec.schedulerName`).
pub const SCHEDULER_NAME: &str = "default-scheduler";
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Scheduler errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod or node cache could not be filled from the apiserver.
    #[error("scheduler cache: {0}")]
    Cache(String),
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn is_pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty))
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == SCHEDULER_NAME)
        && spec.and_then(|s| s.scheduling_gates.as_ref()).is_none_or(Vec::is_empty)
        && p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn is_active_on_node(p: &Pod) -> Option<&str> {
    let node = p.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())?;
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded" | "Failed") => None,
        _ => Some(node),
    }
}

fn reference(p: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace.clone(),
        uid: p.metadata.uid.clone(),
        resource_version: p.metadata.resource_version.clone(),
        ..Default::default()
    }
}

struct Scheduler {
    client: kube::Client,
    /// Pods bound by us that the cache has not yet seen bound: uid -> (node, requests).
    assumed: HashMap<String, (String, Resources)>,
    /// Unschedulable pods: uid -> (current backoff, next attempt, last message).
    backoff: HashMap<String, (Duration, Instant, String)>,
}

impl Scheduler {
    async fn event(&self, pod: &Pod, ty: EventType, reason: &str, message: &str) {
        let ev = new_event(
            &reference(pod),
            ty,
            reason,
            message,
            SCHEDULER_NAME,
            None,
            jiff::Timestamp::now(),
        );
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if let Err(e) = Api::<Event>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &ev)
            .await
        {
            tracing::debug!(error = %e, "recording event failed");
        }
    }

    /// One scheduling pass over all pending pods.
    async fn pass(&mut self, pods: &[std::sync::Arc<Pod>], nodes: &[std::sync::Arc<Node>]) {
        let mut used: HashMap<String, Resources> = HashMap::new();
        for p in pods {
            if let Some(node) = is_active_on_node(p) {
                used.entry(node.to_string())
                    .or_default()
                    .add_pod(&plugins::pod_requests(p));
            }
        }
        // Assumed pods the cache already shows bound are no longer assumed.
        self.assumed
            .retain(|u, _| pods.iter().any(|p| uid(p) == *u && is_pending(p)));
        for (node, req) in self.assumed.values() {
            used.entry(node.clone()).or_default().add_pod(req);
        }
        let mut pending: Vec<&Pod> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| is_pending(p) && !self.assumed.contains_key(&uid(p)))
            .collect();
        pending.sort_by(|a, b| {
            let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            prio(b)
                .cmp(&prio(a))
                .then_with(|| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp))
        });
        let now = Instant::now();
        self.backoff.retain(|u, _| pending.iter().any(|p| uid(p) == *u));
        for pod in pending {
            let u = uid(pod);
            if self.backoff.get(&u).is_some_and(|(_, next, _)| *next > now) {
                continue;
            }
            let empty = Resources::default();
            let mut reasons = Vec::new();
            let mut best: Option<(i64, &str)> = None;
            for node in nodes {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                let node_used = used.get(name).unwrap_or(&empty);
                let r = plugins::filter(pod, node, node_used);
                if r.is_empty() {
                    let score = plugins::least_allocated(pod, node, node_used);
                    if best.is_none_or(|(s, n)| score > s || (score == s && name < n)) {
                        best = Some((score, name));
                    }
                } else {
                    reasons.push(r);
                }
            }
            match best {
                Some((_, node)) => {
                    let node = node.to_string();
                    if self.bind(pod, &node).await {
                        let req = plugins::pod_requests(pod);
                        used.entry(node.clone()).or_default().add_pod(&req);
                        self.assumed.insert(u.clone(), (node, req));
                        self.backoff.remove(&u);
                    }
                }
                None => {
                    let message = plugins::failure_message(nodes.len(), &reasons);
                    self.unschedulable(pod, &message).await;
                    let (delay, _, _) =
                        self.backoff
                            .get(&u)
                            .cloned()
                            .unwrap_or((INITIAL_BACKOFF / 2, now, String::new()));
                    let delay = (delay * 2).min(MAX_BACKOFF);
                    self.backoff.insert(u, (delay, now + delay, message));
                }
            }
        }
    }

    async fn bind(&self, pod: &Pod, node: &str) -> bool {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match api
            .create_subresource::<Binding, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), %node, "bound");
                self.event(
                    pod,
                    EventType::Normal,
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                )
                .await;
                true
            }
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), %node, error = %e, "binding failed");
                false
            }
        }
    }

    async fn unschedulable(&self, pod: &Pod, message: &str) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        self.event(pod, EventType::Warning, "FailedScheduling", message).await;
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message)) {
            return;
        }
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": null, "lastTransitionTime": skiff_api::events::now_string(),
        }]}});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(error = %e, "updating PodScheduled condition failed");
        }
    }
}

impl Resources {
    fn add_pod(&mut self, r: &Resources) {
        self.milli_cpu += r.milli_cpu;
        self.memory += r.memory;
        self.pods += 1;
        for (k, v) in &r.other {
            *self.other.entry(k.clone()).or_default() += v;
        }
    }
}

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> Result<(), Error> {
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (node_store, node_writer) = reflector::store::<Node>();
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects();
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .touched_objects();
    for stream in [pods.map(|_| ()).boxed(), nodes.map(|_| ()).boxed()] {
        let tx = wake_tx.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    item = stream.next() => match item {
                        Some(()) => { let _ = tx.try_send(()); }
                        None => return,
                    }
                }
            }
        });
    }
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = async { tokio::try_join!(pod_store.wait_until_ready(), node_store.wait_until_ready()) } => {
            r.map_err(|e| Error::Cache(e.to_string()))?;
        }
    }
    tracing::info!("scheduler started");
    let mut s = Scheduler {
        client,
        assumed: HashMap::new(),
        backoff: HashMap::new(),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = wake.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Let a burst of watch events settle into the caches.
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.pass(&pod_store.state(), &node_store.state()).await;
    }
}
