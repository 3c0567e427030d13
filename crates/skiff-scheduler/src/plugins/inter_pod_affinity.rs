//! InterPodAffinity (upstream pkg/scheduler/framework/plugins/interpodaffinity):
//! `affinity.podAffinity` and `affinity.podAntiAffinity` between the pod being
//! scheduled and the pods already placed.
//!
//! PreFilter counts, per topology domain (`topologyKey` = node label value):
//! - the pods matching **all** of the incoming pod's required affinity terms;
//! - the pods matching each of its required anti-affinity terms;
//! - the existing pods whose required anti-affinity terms match the incoming pod
//!   (the symmetric check), walking only nodes that hold such pods.
//!
//! Filter then looks up the node's domains:
//! `node(s) didn't match pod affinity rules` (unresolvable: the node lacks a
//! topology key or its domain holds no matching pod — except that the first pod of
//! a group with affinity to itself may go anywhere when no pod matches yet),
//! `node(s) didn't match pod anti-affinity rules`, and
//! `node(s) didn't satisfy existing pods anti-affinity rules`.
//!
//! PreScore sums, per domain, the weights of the incoming pod's preferred terms
//! matched by existing pods (anti-affinity negative), the existing pods' preferred
//! terms matched by the incoming pod, and [`HARD_POD_AFFINITY_WEIGHT`] for each
//! existing pod's required affinity term the incoming pod matches; Score is the sum
//! over the node's domains, normalized min..max to 0..=100. Pods without pod
//! affinity skip PreFilter unless some placed pod has required anti-affinity, and
//! skip PreScore unless some placed pod has any pod affinity. The pods a term
//! selects are found through the [`crate::pod_index`] (namespace + an equality
//! requirement of its selector), so the work is proportional to the matching
//! pods, not to all pods.
//!
//! `namespaceSelector` of the incoming pod's terms is resolved against the
//! Namespaces the scheduler watches; existing pods' selectors are matched against
//! the incoming pod's Namespace labels, as upstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::affinity_terms::{AffinityTerm, NamespaceLabels, PodAffinityTerms, pod_namespace};
use crate::framework::{
    Code, FilterState, MAX_NODE_SCORE, NodeInfo, PodInfo, PodUsage, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    ScoreState, Snapshot, Status,
};

/// Registry name.
pub const NAME: &str = "InterPodAffinity";
/// The node fails the incoming pod's required affinity.
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// The node fails the incoming pod's required anti-affinity.
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// The node fails an existing pod's required anti-affinity.
pub const ERR_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// Score weight of an existing pod's required affinity term the incoming pod
/// matches (upstream `hardPodAffinityWeight` default).
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// The plugin.
pub struct InterPodAffinity;

/// Matching pods per topology domain: topology key -> value -> count. Domains
/// whose count drops to 0 are removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyCounts(HashMap<String, HashMap<String, i64>>);

impl TopologyCounts {
    /// Adds `delta` to the node's domain for `key`, if the node has that label.
    fn update(&mut self, labels: &BTreeMap<String, String>, key: &str, delta: i64) {
        let Some(value) = labels.get(key) else { return };
        let values = self.0.entry(key.to_string()).or_default();
        let count = values.entry(value.clone()).or_default();
        *count += delta;
        if *count == 0 {
            values.remove(value);
            if values.is_empty() {
                self.0.remove(key);
            }
        }
    }

    /// The count of one domain.
    pub fn get(&self, key: &str, value: &str) -> i64 {
        self.0.get(key).and_then(|v| v.get(value)).copied().unwrap_or(0)
    }

