//! What a set of hollow nodes looks like and how it behaves: names, capacity,
//! labels, taints, address ranges and the kubelet timings it imitates. Parsing of the
//! `k=v,...` and `key[=value]:Effect,...` flag syntaxes (the kubelet's `--node-labels`
//! and `--register-with-taints`) lives here as pure functions.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

use crate::cidr::{CidrError, Ipv4Cidr};

/// A configuration that cannot work; the message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A `--labels` entry is not `key=value` with a valid key and value.
    #[error("--labels: {entry:?}: {why}")]
    Label {
        /// The offending entry.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `--taints` entry is not `key[=value]:Effect`.
    #[error("--taints: {entry:?}: {why}")]
    Taint {
        /// The offending entry.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// A resource quantity flag does not parse or is not positive.
    #[error("--{flag}: {value:?} is not a positive quantity (e.g. 4, 500m, 16Gi)")]
    Quantity {
        /// The flag (`cpu`, `memory`, `ephemeral-storage`).
        flag: &'static str,
        /// The value given.
        value: String,
    },
    /// An address range flag is malformed or too small for the node count (the
    /// source says how).
    #[error("--{flag}")]
    Cidr {
        /// The flag (`cluster-cidr`, `node-ip-range`).
        flag: &'static str,
        /// What is wrong.
        #[source]
        source: CidrError,
    },
    /// The node names would not be valid (RFC 1123 subdomain, at most 253 characters).
    #[error("--name-prefix: {prefix:?} does not give valid node names ({why})")]
    NamePrefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong with it.
        why: String,
    },
    /// Some other flag value is out of range.
    #[error("--{flag}: {why}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// Capacity each hollow node reports; allocatable is the same (no system reservations,
/// as a kubelet without `--kube-reserved`/`--system-reserved`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// CPU quantity (`4`, `3500m`).
    pub cpu: String,
    /// Memory quantity (`16Gi`).
    pub memory: String,
    /// Maximum pods (`--max-pods`).
    pub pods: u32,
    /// Ephemeral storage quantity (`100Gi`).
    pub ephemeral_storage: String,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
        }
    }
}

/// Everything about a set of hollow nodes run by one process.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// Number of nodes.
    pub nodes: u32,
    /// Index of the first node: node `i` is named `{name_prefix}{first_index + i}` and
    /// gets the `(first_index + i)`-th pod CIDR and node address, so several processes
    /// with disjoint index ranges can share one cluster.
    pub first_index: u32,
    /// Node name prefix.
    pub name_prefix: String,
    /// Capacity (= allocatable) of every node.
    pub capacity: Capacity,
    /// Labels added to the kubelet's well-known ones (`kubernetes.io/hostname`, `kubernetes.io/os`, ...).
    pub labels: BTreeMap<String, String>,
    /// Taints registered with the node (`--register-with-taints`).
    pub taints: Vec<Taint>,
    /// Range the per-node pod CIDRs are carved from (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Cidr,
    /// Prefix length of each node's pod CIDR (`--node-cidr-mask-size`).
    pub node_cidr_mask_size: u8,
    /// Range the nodes' InternalIP addresses come from.
    pub node_ip_range: Ipv4Cidr,
    /// Lease duration in seconds (kubelet `nodeLeaseDurationSeconds`); the lease is
    /// renewed every quarter of it, as the kubelet does (40 s, renewed every 10 s).
    pub lease_duration_seconds: u32,
    /// How often the node status is re-posted when nothing changed (kubelet
    /// `nodeStatusReportFrequency`, 5 minutes).
    pub status_report_frequency: Duration,
    /// Requests in flight to the apiserver at most, across all nodes: this many node
    /// requests (registrations, heartbeats) and this many pod requests.
    pub max_in_flight: usize,
    /// Pods with `restartPolicy` `Never` or `OnFailure` finish successfully this long
    /// after they start running; `None`: every pod runs until it is deleted.
    pub complete_after: Option<Duration>,
}

