//! Service ClusterIP and NodePort allocation, as upstream's service REST storage
//! does it (`pkg/registry/core/service/ipallocator` and `portallocator`):
//!
//! - a ClusterIP is taken from `--service-cluster-ip-range` unless the Service is
//!   `ExternalName` or headless (`clusterIP: None`); a requested IP must be inside
//!   the range and free. The range's network address is never handed out, and its
//!   first host address is reserved for the `default/kubernetes` Service.
//!   Dynamic allocations prefer the upper part of the range so static addresses
//!   in the lower band (e.g. the cluster DNS `10.43.0.10`) stay free (KEP-3070).
//! - every port of a `NodePort` or `LoadBalancer` Service gets a `nodePort` from
//!   `--service-node-port-range` (30000-32767) unless it asks for a free one in
//!   the range; other types may not carry node ports.
//! - on update, allocated values the client left out are kept (upstream's
//!   `patchAllocatedValues`): an empty `clusterIP` keeps the old one and a port
//!   without `nodePort` keeps the node port of the old port with the same port
//!   number and protocol. A set ClusterIP can not be changed.
//!
//! The functions here are pure: they get the values in use by other Services and
//! return field errors with upstream's messages. The caller serializes
//! allocations (one apiserver process holds the allocation lock).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use rand::Rng;
use serde_json::{Value, json};
use skiff_api::validation::FieldError;

