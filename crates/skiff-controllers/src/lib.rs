//! The Skiff controller manager: one reconcile loop per kind, each an API client
//! watching through the apiserver (kube-rs runtime), in the spirit of the upstream
//! kube-controller-manager.
//!
//! - [`deployment`]: Deployments -> ReplicaSets (rolling updates, history, status).
//! - [`replicaset`]: ReplicaSets -> Pods.
//! - [`endpoints`]: EndpointSlices and Endpoints for Services with selectors.
//! - [`garbage_collector`]: ownerReference-based deletion and finalizers.
//! - [`namespace`]: emptying and finalizing namespaces being deleted.
//! - [`serviceaccount`]: the `default` ServiceAccount of every namespace.
//! - [`node_lifecycle`]: Ready=Unknown and taints for nodes that stop reporting.
#![deny(missing_docs)]

pub mod common;
pub mod deployment;
pub mod endpoints;
pub mod garbage_collector;
pub mod namespace;
pub mod node_lifecycle;
pub mod replicaset;
pub mod rollout;
pub mod serviceaccount;

use tokio_util::sync::CancellationToken;

/// Errors of a reconcile; they are retried with backoff, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be (de)serialized.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    /// An object is invalid in a way validation should have caught.
    #[error("invalid object: {0}")]
    Invalid(String),
}

/// Runs every controller until `shutdown` is cancelled.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> Result<(), Error> {
    tracing::info!("controller-manager started");
    tokio::join!(
        replicaset::run(client.clone(), shutdown.clone()),
        deployment::run(client.clone(), shutdown.clone()),
        garbage_collector::run(client.clone(), shutdown.clone()),
        namespace::run(client.clone(), shutdown.clone()),
        node_lifecycle::run(client.clone(), shutdown.clone()),
        serviceaccount::run(client.clone(), shutdown.clone()),
        endpoints::run(client, shutdown),
    );
    Ok(())
}
