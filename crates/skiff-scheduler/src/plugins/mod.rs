//! In-tree plugins with upstream semantics (pkg/scheduler/framework/plugins), one
//! module each, and the default profile (upstream `getDefaultPlugins` order and
//! score weights). [`volume_binding`] reads watch caches, so it is added to the
//! profile by the scheduling loop (after the others, where upstream runs it)
//! rather than built from this registry.

pub mod balanced_allocation;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_ready;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;

use crate::framework::{Plugin, PluginSpec, Registry};

/// Every plugin this scheduler knows, by upstream name.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.insert(node_unschedulable::NAME, || {
        Plugin::Filter(Box::new(node_unschedulable::NodeUnschedulable))
    });
    r.insert(node_ready::NAME, || Plugin::Filter(Box::new(node_ready::NodeReady)));
    r.insert(node_name::NAME, || Plugin::Filter(Box::new(node_name::NodeName)));
    r.insert(taint_toleration::NAME, || {
        Plugin::Both(
            Box::new(taint_toleration::TaintToleration),
            Box::new(taint_toleration::TaintToleration),
        )
    });
    r.insert(node_affinity::NAME, || {
        Plugin::Both(
            Box::new(node_affinity::NodeAffinity),
            Box::new(node_affinity::NodeAffinity),
        )
    });
    r.insert(node_ports::NAME, || Plugin::Filter(Box::new(node_ports::NodePorts)));
    r.insert(node_resources_fit::NAME, || {
        Plugin::Both(
            Box::new(node_resources_fit::NodeResourcesFit::default()),
            Box::new(node_resources_fit::NodeResourcesFit::default()),
        )
    });
    r.insert(pod_topology_spread::NAME, || {
        Plugin::Cycle(
            Box::new(pod_topology_spread::PodTopologySpread),
            Box::new(pod_topology_spread::PodTopologySpread),
        )
    });
    r.insert(inter_pod_affinity::NAME, || {
        Plugin::Cycle(
            Box::new(inter_pod_affinity::InterPodAffinity),
            Box::new(inter_pod_affinity::InterPodAffinity),
        )
    });
    r.insert(balanced_allocation::NAME, || {
        Plugin::Score(Box::new(balanced_allocation::BalancedAllocation))
    });
    r
}

