//! The cluster zone as data: a pure mapping from a snapshot of Services and
//! EndpointSlices to DNS answers, following the Kubernetes DNS-Based Service
//! Discovery specification, schema version 1.1.0
//! (kubernetes/dns, `docs/specification.md`), with the extensions CoreDNS's
//! `kubernetes` plugin adds where the specification is silent (SRV records on the
//! bare service name, endpoint names derived from the IP when an endpoint has no
//! hostname, PTR records for every published endpoint, `pods insecure` pod records).
//!
//! Every name that the cluster data defines is materialised once per snapshot into
//! an ordered map keyed by its labels from the root down, so a lookup is one map
//! probe and "does some name below this one exist" (an empty non-terminal, answered
//! NODATA rather than NXDOMAIN, RFC 8020) is one range probe.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::Error;

/// The schema version of the specification this zone implements, served as the TXT
/// record of `dns-version.<domain>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The record TTL the specification recommends and CoreDNS uses, in seconds.
pub const DEFAULT_TTL: u32 = 30;

/// Label linking an EndpointSlice to its Service (`discovery.k8s.io/v1`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Settings of the cluster zone.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The cluster domain as a fully qualified, lower-case name (`cluster.local.`).
    pub domain: Name,
    /// TTL of every record and of negative answers (the SOA minimum), in seconds.
    pub ttl: u32,
    /// Address of the cluster DNS Service; the zone's name server
    /// `ns.dns.<domain>` resolves to it, as with CoreDNS.
    pub dns_ip: IpAddr,
}

impl ZoneConfig {
    /// Builds the zone settings from the cluster domain as written on the command
    /// line (`cluster.local`, with or without the trailing dot).
    ///
    /// Errors: [`Error::InvalidDomain`] if `domain` is not a valid DNS name or is the root.
    pub fn new(domain: &str, ttl: u32, dns_ip: IpAddr) -> Result<Self, Error> {
        let invalid = |source| Error::InvalidDomain {
            domain: domain.to_string(),
            source,
        };
        let mut name = Name::from_ascii(domain.trim_end_matches('.')).map_err(invalid)?;
        name.set_fqdn(true);
        if name.is_root() || key_of(&name).is_none() {
            return Err(invalid("the cluster domain must have at least one plain label".into()));
        }
        Ok(Self {
            domain: name.to_lowercase(),
            ttl,
            dns_ip,
        })
    }
}

/// What the cluster zone says about one question.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The name is in the cluster domain, or is a reverse name the cluster data
    /// defines: answer authoritatively.
    Zone(Box<ZoneAnswer>),
    /// The name is not the cluster's to answer: forward it to the upstream
    /// resolvers (names outside the cluster domain and reverse names of addresses
    /// that are no clusterIP or endpoint, CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).
    Forward,
}

/// An authoritative answer from the cluster zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneAnswer {
    /// `NoError` (with answers, or NODATA without) or `NXDomain`.
    pub rcode: ResponseCode,
    /// The answer section, owned by the question's name.
    pub answers: Vec<Record>,
    /// The zone's SOA for the authority section of negative answers (NXDOMAIN and
    /// NODATA, RFC 2308), `None` otherwise.
    pub soa: Option<Record>,
    /// When the answer is a CNAME (an ExternalName Service) and the question asked
    /// for another type: the target, to be resolved and appended by the server.
    pub cname_target: Option<Name>,
}

/// The zone's data at one point in time, built from the Services and EndpointSlices
/// a reflector holds. Immutable; a change in the cluster builds a new snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    zone: ZoneConfig,
    zone_key: String,
    serial: u32,
    records: BTreeMap<String, Vec<RData>>,
}

/// Lower-case labels from the root down, each followed by a dot: `cluster.local.`
/// becomes `local.cluster.`. `None` for a name no cluster object can have (a label
/// that is not UTF-8 or contains a dot).
fn key_of(name: &Name) -> Option<String> {
    let mut key = String::new();
    let labels: Vec<&[u8]> = name.iter().collect();
    for label in labels.iter().rev() {
        let s = std::str::from_utf8(label).ok()?;
        if s.contains('.') || s.is_empty() {
            return None;
        }
        key.push_str(&s.to_ascii_lowercase());
        key.push('.');
    }
    Some(key)
}

