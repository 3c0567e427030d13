//! NodeName: a pod that names a node in `spec.nodeName` fits only that node.

use crate::framework::{Code, FilterPlugin, NodeInfo, PodInfo, Status};

/// Registry name.
pub const NAME: &str = "NodeName";
/// Upstream failure reason.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// The plugin.
pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            Some(want) if want != node.name() => Status::new(Code::UnschedulableAndUnresolvable, REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn only_the_named_node_fits() {
        let p = pod(json!({"containers": [{"name": "c"}], "nodeName": "b"}));
        assert!(!NodeName.filter(&p, &node("a", "1", "1Gi", json!({}))).is_success());
        assert!(NodeName.filter(&p, &node("b", "1", "1Gi", json!({}))).is_success());
    }
}
