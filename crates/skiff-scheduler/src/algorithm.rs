//! One scheduling attempt (upstream `schedulePod`): filter nodes until enough
//! feasible ones are found (adaptive `percentageOfNodesToScore`, starting where
//! the last attempt stopped so every node gets its turn), score them, and pick the
//! best, breaking ties at random.

use rand::Rng;

use crate::cache::Cache;
use crate::framework::{Diagnosis, NodeInfo, PodInfo, Profile, failure_message, num_feasible_nodes_to_find};
use crate::preemption::{Nominator, run_filters_with_nominated};

/// Why no node was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// Number of nodes considered.
    pub num_all_nodes: usize,
    /// Per-node reasons.
    pub diagnosis: Diagnosis,
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&failure_message(self.num_all_nodes, &self.diagnosis))
    }
}

impl std::error::Error for FitError {}

/// Picks the highest score; among equal scores each has the same chance
/// (reservoir sampling, as upstream `selectHost`). Returns an index into `scores`.
pub fn select_host(scores: &[i64], rng: &mut impl Rng) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    let mut ties = 0u32;
    for (i, &s) in scores.iter().enumerate() {
        match best {
            Some((_, b)) if s < b => {}
            Some((_, b)) if s == b => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some((i, s));
                }
            }
            _ => {
                best = Some((i, s));
                ties = 1;
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Chooses a node for `pod`. `next_start` is the rotating index of the first node
/// to filter; it advances past the nodes examined.
pub fn schedule_pod(
    profile: &Profile,
    cache: &Cache,
    pod: &PodInfo,
    next_start: &mut usize,
    rng: &mut impl Rng,
) -> Result<String, FitError> {
    schedule_pod_with(profile, cache, &Nominator::new(), pod, next_start, rng)
}

/// [`schedule_pod`] with nominated pods: a pod nominated to a node (after it
/// preempted there) tries that node first, and pods nominated to a node count there
/// for pods of lower or equal priority (upstream `evaluateNominatedNode` and
/// `RunFilterPluginsWithNominatedPods`).
pub fn schedule_pod_with(
    profile: &Profile,
    cache: &Cache,
    nominator: &Nominator,
    pod: &PodInfo,
    next_start: &mut usize,
    rng: &mut impl Rng,
) -> Result<String, FitError> {
    let me = pod.pod.metadata.uid.as_deref().unwrap_or_default();
    let nominated = nominator
        .nominated_node(me)
        .or_else(|| pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()));
    if let Some(node) = nominated.and_then(|n| cache.node(n))
        && run_filters_with_nominated(profile, nominator, pod, node).is_success()
    {
        return Ok(node.name().to_string());
    }
    let nodes: Vec<&NodeInfo> = cache.nodes().collect();
    let total = nodes.len();
    let mut diagnosis = Diagnosis::default();
    if total == 0 {
        return Err(FitError {
            num_all_nodes: 0,
            diagnosis,
        });
    }
    let want = num_feasible_nodes_to_find(total);
    let start = *next_start % total;
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut examined = 0;
    for i in 0..total {
        let node = nodes[(start + i) % total];
        examined += 1;
        let status = run_filters_with_nominated(profile, nominator, pod, node);
        if status.is_success() {
            feasible.push(node);
            if feasible.len() >= want {
                break;
            }
        } else {
            diagnosis.node_to_status.insert(node.name().to_string(), status);
        }
    }
    *next_start = (start + examined) % total;
    match feasible.len() {
        0 => Err(FitError {
            num_all_nodes: total,
            diagnosis,
        }),
        1 => Ok(feasible[0].name().to_string()),
        _ => {
            let scores = profile.run_scores(pod, &feasible);
            let i = select_host(&scores, rng).expect("feasible nodes are scored");
            Ok(feasible[i].name().to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;
    use rand::SeedableRng;
    use serde_json::json;

    use super::*;
    use crate::plugins::testing::pod;
    use crate::plugins::{default_plugins, registry};

    fn node(name: &str, cpu: &str, taint: bool) -> Arc<Node> {
        let mut n = json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        if taint {
            n["spec"] = json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
        }
        Arc::new(serde_json::from_value(n).unwrap())
    }

    #[test]
    fn ties_are_broken_among_the_best_only() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen = [0; 4];
        for _ in 0..200 {
            seen[select_host(&[5, 9, 1, 9], &mut rng).unwrap()] += 1;
        }
        assert_eq!((seen[0], seen[2]), (0, 0));
        assert!(seen[1] > 0 && seen[3] > 0);
        assert_eq!(select_host(&[], &mut rng), None);
    }

    #[test]
    fn picks_the_least_allocated_feasible_node_and_explains_failures() {
        let profile = Profile::new(&registry(), &default_plugins()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut cache = Cache::new();
        cache.set_node(node("small", "1", false));
        cache.set_node(node("big", "8", false));
        cache.set_node(node("gpu", "64", true));
        let p = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}));
        let mut start = 0;
        assert_eq!(schedule_pod(&profile, &cache, &p, &mut start, &mut rng).unwrap(), "big");
        let huge = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "16"}}}]}));
        let err = schedule_pod(&profile, &cache, &huge, &mut start, &mut rng).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu."
        );
        let none = Cache::new();
        let err = schedule_pod(&profile, &none, &huge, &mut start, &mut rng).unwrap_err();
        assert_eq!(err.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn two_quick_pods_do_not_share_the_last_slot() {
        let profile = Profile::new(&registry(), &default_plugins()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut cache = Cache::new();
        cache.set_node(node("n", "1", false));
        let spec = json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "600m"}}}]});
        let a = crate::plugins::testing::raw_pod("a", spec.clone());
        let b = crate::framework::PodInfo::new(Arc::new(crate::plugins::testing::raw_pod("b", spec)));
        let mut start = 0;
        let chosen = schedule_pod(
            &profile,
            &cache,
            &PodInfo::new(Arc::new(a.clone())),
            &mut start,
            &mut rng,
        )
        .unwrap();
        cache.assume(&a, &chosen);
        let err = schedule_pod(&profile, &cache, &b, &mut start, &mut rng).unwrap_err();
        assert_eq!(err.to_string(), "0/1 nodes are available: 1 Insufficient cpu.");
    }
}
