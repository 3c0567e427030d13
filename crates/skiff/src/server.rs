//! `skiff server`: wires the control plane and the local agent together.
//!
//! Start-up order: store (`DIR/db`, or etcd), on etcd the cluster's bootstrap data (the
//! CA and service-account key shared by every server, module [`crate::bootstrap`]), PKI
//! (CA and this server's certificates under `DIR/tls`), apiserver (HTTPS), then the
//! scheduler, controllers, kubelet and proxy as ordinary API clients with their own
//! kubeconfigs; `DIR/admin.kubeconfig` is written once the apiserver answers `/readyz`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use skiff_apiserver::pki::Pki;

use crate::node::{client_from, detect_node_ip, hostname, shutdown_signal};
use tokio_util::sync::CancellationToken;

/// Flags of `skiff server` (upstream names where upstream has the flag).
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Directory holding all state: store, certificates, kubeconfigs, agent files.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Port of the HTTPS API.
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    /// Address the API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// External datastore: etcd v3 members, comma-separated, as `etcd://host:port`,
    /// `http://host:port` or `https://host:port`, e.g.
    /// `etcd://10.0.0.1:2379,etcd://10.0.0.2:2379` (k3s's flag). Default: the
    /// embedded store in the data dir. Several servers with `--disable-agent` may
    /// share one etcd cluster.
    #[arg(long)]
    datastore_endpoint: Option<String>,
    /// Memory (MiB) the embedded store may use to cache database pages; pages
    /// beyond it are read from the file (usually the OS page cache). Ignored with
    /// `--datastore-endpoint`.
    #[arg(long, default_value_t = (skiff_store::DEFAULT_CACHE_BYTES >> 20) as u64, value_name = "MIB")]
    datastore_cache_mib: u64,
    /// CA certificate (PEM) that signed the etcd members' serving certificates; with
    /// it, `etcd://` endpoints use TLS.
    #[arg(long)]
    datastore_cafile: Option<PathBuf>,
    /// Client certificate (PEM) presented to etcd.
    #[arg(long)]
    datastore_certfile: Option<PathBuf>,
    /// Key (PEM) of `--datastore-certfile`.
    #[arg(long)]
    datastore_keyfile: Option<PathBuf>,
    /// Shared secret of the servers of one control plane on an external datastore
    /// (k3s's flag): it encrypts the cluster CA and service-account key kept in etcd.
    /// The first server generates one into DATA_DIR/token when none is given; every
    /// other server must be given the same. Ignored with the embedded store.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding `--token`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Encrypt stored values as the upstream `EncryptionConfiguration` in this file
    /// says (apiserver.config.k8s.io/v1; providers aesgcm, aescbc, secretbox, identity).
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Run the control plane only, without a local kubelet.
    #[arg(long)]
    disable_agent: bool,
    /// Prefix length of each Node's podCIDR inside --cluster-cidr (upstream
    /// kube-controller-manager flag); at most 16 bits longer than the cluster CIDR's.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Addresses for LoadBalancer Services, as comma-separated IPv4 CIDRs (e.g.
    /// `172.31.255.0/28,10.0.0.0/30`); each Service of type LoadBalancer without a
    /// loadBalancerClass gets one in status.loadBalancer.ingress.
    #[arg(long, default_value = skiff_controllers::service_lb::DEFAULT_POOL)]
    service_lb_pool: String,
    /// Do not allocate LoadBalancer addresses (leave them to an external implementation).
    #[arg(long)]
    disable_service_lb: bool,
    /// Service ClusterIP range (IPv4 CIDR); its first address is the
    /// `default/kubernetes` Service.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cluster_ip_range: String,
    /// Port range for NodePort Services, `FIRST-LAST`.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Do not run the cluster DNS server (nor create the kube-system/kube-dns Service).
    #[arg(long)]
    disable_dns: bool,
    /// UDP and TCP address of the cluster DNS server (default: <node-ip>:53); the
    /// kube-dns Service at --cluster-dns is routed to it.
    #[arg(long)]
    cluster_dns_listen: Option<SocketAddr>,
    /// Cron schedule of automatic snapshots (5 fields, local time), as k3s's
    /// `--etcd-snapshot-schedule-cron`; on by default.
    #[arg(long, default_value = "0 */12 * * *")]
    snapshot_schedule: String,
    /// Number of scheduled snapshots to keep (the oldest are deleted).
    #[arg(long, default_value_t = 5)]
    snapshot_retention: usize,
    /// Directory of scheduled snapshots (default: DATA_DIR/snapshots).
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
    /// Additional host name or IP address in the apiserver's serving certificate,
    /// e.g. a load balancer in front of several servers (k3s's flag; repeatable or
    /// comma-separated). Adding one re-issues the certificate at the next start.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// Do not take scheduled snapshots.
    #[arg(long)]
    disable_snapshots: bool,
    /// Directory of the local-path provisioner's volumes (default: DATA_DIR/storage), as k3s's flag.
    #[arg(long)]
    default_local_storage_path: Option<PathBuf>,
    /// A `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1) file: scheduling
    /// profiles, plugins and their args, percentageOfNodesToScore (kube-scheduler's `--config`).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// The node flags shared with `skiff agent`.
    #[command(flatten)]
    node: crate::node::NodeArgs,
    /// How often the HorizontalPodAutoscaler controller reconciles every HPA, as
    /// upstream's kube-controller-manager flag (a duration such as `15s` or `1m`).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
}

