//! The scheduler cache (upstream pkg/scheduler/backend/cache): nodes with the
//! totals of the pods bound to them, plus **assumed** pods — pods the scheduler
//! has placed whose binding the watch has not confirmed yet — so two quick pods
//! never both take the last free slot of a node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use crate::affinity_terms::NamespaceLabels;
use crate::framework::{NodeInfo, PodUsage};
use crate::pod_index::PodIndex;

#[derive(Debug, Clone)]
struct Placement {
    node: String,
    assumed: bool,
}

/// Nodes and the pods placed on them, and the labels of every Namespace (for
/// pod affinity's `namespaceSelector`).
#[derive(Debug, Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    placements: HashMap<String, Placement>,
    namespaces: NamespaceLabels,
    index: PodIndex,
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// The node a pod is bound to, if any.
pub fn bound_node(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

/// Whether the pod has finished (`Succeeded`/`Failed`) and no longer holds resources.
pub fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn ready(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// Whether a node update can make a waiting pod fit (upstream's node-update
/// queueing hints): allocatable, labels, taints, `unschedulable` or readiness changed.
pub fn node_change_may_help(old: &Node, new: &Node) -> bool {
    let alloc = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    let taints = |n: &Node| n.spec.as_ref().and_then(|s| s.taints.clone());
    let cordon = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable);
    alloc(old) != alloc(new)
        || old.metadata.labels != new.metadata.labels
        || taints(old) != taints(new)
        || cordon(old) != cordon(new)
        || ready(old) != ready(new)
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or updates a node; returns whether waiting pods should be retried.
    pub fn set_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name).or_default();
        let helps = match &info.node {
            None => true,
            Some(old) => node_change_may_help(old, &node),
        };
        info.set_node(node);
        helps
    }

    /// Removes a node (its pods stay accounted until they go).
    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Replaces all nodes after a relist; returns whether waiting pods should be retried.
    pub fn replace_nodes(&mut self, nodes: Vec<Arc<Node>>) -> bool {
        let names: std::collections::HashSet<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(n, i)| i.node.is_some() && !names.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.remove_node(&n);
        }
        let mut helps = false;
        for n in nodes {
            helps |= self.set_node(n);
        }
        helps
    }

    fn place(&mut self, uid: &str, node: &str, usage: PodUsage, assumed: bool) {
        self.unplace(uid);
        self.index.add(node, uid, &usage.pod);
        self.nodes.entry(node.to_string()).or_default().add_pod(uid, usage);
        self.placements.insert(
            uid.to_string(),
            Placement {
                node: node.to_string(),
                assumed,
            },
        );
    }

    fn unplace(&mut self, uid: &str) -> bool {
        let Some(p) = self.placements.remove(uid) else {
            return false;
        };
        if let Some(info) = self.nodes.get_mut(&p.node) {
            if let Some(usage) = info.pods.get(uid) {
                self.index.remove(uid, &usage.pod);
            }
            info.remove_pod(uid);
            if info.node.is_none() && info.pods.is_empty() {
                self.nodes.remove(&p.node);
            }
        }
        true
    }

    /// Records the current state of a pod from the watch: bound, running pods are
    /// accounted on their node (confirming an assumption, and keeping the newest
    /// object so pod affinity sees current labels); finished pods release their
    /// resources. Returns whether resources were released or a bound pod's labels
    /// changed (waiting pods may fit).
    pub fn observe_pod(&mut self, pod: &Arc<Pod>) -> bool {
        let u = uid(pod);
        match bound_node(pod) {
            Some(_) if is_terminal(pod) => self.unplace(&u),
            Some(node) => {
                let old = self
                    .placements
                    .get(&u)
                    .filter(|p| p.node == node && !p.assumed)
                    .and_then(|p| self.nodes.get(&p.node)?.pods.get(&u));
                let relabeled = old.is_some_and(|o| o.pod.metadata.labels != pod.metadata.labels);
                if old.is_none_or(|o| !Arc::ptr_eq(&o.pod, pod)) {
                    self.place(&u, node, PodUsage::of(pod), false);
                }
                relabeled
            }
            None => {
                // Not bound (yet): keep an assumption, drop anything else.
                if self.placements.get(&u).is_some_and(|p| !p.assumed) {
                    self.unplace(&u)
                } else {
                    false
                }
            }
        }
    }

    /// A pod was deleted; returns whether it held resources.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        self.unplace(uid)
    }

    /// Replaces the pod set after a relist (assumptions of pods still listed are
    /// kept); returns whether resources were released.
    pub fn replace_pods(&mut self, pods: &[Arc<Pod>]) -> bool {
        let listed: std::collections::HashSet<String> = pods.iter().map(|p| uid(p)).collect();
        let gone: Vec<String> = self
            .placements
            .keys()
            .filter(|u| !listed.contains(*u))
            .cloned()
            .collect();
        let mut released = false;
        for u in gone {
            released |= self.unplace(&u);
        }
        for p in pods {
            released |= self.observe_pod(p);
        }
        released
    }

    /// Places a pod on `node` before its binding is confirmed (upstream `AssumePod`).
    pub fn assume(&mut self, pod: &Arc<Pod>, node: &str) {
        self.place(&uid(pod), node, PodUsage::of(pod), true);
    }

    /// Undoes an assumption after a failed binding (upstream `ForgetPod`).
    pub fn forget(&mut self, uid: &str) {
        if self.placements.get(uid).is_some_and(|p| p.assumed) {
            self.unplace(uid);
        }
    }

    /// Whether the pod is accounted on a node (bound or assumed).
    pub fn is_placed(&self, uid: &str) -> bool {
        self.placements.contains_key(uid)
    }

    /// Whether the pod is assumed and not yet confirmed bound.
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.placements.get(uid).is_some_and(|p| p.assumed)
    }

    /// Known nodes (with a Node object), by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|i| i.node.is_some())
    }

    /// Number of known nodes.
    pub fn num_nodes(&self) -> usize {
        self.nodes().count()
    }

    /// The info of one node.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|i| i.node.is_some())
    }

    /// Records a Namespace's labels; returns whether they changed (pods waiting on a
    /// `namespaceSelector` may fit).
    pub fn set_namespace(&mut self, ns: &Namespace) -> bool {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        self.namespaces.insert(name, labels.clone()) != Some(labels)
    }

    /// Forgets a Namespace.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Replaces all Namespaces after a relist.
    pub fn replace_namespaces(&mut self, namespaces: &[Namespace]) {
        self.namespaces.clear();
        for ns in namespaces {
            self.set_namespace(ns);
        }
    }

    /// Namespace name -> labels.
    pub fn namespaces(&self) -> &NamespaceLabels {
        &self.namespaces
    }

    /// The placed pods by namespace + label and by controller.
    pub fn index(&self) -> &PodIndex {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "110"}}}))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "uid": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
            "status": {"phase": phase}}))
            .unwrap(),
        )
    }

    #[test]
    fn assumed_pods_hold_resources_until_confirmed_or_forgotten() {
        let mut c = Cache::new();
        c.set_node(node("n", "2"));
        c.assume(&pod("a", None, "Pending"), "n");
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 1000);
        // The pod's own (unbound) watch event does not drop the assumption.
        c.observe_pod(&pod("a", None, "Pending"));
        assert!(c.is_assumed("a"));
        // The bound pod confirms it, without double counting.
        c.observe_pod(&pod("a", Some("n"), "Pending"));
        assert!(!c.is_assumed("a"));
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 1000);
        // Another assumption that fails to bind is forgotten.
        c.assume(&pod("b", None, "Pending"), "n");
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 2000);
        c.forget("b");
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 1000);
    }

    #[test]
    fn finished_and_deleted_pods_release_resources() {
        let mut c = Cache::new();
        c.set_node(node("n", "2"));
        assert!(!c.observe_pod(&pod("a", Some("n"), "Running")));
        assert!(c.observe_pod(&pod("a", Some("n"), "Succeeded")));
        assert_eq!(c.node("n").unwrap().pods.len(), 0);
        c.observe_pod(&pod("b", Some("n"), "Running"));
        assert!(c.remove_pod("b"));
        assert!(!c.remove_pod("b"));
    }

    #[test]
    fn pods_on_unknown_nodes_are_kept_for_when_the_node_appears() {
        let mut c = Cache::new();
        c.observe_pod(&pod("a", Some("late"), "Running"));
        assert_eq!(c.num_nodes(), 0);
        assert!(c.set_node(node("late", "4")));
        assert_eq!(c.node("late").unwrap().requested.milli_cpu, 1000);
        assert!(!c.set_node(node("late", "4")), "an identical update does not help");
        assert!(c.set_node(node("late", "8")), "more allocatable helps");
        c.replace_nodes(vec![]);
        assert_eq!(c.num_nodes(), 0);
    }

    #[test]
    fn relist_drops_vanished_pods_but_keeps_assumptions_of_listed_ones() {
        let mut c = Cache::new();
        c.set_node(node("n", "4"));
        c.observe_pod(&pod("gone", Some("n"), "Running"));
        let pending = pod("pending", None, "Pending");
        c.assume(&pending, "n");
        assert!(c.replace_pods(&[pending]));
        assert!(c.is_assumed("pending"));
        assert_eq!(c.node("n").unwrap().pods.len(), 1);
    }
}
