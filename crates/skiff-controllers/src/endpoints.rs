//! EndpointSlice and Endpoints controllers (pkg/controller/endpointslice and
//! pkg/controller/endpoint): for every Service with a selector, the pods it selects
//! become endpoints, with `ready`/`serving`/`terminating` conditions, named target
//! ports resolved per pod, at most 100 endpoints per slice, and the legacy Endpoints
//! object (ready and not-ready addresses).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::owner_ref;

/// Label linking a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Upstream `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

struct Ctx {
    client: kube::Client,
}

/// A Service port resolved for one pod: (name, port, protocol).
pub type ResolvedPort = (String, i32, String);

/// One slice's worth of endpoints sharing the same resolved ports.
pub type SliceGroup = (Vec<ResolvedPort>, Vec<PodEndpoint>);

/// One endpoint: a pod with its conditions and resolved ports.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEndpoint {
    /// The pod's IP.
    pub ip: String,
    /// Ready and not terminating.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// Node the pod runs on.
    pub node: Option<String>,
    /// Pod name and uid, for `targetRef`.
    pub pod: (String, String),
    /// The Service's ports resolved for this pod: (name, port, protocol).
    pub ports: Vec<ResolvedPort>,
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return false;
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    pod.metadata.namespace == svc.metadata.namespace && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Resolves the Service's ports against a pod (named targetPorts come from the pod's
/// container ports; a name the pod does not define drops that port for this pod).
pub fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<ResolvedPort> {
    let mut out = Vec::new();
    for p in svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &p.target_port {
            None => Some(p.port),
            Some(IntOrString::Int(i)) => Some(*i),
            Some(IntOrString::String(name)) => pod
                .spec
                .as_ref()
                .map(|s| {
                    s.containers
                        .iter()
                        .flat_map(|c| c.ports.clone().unwrap_or_default())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .iter()
                .find(|cp| {
                    cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.clone().unwrap_or_else(|| "TCP".into()) == protocol
                })
                .map(|cp| cp.container_port),
        };
        if let Some(port) = port {
            out.push((p.name.clone().unwrap_or_default(), port, protocol));
        }
    }
    out
}

/// The endpoints of a Service from the pods of its namespace.
pub fn endpoints_for(svc: &Service, pods: &[Pod]) -> Vec<PodEndpoint> {
    let mut out: Vec<PodEndpoint> = pods
        .iter()
        .filter(|p| selects(svc, p))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter_map(|p| {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())?;
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let terminating = p.metadata.deletion_timestamp.is_some();
            Some(PodEndpoint {
                ip,
                ready: ready && !terminating,
                terminating,
                node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                pod: (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.uid.clone().unwrap_or_default(),
                ),
                ports: resolve_ports(svc, p),
            })
        })
        .collect();
    out.sort_by(|a, b| a.pod.0.cmp(&b.pod.0));
    out
}

/// Groups endpoints by their resolved ports and splits groups into slices of at most
/// `max` endpoints. Returns (ports, endpoints) per slice, in a stable order.
pub fn slice_up(eps: &[PodEndpoint], max: usize) -> Vec<SliceGroup> {
    let mut groups: BTreeMap<String, SliceGroup> = BTreeMap::new();
    for e in eps {
        let key = format!("{:?}", e.ports);
        groups
            .entry(key)
            .or_insert_with(|| (e.ports.clone(), Vec::new()))
            .1
            .push(e.clone());
    }
    let mut out = Vec::new();
    for (_, (ports, list)) in groups {
        for chunk in list.chunks(max.max(1)) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    out
}

fn slice_body(svc: &Service, ports: &[ResolvedPort], eps: &[PodEndpoint]) -> Value {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "generateName": format!("{name}-"), "namespace": ns,
            "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
            "ownerReferences": [owner_ref("v1", "Service", &svc.metadata)],
        },
        "addressType": "IPv4",
        "endpoints": eps.iter().map(|e| json!({
            "addresses": [e.ip],
            "conditions": {"ready": e.ready, "serving": e.ready || e.terminating, "terminating": e.terminating},
            "nodeName": e.node,
            "targetRef": {"kind": "Pod", "namespace": ns, "name": e.pod.0, "uid": e.pod.1},
        })).collect::<Vec<_>>(),
        "ports": ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect::<Vec<_>>(),
    })
}

