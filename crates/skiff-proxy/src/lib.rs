//! The Skiff service proxy: upstream kube-proxy in nftables mode.
//!
//! It is an API client like every other component: it watches Services and
//! `discovery.k8s.io/v1` EndpointSlices (those carrying the
//! `kubernetes.io/service-name` label), and after every change (at most once per
//! [`ProxyConfig::min_sync_period`]) renders the whole ruleset for this node with the
//! pure [`rules::render`] and applies it in one `nft -f -` transaction to its own table
//! `ip skiff-proxy`: the first time by re-creating the table, afterwards as an update
//! that keeps session-affinity state ([`rules::Ruleset::update_transaction`]). A
//! periodic resync re-creates the table if someone removed it.
//!
//! Modules: [`model`] (Services + EndpointSlices -> Service ports with endpoints),
//! [`rules`] (ruleset text), [`apply`] (running nft, sysctls), [`cidr`].
#![deny(missing_docs)]

pub mod apply;
pub mod cidr;
pub mod model;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use apply::Nft;
pub use cidr::Ipv4Cidr;
pub use rules::{RuleConfig, Ruleset};

/// Proxy errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command (nft) could not be started or fed its input.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// nft ran and rejected the ruleset or command.
    #[error("{command} failed ({status}): {stderr}")]
    Nft {
        /// The command line.
        command: String,
        /// The exit status.
        status: String,
        /// nft's diagnostics.
        stderr: String,
    },
    /// A sysctl could not be written (run as root, or set it beforehand).
    #[error("setting {path}: {source}")]
    Sysctl {
        /// The `/proc/sys/...` file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The initial list of Services or EndpointSlices failed.
    #[error("watching {what}: {message}")]
    Watch {
        /// `services` or `endpointslices`.
        what: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Configuration of the proxy (upstream kube-proxy flag names in parentheses).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Ruleset settings: node name, `--cluster-cidr`, `--nodeport-addresses`,
    /// `--masquerade-all`, localhost NodePorts.
    pub rules: RuleConfig,
    /// Minimum time between two syncs (`--min-sync-period`, upstream default 1 s).
    pub min_sync_period: Duration,
    /// Period of the resync that restores a missing table (`--sync-period`, 30 s).
    pub sync_period: Duration,
    /// How nft is run.
    pub nft: Nft,
}

impl ProxyConfig {
    /// Settings for `node_name` with upstream defaults: 1 s min sync period, 30 s sync
    /// period, NodePorts on every local address including localhost.
    pub fn new(node_name: impl Into<String>, cluster_cidr: Option<Ipv4Cidr>) -> Self {
        ProxyConfig {
            rules: RuleConfig {
                node_name: node_name.into(),
                cluster_cidr,
                nodeport_addresses: Vec::new(),
                localhost_nodeports: true,
                masquerade_all: false,
            },
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            nft: Nft::default(),
        }
    }
}

/// Renders the ruleset for the current contents of the two caches.
pub fn render_from(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], cfg: &RuleConfig) -> Ruleset {
    let services: Vec<Service> = services.iter().map(|s| (**s).clone()).collect();
    let slices: Vec<EndpointSlice> = slices.iter().map(|s| (**s).clone()).collect();
    rules::render(&model::build(&services, &slices), cfg)
}

/// Spawns a task that drives a reflector for `api` and wakes `wake` on every event.
fn reflect<K>(api: Api<K>, config: watcher::Config, wake: Arc<Notify>, shutdown: CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(_)) => wake.notify_one(),
                    Some(Err(e)) => tracing::warn!(error = %e, "proxy watch error; retrying"),
                    None => return,
                }
            }
        }
    });
    store
}

/// Runs the proxy until `shutdown` is cancelled.
///
/// Waits for the first complete list of Services and EndpointSlices before the first
/// sync (so a partial view never replaces working rules), then syncs after changes, at
/// most once per `min_sync_period`, and checks the table every `sync_period`. A failed
/// sync is logged and retried at the next tick. The table is left in place on shutdown
/// so Service traffic keeps flowing across restarts (as upstream).
///
/// Errors: [`Error::Sysctl`] when localhost NodePorts are enabled and
/// `route_localnet` cannot be set; [`Error::Watch`] when the caches never fill.
pub async fn run(client: kube::Client, mut config: ProxyConfig, shutdown: CancellationToken) -> Result<(), Error> {
    if config.rules.localhost_nodeports {
        apply::ensure_sysctl(apply::ROUTE_LOCALNET, "1")?;
    }
    if !config.rules.masquerade_all && !apply::bridge_netfilter_enabled() {
        tracing::info!("bridged traffic bypasses netfilter (no br_netfilter); masquerading all Service traffic");
        config.rules.masquerade_all = true;
    }
    let wake = Arc::new(Notify::new());
    let services: Store<Service> = reflect(
        Api::all(client.clone()),
        watcher::Config::default(),
        wake.clone(),
        shutdown.clone(),
    );
    let slices: Store<EndpointSlice> = reflect(
        Api::all(client),
        watcher::Config::default().labels(model::SERVICE_NAME_LABEL),
        wake.clone(),
        shutdown.clone(),
    );
    for (what, ready) in [
        ("services", futures::future::Either::Left(services.wait_until_ready())),
        (
            "endpointslices",
            futures::future::Either::Right(slices.wait_until_ready()),
        ),
    ] {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = ready => r.map_err(|e| Error::Watch { what, message: e.to_string() })?,
        }
    }
    tracing::info!(node = %config.rules.node_name, "proxy caches synced");

    let mut applied: Option<Ruleset> = None;
    let mut last_sync = Instant::now() - config.min_sync_period;
    let mut next_resync = Instant::now() + config.sync_period;
    let mut dirty = true;
    loop {
        if dirty {
            let wait_until = last_sync + config.min_sync_period;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(wait_until) => {}
            }
            last_sync = Instant::now();
            let ruleset = render_from(&services.state(), &slices.state(), &config.rules);
            if applied.as_ref() != Some(&ruleset) {
                let text = match &applied {
                    Some(previous) => ruleset.update_transaction(previous),
                    None => ruleset.full_transaction(),
                };
                match config.nft.apply(&text).await {
                    Ok(()) => {
                        tracing::debug!(bytes = text.len(), "proxy rules applied");
                        applied = Some(ruleset);
                        dirty = false;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "applying proxy rules failed; will retry");
                        // The kernel state is unknown: start over with a full transaction.
                        applied = None;
                    }
                }
            } else {
                dirty = false;
            }
        }
        let retry = dirty.then(|| last_sync + config.min_sync_period);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = wake.notified() => dirty = true,
            _ = tokio::time::sleep_until(retry.unwrap_or(next_resync).min(next_resync)) => {
                if Instant::now() >= next_resync {
                    next_resync = Instant::now() + config.sync_period;
                    match config.nft.table_exists().await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("proxy table is missing; re-creating it");
                            applied = None;
                            dirty = true;
                        }
                        Err(e) => tracing::error!(error = %e, "checking the proxy table failed"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
