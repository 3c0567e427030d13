//! The controllers and the scheduler against a real in-process apiserver: a
//! Deployment rolls out, scales, rolls over to a new template and is garbage
//! collected; namespaces are emptied and finalized.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(30);

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
            },
        },
    }))
    .expect("deployment")
}

async fn rollout_done(api: &Api<Deployment>, name: &str) -> Option<Deployment> {
    let d = api.get(name).await.ok()?;
    let want = d.spec.as_ref()?.replicas?;
    let s = d.status.clone()?;
    (s.observed_generation? >= d.metadata.generation?
        && s.updated_replicas? == want
        && s.replicas? == want
        && s.available_replicas.unwrap_or(0) == want)
        .then_some(d)
}

async fn owned_pods(client: &kube::Client, ns: &str, label: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(label))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_scales_updates_and_is_collected() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "4", "8Gi", json!({"kubernetes.io/hostname": "n1"}))
        .await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(cp.client.clone(), "default");

    deploys
        .create(&PostParams::default(), &deployment("web", 3, "busybox:1.35"))
        .await
        .expect("create deployment");
    let d = eventually("3 replicas available", WAIT, || rollout_done(&deploys, "web")).await;
    let conds = d.status.unwrap().conditions.unwrap();
    let cond = |t: &str| conds.iter().find(|c| c.type_ == t).cloned().unwrap();
    assert_eq!(cond("Available").status, "True");
    assert_eq!(cond("Available").reason.as_deref(), Some("MinimumReplicasAvailable"));
    assert_eq!(cond("Progressing").reason.as_deref(), Some("NewReplicaSetAvailable"));
    let pods = owned_pods(&cp.client, "default", "app=web").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "ReplicaSet");
        assert!(owner.name.starts_with("web-"));
        assert_eq!(owner.controller, Some(true));
        assert!(p.metadata.labels.as_ref().unwrap().contains_key("pod-template-hash"));
    }
    let first_rs = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(first_rs.len(), 1);
    let first_rs = first_rs[0].clone();
    assert_eq!(
        first_rs.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "1"
    );

    // Scale up and down.
    for n in [5, 1] {
        deploys
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await
            .expect("scale");
        eventually(&format!("{n} replicas"), WAIT, || async {
            rollout_done(&deploys, "web").await?;
            (owned_pods(&cp.client, "default", "app=web").await.len() == n).then_some(())
        })
        .await;
    }

    // A new image rolls over to a second ReplicaSet.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "busybox:latest"}]}}}})),
        )
        .await
        .expect("update image");
    eventually("rollout to the new template", WAIT, || async {
        rollout_done(&deploys, "web").await?;
        let pods = owned_pods(&cp.client, "default", "app=web").await;
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:latest")))
        .then_some(())
    })
    .await;
    let all = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2);
    let old = all.iter().find(|r| r.metadata.uid == first_rs.metadata.uid).unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    let new = all.iter().find(|r| r.metadata.uid != first_rs.metadata.uid).unwrap();
    assert_eq!(
        new.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let events = Api::<Event>::namespaced(cp.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(events.iter().any(|e| {
        e.reason.as_deref() == Some("ScalingReplicaSet")
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Scaled up replica set web-"))
            && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("deployment-controller")
    }));
    assert!(events.iter().any(|e| {
        e.reason.as_deref() == Some("Scheduled")
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Successfully assigned default/web-"))
    }));

    // Deleting the Deployment (background propagation) collects its ReplicaSets and pods.
    deploys
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete");
    eventually("dependents collected", WAIT, || async {
        let rs_left = rss.list(&ListParams::default()).await.ok()?.items.len();
        let pods_left = Api::<Pod>::namespaced(cp.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len();
        (rs_left == 0 && pods_left == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_reports_why_and_lands_when_a_node_fits() {
    let cp = ControlPlane::start().await;
    cp.add_node("small", "1", "1Gi", json!({})).await;
    cp.start_components();
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "big"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "2"}}}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let cond = eventually("PodScheduled=False", WAIT, || async {
        let p = pods.get("big").await.ok()?;
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        cond.message.as_deref(),
        Some(
            "0/1 nodes are available: 1 Insufficient cpu. \
             preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
        )
    );
    eventually("FailedScheduling event", WAIT, || async {
        Api::<Event>::namespaced(cp.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    })
    .await;

    cp.add_node("large", "8", "16Gi", json!({})).await;
    let node = eventually("bound to the large node", WAIT, || async {
        pods.get("big").await.ok()?.spec?.node_name
    })
    .await;
    assert_eq!(node, "large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_and_removes_it() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "4", "8Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let namespaces: Api<Namespace> = Api::all(cp.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cp.client.clone(), "team");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}})).unwrap(),
    )
    .await
    .unwrap();
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "team");
    deploys
        .create(&PostParams::default(), &deployment("api", 2, "busybox"))
        .await
        .unwrap();
    eventually("rollout in the namespace", WAIT, || rollout_done(&deploys, "api")).await;
    namespaces.delete("team", &DeleteParams::default()).await.unwrap();
    eventually("namespace gone", WAIT, || async {
        matches!(namespaces.get_opt("team").await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quick_pods_never_share_the_last_slot() {
    let cp = ControlPlane::start().await;
    cp.add_node("tiny", "1", "1Gi", json!({})).await;
    cp.start_components();
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    let make = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "600m"}}}]},
        }))
        .unwrap()
    };
    let (pa, pb, pp) = (make("a"), make("b"), PostParams::default());
    let (a, b) = tokio::join!(pods.create(&pp, &pa), pods.create(&pp, &pb));
    a.unwrap();
    b.unwrap();
    let (bound, waiting) = eventually("one bound, one unschedulable", WAIT, || async {
        let mut bound = Vec::new();
        let mut waiting = Vec::new();
        for p in pods.list(&ListParams::default()).await.ok()?.items {
            if p.spec.as_ref()?.node_name.is_some() {
                bound.push(p);
            } else if p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False"))
            {
                waiting.push(p);
            }
        }
        (bound.len() == 1 && waiting.len() == 1).then_some((bound, waiting))
    })
    .await;
    assert_eq!(bound[0].spec.as_ref().unwrap().node_name.as_deref(), Some("tiny"));
    // Deleting the bound pod frees the slot for the other.
    let winner = bound[0].metadata.name.clone().unwrap();
    let loser = waiting[0].metadata.name.clone().unwrap();
    pods.delete(&winner, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the waiting pod gets the freed slot", WAIT, || async {
        pods.get(&loser).await.ok()?.spec?.node_name
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selectors_and_taints_steer_pods() {
    let cp = ControlPlane::start().await;
    cp.add_node("plain", "4", "8Gi", json!({"disk": "hdd"})).await;
    cp.add_node("fast", "4", "8Gi", json!({"disk": "ssd"})).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cp.client.clone());
    nodes
        .patch(
            "fast",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    cp.start_components();
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    let create = |name: &str, spec: serde_json::Value| {
        let pods = pods.clone();
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        async move { pods.create(&PostParams::default(), &pod).await.unwrap() }
    };
    create("anywhere", json!({})).await;
    create("ssd-no-toleration", json!({"nodeSelector": {"disk": "ssd"}})).await;
    create(
        "ssd-tolerating",
        json!({"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
    )
    .await;
    let node_of = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.get(name).await.ok()?.spec?.node_name }
    };
    assert_eq!(
        eventually("anywhere bound", WAIT, || node_of("anywhere")).await,
        "plain"
    );
    assert_eq!(
        eventually("tolerating bound", WAIT, || node_of("ssd-tolerating")).await,
        "fast"
    );
    let cond = eventually("untolerated pod waits", WAIT, || async {
        pods.get("ssd-no-toleration")
            .await
            .ok()?
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await;
    assert_eq!(
        cond.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {dedicated: db}. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
        )
    );
}