    /// Whether no domain has a count.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// InterPodAffinity's PreFilter state.
#[derive(Debug, Clone)]
pub struct AffinityFilterState {
    /// The incoming pod's terms, namespace selectors resolved.
    terms: Arc<PodAffinityTerms>,
    /// Labels of the incoming pod's Namespace.
    ns_labels: Option<BTreeMap<String, String>>,
    /// Pods matching all required affinity terms.
    pub affinity_counts: TopologyCounts,
    /// Pods matching each required anti-affinity term.
    pub anti_affinity_counts: TopologyCounts,
    /// Existing pods whose required anti-affinity matches the incoming pod.
    pub existing_anti_affinity_counts: TopologyCounts,
}

fn resolved_terms(pod: &PodInfo, snapshot: &Snapshot) -> Arc<PodAffinityTerms> {
    match &pod.usage.affinity {
        None => Arc::default(),
        Some(t) => {
            let mut t = PodAffinityTerms::clone(t);
            t.resolve_namespaces(snapshot.namespaces);
            Arc::new(t)
        }
    }
}

impl AffinityFilterState {
    /// Accounts `other` (on a node with `labels`) with `delta` = +1 or -1
    /// (upstream `preFilterState.updateWithPod`).
    fn update(&mut self, incoming: &PodInfo, other: &PodUsage, labels: &BTreeMap<String, String>, delta: i64) {
        if let Some(existing) = &other.affinity {
            for t in &existing.required_anti_affinity {
                if t.matches(&incoming.pod, self.ns_labels.as_ref()) {
                    self.existing_anti_affinity_counts
                        .update(labels, &t.topology_key, delta);
                }
            }
        }
        let affinity = &self.terms.required_affinity;
        if !affinity.is_empty() && affinity.iter().all(|t| t.matches(&other.pod, None)) {
            for t in affinity {
                self.affinity_counts.update(labels, &t.topology_key, delta);
            }
        }
        for t in &self.terms.required_anti_affinity {
            if t.matches(&other.pod, None) {
                self.anti_affinity_counts.update(labels, &t.topology_key, delta);
            }
        }
    }

    fn satisfies_affinity(&self, pod: &PodInfo, labels: &BTreeMap<String, String>) -> bool {
        let mut pods_exist = true;
        for t in &self.terms.required_affinity {
            match labels.get(&t.topology_key) {
                None => return false,
                Some(v) if self.affinity_counts.get(&t.topology_key, v) <= 0 => pods_exist = false,
                Some(_) => {}
            }
        }
        // The first pod of a group with affinity to itself: no pod matches
        // anywhere yet, but the pod matches its own terms.
        pods_exist
            || (self.affinity_counts.is_empty()
                && self.terms.required_affinity.iter().all(|t| t.matches(&pod.pod, None)))
    }
}

impl FilterState for AffinityFilterState {
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let labels = node.labels();
        if !self.satisfies_affinity(pod, labels) {
            return Status::new(Code::UnschedulableAndUnresolvable, ERR_AFFINITY);
        }
        for t in &self.terms.required_anti_affinity {
            if let Some(v) = labels.get(&t.topology_key)
                && self.anti_affinity_counts.get(&t.topology_key, v) > 0
            {
                return Status::new(Code::Unschedulable, ERR_ANTI_AFFINITY);
            }
        }
        if !self.existing_anti_affinity_counts.is_empty()
            && labels
                .iter()
                .any(|(k, v)| self.existing_anti_affinity_counts.get(k, v) > 0)
        {
            return Status::new(Code::Unschedulable, ERR_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }

    fn add_pod(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo) {
        self.update(pod, other, node.labels(), 1);
    }

    fn remove_pod(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo) {
        self.update(pod, other, node.labels(), -1);
    }

    fn clone_box(&self) -> Box<dyn FilterState> {
        Box::new(self.clone())
    }
}

/// Every placed pod `term` selects, with its node: through the pod index when
/// the term names its namespaces and has an equality requirement, else by
/// looking at every pod.
fn pods_matching<'a>(snapshot: &Snapshot<'a>, term: &AffinityTerm) -> Vec<(&'a NodeInfo, &'a PodUsage)> {
    let Some(sel) = &term.selector else {
        return Vec::new();
    };
    let hits = if term.namespace_selector.is_some() {
        None
    } else {
        let mut hits = Some(Vec::new());
        for ns in &term.namespaces {
            match (snapshot.index.candidates(ns, sel), &mut hits) {
                (Some(h), Some(all)) => all.extend(h),
                _ => hits = None,
            }
        }
        hits
    };
    let mut pods = snapshot.pods(hits);
    pods.retain(|(_, p)| term.matches(&p.pod, None));
    pods
}

impl InterPodAffinity {
    /// The PreFilter state, or `None` when the pod has no required pod
    /// (anti-)affinity and no placed pod's required anti-affinity matches it.
    /// Visits the pods with required anti-affinity, and for each of the pod's own
    /// terms the pods the term can select (found through the pod index).
    pub fn filter_state(pod: &PodInfo, snapshot: &Snapshot) -> Option<AffinityFilterState> {
        let has_required = pod
            .usage
            .affinity
            .as_ref()
            .is_some_and(|t| !t.required_affinity.is_empty() || !t.required_anti_affinity.is_empty());
        if !has_required && snapshot.pods_with_required_anti_affinity == 0 {
            return None;
        }
        let terms = resolved_terms(pod, snapshot);
        let mut s = AffinityFilterState {
            terms: terms.clone(),
            ns_labels: snapshot.namespaces.get(pod_namespace(&pod.pod)).cloned(),
            affinity_counts: TopologyCounts::default(),
            anti_affinity_counts: TopologyCounts::default(),
            existing_anti_affinity_counts: TopologyCounts::default(),
        };
        if snapshot.pods_with_required_anti_affinity > 0 {
            for node in snapshot.nodes.iter().filter(|n| n.pods_with_required_anti_affinity > 0) {
                for other in node.pods.values() {
                    for t in other.affinity.iter().flat_map(|a| &a.required_anti_affinity) {
                        if t.matches(&pod.pod, s.ns_labels.as_ref()) {
                            s.existing_anti_affinity_counts
                                .update(node.labels(), &t.topology_key, 1);
                        }
                    }
                }
            }
        }
        if let Some(first) = terms.required_affinity.first() {
            for (node, other) in pods_matching(snapshot, first) {
                if terms.required_affinity.iter().all(|t| t.matches(&other.pod, None)) {
                    for t in &terms.required_affinity {
                        s.affinity_counts.update(node.labels(), &t.topology_key, 1);
                    }
                }
            }
        }
        for t in &terms.required_anti_affinity {
            for (node, _) in pods_matching(snapshot, t) {
                s.anti_affinity_counts.update(node.labels(), &t.topology_key, 1);
            }
        }
        (has_required || !s.existing_anti_affinity_counts.is_empty()).then_some(s)
    }

