//! Node IPAM (upstream `pkg/controller/nodeipam`, the range allocator of
//! `--allocate-node-cidrs`): every Node gets a `spec.podCIDR` (and the same single
//! entry in `spec.podCIDRs`) carved out of `--cluster-cidr` with prefix length
//! `--node-cidr-mask-size`, and the kubelets write their CNI configuration from it.
//!
//! - A CIDR is never handed out twice: the [`CidrSet`] is rebuilt from every listed
//!   Node before anything is allocated (so a restarted controller, or the next leader of
//!   an HA control plane, continues where the last one stopped), and the patch that
//!   assigns a CIDR carries the Node's `resourceVersion`, so a Node that changed
//!   meanwhile (another allocator, a kubelet) answers 409 and is re-read instead of
//!   overwritten.
//! - A Node that already has a podCIDR keeps it (hollow nodes and `--pod-cidr`
//!   kubelets choose their own); inside the range it is marked used.
//! - Deleting a Node releases its CIDR.
//! - When the range is full the Node gets the upstream `CIDRNotAvailable` event
//!   (`Node <name> status is now: CIDRNotAvailable`) and waits until a CIDR is
//!   released.
//!
//! IPv4 only: IPv6 and dual-stack cluster CIDRs are rejected by [`CidrSet::new`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

/// Upstream's limit on `--node-cidr-mask-size` minus the cluster CIDR's prefix length
/// (at most 2^16 node CIDRs per range).
pub const MAX_SUBNET_BITS: u8 = 16;
/// Reason of the event recorded on a Node when the range is full (upstream).
pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
/// How often Nodes still waiting for a CIDR (range full, API errors) are retried.
const RETRY_PERIOD: Duration = Duration::from_secs(5);
const COMPONENT: &str = "node-ipam-controller";

/// What the allocator refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrSetError {
    /// `--node-cidr-mask-size` is shorter than the cluster CIDR's prefix or longer than 32.
    #[error("--node-cidr-mask-size {mask} does not fit in --cluster-cidr {cluster} (it must be within {}..=32)", cluster.prefix_len())]
    MaskOutOfRange {
        /// The cluster CIDR.
        cluster: Ipv4Net,
        /// The node CIDR prefix length.
        mask: u8,
    },
    /// The range would hold more than 2^16 node CIDRs (upstream's limit).
    #[error(
        "--cluster-cidr {cluster} with --node-cidr-mask-size {mask} makes more than 2^{MAX_SUBNET_BITS} node CIDRs"
    )]
    TooManySubnets {
        /// The cluster CIDR.
        cluster: Ipv4Net,
        /// The node CIDR prefix length.
        mask: u8,
    },
    /// Every node CIDR of the range is in use.
    #[error("no remaining CIDRs of size /{mask} in {cluster}")]
    Full {
        /// The cluster CIDR.
        cluster: Ipv4Net,
        /// The node CIDR prefix length.
        mask: u8,
    },
    /// A CIDR to occupy or release does not overlap the range.
    #[error("{cidr} is not inside the cluster CIDR {cluster}")]
    NotInRange {
        /// The CIDR given.
        cidr: Ipv4Net,
        /// The cluster CIDR.
        cluster: Ipv4Net,
    },
}

/// The node CIDRs of one cluster CIDR and which are in use (upstream `cidrset.CidrSet`).
///
/// Allocation is round-robin: the search for a free CIDR starts after the last one
/// handed out, so a CIDR just released is not reused at once.
#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: Ipv4Net,
    mask: u8,
    used: Vec<bool>,
    allocated: usize,
    next: usize,
}

impl CidrSet {
    /// The node CIDRs of prefix length `mask` inside `cluster`, none used.
    ///
    /// Errors: [`CidrSetError::MaskOutOfRange`], [`CidrSetError::TooManySubnets`].
    pub fn new(cluster: Ipv4Net, mask: u8) -> Result<Self, CidrSetError> {
        let cluster = cluster.trunc();
        if mask < cluster.prefix_len() || mask > 32 {
            return Err(CidrSetError::MaskOutOfRange { cluster, mask });
        }
        if mask - cluster.prefix_len() > MAX_SUBNET_BITS {
            return Err(CidrSetError::TooManySubnets { cluster, mask });
        }
        Ok(Self {
            cluster,
            mask,
            used: vec![false; 1 << (mask - cluster.prefix_len())],
            allocated: 0,
            next: 0,
        })
    }

