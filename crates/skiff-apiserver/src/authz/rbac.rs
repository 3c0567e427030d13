//! The RBAC authorizer as pure functions over Roles, ClusterRoles, RoleBindings and
//! ClusterRoleBindings (`rbac.authorization.k8s.io/v1`), following upstream's
//! plugin/pkg/auth/authorizer/rbac and the RBAC documentation
//! (<https://kubernetes.io/docs/reference/access-authn-authz/rbac/>).
//!
//! Rules only grant; there are no deny rules. A request is allowed when a
//! ClusterRoleBinding, or a RoleBinding in the request's namespace, binds the user
//! (by name, group or ServiceAccount) to a role with a rule that matches it.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use skiff_api::selector::LabelSelector;

use super::Decision;
use super::attributes::Attributes;
use crate::authn::UserInfo;

/// The wildcard matching every verb, group, resource or non-resource URL.
const ALL: &str = "*";

fn has(list: &[String], wanted: &str) -> bool {
    list.iter().any(|x| x == ALL || x == wanted)
}

/// Whether the rule lists the verb (or `*`).
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    has(&rule.verbs, verb)
}

/// Whether the rule lists the API group (or `*`); `""` is the core group.
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    has(rule.api_groups.as_deref().unwrap_or_default(), group)
}

/// Whether the rule lists the resource. With a subresource the rule must name
/// `resource/subresource` or `*/subresource`; `*` matches every resource and
/// subresource, while plain `pods` does not cover `pods/log`.
pub fn resource_matches(rule: &PolicyRule, resource: &str, subresource: &str) -> bool {
    let combined = if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    };
    rule.resources.as_deref().unwrap_or_default().iter().any(|r| {
        r == ALL
            || *r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/").is_some_and(|s| s == subresource))
    })
}

/// Whether the rule's `resourceNames` admit `name`: an empty list admits every
/// name; a non-empty one only the names it lists (so never a nameless request such
/// as `create` or an unfiltered `list`).
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => !name.is_empty() && names.iter().any(|n| n == name),
    }
}

/// Whether the rule's `nonResourceURLs` cover `path`: `*`, the exact path, or a
/// prefix ending in `*` (`/apis/*`).
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|u| u == ALL || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)))
}

/// Whether one rule allows the request.
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !verb_matches(rule, &a.verb) {
        return false;
    }
    if a.resource_request {
        api_group_matches(rule, &a.api_group)
            && resource_matches(rule, &a.resource, &a.subresource)
            && resource_name_matches(rule, &a.name)
    } else {
        non_resource_url_matches(rule, &a.path)
    }
}

/// The user name of a ServiceAccount: `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Whether a binding subject names the user. A `ServiceAccount` subject without a
/// namespace means one in the binding's namespace (`binding_namespace`, `""` for
/// ClusterRoleBindings).
pub fn subject_applies(subject: &Subject, user: &UserInfo, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            !ns.is_empty() && user.name == service_account_user(ns, &subject.name)
        }
        _ => false,
    }
}

