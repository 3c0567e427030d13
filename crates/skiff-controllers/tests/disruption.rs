//! PodDisruptionBudgets and the Eviction API through a real in-process apiserver
//! and controller manager: the status a user reads with `kubectl get pdb -o yaml`
//! (healthy, desired and expected pods, disruptions allowed, the
//! DisruptionAllowed condition), and what `POST pods/<name>/eviction` answers
//! (429 while the budget allows nothing, 500 for two budgets, success and a
//! deleted pod when a disruption is allowed).

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(30);

async fn live_pods(client: &kube::Client, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the budget's status satisfies `f` and returns it.
async fn budget_where(
    client: &kube::Client,
    name: &str,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    eventually(what, WAIT, || {
        let api = api.clone();
        let f = &f;
        async move {
            let b = api.get(name).await.ok()?;
            let v = serde_json::to_value(&b).ok()?;
            f(&v).then_some(v)
        }
    })
    .await
}

fn condition(b: &serde_json::Value) -> (String, String, String) {
    let c = b["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"))
        .cloned()
        .unwrap_or_default();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_track_pods_and_evictions_respect_them() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let client = cp.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    eventually("3 ready pods", WAIT, || async {
        let pods = live_pods(&client, "app=web").await;
        (pods.len() == 3 && pods.iter().all(ready)).then_some(())
    })
    .await;

    // minAvailable 50% of the Deployment's 3 replicas: 2 desired (rounded up).
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}},
    }))
    .unwrap();
    budgets.create(&PostParams::default(), &pdb).await.unwrap();
    let b = budget_where(&client, "web", "the budget's first status", |b| {
        b["status"]["observedGeneration"] == 1 && b["status"]["currentHealthy"] == 3
    })
    .await;
    assert_eq!(b["status"]["expectedPods"], 3);
    assert_eq!(b["status"]["desiredHealthy"], 2);
    assert_eq!(b["status"]["disruptionsAllowed"], 1);
    assert_eq!(condition(&b), ("True".into(), "SufficientPods".into(), "".into()));

    // maxUnavailable 0%: nothing may be disrupted.
    let patch = json!({"spec": {"minAvailable": null, "maxUnavailable": "0%"}});
    budgets
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let b = budget_where(&client, "web", "the budget at generation 2", |b| {
        b["status"]["observedGeneration"] == 2
    })
    .await;
    assert_eq!(
        (
            &b["status"]["expectedPods"],
            &b["status"]["desiredHealthy"],
            &b["status"]["disruptionsAllowed"]
        ),
        (&json!(3), &json!(3), &json!(0))
    );
    assert_eq!(condition(&b), ("False".into(), "InsufficientPods".into(), "".into()));

    // A client that answers 429s to the test instead of retrying them.
    let kc = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.default_retry = false;
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default");
    let victim = live_pods(&client, "app=web").await[0].metadata.name.clone().unwrap();
    let e = api_error(pods.evict(&victim, &EvictParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        e.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let still = pods.get(&victim).await.unwrap();
    assert!(
        still.metadata.deletion_timestamp.is_none(),
        "a refused eviction deletes nothing"
    );

    // Two budgets selecting the pod: the eviction subresource refuses with 500.
    let other: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "other"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .unwrap();
    budgets.create(&PostParams::default(), &other).await.unwrap();
    let e = api_error(pods.evict(&victim, &EvictParams::default()).await.unwrap_err());
    assert_eq!(e.code, 500);
    assert_eq!(
        e.message,
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    budgets.delete("other", &DeleteParams::default()).await.unwrap();

    // maxUnavailable 1: one eviction is allowed; the pod goes and is replaced.
    let patch = json!({"spec": {"maxUnavailable": 1}});
    budgets
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    budget_where(&client, "web", "one disruption allowed", |b| {
        b["status"]["observedGeneration"] == 3 && b["status"]["disruptionsAllowed"] == 1
    })
    .await;
    let status = pods.evict(&victim, &EvictParams::default()).await.unwrap();
    assert_eq!(status.status, Some(kube::core::response::StatusSummary::Success));
    eventually("the evicted pod gone", WAIT, || async {
        match pods.get_opt(&victim).await {
            Ok(None) => Some(()),
            Ok(Some(p)) if p.metadata.deletion_timestamp.is_some() => Some(()),
            _ => None,
        }
    })
    .await;
    let b = budget_where(&client, "web", "the budget healthy again", |b| {
        b["status"]["currentHealthy"] == 3 && b["status"]["disruptionsAllowed"] == 1
    })
    .await;
    assert!(
        b["status"]["disruptedPods"].as_object().is_none_or(|m| m.is_empty()),
        "the eviction's record is dropped once the pod is gone: {b}"
    );

    // A pod whose controller has no scale: the budget fails safe.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let odd: Pod = serde_json::from_value(json!({
        "metadata": {"name": "odd", "labels": {"app": "odd"}, "ownerReferences": [{"apiVersion": "v1",
            "kind": "ConfigMap", "name": "owner", "uid": cm.metadata.uid, "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &odd).await.unwrap();
    let odd_pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "odd"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "odd"}}},
    }))
    .unwrap();
    budgets.create(&PostParams::default(), &odd_pdb).await.unwrap();
    let b = budget_where(&client, "odd", "the odd budget failing safe", |b| {
        condition(b).1 == "SyncFailed"
    })
    .await;
    assert_eq!(b["status"]["disruptionsAllowed"], 0);
    assert_eq!(condition(&b).2, "found no controllers for pod \"odd\"");
}