    /// How many node CIDRs the range holds.
    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    /// How many are in use.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    fn subnet(&self, index: usize) -> Ipv4Net {
        let base = u64::from(u32::from(self.cluster.network())) + ((index as u64) << (32 - u32::from(self.mask)));
        Ipv4Net::new(Ipv4Addr::from(base as u32), self.mask).expect("mask <= 32")
    }

    /// Hands out the next free node CIDR. Errors: [`CidrSetError::Full`].
    pub fn allocate_next(&mut self) -> Result<Ipv4Net, CidrSetError> {
        let n = self.used.len();
        for offset in 0..n {
            let i = (self.next + offset) % n;
            if !self.used[i] {
                self.used[i] = true;
                self.allocated += 1;
                self.next = (i + 1) % n;
                return Ok(self.subnet(i));
            }
        }
        Err(CidrSetError::Full {
            cluster: self.cluster,
            mask: self.mask,
        })
    }

    /// The indices of the node CIDRs `cidr` overlaps (all of them when it contains the
    /// whole range, the one containing it when it is smaller than a node CIDR).
    fn indices(&self, cidr: Ipv4Net) -> Result<std::ops::Range<usize>, CidrSetError> {
        let cidr = cidr.trunc();
        if cidr.contains(&self.cluster) {
            return Ok(0..self.used.len());
        }
        if !self.cluster.contains(&cidr) {
            return Err(CidrSetError::NotInRange {
                cidr,
                cluster: self.cluster,
            });
        }
        let shift = 32 - u32::from(self.mask);
        let offset = |a: Ipv4Addr| ((u32::from(a) - u32::from(self.cluster.network())) as u64 >> shift) as usize;
        Ok(offset(cidr.network())..offset(cidr.broadcast()) + 1)
    }

    /// Marks every node CIDR `cidr` overlaps as used (an existing assignment).
    /// Errors: [`CidrSetError::NotInRange`].
    pub fn occupy(&mut self, cidr: Ipv4Net) -> Result<(), CidrSetError> {
        for i in self.indices(cidr)? {
            if !self.used[i] {
                self.used[i] = true;
                self.allocated += 1;
            }
        }
        Ok(())
    }

    /// Marks every node CIDR `cidr` overlaps as free. Errors: [`CidrSetError::NotInRange`].
    pub fn release(&mut self, cidr: Ipv4Net) -> Result<(), CidrSetError> {
        for i in self.indices(cidr)? {
            if self.used[i] {
                self.used[i] = false;
                self.allocated -= 1;
            }
        }
        Ok(())
    }

    /// Whether the node CIDR containing `cidr`'s first address is used (false outside the range).
    pub fn is_used(&self, cidr: Ipv4Net) -> bool {
        self.indices(cidr).is_ok_and(|r| self.used[r.start])
    }
}

/// Settings of the node IPAM controller (upstream `--cluster-cidr`,
/// `--node-cidr-mask-size`; `--allocate-node-cidrs` is implied by running it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIpamConfig {
    /// The range node CIDRs come from, e.g. `10.42.0.0/16`.
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's CIDR, e.g. 24.
    pub node_cidr_mask_size: u8,
}

impl NodeIpamConfig {
    /// Parses `--cluster-cidr` and checks `--node-cidr-mask-size` against it.
    ///
    /// Errors: a message naming the flag (not IPv4 CIDR notation, mask out of range,
    /// too many subnets).
    pub fn parse(cluster_cidr: &str, node_cidr_mask_size: u8) -> Result<Self, String> {
        let cluster: Ipv4Net = cluster_cidr
            .trim()
            .parse()
            .map_err(|_| format!("--cluster-cidr {cluster_cidr:?} is not an IPv4 CIDR (A.B.C.D/LEN)"))?;
        CidrSet::new(cluster, node_cidr_mask_size).map_err(|e| e.to_string())?;
        Ok(Self {
            cluster_cidr: cluster.trunc(),
            node_cidr_mask_size,
        })
    }
}

/// The IPv4 entries of a Node's `spec.podCIDRs` (or `spec.podCIDR` when the list is
/// empty); malformed and IPv6 entries are skipped.
pub fn node_cidrs(node: &Node) -> Vec<Ipv4Net> {
    let spec = node.spec.as_ref();
    let list: Vec<String> = spec
        .and_then(|s| s.pod_cidrs.clone())
        .filter(|l| !l.is_empty())
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
        .unwrap_or_default();
    list.iter()
        .filter_map(|c| c.parse::<Ipv4Net>().ok())
        .map(|c| c.trunc())
        .collect()
}

