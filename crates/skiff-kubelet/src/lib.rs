//! The Skiff kubelet: the node agent. It registers the Node, renews its Lease, runs
//! the pods bound to it in real containers through CRI v1 (containerd + runc, CNI
//! networking), reports their status truthfully, and serves container logs.
#![deny(missing_docs)]

pub mod atomic_writer;
pub mod claims;
pub mod cni;
pub mod containerd;
pub mod cri;
pub mod logs;
pub mod node;
pub mod pod_network;
pub mod pod_spec;
pub mod pods;
pub mod probes;
pub mod routes;
pub mod server;
pub mod service_env;
pub mod stats;
pub mod status;
pub mod streaming;
pub mod token;
pub mod volumes;

use std::net::IpAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// Kubelet errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{0}")]
    Io(String),
    /// A CRI call failed.
    #[error("container runtime: {0}")]
    Cri(String),
    /// TLS material for the kubelet API is unusable.
    #[error("kubelet TLS: {0}")]
    Tls(String),
    /// An API call failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// (De)serialization failed.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
}

/// Configuration of the kubelet (upstream flag names in parentheses).
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Node name (`--hostname-override`).
    pub node_name: String,
    /// Root directory (`--root-dir`): containerd state, pod logs, CNI config.
    pub root_dir: PathBuf,
    /// CRI endpoint (`--container-runtime-endpoint`); `None` starts a supervised containerd.
    pub container_runtime_endpoint: Option<String>,
    /// The node's pod CIDR (`--pod-cidr`), e.g. `10.42.0.0/24`; `None` (the normal
    /// case) waits for the Node's `spec.podCIDR` from the node IPAM controller.
    pub pod_cidr: Option<String>,
    /// The pod network set up on the node ([`pod_network`]).
    pub pod_network: pod_network::PodNetwork,
    /// Cluster DNS servers (`--cluster-dns`).
    pub cluster_dns: Vec<IpAddr>,
    /// Cluster domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// Node IP (`--node-ip`); `None` detects the default route's address.
    pub node_ip: Option<IpAddr>,
    /// Port of the kubelet API (`--port`).
    pub port: u16,
    /// Serving certificate (`--tls-cert-file`).
    pub serving_cert: PathBuf,
    /// Serving key (`--tls-private-key-file`).
    pub serving_key: PathBuf,
    /// CA for client certificates (`--client-ca-file`).
    pub client_ca: PathBuf,
    /// Sandbox image (`--pod-infra-container-image`).
    pub pause_image: String,
    /// Registry mirror for docker.io and registry.k8s.io (e.g. `http://127.0.0.1:5000`).
    pub registry_mirror: Option<String>,
    /// Whether to label the node as a control-plane node.
    pub control_plane: bool,
}

fn detect_node_ip() -> Option<IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("10.255.255.255:9").ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// Runs the kubelet until `shutdown`. Pods keep running when it stops; a restarted
/// kubelet adopts them.
pub async fn run(client: kube::Client, config: KubeletConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let node_ip = config
        .node_ip
        .or_else(detect_node_ip)
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let cni_dir = config.root_dir.join("cni");
    if config.pod_network != pod_network::PodNetwork::None {
        // A conflist of an earlier run may name another podCIDR (a re-created cluster):
        // no sandbox is created until the Node's podCIDR is known again.
        cni::remove(&cni_dir)?;
    }
    let endpoint = match &config.container_runtime_endpoint {
        Some(e) => e.clone(),
        None => {
            let layout = containerd::Layout::new(&config.root_dir);
            containerd::write_config(
                &layout,
                &config.pause_image,
                &cni_dir,
                config.registry_mirror.as_deref(),
            )?;
            containerd::supervise(layout.clone(), shutdown.clone()).await?;
            layout.socket.display().to_string()
        }
    };
    // The CRI plugin answers "not initialized" while it restores state after a restart.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (cri, runtime) = loop {
        let attempt = async {
            let c = cri::Cri::connect(&endpoint).await?;
            let v = c.version().await?;
            Ok::<_, Error>((c, v))
        };
        match attempt.await {
            Ok(x) => break x,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "waiting for the container runtime");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(%runtime, node = %config.node_name, %node_ip, "kubelet connected to the container runtime");
    let sampler = stats::Sampler::default();
    tokio::spawn(
        sampler
            .clone()
            .run(config.node_name.clone(), cri.clone(), shutdown.clone()),
    );
    server::serve(config.clone(), cri.clone(), sampler, shutdown.clone()).await?;
    let network_ready = std::sync::Arc::new(tokio::sync::Notify::new());
    let node_task = tokio::spawn(node::run(
        client.clone(),
        config.clone(),
        node_ip,
        cri.clone(),
        network_ready.clone(),
        shutdown.clone(),
    ));
    let network_task = tokio::spawn(pod_network::run(
        client.clone(),
        config.clone(),
        cni_dir,
        cri.clone(),
        network_ready,
        shutdown.clone(),
    ));
    let pods = pods::run(client, config, node_ip, cri, shutdown.clone()).await;
    let _ = node_task.await;
    match network_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "pod network setup failed"),
        Err(e) => tracing::error!(error = %e, "pod network task panicked"),
        Ok(Ok(())) => {}
    }
    pods
}
