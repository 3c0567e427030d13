//! The node IPAM controller against a real in-process apiserver: Nodes get distinct
//! podCIDRs from the cluster CIDR, existing assignments (inside the range or not) are
//! kept, a full range leaves the Node waiting with a `CIDRNotAvailable` event, a
//! deleted Node's CIDR goes to the next Node, and a restarted controller re-reads the
//! assignments instead of handing one out twice.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_controllers::node_ipam::NodeIpamConfig;
use support::{ControlPlane, eventually};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn create(nodes: &Api<Node>, name: &str, cidr: Option<&str>) {
    let spec = cidr
        .map(|c| json!({"podCIDR": c, "podCIDRs": [c]}))
        .unwrap_or(json!({}));
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
}

fn cidr(n: &Node) -> Option<String> {
    let spec = n.spec.as_ref()?;
    let c = spec.pod_cidr.clone()?;
    assert_eq!(
        spec.pod_cidrs.as_deref(),
        Some(std::slice::from_ref(&c)),
        "podCIDRs mirrors podCIDR"
    );
    Some(c)
}

async fn wait_cidr(nodes: &Api<Node>, name: &str) -> String {
    eventually(&format!("a podCIDR for {name}"), WAIT, || async {
        nodes.get(name).await.ok().as_ref().and_then(cidr)
    })
    .await
}

fn start(cp: &ControlPlane) -> CancellationToken {
    let token = cp.shutdown.child_token();
    cp.start_controllers_with(token.clone(), |o| {
        // Four node CIDRs: 10.42.0.0/24 .. 10.42.3.0/24.
        o.node_ipam = Some(NodeIpamConfig::parse("10.42.0.0/22", 24).unwrap());
    });
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs_until_the_range_is_full() {
    let cp = ControlPlane::start().await;
    let nodes: Api<Node> = Api::all(cp.client.clone());
    // Chosen before the controller ran: inside the range (kept and skipped), and
    // outside it (a hollow node's; kept).
    create(&nodes, "pre", Some("10.42.0.0/24")).await;
    create(&nodes, "hollow", Some("10.128.0.0/24")).await;
    create(&nodes, "a", None).await;
    let token = start(&cp);

    let a = wait_cidr(&nodes, "a").await;
    create(&nodes, "b", None).await;
    create(&nodes, "c", None).await;
    let b = wait_cidr(&nodes, "b").await;
    let c = wait_cidr(&nodes, "c").await;
    let got: BTreeSet<String> = [a.clone(), b, c].into();
    let want: BTreeSet<String> = ["10.42.1.0/24", "10.42.2.0/24", "10.42.3.0/24"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
    assert_eq!(cidr(&nodes.get("pre").await.unwrap()).as_deref(), Some("10.42.0.0/24"));
    assert_eq!(
        cidr(&nodes.get("hollow").await.unwrap()).as_deref(),
        Some("10.128.0.0/24")
    );

    // Full: the Node waits, with the upstream event.
    create(&nodes, "d", None).await;
    let events: Api<Event> = Api::namespaced(cp.client.clone(), "default");
    let ev = eventually("the CIDRNotAvailable event", WAIT, || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=d"))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("CIDRNotAvailable"))
    })
    .await;
    assert_eq!(ev.message.as_deref(), Some("Node d status is now: CIDRNotAvailable"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(cidr(&nodes.get("d").await.unwrap()), None);

    // Deleting a Node hands its CIDR to the waiting one.
    nodes.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(wait_cidr(&nodes, "d").await, a);

    // A new controller (restart, or another server taking over) re-reads every
    // assignment: the range is still full, and deleting a Node frees exactly its CIDR.
    token.cancel();
    let freed = cidr(&nodes.get("b").await.unwrap()).unwrap();
    nodes.delete("b", &DeleteParams::default()).await.unwrap();
    create(&nodes, "e", None).await;
    let _token = start(&cp);
    assert_eq!(
        eventually("a podCIDR for e after the restart", Duration::from_secs(60), || async {
            nodes.get("e").await.ok().as_ref().and_then(cidr)
        })
        .await,
        freed
    );
    create(&nodes, "f", None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cidr(&nodes.get("f").await.unwrap()), None, "no CIDR handed out twice");
    let all: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(cidr)
        .collect();
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "{all:?}");
}