/// The effective rules of every ClusterRole, keyed by name. A ClusterRole with an
/// `aggregationRule` gets the union of the rules of the other ClusterRoles whose
/// labels match any of its `clusterRoleSelectors` (its own `rules` are replaced, as
/// upstream's clusterrole-aggregation controller replaces them). Aggregation is
/// transitive (`admin` takes in `edit`, which takes in `view`), so it is repeated
/// until nothing changes.
pub fn aggregate(cluster_roles: &[ClusterRole]) -> HashMap<String, Vec<PolicyRule>> {
    let name_of = |cr: &ClusterRole| cr.metadata.name.clone().unwrap_or_default();
    let mut rules: HashMap<String, Vec<PolicyRule>> = cluster_roles
        .iter()
        .map(|cr| (name_of(cr), cr.rules.clone().unwrap_or_default()))
        .collect();
    let selectors: Vec<(String, Vec<LabelSelector>)> = cluster_roles
        .iter()
        .filter_map(|cr| {
            let sels = cr.aggregation_rule.as_ref()?.cluster_role_selectors.as_ref()?;
            let parsed = sels
                .iter()
                .filter_map(|s| serde_json::to_value(s).ok())
                .filter_map(|s| LabelSelector::from_label_selector_json(&s).ok())
                .collect();
            Some((name_of(cr), parsed))
        })
        .collect();
    let labels: Vec<(String, BTreeMap<String, String>)> = cluster_roles
        .iter()
        .map(|cr| (name_of(cr), cr.metadata.labels.clone().unwrap_or_default()))
        .collect();
    for _ in 0..=selectors.len() {
        let mut changed = false;
        for (target, sels) in &selectors {
            let mut union: Vec<PolicyRule> = Vec::new();
            for (source, l) in &labels {
                if source == target || !sels.iter().any(|s| s.matches(l)) {
                    continue;
                }
                for r in rules.get(source).into_iter().flatten() {
                    if !union.contains(r) {
                        union.push(r.clone());
                    }
                }
            }
            if rules.get(target) != Some(&union) {
                rules.insert(target.clone(), union);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    rules
}

/// A compiled snapshot of the RBAC objects, ready to answer requests.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Role rules by `(namespace, name)`.
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    /// Effective (aggregated) ClusterRole rules by name.
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// All ClusterRoleBindings.
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// RoleBindings by namespace.
    role_bindings: HashMap<String, Vec<RoleBinding>>,
}

impl Policy {
    /// Compiles the objects (aggregating ClusterRoles).
    pub fn new(
        roles: Vec<Role>,
        cluster_roles: Vec<ClusterRole>,
        role_bindings: Vec<RoleBinding>,
        cluster_role_bindings: Vec<ClusterRoleBinding>,
    ) -> Self {
        let roles = roles
            .into_iter()
            .map(|r| {
                let key = (
                    r.metadata.namespace.clone().unwrap_or_default(),
                    r.metadata.name.clone().unwrap_or_default(),
                );
                (key, r.rules.unwrap_or_default())
            })
            .collect();
        let mut by_ns: HashMap<String, Vec<RoleBinding>> = HashMap::new();
        for rb in role_bindings {
            by_ns
                .entry(rb.metadata.namespace.clone().unwrap_or_default())
                .or_default()
                .push(rb);
        }
        Self {
            roles,
            cluster_roles: aggregate(&cluster_roles),
            cluster_role_bindings,
            role_bindings: by_ns,
        }
    }

    /// The rules a role reference resolves to, or the upstream-style error naming the
    /// missing role.
    fn rules_of(&self, role_ref: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        let found = match role_ref.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&role_ref.name),
            "Role" if !namespace.is_empty() => self.roles.get(&(namespace.to_string(), role_ref.name.clone())),
            _ => None,
        };
        found.map(Vec::as_slice).ok_or_else(|| {
            format!(
                "{}.rbac.authorization.k8s.io \"{}\" not found",
                role_ref.kind.to_ascii_lowercase(),
                role_ref.name
            )
        })
    }

    /// Every `(binding namespace, role reference)` that applies to the user for a
    /// request in `namespace`: ClusterRoleBindings first, then RoleBindings of the
    /// namespace.
    fn applicable<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a RoleRef)> {
        let cluster = self
            .cluster_role_bindings
            .iter()
            .filter(move |b| b.subjects.iter().flatten().any(|s| subject_applies(s, user, "")))
            .map(|b| ("", &b.role_ref));
        let namespaced = (!namespace.is_empty())
            .then(|| self.role_bindings.get(namespace))
            .flatten()
            .into_iter()
            .flatten()
            .filter(move |b| b.subjects.iter().flatten().any(|s| subject_applies(s, user, namespace)))
            .map(move |b| (namespace, &b.role_ref));
        cluster.chain(namespaced)
    }

    /// Decides a request. A denial carries, as its reason, the missing roles that
    /// bindings of the user refer to (upstream's `RBAC: ... not found`), if any.
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        let mut errors = Vec::new();
        for (ns, role_ref) in self.applicable(user, &a.namespace) {
            match self.rules_of(role_ref, ns) {
                Ok(rules) => {
                    if rules.iter().any(|r| rule_allows(r, a)) {
                        return Decision::Allow;
                    }
                }
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e)
                    }
                }
            }
        }
        let reason = match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        };
        Decision::Deny { reason }
    }

    /// The rules that apply to the user in `namespace` (cluster-wide ones included),
    /// as `SelfSubjectRulesReview` reports them.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for (ns, role_ref) in self.applicable(user, namespace) {
            for r in self.rules_of(role_ref, ns).unwrap_or_default() {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: serde_json::Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn req(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            path: String::new(),
            api_group: group.into(),
            api_version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn path(verb: &str, p: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: p.into(),
            ..Attributes::default()
        }
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo::authenticated(name, groups.iter().map(|g| g.to_string()))
    }

    #[test]
    fn wildcards_match_everything_including_subresources() {
        let r = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(rule_allows(&r, &req("delete", "apps", "deployments", "", "x", "d")));
        assert!(rule_allows(&r, &req("get", "", "pods", "log", "x", "p")));
        assert!(
            !rule_allows(&r, &path("get", "/healthz")),
            "resource rules do not cover paths"
        );
    }

    #[test]
    fn verbs_groups_and_resources_must_all_match() {
        let r = rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(rule_allows(&r, &req("list", "", "pods", "", "x", "")));
        assert!(!rule_allows(&r, &req("watch", "", "pods", "", "x", "")));
        assert!(!rule_allows(&r, &req("get", "apps", "pods", "", "x", "p")));
        assert!(!rule_allows(&r, &req("get", "", "services", "", "x", "s")));
    }

    #[test]
    fn subresources_are_named_explicitly() {
        let pods = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(!rule_allows(&pods, &req("get", "", "pods", "log", "x", "p")));
        let log = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}));
        assert!(rule_allows(&log, &req("get", "", "pods", "log", "x", "p")));
        assert!(!rule_allows(&log, &req("get", "", "pods", "", "x", "p")));
        let any_status = rule(json!({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(rule_allows(
            &any_status,
            &req("update", "apps", "deployments", "status", "x", "d")
        ));
        assert!(!rule_allows(
            &any_status,
            &req("update", "apps", "deployments", "", "x", "d")
        ));
    }

    #[test]
    fn resource_names_restrict_to_named_objects() {
        let r = rule(
            json!({"verbs": ["get", "update", "create"], "apiGroups": [""], "resources": ["configmaps"],
                            "resourceNames": ["app-config"]}),
        );
        assert!(rule_allows(&r, &req("get", "", "configmaps", "", "x", "app-config")));
        assert!(!rule_allows(&r, &req("get", "", "configmaps", "", "x", "other")));
        assert!(!rule_allows(&r, &req("create", "", "configmaps", "", "x", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_star_prefix() {
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        assert!(rule_allows(&r, &path("get", "/healthz")));
        assert!(!rule_allows(&r, &path("get", "/healthz/etcd")));
        assert!(rule_allows(&r, &path("get", "/apis/apps/v1")));
        assert!(!rule_allows(&r, &path("post", "/apis/apps/v1")));
        assert!(!rule_allows(&r, &req("get", "", "healthz", "", "", "")));
        let all = rule(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        assert!(rule_allows(&all, &path("put", "/anything")));
    }

    fn cluster_role(v: serde_json::Value) -> ClusterRole {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn aggregation_is_transitive_and_replaces_own_rules() {
        let view_rule = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        let edit_rule = json!({"verbs": ["create"], "apiGroups": [""], "resources": ["pods"]});
        let roles = vec![
            cluster_role(
                json!({"metadata": {"name": "admin"}, "rules": [{"verbs": ["*"], "apiGroups": ["x"], "resources": ["y"]}],
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-admin": "true"}}]}}),
            ),
            cluster_role(json!({"metadata": {"name": "edit", "labels": {"to-admin": "true"}},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-edit": "true"}}]}})),
            cluster_role(json!({"metadata": {"name": "view", "labels": {"to-edit": "true"}}, "rules": [view_rule]})),
            cluster_role(
                json!({"metadata": {"name": "extra-edit", "labels": {"to-edit": "true"}}, "rules": [edit_rule]}),
            ),
            cluster_role(
                json!({"metadata": {"name": "unrelated"}, "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]}),
            ),
        ];
        let agg = aggregate(&roles);
        assert_eq!(agg["edit"], vec![rule(view_rule.clone()), rule(edit_rule.clone())]);
        assert_eq!(agg["admin"], vec![rule(view_rule), rule(edit_rule)]);
        assert_eq!(agg["unrelated"].len(), 1);
    }

    #[test]
    fn bindings_grant_by_user_group_and_service_account() {
        let cr = cluster_role(json!({"metadata": {"name": "pod-reader"},
            "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}));
        let role: Role = serde_json::from_value(json!({"metadata": {"name": "cm-writer", "namespace": "team"},
            "rules": [{"verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"]}]}))
        .unwrap();
        let rb: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "team"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-writer"},
            "subjects": [{"kind": "ServiceAccount", "name": "builder"}, {"kind": "User", "name": "jane"}]}))
        .unwrap();
        let rb_cluster_role: RoleBinding =
            serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "team"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pod-reader"},
            "subjects": [{"kind": "Group", "name": "devs"}]}))
            .unwrap();
        let crb: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": "d"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
            "subjects": [{"kind": "User", "name": "jane"}]}))
        .unwrap();
        let p = Policy::new(vec![role], vec![cr], vec![rb, rb_cluster_role], vec![crb]);
        let sa = user(&service_account_user("team", "builder"), &[]);
        assert_eq!(
            p.authorize(&sa, &req("create", "", "configmaps", "", "team", "")),
            Decision::Allow
        );
        assert!(matches!(
            p.authorize(&sa, &req("create", "", "configmaps", "", "other", "")),
            Decision::Deny { .. }
        ));
        let other_sa = user(&service_account_user("other", "builder"), &[]);
        assert!(matches!(
            p.authorize(&other_sa, &req("create", "", "configmaps", "team", "team", "")),
            Decision::Deny { .. }
        ));
        let dev = user("bob", &["devs"]);
        assert_eq!(
            p.authorize(&dev, &req("list", "", "pods", "", "team", "")),
            Decision::Allow
        );
        assert!(matches!(
            p.authorize(&dev, &req("list", "", "pods", "", "", "")),
            Decision::Deny { .. }
        ));
        let jane = user("jane", &[]);
        assert_eq!(
            p.authorize(&jane, &req("delete", "", "pods", "", "team", "p")),
            Decision::Deny {
                reason: "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found".into()
            }
        );
        assert_eq!(p.rules_for(&jane, "team").len(), 1);
    }
}