/// The key of `label` directly below `parent`.
fn child(parent: &str, label: &str) -> String {
    format!("{parent}{}.", label.to_ascii_lowercase())
}

/// The name of a key (the inverse of [`key_of`]).
fn name_of(key: &str) -> Option<Name> {
    let labels: Vec<&str> = key.trim_end_matches('.').split('.').rev().collect();
    let mut name = Name::from_labels(labels).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The key of the reverse-lookup name of `ip` (`d.c.b.a.in-addr.arpa.`, or the
/// nibble form under `ip6.arpa.`, RFC 3596).
fn reverse_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("arpa.in-addr.{}.{}.{}.{}.", o[0], o[1], o[2], o[3])
        }
        IpAddr::V6(v6) => {
            let mut key = String::from("arpa.ip6.");
            for byte in v6.octets() {
                key.push_str(&format!("{:x}.{:x}.", byte >> 4, byte & 0xf));
            }
            key
        }
    }
}

/// The label CoreDNS gives an endpoint without a hostname, and the pod-record form
/// of an address: the IP with `.` or `:` replaced by `-` (`10-42-0-5`, `fd00--1`).
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Parses the first label of a pod record (`10-42-0-5`, `fd00--1`) back into an IP.
fn undashed(label: &str) -> Option<IpAddr> {
    let v4 = label.replace('-', ".");
    if let Ok(ip) = v4.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(ip));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fn address_rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// Accumulates records, each (name, data) pair once.
struct Builder {
    records: BTreeMap<String, Vec<RData>>,
    seen: HashSet<(String, RData)>,
}

impl Builder {
    fn add(&mut self, key: &str, data: RData) {
        if self.seen.insert((key.to_string(), data.clone())) {
            self.records.entry(key.to_string()).or_default().push(data);
        }
    }

    /// Marks `key` as existing without data of its own (answered NODATA).
    fn touch(&mut self, key: &str) {
        self.records.entry(key.to_string()).or_default();
    }
}

/// A published endpoint of a headless Service: its DNS label and address.
struct PublishedEndpoint {
    label: String,
    ip: IpAddr,
}

/// The addresses of a Service's endpoints that DNS publishes: ready ones (a missing
/// `ready` condition counts as ready, as the EndpointSlice API documents), or all of
/// them when the Service sets `publishNotReadyAddresses`. FQDN slices are skipped.
fn published_endpoints(
    svc: &Service,
    slices: &[&EndpointSlice],
) -> (Vec<PublishedEndpoint>, Vec<(String, u16, String)>) {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut endpoints = Vec::new();
    let mut ports = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        for port in slice.ports.iter().flatten() {
            let (Some(number), protocol) = (port.port, port.protocol.clone().unwrap_or_else(|| "TCP".into())) else {
                continue;
            };
            let Ok(number) = u16::try_from(number) else { continue };
            let entry = (port.name.clone().unwrap_or_default(), number, protocol);
            if !ports.contains(&entry) {
                ports.push(entry);
            }
        }
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else { continue };
                let label = ep
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| dashed(ip));
                endpoints.push(PublishedEndpoint { label, ip });
            }
        }
    }
    (endpoints, ports)
}

