//! The objects a hollow node writes about itself, as pure functions: the Node it
//! registers (labels, taints, podCIDR, capacity, conditions, addresses, nodeInfo —
//! the kubelet's `initialNode` plus its first status), the status it re-posts as a
//! heartbeat, and its Lease in `kube-node-lease` (owned by the Node, as the kubelet's
//! lease controller creates it).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use serde_json::{Value, json};

use crate::config::HollowConfig;

/// `kubeletVersion` a hollow node reports in `status.nodeInfo`.
pub const KUBELET_VERSION: &str = "v1.33.0-skiff-hollow";
/// `containerRuntimeVersion` a hollow node reports: there is no runtime.
pub const RUNTIME_VERSION: &str = "hollow://0.1.0";
/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Label every hollow node carries (`type=hollow`, as KWOK marks its fake nodes with
/// `type=kwok`), so workloads can select or avoid them.
pub const TYPE_LABEL: (&str, &str) = ("type", "hollow");

/// Port hollow nodes advertise as their kubelet endpoint. Nothing listens there:
/// `kubectl logs`/`exec` against a hollow pod fail as they would against an
/// unreachable kubelet.
pub const KUBELET_PORT: i32 = 10250;

/// Architecture in Go's naming (`amd64`, `arm64`).
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The `status` of node `index` (global index): capacity, allocatable, conditions with
/// `now` as heartbeat and `since` as transition time, addresses, daemon endpoints and
/// nodeInfo.
pub fn node_status(cfg: &HollowConfig, index: u32, now: &str, since: &str) -> Value {
    let name = cfg.node_name(index);
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    let capacity = json!({
        "cpu": cfg.capacity.cpu,
        "memory": cfg.capacity.memory,
        "pods": cfg.capacity.pods.to_string(),
        "ephemeral-storage": cfg.capacity.ephemeral_storage,
    });
    // A stable, distinct machine identity per node, derived from its name.
    let id = format!("{:0>32x}", u128::from(index) | (0x486f_6c6c_6f77u128 << 80));
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip(index).to_string()},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "machineID": id, "systemUUID": id, "bootID": id,
            "kernelVersion": "hollow", "osImage": "Skiff hollow node",
            "containerRuntimeVersion": RUNTIME_VERSION, "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch(),
        },
    })
}

/// The Node that node `index` registers, status included (the apiserver keeps a
/// Node's status on create, which is how the kubelet registers in one request).
pub fn node_object(cfg: &HollowConfig, index: u32, now: &str) -> Node {
    let name = cfg.node_name(index);
    let mut labels = cfg.labels.clone();
    for (k, v) in [
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch()),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    labels.entry(TYPE_LABEL.0.into()).or_insert_with(|| TYPE_LABEL.1.into());
    let pod_cidr = cfg.pod_cidr(index).to_string();
    let mut spec = json!({"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]});
    if !cfg.taints.is_empty() {
        spec["taints"] = serde_json::to_value(&cfg.taints).expect("taints serialize");
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": node_status(cfg, index, now, now),
    }))
    .expect("a valid Node")
}

/// The Lease of node `name` renewed at `now`: holder the node, duration from the
/// config, owned by the Node (uid `node_uid`) so that deleting the Node collects it.
/// `resource_version` makes the write a compare-and-swap (`None` for a create).
pub fn lease_object(
    name: &str,
    node_uid: &str,
    duration_seconds: u32,
    resource_version: Option<&str>,
    now: jiff::Timestamp,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            resource_version: resource_version.map(String::from),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.to_string(),
                uid: node_uid.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_string()),
            lease_duration_seconds: Some(duration_seconds as i32),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Whether a Node as seen in the API needs its status re-posted: its Ready condition
/// is missing or not `True` (the node lifecycle controller marked it `Unknown` after
/// missed heartbeats, or someone edited it).
pub fn needs_status(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_none_or(|c| c.status != "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_taints;

    #[test]
    fn registered_node_carries_what_the_scheduler_reads() {
        let cfg = HollowConfig {
            nodes: 3,
            labels: crate::config::parse_labels("zone=a").unwrap(),
            taints: parse_taints("dedicated=gpu:NoSchedule").unwrap(),
            ..Default::default()
        };
        let n = node_object(&cfg, 2, "2026-01-01T00:00:00Z");
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["metadata"]["name"], "hollow-2");
        assert_eq!(v["metadata"]["labels"]["kubernetes.io/hostname"], "hollow-2");
        assert_eq!(v["metadata"]["labels"]["kubernetes.io/os"], "linux");
        assert_eq!(v["metadata"]["labels"]["type"], "hollow");
        assert_eq!(v["metadata"]["labels"]["zone"], "a");
        assert_eq!(v["spec"]["podCIDR"], "10.128.2.0/24");
        assert_eq!(v["spec"]["taints"][0]["key"], "dedicated");
        assert_eq!(v["status"]["allocatable"]["cpu"], "4");
        assert_eq!(v["status"]["allocatable"]["memory"], "16Gi");
        assert_eq!(v["status"]["allocatable"]["pods"], "110");
        assert_eq!(v["status"]["addresses"][0]["address"], "100.64.0.3");
        assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert!(!needs_status(&n));
        let other = serde_json::to_value(node_object(&cfg, 1, "2026-01-01T00:00:00Z")).unwrap();
        assert_ne!(
            other["status"]["nodeInfo"]["machineID"],
            v["status"]["nodeInfo"]["machineID"]
        );
    }

    #[test]
    fn heartbeat_keeps_transition_time() {
        let cfg = HollowConfig::default();
        let s = node_status(&cfg, 0, "T2", "T1");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["lastHeartbeatTime"], "T2");
        assert_eq!(ready["lastTransitionTime"], "T1");
    }

    #[test]
    fn lease_is_owned_by_its_node() {
        let l = lease_object("hollow-0", "uid-1", 40, Some("7"), jiff::Timestamp::UNIX_EPOCH);
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["spec"]["holderIdentity"], "hollow-0");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(v["spec"]["renewTime"], "1970-01-01T00:00:00.000000Z");
    }
}
