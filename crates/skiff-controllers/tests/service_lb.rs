//! The LoadBalancer IP allocator against a real in-process apiserver: Services of
//! type LoadBalancer get distinct pool addresses in `status.loadBalancer.ingress`, a
//! requested `loadBalancerIP` is honoured when free, Services with a
//! `loadBalancerClass` and other types are left alone, a full pool gives an
//! `AllocationFailed` event and no ingress, addresses are released on type change and
//! delete, and a restarted allocator keeps the addresses already announced.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_controllers::service_lb::LbPool;
use support::{ControlPlane, eventually};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn create(api: &Api<Service>, name: &str, extra: serde_json::Value) {
    let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let s: Service = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
}

async fn ingress(api: &Api<Service>, name: &str) -> Vec<String> {
    let s = api.get(name).await.unwrap();
    s.status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| {
            assert_eq!(i.ip_mode.as_deref(), Some("VIP"));
            i.ip
        })
        .collect()
}

async fn wait_ingress(api: &Api<Service>, name: &str) -> String {
    eventually(&format!("an ingress IP for {name}"), WAIT, || async {
        let ips = ingress(api, name).await;
        (ips.len() == 1).then(|| ips[0].clone())
    })
    .await
}

async fn wait_failed(cp: &ControlPlane, name: &str, needle: &str) -> String {
    let events: Api<Event> = Api::namespaced(cp.client.clone(), "default");
    eventually(&format!("AllocationFailed for {name}"), WAIT, || async {
        events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("AllocationFailed") && e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.message)
            .find(|m| m.contains(needle))
    })
    .await
}

fn start(cp: &ControlPlane) -> CancellationToken {
    let token = cp.shutdown.child_token();
    cp.start_controllers_with(token.clone(), |o| {
        // Three addresses: 10.44.0.1, 10.44.0.2, 10.44.1.7.
        o.service_lb_pool = Some(LbPool::parse("10.44.0.0/30,10.44.1.7/32").unwrap());
    });
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_get_pool_addresses() {
    let cp = ControlPlane::start().await;
    let svcs: Api<Service> = Api::namespaced(cp.client.clone(), "default");
    let token = start(&cp);

    create(&svcs, "a", json!({})).await;
    assert_eq!(wait_ingress(&svcs, "a").await, "10.44.0.1");
    create(&svcs, "req", json!({"loadBalancerIP": "10.44.1.7"})).await;
    assert_eq!(wait_ingress(&svcs, "req").await, "10.44.1.7");
    create(&svcs, "classy", json!({"loadBalancerClass": "example.com/lb"})).await;
    create(&svcs, "plain", json!({"type": "ClusterIP"})).await;
    create(&svcs, "b", json!({})).await;
    assert_eq!(wait_ingress(&svcs, "b").await, "10.44.0.2");

    // Full pool: an event, no ingress.
    create(&svcs, "c", json!({})).await;
    let msg = wait_failed(&cp, "c", "no available IPs").await;
    assert_eq!(msg, "Failed to allocate IP for \"default/c\": no available IPs");
    assert!(ingress(&svcs, "c").await.is_empty());
    assert!(
        ingress(&svcs, "classy").await.is_empty(),
        "left to its class's implementation"
    );
    assert!(ingress(&svcs, "plain").await.is_empty());

    // A type change releases the address (and clears the status); the waiting
    // Service gets it.
    svcs.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "NodePort"}})),
    )
    .await
    .unwrap();
    assert_eq!(wait_ingress(&svcs, "c").await, "10.44.0.1");
    eventually("a's status cleared", WAIT, || async {
        ingress(&svcs, "a").await.is_empty().then_some(())
    })
    .await;

    // A requested address held by another Service: refused until it is released.
    create(&svcs, "d", json!({"loadBalancerIP": "10.44.1.7"})).await;
    wait_failed(&cp, "d", "requested IP 10.44.1.7 is already assigned to default/req").await;
    create(&svcs, "outside", json!({"loadBalancerIP": "192.168.77.1"})).await;
    wait_failed(&cp, "outside", "requested IP 192.168.77.1 is not in the pool").await;
    svcs.delete("req", &DeleteParams::default()).await.unwrap();
    assert_eq!(wait_ingress(&svcs, "d").await, "10.44.1.7");

    // A new allocator keeps every announced address: the pool is still full.
    token.cancel();
    let _token = start(&cp);
    create(&svcs, "e", json!({})).await;
    wait_failed(&cp, "e", "no available IPs").await;
    assert_eq!(ingress(&svcs, "b").await, ["10.44.0.2"]);
    assert_eq!(ingress(&svcs, "c").await, ["10.44.0.1"]);
    assert_eq!(ingress(&svcs, "d").await, ["10.44.1.7"]);
    // Deleting one hands its address to the waiting Service.
    svcs.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(wait_ingress(&svcs, "e").await, "10.44.0.2");
}
