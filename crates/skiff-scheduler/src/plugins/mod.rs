//! In-tree plugins with upstream semantics (pkg/scheduler/framework/plugins), one
//! module each, and the default profile (upstream `getDefaultPlugins` order and
//! score weights). [`volume_binding`] reads watch caches, so it is added to the
//! profile by the scheduling loop (after the others, where upstream runs it)
//! rather than built from this registry.

pub mod balanced_allocation;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_ready;
pub mod node_resources_fit;
pub mod node_unschedulable;
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
    r.insert(balanced_allocation::NAME, || {
        Plugin::Score(Box::new(balanced_allocation::BalancedAllocation))
    });
    r
}

/// The default profile: filters in upstream order, scores with upstream default
/// weights (TaintToleration 3, NodeAffinity 2, NodeResourcesFit 1,
/// NodeResourcesBalancedAllocation 1).
pub fn default_plugins() -> Vec<PluginSpec> {
    [
        (node_unschedulable::NAME, 0),
        (node_ready::NAME, 0),
        (node_name::NAME, 0),
        (taint_toleration::NAME, 3),
        (node_affinity::NAME, 2),
        (node_ports::NAME, 0),
        (node_resources_fit::NAME, 1),
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

    use crate::framework::{NodeInfo, PodInfo, PodUsage};

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
        node.add_pod(name, PodUsage::of(&raw_pod(name, spec)));
    }
}
