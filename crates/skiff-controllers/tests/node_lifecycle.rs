//! The node lifecycle controller against a real in-process apiserver: a node whose
//! heartbeats stopped gets Ready=Unknown and the unreachable taints, a node that
//! reports NotReady gets the not-ready taints until it reports Ready again, and a
//! renewed Lease counts as a heartbeat.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// Creates a node whose Ready condition has `status` and was last heartbeated at `heartbeat`.
async fn node(nodes: &Api<Node>, name: &str, status: &str, heartbeat: &str) {
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    set_ready(nodes, name, status, heartbeat).await;
}

async fn set_ready(nodes: &Api<Node>, name: &str, status: &str, heartbeat: &str) {
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status, "reason": "KubeletReady",
        "lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

fn taints(n: &Node) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect();
    t.sort();
    t
}

fn ready(n: &Node) -> (String, Option<String>) {
    let c = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .unwrap();
    (c.status, c.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_their_heartbeats() {
    let cp = ControlPlane::start().await;
    let nodes: Api<Node> = Api::all(cp.client.clone());
    let long_ago = "2020-01-01T00:00:00Z";
    let now = skiff_api::events::now_string();
    // Stale condition, but a Lease renewed just now: alive.
    node(&nodes, "leased", "True", long_ago).await;
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leased"},
        "spec": {"holderIdentity": "leased", "leaseDurationSeconds": 40,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}}))
    .unwrap();
    Api::<Lease>::namespaced(cp.client.clone(), "kube-node-lease")
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    // Neither condition heartbeats nor a Lease since long ago: gone silent.
    node(&nodes, "silent", "True", long_ago).await;
    // Reporting NotReady.
    node(&nodes, "sick", "False", &now).await;
    cp.start_controllers(cp.shutdown.child_token());

    let silent = eventually("the silent node to be marked Unknown and tainted", WAIT, || async {
        let n = nodes.get("silent").await.ok()?;
        (ready(&n).0 == "Unknown" && taints(&n).len() == 2).then_some(n)
    })
    .await;
    assert_eq!(ready(&silent).1.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        taints(&silent),
        [
            ("node.kubernetes.io/unreachable".to_string(), "NoExecute".to_string()),
            ("node.kubernetes.io/unreachable".to_string(), "NoSchedule".to_string()),
        ]
    );
    let sick = eventually("the NotReady node to be tainted", WAIT, || async {
        let n = nodes.get("sick").await.ok()?;
        (!taints(&n).is_empty()).then_some(n)
    })
    .await;
    assert_eq!(
        taints(&sick),
        [
            ("node.kubernetes.io/not-ready".to_string(), "NoExecute".to_string()),
            ("node.kubernetes.io/not-ready".to_string(), "NoSchedule".to_string()),
        ]
    );
    // Every node was evaluated by the time both are tainted; the leased one is left alone.
    let leased = nodes.get("leased").await.unwrap();
    assert_eq!(ready(&leased).0, "True");
    assert!(taints(&leased).is_empty());

    // The sick node recovers: its taints go.
    set_ready(&nodes, "sick", "True", &skiff_api::events::now_string()).await;
    eventually("the recovered node's taints to be removed", WAIT, || async {
        let n = nodes.get("sick").await.ok()?;
        taints(&n).is_empty().then_some(())
    })
    .await;
}
