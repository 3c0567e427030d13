//! NodeAffinity: `spec.nodeSelector` and
//! `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution` must match
//! the node; `preferredDuringSchedulingIgnoredDuringExecution` terms add their
//! weights to the node's score.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeAffinity as NodeAffinitySpec, NodeSelectorRequirement, NodeSelectorTerm};

use crate::framework::{Code, FilterPlugin, NodeInfo, PodInfo, ScorePlugin, Status, default_normalize};

/// Registry name.
pub const NAME: &str = "NodeAffinity";
/// Upstream failure reason.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// The plugin.
pub struct NodeAffinity;

/// Whether one requirement matches `labels` (operators In, NotIn, Exists,
/// DoesNotExist, Gt, Lt; Gt/Lt compare integers and fail on non-integers).
pub fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let v = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(w)) = (
                v.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" { v > w } else { v < w }
        }
        _ => false,
    }
}

/// Whether a node selector term matches: all its expressions on labels and all its
/// fields (only `metadata.name`) hold; a term with neither matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let field_map: BTreeMap<String, String> = [("metadata.name".to_string(), node_name.to_string())].into();
    exprs.iter().all(|r| requirement_matches(r, labels)) && fields.iter().all(|f| requirement_matches(f, &field_map))
}

fn node_affinity(pod: &PodInfo) -> Option<&NodeAffinitySpec> {
    pod.pod.spec.as_ref()?.affinity.as_ref()?.node_affinity.as_ref()
}

/// Whether the pod's nodeSelector and required node affinity (terms ORed) admit the node.
pub fn matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    let labels = node.labels();
    if let Some(sel) = pod.pod.spec.as_ref().and_then(|s| s.node_selector.as_ref())
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    match node_affinity(pod).and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref()) {
        None => true,
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, node.name())),
    }
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        if matches(pod, node) {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, REASON)
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Sum of the weights of the preferred terms the node matches.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let labels = node.labels();
        node_affinity(pod)
            .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, labels, node.name()))
            .map(|p| p.weight as i64)
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn node_selector_and_required_terms() {
        let ssd = node("a", "1", "1Gi", json!({"labels": {"disk": "ssd", "gen": "5"}}));
        let hdd = node("b", "1", "1Gi", json!({"labels": {"disk": "hdd", "gen": "3"}}));
        let p = pod(json!({"containers": [{"name": "c"}], "nodeSelector": {"disk": "ssd"}}));
        assert!(NodeAffinity.filter(&p, &ssd).is_success());
        assert_eq!(NodeAffinity.filter(&p, &hdd).reasons, vec![REASON]);
        let p = pod(json!({"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]},
        ]}}}}));
        assert!(NodeAffinity.filter(&p, &ssd).is_success(), "first term");
        assert!(NodeAffinity.filter(&p, &hdd).is_success(), "second term");
        let empty_term = pod(json!({"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}}));
        assert!(
            !NodeAffinity.filter(&empty_term, &ssd).is_success(),
            "an empty term matches nothing"
        );
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let ssd = node("a", "1", "1Gi", json!({"labels": {"disk": "ssd"}}));
        let hdd = node("b", "1", "1Gi", json!({"labels": {"disk": "hdd"}}));
        let p = pod(json!({"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 80, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
            {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
        ]}}}));
        let mut s = vec![NodeAffinity.score(&p, &ssd), NodeAffinity.score(&p, &hdd)];
        assert_eq!(s, vec![100, 20]);
        NodeAffinity.normalize(&mut s);
        assert_eq!(s, vec![100, 20]);
    }
}
