//! ReplicaSet and Deployment behaviour through a real in-process apiserver:
//! adoption and release, no duplicates across a controller restart, rolling
//! updates within their surge/unavailability bounds, Recreate, pause/resume and
//! the progress deadline.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

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

fn owner_uid(p: &Pod) -> Option<String> {
    p.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_adopts_releases_and_never_duplicates_across_restarts() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("stray", json!({"app": "cache"})))
        .await
        .unwrap();
    let token = cp.shutdown.child_token();
    cp.start_controllers(token.clone());
    let rss: Api<ReplicaSet> = Api::namespaced(cp.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "cache"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cache"}},
            "template": {"metadata": {"labels": {"app": "cache"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    let rs = rss.create(&PostParams::default(), &rs).await.unwrap();
    let uid = rs.metadata.uid.clone().unwrap();
    let owned = |uid: String| {
        let client = cp.client.clone();
        async move {
            let all = live_pods(&client, "app=cache").await;
            let owned: Vec<Pod> = all
                .into_iter()
                .filter(|p| owner_uid(p).as_deref() == Some(uid.as_str()))
                .collect();
            (owned.len() == 3).then_some(owned)
        }
    };
    let first = eventually("3 owned pods", WAIT, || owned(uid.clone())).await;
    assert!(
        first.iter().any(|p| p.metadata.name.as_deref() == Some("stray")),
        "the matching orphan was adopted instead of creating a third pod"
    );
    assert!(
        first
            .iter()
            .all(|p| p.metadata.name.as_deref() == Some("stray")
                || p.metadata.generate_name.as_deref() == Some("cache-"))
    );

    // Relabeling a pod releases it; a replacement is created.
    pods.patch(
        "stray",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "debug"}}})),
    )
    .await
    .unwrap();
    eventually("the relabeled pod released", WAIT, || async {
        let p = pods.get("stray").await.ok()?;
        owner_uid(&p).is_none().then_some(())
    })
    .await;
    eventually("a replacement", WAIT, || owned(uid.clone())).await;

    // A restarted controller sees the same pods and creates none.
    let old_leader = cp.controller_leader().await;
    assert!(old_leader.is_some(), "the running controller manager holds its lease");
    token.cancel();
    let before: BTreeSet<String> = live_pods(&cp.client, "app=cache")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    cp.start_controllers(cp.shutdown.child_token());
    // Its loops start once it holds the lease the stopped one released.
    eventually("the restarted controller manager to lead", WAIT, || async {
        cp.controller_leader().await.filter(|h| Some(h) != old_leader.as_ref())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: BTreeSet<String> = live_pods(&cp.client, "app=cache")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(before, after);
    let status = rss.get("cache").await.unwrap().status.unwrap();
    assert_eq!(status.replicas, 3);
    assert_eq!(status.observed_generation, rs.metadata.generation);
}

fn deployment(name: &str, replicas: i32, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.35"}]}}},
    }))
    .unwrap()
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

