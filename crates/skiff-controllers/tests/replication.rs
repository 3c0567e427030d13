//! ReplicationControllers through a real in-process apiserver: the selector and
//! labels default from the template, pods follow `spec.replicas` through the
//! `scale` subresource (what `kubectl scale rc` uses), and status counts them.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(30);

async fn owned_pods(client: &kube::Client, uid: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("app=legacy"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.metadata.owner_references.iter().flatten().any(|r| {
                r.uid == uid && r.controller == Some(true) && r.kind == "ReplicationController" && r.api_version == "v1"
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controllers_scale_their_pods() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let client = cp.client.clone();
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {"replicas": 2,
            "template": {"metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    let rc = rcs.create(&PostParams::default(), &rc).await.unwrap();
    let spec = rc.spec.clone().unwrap();
    assert_eq!(
        spec.selector.unwrap(),
        [("app".to_string(), "legacy".to_string())].into(),
        "the selector defaults to the template's labels"
    );
    assert_eq!(rc.metadata.labels.unwrap()["app"], "legacy");
    let uid = rc.metadata.uid.clone().unwrap();

    let wait_for = |n: usize| {
        let (client, uid) = (client.clone(), uid.clone());
        async move {
            eventually(&format!("{n} pods and status"), WAIT, || {
                let (client, uid) = (client.clone(), uid.clone());
                async move {
                    let pods = owned_pods(&client, &uid).await;
                    let rc = Api::<ReplicationController>::namespaced(client, "default")
                        .get("legacy")
                        .await
                        .ok()?;
                    let st = rc.status.clone()?;
                    (pods.len() == n
                        && st.replicas == n as i32
                        && st.ready_replicas == Some(n as i32)
                        && st.available_replicas == Some(n as i32)
                        && st.observed_generation == rc.metadata.generation)
                        .then_some(())
                }
            })
            .await
        }
    };
    wait_for(2).await;

    // `kubectl scale rc legacy --replicas=4` writes the scale subresource.
    let scale = rcs.get_scale("legacy").await.unwrap();
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=legacy"));
    rcs.patch_scale(
        "legacy",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    wait_for(4).await;
    rcs.patch_scale(
        "legacy",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    wait_for(1).await;
}
