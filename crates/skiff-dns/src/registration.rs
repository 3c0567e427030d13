//! Makes the cluster DNS reachable at the Service address pods are given
//! (`--cluster-dns`): the `kube-system/kube-dns` Service, with that clusterIP and no
//! selector, as upstream's kube-dns/CoreDNS addon defines it (ports `dns` 53/UDP,
//! `dns-tcp` 53/TCP, `metrics` 9153/TCP, label `k8s-app: kube-dns`); one
//! EndpointSlice per DNS server (`kube-dns-<node>`, managed by `skiff-dns`) pointing
//! at the address it listens on; and the legacy Endpoints object, the union of those
//! slices. A kube-proxy then routes the Service address to the servers.
//!
//! Every step reads the current object first and writes only what differs, so
//! running it again (every [`RESYNC`], or from several servers) is harmless.
//! Fields the apiserver will not change in place (`spec.clusterIP`, a slice's
//! `addressType`) are fixed by deleting and re-creating the object.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointPort, EndpointSubset, Endpoints, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::records::SERVICE_NAME_LABEL;

/// Namespace of the DNS Service.
pub const NAMESPACE: &str = "kube-system";
/// Name of the DNS Service and of its Endpoints (upstream's, for compatibility with
/// tools that look for it).
pub const SERVICE: &str = "kube-dns";
/// Label naming the manager of an EndpointSlice (`discovery.k8s.io/v1`).
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This component's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "skiff-dns";
/// Label telling an EndpointSlice mirroring controller to leave the Endpoints alone
/// (the slices are written directly).
const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// How often the objects are checked again after a successful pass.
pub const RESYNC: Duration = Duration::from_secs(60);
/// How long to wait after a failed pass.
const RETRY: Duration = Duration::from_secs(5);

/// What one DNS server publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The node the server runs on (names the EndpointSlice, fills `nodeName`).
    pub node_name: String,
    /// Address (IP and port) clients reach the server at, written into the
    /// EndpointSlice and Endpoints; never an unspecified IP.
    pub address: SocketAddr,
}

impl Registration {
    /// Name of this server's EndpointSlice: `kube-dns-<node>`, cut to the 253
    /// characters an object name may have.
    pub fn slice_name(&self) -> String {
        let mut name = format!("{SERVICE}-{}", self.node_name);
        name.truncate(253);
        name.trim_end_matches(['-', '.']).to_string()
    }
}

fn kube_err(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// The desired `kube-system/kube-dns` Service for the cluster DNS address
/// `cluster_dns`; `target_port` is the port the servers listen on.
pub fn desired_service(cluster_dns: IpAddr, target_port: u16) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": {
            "k8s-app": "kube-dns",
            "kubernetes.io/cluster-service": "true",
            "kubernetes.io/name": "CoreDNS",
        }},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_dns.to_string(),
            "clusterIPs": [cluster_dns.to_string()],
            "ipFamilies": [family(cluster_dns)],
            "ipFamilyPolicy": "SingleStack",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": target_port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": target_port},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
        },
    }))
    .expect("a valid Service")
}

/// The desired EndpointSlice of one server, owned by the Service whose uid is
/// `service_uid` (so that deleting the Service removes it).
pub fn desired_slice(reg: &Registration, service_uid: &str) -> EndpointSlice {
    let port = reg.address.port();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": reg.slice_name(), "namespace": NAMESPACE,
            "labels": {SERVICE_NAME_LABEL: SERVICE, MANAGED_BY_LABEL: MANAGED_BY},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": SERVICE,
                                 "uid": service_uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "addressType": family(reg.address.ip()),
        "endpoints": [{
            "addresses": [reg.address.ip().to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": reg.node_name,
        }],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    }))
    .expect("a valid EndpointSlice")
}

