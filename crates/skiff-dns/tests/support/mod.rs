//! An in-process control plane for integration tests (the real apiserver on a free
//! loopback port with an embedded store in a temp dir, as `skiff server` wires it),
//! a minimal DNS client, and a fake upstream resolver.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use skiff_apiserver::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A running apiserver; stopped on drop.
pub struct ControlPlane {
    pub client: kube::Client,
    pub shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A loopback port that is free for both TCP and UDP (at the time of asking).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn client_from(path: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("client config");
    kube::Client::try_from(cfg).expect("client")
}

impl ControlPlane {
    /// Starts the apiserver and returns once it serves.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let pki = Pki::load_or_create(&tls).expect("CA");
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let serving = pki
            .ensure_cert("server", "kube-apiserver", &[], &sans)
            .expect("serving cert");
        let admin = pki
            .ensure_cert("admin", "system:admin", &["system:masters"], &[])
            .expect("admin cert");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        pki.write_kubeconfig(&kubeconfig, &url, "system:admin", &admin)
            .expect("kubeconfig");
        let store: Arc<dyn skiff_store::Store> =
            Arc::new(skiff_store::EmbeddedStore::open(&dir.path().join("db")).expect("store"));
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let config = skiff_apiserver::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            advertise: format!("127.0.0.1:{port}"),
            serving_cert_pem: serving.cert_pem.clone(),
            serving_key_pem: serving.key_pem.clone(),
            client_ca_pem: pki.ca_pem.clone(),
            kubelet_client_cert_pem: admin.cert_pem.clone(),
            kubelet_client_key_pem: admin.key_pem.clone(),
            service_network: Default::default(),
            service_account_key_pem: pki.ensure_service_account_key().unwrap(),
            metrics: Default::default(),
        };
        tokio::spawn(skiff_apiserver::run(config, store, shutdown.clone(), ready_tx));
        ready_rx.await.expect("apiserver starts");
        let client = client_from(&kubeconfig).await;
        Self {
            client,
            shutdown,
            _dir: dir,
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn question(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
    if let Some(payload) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        m.set_edns(e);
    }
    m
}

/// Asks `server` over UDP; `edns` is the advertised payload size (`None`: no EDNS).
pub async fn udp(server: SocketAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let q = question(name, qtype, edns);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&q.to_vec().expect("encode"), server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("recv");
    let answer = Message::from_vec(&buf[..n]).expect("decode");
    assert_eq!(answer.metadata.id, q.metadata.id);
    answer
}

/// Asks `server` over TCP.
pub async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let q = question(name, qtype, None);
    let bytes = q.to_vec().expect("encode");
    let mut stream = tokio::net::TcpStream::connect(server).await.expect("connect");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.expect("read");
    Message::from_vec(&buf).expect("decode")
}

/// The answer section rendered as strings, sorted.
pub fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// A UDP resolver on loopback that answers A questions for names under
/// `example.org.` with 192.0.2.1 and NXDOMAIN for everything else.
pub async fn fake_upstream() -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.queries = q.queries.clone();
            let query = &q.queries[0];
            let example = Name::from_ascii("example.org.").expect("name");
            if example.zone_of(&query.name().to_lowercase()) && query.query_type() == RecordType::A {
                r.answers.push(Record::from_rdata(
                    query.name().clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
                ));
            } else {
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            let _ = sock.send_to(&r.to_vec().expect("encode"), from).await;
        }
    });
    addr
}
