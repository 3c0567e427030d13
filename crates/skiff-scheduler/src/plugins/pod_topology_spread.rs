//! PodTopologySpread (upstream pkg/scheduler/framework/plugins/podtopologyspread):
//! `spec.topologySpreadConstraints` spread matching pods evenly over topology
//! domains (the values of the node label `topologyKey`).
//!
//! A constraint counts the pods in the incoming pod's namespace that its
//! `labelSelector` (plus the incoming pod's values of `matchLabelKeys`) selects,
//! skipping terminating pods, on the nodes it considers eligible: nodes having
//! every constraint's topology key and, per `nodeAffinityPolicy` (default
//! `Honor`) and `nodeTaintsPolicy` (default `Ignore`), matching the pod's
//! nodeSelector/required node affinity and having no untolerated
//! `NoSchedule`/`NoExecute` taint.
//!
//! - `whenUnsatisfiable: DoNotSchedule` (PreFilter + Filter): a node passes when
//!   `count(its domain) + (1 if the pod matches the selector) - global minimum <=
//!   maxSkew`; the global minimum is 0 while fewer than `minDomains` (default 1)
//!   domains exist. Failures read `node(s) didn't match pod topology spread
//!   constraints`, or `... (missing required label)` (unresolvable) when the node
//!   lacks a topology key.
//! - `whenUnsatisfiable: ScheduleAnyway` (PreScore + Score): a node scores
//!   `Σ count(domain) · ln(domains + 2) + (maxSkew − 1)`, fewer is better,
//!   normalized so the emptiest domain gets 100.
//!
//! Pods without constraints get the upstream cluster defaults (zone `maxSkew` 5,
//! hostname `maxSkew` 3, both `ScheduleAnyway`) when they are owned by a
//! ReplicaSet, ReplicationController or StatefulSet. Upstream selects the spread
//! pods with the owners' and Services' selectors; this scheduler has no caches of
//! those, so the default constraints count the pods with the same controller
//! (same `ownerReferences[controller=true].uid`), which is the set the owner's
//! selector picks in the usual case. Pods owned only through a Service get no
//! default spreading.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use skiff_api::selector::{LabelSelector as Selector, Operator, Requirement};

use crate::affinity_terms::{parse_selector, pod_labels, pod_namespace, selects};
use crate::framework::{
    Code, FilterState, MAX_NODE_SCORE, NodeInfo, PodInfo, PodUsage, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    ScoreState, Snapshot, Status,
};
use crate::plugins::node_affinity;
use crate::plugins::taint_toleration::first_untolerated;
use crate::pod_index::controller_uid;

/// Registry name.
pub const NAME: &str = "PodTopologySpread";
/// A node's domain would exceed `maxSkew`.
pub const ERR_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// A node lacks a constraint's topology key.
pub const ERR_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
/// The well-known hostname label.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The well-known zone label.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Owner kinds whose pods get the default constraints.
const DEFAULT_SPREAD_OWNERS: [&str; 3] = ["ReplicaSet", "ReplicationController", "StatefulSet"];

/// The plugin.
pub struct PodTopologySpread;

