//! ResourceQuota evaluation, as upstream's `pkg/quota/v1` and its evaluators in
//! `pkg/quota/v1/evaluator/core` define it: what an object costs (its *usage*, a
//! [`ResourceList`]), which quota resource names an object kind is charged for,
//! which quotas (by scope) an object falls under, and whether a charge fits in a
//! quota's `status.hard` given its `status.used`.
//!
//! Pure functions over JSON objects; the apiserver's admission step and the
//! ResourceQuota controller both use them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

pub use crate::resource_list::{
    Format, Quantity, ResourceList, add, is_zero, mask, parse_list, pretty_print, subtract_non_negative, to_json,
};
use crate::resource_list::{add_into, max_into};

fn containers<'a>(pod: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    pod.pointer(&format!("/spec/{key}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The effective requests (`which` = `"requests"`) or limits (`"limits"`) of a pod,
/// as upstream's `resourcehelper.PodRequests`/`PodLimits` compute them: the sum over
/// containers and restartable (sidecar) init containers, at least the largest
/// single regular init container (plus the sidecars started before it), plus
/// `spec.overhead` (for limits, only for resources that have a limit).
pub fn pod_resources(pod: &Value, which: &str) -> ResourceList {
    let mut total = pod_container_resources(pod, which);
    let overhead = parse_list(pod.pointer("/spec/overhead"));
    if which == "requests" {
        add_into(&mut total, &overhead);
    } else {
        for (k, q) in overhead {
            if let Some(v) = total.get_mut(&k) {
                v.add(q);
            }
        }
    }
    total
}

/// [`pod_resources`] without `spec.overhead`: what the containers ask for, as
/// upstream's LimitRanger sums them for `type: Pod` limits.
pub fn pod_container_resources(pod: &Value, which: &str) -> ResourceList {
    let of = |c: &Value| parse_list(c.pointer(&format!("/resources/{which}")));
    let mut total = ResourceList::new();
    for c in containers(pod, "containers") {
        add_into(&mut total, &of(c));
    }
    let mut sidecars = ResourceList::new();
    let mut init_max = ResourceList::new();
    for c in containers(pod, "initContainers") {
        let own = of(c);
        let step = if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            sidecars.clone()
        } else {
            add(&own, &sidecars)
        };
        max_into(&mut init_max, &step);
    }
    max_into(&mut total, &init_max);
    total
}

/// Resource-name prefix of requests (`requests.cpu`).
pub const REQUESTS_PREFIX: &str = "requests.";
/// Resource-name prefix of limits (`limits.cpu`).
pub const LIMITS_PREFIX: &str = "limits.";
/// The infix of per-StorageClass PVC resources
/// (`gold.storageclass.storage.k8s.io/requests.storage`).
pub const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Whether `name` is an extended resource (upstream `IsExtendedResourceName`): a
/// domain-qualified name outside `kubernetes.io/`, not itself `requests.`-prefixed.
pub fn is_extended_resource(name: &str) -> bool {
    name.contains('/') && !name.starts_with("kubernetes.io/") && !name.starts_with(REQUESTS_PREFIX)
}

/// Usage of one container's (or a pod's) requests and limits (upstream
/// `podComputeUsageHelper`): `pods=1`, `cpu`/`requests.cpu`, `limits.cpu`, the
/// same for memory and ephemeral-storage, hugepages and `requests.<extended>`.
pub fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::from([("pods".to_string(), Quantity::count(1))]);
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.to_string(), *q);
            out.insert(format!("{REQUESTS_PREFIX}{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("{LIMITS_PREFIX}{r}"), *q);
        }
    }
    for (k, q) in requests {
        if k.starts_with("hugepages-") {
            out.insert(k.clone(), *q);
            out.insert(format!("{REQUESTS_PREFIX}{k}"), *q);
        }
        if is_extended_resource(k) {
            out.insert(format!("{REQUESTS_PREFIX}{k}"), *q);
        }
    }
    out
}

