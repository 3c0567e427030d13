//! Filter and score plugins with upstream semantics (pkg/scheduler/framework/plugins):
//! NodeUnschedulable, NodeName, TaintToleration, NodeAffinity (nodeSelector and
//! required node affinity), NodeResourcesFit with LeastAllocated scoring. Pure
//! functions over the API types, so each is unit-testable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, NodeSelectorRequirement, Pod, Taint, Toleration};
use skiff_api::quantity;

/// Why a node was filtered out; rendered like upstream in `FailedScheduling` messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// `node(s) were unschedulable`.
    Unschedulable,
    /// `node(s) didn't match the requested node name`.
    NodeName,
    /// `node(s) had untolerated taint {key: value}`.
    Taint(String),
    /// `node(s) didn't match Pod's node affinity/selector`.
    Affinity,
    /// `Insufficient <resource>`.
    Insufficient(String),
    /// `node(s) were not ready`.
    NotReady,
}

impl Reason {
    /// The upstream phrase (without the count).
    pub fn phrase(&self) -> String {
        match self {
            Reason::Unschedulable => "node(s) were unschedulable".into(),
            Reason::NodeName => "node(s) didn't match the requested node name".into(),
            Reason::Taint(t) => format!("node(s) had untolerated taint {{{t}}}"),
            Reason::Affinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Reason::Insufficient(r) => format!("Insufficient {r}"),
            Reason::NotReady => "node(s) were not ready".into(),
        }
    }
}

/// Resource requests in milli-units (cpu in millicores, memory in milli-bytes is avoided:
/// memory and other resources are whole units).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i128,
    /// Memory in bytes.
    pub memory: i128,
    /// Number of pods (1 per pod).
    pub pods: i128,
    /// Other resources (extended, ephemeral-storage) in whole units.
    pub other: BTreeMap<String, i128>,
}

impl Resources {
    fn add_map(&mut self, map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) {
        for (k, q) in map.into_iter().flatten() {
            match k.as_str() {
                "cpu" => self.milli_cpu += quantity::parse_milli(&q.0).unwrap_or(0),
                "memory" => self.memory += quantity::parse_value(&q.0).unwrap_or(0),
                "pods" => self.pods += quantity::parse_value(&q.0).unwrap_or(0),
                other => *self.other.entry(other.to_string()).or_default() += quantity::parse_value(&q.0).unwrap_or(0),
            }
        }
    }

    fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        for (k, v) in &o.other {
            let e = self.other.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.pods += o.pods;
        for (k, v) in &o.other {
            *self.other.entry(k.clone()).or_default() += v;
        }
    }
}

fn container_requests(c: &Container) -> Resources {
    let mut r = Resources::default();
    r.add_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    r
}

/// A pod's effective requests (upstream `computePodResourceRequest`): the sum over app
/// containers and restartable init (sidecar) containers, or the largest plain init
/// container if bigger, plus pod overhead; always one `pods` slot.
pub fn pod_requests(pod: &Pod) -> Resources {
    let spec = pod.spec.as_ref();
    let mut sum = Resources::default();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        sum.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            let mut with_sidecars = r.clone();
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    sum.max_with(&init_max);
    sum.add_map(spec.and_then(|s| s.overhead.as_ref()));
    sum.pods = 1;
    sum
}

/// A node's allocatable resources.
pub fn allocatable(node: &Node) -> Resources {
    let mut r = Resources::default();
    r.add_map(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
    r
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// The first NoSchedule/NoExecute taint the pod does not tolerate, as `key: value`.
pub fn untolerated_taint(pod: &Pod, node: &Node) -> Option<String> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
        .map(|t| match &t.value {
            Some(v) if !v.is_empty() => format!("{}: {v}", t.key),
            _ => t.key.clone(),
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let v = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(w)) = (
                v.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" { v > w } else { v < w }
        }
        _ => false,
    }
}

/// NodeAffinity: `spec.nodeSelector` and required node affinity terms (ORed).
pub fn matches_affinity(pod: &Pod, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let spec = pod.spec.as_ref();
    if let Some(sel) = spec.and_then(|s| s.node_selector.as_ref())
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|term| {
            let exprs = term.match_expressions.as_deref().unwrap_or_default();
            let fields = term.match_fields.as_deref().unwrap_or_default();
            (!exprs.is_empty() || !fields.is_empty())
                && exprs.iter().all(|r| requirement_matches(r, labels))
                && fields.iter().all(|f| {
                    let mut m = BTreeMap::new();
                    m.insert(
                        "metadata.name".to_string(),
                        node.metadata.name.clone().unwrap_or_default(),
                    );
                    requirement_matches(f, &m)
                })
        }),
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Runs every filter; `used` is the sum of requests of pods already on the node.
/// Returns all reasons the node does not fit (empty = feasible).
pub fn filter(pod: &Pod, node: &Node, used: &Resources) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let spec = pod.spec.as_ref();
    if let Some(name) = spec.and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
        && node.metadata.name.as_deref() != Some(name)
    {
        reasons.push(Reason::NodeName);
    }
    if !node_ready(node) {
        reasons.push(Reason::NotReady);
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        let tolerated = spec
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|t| {
                t.key.as_deref() == Some("node.kubernetes.io/unschedulable") && t.operator.as_deref() == Some("Exists")
            });
        if !tolerated {
            reasons.push(Reason::Unschedulable);
        }
    }
    if let Some(t) = untolerated_taint(pod, node) {
        reasons.push(Reason::Taint(t));
    }
    if !matches_affinity(pod, node) {
        reasons.push(Reason::Affinity);
    }
    let want = pod_requests(pod);
    let have = allocatable(node);
    if used.pods + 1 > have.pods && have.pods > 0 {
        reasons.push(Reason::Insufficient("pods".into()));
    }
    if want.milli_cpu > 0 && used.milli_cpu + want.milli_cpu > have.milli_cpu {
        reasons.push(Reason::Insufficient("cpu".into()));
    }
    if want.memory > 0 && used.memory + want.memory > have.memory {
        reasons.push(Reason::Insufficient("memory".into()));
    }
    for (k, v) in &want.other {
        if *v > 0 && used.other.get(k).copied().unwrap_or(0) + v > have.other.get(k).copied().unwrap_or(0) {
            reasons.push(Reason::Insufficient(k.clone()));
        }
    }
    reasons
}

