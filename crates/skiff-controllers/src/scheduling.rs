//! The scheduling predicates controllers evaluate themselves (upstream
//! component-helpers `scheduling/corev1`): node selectors and required node
//! affinity, and taints against tolerations. The DaemonSet controller uses them to
//! decide which nodes should run a daemon pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration};

fn requirement(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (
            value.and_then(|v| v.parse::<i64>().ok()),
            values.first().and_then(|w| w.parse::<i64>().ok()),
        ) {
            (Some(v), Some(w)) => (r.operator == "Gt" && v > w) || (r.operator == "Lt" && v < w),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a node selector term matches a node: every label expression and every
/// field expression (`metadata.name` only) holds; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name = node_name.to_string();
    exprs.iter().all(|r| requirement(r, labels.get(&r.key)))
        && fields
            .iter()
            .all(|r| requirement(r, (r.key == "metadata.name").then_some(&name)))
}

/// Whether the pod's `nodeSelector` and required node affinity (terms ORed) admit
/// the node (upstream `GetRequiredNodeAffinity(pod).Match(node)`).
pub fn node_matches(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, labels, name)));
    selector_ok && affinity_ok
}

/// Whether `t` tolerates `taint` (upstream `Toleration.ToleratesTaint`): the effect
/// matches or is empty, the key matches or is empty (empty key needs `Exists`),
/// and `Equal` (the default operator) compares values.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// The node's taints with `effect` that none of `tolerations` tolerates.
pub fn untolerated<'a>(node: &'a Node, tolerations: &[Toleration], effect: &str) -> Vec<&'a Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|taint| taint.effect == effect && !tolerations.iter().any(|t| tolerates(t, taint)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}))
            .unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut base = json!({"containers": []});
        base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn selectors_and_required_affinity() {
        let n = node("n1", json!({"disk": "ssd", "gen": "5"}), json!([]));
        let cases = [
            (json!({}), true),
            (json!({"nodeSelector": {"disk": "ssd"}}), true),
            (json!({"nodeSelector": {"disk": "hdd"}}), false),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]},
                {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]}]}}}}),
                true,
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}),
                false,
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}],
                 "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}),
                true,
            ),
        ];
        for (i, (s, want)) in cases.into_iter().enumerate() {
            assert_eq!(node_matches(&spec(s), &n), want, "case {i}");
        }
    }

    #[test]
    fn tolerations_follow_upstream_rules() {
        let n = node(
            "n",
            json!({}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                   {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        );
        let tol = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert_eq!(untolerated(&n, &[], "NoSchedule").len(), 1);
        let equal = tol(json!({"key": "dedicated", "value": "gpu"}));
        assert!(untolerated(&n, std::slice::from_ref(&equal), "NoSchedule").is_empty());
        let wrong = tol(json!({"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}));
        assert_eq!(untolerated(&n, &[wrong], "NoSchedule").len(), 1);
        let all = tol(json!({"operator": "Exists"}));
        assert!(untolerated(&n, &[all], "NoExecute").is_empty());
        let exists = tol(json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}));
        assert!(untolerated(&n, &[exists], "NoExecute").is_empty());
    }
}
