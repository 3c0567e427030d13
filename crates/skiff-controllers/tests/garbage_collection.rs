//! Garbage collection through a real in-process apiserver: background, orphan and
//! foreground propagation, dangling references, any served kind.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(30);

async fn config_map(api: &Api<ConfigMap>, name: &str, owners: &[&ConfigMap]) -> ConfigMap {
    let refs: Vec<_> = owners
        .iter()
        .map(|o| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid}))
        .collect();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": refs}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_of_any_kind_follow_their_owners() {
    let cp = ControlPlane::start().await;
    cp.start_components();
    let cms: Api<ConfigMap> = Api::namespaced(cp.client.clone(), "default");
    let a = config_map(&cms, "owner-a", &[]).await;
    let b = config_map(&cms, "owner-b", &[]).await;
    config_map(&cms, "only-a", &[&a]).await;
    config_map(&cms, "a-and-b", &[&a, &b]).await;
    cms.delete("owner-a", &DeleteParams::background()).await.unwrap();
    eventually("the dependent of a deleted owner is collected", WAIT, || async {
        matches!(cms.get_opt("only-a").await, Ok(None)).then_some(())
    })
    .await;
    let shared = eventually("the dangling reference is removed", WAIT, || async {
        let cm = cms.get("a-and-b").await.ok()?;
        (cm.metadata.owner_references.as_ref()?.len() == 1).then_some(cm)
    })
    .await;
    assert_eq!(shared.metadata.owner_references.unwrap()[0].name, "owner-b");
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap()
}

async fn running(cp: &ControlPlane, deploys: &Api<Deployment>, name: &str) {
    eventually("rollout", WAIT, || async {
        let d = deploys.get(name).await.ok()?;
        (d.status?.available_replicas? == 2).then_some(())
    })
    .await;
    let _ = cp;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_and_foreground_propagation() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(cp.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");

    // Orphan: the ReplicaSet and its pods stay, without the owner reference.
    deploys
        .create(&PostParams::default(), &deployment("kept"))
        .await
        .unwrap();
    running(&cp, &deploys, "kept").await;
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    deploys.delete("kept", &orphan).await.unwrap();
    eventually("deployment gone, replica set orphaned", WAIT, || async {
        if deploys.get_opt("kept").await.ok()?.is_some() {
            return None;
        }
        let rs = rss.list(&ListParams::default().labels("app=kept")).await.ok()?.items;
        (rs.len() == 1 && rs[0].metadata.owner_references.as_ref().is_none_or(Vec::is_empty)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        pods.list(&ListParams::default().labels("app=kept"))
            .await
            .unwrap()
            .items
            .len(),
        2,
        "orphaned pods keep running"
    );

    // Foreground: the owner goes last.
    deploys
        .create(&PostParams::default(), &deployment("gone"))
        .await
        .unwrap();
    running(&cp, &deploys, "gone").await;
    deploys.delete("gone", &DeleteParams::foreground()).await.unwrap();
    eventually("everything collected", WAIT, || async {
        let d = deploys.get_opt("gone").await.ok()?;
        let rs = rss.list(&ListParams::default().labels("app=gone")).await.ok()?.items;
        let p = pods.list(&ListParams::default().labels("app=gone")).await.ok()?.items;
        (d.is_none() && rs.is_empty() && p.is_empty()).then_some(())
    })
    .await;
}
