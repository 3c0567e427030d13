//! NodePorts: a pod's `hostPort`s must be free on the node. Two ports conflict when
//! protocol and port are equal and either host IP is `0.0.0.0` or they are equal.

use crate::framework::{Code, FilterPlugin, NodeInfo, PodInfo, Status};

/// Registry name.
pub const NAME: &str = "NodePorts";
/// Upstream failure reason.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The plugin.
pub struct NodePorts;

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let conflict = pod.usage.ports.iter().any(|(proto, ip, port)| {
            node.used_ports.iter().any(|(p2, ip2, port2)| {
                proto == p2 && port == port2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
            })
        });
        if conflict {
            Status::new(Code::Unschedulable, REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, place, pod};
    use serde_json::json;

    #[test]
    fn host_ports_conflict_by_protocol_port_and_ip() {
        let mut n = node("n", "4", "4Gi", json!({}));
        place(
            &mut n,
            "a",
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}]}]}),
        );
        let same = pod(json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}));
        assert_eq!(NodePorts.filter(&same, &n).reasons, vec![REASON]);
        let other_ip = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.2"}]}]}),
        );
        assert!(NodePorts.filter(&other_ip, &n).is_success());
        let udp = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}),
        );
        assert!(NodePorts.filter(&udp, &n).is_success());
        n.remove_pod("a");
        assert!(NodePorts.filter(&same, &n).is_success());
    }
}