/// A positive duration in Go's notation (`15s`, `1m30s`, `500ms`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    std::time::Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("invalid duration {s:?}: must be positive"))
}

/// The scheduled-snapshot settings, validated (`None` with `--disable-snapshots`).
fn snapshot_schedule(args: &ServerArgs, node_name: &str) -> anyhow::Result<Option<crate::snapshot::ScheduleConfig>> {
    if args.disable_snapshots {
        return Ok(None);
    }
    let schedule = skiff_controllers::cron::Schedule::parse(&args.snapshot_schedule)
        .map_err(|e| anyhow::anyhow!("--snapshot-schedule: {e}"))?;
    if args.snapshot_retention == 0 {
        bail!("--snapshot-retention must be at least 1 (use --disable-snapshots to turn scheduled snapshots off)");
    }
    Ok(Some(crate::snapshot::ScheduleConfig {
        schedule,
        dir: args
            .snapshot_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.join("snapshots")),
        retention: args.snapshot_retention,
        node_name: node_name.to_string(),
    }))
}

/// The Service ranges from `--service-cluster-ip-range` and `--service-node-port-range`.
fn service_network(args: &ServerArgs) -> anyhow::Result<skiff_apiserver::service_alloc::ServiceNetwork> {
    let cluster_ip_range = skiff_apiserver::service_alloc::Ipv4Cidr::parse(&args.service_cluster_ip_range)
        .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
    let bad = || {
        anyhow::anyhow!(
            "--service-node-port-range: {:?} is not FIRST-LAST",
            args.service_node_port_range
        )
    };
    let (first, last) = args.service_node_port_range.split_once('-').ok_or_else(bad)?;
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first == 0 || first > last {
        return Err(bad());
    }
    Ok(skiff_apiserver::service_alloc::ServiceNetwork {
        cluster_ip_range,
        node_port_range: first..=last,
    })
}

/// `store` behind the encryption of `--encryption-provider-config`, if given.
fn encrypted_at_rest(
    store: Arc<dyn skiff_store::Store>,
    config: Option<&Path>,
) -> anyhow::Result<Arc<dyn skiff_store::Store>> {
    use skiff_store::encryption::{EncryptionConfig, ResourceKeys};
    let Some(path) = config else { return Ok(store) };
    let config = EncryptionConfig::from_file(path).context("--encryption-provider-config")?;
    tracing::info!(resources = ?config.resources(), "encryption at rest configured by {}", path.display());
    let keys = ResourceKeys::new(
        skiff_api::registry::RESOURCES
            .iter()
            .map(|r| (r.group, r.storage_resource)),
    );
    Ok(Arc::new(skiff_store::EncryptedStore::new(store, config, keys)))
}

