//! Hollow nodes: many simulated nodes in one process, for scale tests and benchmarks
//! (the role of upstream's kubemark hollow nodes and of KWOK).
//!
//! A hollow node does what the control plane can observe of a kubelet, without any
//! container: it registers its Node (capacity, labels, taints, podCIDR, conditions,
//! addresses, nodeInfo), renews its Lease in `kube-node-lease` every quarter of the
//! lease duration (10 s of 40 s), re-posts its status every report period (5 min) or
//! at once when the node lifecycle controller marked it not Ready, and moves the pods
//! bound to it through the statuses a kubelet writes: `Running` with an address from
//! its podCIDR and every condition and container status ready, `Succeeded` after a
//! configurable time for run-to-completion pods, and, when a pod's deletion is
//! requested, the final delete (grace period 0, UID precondition) that a kubelet
//! issues once the containers stopped. Pods beyond the node's pod capacity are
//! rejected as the kubelet's admission does (`Failed`, reason `OutOfpods`).
//!
//! Not modelled: container restarts, probes (containers are ready when started),
//! resource admission other than pod count, images, volumes, the kubelet API
//! (`logs`/`exec` fail as against an unreachable kubelet) and events.
//!
//! Cost: see [`runtime`] — one pod watch, one node watch, one timer wheel and one
//! bounded request executor for all nodes; per node a few dozen bytes of state.
#![deny(missing_docs)]

pub mod cidr;
pub mod cli;
pub mod config;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod state;

use std::sync::Arc;

pub use config::{Capacity, ConfigError, HollowConfig};
pub use runtime::Stats;
use tokio_util::sync::CancellationToken;

/// Errors that stop the hollow nodes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable; the message names the flag.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// Its path.
        path: String,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No client could be built from the kubeconfig.
    #[error("building an API client from the kubeconfig")]
    Client(#[source] kube::Error),
    /// The apiserver did not answer.
    #[error("cannot reach the apiserver at {url} (is it running, and is the kubeconfig for it?)")]
    Unreachable {
        /// The server URL from the kubeconfig.
        url: String,
        /// The failed request.
        #[source]
        source: kube::Error,
    },
}

/// Runs `cfg.nodes` hollow nodes against the apiserver behind `client` until
/// `shutdown`. Returns at once with [`Error::Config`] for an invalid configuration;
/// after that, failed requests are retried with backoff and never stop the nodes.
/// `stats` counts what they did.
pub async fn run(
    client: kube::Client,
    cfg: HollowConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    cfg.validate()?;
    tracing::info!(
        nodes = cfg.nodes,
        first = %cfg.node_name(cfg.first_index),
        cluster_cidr = %cfg.cluster_cidr,
        "starting hollow nodes"
    );
    let (hollow, queues) = runtime::Hollow::new(client, cfg, stats, shutdown.clone());
    hollow.register_all();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(hollow.clone().executor(queues));
    tasks.spawn(hollow.clone().wheel());
    tasks.spawn(hollow.clone().watch_pods());
    tasks.spawn(hollow.clone().watch_nodes());
    tasks.spawn(hollow.clone().report());
    while tasks.join_next().await.is_some() {}
    Ok(())
}
