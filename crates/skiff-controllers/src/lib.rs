//! The Skiff controller manager: one reconcile loop per kind, each an API client
//! watching through the apiserver (kube-rs runtime), in the spirit of the upstream
//! kube-controller-manager.
//!
//! - [`deployment`]: Deployments -> ReplicaSets (rolling updates, recreate,
//!   proportional scaling, pause, revision history, status and conditions).
//! - [`replicaset`]: ReplicaSets -> Pods (claiming, slow-start creation, ranked
//!   deletion, [`expectations`] over a watch-fed [`pod_cache`]).
//! - [`replication`]: ReplicationControllers -> Pods, through the same sync.
//! - [`job`]: Jobs -> Pods (completions, parallelism, Indexed mode, backoff
//!   limit, deadline, suspend, tracking finalizers, TTL after finished).
//! - [`cronjob`]: CronJobs -> Jobs on a [`cron`] schedule (time zones,
//!   concurrency policy, starting deadline, history limits).
//! - [`daemonset`]: DaemonSets -> one Pod per eligible node ([`scheduling`]
//!   predicates, rolling update or OnDelete over [`revision`]s).
//! - [`statefulset`]: StatefulSets -> ordered Pods with stable names and
//!   PersistentVolumeClaims (OrderedReady/Parallel, partitioned rolling update).
//! - [`garbage_collector`]: ownerReference-based deletion (background, foreground,
//!   orphan) over every resource [`discovery`] reports.
//! - [`namespace`]: emptying and finalizing namespaces being deleted.
//! - [`endpoints`]: EndpointSlices and Endpoints for Services with selectors.
//! - [`serviceaccount`]: the `default` ServiceAccount of every namespace.
//! - [`root_ca_publisher`]: the `kube-root-ca.crt` ConfigMap of every namespace.
//! - [`node_lifecycle`]: Ready=Unknown and taints for nodes that stop reporting.
//! - [`taint_eviction`]: deleting pods that do not (or no longer) tolerate their
//!   node's `NoExecute` taints.
//! - [`resourcequota`]: ResourceQuota `status.hard` and `status.used`.
//! - [`persistentvolume`]: binding claims to volumes, reclaim, the protection
//!   finalizers, and the local-path provisioner.
//! - [`hpa`]: HorizontalPodAutoscalers: target replicas from resource metrics
//!   (`metrics.k8s.io`), through the target's `scale` subresource.
//! - [`node_ipam`]: a `spec.podCIDR` for every Node from the cluster CIDR.
//! - [`service_lb`]: LoadBalancer Service addresses from a pool.
//! - [`disruption`]: PodDisruptionBudget status (healthy, desired and expected
//!   pods, disruptions allowed) for the Eviction API.
//!
//! The loops run only while this process holds the Lease
//! `kube-system/kube-controller-manager` ([`leader_election`]), so several
//! servers sharing a datastore run one controller manager between them.
//!
//! Pure decision logic ([`rollout`], [`deployment::status`], ranking and claiming
//! in [`replicaset`], [`garbage_collector::decide`]) is separate from the API calls
//! so it is unit-tested directly; `tests/` drives the loops against a real
//! in-process apiserver.
#![deny(missing_docs)]

pub mod bootstrap;
pub mod common;
pub mod cron;
pub mod cronjob;
pub mod csr_approver;
pub mod csr_signer;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod garbage_collector;
pub mod hpa;
pub mod job;
/// Leader election over a `coordination.k8s.io/v1` Lease (client-go
/// `leaderelection` semantics). It lives in the `skiff-leader` crate so that the
/// scheduler uses the same code without depending on the controller manager.
pub use skiff_leader as leader_election;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod persistentvolume;
pub mod pod_cache;
pub mod replicaset;
pub mod replication;
pub mod resourcequota;
pub mod revision;
pub mod rollout;
pub mod root_ca_publisher;
pub mod scheduling;
pub mod service_lb;
pub mod serviceaccount;
pub mod statefulset;
pub mod taint_eviction;

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
    /// A ReplicaSet named after the template hash exists with another template
    /// or owner; the Deployment's `status.collisionCount` was bumped and the
    /// sync is retried with a new hash (upstream's hash-collision handling).
    #[error("hash collision: replica set {0} exists with another template; retrying with a new hash")]
    HashCollision(String),
    /// The leader-election configuration is invalid.
    #[error("leader election: {0}")]
    LeaderElection(#[from] leader_election::ConfigError),
}

/// Name of the Lease in `kube-system` the controller manager campaigns for, as
/// upstream.
pub const LEASE_NAME: &str = "kube-controller-manager";

