//! The default RBAC objects every cluster starts with, modelled on upstream's
//! plugin/pkg/auth/authorizer/rbac/bootstrappolicy and its documentation
//! (<https://kubernetes.io/docs/reference/access-authn-authz/rbac/#default-roles-and-role-bindings>).
//!
//! Each object carries the label `kubernetes.io/bootstrapping: rbac-defaults` and the
//! annotation `rbac.authorization.kubernetes.io/autoupdate: "true"`. At every start
//! [`ensure`] creates the missing ones and, like upstream's reconciliation, brings
//! existing ones whose autoupdate annotation is still `"true"` back to these
//! contents; setting the annotation to `"false"` keeps an administrator's edits.
//!
//! Differences from upstream, all deliberate:
//! - Skiff runs every controller under the one identity
//!   `system:kube-controller-manager`, so its ClusterRole is the union of what the
//!   controllers need (upstream splits it into per-controller `system:controller:*`
//!   roles). Like upstream's garbage collector and namespace controller, it may
//!   read, update, patch and delete every resource; it creates only the kinds
//!   controllers create.
//! - `system:node` is bound to the group `system:nodes` (upstream leaves it unbound
//!   and authorizes kubelets with the Node authorizer, which also confines each
//!   kubelet to its own node's objects; Skiff has no Node authorizer).
//! - `system:node` may also read EndpointSlices and Endpoints: on a joined agent the
//!   Service proxy runs with the node's credentials (upstream gives kube-proxy its
//!   own ServiceAccount).
//! - Node joining follows kubeadm: `system:bootstrappers` may create CSRs
//!   (`kubeadm:kubelet-bootstrap`) and have node client certificates auto-approved
//!   (`kubeadm:node-autoapprove-bootstrap`), `system:nodes` may renew theirs
//!   (`kubeadm:node-autoapprove-certificate-rotation`), and `system:anonymous` may
//!   read `kube-public/cluster-info` (`kubeadm:bootstrap-signer-clusterinfo`).
//! - `system:skiff-dns` (cluster DNS, read Services and endpoints everywhere, manage
//!   its own Service, Endpoints and EndpointSlice in `kube-system`) is Skiff's own.

use serde_json::{Value, json};
use skiff_api::registry;

use crate::objects::{FieldValidation, Objects, WriteOptions};
use crate::status::ApiError;

/// The annotation that lets [`ensure`] reconcile an object.
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The label marking the default objects.
pub const BOOTSTRAPPING_LABEL: &str = "kubernetes.io/bootstrapping";

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
];
const EVENT_WRITE: &[&str] = &["create", "patch", "update"];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn named_rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn metadata(name: &str, namespace: Option<&str>, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert(BOOTSTRAPPING_LABEL.into(), json!("rbac-defaults"));
    for (k, v) in extra_labels {
        labels.insert((*k).into(), json!(v));
    }
    let mut m = json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE_ANNOTATION: "true"}});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": metadata(name, None, labels), "rules": rules})
}

fn aggregated_cluster_role(name: &str, labels: &[(&str, &str)], aggregate_label: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": metadata(name, None, labels), "rules": [],
           "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {aggregate_label: "true"}}]}})
}

fn user(name: &str) -> Value {
    json!({"apiGroup": RBAC_GROUP, "kind": "User", "name": name})
}

fn group(name: &str) -> Value {
    json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": name})
}