/// Whether a pod is charged for compute resources (upstream `QuotaV1Pod`): not
/// when it is Succeeded or Failed, nor when it is being deleted and its grace
/// period ran out (`now` is compared with `deletionTimestamp + grace`).
pub fn pod_counts(pod: &Value, now: jiff::Timestamp) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    let deletion = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let grace = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    if let (Some(t), Some(g)) = (deletion, grace)
        && let Ok(end) = t.checked_add(jiff::SignedDuration::from_secs(g))
        && now > end
    {
        return false;
    }
    true
}

/// The quota resource name counting objects of `plural` in `group`: `count/pods`,
/// `count/deployments.apps`.
pub fn object_count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Core resources whose plain plural is also a quota resource name counting them
/// (upstream's legacy object-count aliases and the pod/service/PVC evaluators).
const LEGACY_COUNTS: &[&str] = &[
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
    "pods",
    "services",
    "persistentvolumeclaims",
];

/// The usage calculator for one kind of object (upstream `quota.Evaluator`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluator {
    /// Pods: counts and compute resources.
    Pod,
    /// Services: counts, node ports, load balancers.
    Service,
    /// PersistentVolumeClaims: counts and storage, also per StorageClass.
    PersistentVolumeClaim,
    /// Any other resource: `count/<plural>[.<group>]` (and the legacy alias).
    ObjectCount {
        /// API group (`""` for core).
        group: String,
        /// Resource plural.
        plural: String,
    },
}

impl Evaluator {
    /// The evaluator for objects of `plural` in `group`.
    pub fn for_resource(group: &str, plural: &str) -> Self {
        match (group, plural) {
            ("", "pods") => Self::Pod,
            ("", "services") => Self::Service,
            ("", "persistentvolumeclaims") => Self::PersistentVolumeClaim,
            _ => Self::ObjectCount {
                group: group.to_string(),
                plural: plural.to_string(),
            },
        }
    }

    /// Whether an update can change usage (upstream `Handles`): Services (type and
    /// ports) and PVCs (resizing); pods' resources and object counts change only
    /// on create.
    pub fn handles_update(&self) -> bool {
        matches!(self, Self::Service | Self::PersistentVolumeClaim)
    }