impl Snapshot {
    /// Builds the zone from the cluster's Services and EndpointSlices. `serial` is
    /// the SOA serial (any value that grows with each rebuild, e.g. a Unix time).
    ///
    /// Per Service `<svc>` in namespace `<ns>`, with `<base>` = `<svc>.<ns>.svc.<domain>`:
    /// - ClusterIP (any type with a clusterIP): A/AAAA `<base>` for each of
    ///   `clusterIPs`; SRV `_<port-name>._<proto>.<base>` per named port and SRV
    ///   `<base>` per port, all targeting `<base>`; PTR of each clusterIP to `<base>`.
    /// - Headless (`clusterIP: None`): A/AAAA `<base>` for each published endpoint
    ///   address; A/AAAA `<label>.<base>` where the label is the endpoint's
    ///   `hostname`, or its dashed IP; SRV per named port and endpoint targeting
    ///   `<label>.<base>`; PTR of each endpoint address to `<label>.<base>`.
    /// - ExternalName: CNAME `<base>` to `spec.externalName`.
    ///
    /// Fixed records: the zone's SOA and NS at the apex, A/AAAA `ns.dns.<domain>`,
    /// TXT `dns-version.<domain>` = [`SCHEMA_VERSION`].
    pub fn build<'a>(
        zone: &ZoneConfig,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        serial: u32,
    ) -> Self {
        let zone_key = key_of(&zone.domain).expect("ZoneConfig::new checked the domain");
        let mut b = Builder {
            records: BTreeMap::new(),
            seen: HashSet::new(),
        };
        let ns_name = name_of(&child(&child(&zone_key, "dns"), "ns")).expect("valid name");
        b.add(&zone_key, RData::SOA(Self::soa_data(zone, serial)));
        b.add(&zone_key, RData::NS(NS(ns_name)));
        b.add(&child(&child(&zone_key, "dns"), "ns"), address_rdata(zone.dns_ip));
        b.add(
            &child(&zone_key, "dns-version"),
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        );
        let svc_key = child(&zone_key, "svc");
        b.touch(&svc_key);
        b.touch(&child(&zone_key, "pod"));

        let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices {
            let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
                continue;
            };
            let ns = slice.metadata.namespace.clone().unwrap_or_default();
            by_service.entry((ns, svc.clone())).or_default().push(slice);
        }

        for svc in services {
            let (Some(name), Some(ns)) = (svc.metadata.name.as_deref(), svc.metadata.namespace.as_deref()) else {
                continue;
            };
            if svc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(spec) = svc.spec.as_ref() else { continue };
            let base = child(&child(&svc_key, ns), name);
            let Some(base_name) = name_of(&base) else { continue };
            let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
            if ty == "ExternalName" {
                let target = spec
                    .external_name
                    .as_deref()
                    .map(|t| t.trim_end_matches('.'))
                    .filter(|t| !t.is_empty())
                    .and_then(|t| Name::from_ascii(t).ok());
                if let Some(mut target) = target {
                    target.set_fqdn(true);
                    b.add(&base, RData::CNAME(CNAME(target)));
                }
                continue;
            }
            let cluster_ips: Vec<&str> = match spec.cluster_ips.as_deref() {
                Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
                _ => spec.cluster_ip.as_deref().into_iter().collect(),
            };
            if cluster_ips.first() == Some(&"None") {
                let key = (ns.to_string(), name.to_string());
                let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
                let (endpoints, ports) = published_endpoints(svc, slices);
                b.touch(&base);
                for ep in &endpoints {
                    let ep_key = child(&base, &ep.label);
                    let Some(ep_name) = name_of(&ep_key) else { continue };
                    b.add(&base, address_rdata(ep.ip));
                    b.add(&ep_key, address_rdata(ep.ip));
                    b.add(&reverse_key(ep.ip), RData::PTR(PTR(ep_name.clone())));
                    for (port_name, port, protocol) in &ports {
                        let srv = RData::SRV(SRV::new(0, 0, *port, ep_name.clone()));
                        b.add(&base, srv.clone());
                        if !port_name.is_empty() {
                            let proto_key = child(&base, &format!("_{}", protocol.to_ascii_lowercase()));
                            b.add(&child(&proto_key, &format!("_{port_name}")), srv);
                        }
                    }
                }
                continue;
            }
            let ips: Vec<IpAddr> = cluster_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            if ips.is_empty() {
                continue;
            }
            for ip in &ips {
                b.add(&base, address_rdata(*ip));
                b.add(&reverse_key(*ip), RData::PTR(PTR(base_name.clone())));
            }
            for port in spec.ports.iter().flatten() {
                let Ok(number) = u16::try_from(port.port) else { continue };
                let srv = RData::SRV(SRV::new(0, 0, number, base_name.clone()));
                b.add(&base, srv.clone());
                if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                    let protocol = port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    let proto_key = child(&base, &format!("_{protocol}"));
                    b.add(&child(&proto_key, &format!("_{port_name}")), srv);
                }
            }
        }

        // SRV weights: equal shares of 100 within each RRset, as CoreDNS does.
        for data in b.records.values_mut() {
            let n = data.iter().filter(|d| matches!(d, RData::SRV(_))).count();
            if n == 0 {
                continue;
            }
            let weight = u16::try_from((100 / n).max(1)).unwrap_or(1);
            for d in data.iter_mut() {
                if let RData::SRV(srv) = d {
                    srv.weight = weight;
                }
            }
        }
        Self {
            zone: zone.clone(),
            zone_key,
            serial,
            records: b.records,
        }
    }

    fn soa_data(zone: &ZoneConfig, serial: u32) -> SOA {
        let apex = &zone.domain;
        let mname = Name::from_ascii("ns.dns")
            .expect("valid")
            .append_domain(apex)
            .expect("short");
        let rname = Name::from_ascii("hostmaster")
            .expect("valid")
            .append_domain(apex)
            .expect("short");
        // Refresh, retry and expire as CoreDNS's kubernetes plugin; minimum = TTL.
        SOA::new(mname, rname, serial, 7200, 1800, 86400, zone.ttl)
    }

    /// The zone's SOA record, for the authority section of negative answers.
    pub fn soa(&self) -> Record {
        Record::from_rdata(
            self.zone.domain.clone(),
            self.zone.ttl,
            RData::SOA(Self::soa_data(&self.zone, self.serial)),
        )
    }

    /// The zone settings this snapshot was built with.
    pub fn zone(&self) -> &ZoneConfig {
        &self.zone
    }

    /// Whether `name` is the cluster domain or below it.
    pub fn in_zone(&self, name: &Name) -> bool {
        self.zone.domain.zone_of(&name.to_lowercase())
    }

    /// Answers one question (`qname`, `qtype`, class IN).
    ///
    /// Names in the cluster domain are always answered here: data of the asked
    /// type, a CNAME, NODATA (the name exists, or names exist below it, but not
    /// with this type) or NXDOMAIN; negative answers carry the SOA. Reverse names
    /// are answered here only if the cluster defines them. Everything else is
    /// [`Answer::Forward`].
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        let in_zone = self.in_zone(qname);
        let Some(key) = key_of(qname) else {
            return if in_zone {
                self.negative(ResponseCode::NXDomain)
            } else {
                Answer::Forward
            };
        };
        if !in_zone {
            return match self.records.get(&key) {
                Some(data) if key.starts_with("arpa.") && !data.is_empty() => self.select(qname, qtype, data),
                _ => Answer::Forward,
            };
        }
        if let Some(rest) = key.strip_prefix(&child(&self.zone_key, "pod")) {
            return self.pod(qname, qtype, rest);
        }
        match self.records.get(&key) {
            Some(data) => self.select(qname, qtype, data),
            None if self.has_descendants(&key) => self.negative(ResponseCode::NoError),
            None => self.negative(ResponseCode::NXDomain),
        }
    }

    /// Pod records `<dashed-ip>.<ns>.pod.<domain>` (CoreDNS `pods insecure`: any
    /// well-formed address answers, without checking that such a pod exists).
    /// `rest` is the key below `pod.<domain>`.
    fn pod(&self, qname: &Name, qtype: RecordType, rest: &str) -> Answer {
        let labels: Vec<&str> = rest
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
            .collect();
        match labels.as_slice() {
            [] | [_] => self.negative(ResponseCode::NoError),
            [_, ip] => match undashed(ip) {
                Some(ip) => self.select(qname, qtype, &[address_rdata(ip)]),
                None => self.negative(ResponseCode::NXDomain),
            },
            _ => self.negative(ResponseCode::NXDomain),
        }
    }

    fn has_descendants(&self, key: &str) -> bool {
        self.records
            .range::<str, _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.starts_with(key))
    }

    fn select(&self, qname: &Name, qtype: RecordType, data: &[RData]) -> Answer {
        let record = |d: &RData| Record::from_rdata(qname.clone(), self.zone.ttl, d.clone());
        let chase = qtype != RecordType::CNAME && qtype != RecordType::ANY;
        if chase && let Some(RData::CNAME(target)) = data.iter().find(|d| matches!(d, RData::CNAME(_))) {
            return Answer::Zone(Box::new(ZoneAnswer {
                rcode: ResponseCode::NoError,
                answers: vec![record(&RData::CNAME(target.clone()))],
                soa: None,
                cname_target: Some(target.0.clone()),
            }));
        }
        let answers: Vec<Record> = data
            .iter()
            .filter(|d| qtype == RecordType::ANY || d.record_type() == qtype)
            .map(record)
            .collect();
        if answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        Answer::Zone(Box::new(ZoneAnswer {
            rcode: ResponseCode::NoError,
            answers,
            soa: None,
            cname_target: None,
        }))
    }

    fn negative(&self, rcode: ResponseCode) -> Answer {
        Answer::Zone(Box::new(ZoneAnswer {
            rcode,
            answers: Vec::new(),
            soa: Some(self.soa()),
            cname_target: None,
        }))
    }

    /// Number of names the snapshot defines (for logging).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the snapshot defines no names (never true: the apex always exists).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> ZoneConfig {
        ZoneConfig::new("cluster.local", 30, "10.43.0.10".parse().unwrap()).unwrap()
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn fixture() -> Snapshot {
        let services = vec![
            svc(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.43.1.2", "clusterIPs": ["10.43.1.2", "fd00::12"],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                   {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "data"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}})),
            svc(json!({"metadata": {"name": "alias", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})),
            svc(json!({"metadata": {"name": "single", "namespace": "default"},
                "spec": {"clusterIP": "10.43.1.3", "ports": [{"port": 8080}]}})),
        ];
        let slices = vec![slice(json!({
            "metadata": {"name": "db-abc", "namespace": "data", "labels": {SERVICE_NAME_LABEL: "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "conditions": {}},
                {"addresses": ["10.42.0.7"], "hostname": "db-2", "conditions": {"ready": false}},
            ],
        }))];
        Snapshot::build(&zone(), &services, &slices, 7)
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// (rcode, sorted rendered answers, has SOA); `None` for [`Answer::Forward`].
    type Row = Option<(ResponseCode, Vec<String>, bool)>;

    fn ask(snap: &Snapshot, q: &str, t: RecordType) -> Row {
        match snap.lookup(&name(q), t) {
            Answer::Forward => None,
            Answer::Zone(a) => {
                let mut data: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
                data.sort();
                for r in &a.answers {
                    assert_eq!(r.ttl, 30);
                    assert_eq!(r.name, name(q), "answers are owned by the question name");
                }
                Some((a.rcode, data, a.soa.is_some()))
            }
        }
    }

    #[test]
    fn table() {
        use RecordType::*;
        let snap = fixture();
        let ok = ResponseCode::NoError;
        let nx = ResponseCode::NXDomain;
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: Vec<(&str, RecordType, Row)> = vec![
            // ClusterIP services.
            (
                "web.default.svc.cluster.local.",
                A,
                Some((ok, s(&["10.43.1.2"]), false)),
            ),
            (
                "WEB.Default.svc.cluster.local.",
                A,
                Some((ok, s(&["10.43.1.2"]), false)),
            ),
            (
                "web.default.svc.cluster.local.",
                AAAA,
                Some((ok, s(&["fd00::12"]), false)),
            ),
            ("single.default.svc.cluster.local.", AAAA, Some((ok, vec![], true))),
            ("web.default.svc.cluster.local.", TXT, Some((ok, vec![], true))),
            (
                "_http._tcp.web.default.svc.cluster.local.",
                SRV,
                Some((ok, s(&["0 100 80 web.default.svc.cluster.local."]), false)),
            ),
            (
                "_dns._udp.web.default.svc.cluster.local.",
                SRV,
                Some((ok, s(&["0 100 53 web.default.svc.cluster.local."]), false)),
            ),
            (
                "_dns._tcp.web.default.svc.cluster.local.",
                SRV,
                Some((nx, vec![], true)),
            ),
            ("_tcp.web.default.svc.cluster.local.", SRV, Some((ok, vec![], true))),
            (
                "web.default.svc.cluster.local.",
                SRV,
                Some((
                    ok,
                    s(&[
                        "0 50 53 web.default.svc.cluster.local.",
                        "0 50 80 web.default.svc.cluster.local.",
                    ]),
                    false,
                )),
            ),
            (
                "single.default.svc.cluster.local.",
                SRV,
                Some((ok, s(&["0 100 8080 single.default.svc.cluster.local."]), false)),
            ),
            // Headless: ready endpoints (and unknown readiness), by hostname or dashed IP.
            (
                "db.data.svc.cluster.local.",
                A,
                Some((ok, s(&["10.42.0.5", "10.42.0.6"]), false)),
            ),
            (
                "db-0.db.data.svc.cluster.local.",
                A,
                Some((ok, s(&["10.42.0.5"]), false)),
            ),
            (
                "10-42-0-6.db.data.svc.cluster.local.",
                A,
                Some((ok, s(&["10.42.0.6"]), false)),
            ),
            ("db-2.db.data.svc.cluster.local.", A, Some((nx, vec![], true))),
            (
                "_pg._tcp.db.data.svc.cluster.local.",
                SRV,
                Some((
                    ok,
                    s(&[
                        "0 50 5432 10-42-0-6.db.data.svc.cluster.local.",
                        "0 50 5432 db-0.db.data.svc.cluster.local.",
                    ]),
                    false,
                )),
            ),
            // ExternalName.
            (
                "ext.default.svc.cluster.local.",
                A,
                Some((ok, s(&["example.com."]), false)),
            ),
            (
                "ext.default.svc.cluster.local.",
                CNAME,
                Some((ok, s(&["example.com."]), false)),
            ),
            // PTR for clusterIPs and headless endpoints; unknown addresses go upstream.
            (
                "2.1.43.10.in-addr.arpa.",
                PTR,
                Some((ok, s(&["web.default.svc.cluster.local."]), false)),
            ),
            (
                "2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                PTR,
                Some((ok, s(&["web.default.svc.cluster.local."]), false)),
            ),
            (
                "5.0.42.10.in-addr.arpa.",
                PTR,
                Some((ok, s(&["db-0.db.data.svc.cluster.local."]), false)),
            ),
            ("7.0.42.10.in-addr.arpa.", PTR, None),
            ("8.8.8.8.in-addr.arpa.", PTR, None),
            // Pods.
            (
                "10-42-0-9.default.pod.cluster.local.",
                A,
                Some((ok, s(&["10.42.0.9"]), false)),
            ),
            (
                "fd00--9.default.pod.cluster.local.",
                AAAA,
                Some((ok, s(&["fd00::9"]), false)),
            ),
            ("10-42-0-9.default.pod.cluster.local.", AAAA, Some((ok, vec![], true))),
            ("not-an-ip.default.pod.cluster.local.", A, Some((nx, vec![], true))),
            ("default.pod.cluster.local.", A, Some((ok, vec![], true))),
            // Zone structure, NXDOMAIN versus NODATA.
            ("dns-version.cluster.local.", TXT, Some((ok, s(&["1.1.0"]), false))),
            ("cluster.local.", NS, Some((ok, s(&["ns.dns.cluster.local."]), false))),
            ("ns.dns.cluster.local.", A, Some((ok, s(&["10.43.0.10"]), false))),
            ("svc.cluster.local.", A, Some((ok, vec![], true))),
            ("default.svc.cluster.local.", A, Some((ok, vec![], true))),
            ("nothere.svc.cluster.local.", A, Some((nx, vec![], true))),
            ("missing.default.svc.cluster.local.", A, Some((nx, vec![], true))),
            ("x.web.default.svc.cluster.local.", A, Some((nx, vec![], true))),
            ("foo.cluster.local.", A, Some((nx, vec![], true))),
            // Outside the zone.
            ("example.com.", A, None),
            ("cluster.local.example.com.", A, None),
        ];
        for (q, t, want) in cases {
            assert_eq!(ask(&snap, q, t), want, "{q} {t}");
        }
    }

    #[test]
    fn soa_is_at_the_apex_with_the_ttl_as_minimum() {
        let snap = fixture();
        let soa = snap.soa();
        assert_eq!(soa.name, name("cluster.local."));
        let RData::SOA(data) = &soa.data else {
            panic!("not a SOA")
        };
        assert_eq!(data.minimum, 30);
        assert_eq!(data.serial, 7);
        assert_eq!(data.mname, name("ns.dns.cluster.local."));
    }

    #[test]
    fn cname_answers_name_the_target_to_chase() {
        let snap = fixture();
        let Answer::Zone(a) = snap.lookup(&name("alias.default.svc.cluster.local."), RecordType::A) else {
            panic!("in zone")
        };
        assert_eq!(a.cname_target, Some(name("web.default.svc.cluster.local.")));
        let Answer::Zone(a) = snap.lookup(&name("ext.default.svc.cluster.local."), RecordType::CNAME) else {
            panic!("in zone")
        };
        assert_eq!(a.cname_target, None, "a CNAME question is answered by the CNAME alone");
    }

    #[test]
    fn publish_not_ready_addresses_publishes_every_endpoint() {
        let services = [svc(json!({"metadata": {"name": "db", "namespace": "data"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}}))];
        let slices = [slice(json!({
            "metadata": {"name": "db-abc", "namespace": "data", "labels": {SERVICE_NAME_LABEL: "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.7"], "hostname": "db-2", "conditions": {"ready": false}}],
        }))];
        let snap = Snapshot::build(&zone(), &services, &slices, 1);
        let got = ask(&snap, "db-2.db.data.svc.cluster.local.", RecordType::A);
        assert_eq!(got, Some((ResponseCode::NoError, vec!["10.42.0.7".into()], false)));
    }

    #[test]
    fn headless_without_endpoints_is_nodata_and_unknown_slices_are_ignored() {
        let services = [svc(json!({"metadata": {"name": "db", "namespace": "data"},
            "spec": {"clusterIP": "None"}}))];
        let slices = [slice(json!({
            "metadata": {"name": "other", "namespace": "data", "labels": {SERVICE_NAME_LABEL: "gone"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.8"]}],
        }))];
        let snap = Snapshot::build(&zone(), &services, &slices, 1);
        let got = ask(&snap, "db.data.svc.cluster.local.", RecordType::A);
        assert_eq!(got, Some((ResponseCode::NoError, vec![], true)));
        assert_eq!(ask(&snap, "8.0.42.10.in-addr.arpa.", RecordType::PTR), None);
    }

    #[test]
    fn domains_are_validated_and_normalised() {
        let z = ZoneConfig::new("Cluster.Local.", 5, "10.43.0.10".parse().unwrap()).unwrap();
        assert_eq!(z.domain, name("cluster.local."));
        assert!(ZoneConfig::new("", 5, "10.43.0.10".parse().unwrap()).is_err());
        assert!(ZoneConfig::new("bad..domain", 5, "10.43.0.10".parse().unwrap()).is_err());
    }

    #[test]
    fn dashed_round_trips() {
        for ip in ["10.42.0.5", "fd00::1", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(undashed(&dashed(ip)), Some(ip));
        }
    }
}
