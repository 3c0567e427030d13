//! StatefulSet behaviour through a real in-process apiserver with the scheduler and
//! a simulated kubelet: ordered creation with stable names and claims, a rolling
//! update from the highest ordinal, ordered scale-down.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(30);

async fn live_pods(client: &kube::Client) -> Vec<Pod> {
    let mut pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("app=db"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0].image.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_set_creates_in_order_updates_in_reverse_and_scales_down() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "8", "16Gi", json!({})).await;
    // Record the order in which pods and their deletions appear.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let (log, token) = (log.clone(), cp.shutdown.clone());
        let mut stream = watcher(
            Api::<Pod>::namespaced(cp.client.clone(), "default"),
            watcher::Config::default().labels("app=db"),
        )
        .default_backoff()
        .boxed();
        tokio::spawn(async move {
            let mut seen = std::collections::HashMap::<String, (bool, String)>::new();
            loop {
                let ev = tokio::select! {
                    _ = token.cancelled() => return,
                    ev = stream.next() => match ev { Some(Ok(ev)) => ev, Some(Err(_)) => continue, None => return },
                };
                if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                    let name = p.metadata.name.clone().unwrap();
                    let uid = p.metadata.uid.clone().unwrap();
                    let deleting = p.metadata.deletion_timestamp.is_some();
                    let prev = seen.insert(name.clone(), (deleting, uid.clone()));
                    if prev.as_ref().is_none_or(|(_, u)| *u != uid) {
                        log.lock().unwrap().push(format!("+{name}"));
                    } else if deleting && prev.is_some_and(|(d, _)| !d) {
                        log.lock().unwrap().push(format!("-{name}"));
                    }
                }
            }
        });
    }
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let sets: Api<StatefulSet> = Api::namespaced(cp.client.clone(), "default");
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "db:1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
    }))
    .unwrap();
    sets.create(&PostParams::default(), &sts).await.unwrap();
    let status = eventually("three ready replicas", WAIT, || async {
        let s = sets.get("db").await.ok()?.status?;
        (s.ready_replicas == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(
        log.lock().unwrap().clone(),
        vec!["+db-0", "+db-1", "+db-2"],
        "created one at a time in ordinal order"
    );
    let pods = live_pods(&cp.client).await;
    for (i, p) in pods.iter().enumerate() {
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], format!("db-{i}"));
        assert_eq!(labels["apps.kubernetes.io/pod-index"], i.to_string());
        assert_eq!(
            Some(&labels["controller-revision-hash"]),
            status.update_revision.as_ref()
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("db-{i}").as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
    }
    let claims: Vec<String> = Api::<PersistentVolumeClaim>::namespaced(cp.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    for i in 0..3 {
        assert!(
            claims.contains(&format!("data-db-{i}")),
            "claim for db-{i} in {claims:?}"
        );
    }

    // A template change rolls from the highest ordinal down.
    log.lock().unwrap().clear();
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:2"}]}}}})),
    )
    .await
    .unwrap();
    let status = eventually("the rolling update to finish", WAIT, || async {
        let s = sets.get("db").await.ok()?.status?;
        let pods = live_pods(&cp.client).await;
        (s.observed_generation == Some(2)
            && s.updated_replicas == Some(3)
            && s.ready_replicas == Some(3)
            && s.current_revision == s.update_revision
            && pods.len() == 3
            && pods.iter().all(|p| image(p) == "db:2"))
        .then_some(s)
    })
    .await;
    assert_eq!(status.current_replicas, Some(3));
    let deletions: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with('-'))
        .cloned()
        .collect();
    assert_eq!(
        deletions,
        vec!["-db-2", "-db-1", "-db-0"],
        "updated from the highest ordinal down"
    );

    // Scaling down removes the highest ordinals; claims stay (Retain).
    log.lock().unwrap().clear();
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("one replica left", WAIT, || async {
        let s = sets.get("db").await.ok()?.status?;
        let pods = live_pods(&cp.client).await;
        (s.replicas == 1 && pods.len() == 1 && pods[0].metadata.name.as_deref() == Some("db-0")).then_some(())
    })
    .await;
    let deletions: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with('-'))
        .cloned()
        .collect();
    assert_eq!(deletions, vec!["-db-2", "-db-1"]);
    let claims = Api::<PersistentVolumeClaim>::namespaced(cp.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(claims.len(), 3, "claims are retained on scale-down");
}
