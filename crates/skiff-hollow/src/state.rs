//! The in-memory state of all hollow nodes of one process and the decisions taken on
//! it, without I/O: which pods each node runs and with which address (host-local
//! IPAM over the node's pod CIDR), admission of pods against the node's pod capacity
//! (the kubelet's `OutOfpods`), and what to do with each pod seen on the shared watch.
//!
//! Per node this is a few dozen bytes plus 4 bytes per pod address in use; per pod a
//! map entry keyed by its UID.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

use crate::config::HollowConfig;
use crate::pod;

/// Addresses in use in one node's pod CIDR, handed out round-robin from a cursor
/// (as host-local IPAM does) so that a freed address is not reused at once.
#[derive(Debug, Default, Clone)]
pub struct IpPool {
    /// Offsets in use, sorted.
    used: Vec<u32>,
    /// Where the next search starts.
    cursor: u32,
}

impl IpPool {
    /// Takes the next free offset in `range` at or after the cursor (wrapping), if any.
    pub fn allocate(&mut self, range: std::ops::Range<u32>) -> Option<u32> {
        let len = range.end.saturating_sub(range.start);
        if len as usize <= self.used.len() {
            return None;
        }
        let start = self
            .cursor
            .clamp(range.start, range.end.saturating_sub(1).max(range.start));
        for step in 0..len {
            let off = range.start + (start - range.start + step) % len;
            if let Err(pos) = self.used.binary_search(&off) {
                self.used.insert(pos, off);
                self.cursor = off + 1;
                return Some(off);
            }
        }
        None
    }

    /// Marks `off` as in use (an address found on an existing pod); false if it was.
    pub fn reserve(&mut self, off: u32) -> bool {
        match self.used.binary_search(&off) {
            Ok(_) => false,
            Err(pos) => {
                self.used.insert(pos, off);
                true
            }
        }
    }

    /// Returns `off` to the pool.
    pub fn release(&mut self, off: u32) {
        if let Ok(pos) = self.used.binary_search(&off) {
            self.used.remove(pos);
        }
        if self.used.is_empty() {
            self.used = Vec::new();
        }
    }

    /// Number of addresses in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

/// One hollow node's bookkeeping.
#[derive(Debug, Default)]
pub struct NodeState {
    /// UID of the registered Node; `None` until registered.
    pub uid: Option<Box<str>>,
    /// resourceVersion of the Lease as last written (compare-and-swap on renewal).
    pub lease_rv: Option<Box<str>>,
    /// Lease renewals since the node status was last posted.
    pub renewals_since_status: u32,
    /// A registration or heartbeat for this node is queued or in flight.
    pub busy: bool,
    /// The node's status must be re-posted at the next heartbeat (it was seen not Ready).
    pub force_status: bool,
    /// The Node was deleted from the API: the node stops heartbeating (as a kubelet
    /// does not re-register a deleted Node).
    pub deleted: bool,
    /// When the Ready condition last became True (Unix seconds).
    pub ready_since: i64,
    /// Pods admitted and not yet finished or removed.
    pub active: u32,
    /// Pod addresses in use.
    pub ips: IpPool,
}

/// Where a pod the hollow node knows about is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Admitted; the `Running` status is being written.
    Starting,
    /// `Running` reported.
    Running,
    /// The `Succeeded` status is being written.
    Finishing,
    /// Finished (or rejected): holds no address, counts against nothing.
    Finished,
    /// Marked for deletion; the final delete is being issued.
    Deleting,
}

/// A pod bound to one of this process's nodes.
#[derive(Debug, Clone, Copy)]
pub struct PodEntry {
    /// Local slot of the node.
    pub slot: u32,
    /// Offset of its address in the node's pod CIDR (0: none held).
    pub ip: u32,
    /// Where it is.
    pub phase: PodPhase,
    /// Relist generation it was last seen in.
    pub seen: u32,
}

/// What to do about a pod after seeing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    Nothing,
    /// Write the `Running` status with this pod IP.
    Start {
        /// The pod's address.
        pod_ip: Ipv4Addr,
    },
    /// The node cannot admit it: write phase `Failed` with this reason and message.
    Reject {
        /// Upstream admission reason (`OutOfpods`).
        reason: String,
        /// Human-readable message.
        message: String,
    },
    /// Remove it (graceful deletion requested, containers "stopped").
    Delete,
}