    /// The names among `names` this evaluator charges (upstream `MatchingResources`).
    pub fn matching_resources<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        names.into_iter().filter(|n| self.matches_name(n)).cloned().collect()
    }

    fn matches_name(&self, n: &str) -> bool {
        match self {
            Self::Pod => {
                matches!(
                    n,
                    "pods"
                        | "count/pods"
                        | "cpu"
                        | "memory"
                        | "ephemeral-storage"
                        | "requests.cpu"
                        | "requests.memory"
                        | "requests.ephemeral-storage"
                        | "limits.cpu"
                        | "limits.memory"
                        | "limits.ephemeral-storage"
                ) || n.starts_with("hugepages-")
                    || n.starts_with("requests.hugepages-")
                    || n.strip_prefix(REQUESTS_PREFIX).is_some_and(is_extended_resource)
            }
            Self::Service => matches!(
                n,
                "services" | "count/services" | "services.nodeports" | "services.loadbalancers"
            ),
            Self::PersistentVolumeClaim => {
                matches!(
                    n,
                    "persistentvolumeclaims" | "count/persistentvolumeclaims" | "requests.storage"
                ) || n
                    .split_once(STORAGE_CLASS_SUFFIX)
                    .is_some_and(|(_, r)| r == "requests.storage" || r == "persistentvolumeclaims")
            }
            Self::ObjectCount { group, plural } => {
                n == object_count_name(group, plural)
                    || (group.is_empty() && LEGACY_COUNTS.contains(&plural.as_str()) && n == plural)
            }
        }
    }

    /// What `obj` costs; `now` decides whether a deleting pod still counts.
    pub fn usage(&self, obj: &Value, now: jiff::Timestamp) -> ResourceList {
        match self {
            Self::Pod => {
                let mut out = ResourceList::from([("count/pods".to_string(), Quantity::count(1))]);
                if pod_counts(obj, now) {
                    let u = compute_usage(&pod_resources(obj, "requests"), &pod_resources(obj, "limits"));
                    out.extend(u);
                }
                out
            }
            Self::Service => service_usage(obj),
            Self::PersistentVolumeClaim => pvc_usage(obj),
            Self::ObjectCount { group, plural } => {
                let mut out = ResourceList::from([(object_count_name(group, plural), Quantity::count(1))]);
                if group.is_empty() && LEGACY_COUNTS.contains(&plural.as_str()) {
                    out.insert(plural.clone(), Quantity::count(1));
                }
                out
            }
        }
    }

    /// Whether `obj` falls under every scope of the quota (upstream `Matches`'s
    /// scope part): only pods have scopes; other objects match only unscoped quotas.
    ///
    /// Errors: a scope selector upstream would reject, as its message.
    pub fn matches_scopes(&self, quota: &Value, obj: &Value) -> Result<bool, String> {
        let selectors = scope_selectors(quota);
        if selectors.is_empty() {
            return Ok(true);
        }
        if *self != Self::Pod {
            return Ok(false);
        }
        for s in &selectors {
            if !pod_matches_scope(s, obj)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Checks that a pod states what compute quotas need (upstream pod evaluator
    /// `Constraints`): for each of `cpu`, `memory` and their `requests.`/`limits.`
    /// forms in `required`, every container and init container must set it.
    ///
    /// Errors: `must specify limits.cpu for: c1,c2; requests.memory for: c1`.
    pub fn constraints(&self, required: &[String], obj: &Value) -> Result<(), String> {
        if *self != Self::Pod {
            return Ok(());
        }
        const VALIDATED: &[&str] = &[
            "cpu",
            "memory",
            "requests.cpu",
            "requests.memory",
            "limits.cpu",
            "limits.memory",
        ];
        let required: BTreeSet<&str> = required
            .iter()
            .map(String::as_str)
            .filter(|r| VALIDATED.contains(r))
            .collect();
        let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for c in containers(obj, "containers").chain(containers(obj, "initContainers")) {
            let u = compute_usage(
                &parse_list(c.pointer("/resources/requests")),
                &parse_list(c.pointer("/resources/limits")),
            );
            for r in &required {
                if !u.contains_key(*r) {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                    missing.entry(r).or_default().insert(name.to_string());
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = missing
            .iter()
            .map(|(r, names)| format!("{r} for: {}", names.iter().cloned().collect::<Vec<_>>().join(",")))
            .collect();
        Err(format!("must specify {}", parts.join("; ")))
    }
}

fn service_usage(svc: &Value) -> ResourceList {
    let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
    let n_ports = ports.map_or(0, Vec::len) as i128;
    let mut out = ResourceList::from([
        ("count/services".to_string(), Quantity::count(1)),
        ("services".to_string(), Quantity::count(1)),
        ("services.loadbalancers".to_string(), Quantity::ZERO),
        ("services.nodeports".to_string(), Quantity::ZERO),
    ]);
    match svc.pointer("/spec/type").and_then(Value::as_str) {
        Some("NodePort") => {
            out.insert("services.nodeports".into(), Quantity::count(n_ports));
        }
        Some("LoadBalancer") => {
            let allocate = svc
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let node_ports = if allocate {
                n_ports
            } else {
                ports
                    .into_iter()
                    .flatten()
                    .filter(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0)
                    .count() as i128
            };
            out.insert("services.nodeports".into(), Quantity::count(node_ports));
            out.insert("services.loadbalancers".into(), Quantity::count(1));
        }
        _ => {}
    }
    out
}

/// The StorageClass a claim names: the beta annotation, else `spec.storageClassName`.
pub fn pvc_storage_class(pvc: &Value) -> Option<&str> {
    pvc.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
        .or_else(|| pvc.pointer("/spec/storageClassName").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

fn pvc_usage(pvc: &Value) -> ResourceList {
    let class = pvc_storage_class(pvc);
    let mut out = ResourceList::from([
        ("persistentvolumeclaims".to_string(), Quantity::count(1)),
        ("count/persistentvolumeclaims".to_string(), Quantity::count(1)),
    ]);
    if let Some(c) = class {
        out.insert(
            format!("{c}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
            Quantity::count(1),
        );
    }
    let requested = parse_list(pvc.pointer("/spec/resources/requests"))
        .get("storage")
        .copied();
    // What a failed expansion still holds counts too (RecoverVolumeExpansionFailure).
    let allocated = parse_list(pvc.pointer("/status/allocatedResources"))
        .get("storage")
        .copied();
    let storage = match (requested, allocated) {
        (Some(r), Some(a)) if a.milli > r.milli => Some(a),
        (Some(r), _) => Some(r),
        (None, a) => a,
    };
    if let Some(mut q) = storage {
        q.milli = q.value() * 1000;
        out.insert("requests.storage".into(), q);
        if let Some(c) = class {
            out.insert(format!("{c}{STORAGE_CLASS_SUFFIX}requests.storage"), q);
        }
    }
    out
}

/// One scope requirement of a quota: `spec.scopes` entries become `Exists`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSelector {
    /// `Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`,
    /// `PriorityClass` or `CrossNamespacePodAffinity`.
    pub scope_name: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In`/`NotIn`.
    pub values: Vec<String>,
}

/// The quota's scopes and scope selector expressions (upstream `getScopeSelectorsFromQuota`).
pub fn scope_selectors(quota: &Value) -> Vec<ScopeSelector> {
    let mut out: Vec<ScopeSelector> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| ScopeSelector {
            scope_name: s.to_string(),
            operator: "Exists".into(),
            values: vec![],
        })
        .collect();
    for e in quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push(ScopeSelector {
            scope_name: e.get("scopeName").and_then(Value::as_str).unwrap_or_default().into(),
            operator: e.get("operator").and_then(Value::as_str).unwrap_or_default().into(),
            values: e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        });
    }
    out
}

/// The pod's QoS class (upstream `GetPodQOS`): `BestEffort`, `Guaranteed` or `Burstable`.
pub fn qos_class(pod: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in containers(pod, "containers").chain(containers(pod, "initContainers")) {
        let req = parse_list(c.pointer("/resources/requests"));
        let lim = parse_list(c.pointer("/resources/limits"));
        let compute = |l: &ResourceList| l.keys().any(|k| k == "cpu" || k == "memory");
        if compute(&req) || compute(&lim) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            match (req.get(r), lim.get(r)) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q.milli != l.milli => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn has_cross_namespace_affinity(pod: &Value) -> bool {
    let Some(aff) = pod.pointer("/spec/affinity").and_then(Value::as_object) else {
        return false;
    };
    let cross = |t: &Value| {
        t.get("namespaceSelector").is_some_and(|s| !s.is_null())
            || t.get("namespaces")
                .and_then(Value::as_array)
                .is_some_and(|n| !n.is_empty())
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|k| {
        let Some(a) = aff.get(*k) else { return false };
        let required = a
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(cross);
        let preferred = a
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"))
            .any(cross);
        required || preferred
    })
}

fn pod_matches_scope(s: &ScopeSelector, pod: &Value) -> Result<bool, String> {
    let terminating = pod
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|d| d >= 0);
    let best_effort = qos_class(pod) == "BestEffort";
    match s.scope_name.as_str() {
        "Terminating" => Ok(terminating),
        "NotTerminating" => Ok(!terminating),
        "BestEffort" => Ok(best_effort),
        "NotBestEffort" => Ok(!best_effort),
        "CrossNamespacePodAffinity" => Ok(has_cross_namespace_affinity(pod)),
        "PriorityClass" => {
            // A label selector over {PriorityClass: <priorityClassName>}.
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            match s.operator.as_str() {
                "In" => Ok(s.values.iter().any(|v| v == class)),
                "NotIn" => Ok(!s.values.iter().any(|v| v == class)),
                "Exists" => Ok(true),
                "DoesNotExist" => Ok(false),
                op => Err(format!("{op:?} is not a valid pod selector operator")),
            }
        }
        _ => Ok(false),
    }
}

/// A quota's state as admission sees it.
#[derive(Debug, Clone, Default)]
pub struct QuotaStatus {
    /// `status.hard`.
    pub hard: ResourceList,
    /// `status.used`.
    pub used: ResourceList,
}

impl QuotaStatus {
    /// Reads `status.hard` and `status.used`.
    pub fn of(quota: &Value) -> Self {
        Self {
            hard: parse_list(quota.pointer("/status/hard")),
            used: parse_list(quota.pointer("/status/used")),
        }
    }

    /// Whether every resource of `restricted` the quota limits has a usage figure
    /// (upstream `hasUsageStats`).
    pub fn has_usage_stats(&self, restricted: &[String]) -> bool {
        self.hard
            .keys()
            .filter(|k| restricted.contains(k))
            .all(|k| self.used.contains_key(k))
    }

    /// Charges `delta` (already the object's usage): returns the new `used`, or the
    /// upstream message `exceeded quota: NAME, requested: ..., used: ..., limited: ...`
    /// naming the resources that would go over `hard`.
    pub fn charge(&self, name: &str, delta: &ResourceList) -> Result<ResourceList, String> {
        let requested = mask(delta, self.hard.keys());
        let new_used = add(&self.used, &requested);
        let exceeded: Vec<String> = requested
            .keys()
            .filter(|k| {
                let (Some(u), Some(h)) = (new_used.get(*k), self.hard.get(*k)) else {
                    return false;
                };
                u.milli > h.milli
            })
            .cloned()
            .collect();
        if exceeded.is_empty() {
            return Ok(new_used);
        }
        Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty_print(&mask(&requested, &exceeded)),
            pretty_print(&mask(&self.used, &exceeded)),
            pretty_print(&mask(&self.hard, &exceeded)),
        ))
    }
}

/// Writes `hard` and `used` into a quota's `status`.
pub fn set_status(quota: &mut Value, hard: &ResourceList, used: &ResourceList) {
    if !quota.get("status").is_some_and(Value::is_object) {
        quota["status"] = Value::Object(Map::new());
    }
    quota["status"]["hard"] = to_json(hard);
    quota["status"]["used"] = to_json(used);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}, "status": {"phase": "Pending"}})
    }

    #[test]
    fn a_pod_is_charged_for_its_requests_and_limits() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi", "example.com/gpu": "1"}}}
        ]));
        let u = Evaluator::Pod.usage(&p, jiff::Timestamp::now());
        let s: BTreeMap<&str, String> = u.iter().map(|(k, v)| (k.as_str(), v.to_string())).collect();
        assert_eq!(s["pods"], "1");
        assert_eq!(s["count/pods"], "1");
        assert_eq!(s["requests.cpu"], "500m");
        assert_eq!(s["cpu"], "500m");
        assert_eq!(s["requests.memory"], "128Mi");
        assert_eq!(s["limits.cpu"], "500m");
        assert_eq!(s["requests.example.com/gpu"], "1");
        assert!(!s.contains_key("limits.memory"));
    }

    #[test]
    fn init_containers_count_at_their_peak_and_sidecars_throughout() {
        let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]));
        p["spec"]["initContainers"] = json!([
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
            {"name": "big", "resources": {"requests": {"cpu": "1"}}}
        ]);
        assert_eq!(pod_resources(&p, "requests")["cpu"].to_string(), "1050m");
    }

    #[test]
    fn finished_pods_only_count_as_objects() {
        let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        p["status"]["phase"] = json!("Succeeded");
        let u = Evaluator::Pod.usage(&p, jiff::Timestamp::now());
        assert_eq!(u.keys().collect::<Vec<_>>(), ["count/pods"]);
    }

    #[test]
    fn exceeding_a_quota_names_the_resources_over_it() {
        let status = QuotaStatus {
            hard: parse_list(Some(&json!({"pods": "2", "requests.cpu": "1"}))),
            used: parse_list(Some(&json!({"pods": "2", "requests.cpu": "500m"}))),
        };
        let p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]));
        let delta = Evaluator::Pod.usage(&p, jiff::Timestamp::now());
        assert_eq!(
            status.charge("q", &delta).unwrap_err(),
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let roomy = QuotaStatus {
            used: parse_list(Some(&json!({"pods": "1", "requests.cpu": "500m"}))),
            ..status
        };
        let used = roomy.charge("q", &delta).unwrap();
        assert_eq!(to_json(&used), json!({"pods": "2", "requests.cpu": "600m"}));
    }

    #[test]
    fn compute_quotas_require_every_container_to_state_the_resource() {
        let p = pod(json!([
            {"name": "c1", "resources": {"requests": {"cpu": "1"}}},
            {"name": "c2", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}
        ]));
        let required = vec!["limits.cpu".to_string(), "requests.cpu".to_string(), "pods".to_string()];
        assert_eq!(
            Evaluator::Pod.constraints(&required, &p).unwrap_err(),
            "must specify limits.cpu for: c1"
        );
        assert!(Evaluator::Pod.constraints(&["requests.cpu".to_string()], &p).is_ok());
    }

    #[test]
    fn services_and_claims_and_other_objects() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let u = Evaluator::for_resource("", "services").usage(&svc, jiff::Timestamp::now());
        assert_eq!(u["services.nodeports"].to_string(), "2");
        assert_eq!(u["services.loadbalancers"].to_string(), "0");
        let pvc = json!({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1Gi"}}}});
        let u = Evaluator::for_resource("", "persistentvolumeclaims").usage(&pvc, jiff::Timestamp::now());
        assert_eq!(u["requests.storage"].to_string(), "1Gi");
        assert_eq!(
            u["gold.storageclass.storage.k8s.io/requests.storage"].to_string(),
            "1Gi"
        );
        let cm = Evaluator::for_resource("", "configmaps");
        let names = vec![
            "configmaps".to_string(),
            "count/configmaps".to_string(),
            "pods".to_string(),
        ];
        assert_eq!(cm.matching_resources(&names), ["configmaps", "count/configmaps"]);
        let deploy = Evaluator::for_resource("apps", "deployments");
        assert_eq!(
            deploy
                .usage(&json!({}), jiff::Timestamp::now())
                .keys()
                .collect::<Vec<_>>(),
            ["count/deployments.apps"]
        );
    }

    #[test]
    fn scopes_select_pods() {
        let quota = json!({"spec": {"scopes": ["BestEffort"]}});
        let be = pod(json!([{"name": "a"}]));
        let burst = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        assert!(Evaluator::Pod.matches_scopes(&quota, &be).unwrap());
        assert!(!Evaluator::Pod.matches_scopes(&quota, &burst).unwrap());
        assert!(!Evaluator::Service.matches_scopes(&quota, &json!({})).unwrap());
        let prio = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let mut high = be.clone();
        high["spec"]["priorityClassName"] = json!("high");
        assert!(Evaluator::Pod.matches_scopes(&prio, &high).unwrap());
        assert!(!Evaluator::Pod.matches_scopes(&prio, &be).unwrap());
    }
}
