//! NodeResourcesBalancedAllocation: prefers nodes where, with the pod placed, the
//! requested fractions of cpu and memory are close to each other (score
//! `(1 - standard deviation of the fractions) * 100`).

use crate::framework::{MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin};

/// Registry name.
pub const NAME: &str = "NodeResourcesBalancedAllocation";

/// The plugin.
pub struct BalancedAllocation;

/// The score for requested/allocatable fractions (each capped at 1).
pub fn balanced_score(fractions: &[f64]) -> i64 {
    if fractions.len() < 2 {
        return MAX_NODE_SCORE;
    }
    let n = fractions.len() as f64;
    let mean = fractions.iter().sum::<f64>() / n;
    let variance = fractions.iter().map(|f| (f - mean) * (f - mean)).sum::<f64>() / n;
    ((1.0 - variance.sqrt()) * MAX_NODE_SCORE as f64) as i64
}

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let want = &pod.usage.requested;
        let used = &node.requested;
        let have = &node.allocatable;
        let fraction = |req: i128, cap: i128| -> Option<f64> { (cap > 0).then(|| (req as f64 / cap as f64).min(1.0)) };
        let fractions: Vec<f64> = [
            fraction(used.milli_cpu + want.milli_cpu, have.milli_cpu),
            fraction(used.memory + want.memory, have.memory),
        ]
        .into_iter()
        .flatten()
        .collect();
        balanced_score(&fractions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn balanced_nodes_score_higher() {
        assert_eq!(balanced_score(&[0.5, 0.5]), 100);
        assert_eq!(balanced_score(&[1.0, 0.0]), 50);
        let p = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
        // cpu 1/2 = 0.5 and memory 1/2 = 0.5 -> balanced.
        assert_eq!(BalancedAllocation.score(&p, &node("a", "2", "2Gi", json!({}))), 100);
        // cpu 1/2 = 0.5, memory 1/8 = 0.125 -> std 0.1875.
        assert_eq!(BalancedAllocation.score(&p, &node("b", "2", "8Gi", json!({}))), 81);
    }
}