/// The state of every node of the process and every pod bound to them.
#[derive(Debug)]
pub struct State {
    /// Nodes by local slot.
    pub nodes: Vec<NodeState>,
    /// Pods by UID.
    pub pods: HashMap<Box<str>, PodEntry>,
    /// Current relist generation of the pod watch.
    pub generation: u32,
}

impl State {
    /// State for `cfg.nodes` unregistered nodes.
    pub fn new(cfg: &HollowConfig) -> Self {
        Self {
            nodes: (0..cfg.nodes).map(|_| NodeState::default()).collect(),
            pods: HashMap::new(),
            generation: 0,
        }
    }

    /// Decides what the node the pod is bound to does about it (`slot` is that node),
    /// recording the pod. Idempotent: seeing the same pod again decides nothing new
    /// until something it cares about (deletion) changed.
    pub fn observe(&mut self, cfg: &HollowConfig, slot: u32, p: &Pod) -> Decision {
        let Some(uid) = p.metadata.uid.as_deref() else {
            return Decision::Nothing;
        };
        let generation = self.generation;
        let deleting = p.metadata.deletion_timestamp.is_some();
        if let Some(e) = self.pods.get_mut(uid) {
            e.seen = generation;
            if deleting && e.phase != PodPhase::Deleting {
                e.phase = PodPhase::Deleting;
                return Decision::Delete;
            }
            if pod::is_terminal(p) && e.phase != PodPhase::Finished && e.phase != PodPhase::Deleting {
                // Finished by someone else (or our own write echoing back).
                let e = *e;
                self.finish(uid, e);
            }
            return Decision::Nothing;
        }
        let node = &mut self.nodes[slot as usize];
        let mut entry = PodEntry {
            slot,
            ip: 0,
            phase: PodPhase::Starting,
            seen: generation,
        };
        let decision = if deleting {
            entry.phase = PodPhase::Deleting;
            Decision::Delete
        } else if pod::is_terminal(p) {
            entry.phase = PodPhase::Finished;
            Decision::Nothing
        } else {
            let index = cfg.first_index + slot;
            let cidr = cfg.pod_cidr(index);
            let adopted = (pod::phase(p) == "Running")
                .then(|| pod::reported_ip(p))
                .flatten()
                .filter(|ip| pod::host_network(p) || cidr.offset_of(*ip).is_some());
            if let Some(ip) = adopted {
                // Already running here (this process restarted): keep it as it is.
                if let Some(off) = cidr.offset_of(ip).filter(|_| !pod::host_network(p)) {
                    node.ips.reserve(off as u32);
                    entry.ip = off as u32;
                }
                node.active += 1;
                entry.phase = PodPhase::Running;
                Decision::Nothing
            } else if node.active >= cfg.capacity.pods {
                entry.phase = PodPhase::Finished;
                Decision::Reject {
                    reason: "OutOfpods".into(),
                    message: format!(
                        "Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {}",
                        node.active, cfg.capacity.pods
                    ),
                }
            } else if pod::host_network(p) {
                node.active += 1;
                Decision::Start {
                    pod_ip: cfg.node_ip(index),
                }
            } else {
                match node.ips.allocate(cidr.pod_offsets()) {
                    Some(off) => {
                        node.active += 1;
                        entry.ip = off;
                        Decision::Start {
                            pod_ip: cidr.address(u64::from(off)).expect("offset inside the CIDR"),
                        }
                    }
                    None => {
                        entry.phase = PodPhase::Finished;
                        Decision::Reject {
                            reason: "OutOfpods".into(),
                            message: format!("no free address in the node's pod CIDR {cidr}"),
                        }
                    }
                }
            }
        };
        self.pods.insert(uid.into(), entry);
        decision
    }

    /// Releases what a pod holds on its node (address, admission slot) and marks it
    /// finished.
    fn finish(&mut self, uid: &str, e: PodEntry) {
        self.release(e);
        if let Some(entry) = self.pods.get_mut(uid) {
            entry.phase = PodPhase::Finished;
            entry.ip = 0;
        }
    }

