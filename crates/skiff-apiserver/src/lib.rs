//! The Skiff API server: the only component that touches the store.
//!
//! It serves the Kubernetes REST API over HTTPS (discovery, CRUD, watch, subresources,
//! `Status` errors, `Table` output) on top of a [`skiff_store::Store`], authenticating
//! clients by x509 certificates signed by the cluster CA ([`pki`], [`authn`]) or
//! ServiceAccount bearer tokens ([`serviceaccount_token`]) and
//! authorizing them with RBAC ([`authz`]).
#![deny(missing_docs)]

pub mod accept;
pub mod aggregated_discovery;
pub mod authn;
pub mod authn_review;
pub mod authz;
pub mod autoscaling_v1;
pub mod cluster_info;
pub mod compaction;
pub mod crds;
pub mod csr;
pub mod discovery;
pub mod eviction;
pub mod kubernetes_service;
pub mod limit_ranger;
pub mod list;
pub mod logs;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod openapi_schema;
pub mod openapi_v2;
pub mod openapi_v2_proto;
pub mod pki;
pub mod priority;
pub mod proto;
pub mod request;
pub mod resource_quota;
pub mod rest;
pub mod server;
pub mod service_alloc;
pub mod serviceaccount_admission;
pub mod serviceaccount_token;
pub mod status;
pub mod storage_admission;
pub mod stream_proxy;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use skiff_api::registry;
use skiff_store::Store;
use tokio_util::sync::CancellationToken;

use objects::{FieldValidation, Objects, WriteOptions};

/// Errors starting or running the apiserver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS material is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The store failed during bootstrap.
    #[error("bootstrapping the store: {0}")]
    Bootstrap(String),
}

/// Shared state of all request handlers.
#[derive(Clone)]
pub struct App {
    /// Object access.
    pub objects: Objects,
    /// Client for kubelet APIs (logs).
    pub kubelet: logs::KubeletClient,
    /// `host:port` advertised in `/api` discovery.
    pub server_address: String,
    /// Decides whether an authenticated user may make a request.
    pub authorizer: authz::Authorizer,
    /// Issues and verifies ServiceAccount tokens.
    pub tokens: Arc<serviceaccount_token::TokenSigner>,
    /// The process's metrics, served on `/metrics` in the Prometheus text format.
    pub metrics: Arc<prometheus_client::registry::Registry>,
}

/// What the apiserver needs to run.
pub struct Config {
    /// Listen address, e.g. `0.0.0.0:6443`.
    pub listen: SocketAddr,
    /// Address advertised to clients (`host:port`).
    pub advertise: String,
    /// Serving certificate and key, PEM.
    pub serving_cert_pem: String,
    /// Serving key, PEM.
    pub serving_key_pem: String,
    /// CA whose signatures authenticate client certificates, PEM.
    pub client_ca_pem: String,
    /// Client certificate and key the apiserver presents to kubelets, PEM.
    pub kubelet_client_cert_pem: String,
    /// Key for [`Config::kubelet_client_cert_pem`], PEM.
    pub kubelet_client_key_pem: String,
    /// Service ClusterIP and NodePort ranges (`--service-cluster-ip-range`,
    /// `--service-node-port-range`).
    pub service_network: service_alloc::ServiceNetwork,
    /// Key signing ServiceAccount tokens, PEM (PKCS#8 P-256; see
    /// [`pki::Pki::ensure_service_account_key`]).
    pub service_account_key_pem: String,
    /// Metrics of the components in this process, served on `/metrics` (upstream
    /// serves each component's on its own port; one process has one set).
    pub metrics: Arc<prometheus_client::registry::Registry>,
}

/// Namespaces that exist from the start, as upstream creates them.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces if missing.
pub async fn bootstrap(objects: &Objects) -> Result<(), Error> {
    let nsres = registry::lookup("", "v1", "namespaces").expect("namespaces are served");
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let opts = WriteOptions {
            dry_run: false,
            field_validation: FieldValidation::Strict,
        };
        match objects.create(nsres, None, obj, opts).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(Error::Bootstrap(e.message)),
        }
    }
    Ok(())
}

/// Binds, bootstraps and serves until `shutdown`. `ready` is cancelled... rather,
/// the returned future resolves after shutdown; readiness is signalled by `on_ready`.
pub async fn run(
    config: Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    on_ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), Error> {
    let objects = Objects::with_service_network(store, config.service_network.clone());
    bootstrap(&objects).await?;
    kubernetes_service::reconcile(&objects, &config.advertise)
        .await
        .map_err(|e| Error::Bootstrap(e.message))?;
    priority::ensure_system_classes(&objects)
        .await
        .map_err(|e| Error::Bootstrap(format!("system PriorityClasses: {}", e.message)))?;
    let crd_revision = crds::load(&objects).await.map_err(|e| Error::Bootstrap(e.message))?;
    tokio::spawn(crds::run(objects.clone(), crd_revision, shutdown.clone()));
    cluster_info::ensure(
        &objects,
        &format!("https://{}", config.advertise),
        &config.client_ca_pem,
    )
    .await
    .map_err(|e| Error::Bootstrap(format!("kube-public/cluster-info: {}", e.message)))?;
    authz::bootstrap_policy::ensure(&objects)
        .await
        .map_err(|e| Error::Bootstrap(format!("RBAC bootstrap policy: {}", e.message)))?;
    let policy = authz::cache::PolicyCache::start(objects.store().clone(), shutdown.clone())
        .await
        .map_err(|e| Error::Bootstrap(format!("loading RBAC objects: {e}")))?;
    let tls = server::tls_config(&config.serving_cert_pem, &config.serving_key_pem, &config.client_ca_pem)?;
    let kubelet = logs::kubelet_client(
        &config.client_ca_pem,
        &config.kubelet_client_cert_pem,
        &config.kubelet_client_key_pem,
    )
    .map_err(Error::Tls)?;
    let tokens = serviceaccount_token::TokenSigner::from_pem(&config.service_account_key_pem)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let listener = server::bind(config.listen).await?;
    tracing::info!(listen = %config.listen, "apiserver serving");
    let app = App {
        objects,
        kubelet,
        server_address: config.advertise,
        authorizer: authz::Authorizer::new(policy),
        tokens: Arc::new(tokens),
        metrics: config.metrics,
    };
    let _ = on_ready.send(());
    server::serve(listener, tls, app, shutdown).await;
    Ok(())
}
