//! The node components (kubelet and Service proxy) and their flags, shared by
//! `skiff server`'s local agent and `skiff agent`, so that a joined machine runs
//! exactly what the server runs for its own node.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

/// Flags of the node components (kubelet, proxy), shared by `skiff server` (its
/// local agent) and `skiff agent`; upstream names where upstream has the flag.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Do not run the Service proxy (nftables rules for Services) next to the kubelet.
    #[arg(long)]
    pub disable_kube_proxy: bool,
    /// Node name of the local agent (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// IP address of this node (default: the address of the default route).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// CRI endpoint (unix socket path); by default a supervised containerd is started.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// Pod network CIDR (IPv4); the node IPAM controller gives each Node a
    /// `spec.podCIDR` of --node-cidr-mask-size from it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Pod network between nodes (k3s's flag): `host-gw` writes the bridge CNI
    /// configuration for the Node's podCIDR and routes every other Node's podCIDR via
    /// its InternalIP (nodes must share a layer-2 network); `none` sets up nothing, for
    /// another CNI plugin.
    #[arg(long, default_value = "host-gw", value_parser = ["host-gw", "none"])]
    pub flannel_backend: String,
    /// Cluster DNS server address written into pods' resolv.conf.
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: IpAddr,
    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Port of the kubelet's HTTPS API.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Sandbox (pause) image.
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    pub pause_image: String,
    /// Registry mirror for docker.io and registry.k8s.io (empty to disable).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub registry_mirror: String,
}

/// What a node runs with besides its flags.
pub struct NodeSetup {
    /// The node's name (`system:node:<name>` is its user).
    pub node_name: String,
    /// The node's address.
    pub node_ip: IpAddr,
    /// The kubelet's root directory (pods, volumes, containerd state).
    pub root_dir: PathBuf,
    /// The kubelet's API client (credentials of `system:node:<name>`).
    pub kubelet_client: kube::Client,
    /// The proxy's API client.
    pub proxy_client: kube::Client,
    /// The kubelet's serving certificate and key (PEM files).
    pub serving_cert: PathBuf,
    /// Key of [`NodeSetup::serving_cert`].
    pub serving_key: PathBuf,
    /// CA (PEM file) the kubelet verifies API clients (the apiserver) with.
    pub client_ca: PathBuf,
    /// Whether this node also runs the control plane (labels it as such).
    pub control_plane: bool,
}

/// Spawns the kubelet and, unless `--disable-kube-proxy`, the Service proxy into
/// `tasks`; they stop when `shutdown` is cancelled. Errors: bad `--cluster-cidr`.
pub fn spawn(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    args: &NodeArgs,
    setup: NodeSetup,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = skiff_kubelet::KubeletConfig {
        node_name: setup.node_name.clone(),
        root_dir: setup.root_dir,
        container_runtime_endpoint: args.container_runtime_endpoint.clone(),
        pod_cidr: None,
        pod_network: match args.flannel_backend.as_str() {
            "none" => skiff_kubelet::pod_network::PodNetwork::None,
            _ => skiff_kubelet::pod_network::PodNetwork::HostGw,
        },
        cluster_dns: vec![args.cluster_dns],
        cluster_domain: args.cluster_domain.clone(),
        node_ip: Some(setup.node_ip),
        port: args.kubelet_port,
        serving_cert: setup.serving_cert,
        serving_key: setup.serving_key,
        client_ca: setup.client_ca,
        pause_image: args.pause_image.clone(),
        registry_mirror: Some(args.registry_mirror.clone()).filter(|m| !m.is_empty()),
        control_plane: setup.control_plane,
    };
    let token = shutdown.clone();
    let kubelet = setup.kubelet_client;
    tasks.spawn(async move {
        skiff_kubelet::run(kubelet, config, token)
            .await
            .map_err(anyhow::Error::from)
            .context("kubelet")
    });
    if !args.disable_kube_proxy {
        let cidr = args.cluster_cidr.parse().context("--cluster-cidr")?;
        let config = skiff_proxy::ProxyConfig::new(setup.node_name, Some(cidr));
        let token = shutdown.clone();
        let proxy = setup.proxy_client;
        tasks.spawn(async move {
            skiff_proxy::run(proxy, config, token)
                .await
                .map_err(anyhow::Error::from)
                .context("kube-proxy")
        });
    }
    Ok(())
}

/// The IPv4 address of the default route (no packet is sent).
pub(crate) fn detect_node_ip() -> Option<IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("10.255.255.255:9").ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The host name as a valid node name (lower-case RFC 1123 subdomain, as upstream
/// requires of `--hostname-override`): other characters become `-`.
pub(crate) fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    node_name_from(&raw)
}

pub(crate) fn node_name_from(raw: &str) -> String {
    let cleaned: String = raw
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '-' || c == '.').to_string();
    if cleaned.is_empty() {
        "skiff-node".into()
    } else {
        cleaned
    }
}

/// A client from a kubeconfig file.
pub(crate) async fn client_from(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_valid_dns_subdomains() {
        assert_eq!(node_name_from("My_Host\n"), "my-host");
        assert_eq!(node_name_from("web-1.example.com"), "web-1.example.com");
        assert_eq!(node_name_from("__"), "skiff-node");
    }
}