/// The legacy Endpoints of the Service: one subset per distinct port list, holding
/// the ready addresses of every slice in `slices` (slices being deleted are left out).
pub fn desired_endpoints(slices: &[EndpointSlice]) -> Endpoints {
    let mut subsets: Vec<EndpointSubset> = Vec::new();
    for slice in slices.iter().filter(|s| s.metadata.deletion_timestamp.is_none()) {
        let ports: Vec<EndpointPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(EndpointPort {
                    name: p.name.clone(),
                    port: p.port?,
                    protocol: p.protocol.clone(),
                    app_protocol: None,
                })
            })
            .collect();
        let addresses = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| {
                e.addresses.iter().map(|ip| {
                    serde_json::from_value(json!({"ip": ip, "nodeName": e.node_name})).expect("an EndpointAddress")
                })
            });
        let subset = match subsets.iter_mut().find(|s| s.ports.as_ref() == Some(&ports)) {
            Some(s) => s,
            None => {
                subsets.push(EndpointSubset {
                    ports: Some(ports),
                    addresses: Some(Vec::new()),
                    not_ready_addresses: None,
                });
                subsets.last_mut().expect("just pushed")
            }
        };
        let list = subset.addresses.get_or_insert_with(Vec::new);
        for address in addresses {
            if !list.contains(&address) {
                list.push(address);
            }
        }
    }
    subsets.retain(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()));
    for s in &mut subsets {
        if let Some(a) = s.addresses.as_mut() {
            a.sort_by(|x, y| x.ip.cmp(&y.ip));
        }
    }
    Endpoints {
        metadata: ObjectMeta {
            name: Some(SERVICE.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                ("k8s-app".to_string(), "kube-dns".to_string()),
                (SKIP_MIRROR_LABEL.to_string(), "true".to_string()),
            ])),
            ..Default::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    }
}

/// Whether `have` carries every label of `want`.
fn has_labels(have: &ObjectMeta, want: &ObjectMeta) -> bool {
    let have = have.labels.clone().unwrap_or_default();
    want.labels.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
}

fn with_labels(mut have: ObjectMeta, want: &ObjectMeta) -> ObjectMeta {
    let labels = have.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in want.labels.iter().flatten() {
        labels.insert(k.clone(), v.clone());
    }
    have
}