fn has_pod_cidr(node: &Node) -> bool {
    let spec = node.spec.as_ref();
    spec.and_then(|s| s.pod_cidr.as_deref()).is_some_and(|c| !c.is_empty())
        || spec.and_then(|s| s.pod_cidrs.as_ref()).is_some_and(|l| !l.is_empty())
}

/// The controller's memory: the set, which Node holds which CIDRs, and Nodes waiting.
struct Allocator {
    set: CidrSet,
    by_node: BTreeMap<String, Vec<Ipv4Net>>,
    /// Nodes without a CIDR that could not get one yet, and whether the range was full.
    pending: BTreeMap<String, bool>,
}

impl Allocator {
    fn new(config: &NodeIpamConfig) -> Self {
        Self {
            set: CidrSet::new(config.cluster_cidr, config.node_cidr_mask_size).expect("validated configuration"),
            by_node: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Records the CIDRs a Node holds (marking those inside the range used).
    fn observe(&mut self, name: &str, cidrs: Vec<Ipv4Net>) {
        let previous = self.by_node.insert(name.to_string(), cidrs.clone()).unwrap_or_default();
        for c in previous.iter().filter(|c| !cidrs.contains(c)) {
            self.release_unless_held(*c);
        }
        for c in cidrs {
            if self.set.occupy(c).is_err() {
                tracing::debug!(node = %name, cidr = %c, "node's podCIDR is outside the cluster CIDR; left alone");
            }
        }
    }

    /// Releases `cidr` unless another Node still holds it (duplicates set by hand).
    fn release_unless_held(&mut self, cidr: Ipv4Net) {
        if !self.by_node.values().flatten().any(|c| *c == cidr) {
            let _ = self.set.release(cidr);
        }
    }

    fn forget(&mut self, name: &str) {
        self.pending.remove(name);
        for c in self.by_node.remove(name).unwrap_or_default() {
            self.release_unless_held(c);
            tracing::info!(node = %name, cidr = %c, "released the podCIDR of a deleted node");
        }
    }
}

/// Why one assignment did not happen.
enum Outcome {
    Assigned,
    Full,
    Failed,
}

/// Gives `node` a CIDR unless it has one, patching with its resourceVersion as a
/// precondition; a 409 re-reads the Node and tries again.
async fn assign(api: &Api<Node>, client: &kube::Client, alloc: &mut Allocator, node: Node) -> Outcome {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut node = node;
    for _ in 0..8 {
        if has_pod_cidr(&node) {
            alloc.observe(&name, node_cidrs(&node));
            return Outcome::Assigned;
        }
        if node.metadata.deletion_timestamp.is_some() {
            return Outcome::Assigned;
        }
        let cidr = match alloc.set.allocate_next() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "no podCIDR available");
                let reference = crate::common::reference("v1", "Node", &node.metadata);
                let reference = k8s_openapi::api::core::v1::ObjectReference {
                    // Upstream records node events with the node name as uid.
                    uid: Some(name.clone()),
                    ..reference
                };
                crate::common::record(
                    client,
                    reference,
                    EventType::Normal,
                    CIDR_NOT_AVAILABLE,
                    &format!("Node {name} status is now: {CIDR_NOT_AVAILABLE}"),
                    COMPONENT,
                )
                .await;
                return Outcome::Full;
            }
        };
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
        });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(updated) => {
                tracing::info!(node = %name, %cidr, "assigned podCIDR");
                alloc.observe(&name, node_cidrs(&updated));
                return Outcome::Assigned;
            }
            Err(e) => {
                let _ = alloc.set.release(cidr);
                if crate::common::is_not_found(&e) {
                    return Outcome::Assigned;
                }
                if !crate::common::is_conflict(&e) {
                    tracing::warn!(node = %name, error = %e, "assigning podCIDR failed; will retry");
                    return Outcome::Failed;
                }
                match api.get_opt(&name).await {
                    Ok(Some(n)) => node = n,
                    Ok(None) => return Outcome::Assigned,
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "re-reading node failed; will retry");
                        return Outcome::Failed;
                    }
                }
            }
        }
    }
    Outcome::Failed
}

async fn assign_and_track(api: &Api<Node>, client: &kube::Client, alloc: &mut Allocator, node: Node) {
    let name = node.metadata.name.clone().unwrap_or_default();
    match assign(api, client, alloc, node).await {
        Outcome::Assigned => {
            alloc.pending.remove(&name);
        }
        Outcome::Full => {
            alloc.pending.insert(name, true);
        }
        Outcome::Failed => {
            alloc.pending.insert(name, false);
        }
    }
}

