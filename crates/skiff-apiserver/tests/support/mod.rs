//! The apiserver integration tests' harness: a real apiserver on a free loopback
//! port with a temporary embedded store (or a given one), and a `kube` client with an admin
//! certificate.

use std::sync::Arc;

use skiff_apiserver::pki::Pki;
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub client: kube::Client,
    pub kubeconfig: std::path::PathBuf,
    pub shutdown: CancellationToken,
    pub _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[allow(dead_code)]
pub async fn start() -> TestServer {
    start_with(|store| store).await
}

/// Like [`start`], with `wrap` put around the embedded store before the apiserver
/// gets it (e.g. encryption at rest); `wrap` receives the engine itself.
pub async fn start_with(wrap: impl FnOnce(Arc<dyn skiff_store::Store>) -> Arc<dyn skiff_store::Store>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store = wrap(Arc::new(
        skiff_store::EmbeddedStore::open(&dir.path().join("db")).unwrap(),
    ));
    start_with_store(dir, store).await
}

/// Starts an apiserver on `store`, keeping its certificates in `dir`.
#[allow(dead_code)]
pub async fn start_with_store(dir: tempfile::TempDir, store: Arc<dyn skiff_store::Store>) -> TestServer {
    let pki = Pki::load_or_create(&dir.path().join("tls")).unwrap();
    let serving = pki
        .ensure_cert(
            "server",
            "kube-apiserver",
            &[],
            &["127.0.0.1".into(), "localhost".into()],
        )
        .unwrap();
    let admin = pki
        .ensure_cert("admin", "system:admin", &["system:masters"], &[])
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = skiff_apiserver::Config {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
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
    tokio::spawn(skiff_apiserver::run(config, store, shutdown.clone(), tx));
    rx.await.unwrap();
    let kc_path = dir.path().join("admin.kubeconfig");
    pki.write_kubeconfig(&kc_path, &format!("https://127.0.0.1:{port}"), "admin", &admin)
        .unwrap();
    let kc = kube::config::Kubeconfig::read_from(&kc_path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    // What the ServiceAccount controller would create; pod admission requires it.
    create_default_service_account(&client, "default").await;
    TestServer {
        client,
        kubeconfig: kc_path,
        shutdown,
        _dir: dir,
    }
}

/// Creates the `default` ServiceAccount in `ns`, as the ServiceAccount controller
/// does for every namespace (no controller runs in these tests). Already there is
/// fine: apiservers sharing one store (etcd), or a store restored from a snapshot.
pub async fn create_default_service_account(client: &kube::Client, ns: &str) {
    let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
    let sa = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
    match sas.create(&Default::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating the default ServiceAccount in {ns}: {e}"),
    }
}
