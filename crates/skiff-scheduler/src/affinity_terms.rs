//! Parsed label selectors and pod (anti-)affinity terms (upstream
//! `framework.AffinityTerm` / `WeightedAffinityTerm` and the terms cached in
//! `framework.PodInfo`), computed once per pod so plugins match them against many
//! pods without re-parsing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use skiff_api::selector::{LabelSelector as Selector, Operator, Requirement};

/// Namespace name -> the Namespace's labels (what `namespaceSelector` is matched against).
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Upstream `metav1.LabelSelectorAsSelector`: `None` (a null selector) selects
/// nothing and is returned as `None`; `{}` selects everything. A selector with an
/// unknown operator (which validation rejects) also selects nothing.
pub fn parse_selector(sel: Option<&LabelSelector>) -> Option<Selector> {
    let sel = sel?;
    let mut requirements = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        requirements.push(Requirement {
            key: k.clone(),
            op: Operator::In(vec![v.clone()]),
        });
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let op = match e.operator.as_str() {
            "In" => Operator::In(values),
            "NotIn" => Operator::NotIn(values),
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        };
        requirements.push(Requirement { key: e.key.clone(), op });
    }
    Some(Selector { requirements })
}

/// Whether an optional selector (`None` = nothing) matches `labels`.
pub fn selects(sel: &Option<Selector>, labels: &BTreeMap<String, String>) -> bool {
    sel.as_ref().is_some_and(|s| s.matches(labels))
}

/// The labels of a pod (empty when it has none).
pub fn pod_labels(pod: &Pod) -> &BTreeMap<String, String> {
    pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
}

/// The namespace of a pod (`""` when unset).
pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

/// One parsed `PodAffinityTerm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    /// Namespaces the term selects by name: `namespaces`, or the owning pod's own
    /// namespace when neither `namespaces` nor `namespaceSelector` is set.
    pub namespaces: BTreeSet<String>,
    /// `namespaceSelector` (`None` selects no namespace).
    pub namespace_selector: Option<Selector>,
    /// `labelSelector` (`None` selects no pod).
    pub selector: Option<Selector>,
    /// `topologyKey`: the node label whose value defines the domain.
    pub topology_key: String,
}

impl AffinityTerm {
    /// Parses `term` of a pod in namespace `pod_ns`.
    pub fn new(pod_ns: &str, term: &PodAffinityTerm) -> Self {
        let names = term.namespaces.as_deref().unwrap_or_default();
        let namespaces = if names.is_empty() && term.namespace_selector.is_none() {
            BTreeSet::from([pod_ns.to_string()])
        } else {
            names.iter().cloned().collect()
        };
        Self {
            namespaces,
            namespace_selector: parse_selector(term.namespace_selector.as_ref()),
            selector: parse_selector(term.label_selector.as_ref()),
            topology_key: term.topology_key.clone(),
        }
    }

    /// Upstream `AffinityTerm.Matches`: the pod's namespace is named by the term or
    /// its labels (`ns_labels`, `None` = unknown namespace) match the namespace
    /// selector, and the pod's labels match the label selector.
    pub fn matches(&self, pod: &Pod, ns_labels: Option<&BTreeMap<String, String>>) -> bool {
        (self.namespaces.contains(pod_namespace(pod))
            || selects(&self.namespace_selector, ns_labels.unwrap_or(&NO_LABELS)))
            && selects(&self.selector, pod_labels(pod))
    }

    /// Upstream `mergeAffinityTermNamespacesIfNotEmpty`: a non-empty namespace
    /// selector is replaced by the names of the namespaces it selects now, so the
    /// term can be matched against many pods without their namespaces' labels. An
    /// empty selector (all namespaces) is kept.
    pub fn resolve_namespaces(&mut self, namespaces: &NamespaceLabels) {
        let Some(sel) = &self.namespace_selector else { return };
        if sel.is_empty() {
            return;
        }
        for (name, labels) in namespaces {
            if sel.matches(labels) {
                self.namespaces.insert(name.clone());
            }
        }
        self.namespace_selector = None;
    }
}

/// A preferred term with its weight (1..=100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedAffinityTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Its weight.
    pub weight: i64,
}

/// A pod's parsed `affinity.podAffinity` and `affinity.podAntiAffinity`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAffinityTerms {
    /// `podAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_affinity: Vec<AffinityTerm>,
    /// `podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// `podAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    /// `podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
}

impl PodAffinityTerms {
    /// The pod's terms, or `None` when it has neither `podAffinity` nor
    /// `podAntiAffinity` (upstream counts such pods out of `PodsWithAffinity`).
    pub fn of(pod: &Pod) -> Option<Self> {
        let affinity = pod.spec.as_ref()?.affinity.as_ref()?;
        if affinity.pod_affinity.is_none() && affinity.pod_anti_affinity.is_none() {
            return None;
        }
        let ns = pod_namespace(pod);
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms.into_iter().flatten().map(|t| AffinityTerm::new(ns, t)).collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<WeightedAffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| WeightedAffinityTerm {
                    term: AffinityTerm::new(ns, &t.pod_affinity_term),
                    weight: t.weight as i64,
                })
                .collect()
        };
        let a = affinity.pod_affinity.as_ref();
        let aa = affinity.pod_anti_affinity.as_ref();
        Some(Self {
            required_affinity: required(a.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())),
            required_anti_affinity: required(
                aa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
            ),
            preferred_affinity: preferred(
                a.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
            preferred_anti_affinity: preferred(
                aa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
        })
    }

    /// Resolves the namespace selectors of every term (see
    /// [`AffinityTerm::resolve_namespaces`]).
    pub fn resolve_namespaces(&mut self, namespaces: &NamespaceLabels) {
        for t in self
            .required_affinity
            .iter_mut()
            .chain(self.required_anti_affinity.iter_mut())
        {
            t.resolve_namespaces(namespaces);
        }
        for t in self
            .preferred_affinity
            .iter_mut()
            .chain(self.preferred_anti_affinity.iter_mut())
        {
            t.term.resolve_namespaces(namespaces);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, labels: serde_json::Value, affinity: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c"}], "affinity": affinity}}))
        .unwrap()
    }

    #[test]
    fn null_selects_nothing_and_empty_selects_everything() {
        assert_eq!(parse_selector(None), None);
        let all = parse_selector(Some(&LabelSelector::default()));
        assert!(selects(&all, &BTreeMap::new()));
        assert!(!selects(&None, &BTreeMap::new()));
    }

    #[test]
    fn terms_default_to_the_owning_pods_namespace() {
        let p = pod(
            "web",
            json!({}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"},
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone",
                 "namespaceSelector": {"matchLabels": {"team": "a"}}},
            ]}}),
        );
        let mut terms = PodAffinityTerms::of(&p).unwrap();
        let same = pod("web", json!({"app": "web"}), json!(null));
        let other = pod("db", json!({"app": "web"}), json!(null));
        let [own, by_selector] = &terms.required_anti_affinity[..] else {
            panic!()
        };
        assert!(own.matches(&same, None));
        assert!(!own.matches(&other, None));
        assert!(
            !by_selector.matches(&same, None),
            "a namespace selector replaces the own namespace"
        );
        let team_a = BTreeMap::from([("team".to_string(), "a".to_string())]);
        assert!(by_selector.matches(&other, Some(&team_a)));
        terms.resolve_namespaces(&BTreeMap::from([("db".to_string(), team_a.clone())]));
        assert!(terms.required_anti_affinity[1].matches(&other, None));
        assert_eq!(
            PodAffinityTerms::of(&pod("x", json!({}), json!({"nodeAffinity": {}}))),
            None
        );
    }
}
