//! NodeUnschedulable: nodes with `spec.unschedulable` (cordoned) accept only pods
//! tolerating the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use crate::framework::{Code, FilterPlugin, NodeInfo, PodInfo, Status};
use crate::plugins::taint_toleration::tolerates;

/// Registry name.
pub const NAME: &str = "NodeUnschedulable";
/// Upstream failure reason.
pub const REASON: &str = "node(s) were unschedulable";

/// The plugin.
pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let cordoned = node
            .node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerated = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|t| tolerates(t, &taint));
        if tolerated {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn cordoned_nodes_take_only_tolerating_pods() {
        let n = node("n", "1", "1Gi", json!({"spec": {"unschedulable": true}}));
        let plain = pod(json!({"containers": [{"name": "c"}]}));
        assert_eq!(NodeUnschedulable.filter(&plain, &n).reasons, vec![REASON]);
        let tolerant = pod(json!({"containers": [{"name": "c"}], "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert!(NodeUnschedulable.filter(&tolerant, &n).is_success());
        let open = node("n", "1", "1Gi", json!({}));
        assert!(NodeUnschedulable.filter(&plain, &open).is_success());
    }
}