    fn release(&mut self, e: PodEntry) {
        let node = &mut self.nodes[e.slot as usize];
        if e.ip != 0 {
            node.ips.release(e.ip);
        }
        if e.phase != PodPhase::Finished {
            node.active = node.active.saturating_sub(1);
        }
    }

    /// The pod is gone from the API: forget it and free what it held.
    pub fn remove(&mut self, uid: &str) {
        if let Some(e) = self.pods.remove(uid) {
            self.release(e);
        }
    }

    /// The `Running` status was written: `Starting` becomes `Running`. Returns whether
    /// the pod is still wanted running (not deleted meanwhile).
    pub fn started(&mut self, uid: &str) -> bool {
        match self.pods.get_mut(uid) {
            Some(e) if e.phase == PodPhase::Starting => {
                e.phase = PodPhase::Running;
                true
            }
            _ => false,
        }
    }

    /// Writing the `Running` status failed for good (the pod or the request is
    /// invalid): forget the pod so that its next event starts over.
    pub fn start_failed(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|e| e.phase == PodPhase::Starting) {
            self.remove(uid);
        }
    }

    /// A run-to-completion pod's time is up: `Running` becomes `Finishing`; false if
    /// it is no longer running.
    pub fn finishing(&mut self, uid: &str) -> bool {
        match self.pods.get_mut(uid) {
            Some(e) if e.phase == PodPhase::Running => {
                e.phase = PodPhase::Finishing;
                true
            }
            _ => false,
        }
    }

    /// The `Succeeded` status was written: free the pod's address.
    pub fn finished(&mut self, uid: &str) {
        if let Some(e) = self.pods.get(uid).copied().filter(|e| e.phase == PodPhase::Finishing) {
            self.finish(uid, e);
        }
    }

    /// Whether a pod is still in the given phase (work queued for it is still due).
    pub fn is(&self, uid: &str, phase: PodPhase) -> bool {
        self.pods.get(uid).is_some_and(|e| e.phase == phase)
    }

    /// A relist of the pod watch starts.
    pub fn relist_started(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// A relist of the pod watch is complete: pods not seen in it are gone.
    pub fn relist_done(&mut self) {
        let generation = self.generation;
        let gone: Vec<Box<str>> = self
            .pods
            .iter()
            .filter(|(_, e)| e.seen != generation)
            .map(|(k, _)| k.clone())
            .collect();
        for uid in gone {
            self.remove(&uid);
        }
    }

    /// Number of pods in `Running` (or finishing) across all nodes.
    pub fn running(&self) -> usize {
        self.pods
            .values()
            .filter(|e| matches!(e.phase, PodPhase::Running | PodPhase::Finishing))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> HollowConfig {
        HollowConfig {
            nodes: 2,
            ..Default::default()
        }
    }

    fn pod(uid: &str, v: serde_json::Value) -> Pod {
        let mut base = json!({"metadata": {"name": uid, "namespace": "default", "uid": uid},
                              "spec": {"nodeName": "hollow-1", "containers": [{"name": "c", "image": "i"}]},
                              "status": {"phase": "Pending"}});
        merge(&mut base, v);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(json!(null)), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn pool_hands_out_round_robin_and_reuses_after_wrap() {
        let mut p = IpPool::default();
        assert_eq!(p.allocate(2..5), Some(2));
        assert_eq!(p.allocate(2..5), Some(3));
        p.release(2);
        assert_eq!(p.allocate(2..5), Some(4));
        assert_eq!(p.allocate(2..5), Some(2));
        assert_eq!(p.allocate(2..5), None);
        assert!(!p.reserve(3));
        assert_eq!(p.in_use(), 3);
    }

    #[test]
    fn a_bound_pod_starts_once_with_an_address_in_the_node_cidr() {
        let c = cfg();
        let mut s = State::new(&c);
        let p = pod("a", json!({}));
        assert_eq!(
            s.observe(&c, 1, &p),
            Decision::Start {
                pod_ip: "10.128.1.2".parse().unwrap()
            }
        );
        assert_eq!(s.observe(&c, 1, &p), Decision::Nothing);
        assert!(s.started("a"));
        assert_eq!(s.running(), 1);
        // The next pod gets the next address.
        assert_eq!(
            s.observe(&c, 1, &pod("b", json!({}))),
            Decision::Start {
                pod_ip: "10.128.1.3".parse().unwrap()
            }
        );
        // Deletion is decided once; removal frees the address and the admission slot.
        let del = pod("a", json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
        assert_eq!(s.observe(&c, 1, &del), Decision::Delete);
        assert_eq!(s.observe(&c, 1, &del), Decision::Nothing);
        s.remove("a");
        assert_eq!(s.nodes[1].active, 1);
        assert_eq!(s.nodes[1].ips.in_use(), 1);
    }

    #[test]
    fn host_network_pods_take_the_node_address() {
        let c = cfg();
        let mut s = State::new(&c);
        let d = s.observe(&c, 0, &pod("h", json!({"spec": {"hostNetwork": true}})));
        assert_eq!(
            d,
            Decision::Start {
                pod_ip: "100.64.0.1".parse().unwrap()
            }
        );
        assert_eq!(s.nodes[0].ips.in_use(), 0);
    }

    #[test]
    fn admission_rejects_beyond_pod_capacity() {
        let mut c = cfg();
        c.capacity.pods = 1;
        let mut s = State::new(&c);
        assert!(matches!(s.observe(&c, 0, &pod("a", json!({}))), Decision::Start { .. }));
        match s.observe(&c, 0, &pod("b", json!({}))) {
            Decision::Reject { reason, message } => {
                assert_eq!(reason, "OutOfpods");
                assert_eq!(
                    message,
                    "Node didn't have enough resource: pods, requested: 1, used: 1, capacity: 1"
                );
            }
            d => panic!("{d:?}"),
        }
        s.remove("b");
        s.remove("a");
        assert!(matches!(s.observe(&c, 0, &pod("c", json!({}))), Decision::Start { .. }));
    }

    #[test]
    fn running_pods_are_adopted_after_a_restart() {
        let c = cfg();
        let mut s = State::new(&c);
        let p = pod("a", json!({"status": {"phase": "Running", "podIP": "10.128.1.9"}}));
        assert_eq!(s.observe(&c, 1, &p), Decision::Nothing);
        assert_eq!(s.nodes[1].ips.in_use(), 1);
        assert_eq!(s.running(), 1);
        // An address outside the node's CIDR is not ours: the pod is started afresh.
        let q = pod("b", json!({"status": {"phase": "Running", "podIP": "192.168.0.1"}}));
        assert!(matches!(s.observe(&c, 1, &q), Decision::Start { .. }));
    }

    #[test]
    fn relist_forgets_pods_that_vanished() {
        let c = cfg();
        let mut s = State::new(&c);
        s.observe(&c, 0, &pod("a", json!({})));
        s.observe(&c, 0, &pod("b", json!({})));
        s.relist_started();
        s.observe(&c, 0, &pod("b", json!({})));
        s.relist_done();
        assert!(!s.pods.contains_key("a"));
        assert!(s.pods.contains_key("b"));
        assert_eq!(s.nodes[0].active, 1);
        assert_eq!(s.nodes[0].ips.in_use(), 1);
    }

    #[test]
    fn finishing_frees_the_address() {
        let c = cfg();
        let mut s = State::new(&c);
        s.observe(&c, 0, &pod("j", json!({"spec": {"restartPolicy": "Never"}})));
        assert!(s.started("j"));
        assert!(s.finishing("j"));
        s.finished("j");
        assert_eq!(s.nodes[0].ips.in_use(), 0);
        assert_eq!(s.nodes[0].active, 0);
        assert!(s.is("j", PodPhase::Finished));
        // Its echo (phase Succeeded) changes nothing.
        let done = pod("j", json!({"status": {"phase": "Succeeded"}}));
        assert_eq!(s.observe(&c, 0, &done), Decision::Nothing);
        assert_eq!(s.nodes[0].active, 0);
    }
}