/// The metrics of this process's components, served by the apiserver on `/metrics`.
fn metrics_registry() -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::default();
    skiff_scheduler::metrics::register(&mut registry);
    registry
}

/// The node IPAM settings from `--cluster-cidr` and `--node-cidr-mask-size`.
fn node_ipam(args: &ServerArgs) -> anyhow::Result<skiff_controllers::node_ipam::NodeIpamConfig> {
    skiff_controllers::node_ipam::NodeIpamConfig::parse(&args.node.cluster_cidr, args.node_cidr_mask_size)
        .map_err(|e| anyhow::anyhow!(e))
}

/// The LoadBalancer pool of `--service-lb-pool` (`None` with `--disable-service-lb`).
fn service_lb_pool(args: &ServerArgs) -> anyhow::Result<Option<skiff_controllers::service_lb::LbPool>> {
    if args.disable_service_lb {
        return Ok(None);
    }
    Ok(Some(skiff_controllers::service_lb::LbPool::parse(
        &args.service_lb_pool,
    )?))
}

/// The store: etcd when `--datastore-endpoint` is given, else the embedded store in
/// `DIR/db`.
async fn open_store(args: &ServerArgs, data_dir: &Path) -> anyhow::Result<Arc<dyn skiff_store::Store>> {
    let tls = skiff_store::EtcdTls {
        ca_file: args.datastore_cafile.clone(),
        cert_file: args.datastore_certfile.clone(),
        key_file: args.datastore_keyfile.clone(),
    };
    let Some(spec) = &args.datastore_endpoint else {
        if tls.is_set() {
            bail!("--datastore-cafile/--datastore-certfile/--datastore-keyfile need --datastore-endpoint");
        }
        return Ok(Arc::new(
            skiff_store::EmbeddedStore::open_with_cache(
                &data_dir.join("db"),
                (args.datastore_cache_mib as usize) << 20,
            )
            .context("opening the embedded store")?,
        ));
    };
    let config = skiff_store::EtcdConfig::parse(spec, tls).context("--datastore-endpoint")?;
    let store = skiff_store::EtcdStore::connect(&config)
        .await
        .context("connecting to etcd")?;
    tracing::info!(endpoints = store.endpoints(), "using etcd as the datastore");
    Ok(Arc::new(store))
}

/// The token of `--token`/`--token-file`, if given.
fn given_token(args: &ServerArgs) -> anyhow::Result<Option<crate::bootstrap::Token>> {
    use crate::bootstrap::Token;
    Ok(match (&args.token, &args.token_file) {
        (Some(t), _) => Some(Token::new(t, "--token")?),
        (None, Some(path)) => Some(Token::from_file(path, format!("--token-file {}", path.display()))?),
        (None, None) => None,
    })
}