/// A Service port as compared: (name, port, protocol, targetPort).
fn port_key(p: &ServicePort) -> (Option<String>, i32, String, Option<String>) {
    (
        p.name.clone(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.target_port.as_ref().map(|t| match t {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
        }),
    )
}

/// Creates or corrects the Service; returns it as stored.
async fn ensure_service(api: &Api<Service>, want: &Service) -> Result<Service, Error> {
    let want_spec = want.spec.clone().unwrap_or_default();
    let Some(have) = api
        .get_opt(SERVICE)
        .await
        .map_err(kube_err(format!("reading Service {NAMESPACE}/{SERVICE}")))?
    else {
        tracing::info!(cluster_ip = ?want_spec.cluster_ip, "creating Service {NAMESPACE}/{SERVICE}");
        return api
            .create(&PostParams::default(), want)
            .await
            .map_err(kube_err(format!("creating Service {NAMESPACE}/{SERVICE}")));
    };
    let spec = have.spec.clone().unwrap_or_default();
    if spec.cluster_ip != want_spec.cluster_ip {
        // clusterIP is immutable: replace the Service.
        tracing::warn!(
            have = ?spec.cluster_ip, want = ?want_spec.cluster_ip,
            "Service {NAMESPACE}/{SERVICE} has another clusterIP; re-creating it"
        );
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: have.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        api.delete(SERVICE, &dp)
            .await
            .map_err(kube_err(format!("deleting Service {NAMESPACE}/{SERVICE}")))?;
        return api
            .create(&PostParams::default(), want)
            .await
            .map_err(kube_err(format!("re-creating Service {NAMESPACE}/{SERVICE}")));
    }
    let ports =
        |s: &k8s_openapi::api::core::v1::ServiceSpec| -> Vec<_> { s.ports.iter().flatten().map(port_key).collect() };
    let selector_empty = spec.selector.as_ref().is_none_or(BTreeMap::is_empty);
    let same = has_labels(&have.metadata, &want.metadata)
        && ports(&spec) == ports(&want_spec)
        && selector_empty
        && spec.type_.as_deref().unwrap_or("ClusterIP") == "ClusterIP";
    if same {
        return Ok(have);
    }
    tracing::info!("updating Service {NAMESPACE}/{SERVICE}");
    let mut fixed = have.clone();
    fixed.metadata = with_labels(have.metadata, &want.metadata);
    let fixed_spec = fixed.spec.get_or_insert_with(Default::default);
    fixed_spec.ports = want_spec.ports;
    fixed_spec.selector = None;
    fixed_spec.type_ = Some("ClusterIP".into());
    api.replace(SERVICE, &PostParams::default(), &fixed)
        .await
        .map_err(kube_err(format!("updating Service {NAMESPACE}/{SERVICE}")))
}

/// Creates or corrects this server's EndpointSlice.
async fn ensure_slice(api: &Api<EndpointSlice>, want: &EndpointSlice) -> Result<(), Error> {
    let name = want.metadata.name.clone().unwrap_or_default();
    let what = format!("EndpointSlice {NAMESPACE}/{name}");
    let have = api.get_opt(&name).await.map_err(kube_err(format!("reading {what}")))?;
    let Some(have) = have else {
        tracing::info!("creating {what}");
        api.create(&PostParams::default(), want)
            .await
            .map_err(kube_err(format!("creating {what}")))?;
        return Ok(());
    };
    if have.address_type != want.address_type {
        // addressType is immutable.
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(kube_err(format!("deleting {what}")))?;
        api.create(&PostParams::default(), want)
            .await
            .map_err(kube_err(format!("re-creating {what}")))?;
        return Ok(());
    }
    let same = has_labels(&have.metadata, &want.metadata)
        && have.endpoints == want.endpoints
        && have.ports == want.ports
        && have.metadata.owner_references == want.metadata.owner_references;
    if same {
        return Ok(());
    }
    tracing::info!("updating {what}");
    let mut fixed = want.clone();
    fixed.metadata = with_labels(have.metadata, &want.metadata);
    fixed.metadata.owner_references = want.metadata.owner_references.clone();
    api.replace(&name, &PostParams::default(), &fixed)
        .await
        .map_err(kube_err(format!("updating {what}")))?;
    Ok(())
}

/// Sets the Endpoints to the union of the servers' slices.
async fn sync_endpoints(client: &kube::Client) -> Result<(), Error> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = format!("{SERVICE_NAME_LABEL}={SERVICE},{MANAGED_BY_LABEL}={MANAGED_BY}");
    let list = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err(format!("listing EndpointSlices of {NAMESPACE}/{SERVICE}")))?;
    let want = desired_endpoints(&list.items);
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    let what = format!("Endpoints {NAMESPACE}/{SERVICE}");
    match api
        .get_opt(SERVICE)
        .await
        .map_err(kube_err(format!("reading {what}")))?
    {
        None => {
            api.create(&PostParams::default(), &want)
                .await
                .map_err(kube_err(format!("creating {what}")))?;
        }
        Some(have)
            if have.subsets.clone().filter(|s| !s.is_empty()) == want.subsets
                && has_labels(&have.metadata, &want.metadata) => {}
        Some(have) => {
            let mut fixed = want.clone();
            fixed.metadata = with_labels(have.metadata, &want.metadata);
            api.replace(SERVICE, &PostParams::default(), &fixed)
                .await
                .map_err(kube_err(format!("updating {what}")))?;
        }
    }
    Ok(())
}

/// One idempotent pass: the Service with clusterIP `cluster_dns`, this server's
/// EndpointSlice, and the Endpoints.
///
/// Errors: [`Error::Kube`] naming the request that failed (for example an apiserver
/// that rejects the clusterIP because it is outside `--service-cluster-ip-range`).
pub async fn ensure(client: &kube::Client, cluster_dns: IpAddr, reg: &Registration) -> Result<(), Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let service = ensure_service(&services, &desired_service(cluster_dns, reg.address.port())).await?;
    let uid = service.metadata.uid.unwrap_or_default();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    ensure_slice(&slices, &desired_slice(reg, &uid)).await?;
    sync_endpoints(client).await
}