impl Default for HollowConfig {
    fn default() -> Self {
        Self {
            nodes: 1,
            first_index: 0,
            name_prefix: "hollow-".into(),
            capacity: Capacity::default(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cluster_cidr: "10.128.0.0/9".parse().expect("valid default"),
            node_cidr_mask_size: 24,
            node_ip_range: "100.64.0.0/10".parse().expect("valid default"),
            lease_duration_seconds: 40,
            status_report_frequency: Duration::from_secs(300),
            max_in_flight: 64,
            complete_after: None,
        }
    }
}

impl HollowConfig {
    /// Checks the configuration as a whole: names, quantities, and that the address
    /// ranges hold every node's pod CIDR and address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes == 0 {
            return Err(ConfigError::Invalid {
                flag: "nodes",
                why: "must be at least 1".into(),
            });
        }
        let last = u64::from(self.first_index) + u64::from(self.nodes);
        if last > u64::from(u32::MAX) {
            return Err(ConfigError::Invalid {
                flag: "first-index",
                why: "first index plus node count overflows".into(),
            });
        }
        check_name_prefix(&self.name_prefix, last - 1)?;
        for (flag, value) in [
            ("cpu", &self.capacity.cpu),
            ("memory", &self.capacity.memory),
            ("ephemeral-storage", &self.capacity.ephemeral_storage),
        ] {
            if !is_positive_quantity(value) {
                return Err(ConfigError::Quantity {
                    flag,
                    value: value.clone(),
                });
            }
        }
        if self.capacity.pods == 0 {
            return Err(ConfigError::Invalid {
                flag: "pods",
                why: "must be at least 1".into(),
            });
        }
        if !(8..=30).contains(&self.node_cidr_mask_size) {
            return Err(ConfigError::Invalid {
                flag: "node-cidr-mask-size",
                why: format!("{} is not within 8..=30", self.node_cidr_mask_size),
            });
        }
        self.cluster_cidr
            .check_subnets(self.node_cidr_mask_size, last)
            .map_err(|source| ConfigError::Cidr {
                flag: "cluster-cidr",
                source,
            })?;
        let per_node = self
            .cluster_cidr
            .subnet(self.node_cidr_mask_size, 0)
            .map(|c| c.pod_offsets().len())
            .unwrap_or(0);
        if (per_node as u64) < u64::from(self.capacity.pods) {
            return Err(ConfigError::Invalid {
                flag: "node-cidr-mask-size",
                why: format!(
                    "a /{} holds {per_node} pod addresses, fewer than --pods {}",
                    self.node_cidr_mask_size, self.capacity.pods
                ),
            });
        }
        self.node_ip_range
            .check_addresses(last)
            .map_err(|source| ConfigError::Cidr {
                flag: "node-ip-range",
                source,
            })?;
        if self.lease_duration_seconds < 4 {
            return Err(ConfigError::Invalid {
                flag: "node-lease-duration-seconds",
                why: "must be at least 4".into(),
            });
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Invalid {
                flag: "max-in-flight",
                why: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// How often each node renews its Lease: a quarter of the lease duration
    /// (upstream `renewInterval = 0.25 * nodeLeaseDurationSeconds`).
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.lease_duration_seconds) * 250)
    }

    /// Name of the node with the given global index.
    pub fn node_name(&self, index: u32) -> String {
        format!("{}{index}", self.name_prefix)
    }

    /// The local slot (`0..nodes`) of a node name run by this process, if it is one.
    pub fn slot_of(&self, name: &str) -> Option<u32> {
        let digits = name.strip_prefix(self.name_prefix.as_str())?;
        // Exactly the canonical decimal form: no sign, no leading zeros.
        if digits.is_empty()
            || (digits.len() > 1 && digits.starts_with('0'))
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let index: u32 = digits.parse().ok()?;
        let slot = index.checked_sub(self.first_index)?;
        (slot < self.nodes).then_some(slot)
    }

    /// Pod CIDR of the node with the given global index (valid after [`Self::validate`]).
    pub fn pod_cidr(&self, index: u32) -> Ipv4Cidr {
        self.cluster_cidr
            .subnet(self.node_cidr_mask_size, u64::from(index))
            .expect("validated: the cluster CIDR holds every node's pod CIDR")
    }

    /// InternalIP of the node with the given global index (valid after [`Self::validate`]).
    pub fn node_ip(&self, index: u32) -> std::net::Ipv4Addr {
        self.node_ip_range
            .address(u64::from(index) + 1)
            .expect("validated: the node IP range holds every node")
    }
}

fn is_positive_quantity(s: &str) -> bool {
    skiff_api::quantity::parse_milli(s).is_ok_and(|m| m > 0)
}

fn check_name_prefix(prefix: &str, last_index: u64) -> Result<(), ConfigError> {
    let longest = format!("{prefix}{last_index}");
    let bad = |why: &str| ConfigError::NamePrefix {
        prefix: prefix.to_string(),
        why: why.to_string(),
    };
    if longest.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in longest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad(
                "lower-case letters, digits, '-' and '.' only, starting with a letter or digit",
            ));
        }
    }
    Ok(())
}

fn check_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// Whether `key` is a valid label (or taint) key: an optional DNS-subdomain prefix and
/// `/`, then a name of at most 63 characters.
pub fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
                && check_label_name(name)
        }
        None => check_label_name(key),
    }
}

/// Whether `value` is a valid label value (empty, or a name of at most 63 characters).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || check_label_name(value)
}