/// Runs the node IPAM controller until `shutdown`: watches Nodes; after each full
/// list rebuilds the used set from every Node's podCIDRs, then assigns CIDRs to the
/// Nodes without one; Nodes added later get one as they appear, deleted Nodes
/// release theirs, and Nodes left waiting are retried every 5 s.
pub async fn run(client: kube::Client, config: NodeIpamConfig, shutdown: CancellationToken) {
    let api: Api<Node> = Api::all(client.clone());
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .modify(crate::common::strip_managed_fields)
        .boxed();
    let mut alloc = Allocator::new(&config);
    let mut listing: Vec<Node> = Vec::new();
    let mut synced = false;
    let mut ticker = tokio::time::interval(RETRY_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(cluster_cidr = %config.cluster_cidr, mask = config.node_cidr_mask_size, "node IPAM controller started");
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.next() => e,
            _ = ticker.tick() => {
                if synced {
                    retry_pending(&api, &client, &mut alloc).await;
                }
                continue;
            }
        };
        match event {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
            Some(Ok(watcher::Event::Init)) => listing.clear(),
            Some(Ok(watcher::Event::InitApply(n))) => listing.push(n),
            Some(Ok(watcher::Event::InitDone)) => {
                // Everything known so far comes from this list: occupy every existing
                // assignment before handing out a single CIDR.
                alloc = Allocator::new(&config);
                for n in &listing {
                    alloc.observe(n.metadata.name.as_deref().unwrap_or_default(), node_cidrs(n));
                }
                tracing::info!(
                    nodes = listing.len(),
                    used = alloc.set.allocated(),
                    capacity = alloc.set.capacity(),
                    "node CIDRs in use"
                );
                synced = true;
                for n in std::mem::take(&mut listing) {
                    if !has_pod_cidr(&n) {
                        assign_and_track(&api, &client, &mut alloc, n).await;
                    }
                }
            }
            Some(Ok(watcher::Event::Apply(n))) => {
                if has_pod_cidr(&n) {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    alloc.pending.remove(&name);
                    alloc.observe(&name, node_cidrs(&n));
                } else {
                    assign_and_track(&api, &client, &mut alloc, n).await;
                }
            }
            Some(Ok(watcher::Event::Delete(n))) => {
                let name = n.metadata.name.as_deref().unwrap_or_default();
                let freed = alloc.by_node.contains_key(name);
                alloc.forget(name);
                if freed {
                    retry_pending(&api, &client, &mut alloc).await;
                }
            }
        }
    }
}

