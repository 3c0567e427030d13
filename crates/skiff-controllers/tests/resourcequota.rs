//! ResourceQuota and LimitRange against a real apiserver and controller manager:
//! what a user sees from `kubectl create quota`, `kubectl describe quota` and pod
//! creation in a namespace with quotas and limit ranges.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{ControlPlane, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn pod(name: &str, resources: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": resources}]}
    }))
    .unwrap()
}

fn cpu_pod(name: &str, cpu: &str) -> Pod {
    pod(name, json!({"requests": {"cpu": cpu}}))
}

fn forbidden(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{}", s.message);
            s.message
        }
        other => panic!("expected an API error, got {other}"),
    }
}

async fn create_quota(api: &Api<ResourceQuota>, name: &str, hard: Value) {
    let q = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"hard": hard}})).unwrap();
    api.create(&PostParams::default(), &q).await.unwrap();
}

/// Waits until the quota's `status.used` is exactly `want`.
async fn used_becomes(api: &Api<ResourceQuota>, name: &str, want: Value) {
    eventually(&format!("quota {name} used = {want}"), WAIT, || async {
        let q = api.get(name).await.ok()?;
        let v = serde_json::to_value(q.status?).ok()?;
        (v.get("used") == Some(&want)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_admits_pods_up_to_its_limits_and_tracks_their_usage() {
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let quotas: Api<ResourceQuota> = Api::namespaced(cp.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    let pp = PostParams::default();

    create_quota(&quotas, "compute", json!({"pods": "2", "requests.cpu": "1"})).await;
    used_becomes(&quotas, "compute", json!({"pods": "0", "requests.cpu": "0"})).await;
    let q = quotas.get("compute").await.unwrap();
    assert_eq!(
        serde_json::to_value(q.status.unwrap().hard).unwrap(),
        json!({"pods": "2", "requests.cpu": "1"})
    );

    pods.create(&pp, &cpu_pod("p1", "250m")).await.unwrap();
    pods.create(&pp, &cpu_pod("p2", "250m")).await.unwrap();
    // Admission charged both before the controller's next recalculation.
    let q = quotas.get("compute").await.unwrap();
    assert_eq!(
        serde_json::to_value(q.status.unwrap().used).unwrap(),
        json!({"pods": "2", "requests.cpu": "500m"})
    );
    let err = pods.create(&pp, &cpu_pod("p3", "250m")).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        r#"pods "p3" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"#
    );

    // A pod that does not say how much CPU it needs cannot be charged for it.
    let err = pods.create(&pp, &pod("bare", json!({}))).await.unwrap_err();
    assert_eq!(
        forbidden(err),
        r#"pods "bare" is forbidden: failed quota: compute: must specify requests.cpu for: app"#
    );

    // Deleting a pod gives its share back.
    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    used_becomes(&quotas, "compute", json!({"pods": "1", "requests.cpu": "250m"})).await;

    // A LimitRange's defaults make the bare pod chargeable; its CPU request then
    // exceeds what is left.
    let ranges: Api<LimitRange> = Api::namespaced(cp.client.clone(), "default");
    let lr = serde_json::from_value(json!({"metadata": {"name": "defaults"}, "spec": {"limits": [
        {"type": "Container", "defaultRequest": {"cpu": "100m"}, "default": {"cpu": "200m", "memory": "64Mi"}}
    ]}}))
    .unwrap();
    ranges.create(&pp, &lr).await.unwrap();
    let created = pods.create(&pp, &pod("bare", json!({}))).await.unwrap();
    let res = serde_json::to_value(&created.spec.unwrap().containers[0].resources).unwrap();
    assert_eq!(
        res,
        json!({"limits": {"cpu": "200m", "memory": "64Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}})
    );
    assert_eq!(
        created.metadata.annotations.unwrap()["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
    );
    assert_eq!(created.status.unwrap().qos_class.as_deref(), Some("Burstable"));
    used_becomes(&quotas, "compute", json!({"pods": "2", "requests.cpu": "350m"})).await;

    // A finished pod no longer counts.
    pods.patch_status(
        "p2",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    used_becomes(&quotas, "compute", json!({"pods": "1", "requests.cpu": "100m"})).await;

    // Raising the limit is reflected in status.hard.
    quotas
        .patch(
            "compute",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "10"}}})),
        )
        .await
        .unwrap();
    eventually("status.hard follows spec.hard", WAIT, || async {
        let q = quotas.get("compute").await.ok()?;
        (q.status?.hard?.get("pods")?.0 == "10").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_exceed_the_quota() {
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let quotas: Api<ResourceQuota> = Api::namespaced(cp.client.clone(), "default");
    create_quota(&quotas, "few", json!({"count/secrets": "4"})).await;
    used_becomes(&quotas, "few", json!({"count/secrets": "0"})).await;

    let creates = (0..12).map(|i| {
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cp.client.clone(), "default");
        async move {
            let cm = serde_json::from_value(json!({"metadata": {"name": format!("s-{i}")}})).unwrap();
            api.create(&PostParams::default(), &cm).await
        }
    });
    let results = futures::future::join_all(creates).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 4, "{results:?}");
    for e in results.into_iter().filter_map(Result::err) {
        let msg = forbidden(e);
        assert!(
            msg.ends_with(
                "is forbidden: exceeded quota: few, requested: count/secrets=1, used: count/secrets=4, limited: count/secrets=4"
            ),
            "{msg}"
        );
    }
    used_becomes(&quotas, "few", json!({"count/secrets": "4"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_bound_containers_and_quotas_bound_service_types() {
    let cp = ControlPlane::start().await;
    cp.start_controllers(cp.shutdown.child_token());
    let pp = PostParams::default();
    let ranges: Api<LimitRange> = Api::namespaced(cp.client.clone(), "default");
    let lr = serde_json::from_value(json!({"metadata": {"name": "bounds"}, "spec": {"limits": [
        {"type": "Container", "max": {"cpu": "500m"}, "min": {"cpu": "50m"}}
    ]}}))
    .unwrap();
    ranges.create(&pp, &lr).await.unwrap();
    // The max became the default limit and the default request.
    let stored = ranges.get("bounds").await.unwrap();
    let item = serde_json::to_value(&stored.spec.unwrap().limits[0]).unwrap();
    assert_eq!(item["default"], json!({"cpu": "500m"}));
    assert_eq!(item["defaultRequest"], json!({"cpu": "500m"}));

    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    let err = pods
        .create(&pp, &pod("big", json!({"limits": {"cpu": "1"}})))
        .await
        .unwrap_err();
    assert_eq!(
        forbidden(err),
        r#"pods "big" is forbidden: maximum cpu usage per Container is 500m, but limit is 1"#
    );
    pods.create(&pp, &pod("fits", json!({"requests": {"cpu": "100m"}})))
        .await
        .unwrap();

    let quotas: Api<ResourceQuota> = Api::namespaced(cp.client.clone(), "default");
    create_quota(
        &quotas,
        "lb",
        json!({"services.loadbalancers": "0", "services.nodeports": "1"}),
    )
    .await;
    used_becomes(
        &quotas,
        "lb",
        json!({"services.loadbalancers": "0", "services.nodeports": "0"}),
    )
    .await;
    let services: Api<Service> = Api::namespaced(cp.client.clone(), "default");
    let svc = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
        "ports": [{"port": 80}], "selector": {"app": "web"}}}))
    .unwrap();
    services.create(&pp, &svc).await.unwrap();
    // Turning it into a LoadBalancer is an update that needs quota.
    let err = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "LoadBalancer"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        forbidden(err),
        r#"services "web" is forbidden: exceeded quota: lb, requested: services.loadbalancers=1, used: services.loadbalancers=0, limited: services.loadbalancers=0"#
    );
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "NodePort"}})),
        )
        .await
        .unwrap();
    used_becomes(
        &quotas,
        "lb",
        json!({"services.loadbalancers": "0", "services.nodeports": "1"}),
    )
    .await;
}
