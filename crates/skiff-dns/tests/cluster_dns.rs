//! The DNS server against a real apiserver: objects created through kube-rs become
//! answers on a loopback port, over UDP and TCP.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use skiff_dns::registration::Registration;
use skiff_dns::{Config, Upstream};
use support::{ControlPlane, data, eventually, fake_upstream, tcp, udp};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

async fn create_service(client: &kube::Client, ns: &str, body: serde_json::Value) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(body).expect("a Service"),
    )
    .await
    .expect("create Service")
}

async fn create_slice(client: &kube::Client, ns: &str, body: serde_json::Value) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &serde_json::from_value(body).expect("a slice"))
        .await
        .expect("create EndpointSlice");
}

/// Waits until `name`/`qtype` over UDP has the response code `rcode` and answers `want`.
async fn expect(dns: SocketAddr, name: &str, qtype: RecordType, rcode: ResponseCode, want: &[&str]) -> Message {
    eventually(&format!("{name} {qtype} = {rcode:?} {want:?}"), WAIT, || async move {
        let m = udp(dns, name, qtype, Some(1232)).await;
        (m.metadata.response_code == rcode && data(&m) == want).then_some(m)
    })
    .await
}

fn has_soa(m: &Message) -> bool {
    m.authorities.iter().any(|r| matches!(r.data, RData::SOA(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_services_endpoints_pods_and_forwards_the_rest() {
    let cp = ControlPlane::start().await;
    let client = cp.client.clone();
    let port = support::free_port();
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let upstream = fake_upstream().await;
    let mut config = Config::new(dns, "10.43.0.10".parse().unwrap());
    config.upstream = Upstream::Servers(vec![upstream]);
    config.registration = Some(Registration {
        node_name: "node-a".into(),
        address: dns,
    });
    let stop = CancellationToken::new();
    let server = tokio::spawn(skiff_dns::run(client.clone(), config, stop.clone()));

    // A ClusterIP Service: A, SRV per named port, PTR.
    let web = create_service(
        &client,
        "default",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
    )
    .await;
    let ip = web.spec.unwrap().cluster_ip.unwrap();
    let m = expect(
        dns,
        "web.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NoError,
        &[&ip],
    )
    .await;
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 30);
    expect(
        dns,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        ResponseCode::NoError,
        &["0 100 80 web.default.svc.cluster.local."],
    )
    .await;
    let o: Vec<&str> = ip.split('.').collect();
    let reverse = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
    expect(
        dns,
        &reverse,
        RecordType::PTR,
        ResponseCode::NoError,
        &["web.default.svc.cluster.local."],
    )
    .await;

    // NODATA and NXDOMAIN carry the zone's SOA.
    let m = udp(dns, "web.default.svc.cluster.local.", RecordType::AAAA, Some(1232)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && has_soa(&m), "NODATA: {m:?}");
    let m = udp(dns, "missing.default.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(has_soa(&m), "NXDOMAIN with SOA: {m:?}");
    expect(
        dns,
        "dns-version.cluster.local.",
        RecordType::TXT,
        ResponseCode::NoError,
        &["1.1.0"],
    )
    .await;
    expect(
        dns,
        "10-42-0-9.default.pod.cluster.local.",
        RecordType::A,
        ResponseCode::NoError,
        &["10.42.0.9"],
    )
    .await;

    // A headless Service with endpoints written directly.
    create_service(
        &client,
        "default",
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    create_slice(
        &client,
        "default",
        json!({"metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"], "hostname": "db-1", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.7"], "hostname": "db-2", "conditions": {"ready": false}},
        ]}),
    )
    .await;
    expect(
        dns,
        "db.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NoError,
        &["10.42.0.5", "10.42.0.6"],
    )
    .await;
    expect(
        dns,
        "db-1.db.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NoError,
        &["10.42.0.6"],
    )
    .await;
    expect(
        dns,
        "db-2.db.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NXDomain,
        &[],
    )
    .await;
    expect(
        dns,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
        ResponseCode::NoError,
        &[
            "0 50 5432 db-0.db.default.svc.cluster.local.",
            "0 50 5432 db-1.db.default.svc.cluster.local.",
        ],
    )
    .await;
    expect(
        dns,
        "5.0.42.10.in-addr.arpa.",
        RecordType::PTR,
        ResponseCode::NoError,
        &["db-0.db.default.svc.cluster.local."],
    )
    .await;

    // ExternalName: a CNAME, with the target resolved upstream.
    create_service(
        &client,
        "default",
        json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "www.example.org"}}),
    )
    .await;
    expect(
        dns,
        "ext.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NoError,
        &["192.0.2.1", "www.example.org."],
    )
    .await;
    expect(
        dns,
        "ext.default.svc.cluster.local.",
        RecordType::CNAME,
        ResponseCode::NoError,
        &["www.example.org."],
    )
    .await;

    // Names outside the cluster domain go upstream, response codes included.
    let m = expect(
        dns,
        "www.example.org.",
        RecordType::A,
        ResponseCode::NoError,
        &["192.0.2.1"],
    )
    .await;
    assert!(m.metadata.recursion_available && !m.metadata.authoritative);
    expect(dns, "nothing.invalid.", RecordType::A, ResponseCode::NXDomain, &[]).await;

    // TCP, and truncation of UDP answers that do not fit.
    let m = tcp(dns, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&m), [ip.as_str()]);
    let endpoints: Vec<serde_json::Value> = (1..=120)
        .map(|i| json!({"addresses": [format!("10.42.1.{i}")], "conditions": {"ready": true}}))
        .collect();
    create_service(
        &client,
        "default",
        json!({"metadata": {"name": "big"}, "spec": {"clusterIP": "None"}}),
    )
    .await;
    create_slice(
        &client,
        "default",
        json!({"metadata": {"name": "big-1", "labels": {"kubernetes.io/service-name": "big"}},
            "addressType": "IPv4", "endpoints": endpoints}),
    )
    .await;
    let full = eventually("120 addresses over TCP", WAIT, || async {
        let m = tcp(dns, "big.default.svc.cluster.local.", RecordType::A).await;
        (m.answers.len() == 120).then_some(m)
    })
    .await;
    assert!(!full.metadata.truncation);
    let m = udp(dns, "big.default.svc.cluster.local.", RecordType::A, None).await;
    assert!(m.metadata.truncation, "a 512-byte UDP answer is truncated");
    assert!(m.answers.len() < 120);

    // Deleting a Service removes its names.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    expect(
        dns,
        "web.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NXDomain,
        &[],
    )
    .await;

    // The kube-dns Service and this server's endpoint are registered.
    let kube_dns: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let svc = eventually("kube-system/kube-dns", WAIT, || async {
        kube_dns.get_opt("kube-dns").await.ok().flatten()
    })
    .await;
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
    assert!(spec.selector.is_none());
    assert_eq!(svc.metadata.labels.unwrap()["k8s-app"], "kube-dns");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let slice = eventually("the DNS EndpointSlice", WAIT, || async {
        slices.get_opt("kube-dns-node-a").await.ok().flatten()
    })
    .await;
    assert_eq!(slice.endpoints[0].addresses, ["127.0.0.1"]);
    assert_eq!(slice.ports.unwrap()[0].port, Some(i32::from(port)));
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "kube-system");
    let ep = eventually("the DNS Endpoints", WAIT, || async {
        eps.get_opt("kube-dns")
            .await
            .ok()
            .flatten()
            .filter(|e| e.subsets.is_some())
    })
    .await;
    assert_eq!(ep.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].ip, "127.0.0.1");

    // The registration is idempotent: a second pass changes nothing.
    let before = slices.get("kube-dns-node-a").await.unwrap().metadata.resource_version;
    skiff_dns::registration::ensure(
        &client,
        "10.43.0.10".parse().unwrap(),
        &Registration {
            node_name: "node-a".into(),
            address: dns,
        },
    )
    .await
    .expect("a second registration pass");
    let after = slices.get("kube-dns-node-a").await.unwrap().metadata.resource_version;
    assert_eq!(before, after);

    // Shutting down withdraws the endpoint.
    stop.cancel();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the server stops")
        .expect("no panic")
        .expect("a clean stop");
    assert!(slices.get_opt("kube-dns-node-a").await.unwrap().is_none());
}
