//! Taint-based eviction through a real in-process apiserver, controller manager and
//! scheduler: when a node gets a `NoExecute` taint, a pod that does not tolerate it is
//! deleted at once, a Deployment's pods that tolerate it for a few seconds are deleted
//! after those seconds (with the `TaintManagerEviction` event) and recreated on the
//! other node, and a pod that tolerates it forever stays.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(40);
const TAINT: &str = "example.com/maintenance";

async fn pods(client: &kube::Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

async fn bare_pod(client: &kube::Client, name: &str, tolerations: serde_json::Value) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "a", "tolerations": tolerations,
                 "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_leave_a_node_with_a_noexecute_taint_after_their_toleration() {
    let cp = ControlPlane::start().await;
    let client = cp.client.clone();
    cp.add_node("a", "4", "8Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(client.clone(), cp.shutdown.child_token());

    // Two replicas tolerating the taint for 3 s, all on node a (the only node).
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoExecute",
                                      "tolerationSeconds": 3}],
                     "containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    eventually("two web pods on node a", WAIT, || async {
        let on_a = pods(&client)
            .await
            .iter()
            .filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with("web-")) && node_of(p) == Some("a"))
            .count();
        (on_a == 2).then_some(())
    })
    .await;
    // A pod that tolerates the taint forever (as DaemonSet pods tolerate unreachable)
    // and one that does not tolerate it at all.
    bare_pod(
        &client,
        "forever",
        json!([{"key": TAINT, "operator": "Exists", "effect": "NoExecute"}]),
    )
    .await;
    bare_pod(&client, "intolerant", json!([])).await;

    // Node b joins; node a goes into maintenance (NoSchedule keeps new pods off it).
    cp.add_node("b", "4", "8Gi", json!({})).await;
    let tainted_at = std::time::Instant::now();
    Api::<Node>::all(client.clone())
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [
                {"key": TAINT, "effect": "NoExecute", "timeAdded": skiff_api::events::now_string()},
                {"key": TAINT, "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();

    // The intolerant pod goes at once (well within the others' 3 s).
    eventually("the intolerant pod to be deleted", WAIT, || async {
        let gone = pods(&client)
            .await
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some("intolerant") || terminating(p));
        gone.then_some(())
    })
    .await;

    // The Deployment's pods are replaced on node b after their toleration.
    eventually("two web pods running on node b, none left on a", WAIT, || async {
        let all = pods(&client).await;
        let web: Vec<&Pod> = all
            .iter()
            .filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with("web-")) && !terminating(p))
            .collect();
        (web.len() == 2 && web.iter().all(|p| node_of(p) == Some("b"))).then_some(())
    })
    .await;
    assert!(
        tainted_at.elapsed() >= Duration::from_secs(3),
        "pods tolerating the taint for 3 s were evicted after {:?}",
        tainted_at.elapsed()
    );
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    let evictions: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("TaintManagerEviction"))
        .filter_map(|e| e.message.clone())
        .collect();
    assert!(
        evictions
            .iter()
            .any(|m| m == "Marking for deletion Pod default/intolerant"),
        "{evictions:?}"
    );
    assert!(
        evictions
            .iter()
            .filter(|m| m.starts_with("Marking for deletion Pod default/web-"))
            .count()
            >= 2,
        "{evictions:?}"
    );

    // The pod tolerating it forever is still there, not terminating.
    let forever = Api::<Pod>::namespaced(client.clone(), "default")
        .get("forever")
        .await
        .unwrap();
    assert!(!terminating(&forever));
    cp.shutdown.cancel();
}
