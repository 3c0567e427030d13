//! Node registration and heartbeats: the Node object with capacity, allocatable,
//! conditions, addresses and nodeInfo, its status refreshed every 10 s, and a Lease in
//! `kube-node-lease` renewed every 10 s (upstream node-lease heartbeat, 40 s duration).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cri::Cri;
use crate::{Error, KubeletConfig};

/// Version the kubelet reports.
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
const LEASE_DURATION_SECONDS: i32 = 40;

/// Host facts for capacity and nodeInfo.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// `PRETTY_NAME` from os-release.
    pub os_image: String,
    /// machine-id.
    pub machine_id: String,
    /// boot id.
    pub boot_id: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl HostInfo {
    /// Reads the host facts from /proc and /etc.
    pub fn detect() -> Self {
        let meminfo = read("/proc/meminfo");
        let memory_kib: u64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        Self {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_bytes: memory_kib * 1024,
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node object the kubelet registers (labels, spec, initial status).
pub fn node_object(cfg: &KubeletConfig, node_ip: IpAddr) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ]);
    if cfg.control_plane {
        labels.insert("node-role.kubernetes.io/control-plane".into(), "true".into());
    }
    let _ = node_ip;
    // Without `--pod-cidr` the node IPAM controller assigns one.
    let spec = match &cfg.pod_cidr {
        Some(cidr) => json!({"podCIDR": cidr, "podCIDRs": [cidr]}),
        None => json!({}),
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels},
        "spec": spec,
    }))
    .expect("valid node")
}

/// The node's `status` for the given readiness.
pub fn node_status(
    cfg: &KubeletConfig,
    host: &HostInfo,
    node_ip: IpAddr,
    runtime_version: &str,
    ready: bool,
    not_ready_message: &str,
    prev: Option<&Value>,
) -> Value {
    let now = skiff_api::events::now_string();
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        let transition = prev
            .and_then(|p| p.pointer("/conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .filter(|c| c["status"] == status)
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or(json!(now));
        json!({"type": t, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": transition})
    };
    let capacity = json!({
        "cpu": host.cpus.to_string(),
        "memory": format!("{}Ki", host.memory_bytes / 1024),
        "pods": "110",
        "ephemeral-storage": format!("{}Ki", disk_kib(&cfg.root_dir)),
    });
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            if ready {
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
            } else {
                cond("Ready", "False", "KubeletNotReady", &format!("container runtime not ready: {not_ready_message}"))
            },
        ],
        "addresses": [
            {"type": "InternalIP", "address": node_ip.to_string()},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
        "nodeInfo": {
            "machineID": host.machine_id, "systemUUID": host.machine_id, "bootID": host.boot_id,
            "kernelVersion": host.kernel, "osImage": host.os_image,
            "containerRuntimeVersion": runtime_version, "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch(),
        },
    })
}

#[allow(unsafe_code)]
fn disk_kib(path: &std::path::Path) -> u64 {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we pass; `c` is a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) == 0 {
            (s.f_blocks as u64 * s.f_frsize as u64) / 1024
        } else {
            0
        }
    }
}

/// Registers the node (create, or adopt an existing one) and keeps its status and
/// lease fresh until `shutdown`; a notification on `network_ready` triggers an
/// immediate status update.
pub async fn run(
    client: kube::Client,
    cfg: KubeletConfig,
    node_ip: IpAddr,
    cri: Cri,
    network_ready: std::sync::Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let host = HostInfo::detect();
    let name = cfg.node_name.clone();
    match nodes.create(&PostParams::default(), &node_object(&cfg, node_ip)).await {
        Ok(_) => tracing::info!(node = %name, "node registered"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = serde_json::to_value(node_object(&cfg, node_ip))?;
            nodes
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"metadata": {"labels": patch["metadata"]["labels"]}})),
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        let runtime_version = cri.version().await.unwrap_or_else(|_| "containerd://unknown".into());
        let (ready, why) = cri.ready().await.unwrap_or_else(|e| (false, e.to_string()));
        let prev = nodes
            .get_status(&name)
            .await
            .ok()
            .and_then(|n| serde_json::to_value(n.status).ok());
        let status = node_status(&cfg, &host, node_ip, &runtime_version, ready, &why, prev.as_ref());
        if let Err(e) = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await
        {
            tracing::warn!(error = %e, "updating node status failed");
        }
        if let Err(e) = renew_lease(&leases, &name).await {
            tracing::warn!(error = %e, "renewing node lease failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
            // The pod network just became ready: report it now.
            _ = network_ready.notified() => {}
        }
    }
}

async fn renew_lease(leases: &Api<Lease>, name: &str) -> Result<(), kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    match leases.get_opt(name).await? {
        Some(mut l) => {
            let spec = l.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(name.to_string());
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
            leases.replace(name, &PostParams::default(), &l).await?;
        }
        None => {
            let l: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS},
            }))
            .expect("valid lease");
            let mut l = l;
            l.spec.get_or_insert_with(Default::default).renew_time = Some(now);
            leases.create(&PostParams::default(), &l).await?;
        }
    }
    Ok(())
}
