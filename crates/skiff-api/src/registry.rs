//! The resource registry: which resources the apiserver serves, with their group,
//! version, kind, scope, short names, verbs and subresources.
//!
//! Mirrors what upstream publishes through discovery (`/api/v1`, `/apis/<group>/<version>`);
//! kubectl uses it to map `kubectl get deploy` to a REST path.

/// Verbs every normally stored resource supports.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Verbs of a read-only resource (`metrics.k8s.io`).
pub const READ_ONLY: &[&str] = &["get", "list"];

/// Verbs of a resource that can only be created (e.g. `bindings`).
pub const CREATE_ONLY: &[&str] = &["create"];

/// One served resource (a REST collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` for the legacy core group served under `/api`.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Kind of the objects, e.g. `Pod`.
    pub kind: &'static str,
    /// Plural resource name used in paths, e.g. `pods`.
    pub plural: &'static str,
    /// Singular name, e.g. `pod`.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names, e.g. `["po"]`.
    pub short_names: &'static [&'static str],
    /// Categories, e.g. `["all"]` (used by `kubectl get all`).
    pub categories: &'static [&'static str],
    /// Verbs of the main resource.
    pub verbs: &'static [&'static str],
    /// Subresources (e.g. `status`, `scale`, `binding`, `log`, `finalize`).
    pub subresources: &'static [&'static str],
    /// Whether the resource keeps a `status` that only the `status` subresource writes.
    pub has_status_subresource: bool,
    /// Resource whose storage this one shares (e.g. events.k8s.io `events` use core `events`).
    pub storage_resource: &'static str,
}

impl ResourceInfo {
    /// `apiVersion` string: `v1` for core, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Kind of the list type, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Storage key prefix for all objects of this resource, e.g. `/registry/pods/`.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage_resource)
    }

    /// Storage key prefix for one namespace (or all objects, for `None`).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/", self.storage_resource, ns),
            _ => self.key_prefix(),
        }
    }

    /// Storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/{}", self.storage_resource, ns, name),
            _ => format!("/registry/{}/{}", self.storage_resource, name),
        }
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], verbs: $verbs:expr,
     sub: [$($sub:expr),*], status: $status:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            verbs: $verbs,
            subresources: &[$($sub),*],
            has_status_subresource: $status,
            storage_resource: $plural,
        }
    };
}

/// Every resource the apiserver serves.
pub static RESOURCES: &[ResourceInfo] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", false, short: ["ns"], cat: [],
         verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
         sub: ["status", "finalize"], status: true),
    res!("", "v1", "Node", "nodes", "node", false, short: ["no"], cat: [], verbs: ALL_VERBS,
         sub: ["status"], status: true),
    res!("", "v1", "Pod", "pods", "pod", true, short: ["po"], cat: ["all"], verbs: ALL_VERBS,
         sub: ["status", "binding", "log", "eviction"], status: true),
    res!("", "v1", "Binding", "bindings", "binding", true, short: [], cat: [], verbs: CREATE_ONLY,
         sub: [], status: false),
    res!("", "v1", "Event", "events", "event", true, short: ["ev"], cat: [], verbs: ALL_VERBS,
         sub: [], status: false),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, short: ["cm"], cat: [],
         verbs: ALL_VERBS, sub: [], status: false),
    res!("", "v1", "Secret", "secrets", "secret", true, short: [], cat: [], verbs: ALL_VERBS,
         sub: [], status: false),
    res!("", "v1", "Service", "services", "service", true, short: ["svc"], cat: ["all"],
         verbs: &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
         sub: ["status"], status: true),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, short: ["sa"],
         cat: [], verbs: ALL_VERBS, sub: ["token"], status: false),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, short: ["ep"], cat: [],
         verbs: ALL_VERBS, sub: [], status: false),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, short: ["deploy"],
         cat: ["all"], verbs: ALL_VERBS, sub: ["status", "scale"], status: true),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, short: ["rs"],
         cat: ["all"], verbs: ALL_VERBS, sub: ["status", "scale"], status: true),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, short: [], cat: [],
         verbs: ALL_VERBS, sub: [], status: false),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", true,
         short: ["rc"], cat: ["all"], verbs: ALL_VERBS, sub: ["status", "scale"], status: true),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, short: ["pv"],
         cat: [], verbs: ALL_VERBS, sub: ["status"], status: true),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true,
         short: ["pvc"], cat: [], verbs: ALL_VERBS, sub: ["status"], status: true),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", true, short: [], cat: [],
         verbs: ALL_VERBS, sub: [], status: false),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, short: ["quota"], cat: [],
         verbs: ALL_VERBS, sub: ["status"], status: true),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", true, short: ["limits"], cat: [],
         verbs: ALL_VERBS, sub: [], status: false),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, short: ["sts"], cat: ["all"],
         verbs: ALL_VERBS, sub: ["status", "scale"], status: true),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, short: ["ds"], cat: ["all"],
         verbs: ALL_VERBS, sub: ["status"], status: true),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, short: [],
         cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("batch", "v1", "Job", "jobs", "job", true, short: [], cat: ["all"], verbs: ALL_VERBS,
         sub: ["status"], status: true),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, short: ["cj"], cat: ["all"],
         verbs: ALL_VERBS, sub: ["status"], status: true),
    res!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
         "horizontalpodautoscaler", true, short: ["hpa"], cat: ["all"], verbs: ALL_VERBS, sub: ["status"],
         status: true),
    res!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
         "horizontalpodautoscaler", true, short: ["hpa"], cat: ["all"], verbs: ALL_VERBS, sub: ["status"],
         status: true),
    // Served by the apiserver from the kubelets' Summary API, never stored (upstream:
    // metrics-server behind the aggregation layer).
    res!("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", "", false, short: [], cat: [],
         verbs: READ_ONLY, sub: [], status: false),
    res!("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", "", true, short: [], cat: [],
         verbs: READ_ONLY, sub: [], status: false),
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true,
         short: ["pdb"], cat: [], verbs: ALL_VERBS, sub: ["status"], status: true),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, short: ["ing"], cat: [],
         verbs: ALL_VERBS, sub: ["status"], status: true),
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, short: [],
         cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true,
         short: ["netpol"], cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, short: [],
         cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, short: [], cat: [],
         verbs: ALL_VERBS, sub: [], status: false),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, short: [],
         cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, short: [],
         cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
         "clusterrolebinding", false, short: [], cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", "tokenreview", false, short: [],
         cat: [], verbs: CREATE_ONLY, sub: [], status: false),
    res!("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview",
         false, short: [], cat: [], verbs: CREATE_ONLY, sub: [], status: false),
    res!("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
         "selfsubjectaccessreview", false, short: [], cat: [], verbs: CREATE_ONLY, sub: [], status: false),
    res!("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews",
         "subjectaccessreview", false, short: [], cat: [], verbs: CREATE_ONLY, sub: [], status: false),
    res!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests",
         "certificatesigningrequest", false, short: ["csr"], cat: [], verbs: ALL_VERBS,
         sub: ["status", "approval"], status: true),
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, short: ["sc"],
         cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false,
         short: ["pc"], cat: [], verbs: ALL_VERBS, sub: [], status: false),
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", false, short: [], cat: [],
         verbs: ALL_VERBS, sub: [], status: false),
    res!("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
         "customresourcedefinition", false, short: ["crd", "crds"], cat: ["api-extensions"],
         verbs: ALL_VERBS, sub: ["status"], status: true),
];

