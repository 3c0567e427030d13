//! Resource arithmetic shared by the cache and the resource plugins: a pod's
//! effective requests (upstream `resourcehelper.PodRequests`) and a node's
//! allocatable resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_api::quantity;

/// CPU request assumed for scoring a container that requests none (upstream
/// `DefaultMilliCPURequest`, 0.1 core), in millicores.
pub const DEFAULT_MILLI_CPU_REQUEST: i128 = 100;
/// Memory request assumed for scoring a container that requests none (upstream
/// `DefaultMemoryRequest`, 200 MiB), in bytes.
pub const DEFAULT_MEMORY_REQUEST: i128 = 200 * 1024 * 1024;

/// An amount of resources: cpu in millicores, memory in bytes, pods as a count,
/// anything else (extended resources, `ephemeral-storage`) in whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i128,
    /// Memory in bytes.
    pub memory: i128,
    /// Number of pods.
    pub pods: i128,
    /// Other resources by name, in whole units.
    pub other: BTreeMap<String, i128>,
}

impl Resources {
    /// Adds a `ResourceList` (as in `requests` or `allocatable`). Unparseable
    /// quantities count as zero (validation rejects them at the apiserver).
    pub fn add_list(&mut self, list: Option<&BTreeMap<String, Quantity>>) {
        for (k, q) in list.into_iter().flatten() {
            match k.as_str() {
                "cpu" => self.milli_cpu += quantity::parse_milli(&q.0).unwrap_or(0),
                "memory" => self.memory += quantity::parse_value(&q.0).unwrap_or(0),
                "pods" => self.pods += quantity::parse_value(&q.0).unwrap_or(0),
                other => *self.other.entry(other.to_string()).or_default() += quantity::parse_value(&q.0).unwrap_or(0),
            }
        }
    }

    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.pods += o.pods;
        for (k, v) in &o.other {
            *self.other.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `o` from `self`.
    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.pods -= o.pods;
        for (k, v) in &o.other {
            *self.other.entry(k.clone()).or_default() -= v;
        }
        self.other.retain(|_, v| *v != 0);
    }

    /// Raises every resource of `self` to at least `o`'s amount.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        for (k, v) in &o.other {
            let e = self.other.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let mut r = Resources::default();
    r.add_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    if non_zero {
        if r.milli_cpu == 0 {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if r.memory == 0 {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// A pod's effective requests (upstream `PodRequests`): the sum over app containers
/// and restartable init (sidecar) containers, raised to the largest plain init
/// container (plus the sidecars started before it) if that is bigger, plus the pod
/// overhead; `pods` is always 1.
///
/// With `non_zero`, a container that requests no cpu or memory counts as
/// [`DEFAULT_MILLI_CPU_REQUEST`] / [`DEFAULT_MEMORY_REQUEST`], as upstream does for
/// scoring (`NonZeroRequested`) so empty pods still spread.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let spec = pod.spec.as_ref();
    let mut sum = Resources::default();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        sum.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default() {
        let r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    sum.max_with(&init_max);
    sum.add_list(spec.and_then(|s| s.overhead.as_ref()));
    sum.pods = 1;
    sum
}

/// A node's `status.allocatable`.
pub fn allocatable(node: &Node) -> Resources {
    let mut r = Resources::default();
    r.add_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn init_containers_count_by_the_max_rule_and_sidecars_add_up() {
        let p = pod(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "2"}}},
            ],
            "overhead": {"cpu": "10m"},
        }));
        let r = pod_requests(&p, false);
        // max(500m + 100m sidecar, 2 + 100m sidecar) + 10m overhead.
        assert_eq!(r.milli_cpu, 2110);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn non_zero_requests_default_empty_containers() {
        let p = pod(json!({"containers": [{"name": "a"}, {"name": "b", "resources": {"requests": {"cpu": "1"}}}]}));
        assert_eq!(pod_requests(&p, false).milli_cpu, 1000);
        let nz = pod_requests(&p, true);
        assert_eq!(nz.milli_cpu, 1100);
        assert_eq!(nz.memory, 2 * DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn arithmetic_round_trips() {
        let mut a = Resources::default();
        let b = Resources {
            milli_cpu: 5,
            memory: 7,
            pods: 1,
            other: [("example.com/gpu".to_string(), 2)].into(),
        };
        a.add(&b);
        a.sub(&b);
        assert_eq!(a, Resources::default());
    }
}
