//! Node lifecycle (pkg/controller/nodelifecycle): a node whose kubelet stopped
//! renewing its Lease (and posting status) for longer than the grace period (40 s,
//! upstream `--node-monitor-grace-period`) gets `Ready=Unknown` with reason
//! `NodeStatusUnknown`; nodes get the `node.kubernetes.io/unreachable` (Unknown) or
//! `node.kubernetes.io/not-ready` (False) taints with effects NoSchedule and
//! NoExecute, removed again when the node reports Ready. Evicting pods from tainted
//! nodes after their tolerationSeconds is not done yet.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Upstream `--node-monitor-grace-period`.
pub const GRACE_PERIOD: Duration = Duration::from_secs(40);
const MONITOR_PERIOD: Duration = Duration::from_secs(5);
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

async fn monitor(client: &kube::Client) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease_list = leases.list(&ListParams::default()).await?.items;
    // By name: one lookup per node instead of a scan of every lease.
    let by_name: std::collections::HashMap<&str, &Lease> = lease_list
        .iter()
        .filter_map(|l| Some((l.metadata.name.as_deref()?, l)))
        .collect();
    let now = jiff::Timestamp::now();
    for node in nodes.list(&ListParams::default()).await?.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        // A node deleted since the list must not stop the pass for every other node.
        if let Err(e) = reconcile(&nodes, node, by_name.get(name.as_str()).copied(), now).await {
            tracing::warn!(node = %name, error = %e, "node lifecycle update failed");
        }
    }
    Ok(())
}

/// Marks one node Ready=Unknown when its heartbeats stopped and sets its taints to
/// match its readiness.
async fn reconcile(
    nodes: &Api<Node>,
    node: Node,
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
    let seen = last_seen(&node, lease).unwrap_or(created);
    let mut ready = ready_status(&node);
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

/// Runs the node lifecycle controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    loop {
        if let Err(e) = monitor(&client).await {
            tracing::warn!(error = %e, "node lifecycle pass failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MONITOR_PERIOD) => {}
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
