//! The nominator (upstream `nominator` in pkg/scheduler/backend/queue): pods that
//! preempted on a node and wait there for their victims to go. Until they are
//! bound, their requests count on that node for pods of lower or equal priority.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::{nominated_node_name, priority, uid};
use crate::framework::{CycleState, NodeInfo, PodInfo, Profile, Status};

/// Pods nominated to nodes (upstream `nominator`): pods waiting for victims to go,
/// keyed by uid.
#[derive(Debug, Default)]
pub struct Nominator {
    by_node: HashMap<String, BTreeMap<String, Arc<Pod>>>,
    node_of: HashMap<String, String>,
}

impl Nominator {
    /// No nominations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Nominates `pod` to `node`, replacing an earlier nomination.
    pub fn add(&mut self, pod: Arc<Pod>, node: &str) {
        let u = uid(&pod);
        self.remove(&u);
        self.node_of.insert(u.clone(), node.to_string());
        self.by_node.entry(node.to_string()).or_default().insert(u, pod);
    }

    /// Drops the nomination of a pod (bound, deleted, or nominated no more).
    pub fn remove(&mut self, uid: &str) {
        if let Some(node) = self.node_of.remove(uid)
            && let Some(pods) = self.by_node.get_mut(&node)
        {
            pods.remove(uid);
            if pods.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    /// The node `uid` is nominated to.
    pub fn nominated_node(&self, uid: &str) -> Option<&str> {
        self.node_of.get(uid).map(String::as_str)
    }

    /// Uids of all nominated pods.
    pub fn nominated_uids(&self) -> impl Iterator<Item = &String> {
        self.node_of.keys()
    }

    /// Pods nominated to `node`.
    pub fn pods_on(&self, node: &str) -> impl Iterator<Item = &Arc<Pod>> {
        self.by_node.get(node).into_iter().flat_map(|m| m.values())
    }

    /// Records a pending pod from the watch: a `status.nominatedNodeName` nominates
    /// it; a pod whose previous version had one and this one has none loses it; a
    /// pod nominated here whose status does not say so yet keeps its nomination
    /// (the status write may still be in flight), as upstream `updateNominatedPod`.
    pub fn observe_pending(&mut self, pod: &Arc<Pod>) {
        let u = uid(pod);
        match nominated_node_name(pod) {
            Some(node) => self.add(pod.clone(), node),
            None => {
                let Some(node) = self.node_of.get(&u).cloned() else {
                    return;
                };
                let had = self
                    .by_node
                    .get(&node)
                    .and_then(|m| m.get(&u))
                    .is_some_and(|old| nominated_node_name(old).is_some());
                if had {
                    self.remove(&u);
                } else {
                    self.add(pod.clone(), &node);
                }
            }
        }
    }

    /// `node` with the pods nominated to it that matter for `pod` (priority at least
    /// `pod`'s, not `pod` itself) added, or `None` when there are none (upstream
    /// `addGENominatedPods`).
    pub fn node_with_nominated(&self, pod: &PodInfo, node: &NodeInfo) -> Option<NodeInfo> {
        let me = uid(&pod.pod);
        let p = priority(&pod.pod);
        let mut added: Option<NodeInfo> = None;
        for n in self.pods_on(node.name()) {
            let u = uid(n);
            if u == me || priority(n) < p || node.pods.contains_key(&u) {
                continue;
            }
            added
                .get_or_insert_with(|| node.clone())
                .add_pod(&u, crate::framework::PodUsage::of(n));
        }
        added
    }
}

/// Upstream `RunFilterPluginsWithNominatedPods`: the filters must pass with the
/// nominated pods of equal or higher priority counted on the node, and without them.
pub fn run_filters_with_nominated(
    profile: &Profile,
    state: &CycleState,
    nominator: &Nominator,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Status {
    if let Some(with) = nominator.node_with_nominated(pod, node) {
        let s = profile.run_filters(state, pod, &with);
        if !s.is_success() {
            return s;
        }
    }
    profile.run_filters(state, pod, node)
}
