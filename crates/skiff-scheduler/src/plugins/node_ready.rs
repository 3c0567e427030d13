//! NodeReady: skips nodes whose `Ready` condition is not `True`.
//!
//! Upstream relies on the `node.kubernetes.io/not-ready` / `unreachable` taints the
//! node lifecycle controller places; this filter covers the window before that
//! taint exists (e.g. a node that just registered), and like the taint it lets
//! through pods that tolerate `node.kubernetes.io/not-ready:NoSchedule`
//! (DaemonSet pods).

use k8s_openapi::api::core::v1::Taint;

use crate::framework::{Code, FilterPlugin, NodeInfo, PodInfo, Status};
use crate::plugins::taint_toleration::tolerates;

/// Registry name.
pub const NAME: &str = "NodeReady";
/// Failure reason.
pub const REASON: &str = "node(s) were not ready";

/// The plugin.
pub struct NodeReady;

/// Whether the node reports `Ready=True`.
pub fn is_ready(node: &NodeInfo) -> bool {
    node.node
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

impl FilterPlugin for NodeReady {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        if is_ready(node) {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/not-ready".into(),
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
    fn not_ready_nodes_are_skipped_unless_tolerated() {
        let down = node(
            "n",
            "1",
            "1Gi",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let plain = pod(json!({"containers": [{"name": "c"}]}));
        assert_eq!(NodeReady.filter(&plain, &down).reasons, vec![REASON]);
        let ds = pod(json!({"containers": [{"name": "c"}], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}));
        assert!(NodeReady.filter(&ds, &down).is_success());
        assert!(NodeReady.filter(&plain, &node("n", "1", "1Gi", json!({}))).is_success());
    }
}
