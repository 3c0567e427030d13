//! One scheduling attempt (upstream `schedulePod`): filter nodes until enough
//! feasible ones are found (adaptive `percentageOfNodesToScore`, starting where
//! the last attempt stopped so every node gets its turn), score them, and pick the
//! best, breaking ties at random.

use rand::Rng;

use crate::cache::Cache;
use crate::framework::{Diagnosis, NodeInfo, PodInfo, Profile, Snapshot, failure_message, num_feasible_nodes_to_find};
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

/// Chooses a node for `pod`: PreFilter over the whole cache, Filter node by node,
/// then PreScore and Score the feasible ones. `next_start` is the rotating index
/// of the first node to filter; it advances past the nodes examined.
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
    let nodes: Vec<&NodeInfo> = cache.nodes().collect();
    let total = nodes.len();
    let mut diagnosis = Diagnosis::default();
    if total == 0 {
        return Err(FitError {
            num_all_nodes: 0,
            diagnosis,
        });
    }
    let snapshot = Snapshot::new(&nodes, cache.namespaces(), cache.index());
    let state = match profile.run_pre_filters(pod, &snapshot) {
        Ok(state) => state,
        Err(status) => {
            diagnosis.pre_filter_msg = Some(status.reasons.join(", "));
            for n in &nodes {
                diagnosis.node_to_status.insert(n.name().to_string(), status.clone());
            }
            return Err(FitError {
                num_all_nodes: total,
                diagnosis,
            });
        }
    };
    if let Some(node) = nominated.and_then(|n| cache.node(n))
        && run_filters_with_nominated(profile, &state, nominator, pod, node).is_success()
    {
        return Ok(node.name().to_string());
    }
    let want = num_feasible_nodes_to_find(total, profile.percentage_of_nodes_to_score);
    let start = *next_start % total;
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut examined = 0;
    for i in 0..total {
        let node = nodes[(start + i) % total];
        examined += 1;
        let status = run_filters_with_nominated(profile, &state, nominator, pod, node);
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
            let scores = profile.run_scores(pod, &feasible, &snapshot);
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
        let a = Arc::new(crate::plugins::testing::raw_pod("a", spec.clone()));
        let b = crate::framework::PodInfo::new(Arc::new(crate::plugins::testing::raw_pod("b", spec)));
        let mut start = 0;
        let chosen = schedule_pod(&profile, &cache, &PodInfo::new(a.clone()), &mut start, &mut rng).unwrap();
        cache.assume(&a, &chosen);
        let err = schedule_pod(&profile, &cache, &b, &mut start, &mut rng).unwrap_err();
        assert_eq!(err.to_string(), "0/1 nodes are available: 1 Insufficient cpu.");
    }

    fn schedule(
        profile: &Profile,
        cache: &mut Cache,
        pod: &Arc<k8s_openapi::api::core::v1::Pod>,
    ) -> Result<String, String> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let node =
            schedule_pod(profile, cache, &PodInfo::new(pod.clone()), &mut 0, &mut rng).map_err(|e| e.to_string())?;
        cache.assume(pod, &node);
        Ok(node)
    }

    fn cluster(nodes: &[(&str, &str)]) -> Cache {
        let mut cache = Cache::new();
        for (name, zone) in nodes {
            let info = crate::plugins::testing::topo_node(name, json!({"topology.kubernetes.io/zone": zone}));
            cache.set_node(info.node.unwrap());
        }
        cache
    }

    /// The "Assigning Pods to Nodes" example: redis-cache replicas repel each
    /// other; web-store replicas repel each other and need a cache on their node.
    #[test]
    fn web_store_replicas_land_one_per_node_next_to_a_cache() {
        let profile = Profile::new(&registry(), &default_plugins()).unwrap();
        let mut cache = cluster(&[("n1", "a"), ("n2", "a"), ("n3", "b"), ("n4", "b")]);
        let term = |app: &str| {
            json!([{"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [app]}]},
                    "topologyKey": "kubernetes.io/hostname"}])
        };
        let redis = |i: usize| {
            crate::plugins::testing::meta_pod(
                &format!("redis-{i}"),
                json!({"labels": {"app": "store"}}),
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("store")}}}),
            )
        };
        let web = |i: usize| {
            crate::plugins::testing::meta_pod(
                &format!("web-{i}"),
                json!({"labels": {"app": "web-store"}}),
                json!({"affinity": {
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web-store")},
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("store")}}}),
            )
        };
        let mut redis_nodes: Vec<String> = (0..3)
            .map(|i| schedule(&profile, &mut cache, &redis(i)).unwrap())
            .collect();
        let mut web_nodes: Vec<String> = (0..3)
            .map(|i| schedule(&profile, &mut cache, &web(i)).unwrap())
            .collect();
        redis_nodes.sort();
        web_nodes.sort();
        redis_nodes.dedup();
        assert_eq!(redis_nodes.len(), 3, "one cache per node");
        assert_eq!(web_nodes, redis_nodes, "each web replica next to a cache, one per node");
        assert_eq!(
            schedule(&profile, &mut cache, &web(3)).unwrap_err(),
            "0/4 nodes are available: 1 node(s) didn't match pod affinity rules, \
             3 node(s) didn't match pod anti-affinity rules."
        );
        let free = schedule(&profile, &mut cache, &redis(3)).unwrap();
        assert!(!redis_nodes.contains(&free));
        assert_eq!(
            schedule(&profile, &mut cache, &redis(4)).unwrap_err(),
            "0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules."
        );
    }

    #[test]
    fn hard_spread_constraints_balance_zones_and_nodes() {
        let profile = Profile::new(&registry(), &default_plugins()).unwrap();
        let mut cache = cluster(&[("n1", "a"), ("n2", "a"), ("n3", "b"), ("n4", "b"), ("n5", "b")]);
        let pod = |i: usize| {
            crate::plugins::testing::meta_pod(
                &format!("p{i}"),
                json!({"labels": {"app": "spread"}}),
                json!({"topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                     "labelSelector": {"matchLabels": {"app": "spread"}}},
                    {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                     "labelSelector": {"matchLabels": {"app": "spread"}}}]}),
            )
        };
        let mut per_node = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..6 {
            *per_node
                .entry(schedule(&profile, &mut cache, &pod(i)).unwrap())
                .or_default() += 1;
        }
        let zone_a = per_node.get("n1").unwrap_or(&0) + per_node.get("n2").unwrap_or(&0);
        assert_eq!(zone_a, 3, "{per_node:?}");
        // Five nodes, six pods, node skew at most 1: one node has two.
        assert_eq!(per_node.len(), 5, "{per_node:?}");
        assert!(per_node.values().all(|&n| n <= 2));
    }

    struct RejectAll;

    impl crate::framework::PreFilterPlugin for RejectAll {
        fn name(&self) -> &'static str {
            "RejectAll"
        }

        fn pre_filter(
            &self,
            _pod: &PodInfo,
            _snapshot: &crate::framework::Snapshot,
        ) -> crate::framework::PreFilterResult {
            crate::framework::PreFilterResult::Reject(crate::framework::Status::new(
                crate::framework::Code::UnschedulableAndUnresolvable,
                "pod has unbound immediate PersistentVolumeClaims",
            ))
        }
    }

    struct Nothing;

    impl crate::framework::PreScorePlugin for Nothing {
        fn name(&self) -> &'static str {
            "RejectAll"
        }

        fn pre_score(
            &self,
            _pod: &PodInfo,
            _feasible: &[&NodeInfo],
            _snapshot: &crate::framework::Snapshot,
        ) -> Option<Box<dyn crate::framework::ScoreState>> {
            None
        }
    }

    #[test]
    fn a_pre_filter_rejection_fails_every_node_with_its_message() {
        let mut r = registry();
        r.insert("RejectAll", || {
            crate::framework::Plugin::Cycle(Box::new(RejectAll), Box::new(Nothing))
        });
        let mut plugins = default_plugins();
        plugins.push(crate::framework::PluginSpec {
            name: "RejectAll",
            weight: 1,
        });
        let profile = Profile::new(&r, &plugins).unwrap();
        let mut cache = cluster(&[("n1", "a"), ("n2", "b")]);
        let p = crate::plugins::testing::labeled("p", json!({}));
        assert_eq!(
            schedule(&profile, &mut cache, &p).unwrap_err(),
            "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."
        );
    }
}
