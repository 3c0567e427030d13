//! Node lifecycle (pkg/controller/nodelifecycle): a node whose kubelet stopped
//! renewing its Lease (and posting status) for longer than the grace period (40 s,
//! upstream `--node-monitor-grace-period`) gets `Ready=Unknown` with reason
//! `NodeStatusUnknown`; nodes get the `node.kubernetes.io/unreachable` (Unknown) or
//! `node.kubernetes.io/not-ready` (False) taints with effects NoSchedule and
//! NoExecute, removed again when the node reports Ready. Pods are then evicted by
//! [`crate::taint_eviction`] once their tolerationSeconds of those taints have passed.
//!
//! As upstream, Nodes and the Leases of `kube-node-lease` come from watch-fed caches
//! (reflector stores, without `managedFields`); every 5 s (upstream
//! `--node-monitor-period`) each cached node is evaluated against them, and only a
//! node whose condition or taints must change costs a request.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Upstream `--node-monitor-grace-period`.
pub const GRACE_PERIOD: Duration = Duration::from_secs(40);
/// Upstream `--node-monitor-period`.
const MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// Namespace of the nodes' heartbeat Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The Ready condition's status (`True`, `False`, `Unknown`).
pub fn ready_status(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".into())
}

/// The node's taints as they should be for its Ready status: other taints kept,
/// the controller's own taints set to match (an existing taint keeps its timeAdded).
pub fn desired_taints(current: &[Taint], ready: &str, now: jiff::Timestamp) -> Vec<Taint> {
    let key = match ready {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| t.key != UNREACHABLE && t.key != NOT_READY)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            let existing = current.iter().find(|t| t.key == key && t.effect == effect);
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                value: None,
                time_added: existing
                    .and_then(|t| t.time_added.clone())
                    .or_else(|| (effect == "NoExecute").then_some(Time(now))),
            });
        }
    }
    out
}

/// The last time the node's kubelet showed signs of life (lease renewal or a
/// Ready-condition heartbeat), in seconds since the epoch.
pub fn last_seen(node: &Node, lease: Option<&Lease>) -> Option<i64> {
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.as_second());
    let heartbeat = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.as_second());
    renew.max(heartbeat)
}

/// One pass over the cached nodes: a node deleted or changed since the cache saw it
/// fails only its own request, never the pass.
async fn monitor(api: &Api<Node>, nodes: &Store<Node>, leases: &Store<Lease>) {
    let now = jiff::Timestamp::now();
    for node in nodes.state() {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let lease = leases.get(&ObjectRef::new(name).within(LEASE_NAMESPACE));
        if let Err(e) = reconcile(api, &node, lease.as_deref(), now).await {
            tracing::warn!(node = %name, error = %e, "node lifecycle update failed");
        }
    }
}

/// Marks one node Ready=Unknown when its heartbeats stopped and sets its taints to
/// match its readiness.
async fn reconcile(
    nodes: &Api<Node>,
    node: &Node,
    lease: Option<&Lease>,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let created = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    let seen = last_seen(node, lease).unwrap_or(created);
    let mut ready = ready_status(node);
    if now.as_second() - seen > GRACE_PERIOD.as_secs() as i64 && ready != "Unknown" {
        tracing::warn!(node = %name, "node stopped posting status; marking Ready=Unknown");
        let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut conditions = serde_json::to_value(
            node.status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default(),
        )
        .unwrap_or_else(|_| json!([]));
        if let Some(list) = conditions.as_array_mut() {
            for c in list.iter_mut() {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(stamp);
            }
        }
        nodes
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conditions}})),
            )
            .await?;
        ready = "Unknown".into();
    }
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let want = desired_taints(&current, &ready, now);
    if want != current {
        nodes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": want}})),
            )
            .await?;
    }
    Ok(())
}

/// Runs the node lifecycle controller until `shutdown`: watches Nodes and node
/// Leases and, once both caches are filled, evaluates every node every 5 s.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(crate::common::strip_managed_fields)
        .reflect(node_writer)
        .map(|e| e.err().map(|e| ("node", e)))
        .boxed();
    let lease_events = watcher(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(crate::common::strip_managed_fields)
    .reflect(lease_writer)
    .map(|e| e.err().map(|e| ("lease", e)))
    .boxed();
    let mut events = futures::stream::select(node_events, lease_events);
    let api: Api<Node> = Api::all(client);
    let mut ticker = tokio::time::interval(MONITOR_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => match event {
                Some(Some((kind, e))) => tracing::warn!(error = %e, "{kind} watch failed; retrying"),
                Some(None) => {}
                None => return,
            },
            _ = ticker.tick() => {
                if crate::common::synced(&nodes) && crate::common::synced(&leases) {
                    monitor(&api, &nodes, &leases).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: None,
        }
    }

    #[test]
    fn taints_follow_readiness_and_keep_foreign_ones() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let other = taint("dedicated", "NoSchedule");
        let t = desired_taints(std::slice::from_ref(&other), "Unknown", now);
        assert_eq!(t.len(), 3);
        assert!(
            t.iter()
                .any(|x| x.key == UNREACHABLE && x.effect == "NoExecute" && x.time_added.is_some())
        );
        let t = desired_taints(&t, "False", now);
        assert!(t.iter().all(|x| x.key != UNREACHABLE));
        assert_eq!(t.iter().filter(|x| x.key == NOT_READY).count(), 2);
        assert_eq!(desired_taints(&t, "True", now), vec![other]);
    }
}