/// Removes this server's EndpointSlice and its address from the Endpoints, so
/// that traffic to the Service stops reaching a server that is going away.
///
/// Errors: [`Error::Kube`] naming the request that failed.
pub async fn withdraw(client: &kube::Client, reg: &Registration) -> Result<(), Error> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let name = reg.slice_name();
    match slices.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(kube_err(format!("deleting EndpointSlice {NAMESPACE}/{name}"))(e)),
    }
    sync_endpoints(client).await
}

/// Keeps the registration in place until `shutdown` (a pass every [`RESYNC`], a
/// failed pass retried after a few seconds), then withdraws it (bounded by a
/// short timeout, since the apiserver may be stopping too).
pub async fn run(client: kube::Client, cluster_dns: IpAddr, reg: Registration, shutdown: CancellationToken) {
    loop {
        let wait = match ensure(&client, cluster_dns, &reg).await {
            Ok(()) => RESYNC,
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "registering the cluster DNS Service");
                RETRY
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    match tokio::time::timeout(Duration::from_secs(3), withdraw(&client, &reg)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %crate::error::chain(&e), "withdrawing the DNS endpoint"),
        Err(_) => tracing::debug!("withdrawing the DNS endpoint timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(ip: &str, port: u16, node: &str) -> Registration {
        Registration {
            node_name: node.into(),
            address: SocketAddr::new(ip.parse().unwrap(), port),
        }
    }

    #[test]
    fn the_service_matches_the_upstream_addon() {
        let svc = desired_service("10.43.0.10".parse().unwrap(), 53);
        let v = serde_json::to_value(&svc).unwrap();
        assert_eq!(v["metadata"]["labels"]["k8s-app"], "kube-dns");
        assert_eq!(v["spec"]["clusterIP"], "10.43.0.10");
        assert!(v["spec"].get("selector").is_none());
        let ports: Vec<(String, i64, String)> = v["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().into(),
                    p["port"].as_i64().unwrap(),
                    p["protocol"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("dns".into(), 53, "UDP".into()),
                ("dns-tcp".into(), 53, "TCP".into()),
                ("metrics".into(), 9153, "TCP".into())
            ]
        );
    }

    #[test]
    fn slices_point_at_the_listen_address() {
        let s = desired_slice(&reg("192.168.1.5", 5353, "node-a"), "uid-1");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["metadata"]["name"], "kube-dns-node-a");
        assert_eq!(v["metadata"]["labels"][SERVICE_NAME_LABEL], "kube-dns");
        assert_eq!(v["metadata"]["labels"][MANAGED_BY_LABEL], "skiff-dns");
        assert_eq!(v["addressType"], "IPv4");
        assert_eq!(v["endpoints"][0]["addresses"][0], "192.168.1.5");
        assert_eq!(v["ports"][0]["port"], 5353);
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        let s6 = desired_slice(&reg("fd00::5", 53, "n"), "u");
        assert_eq!(s6.address_type, "IPv6");
    }

    #[test]
    fn endpoints_are_the_union_of_the_slices() {
        let a = desired_slice(&reg("10.0.0.2", 53, "b"), "u");
        let b = desired_slice(&reg("10.0.0.1", 53, "a"), "u");
        let c = desired_slice(&reg("10.0.0.3", 5353, "c"), "u");
        let ep = desired_endpoints(&[a.clone(), b, c]);
        let v = serde_json::to_value(&ep).unwrap();
        let subsets = v["subsets"].as_array().unwrap();
        assert_eq!(subsets.len(), 2);
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.0.0.1");
        assert_eq!(subsets[0]["addresses"][1]["ip"], "10.0.0.2");
        assert_eq!(subsets[1]["ports"][0]["port"], 5353);
        assert_eq!(v["metadata"]["labels"][SKIP_MIRROR_LABEL], "true");
        assert!(desired_endpoints(&[]).subsets.is_none());
    }

    #[test]
    fn slice_names_are_valid_object_names() {
        let long = "n".repeat(300);
        assert_eq!(reg("10.0.0.1", 53, &long).slice_name().len(), 253);
    }
}
