//! Cluster DNS for Services and Pods, per the Kubernetes DNS-Based Service Discovery
//! specification (schema version 1.1.0), served with hickory over UDP and TCP.
//!
//! Like every Skiff component it is an API client: reflectors over Services and
//! EndpointSlices feed an immutable [`records::Snapshot`] of the cluster zone
//! (`<domain>`, `cluster.local` by default), which the request handler
//! ([`server::ClusterDnsHandler`]) answers from; other names go to the host's
//! resolvers ([`forward`]). [`registration`] publishes the server behind the
//! `kube-system/kube-dns` Service at the `--cluster-dns` address.
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> Result<(), skiff_dns::Error> {
//! let config = skiff_dns::Config::new("192.168.1.5:53".parse().unwrap(), "10.43.0.10".parse().unwrap());
//! skiff_dns::run(client, config, tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

#![deny(missing_docs)]

mod cache;
mod error;
pub mod forward;
pub mod records;
pub mod registration;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use error::Error;
use hickory_server::Server;
use tokio_util::sync::CancellationToken;

/// Where questions outside the cluster domain go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The `nameserver` lines of a resolv.conf (normally the host's `/etc/resolv.conf`,
    /// as CoreDNS's default `forward . /etc/resolv.conf`).
    ResolvConf(PathBuf),
    /// These servers, in order.
    Servers(Vec<SocketAddr>),
}

/// Settings of the DNS component.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP and TCP address to serve on (`<node-ip>:53` in `skiff server`).
    pub listen: SocketAddr,
    /// The cluster DNS Service address (`--cluster-dns`): the clusterIP of
    /// `kube-system/kube-dns`, and what `ns.dns.<domain>` resolves to.
    pub cluster_dns: IpAddr,
    /// The cluster domain (`--cluster-domain`), e.g. `cluster.local`.
    pub cluster_domain: String,
    /// TTL of answers from the cluster zone, in seconds.
    pub ttl: u32,
    /// Upstream resolvers. Servers equal to the listen address or to
    /// `<cluster_dns>:53` are left out, so queries never loop back here.
    pub upstream: Upstream,
    /// How long one upstream attempt may take.
    pub upstream_timeout: Duration,
    /// If set, the `kube-dns` Service, an EndpointSlice for this server and the
    /// Endpoints are kept in place (see [`registration`]).
    pub registration: Option<registration::Registration>,
}

impl Config {
    /// Defaults for the given listen address and cluster DNS IP: domain
    /// `cluster.local`, TTL 30 s, upstreams from `/etc/resolv.conf`, 2 s per
    /// upstream attempt, no registration.
    pub fn new(listen: SocketAddr, cluster_dns: IpAddr) -> Self {
        Self {
            listen,
            cluster_dns,
            cluster_domain: "cluster.local".into(),
            ttl: records::DEFAULT_TTL,
            upstream: Upstream::ResolvConf(PathBuf::from("/etc/resolv.conf")),
            upstream_timeout: forward::DEFAULT_UPSTREAM_TIMEOUT,
            registration: None,
        }
    }
}

/// How long an idle TCP connection is kept open (CoreDNS and BIND use 10 s).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Serves cluster DNS until `shutdown` is cancelled.
///
/// Binds UDP and TCP on `config.listen` first (so a bind failure is reported at
/// once), then watches Services and EndpointSlices; questions in the cluster domain
/// get SERVFAIL until the first full list. With `config.registration`, the
/// `kube-dns` Service and this server's endpoint are kept in place and withdrawn
/// at shutdown.
///
/// Errors: [`Error::InvalidDomain`], [`Error::ResolvConf`], [`Error::Bind`] at
/// start-up; [`Error::Server`] if the sockets fail while serving. Apiserver errors
/// are logged and retried, never fatal.
pub async fn run(client: kube::Client, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let zone = records::ZoneConfig::new(&config.cluster_domain, config.ttl, config.cluster_dns)?;
    let mut avoid = vec![config.listen, SocketAddr::new(config.cluster_dns, 53)];
    avoid.extend(config.registration.as_ref().map(|r| r.address));
    let upstreams = match &config.upstream {
        Upstream::ResolvConf(path) => forward::upstreams_from_resolv_conf(path, &avoid)?,
        Upstream::Servers(servers) => forward::without_loops(servers.iter().copied(), &avoid),
    };
    let forwarder = forward::Forwarder::new(upstreams, config.upstream_timeout);
    match &forwarder {
        Some(f) => tracing::info!(upstreams = ?f.upstreams(), "cluster DNS forwards other names"),
        None => tracing::warn!("cluster DNS has no upstream resolver; names outside the cluster domain are refused"),
    }

    let bind = |protocol, source| Error::Bind {
        addr: config.listen,
        protocol,
        source,
    };
    let udp = tokio::net::UdpSocket::bind(config.listen)
        .await
        .map_err(|e| bind("udp", e))?;
    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| bind("tcp", e))?;

    let (publish, snapshots) = tokio::sync::watch::channel(None);
    let handler = server::ClusterDnsHandler::new(zone.clone(), snapshots, forwarder);
    let mut dns = Server::new(handler);
    dns.register_socket(udp);
    dns.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    tracing::info!(listen = %config.listen, domain = %zone.domain, "cluster DNS is serving");

    let tasks = CancellationToken::new();
    let cache = tokio::spawn(cache::run(client.clone(), zone, publish, tasks.clone()));
    let registration = config
        .registration
        .clone()
        .map(|reg| tokio::spawn(registration::run(client, config.cluster_dns, reg, tasks.clone())));

    let server_token = dns.shutdown_token().clone();
    let stopper = tokio::spawn(async move {
        shutdown.cancelled().await;
        server_token.cancel();
    });
    let result = dns.block_until_done().await.map_err(Error::Server);
    stopper.abort();
    tasks.cancel();
    let _ = cache.await;
    if let Some(registration) = registration {
        let _ = registration.await;
    }
    result
}
