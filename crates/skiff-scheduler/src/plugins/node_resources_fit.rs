//! NodeResourcesFit: the pod's effective requests must fit into the node's
//! allocatable minus what its pods already request (`Insufficient cpu`, `Too many
//! pods`, ...); feasible nodes are scored with the default `LeastAllocated`
//! strategy (cpu and memory, weight 1 each, counting zero requests as the scoring
//! defaults).

use crate::framework::{Code, FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status};

/// Registry name.
pub const NAME: &str = "NodeResourcesFit";
/// Upstream reason when the node's `pods` allocatable is exhausted.
pub const TOO_MANY_PODS: &str = "Too many pods";

/// The plugin.
pub struct NodeResourcesFit;

/// The resources the pod lacks on the node, in upstream order (pods, cpu, memory,
/// then others by name); empty if it fits.
pub fn insufficient(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let want = &pod.usage.requested;
    let have = &node.allocatable;
    let used = &node.requested;
    let mut out = Vec::new();
    if node.pods.len() as i128 + 1 > have.pods {
        out.push(TOO_MANY_PODS.to_string());
    }
    if want.milli_cpu > 0 && want.milli_cpu > have.milli_cpu - used.milli_cpu {
        out.push("Insufficient cpu".into());
    }
    if want.memory > 0 && want.memory > have.memory - used.memory {
        out.push("Insufficient memory".into());
    }
    for (name, &amount) in &want.other {
        let free = have.other.get(name).copied().unwrap_or(0) - used.other.get(name).copied().unwrap_or(0);
        if amount > 0 && amount > free {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(pod, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: Code::Unschedulable,
                reasons,
            }
        }
    }
}

/// Upstream `leastRequestedScore`: the free fraction of `capacity` after `requested`,
/// scaled to 0..=100; 0 when capacity is 0 or exceeded.
pub fn least_requested_score(requested: i128, capacity: i128) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    ((capacity - requested) * MAX_NODE_SCORE as i128 / capacity) as i64
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    /// LeastAllocated: mean of the cpu and memory least-requested scores.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let want = &pod.usage.non_zero_requested;
        let used = &node.non_zero_requested;
        let have = &node.allocatable;
        let cpu = least_requested_score(used.milli_cpu + want.milli_cpu, have.milli_cpu);
        let mem = least_requested_score(used.memory + want.memory, have.memory);
        (cpu + mem) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, place, pod};
    use serde_json::json;

    #[test]
    fn fit_counts_already_bound_pods() {
        let mut n = node("n", "2", "4Gi", json!({}));
        let p = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
        assert!(NodeResourcesFit.filter(&p, &n).is_success());
        place(
            &mut n,
            "a",
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m", "memory": "3500Mi"}}}]}),
        );
        assert_eq!(
            NodeResourcesFit.filter(&p, &n).reasons,
            vec!["Insufficient cpu", "Insufficient memory"]
        );
        n.remove_pod("a");
        assert!(NodeResourcesFit.filter(&p, &n).is_success());
    }

    #[test]
    fn pods_limit_and_extended_resources() {
        let mut n = node(
            "n",
            "8",
            "8Gi",
            json!({"status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "1", "example.com/gpu": "1"},
                              "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let gpu = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "2"}}}]}));
        assert_eq!(
            NodeResourcesFit.filter(&gpu, &n).reasons,
            vec!["Insufficient example.com/gpu"]
        );
        place(&mut n, "a", json!({"containers": [{"name": "c"}]}));
        let plain = pod(json!({"containers": [{"name": "c"}]}));
        assert_eq!(NodeResourcesFit.filter(&plain, &n).reasons, vec![TOO_MANY_PODS]);
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let p = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
        let empty = node("a", "4", "8Gi", json!({}));
        let mut busy = node("b", "4", "8Gi", json!({}));
        place(
            &mut busy,
            "x",
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}),
        );
        // cpu (4-1)/4 = 75, memory (8-1)/8 = 87 -> 81.
        assert_eq!(NodeResourcesFit.score(&p, &empty), 81);
        // cpu (4-3)/4 = 25, memory (8-5)/8 = 37 -> 31.
        assert_eq!(NodeResourcesFit.score(&p, &busy), 31);
        assert_eq!(least_requested_score(5, 4), 0);
        assert_eq!(least_requested_score(1, 0), 0);
    }
}
