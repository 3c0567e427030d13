//! The proxy's view of the cluster: one [`ServicePort`] per (Service, port), joined with
//! the endpoints of the Service's EndpointSlices.
//!
//! The join follows upstream kube-proxy (`pkg/proxy/servicechangetracker.go`,
//! `pkg/proxy/endpointslicecache.go`, `pkg/proxy/topology.go`): a Service port is
//! matched to the EndpointSlice port with the same name and protocol (this is how named
//! `targetPort`s are resolved: the slice already carries the number), only the first
//! address of each endpoint is used, and an endpoint's missing `ready` / `serving`
//! conditions count as ready / serving.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label that links an EndpointSlice to its Service (`kubernetes.io/service-name`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours), as upstream.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// A transport protocol a Service port can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `TCP` (the default when a port names no protocol).
    Tcp,
    /// `UDP`.
    Udp,
    /// `SCTP`.
    Sctp,
}

impl Protocol {
    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`); `None` for anything else.
    pub fn from_api(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The nftables spelling (`tcp`, `udp`, `sctp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.nft())
    }
}

/// One endpoint of a Service port: an address and the port traffic is forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's (first) IPv4 address.
    pub ip: Ipv4Addr,
    /// The destination port on the endpoint (the resolved `targetPort`).
    pub port: u16,
    /// `conditions.ready` (missing counts as `true`).
    pub ready: bool,
    /// `conditions.serving` (missing counts as the value of `ready`).
    pub serving: bool,
    /// `conditions.terminating` (missing counts as `false`).
    pub terminating: bool,
    /// `nodeName`: the node hosting the endpoint, used by the `Local` traffic policies.
    pub node_name: Option<String>,
}

/// One port of one Service, with everything the ruleset needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// `spec.ports[].name` (empty for a single unnamed port).
    pub port_name: String,
    /// `spec.ports[].protocol`.
    pub protocol: Protocol,
    /// `spec.ports[].port`: the port on the ClusterIP, externalIPs and LB IPs.
    pub port: u16,
    /// `spec.ports[].nodePort`, only for `NodePort` and `LoadBalancer` Services.
    pub node_port: Option<u16>,
    /// The IPv4 entries of `spec.clusterIPs` (or `spec.clusterIP`).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// The IPv4 entries of `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip`, except entries with `ipMode: Proxy`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.internalTrafficPolicy: Local`: ClusterIP traffic only to this node's endpoints.
    pub internal_local: bool,
    /// `spec.externalTrafficPolicy: Local`: external traffic only to this node's endpoints,
    /// without masquerading (the client address is preserved).
    pub external_local: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds; `None` without affinity.
    pub affinity_timeout: Option<u32>,
    /// All endpoints from the Service's slices for this port, sorted by address and port.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `namespace/name/protocol/port-name` (the port number when the port is unnamed):
    /// unique per Service port, and used to name its chains.
    pub fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            self.port.to_string()
        } else {
            self.port_name.clone()
        };
        format!("{}/{}/{}/{}", self.namespace, self.name, self.protocol, port)
    }

    /// The endpoints cluster-wide traffic may use: the ready ones, or, when none is
    /// ready, the serving-and-terminating ones (upstream `CategorizeEndpoints`,
    /// KEP-1669 "ProxyTerminatingEndpoints").
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter())
    }

    /// Like [`cluster_endpoints`](Self::cluster_endpoints), restricted to endpoints whose
    /// `nodeName` is `node`.
    pub fn local_endpoints(&self, node: &str) -> Vec<&Endpoint> {
        usable(self.endpoints.iter().filter(|e| e.node_name.as_deref() == Some(node)))
    }

    /// Whether the Service is reachable from outside (NodePort, externalIPs or LB IPs).
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }
}

fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

fn ipv4s<'a>(list: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = list.into_iter().filter_map(|s| s.parse().ok()).collect();
    out.sort();
    out.dedup();
    out
}

/// Builds the Service ports the proxy programs, sorted by [`ServicePort::id`].
///
/// Skipped as upstream does (`ShouldSkipService`): `ExternalName` Services, headless
/// Services (`clusterIP: None`) and Services without a ClusterIP. Ports with an unknown
/// protocol or out-of-range numbers are skipped. Slices are matched by namespace and the
/// [`SERVICE_NAME_LABEL`]; only `addressType: IPv4` slices are used.
pub fn build(services: &[Service], slices: &[EndpointSlice]) -> Vec<ServicePort> {
    // (namespace, service) -> slices
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        if s.address_type != "IPv4" {
            continue;
        }
        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
        by_service.entry((ns, svc.as_str())).or_default().push(s);
    }

    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let mut cluster_ips = ipv4s(spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()));
        cluster_ips.retain(|ip| !ip.is_unspecified());
        if cluster_ips.is_empty() {
            // Headless (`None`), not yet allocated, or IPv6-only.
            continue;
        }
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let external_ips = ipv4s(spec.external_ips.iter().flatten());
        let load_balancer_ips = ipv4s(
            svc.status
                .iter()
                .filter_map(|s| s.load_balancer.as_ref())
                .flat_map(|lb| lb.ingress.iter().flatten())
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_ref()),
        );
        let node_port_type = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
        });
        let svc_slices = by_service
            .get(&(namespace.as_str(), name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::from_api(p.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else { continue };
            let port_name = p.name.clone().unwrap_or_default();
            out.push(ServicePort {
                namespace: namespace.clone(),
                name: name.clone(),
                protocol,
                port,
                node_port: p
                    .node_port
                    .filter(|_| node_port_type)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0),
                cluster_ips: cluster_ips.clone(),
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                affinity_timeout,
                endpoints: endpoints_for(svc_slices, &port_name, protocol),
                port_name,
            });
        }
    }
    out.sort_by_key(ServicePort::id);
    out
}

/// The endpoints of `slices` for the slice port named `port_name` with `protocol`.
/// An address listed twice (e.g. in two slices during an update) is kept once,
/// preferring the entry that is ready.
fn endpoints_for(slices: &[&EndpointSlice], port_name: &str, protocol: Protocol) -> Vec<Endpoint> {
    let mut found: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or_default() == port_name
                    && Protocol::from_api(p.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let endpoint = Endpoint {
                ip,
                port,
                ready,
                serving: cond.and_then(|c| c.serving).unwrap_or(ready),
                terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                node_name: ep.node_name.clone(),
            };
            match found.get(&(ip, port)) {
                Some(existing) if existing.ready || !endpoint.ready => {}
                _ => {
                    found.insert((ip, port), endpoint);
                }
            }
        }
    }
    found.into_values().collect()
}