/// Settings of the controller manager beyond its API client (upstream
/// kube-controller-manager flags).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The CA bundle (PEM) clients verify the apiserver with (`--root-ca-file`),
    /// published by [`root_ca_publisher`] as `kube-root-ca.crt` in every namespace;
    /// `None` leaves that controller off.
    pub root_ca_pem: Option<String>,
    /// The local-path provisioner's settings (`--default-local-storage-path`);
    /// with them the default StorageClass `local-path` is created if absent.
    pub local_path: Option<persistentvolume::LocalPath>,
    /// The cluster CA the CSR signer issues client certificates from
    /// (`--cluster-signing-cert-file`/`--cluster-signing-key-file`); `None` leaves
    /// [`csr_signer`] off, so approved requests stay unissued.
    pub cluster_signing: Option<csr_signer::ClusterSigning>,
    /// How often every HorizontalPodAutoscaler is reconciled
    /// (`--horizontal-pod-autoscaler-sync-period`); `None` is upstream's 15 s.
    pub hpa_sync_period: Option<std::time::Duration>,
    /// Node CIDR allocation (`--allocate-node-cidrs` with `--cluster-cidr` and
    /// `--node-cidr-mask-size`); `None` leaves [`node_ipam`] off.
    pub node_ipam: Option<node_ipam::NodeIpamConfig>,
    /// The LoadBalancer address pool; `None` leaves [`service_lb`] off.
    pub service_lb_pool: Option<service_lb::LbPool>,
}

/// Campaigns for the Lease `kube-system/kube-controller-manager` with the
/// upstream defaults (15 s lease, 10 s renew deadline, 2 s retry, released on
/// shutdown) and runs every controller while leading, until `shutdown` is
/// cancelled; then returns `Ok(())`. Reconcile errors are retried with backoff
/// inside each loop and never end it.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> Result<(), Error> {
    run_with_options(client, shutdown, Options::default()).await
}

/// [`run`] with [`Options`].
pub async fn run_with_options(
    client: kube::Client,
    shutdown: CancellationToken,
    options: Options,
) -> Result<(), Error> {
    let config = leader_election::Config::new(leader_election::LEASE_NAMESPACE, LEASE_NAME);
    run_elected_with_options(client, shutdown, config, options).await
}

/// [`run`] with an explicit leader-election configuration: the controllers run
/// while this candidate leads and are stopped (and awaited) when leadership is
/// lost, after which the candidate campaigns again.
pub async fn run_elected(
    client: kube::Client,
    shutdown: CancellationToken,
    election: leader_election::Config,
) -> Result<(), Error> {
    run_elected_with_options(client, shutdown, election, Options::default()).await
}

/// [`run_elected`] with [`Options`].
pub async fn run_elected_with_options(
    client: kube::Client,
    shutdown: CancellationToken,
    election: leader_election::Config,
    options: Options,
) -> Result<(), Error> {
    let elector = leader_election::LeaderElector::new(client.clone(), election)?;
    elector
        .run(shutdown, |leading| {
            let client = client.clone();
            let options = options.clone();
            async move {
                run_controllers(client, leading, options).await;
                Ok::<(), Error>(())
            }
        })
        .await
}

/// Runs every controller until `shutdown` is cancelled, without leader election.
async fn run_controllers(client: kube::Client, shutdown: CancellationToken, options: Options) {
    tracing::info!("controller-manager started");
    let local_path = options.local_path.clone();
    let hpa_sync_period = options.hpa_sync_period.unwrap_or(hpa::DEFAULT_SYNC_PERIOD);
    let ipam = {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        let config = options.node_ipam.clone();
        async move {
            if let Some(config) = config {
                node_ipam::run(client, config, shutdown).await;
            }
        }
    };
    let service_lb = {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        let pool = options.service_lb_pool.clone();
        async move {
            if let Some(pool) = pool {
                service_lb::run(client, pool, shutdown).await;
            }
        }
    };
    let root_ca = {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        async move {
            if let Some(ca) = options.root_ca_pem {
                root_ca_publisher::run(client, ca, shutdown).await;
            }
        }
    };
    let signer = {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        let signing = options.cluster_signing.clone();
        async move {
            if let Some(signing) = signing {
                csr_signer::run(client, signing, shutdown).await;
            }
        }
    };
    // One pod watch and one copy of each pod for every controller that owns pods.
    let pods = pod_cache::PodInformer::new();
    tokio::join!(
        csr_approver::run(client.clone(), shutdown.clone()),
        signer,
        bootstrap::run(client.clone(), shutdown.clone()),
        pods.clone().run(client.clone(), shutdown.clone()),
        replicaset::run_for_with_pods::<k8s_openapi::api::apps::v1::ReplicaSet>(
            client.clone(),
            pods.clone(),
            shutdown.clone()
        ),
        replication::run_with_pods(client.clone(), pods.clone(), shutdown.clone()),
        deployment::run(client.clone(), shutdown.clone()),
        job::run_with_pods(client.clone(), pods.clone(), shutdown.clone()),
        cronjob::run(client.clone(), shutdown.clone()),
        daemonset::run_with_pods(client.clone(), pods.clone(), shutdown.clone()),
        statefulset::run_with_pods(client.clone(), pods.clone(), shutdown.clone()),
        garbage_collector::run(client.clone(), shutdown.clone()),
        namespace::run(client.clone(), shutdown.clone()),
        node_lifecycle::run(client.clone(), shutdown.clone()),
        taint_eviction::run(client.clone(), shutdown.clone()),
        serviceaccount::run(client.clone(), shutdown.clone()),
        root_ca,
        ipam,
        service_lb,
        disruption::run_with_pods(client.clone(), pods, shutdown.clone()),
        hpa::run(client.clone(), hpa_sync_period, shutdown.clone()),
        resourcequota::run(client.clone(), shutdown.clone()),
        persistentvolume::run(client.clone(), local_path, shutdown.clone()),
        endpoints::run(client, shutdown),
    );
    tracing::info!("controller-manager stopped");
}
