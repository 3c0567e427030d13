//! The proxy's control loop against the real apiserver (in process, embedded store):
//! Services and EndpointSlices created through the API show up as rules in the table,
//! removing the endpoints turns the Service into a rejected one, and a table deleted
//! behind the proxy's back is restored by the periodic resync.
//!
//! The rules are applied inside a fresh network namespace, so the host is untouched.
//! Needs root, `ip` and `nft`.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use skiff_apiserver::pki::Pki;
use skiff_proxy::{Nft, ProxyConfig};
use tokio_util::sync::CancellationToken;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

async fn apiserver(dir: &std::path::Path, shutdown: CancellationToken) -> kube::Client {
    let pki = Pki::load_or_create(&dir.join("tls")).expect("CA");
    let serving = pki
        .ensure_cert("server", "kube-apiserver", &[], &["127.0.0.1".to_string()])
        .expect("serving cert");
    let admin = pki
        .ensure_cert("admin", "system:admin", &["system:masters"], &[])
        .expect("admin cert");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kubeconfig = dir.join("admin.kubeconfig");
    pki.write_kubeconfig(&kubeconfig, &format!("https://127.0.0.1:{port}"), "admin", &admin)
        .expect("kubeconfig");
    let store: Arc<dyn skiff_store::Store> =
        Arc::new(skiff_store::EmbeddedStore::open(&dir.join("db")).expect("store"));
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
    tokio::spawn(skiff_apiserver::run(config, store, shutdown, ready_tx));
    ready_rx.await.expect("apiserver starts");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// Polls the table until `pred` holds for its listing.
async fn wait_table(nft: &Nft, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = nft.list_table().await.unwrap_or_default();
        if pred(&listed) {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; table:\n{listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_follow_services_and_endpointslices() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "needs root (network namespaces)"
    );
    let ns = Netns(format!("skiff-proxy-sync-{}", std::process::id()));
    let added = Command::new("ip").args(["netns", "add", &ns.0]).output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let client = apiserver(dir.path(), shutdown.clone()).await;

    let nft = Nft::in_netns(&ns.0);
    let mut config = ProxyConfig::new("node-a", Some("10.42.0.0/16".parse().unwrap()));
    config.rules.localhost_nodeports = false; // leaves the host's sysctls alone
    config.min_sync_period = Duration::from_millis(100);
    config.sync_period = Duration::from_secs(1);
    config.nft = nft.clone();
    let proxy = tokio::spawn(skiff_proxy::run(client.clone(), config, shutdown.child_token()));

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();

    // No slice yet: rejected.
    let reject = format!("{cluster_ip} . tcp . 80 : goto reject-chain");
    wait_table(&nft, "the reject entry", |t| t.contains(&reject)).await;

    // A slice with a ready endpoint: DNAT to its resolved named port.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "node-a"}],
    }))
    .unwrap();
    slices.create(&PostParams::default(), &slice).await.unwrap();
    let listed = wait_table(&nft, "the DNAT rule", |t| t.contains("dnat to 10.42.0.5:8080")).await;
    assert!(
        listed.contains(&format!("{cluster_ip} . tcp . 80 : goto svc-default/web/tcp/http")),
        "{listed}"
    );
    assert!(!listed.contains(&reject), "{listed}");

    // The slice goes away: rejected again.
    slices.delete("web-abc", &DeleteParams::default()).await.unwrap();
    wait_table(&nft, "the reject entry after the slice is deleted", |t| {
        t.contains(&reject) && !t.contains("dnat to 10.42.0.5:8080")
    })
    .await;

    // Someone deletes the table: the periodic resync restores it.
    nft.delete_table().await.unwrap();
    wait_table(&nft, "the table to be restored", |t| t.contains(&reject)).await;

    // The Service is deleted: no rule mentions it any more.
    services.delete("web", &DeleteParams::default()).await.unwrap();
    wait_table(&nft, "the Service's rules to go", |t| {
        !t.is_empty() && !t.contains(&cluster_ip)
    })
    .await;

    shutdown.cancel();
    proxy.await.unwrap().expect("the proxy stops cleanly");
}