    /// The PreScore state, or `None` when no preferred or existing term applies.
    /// Visits the pods the pod's preferred terms can select and the pods with
    /// pod affinity.
    pub fn score_state(pod: &PodInfo, snapshot: &Snapshot) -> Option<AffinityScoreState> {
        let has_preferred = pod
            .usage
            .affinity
            .as_ref()
            .is_some_and(|t| !t.preferred_affinity.is_empty() || !t.preferred_anti_affinity.is_empty());
        if snapshot.nodes.is_empty() || (!has_preferred && snapshot.pods_with_affinity == 0) {
            return None;
        }
        let ns_labels = snapshot.namespaces.get(pod_namespace(&pod.pod));
        let mut scores: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let mut add = |labels: &BTreeMap<String, String>, term: &AffinityTerm, weight: i64| {
            if let Some(v) = labels.get(&term.topology_key) {
                *scores
                    .entry(term.topology_key.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default() += weight;
            }
        };
        if has_preferred {
            // The incoming pod's preferred terms, matched by existing pods.
            let terms = resolved_terms(pod, snapshot);
            for (w, sign) in (terms.preferred_affinity.iter().map(|w| (w, 1)))
                .chain(terms.preferred_anti_affinity.iter().map(|w| (w, -1)))
            {
                for (node, _) in pods_matching(snapshot, &w.term) {
                    add(node.labels(), &w.term, w.weight * sign);
                }
            }
        }
        // The existing pods' terms, matched by the incoming pod.
        for node in snapshot.nodes.iter().filter(|n| n.pods_with_affinity > 0) {
            let labels = node.labels();
            for theirs in node.pods.values().filter_map(|p| p.affinity.as_deref()) {
                for t in &theirs.required_affinity {
                    if t.matches(&pod.pod, ns_labels) {
                        add(labels, t, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for (w, sign) in (theirs.preferred_affinity.iter().map(|w| (w, 1)))
                    .chain(theirs.preferred_anti_affinity.iter().map(|w| (w, -1)))
                {
                    if w.term.matches(&pod.pod, ns_labels) {
                        add(labels, &w.term, w.weight * sign);
                    }
                }
            }
        }
        (!scores.is_empty()).then_some(AffinityScoreState { scores })
    }
}

/// Whether placing `added` may let `waiting` (unschedulable) fit: one of its
/// required pod affinity terms selects `added` (upstream's `AssignedPodAdd`
/// queueing hint; a placed pod never helps anti-affinity).
pub fn pod_added_may_help(waiting: &Pod, added: &Pod, namespaces: &NamespaceLabels) -> bool {
    let has_required = waiting
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref()?.pod_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .is_some_and(|t| !t.is_empty());
    has_required
        && PodAffinityTerms::of(waiting).is_some_and(|terms| {
            let ns_labels = namespaces.get(pod_namespace(added));
            terms.required_affinity.iter().any(|t| t.matches(added, ns_labels))
        })
}

/// InterPodAffinity's PreScore state: score per topology domain.
#[derive(Debug, Clone)]
pub struct AffinityScoreState {
    scores: HashMap<String, HashMap<String, i64>>,
}

impl ScoreState for AffinityScoreState {
    fn score(&self, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let labels = node.labels();
        self.scores
            .iter()
            .filter_map(|(k, values)| values.get(labels.get(k)?))
            .sum()
    }

    /// Min..max of the raw scores onto 0..=100 (all equal: all 0).
    fn normalize(&self, _nodes: &[&NodeInfo], scores: &mut [i64]) {
        let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else {
            return;
        };
        for s in scores.iter_mut() {
            *s = if max > min {
                MAX_NODE_SCORE * (*s - min) / (max - min)
            } else {
                0
            };
        }
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, snapshot: &Snapshot) -> PreFilterResult {
        match Self::filter_state(pod, snapshot) {
            Some(s) => PreFilterResult::State(Box::new(s)),
            None => PreFilterResult::Skip,
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, pod: &PodInfo, _feasible: &[&NodeInfo], snapshot: &Snapshot) -> Option<Box<dyn ScoreState>> {
        Self::score_state(pod, snapshot).map(|s| Box::new(s) as Box<dyn ScoreState>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{filter_all, labeled, meta_pod, put, score_all, topo_node};
    use serde_json::{Value, json};

    const HOST: &str = "kubernetes.io/hostname";
    const ZONE: &str = "topology.kubernetes.io/zone";

    /// n1, n2 in zone a; n3 in zone b.
    fn nodes() -> Vec<NodeInfo> {
        vec![
            topo_node("n1", json!({ZONE: "a"})),
            topo_node("n2", json!({ZONE: "a"})),
            topo_node("n3", json!({ZONE: "b"})),
        ]
    }

    fn term(app: &str, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn with_affinity(name: &str, app: &str, affinity: Value) -> Arc<Pod> {
        meta_pod(name, json!({"labels": {"app": app}}), json!({"affinity": affinity}))
    }

    fn required(kind: &str, terms: Value) -> Value {
        json!({kind: {"requiredDuringSchedulingIgnoredDuringExecution": terms}})
    }

    fn preferred(kind: &str, weight: i32, t: Value) -> Value {
        json!({kind: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": weight, "podAffinityTerm": t}]}})
    }

    fn run(pod: &Arc<Pod>, nodes: &[NodeInfo]) -> Option<Vec<String>> {
        filter_all(&InterPodAffinity, pod, nodes, &NamespaceLabels::new())
    }

    #[test]
    fn pods_without_constraints_skip_both_points() {
        let mut n = nodes();
        put(&mut n[0], &labeled("cache", json!({"app": "cache"})));
        let plain = labeled("p", json!({"app": "web"}));
        assert_eq!(run(&plain, &n), None);
        assert_eq!(score_all(&InterPodAffinity, &plain, &n, &NamespaceLabels::new()), None);
    }

    #[test]
    fn required_affinity_co_locates_with_the_cache() {
        let mut n = nodes();
        n.push(NodeInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "bare"}})).unwrap(),
        )));
        put(&mut n[0], &labeled("cache", json!({"app": "cache"})));
        let same_host = with_affinity("web", "web", required("podAffinity", json!([term("cache", HOST)])));
        assert_eq!(
            run(&same_host, &n).unwrap(),
            vec!["", ERR_AFFINITY, ERR_AFFINITY, ERR_AFFINITY]
        );
        let same_zone = with_affinity("web", "web", required("podAffinity", json!([term("cache", ZONE)])));
        assert_eq!(
            run(&same_zone, &n).unwrap(),
            vec!["", "", ERR_AFFINITY, ERR_AFFINITY],
            "the whole zone qualifies; a node without the key never does"
        );
        // A cache pod in another namespace does not count.
        let mut other = nodes();
        put(
            &mut other[0],
            &meta_pod(
                "cache",
                json!({"namespace": "prod", "labels": {"app": "cache"}}),
                json!({}),
            ),
        );
        assert_eq!(run(&same_host, &other).unwrap(), vec![ERR_AFFINITY; 3]);
        // Unless the term names that namespace.
        let t =
            json!([{"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": HOST, "namespaces": ["prod"]}]);
        let named = with_affinity("web", "web", required("podAffinity", t));
        assert_eq!(run(&named, &other).unwrap(), vec!["", ERR_AFFINITY, ERR_AFFINITY]);
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_may_go_anywhere() {
        let n = nodes();
        let first = with_affinity("w1", "web", required("podAffinity", json!([term("web", ZONE)])));
        assert_eq!(run(&first, &n).unwrap(), vec![""; 3]);
        // A pod not matching its own term still needs a matching pod.
        let stranger = with_affinity("s", "other", required("podAffinity", json!([term("web", ZONE)])));
        assert_eq!(run(&stranger, &n).unwrap(), vec![ERR_AFFINITY; 3]);
        // Once a member exists, the rest follow it.
        let mut n = nodes();
        put(&mut n[2], &first);
        let second = with_affinity("w2", "web", required("podAffinity", json!([term("web", ZONE)])));
        assert_eq!(run(&second, &n).unwrap(), vec![ERR_AFFINITY, ERR_AFFINITY, ""]);
    }

    #[test]
    fn anti_affinity_spreads_replicas_one_per_node() {
        let replica = |name: &str| with_affinity(name, "web", required("podAntiAffinity", json!([term("web", HOST)])));
        let mut n = nodes();
        put(&mut n[0], &replica("w1"));
        assert_eq!(run(&replica("w2"), &n).unwrap(), vec![ERR_ANTI_AFFINITY, "", ""]);
        put(&mut n[1], &replica("w2"));
        assert_eq!(
            run(&replica("w3"), &n).unwrap(),
            vec![ERR_ANTI_AFFINITY, ERR_ANTI_AFFINITY, ""]
        );
        // Zone-wide anti-affinity blocks every node of the zone.
        let zonal = with_affinity("z", "web", required("podAntiAffinity", json!([term("web", ZONE)])));
        assert_eq!(run(&zonal, &n).unwrap(), vec![ERR_ANTI_AFFINITY, ERR_ANTI_AFFINITY, ""]);
    }

    #[test]
    fn existing_pods_anti_affinity_is_symmetric() {
        let mut n = nodes();
        let guard = with_affinity("g", "db", required("podAntiAffinity", json!([term("web", ZONE)])));
        put(&mut n[0], &guard);
        // The incoming pod has no affinity at all, but the guard repels it from zone a.
        let web = labeled("web", json!({"app": "web"}));
        assert_eq!(
            run(&web, &n).unwrap(),
            vec![ERR_EXISTING_ANTI_AFFINITY, ERR_EXISTING_ANTI_AFFINITY, ""]
        );
        // A pod the guard does not select skips the plugin.
        assert_eq!(run(&labeled("api", json!({"app": "api"})), &n), None);
    }

    #[test]
    fn namespace_selectors_use_namespace_labels() {
        let namespaces: NamespaceLabels = [
            ("prod".to_string(), [("env".to_string(), "prod".to_string())].into()),
            ("dev".to_string(), [("env".to_string(), "dev".to_string())].into()),
        ]
        .into();
        let mut n = nodes();
        put(
            &mut n[0],
            &meta_pod("c", json!({"namespace": "prod", "labels": {"app": "cache"}}), json!({})),
        );
        put(
            &mut n[2],
            &meta_pod("d", json!({"namespace": "dev", "labels": {"app": "cache"}}), json!({})),
        );
        let t = json!([{"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": HOST,
                        "namespaceSelector": {"matchLabels": {"env": "prod"}}}]);
        let web = with_affinity("web", "web", required("podAffinity", t));
        assert_eq!(
            filter_all(&InterPodAffinity, &web, &n, &namespaces).unwrap(),
            vec!["", ERR_AFFINITY, ERR_AFFINITY]
        );
        // An existing pod's anti-affinity namespaceSelector is matched against
        // the incoming pod's Namespace labels.
        let mut n = nodes();
        let t = json!([{"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": HOST,
                        "namespaceSelector": {"matchLabels": {"env": "dev"}}}]);
        put(&mut n[1], &with_affinity("g", "guard", required("podAntiAffinity", t)));
        let dev_web = meta_pod("w", json!({"namespace": "dev", "labels": {"app": "web"}}), json!({}));
        let prod_web = meta_pod("w", json!({"namespace": "prod", "labels": {"app": "web"}}), json!({}));
        assert_eq!(
            filter_all(&InterPodAffinity, &dev_web, &n, &namespaces).unwrap(),
            vec!["", ERR_EXISTING_ANTI_AFFINITY, ""]
        );
        assert_eq!(filter_all(&InterPodAffinity, &prod_web, &n, &namespaces), None);
    }

    #[test]
    fn add_and_remove_pod_update_a_cloned_state() {
        let replica = |name: &str| with_affinity(name, "web", required("podAntiAffinity", json!([term("web", HOST)])));
        let mut n = nodes();
        let w1 = replica("w1");
        put(&mut n[0], &w1);
        let refs: Vec<&NodeInfo> = n.iter().collect();
        let ns = NamespaceLabels::new();
        let pod = PodInfo::new(replica("w2"));
        let index = crate::pod_index::PodIndex::of_nodes(&refs);
        let state = InterPodAffinity::filter_state(&pod, &Snapshot::new(&refs, &ns, &index)).unwrap();
        let mut copy: Box<dyn FilterState> = Box::new(state.clone());
        let mut without = n[0].clone();
        without.remove_pod("w1");
        copy.remove_pod(&pod, &PodUsage::of(&w1), &without);
        assert!(
            copy.filter(&pod, &without).is_success(),
            "the victim's removal frees n1"
        );
        assert!(!state.filter(&pod, &n[0]).is_success(), "the original is untouched");
        copy.add_pod(&pod, &PodUsage::of(&w1), &n[2]);
        assert_eq!(copy.filter(&pod, &n[2]).reasons, vec![ERR_ANTI_AFFINITY]);
    }

    #[test]
    fn preferred_terms_and_existing_pods_terms_score() {
        let ns = NamespaceLabels::new();
        let mut n = nodes();
        put(&mut n[0], &labeled("cache", json!({"app": "cache"})));
        let near = with_affinity("w", "web", preferred("podAffinity", 80, term("cache", ZONE)));
        assert_eq!(score_all(&InterPodAffinity, &near, &n, &ns).unwrap(), vec![100, 100, 0]);
        let far = with_affinity("w", "web", preferred("podAntiAffinity", 80, term("cache", ZONE)));
        assert_eq!(score_all(&InterPodAffinity, &far, &n, &ns).unwrap(), vec![0, 0, 100]);
        // Existing pods' terms count for a pod without affinity: required
        // affinity with hardPodAffinityWeight 1, preferred with their weight.
        let mut n = nodes();
        put(
            &mut n[2],
            &with_affinity("f", "fan", required("podAffinity", json!([term("web", HOST)]))),
        );
        put(
            &mut n[1],
            &with_affinity("h", "hater", preferred("podAntiAffinity", 10, term("web", HOST))),
        );
        let web = labeled("web", json!({"app": "web"}));
        assert_eq!(score_all(&InterPodAffinity, &web, &n, &ns).unwrap(), vec![90, 0, 100]);
        assert_eq!(
            score_all(&InterPodAffinity, &labeled("x", json!({"app": "x"})), &n, &ns),
            None
        );
    }

    #[test]
    fn a_placed_pod_retries_only_pods_whose_affinity_selects_it() {
        let ns = NamespaceLabels::new();
        let web = with_affinity("web", "web", required("podAffinity", json!([term("cache", HOST)])));
        let repel = with_affinity("r", "web", required("podAntiAffinity", json!([term("cache", HOST)])));
        let cache = labeled("cache", json!({"app": "cache"}));
        assert!(pod_added_may_help(&web, &cache, &ns));
        assert!(!pod_added_may_help(&web, &labeled("db", json!({"app": "db"})), &ns));
        assert!(!pod_added_may_help(&repel, &cache, &ns));
    }
}