fn endpoints_body(svc: &Service, eps: &[PodEndpoint]) -> Value {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let address = |e: &PodEndpoint| json!({"ip": e.ip, "nodeName": e.node, "targetRef": {"kind": "Pod", "namespace": ns, "name": e.pod.0, "uid": e.pod.1}});
    let subsets: Vec<Value> = slice_up(eps, usize::MAX)
        .into_iter()
        .map(|(ports, list)| {
            let ready: Vec<Value> = list.iter().filter(|e| e.ready).map(address).collect();
            let not_ready: Vec<Value> = list.iter().filter(|e| !e.ready && !e.terminating).map(address).collect();
            let mut s = json!({"ports": ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect::<Vec<_>>()});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .filter(|s| s.get("addresses").is_some() || s.get("notReadyAddresses").is_some())
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": svc.metadata.name, "namespace": ns, "labels": {SERVICE_NAME_LABEL: svc.metadata.name}},
        "subsets": subsets,
    })
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let has_selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    if svc.metadata.deletion_timestamp.is_some() || !has_selector {
        return Ok(Action::await_change());
    }
    let pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let eps = endpoints_for(&svc, &pods);
    // EndpointSlices: reuse existing slices in order, create or delete the difference.
    let slices_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = slices_api
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}")))
        .await?
        .items;
    let desired = slice_up(&eps, MAX_ENDPOINTS_PER_SLICE);
    let desired: Vec<Value> = if desired.is_empty() {
        // A Service with no endpoints still has one (empty) slice, as upstream.
        vec![slice_body(&svc, &resolve_ports(&svc, &Pod::default()), &[])]
    } else {
        desired
            .iter()
            .map(|(ports, list)| slice_body(&svc, ports, list))
            .collect()
    };
    for (i, body) in desired.iter().enumerate() {
        match existing.get(i) {
            Some(cur) => {
                let cur_v = serde_json::to_value(cur)?;
                if cur_v.get("endpoints").cloned().unwrap_or(json!([])) != body["endpoints"]
                    || cur_v.get("ports").cloned().unwrap_or(json!([])) != body["ports"]
                {
                    let mut next = body.clone();
                    next["metadata"] = serde_json::to_value(&cur.metadata)?;
                    let next: EndpointSlice = serde_json::from_value(next)?;
                    slices_api
                        .replace(
                            cur.metadata.name.as_deref().unwrap_or_default(),
                            &PostParams::default(),
                            &next,
                        )
                        .await?;
                }
            }
            None => {
                let s: EndpointSlice = serde_json::from_value(body.clone())?;
                slices_api.create(&PostParams::default(), &s).await?;
            }
        }
    }
    for extra in existing.iter().skip(desired.len()) {
        let _ = slices_api
            .delete(
                extra.metadata.name.as_deref().unwrap_or_default(),
                &DeleteParams::default(),
            )
            .await;
    }
    // Endpoints.
    let ep_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let body = endpoints_body(&svc, &eps);
    match ep_api.get_opt(&name).await? {
        Some(cur) => {
            if serde_json::to_value(&cur.subsets)?
                .as_array()
                .cloned()
                .unwrap_or_default()
                != body["subsets"].as_array().cloned().unwrap_or_default()
            {
                let mut next = body;
                next["metadata"] = serde_json::to_value(&cur.metadata)?;
                ep_api
                    .replace(&name, &PostParams::default(), &serde_json::from_value(next)?)
                    .await?;
            }
        }
        None => {
            ep_api
                .create(&PostParams::default(), &serde_json::from_value(body)?)
                .await?;
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "endpoints sync failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the EndpointSlice/Endpoints controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx { client: client.clone() });
    let controller = Controller::new(Api::<Service>::all(client.clone()), watcher::Config::default());
    let services = controller.store();
    controller
        .watches(Api::<Pod>::all(client), watcher::Config::default(), move |pod| {
            services
                .state()
                .into_iter()
                .filter(|s| selects(s, &pod))
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, labels: Value, ports: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn selected_pods_become_endpoints_with_named_ports() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
        .unwrap();
        let pods = vec![
            pod(
                "a",
                "10.42.0.2",
                true,
                json!({"app": "web"}),
                json!([{"name": "http", "containerPort": 8080}]),
            ),
            pod(
                "b",
                "10.42.0.3",
                false,
                json!({"app": "web"}),
                json!([{"name": "http", "containerPort": 9090}]),
            ),
            pod("c", "10.42.0.4", true, json!({"app": "db"}), json!([])),
        ];
        let eps = endpoints_for(&svc, &pods);
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].ports, vec![("http".to_string(), 8080, "TCP".to_string())]);
        assert!(eps[0].ready && !eps[1].ready);
        // Different resolved ports -> different slices.
        assert_eq!(slice_up(&eps, 100).len(), 2);
        let e = endpoints_body(&svc, &eps);
        assert_eq!(e["subsets"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn slices_hold_at_most_the_maximum() {
        let eps: Vec<PodEndpoint> = (0..250)
            .map(|i| PodEndpoint {
                ip: format!("10.0.{}.{}", i / 200, i % 200),
                ready: true,
                terminating: false,
                node: None,
                pod: (format!("p{i}"), String::new()),
                ports: vec![],
            })
            .collect();
        let slices = slice_up(&eps, MAX_ENDPOINTS_PER_SLICE);
        assert_eq!(
            slices.iter().map(|(_, l)| l.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
    }
}