/// Tracks the live (not terminating) pods with `label` from a watch; returns the
/// shared map pod name -> image.
fn track_pods(client: &kube::Client, label: &str, stop: CancellationToken) -> Arc<Mutex<Vec<HashMap<String, String>>>> {
    let history: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut stream = watcher(api, watcher::Config::default().labels(label))
        .default_backoff()
        .boxed();
    let h = history.clone();
    tokio::spawn(async move {
        let mut live: HashMap<String, String> = HashMap::new();
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = stream.next() => match ev { Some(Ok(ev)) => ev, _ => continue },
            };
            let (pod, present) = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    let alive = p.metadata.deletion_timestamp.is_none();
                    (p, alive)
                }
                watcher::Event::Delete(p) => (p, false),
                _ => continue,
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            if present {
                let image = pod.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default();
                live.insert(name, image);
            } else {
                live.remove(&name);
            }
            h.lock().unwrap().push(live.clone());
        }
    });
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_surge_and_unavailability() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "default");
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    deploys
        .create(&PostParams::default(), &deployment("api", 4, strategy))
        .await
        .unwrap();
    eventually("initial rollout", WAIT, || rollout_done(&deploys, "api")).await;
    let history = track_pods(&cp.client, "app=api", cp.shutdown.child_token());
    deploys
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}}}}),
            ),
        )
        .await
        .unwrap();
    eventually("rollout to the new image", WAIT, || async {
        rollout_done(&deploys, "api").await?;
        let pods = live_pods(&cp.client, "app=api").await;
        (pods.len() == 4
            && pods
                .iter()
                .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:latest")))
        .then_some(())
    })
    .await;
    let history = history.lock().unwrap().clone();
    let peak = history.iter().map(HashMap::len).max().unwrap();
    assert!(peak <= 5, "never more than replicas + maxSurge pods (saw {peak})");
    let d = deploys.get("api").await.unwrap();
    let progressing = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetAvailable"));
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_old_pods_before_creating_new_ones() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "default");
    deploys
        .create(
            &PostParams::default(),
            &deployment("db", 2, json!({"type": "Recreate"})),
        )
        .await
        .unwrap();
    eventually("initial rollout", WAIT, || rollout_done(&deploys, "db")).await;
    let history = track_pods(&cp.client, "app=db", cp.shutdown.child_token());
    deploys
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}}}}),
            ),
        )
        .await
        .unwrap();
    eventually("recreated", WAIT, || async {
        rollout_done(&deploys, "db").await?;
        let pods = live_pods(&cp.client, "app=db").await;
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:latest")))
        .then_some(())
    })
    .await;
    for live in history.lock().unwrap().iter() {
        let images: BTreeSet<&String> = live.values().collect();
        assert!(images.len() <= 1, "old and new pods never run together: {live:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployments_scale_but_do_not_roll_out() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(cp.client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("web", 2, json!({})))
        .await
        .unwrap();
    eventually("initial rollout", WAIT, || rollout_done(&deploys, "web")).await;
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true, "replicas": 3,
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}}}})),
        )
        .await
        .unwrap();
    let d = eventually("paused condition", WAIT, || async {
        let d = deploys.get("web").await.ok()?;
        let c = d
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Progressing")?;
        (c.reason.as_deref() == Some("DeploymentPaused") && c.status == "Unknown").then_some(d)
    })
    .await;
    assert!(d.status.unwrap().observed_generation >= d.metadata.generation);
    eventually("scaled while paused", WAIT, || async {
        (live_pods(&cp.client, "app=web").await.len() == 3).then_some(())
    })
    .await;
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        1,
        "no new ReplicaSet while paused"
    );

    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    eventually("rolled out after resume", WAIT, || async {
        rollout_done(&deploys, "web").await?;
        let pods = live_pods(&cp.client, "app=web").await;
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:latest")))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    cp.start_components();
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "default");
    let mut d = deployment("stuck", 1, json!({}));
    let spec = d.spec.as_mut().unwrap();
    spec.progress_deadline_seconds = Some(2);
    spec.template.spec.as_mut().unwrap().node_selector = Some([("disk".to_string(), "none".to_string())].into());
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let c = eventually("ProgressDeadlineExceeded", WAIT, || async {
        let d = deploys.get("stuck").await.ok()?;
        d.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Progressing" && c.status == "False")
    })
    .await;
    assert_eq!(c.reason.as_deref(), Some("ProgressDeadlineExceeded"));
    assert!(c.message.unwrap().ends_with("has timed out progressing."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_back_reuses_the_old_replica_set_with_a_new_revision() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(cp.client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("app", 2, json!({})))
        .await
        .unwrap();
    eventually("v1", WAIT, || rollout_done(&deploys, "app")).await;
    let image = |tag: &str| {
        Patch::Merge(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": format!("busybox:{tag}")}]}}}}),
        )
    };
    deploys
        .patch("app", &PatchParams::default(), &image("latest"))
        .await
        .unwrap();
    eventually("v2", WAIT, || async {
        let d = rollout_done(&deploys, "app").await?;
        (d.metadata.annotations?.get("deployment.kubernetes.io/revision")? == "2").then_some(())
    })
    .await;
    // What `kubectl rollout undo` does: put the revision-1 template back.
    deploys
        .patch("app", &PatchParams::default(), &image("1.35"))
        .await
        .unwrap();
    eventually("back on the first ReplicaSet as revision 3", WAIT, || async {
        let d = rollout_done(&deploys, "app").await?;
        (d.metadata.annotations?.get("deployment.kubernetes.io/revision")? == "3").then_some(())
    })
    .await;
    let all = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2, "no third ReplicaSet");
    let v1 = all
        .iter()
        .find(|rs| {
            rs.spec
                .as_ref()
                .unwrap()
                .template
                .as_ref()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref()
                == Some("busybox:1.35")
        })
        .unwrap();
    let ann = v1.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["deployment.kubernetes.io/revision"], "3");
    assert_eq!(ann["deployment.kubernetes.io/revision-history"], "1");
    assert_eq!(v1.spec.as_ref().unwrap().replicas, Some(2));
}
