//! The node's side of the pod network: wait for the Node's `spec.podCIDR` (assigned by
//! the node IPAM controller, or the kubelet's own `--pod-cidr`), write the CNI
//! configuration for it ([`crate::cni`]), then keep the host-gw routes to the other
//! nodes' pod CIDRs ([`crate::routes`]).
//!
//! Until the CNI configuration exists containerd reports `NetworkReady=false`, so the
//! Node stays NotReady and no pod sandbox is created, as upstream with a network
//! plugin that is not ready yet.

use std::path::PathBuf;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::{Error, cni};

/// Which pod network the kubelet sets up (k3s's `--flannel-backend` values it supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodNetwork {
    /// The bridge CNI configuration on the node's podCIDR plus host-gw routes to the
    /// other nodes' podCIDRs.
    #[default]
    HostGw,
    /// Nothing: another CNI plugin configures pods and routes.
    None,
}

/// The Node's first `spec.podCIDRs` entry (or `spec.podCIDR`), if set.
pub fn pod_cidr_of(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .as_ref()
        .and_then(|l| l.first().cloned())
        .or_else(|| spec.pod_cidr.clone())
        .filter(|c| !c.is_empty())
}

/// Waits until the Node `node_name` has a podCIDR and returns it; `None` on shutdown.
pub async fn wait_for_pod_cidr(client: kube::Client, node_name: &str, shutdown: &CancellationToken) -> Option<String> {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let mut nodes = watcher(api, config).default_backoff().applied_objects().boxed();
    let mut logged = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            n = nodes.next() => match n {
                Some(Ok(node)) => {
                    if let Some(cidr) = pod_cidr_of(&node) {
                        return Some(cidr);
                    }
                    if !logged {
                        tracing::info!(node = %node_name, "waiting for the node's podCIDR from the node IPAM controller");
                        logged = true;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                None => return None,
            }
        }
    }
}

/// Sets up the pod network of the node as `config.pod_network` says and keeps its routes
/// until `shutdown`. `config.pod_cidr` is the kubelet's own `--pod-cidr`; without it the Node's
/// `spec.podCIDR` is awaited. Once the runtime reports the network ready,
/// `network_ready` is notified (the node status loop then reports at once).
/// Errors: writing the CNI configuration.
pub async fn run(
    client: kube::Client,
    config: crate::KubeletConfig,
    cni_dir: PathBuf,
    cri: crate::cri::Cri,
    network_ready: std::sync::Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let node_name = config.node_name;
    if config.pod_network == PodNetwork::None {
        return Ok(());
    }
    let cidr = match config.pod_cidr {
        Some(c) => c,
        None => match wait_for_pod_cidr(client.clone(), &node_name, &shutdown).await {
            Some(c) => c,
            None => return Ok(()),
        },
    };
    cni::write(&cni_dir, &cidr)?;
    tracing::info!(node = %node_name, pod_cidr = %cidr, "wrote the CNI configuration");
    // Report Ready as soon as the runtime has loaded it, not at the next status tick.
    for _ in 0..50 {
        if cri.ready().await.is_ok_and(|(ready, _)| ready) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    network_ready.notify_one();
    crate::routes::run(client, node_name, shutdown).await;
    Ok(())
}