/// An IPv4 CIDR such as `10.43.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: u32,
    prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/n` (host bits are cleared). Errors name the problem.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{s:?}: the prefix length must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            network: u32::from(ip) & mask,
            prefix,
        })
    }

    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.network
    }

    /// The `n`th address of the range (0 is the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + n)
    }

    /// Number of addresses in the range.
    pub fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// The Service address ranges of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// `--service-cluster-ip-range`, default `10.43.0.0/16`.
    pub cluster_ip_range: Ipv4Cidr,
    /// `--service-node-port-range`, default 30000-32767.
    pub node_port_range: RangeInclusive<u16>,
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        Self {
            cluster_ip_range: Ipv4Cidr::parse("10.43.0.0/16").expect("valid default"),
            node_port_range: 30000..=32767,
        }
    }
}

impl ServiceNetwork {
    /// The ClusterIP of `default/kubernetes`: the first host address of the range.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.cluster_ip_range.nth(1)
    }
}

/// ClusterIPs and node ports held by the other Services.
#[derive(Debug, Default, Clone)]
pub struct InUse {
    /// Allocated ClusterIPs.
    pub cluster_ips: HashSet<Ipv4Addr>,
    /// Allocated node ports with their protocol (`TCP`, `UDP`, `SCTP`).
    pub node_ports: HashSet<(u16, String)>,
}

impl InUse {
    /// Adds the allocations of `svc`.
    pub fn add(&mut self, svc: &Value) {
        for ip in cluster_ips(svc) {
            if let Ok(ip) = ip.parse() {
                self.cluster_ips.insert(ip);
            }
        }
        for p in ports(svc) {
            if let Some(np) = p.get("nodePort").and_then(Value::as_u64).filter(|n| *n > 0) {
                self.node_ports.insert((np as u16, protocol(p)));
            }
        }
    }
}

fn cluster_ips(svc: &Value) -> Vec<String> {
    let mut ips: Vec<String> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str)
        && !ips.iter().any(|i| i == ip)
    {
        ips.insert(0, ip.to_string());
    }
    ips.retain(|i| !i.is_empty() && i != "None");
    ips
}

fn ports(svc: &Value) -> Vec<&Value> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn protocol(port: &Value) -> String {
    port.get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
        .to_string()
}

fn service_type(svc: &Value) -> &str {
    svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn invalid(field: &str, value: impl std::fmt::Display, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: field.to_string(),
        message: format!("Invalid value: {value}: {detail}"),
    }
}

fn forbidden(field: &str, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueForbidden",
        field: field.to_string(),
        message: format!("Forbidden: {detail}"),
    }
}

/// Allocates (or keeps, for an update from `old`) the ClusterIP and node ports of
/// `svc` in place. `in_use` holds the other Services' allocations. Errors are the
/// upstream field errors (422 Invalid).
pub fn allocate(
    net: &ServiceNetwork,
    svc: &mut Value,
    old: Option<&Value>,
    in_use: &InUse,
) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    let ty = service_type(svc).to_string();
    if let Some(old) = old {
        keep_allocated(svc, old, &ty);
    }
    if ty == "ExternalName" {
        // ExternalName services have no ClusterIP (upstream clears it on type change).
        if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            if spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .is_some_and(|s| s.is_empty())
            {
                spec.remove("clusterIP");
            }
            spec.remove("clusterIPs");
        }
    } else {
        allocate_cluster_ip(net, svc, old, in_use, &mut errs);
    }
    allocate_node_ports(net, svc, &ty, in_use, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// Upstream's `patchAllocatedValues`: values the client left out on update keep
/// their allocation.
fn keep_allocated(svc: &mut Value, old: &Value, ty: &str) {
    let old_ips = cluster_ips(old);
    let new_ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ty != "ExternalName" && new_ip.is_empty() && !old_ips.is_empty() {
        svc["spec"]["clusterIP"] = json!(old_ips[0]);
        svc["spec"]["clusterIPs"] = json!(old_ips);
    }
    if matches!(ty, "NodePort" | "LoadBalancer") {
        let old_ports: Vec<Value> = ports(old).into_iter().cloned().collect();
        if let Some(new_ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in new_ports {
                if p.get("nodePort").and_then(Value::as_u64).unwrap_or(0) != 0 {
                    continue;
                }
                let same = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port")
                        && protocol(o) == protocol(p)
                        && o.get("nodePort").and_then(Value::as_u64).unwrap_or(0) != 0
                });
                if let Some(o) = same {
                    p["nodePort"] = o["nodePort"].clone();
                }
            }
        }
    }
}

fn allocate_cluster_ip(
    net: &ServiceNetwork,
    svc: &mut Value,
    old: Option<&Value>,
    in_use: &InUse,
    errs: &mut Vec<FieldError>,
) {
    let requested = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let old_ips = old.map(cluster_ips).unwrap_or_default();
    if let Some(old_ip) = old_ips.first()
        && requested != *old_ip
    {
        let shown = if requested.is_empty() {
            "\"\"".to_string()
        } else {
            format!("{requested:?}")
        };
        errs.push(invalid("spec.clusterIPs[0]", shown, "may not change once set"));
        return;
    }
    if requested == "None" {
        svc["spec"]["clusterIPs"] = json!(["None"]);
        set_families(svc);
        return;
    }
    if !requested.is_empty() {
        if old_ips.first() == Some(&requested) {
            svc["spec"]["clusterIPs"] = json!([requested]);
            set_families(svc);
            return;
        }
        let Ok(ip) = requested.parse::<Ipv4Addr>() else {
            errs.push(invalid(
                "spec.clusterIPs[0]",
                format!("{requested:?}"),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
            return;
        };
        let range = net.cluster_ip_range;
        let detail = if !range.contains(ip) || ip == range.nth(0) || ip == range.nth(range.size() - 1) {
            format!(
                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
            )
        } else if in_use.cluster_ips.contains(&ip) {
            format!("failed to allocate IP {ip}: provided IP is already allocated")
        } else {
            svc["spec"]["clusterIPs"] = json!([requested]);
            set_families(svc);
            return;
        };
        errs.push(invalid("spec.clusterIPs[0]", format!("{requested:?}"), &detail));
        return;
    }
    // Dynamic allocation prefers the upper part of the range, leaving the lower
    // band (size/16, between 16 and 256 addresses) for static ClusterIPs such as
    // the cluster DNS address (upstream KEP-3070). Within a band, a scan from a
    // random start finds a free address whenever one is left; offset 1 is the
    // default/kubernetes Service's.
    let range = net.cluster_ip_range;
    let last = range.size() - 1; // broadcast address, never handed out
    let band = (range.size() / 16).clamp(16, 256).min(last);
    for (lo, hi) in [(band, last), (2, band)] {
        if hi <= lo {
            continue;
        }
        let span = hi - lo;
        let start = rand::rng().random_range(0..span);
        for i in 0..span {
            let ip = range.nth(lo + (start + i) % span);
            if in_use.cluster_ips.contains(&ip) {
                continue;
            }
            svc["spec"]["clusterIP"] = json!(ip.to_string());
            svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
            set_families(svc);
            return;
        }
    }
    errs.push(invalid(
        "spec.clusterIPs",
        "[]",
        &format!("failed to allocate IP: range is full ({range})"),
    ));
}

fn set_families(svc: &mut Value) {
    let spec = &mut svc["spec"];
    if spec.get("ipFamilies").is_none() {
        spec["ipFamilies"] = json!(["IPv4"]);
    }
    if spec.get("ipFamilyPolicy").is_none() {
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
}

fn allocate_node_ports(net: &ServiceNetwork, svc: &mut Value, ty: &str, in_use: &InUse, errs: &mut Vec<FieldError>) {
    let wants_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer"
            && svc
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false));
    let Some(list) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return;
    };
    let mut taken: HashSet<(u16, String)> = HashSet::new();
    // First the requested ports, so a random pick never takes one of them.
    for (i, p) in list.iter().enumerate() {
        let np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if np == 0 {
            continue;
        }
        let field = format!("spec.ports[{i}].nodePort");
        if !matches!(ty, "NodePort" | "LoadBalancer") {
            errs.push(forbidden(&field, &format!("may not be used when `type` is '{ty}'")));
            continue;
        }
        let in_range = u16::try_from(np).ok().filter(|n| net.node_port_range.contains(n));
        let Some(port) = in_range else {
            errs.push(invalid(
                &field,
                np,
                &format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    net.node_port_range.start(),
                    net.node_port_range.end()
                ),
            ));
            continue;
        };
        let key = (port, protocol(p));
        // Two ports of one Service may share a node port only with different protocols.
        if in_use.node_ports.contains(&key) || !taken.insert(key) {
            errs.push(invalid(&field, np, "provided port is already allocated"));
        }
    }
    if !wants_node_ports {
        return;
    }
    let span = u32::from(*net.node_port_range.end() - *net.node_port_range.start()) + 1;
    for p in list.iter_mut() {
        if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
            continue;
        }
        let proto = protocol(p);
        let start = rand::rng().random_range(0..span);
        let free = (0..span)
            .map(|i| *net.node_port_range.start() + ((start + i) % span) as u16)
            .find(|n| !in_use.node_ports.contains(&(*n, proto.clone())) && !taken.contains(&(*n, proto.clone())));
        match free {
            Some(n) => {
                taken.insert((n, proto));
                p["nodePort"] = json!(n);
            }
            None => errs.push(invalid(
                "spec.ports",
                "[]",
                "failed to allocate a nodePort: range is full",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec})
    }

    fn net() -> ServiceNetwork {
        ServiceNetwork {
            cluster_ip_range: Ipv4Cidr::parse("10.96.0.0/28").unwrap(),
            node_port_range: 30000..=30002,
        }
    }

    #[test]
    fn cidrs_parse_and_bound() {
        let c = Ipv4Cidr::parse("10.43.7.9/16").unwrap();
        assert_eq!(c.to_string(), "10.43.0.0/16");
        assert!(c.contains("10.43.255.1".parse().unwrap()));
        assert!(!c.contains("10.44.0.1".parse().unwrap()));
        assert!(Ipv4Cidr::parse("10.43.0.0").is_err());
        assert!(Ipv4Cidr::parse("10.43.0.0/40").is_err());
        assert_eq!(
            ServiceNetwork::default().kubernetes_service_ip().to_string(),
            "10.43.0.1"
        );
    }

    #[test]
    fn cluster_ips_come_from_the_range_and_never_repeat() {
        let net = net();
        let mut in_use = InUse::default();
        let mut seen = HashSet::new();
        // A /28 has 14 host addresses; .1 is reserved, so 13 can be handed out
        // (the static band is the whole /28, so it is used once nothing else is left).
        for _ in 0..13 {
            let mut s = svc(json!({"ports": [{"port": 80}]}));
            allocate(&net, &mut s, None, &in_use).unwrap();
            let ip: Ipv4Addr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
            assert!(net.cluster_ip_range.contains(ip));
            assert_ne!(ip, net.kubernetes_service_ip());
            assert!(seen.insert(ip), "{ip} handed out twice");
            assert_eq!(s["spec"]["clusterIPs"], json!([ip.to_string()]));
            assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
            in_use.add(&s);
        }
        let mut s = svc(json!({"ports": [{"port": 80}]}));
        let errs = allocate(&net, &mut s, None, &in_use).unwrap_err();
        assert!(errs[0].message.contains("range is full"), "{errs:?}");
    }

    #[test]
    fn dynamic_allocations_leave_the_static_band_free() {
        let net = ServiceNetwork::default();
        let mut in_use = InUse::default();
        for _ in 0..200 {
            let mut s = svc(json!({"ports": [{"port": 80}]}));
            allocate(&net, &mut s, None, &in_use).unwrap();
            let ip: Ipv4Addr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
            assert!(
                u32::from(ip) - u32::from(net.cluster_ip_range.nth(0)) >= 256,
                "{ip} is in the static band"
            );
            in_use.add(&s);
        }
    }

    #[test]
    fn requested_cluster_ips_are_checked_like_upstream() {
        let net = net();
        let mut in_use = InUse::default();
        in_use.cluster_ips.insert("10.96.0.5".parse().unwrap());
        let mut s = svc(json!({"clusterIP": "10.96.0.10"}));
        allocate(&net, &mut s, None, &in_use).unwrap();
        assert_eq!(s["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        let mut s = svc(json!({"clusterIP": "10.96.0.5"}));
        let errs = allocate(&net, &mut s, None, &in_use).unwrap_err();
        assert_eq!(
            errs[0].render(),
            "spec.clusterIPs[0]: Invalid value: \"10.96.0.5\": failed to allocate IP 10.96.0.5: provided IP is already allocated"
        );
        let mut s = svc(json!({"clusterIP": "192.168.0.1"}));
        let errs = allocate(&net, &mut s, None, &in_use).unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("is not in the valid range. The range of valid IPs is 10.96.0.0/28")
        );
        let mut s = svc(json!({"clusterIP": "None"}));
        allocate(&net, &mut s, None, &in_use).unwrap();
        assert_eq!(s["spec"]["clusterIPs"], json!(["None"]));
        let mut s = svc(json!({"type": "ExternalName", "externalName": "example.com"}));
        allocate(&net, &mut s, None, &in_use).unwrap();
        assert!(s["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn node_ports_are_allocated_per_port_and_checked() {
        let net = net();
        let mut in_use = InUse::default();
        let mut s = svc(json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}));
        allocate(&net, &mut s, None, &in_use).unwrap();
        let a = s["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        let b = s["spec"]["ports"][1]["nodePort"].as_u64().unwrap();
        assert!((30000..=30002).contains(&a) && (30000..=30002).contains(&b) && a != b);
        in_use.add(&s);
        let mut s2 = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": a}]}));
        let errs = allocate(&net, &mut s2, None, &in_use).unwrap_err();
        assert_eq!(
            errs[0].render(),
            format!("spec.ports[0].nodePort: Invalid value: {a}: provided port is already allocated")
        );
        // The same number over UDP is a different allocation.
        let mut s3 = svc(json!({"type": "NodePort", "ports": [{"port": 53, "protocol": "UDP", "nodePort": a}]}));
        allocate(&net, &mut s3, None, &in_use).unwrap();
        let mut s4 = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}));
        let errs = allocate(&net, &mut s4, None, &in_use).unwrap_err();
        assert!(errs[0].message.contains("The range of valid ports is 30000-30002"));
        let mut s5 = svc(json!({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30001}]}));
        let errs = allocate(&net, &mut s5, None, &in_use).unwrap_err();
        assert_eq!(errs[0].reason, "FieldValueForbidden");
        // One free port left, two wanted: the range is full.
        let mut s6 = svc(json!({"type": "LoadBalancer", "ports": [{"port": 1}, {"port": 2}]}));
        let errs = allocate(&net, &mut s6, None, &in_use).unwrap_err();
        assert!(errs[0].message.contains("range is full"));
    }

    #[test]
    fn updates_keep_allocations_the_client_left_out_and_forbid_changing_the_ip() {
        let net = net();
        let in_use = InUse::default();
        let mut old = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        allocate(&net, &mut old, None, &in_use).unwrap();
        let mut new = svc(json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}));
        allocate(&net, &mut new, Some(&old), &in_use).unwrap();
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(new["spec"]["ports"][0]["nodePort"], old["spec"]["ports"][0]["nodePort"]);
        assert!(new["spec"]["ports"][1]["nodePort"].as_u64().is_some());
        let other = if old["spec"]["clusterIP"] == json!("10.96.0.9") {
            "10.96.0.10"
        } else {
            "10.96.0.9"
        };
        let mut moved = svc(json!({"clusterIP": other, "ports": [{"port": 80}]}));
        let errs = allocate(&net, &mut moved, Some(&old), &in_use).unwrap_err();
        assert!(errs[0].message.contains("may not change once set"), "{errs:?}");
    }
}
