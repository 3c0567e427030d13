//! The hickory [`RequestHandler`]: answers questions in the cluster domain from the
//! current [`Snapshot`], chases CNAMEs of ExternalName Services, and forwards every
//! other question upstream. Truncation of UDP answers (TC bit) to the client's
//! advertised payload size, or 512 bytes without EDNS (RFC 1035, RFC 6891), is done
//! by hickory's response encoder.

use std::sync::Arc;

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::watch;

use crate::forward::Forwarder;
use crate::records::{Answer, Snapshot, ZoneConfig};

/// The largest UDP payload this server answers with, whatever the client advertises.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// How many CNAMEs are followed inside one answer before giving up (CoreDNS stops
/// after a similar small number; a longer chain is almost always a loop).
const MAX_CNAME_CHAIN: usize = 8;

/// The cluster DNS request handler.
///
/// Until the first snapshot is published (the reflectors have not listed Services
/// and EndpointSlices yet) questions in the cluster domain get SERVFAIL, so that
/// clients retry instead of caching a wrong NXDOMAIN.
pub struct ClusterDnsHandler {
    zone: ZoneConfig,
    snapshot: watch::Receiver<Option<Arc<Snapshot>>>,
    forwarder: Option<Forwarder>,
}

/// A response before encoding.
struct Reply {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn new(request: &Metadata, rcode: ResponseCode) -> Self {
        let mut metadata = Metadata::response_from_request(request);
        metadata.response_code = rcode;
        Self {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

impl ClusterDnsHandler {
    /// A handler answering from the snapshots published on `snapshot` and
    /// forwarding through `forwarder` (`None`: questions outside the cluster domain
    /// are REFUSED, as a CoreDNS without a matching server block answers).
    pub fn new(
        zone: ZoneConfig,
        snapshot: watch::Receiver<Option<Arc<Snapshot>>>,
        forwarder: Option<Forwarder>,
    ) -> Self {
        Self {
            zone,
            snapshot,
            forwarder,
        }
    }

    /// Answers a parsed request; `dnssec_ok` is the client's EDNS DO bit.
    async fn resolve(&self, request: &Metadata, queries: &[Query], dnssec_ok: bool) -> Reply {
        if request.op_code != OpCode::Query {
            return Reply::new(request, ResponseCode::NotImp);
        }
        let [query] = queries else {
            return Reply::new(request, ResponseCode::FormErr);
        };
        let mut reply = self.answer(request, query, dnssec_ok).await;
        reply.metadata.recursion_available = self.forwarder.is_some();
        reply
    }

    async fn answer(&self, request: &Metadata, query: &Query, dnssec_ok: bool) -> Reply {
        let name = query.name();
        let snapshot = self.snapshot.borrow().clone();
        let in_zone = self.zone.domain.zone_of(&name.to_lowercase());
        if query.query_class() != DNSClass::IN {
            if in_zone {
                return Reply::new(request, ResponseCode::Refused);
            }
            return self.forward(request, query, dnssec_ok).await;
        }
        let answer = match &snapshot {
            Some(snapshot) => snapshot.lookup(name, query.query_type()),
            None if in_zone => return Reply::new(request, ResponseCode::ServFail),
            None => Answer::Forward,
        };
        let Answer::Zone(zone_answer) = answer else {
            return self.forward(request, query, dnssec_ok).await;
        };
        let snapshot = snapshot.expect("zone answers come from a snapshot");
        let mut reply = Reply::new(request, zone_answer.rcode);
        reply.metadata.authoritative = true;
        reply.answers = zone_answer.answers;
        reply.authorities.extend(zone_answer.soa);
        let mut target = zone_answer.cname_target;
        let mut seen: Vec<Name> = vec![name.to_lowercase()];
        while let Some(next) = target.take() {
            if seen.contains(&next.to_lowercase()) || seen.len() > MAX_CNAME_CHAIN {
                break;
            }
            seen.push(next.to_lowercase());
            match snapshot.lookup(&next, query.query_type()) {
                Answer::Zone(more) => {
                    reply.metadata.response_code = more.rcode;
                    reply.answers.extend(more.answers);
                    reply.authorities = more.soa.into_iter().collect();
                    target = more.cname_target;
                }
                Answer::Forward => {
                    let Some(forwarder) = &self.forwarder else { break };
                    let chased = Query::query(next, query.query_type());
                    match forwarder
                        .forward(&chased, true, request.checking_disabled, dnssec_ok)
                        .await
                    {
                        Ok(upstream) => {
                            reply.metadata.response_code = upstream.metadata.response_code;
                            reply.answers.extend(upstream.answers);
                            reply.authorities = upstream.authorities;
                        }
                        // The CNAME alone is still a correct answer; the client may chase it.
                        Err(e) => tracing::debug!(error = %e, "chasing an ExternalName target failed"),
                    }
                }
            }
        }
        reply
    }

    async fn forward(&self, request: &Metadata, query: &Query, dnssec_ok: bool) -> Reply {
        let Some(forwarder) = &self.forwarder else {
            return Reply::new(request, ResponseCode::Refused);
        };
        match forwarder
            .forward(query, request.recursion_desired, request.checking_disabled, dnssec_ok)
            .await
        {
            Ok(upstream) => relay(request, upstream),
            Err(e) => {
                tracing::debug!(error = %e, name = %query.name(), "no upstream answered");
                Reply::new(request, ResponseCode::ServFail)
            }
        }
    }
}

/// The client's reply carrying an upstream answer: its response code, flags and
/// sections (the upstream's OPT record is replaced by this server's own).
fn relay(request: &Metadata, upstream: Message) -> Reply {
    let mut reply = Reply::new(request, upstream.metadata.response_code);
    reply.metadata.authoritative = upstream.metadata.authoritative;
    reply.metadata.authentic_data = upstream.metadata.authentic_data;
    reply.metadata.truncation = upstream.metadata.truncation;
    reply.answers = upstream.answers;
    reply.authorities = upstream.authorities;
    reply.additionals = upstream.additionals;
    reply
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let queries: Vec<Query> = request.queries.queries().iter().map(|q| q.original().clone()).collect();
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let reply = self.resolve(&request.metadata, &queries, dnssec_ok).await;
        // Answer EDNS with EDNS; the payload size bounds UDP answers (hickory sets TC
        // when the records do not fit).
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(request.max_payload().min(MAX_UDP_PAYLOAD));
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            reply.metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(error = %e, "sending a DNS response failed");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::MessageType;
    use hickory_proto::rr::RecordType;
    use k8s_openapi::api::core::v1::Service;

    fn handler(forwarder: Option<Forwarder>, synced: bool) -> ClusterDnsHandler {
        let zone = ZoneConfig::new("cluster.local", 30, "10.43.0.10".parse().unwrap()).unwrap();
        let services: Vec<Service> = vec![
            serde_json::from_value(serde_json::json!({"metadata": {"name": "a", "namespace": "ns"},
                "spec": {"type": "ExternalName", "externalName": "b.ns.svc.cluster.local"}}))
            .unwrap(),
            serde_json::from_value(serde_json::json!({"metadata": {"name": "b", "namespace": "ns"},
                "spec": {"clusterIP": "10.43.0.20"}}))
            .unwrap(),
            serde_json::from_value(serde_json::json!({"metadata": {"name": "loop", "namespace": "ns"},
                "spec": {"type": "ExternalName", "externalName": "loop.ns.svc.cluster.local"}}))
            .unwrap(),
        ];
        let snapshot = synced.then(|| Arc::new(Snapshot::build(&zone, &services, [], 1)));
        let (tx, rx) = watch::channel(snapshot);
        std::mem::forget(tx);
        ClusterDnsHandler::new(zone, rx, forwarder)
    }

    fn query(name: &str, t: RecordType) -> (Metadata, Vec<Query>) {
        let mut meta = Metadata::new(7, MessageType::Query, OpCode::Query);
        meta.recursion_desired = true;
        (meta, vec![Query::query(Name::from_ascii(name).unwrap(), t)])
    }

    #[tokio::test]
    async fn in_zone_cname_chains_are_followed() {
        let h = handler(None, true);
        let (m, q) = query("a.ns.svc.cluster.local.", RecordType::A);
        let r = h.resolve(&m, &q, false).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        let data: Vec<String> = r.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(data, ["b.ns.svc.cluster.local.", "10.43.0.20"]);
    }

    #[tokio::test]
    async fn cname_loops_end() {
        let h = handler(None, true);
        let (m, q) = query("loop.ns.svc.cluster.local.", RecordType::A);
        let r = h.resolve(&m, &q, false).await;
        assert_eq!(r.answers.len(), 1);
    }

    #[tokio::test]
    async fn without_upstream_outside_names_are_refused() {
        let h = handler(None, true);
        let (m, q) = query("example.com.", RecordType::A);
        let r = h.resolve(&m, &q, false).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert!(!r.metadata.recursion_available);
    }

    #[tokio::test]
    async fn unreachable_upstreams_are_servfail() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let forwarder = Forwarder::new(
            vec![silent.local_addr().unwrap()],
            std::time::Duration::from_millis(200),
        );
        let h = handler(forwarder, true);
        let (m, q) = query("example.com.", RecordType::A);
        let r = h.resolve(&m, &q, false).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert!(r.metadata.recursion_available);
    }

    #[tokio::test]
    async fn before_the_first_sync_the_zone_is_servfail() {
        let h = handler(None, false);
        let (m, q) = query("b.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(
            h.resolve(&m, &q, false).await.metadata.response_code,
            ResponseCode::ServFail
        );
    }

    #[tokio::test]
    async fn only_single_standard_queries_are_served() {
        let h = handler(None, true);
        let (mut m, q) = query("b.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(
            h.resolve(&m, &[], false).await.metadata.response_code,
            ResponseCode::FormErr
        );
        m.op_code = OpCode::Update;
        assert_eq!(
            h.resolve(&m, &q, false).await.metadata.response_code,
            ResponseCode::NotImp
        );
    }
}
