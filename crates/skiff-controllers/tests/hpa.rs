//! The HorizontalPodAutoscaler controller and the `autoscaling/v1` and
//! `metrics.k8s.io` APIs through a real in-process apiserver (no kubelet, so no
//! metrics): an HPA created as `autoscaling/v1` is stored and reconciled as v2; a
//! target above `maxReplicas` is scaled down to it through its `scale`
//! subresource with the `SuccessfulRescale` event; with no metrics the HPA reports
//! `ScalingActive=False FailedGetResourceMetric`; the metrics API is read-only.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::json;
use skiff_controllers::hpa::{self, behavior::History};
use support::ControlPlane;

fn v1_hpa_resource() -> ApiResource {
    ApiResource {
        group: "autoscaling".into(),
        version: "v1".into(),
        api_version: "autoscaling/v1".into(),
        kind: "HorizontalPodAutoscaler".into(),
        plural: "horizontalpodautoscalers".into(),
    }
}

fn condition<'a>(hpa: &'a HorizontalPodAutoscaler, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    hpa.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.as_str(),
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default(),
            )
        })
}

#[tokio::test]
async fn v1_hpa_scales_target_into_range_and_reports_missing_metrics() {
    let cp = ControlPlane::start().await;
    let client = cp.client.clone();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "busybox",
                                        "resources": {"requests": {"cpu": "100m"}}}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &deploy).await.unwrap();

    let v1: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &v1_hpa_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}
    }))
    .unwrap();
    let created = v1.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"]["targetCPUUtilizationPercentage"], 50);

    // Stored as v2: the cpu utilization metric.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let hpa = hpas.get("web").await.unwrap();
    let metric = &hpa.spec.as_ref().unwrap().metrics.as_ref().unwrap()[0];
    assert_eq!(metric.type_, "Resource");
    let resource = metric.resource.as_ref().unwrap();
    assert_eq!(
        (resource.name.as_str(), resource.target.average_utilization),
        ("cpu", Some(50))
    );

    // 5 replicas, max 3: scaled down to 3 without needing metrics.
    let mut history = History::default();
    hpa::reconcile(&client, &hpa, &mut history).await.unwrap();
    assert_eq!(deploys.get("web").await.unwrap().spec.unwrap().replicas, Some(3));
    let hpa = hpas.get("web").await.unwrap();
    let status = hpa.status.clone().unwrap();
    assert_eq!((status.current_replicas, status.desired_replicas), (Some(5), 3));
    assert!(status.last_scale_time.is_some());
    assert_eq!(condition(&hpa, "AbleToScale").map(|c| c.1), Some("SucceededRescale"));
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulRescale")
                && e.message.as_deref()
                    == Some("New size: 3; reason: Current number of replicas above Spec.MaxReplicas")),
        "{:?}",
        events.items.iter().map(|e| &e.message).collect::<Vec<_>>()
    );

    // Within range, but no pod has metrics: the metric is invalid, nothing is scaled.
    hpa::reconcile(&client, &hpa, &mut history).await.unwrap();
    let hpa = hpas.get("web").await.unwrap();
    let (status, reason, message) = condition(&hpa, "ScalingActive").unwrap();
    assert_eq!((status, reason), ("False", "FailedGetResourceMetric"));
    assert!(
        message.starts_with("the HPA was unable to compute the replica count: failed to get cpu utilization"),
        "{message}"
    );
    assert_eq!(deploys.get("web").await.unwrap().spec.unwrap().replicas, Some(3));

    // The v1 view of the status.
    let seen = v1.get("web").await.unwrap();
    assert_eq!(seen.data["status"]["desiredReplicas"], 3);
    assert_eq!(seen.data["spec"]["maxReplicas"], 3);

    // A v1 merge patch changes the target utilization and keeps the rest.
    v1.patch(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"targetCPUUtilizationPercentage": 70}})),
    )
    .await
    .unwrap();
    let hpa = hpas.get("web").await.unwrap();
    let spec = hpa.spec.unwrap();
    assert_eq!(
        spec.metrics.unwrap()[0]
            .resource
            .as_ref()
            .unwrap()
            .target
            .average_utilization,
        Some(70)
    );
    assert_eq!(spec.max_replicas, 3);

    // metrics.k8s.io: no kubelet answers, so no node metrics; writes are refused.
    let node_metrics = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "NodeMetrics".into(),
        plural: "nodes".into(),
    };
    let nm: Api<DynamicObject> = Api::all_with(client.clone(), &node_metrics);
    assert!(nm.list(&ListParams::default()).await.unwrap().items.is_empty());
    let err = nm
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 405), "{err:?}");
}