/// LeastAllocated score in 0..=100: the mean free fraction of cpu and memory after
/// placing the pod (upstream weights cpu and memory equally). Pods without requests
/// count as 100m cpu / 200Mi memory, as upstream's non-zero defaults do.
pub fn least_allocated(pod: &Pod, node: &Node, used: &Resources) -> i64 {
    let mut want = pod_requests(pod);
    if want.milli_cpu == 0 {
        want.milli_cpu = 100;
    }
    if want.memory == 0 {
        want.memory = 200 * 1024 * 1024;
    }
    let have = allocatable(node);
    let score = |req: i128, cap: i128| -> i128 {
        if cap <= 0 || req > cap {
            0
        } else {
            (cap - req) * 100 / cap
        }
    };
    ((score(used.milli_cpu + want.milli_cpu, have.milli_cpu) + score(used.memory + want.memory, have.memory)) / 2)
        as i64
}

/// Renders the `FailedScheduling` message: `0/N nodes are available: 1 Insufficient cpu, 2 node(s) ...`.
pub fn failure_message(total_nodes: usize, reasons: &[Vec<Reason>]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons.iter().flatten() {
        *counts.entry(r.phrase()).or_default() += 1;
    }
    if total_nodes == 0 {
        return "0/0 nodes are available: no nodes available to schedule pods.".into();
    }
    let parts: Vec<String> = counts.into_iter().map(|(p, n)| format!("{n} {p}")).collect();
    format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": {"disk": "ssd"}},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        if let Some(spec) = extra.get("spec") {
            n["spec"] = spec.clone();
        }
        serde_json::from_value(n).unwrap()
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn resource_fit_counts_init_and_sidecars() {
        let p = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}},
                               {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}]}),
        );
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 2000);
        assert_eq!(r.memory, 1 << 30);
        let n = node("n1", "1", "4Gi", json!({}));
        assert_eq!(
            filter(&p, &n, &Resources::default()),
            vec![Reason::Insufficient("cpu".into())]
        );
        let n = node("n1", "4", "4Gi", json!({}));
        assert!(filter(&p, &n, &Resources::default()).is_empty());
    }

    #[test]
    fn taints_and_selectors() {
        let n = node(
            "n1",
            "4",
            "4Gi",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        let p = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(
            filter(&p, &n, &Resources::default()),
            vec![Reason::Taint("dedicated: gpu".into())]
        );
        let p = pod(
            json!({"containers": [{"name": "a"}], "tolerations": [{"key": "dedicated", "operator": "Exists"}], "nodeSelector": {"disk": "hdd"}}),
        );
        assert_eq!(filter(&p, &n, &Resources::default()), vec![Reason::Affinity]);
        let p = pod(
            json!({"containers": [{"name": "a"}], "tolerations": [{"operator": "Exists"}], "nodeSelector": {"disk": "ssd"}}),
        );
        assert!(filter(&p, &n, &Resources::default()).is_empty());
    }

    #[test]
    fn scoring_prefers_emptier_nodes_and_messages_count_reasons() {
        let p = pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
        let n = node("n1", "4", "8Gi", json!({}));
        let busy = Resources {
            milli_cpu: 2000,
            memory: 4 << 30,
            pods: 3,
            other: Default::default(),
        };
        assert!(least_allocated(&p, &n, &Resources::default()) > least_allocated(&p, &n, &busy));
        let msg = failure_message(
            3,
            &[
                vec![Reason::Insufficient("cpu".into())],
                vec![Reason::Insufficient("cpu".into())],
                vec![Reason::Taint("a: b".into())],
            ],
        );
        assert_eq!(
            msg,
            "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {a: b}."
        );
    }
}