/// The default profile: filters in upstream order, scores with upstream default
/// weights (TaintToleration 3, NodeAffinity 2, NodeResourcesFit 1,
/// PodTopologySpread 2, InterPodAffinity 2, NodeResourcesBalancedAllocation 1).
pub fn default_plugins() -> Vec<PluginSpec> {
    [
        (node_unschedulable::NAME, 0),
        (node_ready::NAME, 0),
        (node_name::NAME, 0),
        (taint_toleration::NAME, 3),
        (node_affinity::NAME, 2),
        (node_ports::NAME, 0),
        (node_resources_fit::NAME, 1),
        (pod_topology_spread::NAME, 2),
        (inter_pod_affinity::NAME, 2),
        (balanced_allocation::NAME, 1),
    ]
    .into_iter()
    .map(|(name, weight)| PluginSpec { name, weight })
    .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for plugin tests.
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use crate::affinity_terms::NamespaceLabels;
    use crate::framework::{NodeInfo, PodInfo, PodUsage, PreFilterPlugin, PreFilterResult, PreScorePlugin, Snapshot};
    use crate::pod_index::PodIndex;

    /// A Ready node with `cpu`/`memory` allocatable; `extra` is merged at the top level
    /// (`spec`, `metadata.labels`).
    pub fn node(name: &str, cpu: &str, memory: &str, extra: Value) -> NodeInfo {
        let mut n = json!({"metadata": {"name": name, "labels": {}},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        if let Some(spec) = extra.get("spec") {
            n["spec"] = spec.clone();
        }
        if let Some(labels) = extra.get("labels") {
            n["metadata"]["labels"] = labels.clone();
        }
        if let Some(status) = extra.get("status") {
            n["status"] = status.clone();
        }
        NodeInfo::new(Arc::new(serde_json::from_value::<Node>(n).unwrap()))
    }

    /// A pod with the given spec.
    pub fn pod(spec: Value) -> PodInfo {
        PodInfo::new(Arc::new(raw_pod("p", spec)))
    }

    /// A pod object.
    pub fn raw_pod(name: &str, spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "uid": name}, "spec": spec})).unwrap()
    }

    /// Places a pod with `spec` on `node`.
    pub fn place(node: &mut NodeInfo, name: &str, spec: Value) {
        node.add_pod(name, PodUsage::of(&Arc::new(raw_pod(name, spec))));
    }

    /// A pod with `metadata` (merged over name/uid `name`, namespace `default`)
    /// and `spec` (a container is added when it has none).
    pub fn meta_pod(name: &str, metadata: Value, mut spec: Value) -> Arc<Pod> {
        let mut meta = json!({"name": name, "uid": name, "namespace": "default"});
        for (k, v) in metadata.as_object().into_iter().flatten() {
            meta[k] = v.clone();
        }
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c"}]);
        }
        Arc::new(serde_json::from_value(json!({"metadata": meta, "spec": spec})).unwrap())
    }

    /// A pod in `default` with `labels` and no constraints.
    pub fn labeled(name: &str, labels: Value) -> Arc<Pod> {
        meta_pod(name, json!({"labels": labels}), json!({}))
    }

    /// A Ready node with labels `kubernetes.io/hostname=<name>` plus `labels`.
    pub fn topo_node(name: &str, labels: Value) -> NodeInfo {
        let mut l = json!({"kubernetes.io/hostname": name});
        for (k, v) in labels.as_object().into_iter().flatten() {
            l[k] = v.clone();
        }
        node(name, "4", "8Gi", json!({"labels": l}))
    }

    /// Places `pod` on `node`.
    pub fn put(node: &mut NodeInfo, pod: &Arc<Pod>) {
        node.add_pod(pod.metadata.uid.as_deref().unwrap(), PodUsage::of(pod));
    }

    /// Runs a PreFilter plugin over `nodes`, then its Filter on each node: `None`
    /// when PreFilter skipped, else per node `""` (fits) or the first reason.
    pub fn filter_all(
        plugin: &dyn PreFilterPlugin,
        pod: &Arc<Pod>,
        nodes: &[NodeInfo],
        namespaces: &NamespaceLabels,
    ) -> Option<Vec<String>> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let pod = PodInfo::new(pod.clone());
        let index = PodIndex::of_nodes(&refs);
        match plugin.pre_filter(&pod, &Snapshot::new(&refs, namespaces, &index)) {
            PreFilterResult::Skip => None,
            PreFilterResult::Reject(s) => Some(vec![s.reasons.join(", "); nodes.len()]),
            PreFilterResult::State(state) => Some(
                nodes
                    .iter()
                    .map(|n| state.filter(&pod, n).reasons.first().cloned().unwrap_or_default())
                    .collect(),
            ),
        }
    }

    /// Runs a PreScore plugin with all `nodes` feasible: `None` when it skipped,
    /// else the normalized scores.
    pub fn score_all(
        plugin: &dyn PreScorePlugin,
        pod: &Arc<Pod>,
        nodes: &[NodeInfo],
        namespaces: &NamespaceLabels,
    ) -> Option<Vec<i64>> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let pod = PodInfo::new(pod.clone());
        let index = PodIndex::of_nodes(&refs);
        let state = plugin.pre_score(&pod, &refs, &Snapshot::new(&refs, namespaces, &index))?;
        let mut scores: Vec<i64> = refs.iter().map(|n| state.score(&pod, n)).collect();
        state.normalize(&refs, &mut scores);
        Some(scores)
    }
}
