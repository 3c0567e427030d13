//! Forwarding of names outside the cluster domain to the host's resolvers, as the
//! default CoreDNS Corefile does with `forward . /etc/resolv.conf`: the question is
//! sent as a fresh query (new ID) over UDP to each upstream in the order
//! `resolv.conf` lists them, retried over TCP when the answer is truncated, and the
//! first answer that matches the question is relayed whatever its response code.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::Error;

/// How long one upstream gets to answer one attempt (resolv.conf's default `timeout:`
/// is 5 s; a cluster resolver answers its clients sooner, CoreDNS uses 2 s per try).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The UDP payload size advertised to upstreams (the DNS Flag Day 2020 value).
const UPSTREAM_UDP_PAYLOAD: u16 = 1232;

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Sending to or receiving from an upstream failed.
    #[error("upstream {upstream}: {source}")]
    Io {
        /// The upstream that failed.
        upstream: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// An upstream did not answer in time.
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    Timeout {
        /// The upstream that timed out.
        upstream: SocketAddr,
        /// The per-attempt timeout.
        timeout: Duration,
    },
    /// An upstream's answer could not be decoded or did not match the question.
    #[error("upstream {upstream} sent a malformed answer: {reason}")]
    Malformed {
        /// The upstream that answered.
        upstream: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// The question could not be encoded.
    #[error("encoding the forwarded query")]
    Encode(#[source] hickory_proto::ProtoError),
}

/// The upstream resolvers and how long each may take.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

/// The `nameserver` addresses of a resolv.conf(5) text, in order. Entries that are
/// not IP addresses are skipped; a link-local IPv6 zone suffix (`%eth0`) is dropped.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|line| line.split(['#', ';']).next().unwrap_or_default())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|addr| addr.split('%').next().and_then(|a| a.parse().ok()))
        .collect()
}

/// The upstreams (port 53) named by the resolv.conf at `path`, minus any that would
/// send queries back to this server (`avoid`, e.g. its own listen address and the
/// cluster DNS Service address; CoreDNS detects such loops at run time with its
/// `loop` plugin, here they are left out up front).
///
/// Errors: [`Error::ResolvConf`] if the file cannot be read. A missing file yields
/// no upstreams, as CoreDNS treats an empty resolv.conf.
pub fn upstreams_from_resolv_conf(path: &Path, avoid: &[SocketAddr]) -> Result<Vec<SocketAddr>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(Error::ResolvConf {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(without_loops(
        parse_resolv_conf(&text).into_iter().map(|ip| SocketAddr::new(ip, 53)),
        avoid,
    ))
}

/// Drops upstreams that are one of `avoid` (queries to them would loop back here;
/// an `avoid` entry with an unspecified IP, a wildcard listen address, also covers
/// every loopback address on its port), upstreams with an unspecified address, and
/// duplicates.
pub fn without_loops(upstreams: impl IntoIterator<Item = SocketAddr>, avoid: &[SocketAddr]) -> Vec<SocketAddr> {
    let loops = |up: &SocketAddr| {
        avoid
            .iter()
            .any(|a| a == up || (a.ip().is_unspecified() && a.port() == up.port() && up.ip().is_loopback()))
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for up in upstreams {
        if up.ip().is_unspecified() || loops(&up) || out.contains(&up) {
            continue;
        }
        out.push(up);
    }
    out
}

impl Forwarder {
    /// A forwarder over `upstreams` (tried in order), each attempt bounded by `timeout`.
    /// Returns `None` when there is no upstream: such questions are refused.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Option<Self> {
        (!upstreams.is_empty()).then_some(Self { upstreams, timeout })
    }

    /// The upstreams, in the order they are tried.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Asks the upstreams `query` and returns the first matching answer (any response
    /// code). `recursion_desired` and `checking_disabled` are copied from the client;
    /// `dnssec_ok` sets the EDNS DO bit.
    ///
    /// Errors: the last [`ForwardError`] when no upstream answered.
    pub async fn forward(
        &self,
        query: &Query,
        recursion_desired: bool,
        checking_disabled: bool,
        dnssec_ok: bool,
    ) -> Result<Message, ForwardError> {
        let mut message = Message::query();
        message.metadata.recursion_desired = recursion_desired;
        message.metadata.checking_disabled = checking_disabled;
        message.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(UPSTREAM_UDP_PAYLOAD);
        edns.set_dnssec_ok(dnssec_ok);
        message.set_edns(edns);
        let bytes = message.to_vec().map_err(ForwardError::Encode)?;
        let mut last = None;
        for &upstream in &self.upstreams {
            match self.exchange(upstream, &message, &bytes).await {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    tracing::debug!(error = %e, "forwarding failed");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("a forwarder has at least one upstream"))
    }

    async fn exchange(&self, upstream: SocketAddr, query: &Message, bytes: &[u8]) -> Result<Message, ForwardError> {
        let timeout = self.timeout;
        let timed_out = |_| ForwardError::Timeout { upstream, timeout };
        let answer = tokio::time::timeout(timeout, udp_exchange(upstream, query, bytes))
            .await
            .map_err(timed_out)??;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        tokio::time::timeout(timeout, tcp_exchange(upstream, query, bytes))
            .await
            .map_err(timed_out)?
    }
}

/// Checks that `raw` answers `query` (same ID, a response, the same question).
fn matching_answer(upstream: SocketAddr, query: &Message, raw: &[u8]) -> Result<Option<Message>, ForwardError> {
    let Ok(answer) = Message::from_vec(raw) else {
        return Ok(None);
    };
    if answer.metadata.id != query.metadata.id || answer.metadata.message_type != MessageType::Response {
        return Ok(None);
    }
    let same_question = answer.metadata.op_code == OpCode::Query
        && answer.queries.len() == query.queries.len()
        && answer.queries.iter().zip(&query.queries).all(|(a, q)| {
            a.name().eq_ignore_root(q.name()) && a.query_type() == q.query_type() && a.query_class() == q.query_class()
        });
    if !same_question {
        return Err(ForwardError::Malformed {
            upstream,
            reason: "the answer is for another question".into(),
        });
    }
    Ok(Some(answer))
}

async fn udp_exchange(upstream: SocketAddr, query: &Message, bytes: &[u8]) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        // Datagrams that are not the answer (stale or spoofed) are ignored.
        let n = socket.recv(&mut buf).await.map_err(io)?;
        if let Some(answer) = matching_answer(upstream, query, &buf[..n])? {
            return Ok(answer);
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, query: &Message, bytes: &[u8]) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| ForwardError::Malformed {
        upstream,
        reason: "query too long".into(),
    })?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.map_err(io)?;
    matching_answer(upstream, query, &buf)?.ok_or_else(|| ForwardError::Malformed {
        upstream,
        reason: "the TCP answer does not match the query".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2 # primary\nnameserver fe80::1%eth0\n\
                    nameserver not-an-ip\n;nameserver 10.0.0.9\noptions ndots:5\nnameserver 2001:db8::53\n";
        let got: Vec<String> = parse_resolv_conf(text).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.2", "fe80::1", "2001:db8::53"]);
    }

    #[test]
    fn loops_to_ourselves_are_skipped() {
        let ups = [
            "10.0.0.2:53",
            "10.43.0.10:53",
            "0.0.0.0:53",
            "10.0.0.2:53",
            "192.168.1.5:53",
        ]
        .map(|s| s.parse::<SocketAddr>().unwrap());
        let avoid = ["10.43.0.10:53", "192.168.1.5:53"].map(|s| s.parse::<SocketAddr>().unwrap());
        assert_eq!(
            without_loops(ups, &avoid),
            vec!["10.0.0.2:53".parse::<SocketAddr>().unwrap()]
        );
        let wildcard = ["0.0.0.0:53".parse::<SocketAddr>().unwrap()];
        let ups = ["127.0.0.1:53", "127.0.0.53:53", "127.0.0.1:5353", "10.0.0.2:53"].map(|s| s.parse().unwrap());
        let kept: Vec<String> = without_loops(ups, &wildcard).iter().map(ToString::to_string).collect();
        assert_eq!(kept, ["127.0.0.1:5353", "10.0.0.2:53"]);
    }

    /// An upstream that answers over UDP with the TC bit and no records, and over
    /// TCP (same port) with the full answer; also relays its NXDOMAIN unchanged.
    #[tokio::test]
    async fn truncated_udp_answers_are_retried_over_tcp() {
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{Name, RData, Record, RecordType};

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).await.unwrap();
        let answer = |q: &Message, full: bool| {
            let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            r.queries = q.queries.clone();
            if q.queries[0].name().to_ascii() != "big.example." {
                r.metadata.response_code = ResponseCode::NXDomain;
            } else if full {
                for i in 0..200u8 {
                    let data = RData::A(A([192, 0, 2, i].into()));
                    r.answers
                        .push(Record::from_rdata(q.queries[0].name().clone(), 60, data));
                }
            } else {
                r.metadata.truncation = true;
            }
            r.to_vec().unwrap()
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = udp.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                udp.send_to(&answer(&q, false), from).await.unwrap();
            }
        });
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.unwrap();
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut buf).await.unwrap();
                let bytes = answer(&Message::from_vec(&buf).unwrap(), true);
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                s.write_all(&framed).await.unwrap();
            }
        });
        let f = Forwarder::new(vec![addr], Duration::from_secs(5)).unwrap();
        let q = Query::query(Name::from_ascii("big.example.").unwrap(), RecordType::A);
        let got = f.forward(&q, true, false, false).await.unwrap();
        assert!(!got.metadata.truncation);
        assert_eq!(got.answers.len(), 200);
        let q = Query::query(Name::from_ascii("other.example.").unwrap(), RecordType::A);
        let got = f.forward(&q, true, false, false).await.unwrap();
        assert_eq!(got.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn missing_resolv_conf_means_no_upstream() {
        let ups = upstreams_from_resolv_conf(Path::new("/nonexistent/resolv.conf"), &[]).unwrap();
        assert!(ups.is_empty());
        assert!(Forwarder::new(ups, DEFAULT_UPSTREAM_TIMEOUT).is_none());
    }
}
