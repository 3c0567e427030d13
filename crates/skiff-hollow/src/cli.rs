//! `skiff hollow`: flags (kubelet names where the kubelet has the flag) and the
//! command that runs the nodes until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{Capacity, ConfigError, HollowConfig, parse_labels, parse_taints};
use crate::{Error, Stats};

/// Flags of `skiff hollow`.
#[derive(Debug, Clone, Args)]
pub struct HollowArgs {
    /// Number of hollow nodes to run.
    #[arg(long)]
    pub nodes: u32,
    /// Kubeconfig of a user allowed to write Nodes, Leases and pod status (e.g. the
    /// server's `admin.kubeconfig`).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Node names are this prefix followed by the node's index.
    #[arg(long, default_value = "hollow-")]
    pub name_prefix: String,
    /// Index of the first node (several processes can run disjoint ranges).
    #[arg(long, default_value_t = 0)]
    pub first_index: u32,
    /// CPU capacity of each node.
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    /// Pod capacity of each node (`--max-pods`).
    #[arg(long, visible_alias = "max-pods", default_value_t = 110)]
    pub pods: u32,
    /// Ephemeral-storage capacity of each node.
    #[arg(long, default_value = "100Gi")]
    pub ephemeral_storage: String,
    /// Extra node labels, `k=v,...` (`--node-labels`); `type=hollow` is added unless set.
    #[arg(long, visible_alias = "node-labels", default_value = "")]
    pub labels: String,
    /// Node taints, `key[=value]:Effect,...` (`--register-with-taints`).
    #[arg(long, visible_alias = "register-with-taints", default_value = "")]
    pub taints: String,
    /// Range the nodes' pod CIDRs are carved from, in node-index order.
    #[arg(long, visible_alias = "pod-cidr-base", default_value = "10.128.0.0/9")]
    pub cluster_cidr: String,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Range the nodes' InternalIP addresses come from, in node-index order.
    #[arg(long, default_value = "100.64.0.0/10")]
    pub node_ip_range: String,
    /// Lease duration; each node renews its Lease every quarter of it.
    #[arg(long, default_value_t = 40)]
    pub node_lease_duration_seconds: u32,
    /// How often an unchanged node status is re-posted (e.g. `5m`, `30s`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub node_status_report_frequency: Duration,
    /// Requests in flight to the apiserver at most, across all nodes: this many node
    /// requests (registrations, heartbeats) plus this many pod requests.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// Pods with restartPolicy Never or OnFailure succeed this long after starting
    /// (e.g. `10s`); by default every pod runs until deleted.
    #[arg(long, value_parser = parse_duration)]
    pub complete_after: Option<Duration>,
}

/// Parses a Go-style duration with one unit: `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m)"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m)")),
    })
}

impl HollowArgs {
    /// The configuration these flags describe, checked.
    pub fn config(&self) -> Result<HollowConfig, ConfigError> {
        let cidr = |flag: &'static str, v: &str| v.parse().map_err(|source| ConfigError::Cidr { flag, source });
        let cfg = HollowConfig {
            nodes: self.nodes,
            first_index: self.first_index,
            name_prefix: self.name_prefix.clone(),
            capacity: Capacity {
                cpu: self.cpu.clone(),
                memory: self.memory.clone(),
                pods: self.pods,
                ephemeral_storage: self.ephemeral_storage.clone(),
            },
            labels: parse_labels(&self.labels)?,
            taints: parse_taints(&self.taints)?,
            cluster_cidr: cidr("cluster-cidr", &self.cluster_cidr)?,
            node_cidr_mask_size: self.node_cidr_mask_size,
            node_ip_range: cidr("node-ip-range", &self.node_ip_range)?,
            lease_duration_seconds: self.node_lease_duration_seconds,
            status_report_frequency: self.node_status_report_frequency,
            max_in_flight: self.max_in_flight,
            complete_after: self.complete_after,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs `skiff hollow` until SIGINT or SIGTERM.
pub async fn run(args: HollowArgs) -> Result<(), Error> {
    let cfg = args.config()?;
    let path = args.kubeconfig.display().to_string();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig).map_err(|source| Error::Kubeconfig {
        path: path.clone(),
        source,
    })?;
    let client_cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig { path, source })?;
    let url = client_cfg.cluster_url.to_string();
    let client = kube::Client::try_from(client_cfg).map_err(Error::Client)?;
    client
        .apiserver_version()
        .await
        .map_err(|source| Error::Unreachable { url, source })?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping hollow nodes");
        token.cancel();
    });
    crate::run(client, cfg, Arc::new(Stats::default()), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: HollowArgs,
    }

    fn parse(extra: &[&str]) -> Result<HollowConfig, String> {
        let mut argv = vec!["hollow", "--kubeconfig", "/dev/null"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.args.config().map_err(|e| crate::config::chain(&e))
    }

    #[test]
    fn flags_build_the_configuration() {
        let c = parse(&[
            "--nodes",
            "3",
            "--cpu",
            "8",
            "--memory",
            "32Gi",
            "--max-pods",
            "50",
            "--node-labels",
            "zone=a",
            "--taints",
            "dedicated=gpu:NoSchedule",
            "--pod-cidr-base",
            "10.200.0.0/16",
            "--complete-after",
            "2s",
        ])
        .unwrap();
        assert_eq!(c.nodes, 3);
        assert_eq!(c.capacity.cpu, "8");
        assert_eq!(c.capacity.pods, 50);
        assert_eq!(c.labels["zone"], "a");
        assert_eq!(c.taints[0].effect, "NoSchedule");
        assert_eq!(c.pod_cidr(2).to_string(), "10.200.2.0/24");
        assert_eq!(c.complete_after, Some(Duration::from_secs(2)));
        assert_eq!(c.status_report_frequency, Duration::from_secs(300));
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(parse(&["--cpu", "4"]).unwrap_err().contains("--nodes"));
        assert_eq!(
            parse(&["--nodes", "300", "--cluster-cidr", "10.200.0.0/16"]).unwrap_err(),
            "--cluster-cidr: 10.200.0.0/16 holds 256 /24 subnets, 300 are needed"
        );
        assert!(
            parse(&["--nodes", "1", "--cluster-cidr", "10.200.0.0"])
                .unwrap_err()
                .starts_with("--cluster-cidr: ")
        );
        assert!(
            parse(&["--nodes", "1", "--taints", "x"])
                .unwrap_err()
                .starts_with("--taints: ")
        );
        assert!(parse(&["--nodes", "0"]).unwrap_err().starts_with("--nodes: "));
        assert!(
            parse(&["--nodes", "1", "--complete-after", "soon"])
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse(&["--nodes", "1", "--node-cidr-mask-size", "28"])
                .unwrap_err()
                .starts_with("--node-cidr-mask-size: ")
        );
    }
}