/// Resources served for CustomResourceDefinitions, registered at run time by the
/// apiserver's CRD handling ([`set_custom_resources`]). Entries are leaked so they
/// can be handed out as `&'static` like the built-in ones; a CRD update leaks its
/// previous entries (a few hundred bytes per update).
static CUSTOM: std::sync::RwLock<Vec<&'static ResourceInfo>> = std::sync::RwLock::new(Vec::new());

fn custom() -> Vec<&'static ResourceInfo> {
    CUSTOM.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The first custom resource matching `pred` (no copy of the list: lookups run on
/// every request).
fn find_custom(pred: impl Fn(&ResourceInfo) -> bool) -> Option<&'static ResourceInfo> {
    CUSTOM
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .find(|r| pred(r))
}

/// Leaks `s` as a `&'static str` (for run-time registered resources).
pub fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Leaks a list of strings as a `&'static` slice.
pub fn leak_list(items: &[String]) -> &'static [&'static str] {
    let v: Vec<&'static str> = items.iter().map(|s| leak(s)).collect();
    Box::leak(v.into_boxed_slice())
}

/// Replaces the custom resources served for the CRD `<plural>.<group>` with
/// `versions` (one entry per served version; empty to stop serving it).
pub fn set_custom_resources(group: &str, plural: &str, versions: Vec<ResourceInfo>) {
    let mut list = CUSTOM.write().unwrap_or_else(|e| e.into_inner());
    list.retain(|r| !(r.group == group && r.plural == plural));
    for v in versions {
        list.push(Box::leak(Box::new(v)));
    }
}

/// Whether `res` was registered for a CustomResourceDefinition.
pub fn is_custom(res: &ResourceInfo) -> bool {
    find_custom(|r| std::ptr::eq(r, res)).is_some()
}

/// Every served resource: the built-in ones, then custom resources.
pub fn all() -> Vec<&'static ResourceInfo> {
    RESOURCES.iter().chain(custom()).collect()
}

/// The versions served for `group`, preferred (first listed) first.
pub fn versions_of(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in all() {
        if r.group == group && !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out
}

/// The API groups served, in discovery order, with their preferred version (the
/// first one listed).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in all() {
        if !r.group.is_empty() && !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Finds a resource by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    let matches = |r: &ResourceInfo| r.group == group && r.version == version && r.plural == plural;
    RESOURCES.iter().find(|r| matches(r)).or_else(|| find_custom(matches))
}

/// Finds a resource by group and kind (any version).
pub fn lookup_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let matches = |r: &ResourceInfo| r.group == group && r.kind == kind;
    RESOURCES.iter().find(|r| matches(r)).or_else(|| find_custom(matches))
}

/// Resources of one group/version, for discovery.
pub fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let group = group.to_string();
    let version = version.to_string();
    all()
        .into_iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_upstream_layout() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "web"), "/registry/pods/default/web");
        let nodes = lookup("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(None, "n1"), "/registry/nodes/n1");
        assert_eq!(lookup("apps", "v1", "deployments").unwrap().api_version(), "apps/v1");
        assert!(lookup("apps", "v1", "pods").is_none());
    }

    #[test]
    fn groups_are_unique() {
        let g = groups();
        assert!(g.contains(&("apps", "v1")));
        assert_eq!(g.iter().filter(|(n, _)| *n == "apps").count(), 1);
    }
}
