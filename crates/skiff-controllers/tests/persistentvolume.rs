//! PersistentVolumes and claims through a real in-process apiserver with the
//! controller manager (PV controller and local-path provisioner), the scheduler's
//! VolumeBinding and a simulated kubelet: static binding and Retain, the default
//! class with WaitForFirstConsumer provisioning, claim protection, reclaim Delete,
//! and the scheduler's verdict on unbound immediate claims.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_controllers::persistentvolume::{
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE, DEFAULT_CLASS_NAME, PVC_PROTECTION,
};
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(30);

fn phase_pv(pv: &PersistentVolume) -> String {
    pv.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()
}

fn phase_pvc(pvc: &PersistentVolumeClaim) -> String {
    pvc.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()
}

fn ann<'a>(meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, k: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(k).map(String::as_str)
}

async fn create_pv(client: &kube::Client, name: &str, size: &str) {
    let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                 "hostPath": {"path": format!("/tmp/{name}")}}}))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
}

async fn create_claim(client: &kube::Client, name: &str, class: Option<&str>, size: &str) -> PersistentVolumeClaim {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap()
}

async fn create_pod(client: &kube::Client, name: &str, claim: &str) {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}}))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_volumes_bind_smallest_fit_and_are_retained() {
    let cp = ControlPlane::start().await;
    cp.start_components();
    let pvs: Api<PersistentVolume> = Api::all(cp.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cp.client.clone(), "default");
    create_pv(&cp.client, "big", "10Gi").await;
    create_pv(&cp.client, "small", "2Gi").await;
    create_pv(&cp.client, "tiny", "500Mi").await;
    eventually("volumes Available", WAIT, || async {
        let l = pvs.list(&ListParams::default()).await.ok()?;
        l.items.iter().all(|v| phase_pv(v) == "Available").then_some(())
    })
    .await;

    let created = create_claim(&cp.client, "c", Some("manual"), "1Gi").await;
    assert!(
        created
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&PVC_PROTECTION.to_string())
    );
    let claim = eventually("the claim Bound", WAIT, || async {
        let c = claims.get("c").await.ok()?;
        (phase_pvc(&c) == "Bound").then_some(c)
    })
    .await;
    assert_eq!(claim.spec.as_ref().unwrap().volume_name.as_deref(), Some("small"));
    assert_eq!(ann(&claim.metadata, ANN_BIND_COMPLETED), Some("yes"));
    assert_eq!(ann(&claim.metadata, ANN_BOUND_BY_CONTROLLER), Some("yes"));
    let status = claim.status.unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "2Gi");
    assert_eq!(status.access_modes.unwrap(), vec!["ReadWriteOnce".to_string()]);
    let small = eventually("the volume Bound", WAIT, || async {
        let v = pvs.get("small").await.ok()?;
        (phase_pv(&v) == "Bound").then_some(v)
    })
    .await;
    let r = small.spec.unwrap().claim_ref.unwrap();
    assert_eq!((r.name.as_deref(), r.uid), (Some("c"), claim.metadata.uid.clone()));

    // A claim too big for any volume stays Pending.
    create_claim(&cp.client, "huge", Some("manual"), "50Gi").await;
    // The claim goes; its Retain volume is Released and kept.
    claims.delete("c", &DeleteParams::default()).await.unwrap();
    eventually("the volume Released", WAIT, || async {
        (phase_pv(&pvs.get("small").await.ok()?) == "Released").then_some(())
    })
    .await;
    assert_eq!(phase_pvc(&claims.get("huge").await.unwrap()), "Pending");
    assert!(
        claims.get_opt("c").await.unwrap().is_none(),
        "an unused claim is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_class_provisions_for_the_first_consumer_and_deletes_on_reclaim() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "4", "8Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(cp.client.clone(), cp.shutdown.clone());
    let classes: Api<StorageClass> = Api::all(cp.client.clone());
    let sc = eventually("the default StorageClass", WAIT, || async {
        classes.get_opt(DEFAULT_CLASS_NAME).await.ok()?
    })
    .await;
    assert_eq!(sc.volume_binding_mode.as_deref(), Some("WaitForFirstConsumer"));
    assert_eq!(sc.reclaim_policy.as_deref(), Some("Delete"));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cp.client.clone(), "default");
    let pvs: Api<PersistentVolume> = Api::all(cp.client.clone());

    let created = create_claim(&cp.client, "data", None, "1Gi").await;
    assert_eq!(
        created.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some(DEFAULT_CLASS_NAME),
        "admission gives a claim without a class the default one"
    );
    let events: Api<Event> = Api::namespaced(cp.client.clone(), "default");
    eventually("a WaitForFirstConsumer event", WAIT, || async {
        let l = events.list(&ListParams::default()).await.ok()?;
        l.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("WaitForFirstConsumer"))
            .then_some(())
    })
    .await;
    assert_eq!(phase_pvc(&claims.get("data").await.unwrap()), "Pending");

    create_pod(&cp.client, "writer", "data").await;
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    eventually("the pod Running on n1", WAIT, || async {
        let p = pods.get("writer").await.ok()?;
        (p.spec.as_ref()?.node_name.as_deref() == Some("n1") && p.status.as_ref()?.phase.as_deref() == Some("Running"))
            .then_some(())
    })
    .await;
    let claim = claims.get("data").await.unwrap();
    assert_eq!(phase_pvc(&claim), "Bound");
    assert_eq!(ann(&claim.metadata, ANN_SELECTED_NODE), Some("n1"));
    let pv_name = claim.spec.unwrap().volume_name.unwrap();
    let pv = pvs.get(&pv_name).await.unwrap();
    let path = std::path::PathBuf::from(&pv.spec.as_ref().unwrap().host_path.as_ref().unwrap().path);
    assert!(path.starts_with(cp.storage_dir()) && path.is_dir(), "{path:?}");

    // Deleting a claim in use only marks it; it goes once the pod is gone.
    claims.delete("data", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = claims.get("data").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    pods.delete("writer", &DeleteParams::default()).await.unwrap();
    eventually("the claim, the volume and its directory removed", WAIT, || async {
        (claims.get_opt("data").await.ok()?.is_none() && pvs.get_opt(&pv_name).await.ok()?.is_none() && !path.exists())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_immediate_claims_keep_pods_pending() {
    let cp = ControlPlane::start().await;
    cp.add_node("n1", "4", "8Gi", json!({})).await;
    cp.start_components();
    create_claim(&cp.client, "nothing", Some(""), "1Gi").await;
    create_pod(&cp.client, "p", "nothing").await;
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    // The scheduler may see the pod before its claim cache has the claim (then the
    // reason is `persistentvolumeclaim "nothing" not found`); the claim's arrival
    // retries the pod, and the reason settles on the unbound claim.
    eventually("PodScheduled=False for the unbound immediate claim", WAIT, || async {
        let p = pods.get("p").await.ok()?;
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (c.status == "False"
            && c.message.as_deref()
                == Some(
                    "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims. \
                     preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling..",
                ))
        .then_some(())
    })
    .await;
    // A volume that fits lets it schedule.
    create_pv(&cp.client, "late", "1Gi").await;
    let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "late-none"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "hostPath": {"path": "/tmp/late-none"}}}))
    .unwrap();
    Api::<PersistentVolume>::all(cp.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    eventually("the pod bound", WAIT, || async {
        let p = pods.get("p").await.ok()?;
        (p.spec?.node_name.as_deref() == Some("n1")).then_some(())
    })
    .await;
}