/// Tries again for the Nodes still waiting (those waiting on a full range only when a
/// CIDR is free).
async fn retry_pending(api: &Api<Node>, client: &kube::Client, alloc: &mut Allocator) {
    let names: BTreeSet<String> = alloc
        .pending
        .iter()
        .filter(|(_, full)| !**full || alloc.set.allocated() < alloc.set.capacity())
        .map(|(n, _)| n.clone())
        .collect();
    for name in names {
        match api.get_opt(&name).await {
            Ok(Some(n)) => assign_and_track(api, client, alloc, n).await,
            Ok(None) => alloc.forget(&name),
            Err(e) => tracing::warn!(node = %name, error = %e, "reading node failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_each_cidr_once_in_order() {
        let mut set = CidrSet::new(net("10.42.0.0/16"), 24).unwrap();
        assert_eq!(set.capacity(), 256);
        assert_eq!(set.allocate_next().unwrap(), net("10.42.0.0/24"));
        assert_eq!(set.allocate_next().unwrap(), net("10.42.1.0/24"));
        let mut seen = BTreeSet::new();
        seen.insert(net("10.42.0.0/24"));
        seen.insert(net("10.42.1.0/24"));
        while let Ok(c) = set.allocate_next() {
            assert!(seen.insert(c), "{c} handed out twice");
        }
        assert_eq!(seen.len(), 256);
        assert_eq!(
            set.allocate_next(),
            Err(CidrSetError::Full {
                cluster: net("10.42.0.0/16"),
                mask: 24
            })
        );
    }

    #[test]
    fn released_cidrs_are_reused_after_the_others() {
        let mut set = CidrSet::new(net("10.0.0.0/30"), 31).unwrap();
        let a = set.allocate_next().unwrap();
        let b = set.allocate_next().unwrap();
        assert_eq!((a, b), (net("10.0.0.0/31"), net("10.0.0.2/31")));
        assert!(set.allocate_next().is_err());
        set.release(a).unwrap();
        assert_eq!(set.allocated(), 1);
        assert_eq!(set.allocate_next().unwrap(), a);
        // Releasing twice is harmless.
        set.release(b).unwrap();
        set.release(b).unwrap();
        assert_eq!(set.allocated(), 1);
    }

    #[test]
    fn pre_existing_assignments_are_skipped() {
        let mut set = CidrSet::new(net("10.42.0.0/16"), 24).unwrap();
        set.occupy(net("10.42.0.0/24")).unwrap();
        set.occupy(net("10.42.2.0/23")).unwrap(); // a larger block: two node CIDRs
        set.occupy(net("10.42.5.128/25")).unwrap(); // a smaller one: its node CIDR
        assert!(set.is_used(net("10.42.3.0/24")));
        assert_eq!(set.allocated(), 4);
        assert_eq!(set.allocate_next().unwrap(), net("10.42.1.0/24"));
        assert_eq!(set.allocate_next().unwrap(), net("10.42.4.0/24"));
        assert_eq!(set.allocate_next().unwrap(), net("10.42.6.0/24"));
        assert_eq!(
            set.occupy(net("10.128.0.0/24")),
            Err(CidrSetError::NotInRange {
                cidr: net("10.128.0.0/24"),
                cluster: net("10.42.0.0/16")
            })
        );
        // A block containing the whole range uses all of it.
        set.occupy(net("10.0.0.0/8")).unwrap();
        assert!(set.allocate_next().is_err());
    }

    #[test]
    fn mask_sizes() {
        for (cluster, mask, capacity, first) in [
            ("10.42.0.0/16", 24, 256, "10.42.0.0/24"),
            ("10.42.0.0/16", 26, 1024, "10.42.0.0/26"),
            ("10.42.0.0/16", 16, 1, "10.42.0.0/16"),
            ("10.42.7.9/16", 20, 16, "10.42.0.0/20"),
            ("192.168.0.0/24", 32, 256, "192.168.0.0/32"),
            ("0.0.0.0/0", 16, 65536, "0.0.0.0/16"),
        ] {
            let mut set = CidrSet::new(net(cluster), mask).unwrap();
            assert_eq!(set.capacity(), capacity, "{cluster} /{mask}");
            assert_eq!(set.allocate_next().unwrap(), net(first));
        }
        let mut set = CidrSet::new(net("10.42.0.0/16"), 26).unwrap();
        set.allocate_next().unwrap();
        assert_eq!(set.allocate_next().unwrap(), net("10.42.0.64/26"));
        assert!(matches!(
            CidrSet::new(net("10.42.0.0/16"), 15),
            Err(CidrSetError::MaskOutOfRange { .. })
        ));
        assert!(matches!(
            CidrSet::new(net("10.0.0.0/8"), 25),
            Err(CidrSetError::TooManySubnets { .. })
        ));
        assert!(
            NodeIpamConfig::parse("fd00::/48", 64)
                .unwrap_err()
                .contains("--cluster-cidr")
        );
        assert!(
            NodeIpamConfig::parse("10.42.0.0/16", 33)
                .unwrap_err()
                .contains("--node-cidr-mask-size")
        );
        assert_eq!(
            NodeIpamConfig::parse("10.42.1.0/16", 24).unwrap().cluster_cidr,
            net("10.42.0.0/16")
        );
    }

    #[test]
    fn duplicates_release_only_when_the_last_holder_goes() {
        let config = NodeIpamConfig::parse("10.42.0.0/16", 24).unwrap();
        let mut alloc = Allocator::new(&config);
        alloc.observe("a", vec![net("10.42.0.0/24")]);
        alloc.observe("b", vec![net("10.42.0.0/24")]);
        alloc.observe("hollow", vec![net("10.128.0.0/24")]);
        assert_eq!(alloc.set.allocated(), 1);
        alloc.forget("a");
        assert!(alloc.set.is_used(net("10.42.0.0/24")));
        alloc.forget("b");
        assert!(!alloc.set.is_used(net("10.42.0.0/24")));
        alloc.forget("hollow");
        assert_eq!(alloc.set.allocated(), 0);
    }

    #[test]
    fn node_cidrs_prefers_the_list() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
            "spec": {"podCIDR": "10.42.3.0/24", "podCIDRs": ["10.42.3.0/24", "fd00:1::/64"]}}))
        .unwrap();
        assert_eq!(node_cidrs(&node), vec![net("10.42.3.0/24")]);
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.42.4.0/24"}})).unwrap();
        assert_eq!(node_cidrs(&node), vec![net("10.42.4.0/24")]);
        assert!(has_pod_cidr(&node));
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert!(node_cidrs(&node).is_empty() && !has_pod_cidr(&node));
    }
}