fn cluster_role_binding(name: &str, role: &str, subjects: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": metadata(name, None, &[]),
           "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The namespace of the cluster DNS objects.
const DNS_NAMESPACE: &str = "kube-system";

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![url_rule(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![url_rule(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        // User-facing roles, filled by aggregation: admin ⊇ edit ⊇ view.
        aggregated_cluster_role("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated_cluster_role("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        aggregated_cluster_role("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        cluster_role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
                rule(READ_WRITE, &[RBAC_GROUP], &["roles", "rolebindings"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            vec![
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["pods/eviction", "serviceaccounts/token"]),
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(WRITE, &["networking.k8s.io"], &["ingresses", "networkpolicies"]),
                rule(WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        // What metrics-server's manifests add: reading resource metrics is part of
        // view, edit and admin.
        cluster_role(
            "system:aggregated-metrics-reader",
            &[
                (AGGREGATE_TO_VIEW, "true"),
                (AGGREGATE_TO_EDIT, "true"),
                (AGGREGATE_TO_ADMIN, "true"),
            ],
            vec![rule(READ, &["metrics.k8s.io"], &["pods", "nodes"])],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(AGGREGATE_TO_VIEW, "true")],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods",
                        "pods/log",
                        "pods/status",
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "replicationcontrollers/status",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces",
                        "namespaces/status",
                        "resourcequotas",
                        "resourcequotas/status",
                        "podtemplates",
                    ],
                ),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
                rule(READ, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            vec![
                // Garbage collector and namespace controller: every resource.
                rule(
                    &["get", "list", "watch", "patch", "update", "delete", "deletecollection"],
                    &["*"],
                    &["*"],
                ),
                // What the controllers create.
                rule(
                    &["create"],
                    &[""],
                    &[
                        "pods",
                        "events",
                        "endpoints",
                        "serviceaccounts",
                        "secrets",
                        "configmaps",
                        "pods/eviction",
                        // StatefulSet volumeClaimTemplates.
                        "persistentvolumeclaims",
                        // The local-path provisioner.
                        "persistentvolumes",
                    ],
                ),
                // The default StorageClass, created at start (k3s applies it as an add-on).
                rule(&["create"], &["storage.k8s.io"], &["storageclasses"]),
                rule(&["create"], &["apps"], &["replicasets", "controllerrevisions"]),
                // CronJobs create Jobs.
                rule(&["create"], &["batch"], &["jobs"]),
                rule(&["create"], &["discovery.k8s.io"], &["endpointslices"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(EVENT_WRITE, &["events.k8s.io"], &["events"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                // The CSR approver (upstream `system:controller:certificate-controller`).
                named_rule(
                    &["approve"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                    ],
                ),
            ],
        ),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                rule(EVENT_WRITE, &["", "events.k8s.io"], &["events"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named_rule(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                rule(READ, &[""], &["nodes"]),
                rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                rule(&["create"], &[""], &["bindings", "pods/binding"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(
                    READ,
                    &[""],
                    &[
                        "replicationcontrollers",
                        "services",
                        "namespaces",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                    ],
                ),
                // VolumeBinding's PreBind (upstream `system:volume-scheduler`).
                rule(
                    &["patch", "update"],
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                rule(READ, &["apps"], &["replicasets", "statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    READ,
                    &["storage.k8s.io"],
                    &["storageclasses", "csinodes", "csidrivers", "csistoragecapacities"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
            ],
        ),
        cluster_role(
            "system:node",
            &[],
            vec![
                rule(
                    &["create", "get", "list", "watch", "patch", "update", "delete"],
                    &[""],
                    &["nodes"],
                ),
                // Skiff's kubelet reads its Node through the status subresource.
                rule(&["get", "patch", "update"], &[""], &["nodes/status"]),
                rule(EVENT_WRITE, &["", "events.k8s.io"], &["events"]),
                rule(&["get", "list", "watch", "create", "delete"], &[""], &["pods"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["create"], &[""], &["pods/eviction", "serviceaccounts/token"]),
                rule(READ, &[""], &["services", "configmaps", "secrets", "endpoints"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(&["get"], &[""], &["persistentvolumeclaims", "persistentvolumes"]),
                rule(&["patch", "update"], &[""], &["persistentvolumeclaims/status"]),
                rule(
                    &["get", "list", "watch", "create", "update", "patch", "delete"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
                rule(
                    READ,
                    &["storage.k8s.io"],
                    &["csidrivers", "csinodes", "volumeattachments"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            NODE_CLIENT_ROLE,
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            SELF_NODE_CLIENT_ROLE,
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(READ, &[""], &["services", "endpoints", "nodes"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(EVENT_WRITE, &["", "events.k8s.io"], &["events"]),
            ],
        ),
        cluster_role(
            "system:skiff-dns",
            &[],
            vec![
                rule(READ, &[""], &["services", "endpoints", "namespaces", "pods"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        cluster_role_binding("cluster-admin", "cluster-admin", vec![group("system:masters")]),
        cluster_role_binding(
            "system:discovery",
            "system:discovery",
            vec![group("system:authenticated")],
        ),
        cluster_role_binding(
            "system:basic-user",
            "system:basic-user",
            vec![group("system:authenticated")],
        ),
        cluster_role_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![group("system:authenticated"), group("system:unauthenticated")],
        ),
        cluster_role_binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        cluster_role_binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        cluster_role_binding("system:node", "system:node", vec![group("system:nodes")]),
        cluster_role_binding(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            vec![group(BOOTSTRAPPERS_GROUP)],
        ),
        cluster_role_binding(
            "kubeadm:node-autoapprove-bootstrap",
            NODE_CLIENT_ROLE,
            vec![group(BOOTSTRAPPERS_GROUP)],
        ),
        cluster_role_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            SELF_NODE_CLIENT_ROLE,
            vec![group("system:nodes")],
        ),
        cluster_role_binding(
            "system:node-proxier",
            "system:node-proxier",
            vec![user("system:kube-proxy")],
        ),
        cluster_role_binding("system:skiff-dns", "system:skiff-dns", vec![user("system:skiff-dns")]),
    ]
}

/// The ClusterRole whose `create` on `certificatesigningrequests/nodeclient` lets the
/// CSR approver auto-approve a requester's node client certificate.
pub const NODE_CLIENT_ROLE: &str = "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
/// The ClusterRole whose `create` on `certificatesigningrequests/selfnodeclient` lets
/// a node have the renewal of its own client certificate auto-approved.
pub const SELF_NODE_CLIENT_ROLE: &str = "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";
const BOOTSTRAPPERS_GROUP: &str = skiff_api::bootstrap_token::BOOTSTRAPPERS_GROUP;
/// The namespace and name of the ConfigMap new nodes discover the cluster from.
const CLUSTER_INFO: (&str, &str) = ("kube-public", "cluster-info");

/// The default Roles (namespaced).
pub fn roles() -> Vec<Value> {
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
    "metadata": metadata("kubeadm:bootstrap-signer-clusterinfo", Some(CLUSTER_INFO.0), &[]),
    "rules": [named_rule(&["get"], &[""], &["configmaps"], &[CLUSTER_INFO.1])]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": metadata("system:skiff-dns", Some(DNS_NAMESPACE), &[]),
        "rules": [
            rule(&["get", "list", "watch", "create", "update", "patch", "delete"], &[""], &["services", "endpoints"]),
            rule(&["get", "list", "watch", "create", "update", "patch", "delete"], &["discovery.k8s.io"], &["endpointslices"]),
        ]}),
    ]
}

/// The default RoleBindings (namespaced).
pub fn role_bindings() -> Vec<Value> {
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": metadata("kubeadm:bootstrap-signer-clusterinfo", Some(CLUSTER_INFO.0), &[]),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "kubeadm:bootstrap-signer-clusterinfo"},
        "subjects": [user(crate::authn::ANONYMOUS_USER)]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": metadata("system:skiff-dns", Some(DNS_NAMESPACE), &[]),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "system:skiff-dns"},
        "subjects": [user("system:skiff-dns")]}),
    ]
}

/// The fields [`ensure`] reconciles; everything else an administrator sets is kept.
const RECONCILED: &[&str] = &["rules", "aggregationRule", "roleRef", "subjects"];

/// Creates the default policy objects that are missing and resets those whose
/// autoupdate annotation is `"true"` to the defaults. Errors are the store's.
pub async fn ensure(objects: &Objects) -> Result<(), ApiError> {
    let sets = [
        ("clusterroles", cluster_roles()),
        ("clusterrolebindings", cluster_role_bindings()),
        ("roles", roles()),
        ("rolebindings", role_bindings()),
    ];
    for (plural, wanted) in sets {
        let res = registry::lookup("rbac.authorization.k8s.io", "v1", plural).expect("RBAC resources are served");
        for obj in wanted {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let ns = obj["metadata"]["namespace"].as_str().map(String::from);
            let opts = WriteOptions {
                dry_run: false,
                field_validation: FieldValidation::Strict,
            };
            match objects.create(res, ns.as_deref(), obj.clone(), opts).await {
                Ok(_) => continue,
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
            objects
                .mutate(res, ns.as_deref(), &name, None, false, |cur| {
                    let autoupdate = cur
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(AUTOUPDATE_ANNOTATION))
                        .and_then(Value::as_str);
                    let mut next = cur.clone();
                    if autoupdate != Some("true") {
                        return Ok(next);
                    }
                    for field in RECONCILED {
                        match obj.get(*field) {
                            Some(v) => next[*field] = v.clone(),
                            None => {
                                if let Some(m) = next.as_object_mut() {
                                    m.remove(*field);
                                }
                            }
                        }
                    }
                    Ok(next)
                })
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::UserInfo;
    use crate::authz::rbac::Policy;
    use crate::authz::{Attributes, Decision};

    fn typed<T: serde::de::DeserializeOwned>(v: Vec<Value>) -> Vec<T> {
        v.into_iter().map(|o| serde_json::from_value(o).unwrap()).collect()
    }

    fn policy() -> Policy {
        Policy::new(
            typed(roles()),
            typed(cluster_roles()),
            typed(role_bindings()),
            typed(cluster_role_bindings()),
        )
    }

    fn req(verb: &str, group: &str, resource: &str, sub: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            api_version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            ..Attributes::default()
        }
    }

    fn allowed(p: &Policy, u: &UserInfo, a: &Attributes) -> bool {
        p.authorize(u, a) == Decision::Allow
    }

    #[test]
    fn bootstrappers_may_request_node_certificates_and_anyone_may_read_cluster_info() {
        let p = policy();
        let boot = UserInfo::authenticated("system:bootstrap:abcdef", ["system:bootstrappers".to_string()]);
        let node = UserInfo::authenticated("system:node:n1", ["system:nodes".to_string()]);
        let csr = |verb: &str, sub: &str| req(verb, "certificates.k8s.io", "certificatesigningrequests", sub, "");
        assert!(allowed(&p, &boot, &csr("create", "")));
        assert!(allowed(&p, &boot, &csr("get", "")));
        assert!(allowed(&p, &boot, &csr("create", "nodeclient")));
        assert!(!allowed(&p, &boot, &csr("create", "selfnodeclient")));
        assert!(!allowed(&p, &boot, &csr("update", "approval")));
        let mut approve = req("approve", "certificates.k8s.io", "signers", "", "");
        approve.name = "kubernetes.io/kube-apiserver-client-kubelet".into();
        assert!(!allowed(&p, &boot, &approve));
        assert!(!allowed(&p, &node, &approve));
        let cm = UserInfo::authenticated("system:kube-controller-manager", []);
        assert!(allowed(&p, &cm, &approve));
        approve.name = "kubernetes.io/kube-apiserver-client".into();
        assert!(!allowed(&p, &cm, &approve));
        assert!(!allowed(&p, &boot, &req("get", "", "nodes", "", "")));
        assert!(allowed(&p, &node, &csr("create", "selfnodeclient")));
        assert!(!allowed(&p, &node, &csr("create", "nodeclient")));
        let mut info = req("get", "", "configmaps", "", "kube-public");
        info.name = "cluster-info".into();
        assert!(allowed(&p, &UserInfo::anonymous(), &info));
        info.name = "other".into();
        assert!(!allowed(&p, &UserInfo::anonymous(), &info));
    }

    #[test]
    fn components_get_what_they_need() {
        let p = policy();
        let u = |name: &str, groups: &[&str]| UserInfo::authenticated(name, groups.iter().map(|g| g.to_string()));
        let scheduler = u("system:kube-scheduler", &[]);
        assert!(allowed(
            &p,
            &scheduler,
            &req("create", "", "pods", "binding", "default")
        ));
        assert!(!allowed(&p, &scheduler, &req("create", "", "secrets", "", "default")));
        let node = u("system:node:n1", &["system:nodes"]);
        assert!(allowed(&p, &node, &req("patch", "", "pods", "status", "default")));
        assert!(allowed(
            &p,
            &node,
            &req("update", "coordination.k8s.io", "leases", "", "kube-node-lease")
        ));
        let dns = u("system:skiff-dns", &[]);
        assert!(allowed(
            &p,
            &dns,
            &req("watch", "discovery.k8s.io", "endpointslices", "", "")
        ));
        assert!(allowed(&p, &dns, &req("update", "", "services", "", "kube-system")));
        assert!(!allowed(&p, &dns, &req("update", "", "services", "", "default")));
        let cm = u("system:kube-controller-manager", &[]);
        assert!(allowed(&p, &cm, &req("update", "", "namespaces", "finalize", "")));
        assert!(allowed(&p, &cm, &req("create", "apps", "replicasets", "", "default")));
        assert!(allowed(&p, &cm, &req("create", "", "persistentvolumes", "", "")));
        let sched = u("system:kube-scheduler", &[]);
        assert!(allowed(
            &p,
            &sched,
            &req("patch", "", "persistentvolumeclaims", "", "default")
        ));
        let proxy = u("system:kube-proxy", &[]);
        assert!(allowed(&p, &proxy, &req("list", "", "services", "", "")));
        assert!(!allowed(&p, &proxy, &req("list", "", "secrets", "", "")));
    }

    #[test]
    fn admin_edit_view_are_aggregated_and_public_info_is_anonymous() {
        let p = policy();
        let anon = UserInfo::anonymous();
        let get = |path: &str| Attributes {
            verb: "get".into(),
            path: path.into(),
            ..Attributes::default()
        };
        assert!(allowed(&p, &anon, &get("/version")));
        assert!(!allowed(&p, &anon, &get("/apis")));
        assert!(allowed(&p, &UserInfo::authenticated("x", []), &get("/apis/apps/v1")));
        let rb = |role: &str| -> k8s_openapi::api::rbac::v1::RoleBinding {
            serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "team"},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "name": "jane"}]}))
            .unwrap()
        };
        let jane = UserInfo::authenticated("jane", []);
        let with = |role: &str| Policy::new(vec![], typed(cluster_roles()), vec![rb(role)], vec![]);
        let create_deploy = req("create", "apps", "deployments", "", "team");
        let read_log = req("get", "", "pods", "log", "team");
        let write_role = req("create", RBAC_GROUP, "roles", "", "team");
        assert!(allowed(&with("view"), &jane, &read_log));
        assert!(!allowed(&with("view"), &jane, &create_deploy));
        assert!(allowed(&with("edit"), &jane, &create_deploy));
        assert!(!allowed(&with("edit"), &jane, &write_role));
        assert!(allowed(&with("admin"), &jane, &write_role));
        assert!(allowed(&with("admin"), &jane, &read_log));
    }

    #[tokio::test]
    async fn ensure_creates_the_policy_and_restores_autoupdated_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn skiff_store::Store> =
            std::sync::Arc::new(skiff_store::EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let objects = Objects::new(store);
        crate::bootstrap(&objects).await.unwrap();
        ensure(&objects).await.unwrap();
        let res = registry::lookup(RBAC_GROUP, "v1", "clusterroles").unwrap();
        // An edited autoupdate role is restored; one opted out is kept.
        for (name, autoupdate) in [("view", "true"), ("edit", "false")] {
            objects
                .mutate(res, None, name, None, false, |cur| {
                    let mut next = cur.clone();
                    next["metadata"]["annotations"][AUTOUPDATE_ANNOTATION] = json!(autoupdate);
                    next["aggregationRule"] = Value::Null;
                    next["rules"] = json!([rule(&["get"], &[""], &["secrets"])]);
                    Ok(next)
                })
                .await
                .unwrap();
        }
        ensure(&objects).await.unwrap();
        let view = objects.get(res, None, "view").await.unwrap();
        assert_eq!(view["rules"], json!([]));
        assert!(view["aggregationRule"].is_object());
        let edit = objects.get(res, None, "edit").await.unwrap();
        assert_eq!(edit["rules"][0]["resources"], json!(["secrets"]));
    }
}