/// Parses `k=v,k2=v2` (empty string: no labels).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| ConfigError::Label {
            entry: entry.to_string(),
            why: why.to_string(),
        };
        let (k, v) = entry.split_once('=').ok_or_else(|| bad("expected key=value"))?;
        if !is_qualified_name(k) {
            return Err(bad("invalid label key"));
        }
        if !is_label_value(v) {
            return Err(bad("invalid label value"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses `key[=value]:Effect,...` with Effect one of `NoSchedule`, `PreferNoSchedule`,
/// `NoExecute` (empty string: no taints).
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, ConfigError> {
    let mut out: Vec<Taint> = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| ConfigError::Taint {
            entry: entry.to_string(),
            why: why.to_string(),
        };
        let (kv, effect) = entry
            .rsplit_once(':')
            .ok_or_else(|| bad("expected key[=value]:Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(bad("effect must be NoSchedule, PreferNoSchedule or NoExecute"));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (kv, None),
        };
        if !is_qualified_name(key) {
            return Err(bad("invalid taint key"));
        }
        if value.is_some_and(|v| !is_label_value(v)) {
            return Err(bad("invalid taint value"));
        }
        if out.iter().any(|t| t.key == key && t.effect == effect) {
            return Err(bad("duplicate key and effect"));
        }
        out.push(Taint {
            key: key.to_string(),
            value: value.filter(|v| !v.is_empty()).map(String::from),
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

/// The error and its sources, `: `-separated (as `{:#}` of an `anyhow::Error` prints it).
#[cfg(test)]
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_reject_bad_entries() {
        let l = parse_labels("type=hollow, topology.kubernetes.io/zone=z1,empty=").unwrap();
        assert_eq!(l["type"], "hollow");
        assert_eq!(l["topology.kubernetes.io/zone"], "z1");
        assert_eq!(l["empty"], "");
        assert!(parse_labels("").unwrap().is_empty());
        for bad in ["novalue", "-a=b", "a=b c", "a/b/c=d", &format!("k={}", "x".repeat(64))] {
            let e = parse_labels(bad).unwrap_err().to_string();
            assert!(e.starts_with("--labels: "), "{e}");
        }
    }

    #[test]
    fn taints_parse_like_register_with_taints() {
        let t = parse_taints("dedicated=gpu:NoSchedule,example.com/flaky:PreferNoSchedule").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].key.as_str(), t[0].value.as_deref(), t[0].effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        assert_eq!((t[1].key.as_str(), t[1].value.as_deref()), ("example.com/flaky", None));
        assert_eq!(
            parse_taints("a=b:Sometimes").unwrap_err().to_string(),
            "--taints: \"a=b:Sometimes\": effect must be NoSchedule, PreferNoSchedule or NoExecute"
        );
        assert!(parse_taints("a=b").is_err());
        assert!(parse_taints("a:NoSchedule,a=x:NoSchedule").is_err());
    }

    #[test]
    fn quantities() {
        for ok in ["4", "500m", "16Gi", "1.5", "1e3", "100M"] {
            assert!(is_positive_quantity(ok), "{ok}");
        }
        for bad in ["", "0", "-1", "4 cores", "16GB", "Gi"] {
            assert!(!is_positive_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_flag() {
        let mut c = HollowConfig {
            nodes: 5000,
            ..Default::default()
        };
        c.validate().unwrap();
        c.cluster_cidr = "10.200.0.0/16".parse().unwrap();
        assert_eq!(
            chain(&c.validate().unwrap_err()),
            "--cluster-cidr: 10.200.0.0/16 holds 256 /24 subnets, 5000 are needed"
        );
        c.cluster_cidr = "10.200.0.0/12".parse().unwrap();
        c.capacity.memory = "lots".into();
        assert!(c.validate().unwrap_err().to_string().starts_with("--memory: "));
        c.capacity.memory = "16Gi".into();
        c.name_prefix = "Hollow_".into();
        assert!(c.validate().unwrap_err().to_string().starts_with("--name-prefix: "));
    }

    #[test]
    fn node_names_map_back_to_slots() {
        let c = HollowConfig {
            nodes: 10,
            first_index: 100,
            ..Default::default()
        };
        assert_eq!(c.node_name(100), "hollow-100");
        assert_eq!(c.slot_of("hollow-100"), Some(0));
        assert_eq!(c.slot_of("hollow-109"), Some(9));
        for other in [
            "hollow-110",
            "hollow-99",
            "hollow-0100",
            "hollow-",
            "hollow-+101",
            "other-101",
            "hollow-1x",
        ] {
            assert_eq!(c.slot_of(other), None, "{other}");
        }
        assert_eq!(c.pod_cidr(100).to_string(), "10.128.100.0/24");
        assert_eq!(c.node_ip(100).to_string(), "100.64.0.101");
        assert_eq!(c.renew_interval(), Duration::from_secs(10));
    }
}