/// On etcd, puts the cluster's signers into `DIR/tls` ([`crate::bootstrap::reconcile`]),
/// waiting while etcd is unavailable (it may be starting with this server).
async fn bootstrap(args: &ServerArgs, store: &dyn skiff_store::Store) -> anyhow::Result<()> {
    use crate::bootstrap::{BootstrapError, Outcome, PBKDF2_ITERATIONS, reconcile};
    if args.datastore_endpoint.is_none() {
        if args.token.is_some() || args.token_file.is_some() {
            tracing::info!("--token is only used with --datastore-endpoint; the embedded store needs none");
        }
        return Ok(());
    }
    let token = given_token(args)?;
    let mut delay = Duration::from_millis(500);
    loop {
        match reconcile(store, &args.data_dir, token.clone(), PBKDF2_ITERATIONS).await {
            Ok(Outcome::Created { generated_token }) => {
                tracing::info!("stored the cluster CA and service-account key in etcd for the other servers");
                if generated_token {
                    let file = args.data_dir.join("token");
                    tracing::info!(token_file = %file.display(), "generated the cluster token");
                    eprintln!(
                        "skiff: generated the cluster token in {}; start the other servers on this datastore with --token-file (a copy of) it",
                        file.display()
                    );
                }
                return Ok(());
            }
            Ok(Outcome::Joined) => {
                tracing::info!("using the cluster CA and service-account key from etcd");
                return Ok(());
            }
            Err(BootstrapError::Store(e @ skiff_store::Error::Unavailable { .. })) => {
                tracing::warn!(error = %e, "waiting for etcd to read the cluster's bootstrap data");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs `skiff server` until SIGTERM/SIGINT.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let node_name = args.node.node_name.clone().unwrap_or_else(hostname);
    let node_ip = args
        .node
        .node_ip
        .or_else(detect_node_ip)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = args.https_listen_port;
    let snapshots = snapshot_schedule(&args, &node_name)?;
    let node_ipam = node_ipam(&args)?;
    let service_lb_pool = service_lb_pool(&args)?;

    // Store, and on etcd the signers shared by every server.
    let store = open_store(&args, data_dir).await?;
    bootstrap(&args, &*store).await?;
    let store = encrypted_at_rest(store, args.encryption_provider_config.as_deref())?;

    // PKI.
    let tls_dir = data_dir.join("tls");
    let pki = Pki::load_or_create(&tls_dir).context("cluster CA")?;
    // The `default/kubernetes` Service's ClusterIP, which in-cluster clients dial.
    let kubernetes_service_ip = service_network(&args)?.kubernetes_service_ip().to_string();
    let mut sans: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", args.node.cluster_domain),
        kubernetes_service_ip,
        node_ip.to_string(),
        hostname(),
    ];
    sans.extend(
        args.tls_san
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
    );
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    let serving = pki.ensure_cert("server", "kube-apiserver", &[], &sans)?;
    let admin = pki.ensure_cert("admin", "system:admin", &["system:masters"], &[])?;
    let kubelet_client = pki.ensure_cert(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &[],
    )?;
    let url = format!("https://127.0.0.1:{port}");
    let mut component_kubeconfigs = Vec::new();
    for (file, cn, org) in [
        ("controller", "system:kube-controller-manager", None),
        ("scheduler", "system:kube-scheduler", None),
        ("kubelet", &*format!("system:node:{node_name}"), Some("system:nodes")),
        ("dns", "system:skiff-dns", None),
        ("proxy", "system:kube-proxy", None),
    ] {
        let orgs: Vec<&str> = org.into_iter().collect();
        let pair = pki.ensure_cert(file, cn, &orgs, &[])?;
        let path = tls_dir.join(format!("{file}.kubeconfig"));
        pki.write_kubeconfig(&path, &url, cn, &pair)?;
        component_kubeconfigs.push(path);
    }

    // A bad scheduler configuration stops the start, naming the field.
    let scheduler_config = match &args.scheduler_config {
        Some(path) => skiff_scheduler::config::SchedulerConfig::load(path).context("--scheduler-config")?,
        None => skiff_scheduler::config::SchedulerConfig::default(),
    };

    // Apiserver.
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let config = skiff_apiserver::Config {
        listen: SocketAddr::new(args.bind_address, port),
        advertise: format!("{node_ip}:{port}"),
        serving_cert_pem: serving.cert_pem.clone(),
        serving_key_pem: serving.key_pem.clone(),
        client_ca_pem: pki.ca_pem.clone(),
        kubelet_client_cert_pem: kubelet_client.cert_pem.clone(),
        kubelet_client_key_pem: kubelet_client.key_pem.clone(),
        service_network: service_network(&args)?,
        service_account_key_pem: pki
            .ensure_service_account_key()
            .context("service-account signing key")?,
        metrics: Arc::new(metrics_registry()),
    };
    // The apiserver stops after the components, so that they can release their
    // leader-election leases on the way out.
    let apiserver_shutdown = CancellationToken::new();
    let mut apiserver = tokio::spawn(skiff_apiserver::run(
        config,
        store.clone(),
        apiserver_shutdown.clone(),
        ready_tx,
    ));
    tokio::select! {
        r = ready_rx => r.context("apiserver failed to start")?,
        r = &mut apiserver => {
            r??;
            bail!("apiserver exited during start-up");
        }
    }

    // Components, each an API client with its own identity.
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(cfg) = snapshots {
        tracing::info!(schedule = %args.snapshot_schedule, dir = %cfg.dir.display(), retention = cfg.retention, "scheduled snapshots");
        let token = shutdown.clone();
        tasks.spawn(async move {
            crate::snapshot::run_schedule(store, cfg, token.clone()).await;
            token.cancelled().await;
            Ok(())
        });
    }
    let controller_client = client_from(&component_kubeconfigs[0]).await?;
    let token = shutdown.clone();
    let controller_options = skiff_controllers::Options {
        root_ca_pem: Some(pki.ca_pem.clone()),
        // The CSR signer issues node client certificates from the cluster CA, as
        // kube-controller-manager's --cluster-signing-cert-file/--cluster-signing-key-file.
        cluster_signing: Some(skiff_controllers::csr_signer::ClusterSigning::new(
            pki.ca_pem.clone(),
            std::fs::read_to_string(tls_dir.join("ca.key")).context("reading the cluster CA key")?,
        )),
        local_path: Some(skiff_controllers::persistentvolume::LocalPath {
            base: args
                .default_local_storage_path
                .clone()
                .unwrap_or_else(|| data_dir.join("storage")),
        }),
        hpa_sync_period: Some(args.horizontal_pod_autoscaler_sync_period),
        node_ipam: Some(node_ipam),
        service_lb_pool,
    };
    tasks.spawn(async move {
        skiff_controllers::run_with_options(controller_client, token, controller_options)
            .await
            .map_err(anyhow::Error::from)
            .context("controller-manager")
    });
    let scheduler_client = client_from(&component_kubeconfigs[1]).await?;
    let token = shutdown.clone();
    tasks.spawn(async move {
        skiff_scheduler::run_with_config(scheduler_client, token, scheduler_config)
            .await
            .map_err(anyhow::Error::from)
            .context("scheduler")
    });
    if !args.disable_agent {
        let kubelet_serving = pki.ensure_cert(
            "kubelet-serving",
            &format!("system:node:{node_name}"),
            &["system:nodes"],
            &[
                node_ip.to_string(),
                "127.0.0.1".into(),
                "localhost".into(),
                node_name.clone(),
            ],
        )?;
        let setup = crate::node::NodeSetup {
            node_name: node_name.clone(),
            node_ip,
            root_dir: data_dir.join("agent"),
            kubelet_client: client_from(&component_kubeconfigs[2]).await?,
            proxy_client: client_from(&component_kubeconfigs[4]).await?,
            serving_cert: kubelet_serving.cert_path.clone(),
            serving_key: kubelet_serving.key_path.clone(),
            client_ca: pki.ca_path(),
            control_plane: true,
        };
        crate::node::spawn(&mut tasks, &args.node, setup, &shutdown)?;
    }
    if !args.disable_dns {
        let listen = args.cluster_dns_listen.unwrap_or(SocketAddr::new(node_ip, 53));
        let advertised = if listen.ip().is_unspecified() {
            SocketAddr::new(node_ip, listen.port())
        } else {
            listen
        };
        let mut config = skiff_dns::Config::new(listen, args.node.cluster_dns);
        config.cluster_domain = args.node.cluster_domain.clone();
        config.registration = Some(skiff_dns::registration::Registration {
            node_name: node_name.clone(),
            address: advertised,
        });
        let dns_client = client_from(&component_kubeconfigs[3]).await?;
        let token = shutdown.clone();
        // Like the DNS add-on upstream, a failing DNS server does not stop the control plane.
        tasks.spawn(async move {
            if let Err(e) = skiff_dns::run(dns_client, config, token.clone()).await {
                tracing::error!(
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "cluster DNS is not running; free the address, pick another with --cluster-dns-listen, or pass --disable-dns"
                );
                token.cancelled().await;
            }
            Ok(())
        });
    }

    // The admin kubeconfig appears once the API is ready.
    let admin_path = data_dir.join("admin.kubeconfig");
    pki.write_kubeconfig(&admin_path, &url, "admin", &admin)?;
    tracing::info!(kubeconfig = %admin_path.display(), node = %node_name, %node_ip, "skiff server is ready");
    eprintln!("skiff server is ready: export KUBECONFIG={}", admin_path.display());
    eprintln!(
        "to add a node: run `skiff token create --data-dir {}` here, then on the new machine\n  skiff agent --server https://{node_ip}:{port} --token <TOKEN> --ca-cert-hash {}",
        data_dir.display(),
        crate::agent::ca_cert_hash(&pki.ca_pem).context("hashing the cluster CA")?
    );

    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        r = &mut apiserver => Some(anyhow::anyhow!("apiserver stopped: {:?}", r)),
        Some(r) = tasks.join_next() => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("a component stopped unexpectedly"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("a component panicked: {e}"),
        }),
    };
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    apiserver_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), apiserver).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod datastore_tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServerArgs,
    }

    async fn open(flags: &[&str]) -> anyhow::Result<Arc<dyn skiff_store::Store>> {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::try_parse_from(std::iter::once("server").chain(flags.iter().copied())).unwrap();
        open_store(&cli.args, dir.path()).await
    }

    #[tokio::test]
    async fn datastore_flags_choose_the_engine_or_fail_clearly() {
        // No flag: the embedded store, always healthy.
        open(&[]).await.unwrap().health().await.unwrap();
        let err = open(&["--datastore-cafile", "/ca.pem"]).await.err().unwrap();
        assert!(format!("{err:#}").contains("need --datastore-endpoint"), "{err:#}");
        let err = open(&["--datastore-endpoint", "mysql://db:3306"]).await.err().unwrap();
        assert!(format!("{err:#}").contains("unsupported scheme"), "{err:#}");
        // etcd that nobody serves: the server starts, its store reports it unavailable.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = open(&["--datastore-endpoint", &format!("etcd://127.0.0.1:{port}")])
            .await
            .unwrap();
        match store.health().await {
            Err(skiff_store::Error::Unavailable { endpoints, .. }) => {
                assert_eq!(endpoints, format!("http://127.0.0.1:{port}"));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn sync_period_takes_go_durations() {
        assert_eq!(parse_duration("15s"), Ok(std::time::Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn network_flags_are_validated() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ServerArgs,
        }
        let parse = |flags: &[&str]| Cli::try_parse_from(std::iter::once("server").chain(flags.iter().copied()));
        let cli = parse(&[]).unwrap();
        let ipam = node_ipam(&cli.args).unwrap();
        assert_eq!(
            (ipam.cluster_cidr.to_string(), ipam.node_cidr_mask_size),
            ("10.42.0.0/16".into(), 24)
        );
        assert_eq!(service_lb_pool(&cli.args).unwrap().unwrap().size(), 254);
        let cli = parse(&["--cluster-cidr", "10.42.0.0/16", "--node-cidr-mask-size", "8"]).unwrap();
        assert!(format!("{:#}", node_ipam(&cli.args).unwrap_err()).contains("--node-cidr-mask-size"));
        let cli = parse(&["--service-lb-pool", "172.31.255.0/28,nope"]).unwrap();
        assert!(format!("{:#}", service_lb_pool(&cli.args).unwrap_err()).contains("--service-lb-pool"));
        let cli = parse(&["--service-lb-pool", "nope", "--disable-service-lb"]).unwrap();
        assert!(service_lb_pool(&cli.args).unwrap().is_none());
        assert!(parse(&["--flannel-backend", "vxlan"]).is_err());
    }
}
