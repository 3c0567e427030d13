//! An in-process control plane for integration tests: the real apiserver on a free
//! loopback port with an embedded store in a temp dir, and `kube` clients with
//! their own certificates, exactly as `skiff server` wires them.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_apiserver::pki::Pki;
use tokio_util::sync::CancellationToken;

/// A running apiserver; stopped on drop.
pub struct ControlPlane {
    pub client: kube::Client,
    /// The cluster CA (PEM) the controller manager publishes as `kube-root-ca.crt`.
    pub ca_pem: String,
    pub shutdown: CancellationToken,
    pub kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
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
        // The ServiceAccount controller creates it too; tests that create pods
        // before starting the controllers rely on it existing.
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), "default");
        let sa = serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("service account");
        sas.create(&PostParams::default(), &sa)
            .await
            .expect("default service account");
        Self {
            client,
            ca_pem: pki.ca_pem.clone(),
            shutdown,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Starts the controller manager and the scheduler against this apiserver.
    pub fn start_components(&self) {
        self.start_controllers(self.shutdown.child_token());
        let (c, t) = (self.client.clone(), self.shutdown.clone());
        tokio::spawn(async move { skiff_scheduler::run(c, t).await });
    }

    /// Starts the controller manager alone, until `token` is cancelled.
    pub fn start_controllers(&self, token: CancellationToken) {
        self.start_controllers_with(token, |_| {});
    }

    /// [`Self::start_controllers`] with the options changed by `f` (node IPAM and the
    /// LoadBalancer allocator are off unless `f` turns them on).
    pub fn start_controllers_with(&self, token: CancellationToken, f: impl FnOnce(&mut skiff_controllers::Options)) {
        let c = self.client.clone();
        let mut options = skiff_controllers::Options {
            root_ca_pem: Some(self.ca_pem.clone()),
            local_path: Some(skiff_controllers::persistentvolume::LocalPath {
                base: self.storage_dir(),
            }),
            ..Default::default()
        };
        f(&mut options);
        tokio::spawn(async move { skiff_controllers::run_with_options(c, token, options).await });
    }

    /// Where the local-path provisioner of [`Self::start_controllers`] puts volumes.
    pub fn storage_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("storage")
    }

    /// The `holderIdentity` of the controller manager's Lease, if held.
    pub async fn controller_leader(&self) -> Option<String> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), "kube-system");
        let lease = leases
            .get_opt(skiff_controllers::LEASE_NAME)
            .await
            .expect("get lease")?;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    /// Registers a Ready node with the given allocatable cpu and memory, as a kubelet would
    /// (with the `kubernetes.io/hostname` label a kubelet sets, unless `labels` has one).
    pub async fn add_node(&self, name: &str, cpu: &str, memory: &str, mut labels: serde_json::Value) {
        if let Some(l) = labels.as_object_mut() {
            l.entry("kubernetes.io/hostname").or_insert(json!(name));
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
        }))
        .expect("node");
        nodes.create(&PostParams::default(), &node).await.expect("create node");
        let status = json!({"status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": skiff_api::events::now_string(),
                            "lastTransitionTime": skiff_api::events::now_string()}],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("node status");
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

/// Plays the kubelet for every node: pods bound to a node become Running and Ready
/// (with a pod IP), and pods marked for deletion are removed, as a kubelet does after
/// stopping their containers.
pub fn fake_kubelet(client: kube::Client, shutdown: CancellationToken) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::DeleteParams;
    use kube::runtime::{WatchStreamExt, watcher};
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client.clone());
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut ip = 2u32;
        loop {
            let pod = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = stream.next() => match p { Some(Ok(p)) => p, Some(Err(_)) => continue, None => return },
            };
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            if pod.metadata.deletion_timestamp.is_some() {
                let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
                continue;
            }
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if bound && !running {
                ip += 1;
                let now = skiff_api::events::now_string();
                let status = json!({"status": {
                    "phase": "Running",
                    "podIP": format!("10.42.0.{}", ip % 250),
                    "startTime": now,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    ],
                }});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await;
            }
        }
    });
}