/// One parsed constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// `maxSkew`.
    pub max_skew: i64,
    /// `topologyKey`.
    pub topology_key: String,
    /// `labelSelector` with `matchLabelKeys` merged in (`None` selects nothing).
    pub selector: Option<Selector>,
    /// For default constraints: the uid of the controller whose pods are spread.
    pub owner: Option<String>,
    /// `minDomains` (default 1).
    pub min_domains: i64,
    /// `nodeAffinityPolicy` is `Honor` (the default).
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy` is `Honor` (default `Ignore`).
    pub honor_node_taints: bool,
}

impl Constraint {
    fn parse(c: &TopologySpreadConstraint, pod: &Pod) -> Self {
        let mut selector = parse_selector(c.label_selector.as_ref());
        if let Some(sel) = &mut selector {
            let labels = pod_labels(pod);
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    sel.requirements.push(Requirement {
                        key: key.clone(),
                        op: Operator::In(vec![v.clone()]),
                    });
                }
            }
        }
        Self {
            max_skew: c.max_skew as i64,
            topology_key: c.topology_key.clone(),
            selector,
            owner: None,
            min_domains: c.min_domains.unwrap_or(1) as i64,
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn default(topology_key: &str, max_skew: i64, owner: &str) -> Self {
        Self {
            max_skew,
            topology_key: topology_key.into(),
            selector: Some(Selector::default()),
            owner: Some(owner.into()),
            min_domains: 1,
            honor_node_affinity: true,
            honor_node_taints: false,
        }
    }

    /// Whether the constraint's selector picks `pod`.
    pub fn selects(&self, pod: &Pod) -> bool {
        selects(&self.selector, pod_labels(pod)) && self.owner.as_deref().is_none_or(|o| controller_uid(pod) == Some(o))
    }

    /// Whether the constraint counts `p` for a pod in namespace `ns` (upstream
    /// `countPodsMatchSelector`: only namespace `ns`, no terminating pods).
    fn counts(&self, p: &Pod, ns: &str) -> bool {
        p.metadata.deletion_timestamp.is_none() && pod_namespace(p) == ns && self.selects(p)
    }

    /// The node of every placed pod the constraint counts (once per pod); none
    /// for an empty selector, as upstream. Uses the pod index (controller, or an
    /// equality requirement of the selector) when it can.
    fn counted<'a>(&self, ns: &str, snapshot: &Snapshot<'a>) -> Vec<&'a NodeInfo> {
        let hits = match (&self.owner, &self.selector) {
            (Some(owner), _) => Some(snapshot.index.owned_by(owner)),
            (None, Some(sel)) if !sel.is_empty() => snapshot.index.candidates(ns, sel),
            _ => return Vec::new(),
        };
        snapshot
            .pods(hits)
            .into_iter()
            .filter(|(_, p)| self.counts(&p.pod, ns))
            .map(|(n, _)| n)
            .collect()
    }

    /// Whether the node counts for the pod under the inclusion policies.
    fn includes(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        if self.honor_node_affinity && !node_affinity::matches(pod, node) {
            return false;
        }
        if self.honor_node_taints {
            let taints = node
                .node
                .as_ref()
                .and_then(|n| n.spec.as_ref()?.taints.as_deref())
                .unwrap_or_default();
            let tolerations = pod
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default();
            if first_untolerated(taints, tolerations).is_some() {
                return false;
            }
        }
        true
    }
}

/// The pod's constraints with `whenUnsatisfiable == action`, or — when it has no
/// constraints at all — the cluster defaults for that action (see the module doc).
pub fn constraints(pod: &Pod, action: &str) -> Vec<Constraint> {
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default();
    if !own.is_empty() {
        return own
            .iter()
            .filter(|c| c.when_unsatisfiable == action)
            .map(|c| Constraint::parse(c, pod))
            .collect();
    }
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && DEFAULT_SPREAD_OWNERS.contains(&o.kind.as_str()));
    match owner {
        Some(o) if action == "ScheduleAnyway" => vec![
            Constraint::default(LABEL_ZONE, 5, &o.uid),
            Constraint::default(LABEL_HOSTNAME, 3, &o.uid),
        ],
        _ => Vec::new(),
    }
}

/// Whether placing `added` may let `waiting` (unschedulable) fit: a
/// `DoNotSchedule` constraint of `waiting` counts `added` (it may raise the
/// global minimum; upstream's `AssignedPodAdd` queueing hint).
pub fn pod_added_may_help(waiting: &Pod, added: &Pod) -> bool {
    let has_own = waiting
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty());
    has_own
        && pod_namespace(waiting) == pod_namespace(added)
        && constraints(waiting, "DoNotSchedule").iter().any(|c| c.selects(added))
}

fn has_all_keys(labels: &BTreeMap<String, String>, constraints: &[Constraint]) -> bool {
    constraints.iter().all(|c| labels.contains_key(&c.topology_key))
}

/// PodTopologySpread's PreFilter state: matching pods per domain.
#[derive(Debug, Clone)]
pub struct SpreadFilterState {
    constraints: Arc<Vec<Constraint>>,
    /// Topology key -> value -> matching pods, for every eligible domain.
    counts: HashMap<String, HashMap<String, i64>>,
    /// Topology key -> the smallest count (the global minimum).
    min: HashMap<String, i64>,
}

impl SpreadFilterState {
    /// The state for the pod's `DoNotSchedule` constraints, `None` without any.
    /// O(nodes × constraints + the pods the selectors can match).
    pub fn new(pod: &PodInfo, snapshot: &Snapshot) -> Option<Self> {
        let constraints = constraints(&pod.pod, "DoNotSchedule");
        if constraints.is_empty() {
            return None;
        }
        let ns = pod_namespace(&pod.pod);
        // Every eligible domain, with or without matching pods.
        let mut counts: HashMap<String, HashMap<String, i64>> = constraints
            .iter()
            .map(|c| (c.topology_key.clone(), HashMap::new()))
            .collect();
        for node in snapshot.nodes {
            let labels = node.labels();
            if !has_all_keys(labels, &constraints) {
                continue;
            }
            for c in &constraints {
                let domains = counts.get_mut(&c.topology_key).expect("one map per key");
                let value = &labels[&c.topology_key];
                if !domains.contains_key(value) && c.includes(pod, node) {
                    domains.insert(value.clone(), 0);
                }
            }
        }
        for c in &constraints {
            for node in c.counted(ns, snapshot) {
                let labels = node.labels();
                if has_all_keys(labels, &constraints)
                    && c.includes(pod, node)
                    && let Some(n) = counts
                        .get_mut(&c.topology_key)
                        .and_then(|d| d.get_mut(&labels[&c.topology_key]))
                {
                    *n += 1;
                }
            }
        }
        counts.retain(|_, d| !d.is_empty());
        let mut s = Self {
            constraints: Arc::new(constraints),
            counts,
            min: HashMap::new(),
        };
        let keys: Vec<String> = s.counts.keys().cloned().collect();
        for k in keys {
            s.refresh_min(&k);
        }
        Some(s)
    }

    fn refresh_min(&mut self, key: &str) {
        match self.counts.get(key).and_then(|v| v.values().min()) {
            Some(&m) => self.min.insert(key.to_string(), m),
            None => self.min.remove(key),
        };
    }

    /// The global minimum for a constraint: 0 while fewer than `minDomains`
    /// domains exist; `None` when no node has the key.
    fn min_match(&self, c: &Constraint) -> Option<i64> {
        let min = *self.min.get(&c.topology_key)?;
        let domains = self.counts.get(&c.topology_key).map_or(0, HashMap::len) as i64;
        Some(if domains < c.min_domains { 0 } else { min })
    }

    fn update(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo, delta: i64) {
        let labels = node.labels();
        if pod_namespace(&other.pod) != pod_namespace(&pod.pod) || !has_all_keys(labels, &self.constraints) {
            return;
        }
        let constraints = self.constraints.clone();
        for c in constraints.iter() {
            if !c.selects(&other.pod) || !c.includes(pod, node) {
                continue;
            }
            *self
                .counts
                .entry(c.topology_key.clone())
                .or_default()
                .entry(labels[&c.topology_key].clone())
                .or_default() += delta;
            self.refresh_min(&c.topology_key);
        }
    }
}

impl FilterState for SpreadFilterState {
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let labels = node.labels();
        for c in self.constraints.iter() {
            let Some(value) = labels.get(&c.topology_key) else {
                return Status::new(Code::UnschedulableAndUnresolvable, ERR_NODE_LABEL_NOT_MATCH);
            };
            let Some(min) = self.min_match(c) else { continue };
            let own = i64::from(c.selects(&pod.pod));
            let count = self
                .counts
                .get(&c.topology_key)
                .and_then(|v| v.get(value))
                .copied()
                .unwrap_or(0);
            if count + own - min > c.max_skew {
                return Status::new(Code::Unschedulable, ERR_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }

    fn add_pod(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo) {
        self.update(pod, other, node, 1);
    }

    fn remove_pod(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo) {
        self.update(pod, other, node, -1);
    }

    fn clone_box(&self) -> Box<dyn FilterState> {
        Box::new(self.clone())
    }
}

/// PodTopologySpread's PreScore state.
#[derive(Debug, Clone)]
pub struct SpreadScoreState {
    constraints: Vec<Constraint>,
    /// Feasible nodes lacking a topology key (they score 0).
    ignored: HashSet<String>,
    /// Per constraint (not hostname): domain value -> matching pods.
    counts: Vec<HashMap<String, i64>>,
    /// Per hostname constraint: node name -> matching pods.
    per_node: Vec<HashMap<String, i64>>,
    /// Per constraint: `ln(domains + 2)`.
    weights: Vec<f64>,
}

impl SpreadScoreState {
    /// The state for the pod's `ScheduleAnyway` constraints (or the defaults),
    /// `None` without any. O(nodes × constraints + the pods the selectors can match).
    pub fn new(pod: &PodInfo, feasible: &[&NodeInfo], snapshot: &Snapshot) -> Option<Self> {
        if snapshot.nodes.is_empty() {
            return None;
        }
        let constraints = constraints(&pod.pod, "ScheduleAnyway");
        if constraints.is_empty() {
            return None;
        }
        // System defaults do not require every key, so nodes without a zone
        // still get hostname spreading.
        let require_all = constraints.iter().all(|c| c.owner.is_none());
        let mut ignored = HashSet::new();
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
        for node in feasible {
            let labels = node.labels();
            if require_all && !has_all_keys(labels, &constraints) {
                ignored.insert(node.name().to_string());
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key != LABEL_HOSTNAME {
                    let v = labels.get(&c.topology_key).map(String::as_str).unwrap_or_default();
                    if !counts[i].contains_key(v) {
                        counts[i].insert(v.to_string(), 0);
                    }
                }
            }
        }
        let weights = constraints
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    feasible.len() - ignored.len()
                } else {
                    domains.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let ns = pod_namespace(&pod.pod);
        let mut per_node: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
        for (i, c) in constraints.iter().enumerate() {
            for node in c.counted(ns, snapshot) {
                if c.topology_key == LABEL_HOSTNAME {
                    *per_node[i].entry(node.name().to_string()).or_default() += 1;
                    continue;
                }
                let labels = node.labels();
                if (require_all && !has_all_keys(labels, &constraints)) || !c.includes(pod, node) {
                    continue;
                }
                let v = labels.get(&c.topology_key).map(String::as_str).unwrap_or_default();
                if let Some(n) = counts[i].get_mut(v) {
                    *n += 1;
                }
            }
        }
        Some(Self {
            constraints,
            ignored,
            counts,
            per_node,
            weights,
        })
    }
}

impl ScoreState for SpreadScoreState {
    fn score(&self, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        if self.ignored.contains(node.name()) {
            return 0;
        }
        let labels = node.labels();
        let mut score = 0.0;
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(v) = labels.get(&c.topology_key) else { continue };
            let count = if c.topology_key == LABEL_HOSTNAME {
                self.per_node[i].get(node.name()).copied().unwrap_or(0)
            } else {
                self.counts[i].get(v).copied().unwrap_or(0)
            };
            score += count as f64 * self.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    /// Fewer matching pods score higher: `100 · (max + min − s) / max`; ignored
    /// nodes get 0, and all nodes 100 when no domain has a matching pod.
    fn normalize(&self, nodes: &[&NodeInfo], scores: &mut [i64]) {
        let counted = |i: &usize| !self.ignored.contains(nodes[*i].name());
        let (mut min, mut max) = (i64::MAX, 0);
        for i in (0..scores.len()).filter(counted) {
            min = min.min(scores[i]);
            max = max.max(scores[i]);
        }
        for (i, s) in scores.iter_mut().enumerate() {
            *s = if !counted(&i) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, snapshot: &Snapshot) -> PreFilterResult {
        match SpreadFilterState::new(pod, snapshot) {
            Some(s) => PreFilterResult::State(Box::new(s)),
            None => PreFilterResult::Skip,
        }
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, pod: &PodInfo, feasible: &[&NodeInfo], snapshot: &Snapshot) -> Option<Box<dyn ScoreState>> {
        SpreadScoreState::new(pod, feasible, snapshot).map(|s| Box::new(s) as Box<dyn ScoreState>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity_terms::NamespaceLabels;
    use crate::plugins::testing::{filter_all, labeled, meta_pod, put, score_all, topo_node};
    use serde_json::{Value, json};

    const OK: &str = "";
    const SKEW: &str = ERR_CONSTRAINTS_NOT_MATCH;

    fn spread(key: &str, max_skew: i32, when: &str, extra: Value) -> Value {
        let mut c = json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"foo": "bar"}}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        c
    }

    fn incoming(constraints: Value, spec: Value) -> Arc<Pod> {
        let mut spec = spec;
        spec["topologySpreadConstraints"] = constraints;
        meta_pod("new", json!({"labels": {"foo": "bar"}}), spec)
    }

    /// The docs' cluster: zoneA = node1, node2; zoneB = node3, node4; one
    /// `foo=bar` pod on each of node1, node2 and node3.
    fn docs_cluster() -> Vec<NodeInfo> {
        let mut n = vec![
            topo_node("node1", json!({LABEL_ZONE: "zoneA"})),
            topo_node("node2", json!({LABEL_ZONE: "zoneA"})),
            topo_node("node3", json!({LABEL_ZONE: "zoneB"})),
            topo_node("node4", json!({LABEL_ZONE: "zoneB"})),
        ];
        for (i, node) in n.iter_mut().take(3).enumerate() {
            put(node, &labeled(&format!("p{i}"), json!({"foo": "bar"})));
        }
        n
    }

    fn run(pod: &Arc<Pod>, nodes: &[NodeInfo]) -> Option<Vec<String>> {
        filter_all(&PodTopologySpread, pod, nodes, &NamespaceLabels::new())
    }

    #[test]
    fn docs_example_one_zone_constraint() {
        let p = incoming(json!([spread(LABEL_ZONE, 1, "DoNotSchedule", json!({}))]), json!({}));
        // zoneA would reach 3 against zoneB's 1.
        assert_eq!(run(&p, &docs_cluster()).unwrap(), vec![SKEW, SKEW, OK, OK]);
        // maxSkew 2 admits zoneA too.
        let p = incoming(json!([spread(LABEL_ZONE, 2, "DoNotSchedule", json!({}))]), json!({}));
        assert_eq!(run(&p, &docs_cluster()).unwrap(), vec![OK; 4]);
    }

    #[test]
    fn docs_example_zone_and_node_constraints() {
        let p = incoming(
            json!([
                spread(LABEL_ZONE, 1, "DoNotSchedule", json!({})),
                spread(LABEL_HOSTNAME, 1, "DoNotSchedule", json!({})),
            ]),
            json!({}),
        );
        assert_eq!(run(&p, &docs_cluster()).unwrap(), vec![SKEW, SKEW, SKEW, OK]);
    }

    #[test]
    fn pods_without_constraints_or_other_pods_skip() {
        let plain = labeled("x", json!({"foo": "bar"}));
        assert_eq!(run(&plain, &docs_cluster()), None);
        assert_eq!(
            score_all(&PodTopologySpread, &plain, &docs_cluster(), &NamespaceLabels::new()),
            None
        );
        // Only ScheduleAnyway constraints: PreFilter skips.
        let soft = incoming(json!([spread(LABEL_ZONE, 1, "ScheduleAnyway", json!({}))]), json!({}));
        assert_eq!(run(&soft, &docs_cluster()), None);
    }

    #[test]
    fn nodes_without_the_key_are_unresolvable_and_do_not_count() {
        let mut n = docs_cluster();
        n.push(topo_node("nozone", json!({})));
        put(&mut n[4], &labeled("extra", json!({"foo": "bar"})));
        let p = incoming(json!([spread(LABEL_ZONE, 1, "DoNotSchedule", json!({}))]), json!({}));
        assert_eq!(run(&p, &n).unwrap(), vec![SKEW, SKEW, OK, OK, ERR_NODE_LABEL_NOT_MATCH]);
    }

    #[test]
    fn pods_elsewhere_terminating_or_unselected_do_not_count() {
        let mut n = docs_cluster();
        // Two more matching pods in zoneB, but in another namespace or terminating.
        put(
            &mut n[3],
            &meta_pod("o", json!({"namespace": "other", "labels": {"foo": "bar"}}), json!({})),
        );
        put(
            &mut n[3],
            &meta_pod(
                "t",
                json!({"labels": {"foo": "bar"}, "deletionTimestamp": "2026-01-01T00:00:00Z"}),
                json!({}),
            ),
        );
        put(&mut n[3], &labeled("u", json!({"foo": "baz"})));
        let p = incoming(json!([spread(LABEL_ZONE, 1, "DoNotSchedule", json!({}))]), json!({}));
        assert_eq!(run(&p, &n).unwrap(), vec![SKEW, SKEW, OK, OK]);
    }

    #[test]
    fn min_domains_treats_the_global_minimum_as_zero() {
        let mut n = docs_cluster();
        put(&mut n[3], &labeled("p3", json!({"foo": "bar"})));
        // zoneA 2, zoneB 2: with maxSkew 2 every node passes.
        let c = |extra| incoming(json!([spread(LABEL_ZONE, 2, "DoNotSchedule", extra)]), json!({}));
        assert_eq!(run(&c(json!({})), &n).unwrap(), vec![OK; 4]);
        // With minDomains 3 only 2 domains exist, so the minimum is 0 and 2+1-0 > 2.
        assert_eq!(run(&c(json!({"minDomains": 3})), &n).unwrap(), vec![SKEW; 4]);
    }

    #[test]
    fn match_label_keys_narrow_the_selector_to_the_pods_revision() {
        let mut n = docs_cluster();
        for (i, node) in n.iter_mut().take(2).enumerate() {
            put(node, &labeled(&format!("old{i}"), json!({"foo": "bar", "hash": "old"})));
        }
        let pod = |extra| {
            let mut p = (*incoming(json!([spread(LABEL_ZONE, 1, "DoNotSchedule", extra)]), json!({}))).clone();
            p.metadata.labels.as_mut().unwrap().insert("hash".into(), "new".into());
            Arc::new(p)
        };
        assert_eq!(run(&pod(json!({})), &n).unwrap(), vec![SKEW, SKEW, OK, OK]);
        // Only the pods of revision "new" count: none exist, every node passes.
        assert_eq!(run(&pod(json!({"matchLabelKeys": ["hash"]})), &n).unwrap(), vec![OK; 4]);
    }

    #[test]
    fn node_inclusion_policies_follow_upstream_defaults() {
        // zoneC's only node is tainted and excluded by the pod's node affinity.
        let mut n = docs_cluster();
        let mut c = topo_node("node5", json!({LABEL_ZONE: "zoneC", "tier": "spare"}));
        c.set_node(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "node5",
                "labels": {LABEL_ZONE: "zoneC", LABEL_HOSTNAME: "node5", "tier": "spare"}},
                "spec": {"taints": [{"key": "spare", "effect": "NoSchedule"}]}}))
            .unwrap(),
        ));
        n.push(c);
        let avoid_spare = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}]}}}});
        let pod = |extra, spec| incoming(json!([spread(LABEL_ZONE, 1, "DoNotSchedule", extra)]), spec);
        // Default: affinity honored (zoneC ignored, min 1), taints ignored.
        assert_eq!(
            run(&pod(json!({}), avoid_spare.clone()), &n).unwrap(),
            vec![SKEW, SKEW, OK, OK, OK]
        );
        // nodeAffinityPolicy Ignore: zoneC counts with 0 pods, so only it fits.
        assert_eq!(
            run(&pod(json!({"nodeAffinityPolicy": "Ignore"}), avoid_spare), &n).unwrap(),
            vec![SKEW, SKEW, SKEW, SKEW, OK]
        );
        // Without node affinity, taints are ignored by default (zoneC counts)...
        assert_eq!(
            run(&pod(json!({}), json!({})), &n).unwrap(),
            vec![SKEW, SKEW, SKEW, SKEW, OK]
        );
        // ...and honored on request.
        assert_eq!(
            run(&pod(json!({"nodeTaintsPolicy": "Honor"}), json!({})), &n).unwrap(),
            vec![SKEW, SKEW, OK, OK, OK]
        );
    }

    #[test]
    fn add_and_remove_pod_move_the_minimum() {
        let n = docs_cluster();
        let refs: Vec<&NodeInfo> = n.iter().collect();
        let ns = NamespaceLabels::new();
        let pod = PodInfo::new(incoming(
            json!([spread(LABEL_ZONE, 1, "DoNotSchedule", json!({}))]),
            json!({}),
        ));
        let index = crate::pod_index::PodIndex::of_nodes(&refs);
        let state = SpreadFilterState::new(&pod, &Snapshot::new(&refs, &ns, &index)).unwrap();
        let mut copy = state.clone_box();
        let p0 = n[0].pods["p0"].clone();
        let mut node1 = n[0].clone();
        node1.remove_pod("p0");
        copy.remove_pod(&pod, &p0, &node1);
        assert!(copy.filter(&pod, &node1).is_success(), "zoneA 1 + 1 - 1 <= 1");
        assert!(!state.filter(&pod, &n[0]).is_success());
        copy.add_pod(&pod, &p0, &n[3]);
        assert!(!copy.filter(&pod, &n[3]).is_success(), "zoneB now 2, zoneA 1");
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_domain() {
        let ns = NamespaceLabels::new();
        let p = incoming(json!([spread(LABEL_ZONE, 1, "ScheduleAnyway", json!({}))]), json!({}));
        // zoneA 2 pods, zoneB 1: raw 2·ln4 = 3 and 1·ln4 = 1, normalized 100·(3+1-s)/3.
        assert_eq!(
            score_all(&PodTopologySpread, &p, &docs_cluster(), &ns).unwrap(),
            vec![33, 33, 100, 100]
        );
        let p = incoming(
            json!([spread(LABEL_HOSTNAME, 1, "ScheduleAnyway", json!({}))]),
            json!({}),
        );
        assert_eq!(
            score_all(&PodTopologySpread, &p, &docs_cluster(), &ns).unwrap(),
            vec![0, 0, 0, 100]
        );
        // A node without the key scores 0.
        let mut n = docs_cluster();
        n.push(topo_node("nozone", json!({})));
        let p = incoming(json!([spread(LABEL_ZONE, 1, "ScheduleAnyway", json!({}))]), json!({}));
        assert_eq!(
            score_all(&PodTopologySpread, &p, &n, &ns).unwrap(),
            vec![33, 33, 100, 100, 0]
        );
    }

    #[test]
    fn controller_owned_pods_get_the_default_constraints() {
        let ns = NamespaceLabels::new();
        let owned = |name: &str, uid: &str| {
            meta_pod(
                name,
                json!({"labels": {"app": "web"}, "ownerReferences": [{"apiVersion": "apps/v1",
                    "kind": "ReplicaSet", "name": "web", "uid": uid, "controller": true}]}),
                json!({}),
            )
        };
        // Three nodes without zone labels: hostname spreading still applies.
        let mut n = vec![
            topo_node("a", json!({})),
            topo_node("b", json!({})),
            topo_node("c", json!({})),
        ];
        put(&mut n[0], &owned("r1", "rs-1"));
        put(&mut n[0], &owned("r2", "rs-1"));
        put(&mut n[1], &owned("x1", "rs-2"));
        put(&mut n[1], &owned("x2", "rs-2"));
        // a: 2·ln5 + 2 = 5, b and c: 0 + 2 = 2 (rs-2's pods are not counted).
        assert_eq!(
            score_all(&PodTopologySpread, &owned("new", "rs-1"), &n, &ns).unwrap(),
            vec![40, 100, 100]
        );
        assert_eq!(run(&owned("new", "rs-1"), &n), None, "defaults are ScheduleAnyway only");
        let defaults = constraints(&owned("new", "rs-1"), "ScheduleAnyway");
        assert_eq!(
            defaults
                .iter()
                .map(|c| (c.topology_key.as_str(), c.max_skew))
                .collect::<Vec<_>>(),
            vec![(LABEL_ZONE, 5), (LABEL_HOSTNAME, 3)]
        );
        // Pods owned by something else (a Job) or by nothing get no defaults.
        let job = meta_pod(
            "j",
            json!({"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "j",
                "controller": true}]}),
            json!({}),
        );
        assert_eq!(score_all(&PodTopologySpread, &job, &n, &ns), None);
    }

    #[test]
    fn a_placed_matching_pod_retries_pods_with_hard_constraints() {
        let waiting = incoming(json!([spread(LABEL_ZONE, 1, "DoNotSchedule", json!({}))]), json!({}));
        assert!(pod_added_may_help(&waiting, &labeled("m", json!({"foo": "bar"}))));
        assert!(!pod_added_may_help(&waiting, &labeled("o", json!({"foo": "baz"}))));
        let soft = incoming(json!([spread(LABEL_ZONE, 1, "ScheduleAnyway", json!({}))]), json!({}));
        assert!(!pod_added_may_help(&soft, &labeled("m", json!({"foo": "bar"}))));
    }
}
