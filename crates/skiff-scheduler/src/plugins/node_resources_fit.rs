//! NodeResourcesFit: the pod's effective requests must fit into the node's
//! allocatable minus what its pods already request (`Insufficient cpu`, `Too many
//! pods`, ...); feasible nodes are scored by the configured [`ScoringStrategy`]
//! (upstream `scoringStrategy` in `NodeResourcesFitArgs`): `LeastAllocated` by
//! default, `MostAllocated` or `RequestedToCapacityRatio`, over weighted resources
//! (cpu and memory, weight 1 each, by default), counting zero cpu/memory requests
//! as the scoring defaults.

use crate::framework::{Code, FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status};

/// Registry name.
pub const NAME: &str = "NodeResourcesFit";
/// Upstream reason when the node's `pods` allocatable is exhausted.
pub const TOO_MANY_PODS: &str = "Too many pods";

/// How feasible nodes are scored (upstream `ScoringStrategyType`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StrategyType {
    /// Prefer nodes with the most free capacity (spreading).
    #[default]
    LeastAllocated,
    /// Prefer nodes with the least free capacity (bin packing).
    MostAllocated,
    /// A piecewise-linear function of utilization: `(utilization %, score 0..=10)`
    /// points, ascending by utilization.
    RequestedToCapacityRatio(Vec<(i64, i64)>),
}

/// The scoring strategy: a type and the resources it weighs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoringStrategy {
    /// The scoring function.
    pub kind: StrategyType,
    /// `(resource name, weight)`; weights are positive.
    pub resources: Vec<(String, i64)>,
}

impl Default for ScoringStrategy {
    fn default() -> Self {
        Self {
            kind: StrategyType::default(),
            resources: vec![("cpu".into(), 1), ("memory".into(), 1)],
        }
    }
}

/// The plugin, with its scoring strategy.
#[derive(Debug, Clone, Default)]
pub struct NodeResourcesFit {
    /// How feasible nodes are scored.
    pub strategy: ScoringStrategy,
}

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

/// Upstream `mostRequestedScore`: the used fraction of `capacity` scaled to
/// 0..=100 (requests above capacity count as full); 0 when capacity is 0.
pub fn most_requested_score(requested: i128, capacity: i128) -> i64 {
    if capacity <= 0 {
        return 0;
    }
    (requested.min(capacity) * MAX_NODE_SCORE as i128 / capacity) as i64
}

/// Upstream `buildBrokenLinearFunction` over `shape` (scores 0..=10, scaled to
/// 0..=100) at `utilization` percent.
fn broken_linear(shape: &[(i64, i64)], utilization: i64) -> i64 {
    let scaled: Vec<(i64, i64)> = shape.iter().map(|&(u, s)| (u, s * MAX_NODE_SCORE / 10)).collect();
    let Some(&(first_u, first_s)) = scaled.first() else {
        return 0;
    };
    if utilization <= first_u {
        return first_s;
    }
    for w in scaled.windows(2) {
        let ((u0, s0), (u1, s1)) = (w[0], w[1]);
        if utilization <= u1 {
            return s0 + (s1 - s0) * (utilization - u0) / (u1 - u0).max(1);
        }
    }
    scaled.last().map(|&(_, s)| s).unwrap_or(0)
}

