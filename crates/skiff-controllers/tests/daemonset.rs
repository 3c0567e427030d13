//! DaemonSet behaviour through a real in-process apiserver with the scheduler and
//! a simulated kubelet: one pod per eligible node, taints respected, a template
//! change rolled out node by node with a ControllerRevision per template.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(30);

async fn daemon_pods(client: &kube::Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("app=agent"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0].image.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_set_runs_one_pod_per_eligible_node_and_rolls_out_updates() {
    let cp = ControlPlane::start().await;
    for n in ["n1", "n2", "gpu"] {
        cp.add_node(n, "4", "8Gi", json!({})).await;
    }
    let nodes: Api<Node> = Api::all(cp.client.clone());
    nodes
        .patch(
            "gpu",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let dss: Api<DaemonSet> = Api::namespaced(cp.client.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}},
    }))
    .unwrap();
    dss.create(&PostParams::default(), &ds).await.unwrap();

    let status = eventually("two ready daemon pods", WAIT, || async {
        let s = dss.get("agent").await.ok()?.status?;
        (s.number_ready == 2 && s.desired_number_scheduled == 2).then_some(s)
    })
    .await;
    assert_eq!(status.current_number_scheduled, 2);
    assert_eq!(status.updated_number_scheduled, Some(2));
    assert_eq!(status.number_available, Some(2));
    assert_eq!(status.observed_generation, Some(1));
    let pods = daemon_pods(&cp.client).await;
    let on: BTreeSet<String> = pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
    assert_eq!(
        on,
        BTreeSet::from(["n1".to_string(), "n2".to_string()]),
        "the tainted node gets none"
    );
    for p in &pods {
        let tols = p.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert!(
            tols.iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable"))
        );
        assert!(
            p.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("controller-revision-hash")
        );
    }

    // A new node gets a pod; a template change replaces every pod.
    cp.add_node("n3", "4", "8Gi", json!({})).await;
    eventually("a pod on the new node", WAIT, || async {
        let s = dss.get("agent").await.ok()?.status?;
        (s.number_ready == 3).then_some(())
    })
    .await;
    dss.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}})),
    )
    .await
    .unwrap();
    eventually("the rollout to finish", WAIT, || async {
        let s = dss.get("agent").await.ok()?.status?;
        let pods = daemon_pods(&cp.client).await;
        (s.observed_generation == Some(2)
            && s.updated_number_scheduled == Some(3)
            && s.number_available == Some(3)
            && pods.len() == 3
            && pods.iter().all(|p| image(p) == "agent:2"))
        .then_some(())
    })
    .await;
    let revisions = Api::<ControllerRevision>::namespaced(cp.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut numbers: Vec<i64> = revisions.iter().map(|r| r.revision).collect();
    numbers.sort();
    assert_eq!(numbers, vec![1, 2], "one revision per template");
}
