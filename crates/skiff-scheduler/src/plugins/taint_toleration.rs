//! TaintToleration: a pod may land only on nodes whose `NoSchedule`/`NoExecute`
//! taints it tolerates; among feasible nodes it prefers fewer untolerated
//! `PreferNoSchedule` taints.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{Code, FilterPlugin, NodeInfo, PodInfo, ScorePlugin, Status, default_normalize};

/// Registry name.
pub const NAME: &str = "TaintToleration";

/// The plugin.
pub struct TaintToleration;

/// Whether `t` tolerates `taint` (upstream `Toleration.ToleratesTaint`): the effect
/// matches or is empty, the key matches or is empty, and with operator `Equal`
/// (the default) the values are equal; `Exists` ignores the value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The first `NoSchedule`/`NoExecute` taint of the node none of `tolerations` tolerates.
pub fn first_untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        match first_untolerated(taints(node), tolerations(pod)) {
            None => Status::success(),
            Some(t) => Status::new(
                Code::UnschedulableAndUnresolvable,
                format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key,
                    t.value.as_deref().unwrap_or("")
                ),
            ),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The number of `PreferNoSchedule` taints not tolerated by the pod's tolerations
    /// with effect `PreferNoSchedule` or empty.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let prefer: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
            })
            .collect();
        taints(node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|taint| !prefer.iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }

    /// Fewer intolerable taints score higher.
    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn toleration_matching_follows_upstream_rules() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(&tol(json!({"key": "dedicated", "value": "gpu"})), &t));
        assert!(tolerates(
            &tol(json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"})),
            &t
        ));
        assert!(!tolerates(&tol(json!({"key": "dedicated", "value": "cpu"})), &t));
        assert!(!tolerates(
            &tol(json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})),
            &t
        ));
        assert!(tolerates(&tol(json!({"key": "dedicated", "operator": "Exists"})), &t));
        assert!(
            tolerates(&tol(json!({"operator": "Exists"})), &t),
            "empty key + Exists tolerates everything"
        );
        assert!(!tolerates(&tol(json!({"key": "other", "operator": "Exists"})), &t));
    }

    #[test]
    fn filter_names_the_untolerated_taint_like_upstream() {
        let n = node(
            "n",
            "1",
            "1Gi",
            json!({"spec": {"taints": [
                {"key": "soft", "effect": "PreferNoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
            ]}}),
        );
        let p = pod(json!({"containers": [{"name": "c"}]}));
        assert_eq!(
            TaintToleration.filter(&p, &n).reasons,
            vec!["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
        let p = pod(
            json!({"containers": [{"name": "c"}], "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}),
        );
        assert!(TaintToleration.filter(&p, &n).is_success());
    }

    #[test]
    fn score_prefers_fewer_prefer_no_schedule_taints() {
        let clean = node("a", "1", "1Gi", json!({}));
        let soft = node(
            "b",
            "1",
            "1Gi",
            json!({"spec": {"taints": [{"key": "soft", "effect": "PreferNoSchedule"}]}}),
        );
        let p = pod(json!({"containers": [{"name": "c"}]}));
        let mut scores = vec![TaintToleration.score(&p, &clean), TaintToleration.score(&p, &soft)];
        TaintToleration.normalize(&mut scores);
        assert_eq!(scores, vec![100, 0]);
        let tolerant = pod(
            json!({"containers": [{"name": "c"}], "tolerations": [{"key": "soft", "operator": "Exists", "effect": "PreferNoSchedule"}]}),
        );
        assert_eq!(TaintToleration.score(&tolerant, &soft), 0);
    }
}