fn amount(r: &crate::resources::Resources, name: &str) -> i128 {
    match name {
        "cpu" => r.milli_cpu,
        "memory" => r.memory,
        "pods" => r.pods,
        other => r.other.get(other).copied().unwrap_or(0),
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The weighted mean of the per-resource scores; resources the node does not
    /// have (capacity 0) are skipped, as upstream.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let want = &pod.usage.non_zero_requested;
        let used = &node.non_zero_requested;
        let have = &node.allocatable;
        let (mut total, mut weights) = (0i64, 0i64);
        for (name, weight) in &self.strategy.resources {
            let capacity = amount(have, name);
            if capacity <= 0 {
                continue;
            }
            let requested = amount(used, name) + amount(want, name);
            let score = match &self.strategy.kind {
                StrategyType::LeastAllocated => least_requested_score(requested, capacity),
                StrategyType::MostAllocated => most_requested_score(requested, capacity),
                StrategyType::RequestedToCapacityRatio(shape) => {
                    broken_linear(shape, (requested.min(capacity) * 100 / capacity) as i64)
                }
            };
            total += score * weight;
            weights += weight;
        }
        if weights == 0 {
            return 0;
        }
        match self.strategy.kind {
            // Upstream rounds this one to the nearest integer.
            StrategyType::RequestedToCapacityRatio(_) => (total as f64 / weights as f64).round() as i64,
            _ => total / weights,
        }
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
        assert!(NodeResourcesFit::default().filter(&p, &n).is_success());
        place(
            &mut n,
            "a",
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m", "memory": "3500Mi"}}}]}),
        );
        assert_eq!(
            NodeResourcesFit::default().filter(&p, &n).reasons,
            vec!["Insufficient cpu", "Insufficient memory"]
        );
        n.remove_pod("a");
        assert!(NodeResourcesFit::default().filter(&p, &n).is_success());
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
            NodeResourcesFit::default().filter(&gpu, &n).reasons,
            vec!["Insufficient example.com/gpu"]
        );
        place(&mut n, "a", json!({"containers": [{"name": "c"}]}));
        let plain = pod(json!({"containers": [{"name": "c"}]}));
        assert_eq!(
            NodeResourcesFit::default().filter(&plain, &n).reasons,
            vec![TOO_MANY_PODS]
        );
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
        assert_eq!(NodeResourcesFit::default().score(&p, &empty), 81);
        // cpu (4-3)/4 = 25, memory (8-5)/8 = 37 -> 31.
        assert_eq!(NodeResourcesFit::default().score(&p, &busy), 31);
        assert_eq!(least_requested_score(5, 4), 0);
        assert_eq!(least_requested_score(1, 0), 0);
    }

    fn fit(kind: StrategyType, resources: &[(&str, i64)]) -> NodeResourcesFit {
        NodeResourcesFit {
            strategy: ScoringStrategy {
                kind,
                resources: resources.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
            },
        }
    }

    #[test]
    fn most_allocated_prefers_fuller_nodes() {
        let p = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
        let empty = node("a", "4", "8Gi", json!({}));
        let mut busy = node("b", "4", "8Gi", json!({}));
        place(
            &mut busy,
            "x",
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}),
        );
        let most = fit(StrategyType::MostAllocated, &[("cpu", 1), ("memory", 1)]);
        // cpu 1/4 = 25, memory 1/8 = 12 -> 18; busy: cpu 3/4 = 75, memory 5/8 = 62 -> 68.
        assert_eq!(most.score(&p, &empty), 18);
        assert_eq!(most.score(&p, &busy), 68);
        // Weights: cpu counts three times as much as memory: (75*3 + 62) / 4 = 71.
        let cpu_heavy = fit(StrategyType::MostAllocated, &[("cpu", 3), ("memory", 1)]);
        assert_eq!(cpu_heavy.score(&p, &busy), 71);
        assert_eq!(most_requested_score(6, 4), 100);
    }

    #[test]
    fn requested_to_capacity_ratio_follows_the_shape() {
        // Bin packing as upstream documents it: 0 % -> 0, 100 % -> 10.
        let shape = vec![(0, 0), (100, 10)];
        let rtcr = fit(StrategyType::RequestedToCapacityRatio(shape), &[("cpu", 1)]);
        let p = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}));
        let n = node("a", "4", "8Gi", json!({}));
        assert_eq!(rtcr.score(&p, &n), 25);
        // Spreading shape 0 % -> 10, 100 % -> 0, with a step in between.
        assert_eq!(broken_linear(&[(0, 10), (50, 10), (100, 0)], 75), 50);
        assert_eq!(broken_linear(&[(0, 10), (50, 10), (100, 0)], 20), 100);
        assert_eq!(broken_linear(&[(10, 2), (90, 8)], 0), 20);
        assert_eq!(broken_linear(&[(10, 2), (90, 8)], 100), 80);
    }

    #[test]
    fn resources_the_node_lacks_are_not_weighed() {
        let p = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}));
        let n = node("a", "4", "8Gi", json!({}));
        let with_gpu = fit(StrategyType::LeastAllocated, &[("cpu", 1), ("example.com/gpu", 5)]);
        // Only cpu counts: (4-1)/4 = 75.
        assert_eq!(with_gpu.score(&p, &n), 75);
    }
}
