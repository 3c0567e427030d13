//! The Priority admission plugin and PriorityClass rules through a real apiserver:
//! system classes at start, class resolution on pod create, the upstream refusals.

#[allow(dead_code)]
mod support;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::start;

fn pod(name: &str, spec_extra: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    for (k, v) in spec_extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn class(name: &str, value: i64, extra: Value) -> PriorityClass {
    let mut v = json!({"metadata": {"name": name}, "value": value});
    for (k, x) in extra.as_object().cloned().unwrap_or_default() {
        v[k] = x;
    }
    serde_json::from_value(v).unwrap()
}

async fn refusal<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn pods_get_the_priority_of_their_class() {
    let s = start().await;
    support::create_default_service_account(&s.client, "default").await;
    let classes: Api<PriorityClass> = Api::all(s.client.clone());
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pp = PostParams::default();

    // The system classes exist from the start.
    let node_critical = classes.get("system-node-critical").await.unwrap();
    assert_eq!(node_critical.value, 2_000_001_000);
    assert_eq!(node_critical.preemption_policy.as_deref(), Some("PreemptLowerPriority"));
    assert_eq!(
        classes.get("system-cluster-critical").await.unwrap().value,
        2_000_000_000
    );

    // No class and no default: priority 0.
    let p = pods.create(&pp, &pod("plain", json!({}))).await.unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(
        (spec.priority, spec.preemption_policy.as_deref()),
        (Some(0), Some("PreemptLowerPriority"))
    );

    // A named class gives its value and policy.
    classes
        .create(&pp, &class("batch", 100, json!({"preemptionPolicy": "Never"})))
        .await
        .unwrap();
    let p = pods
        .create(&pp, &pod("b", json!({"priorityClassName": "batch"})))
        .await
        .unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(
        (spec.priority, spec.preemption_policy.as_deref()),
        (Some(100), Some("Never"))
    );
    let p = pods
        .create(&pp, &pod("sys", json!({"priorityClassName": "system-node-critical"})))
        .await
        .unwrap();
    assert_eq!(p.spec.unwrap().priority, Some(2_000_001_000));

    // Unknown class, conflicting priority or policy: 403 with upstream's messages.
    let (code, msg) = refusal(pods.create(&pp, &pod("x", json!({"priorityClassName": "nope"}))).await).await;
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "pods \"x\" is forbidden: no PriorityClass with name nope was found"
    );
    let (code, msg) = refusal(
        pods.create(&pp, &pod("y", json!({"priorityClassName": "batch", "priority": 7})))
            .await,
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "pods \"y\" is forbidden: the integer value of priority (7) must not be provided in pod spec; \
         priority admission controller computed 100 from the given PriorityClass name"
    );
    let (_, msg) = refusal(
        pods.create(
            &pp,
            &pod(
                "z",
                json!({"priorityClassName": "batch", "preemptionPolicy": "PreemptLowerPriority"}),
            ),
        )
        .await,
    )
    .await;
    assert!(msg.contains("the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided"));

    // A global default applies to pods without a class, and only one may exist.
    classes
        .create(&pp, &class("normal", 10, json!({"globalDefault": true})))
        .await
        .unwrap();
    let p = pods.create(&pp, &pod("d", json!({}))).await.unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(
        (spec.priority, spec.priority_class_name.as_deref()),
        (Some(10), Some("normal"))
    );
    let (code, msg) = refusal(
        classes
            .create(&pp, &class("other", 20, json!({"globalDefault": true})))
            .await,
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass normal is already marked as default. \
         Only one default can exist"
    );

    // Values above one billion and system- names are for the system; values are immutable.
    let (code, msg) = refusal(classes.create(&pp, &class("huge", 1_000_000_001, json!({}))).await).await;
    assert_eq!(code, 422);
    assert!(
        msg.contains("value: Forbidden: maximum allowed value of a user defined priority is 1000000000"),
        "{msg}"
    );
    let (code, _) = refusal(classes.create(&pp, &class("system-mine", 5, json!({}))).await).await;
    assert_eq!(code, 422);
    let (code, msg) = refusal(
        classes
            .patch("batch", &PatchParams::default(), &Patch::Merge(json!({"value": 5})))
            .await,
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        msg.contains("value: Forbidden: may not be changed in an update."),
        "{msg}"
    );
}
