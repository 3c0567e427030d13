//! Authorization: whether the authenticated user may do what a request asks.
//!
//! As upstream with `--authorization-mode=RBAC`: members of `system:masters` are
//! always allowed (upstream's privileged-group authorizer), everything else is
//! decided by [`rbac`] over the RBAC objects in the store, cached in memory by
//! [`cache`]. Denied requests get a 403 `Forbidden` `Status` worded as upstream's
//! (k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go).
//!
//! Nodes are authorized through RBAC too: the bootstrap policy binds the
//! `system:node` ClusterRole to the `system:nodes` group (see [`bootstrap_policy`])
//! instead of upstream's Node authorizer, which additionally limits each kubelet to
//! the objects of its own node.

pub mod attributes;
pub mod bootstrap_policy;
pub mod cache;
pub mod rbac;
pub mod review;

use serde_json::json;

pub use attributes::Attributes;

use crate::authn::{MASTERS_GROUP, UserInfo};
use crate::status::ApiError;

/// The outcome of authorizing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed.
    Allow,
    /// No rule allows it. `reason` explains why beyond the missing grant (e.g. a
    /// binding that refers to a missing role), `""` when there is nothing to add.
    Deny {
        /// Extra explanation appended to the 403 message.
        reason: String,
    },
}

/// The authorizer chain: privileged group, then RBAC.
#[derive(Clone)]
pub struct Authorizer {
    cache: cache::PolicyCache,
}

impl Authorizer {
    /// An authorizer over the RBAC objects kept by `cache`.
    pub fn new(cache: cache::PolicyCache) -> Self {
        Self { cache }
    }

    /// Decides whether `user` may do `a`.
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        if user.in_group(MASTERS_GROUP) {
            return Decision::Allow;
        }
        self.cache.snapshot().authorize(user, a)
    }

    /// The rules that apply to `user` in `namespace` (`system:masters` gets
    /// everything), for `SelfSubjectRulesReview`.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
        if user.in_group(MASTERS_GROUP) {
            return vec![
                serde_json::from_value(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}))
                    .expect("valid rule"),
            ];
        }
        self.cache.snapshot().rules_for(user, namespace)
    }
}

/// The message upstream gives a denied request:
/// `User "<user>" cannot <verb> resource "<resource>[/<sub>]" in API group "<group>"`
/// followed by `in the namespace "<ns>"` or `at the cluster scope`, or
/// `User "<user>" cannot <verb> path "<path>"` for non-resource requests.
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    if !a.resource_request {
        return format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path);
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    if a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.name, a.verb, resource, a.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.name, a.verb, resource, a.api_group, a.namespace
        )
    }
}

/// The 403 `Forbidden` error for a denied request, as upstream renders it
/// (`apierrors.NewForbidden`): `<resource>[.<group>] ["<name>"] is forbidden: <message>`,
/// or `forbidden: <message>` for non-resource requests, with `: <reason>` appended
/// when the authorizer gave one.
pub fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let mut msg = forbidden_message(user, a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    if !a.resource_request {
        return ApiError::forbidden(format!("forbidden: {msg}"));
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", a.name)
    };
    ApiError {
        details: Some(json!({"name": a.name, "group": a.api_group, "kind": a.resource})),
        ..ApiError::forbidden(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_have_upstream_wording() {
        let jane = UserInfo::authenticated("jane", []);
        let a = Attributes {
            verb: "list".into(),
            resource_request: true,
            api_group: String::new(),
            api_version: "v1".into(),
            resource: "pods".into(),
            namespace: "default".into(),
            ..Attributes::default()
        };
        assert_eq!(
            forbidden(&jane, &a, "").message,
            r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let a = Attributes {
            verb: "get".into(),
            api_group: "apps".into(),
            resource: "deployments".into(),
            subresource: "scale".into(),
            name: "web".into(),
            namespace: String::new(),
            ..a
        };
        let e = forbidden(&jane, &a, "RBAC: role.rbac.authorization.k8s.io \"r\" not found");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"deployments.apps "web" is forbidden: User "jane" cannot get resource "deployments/scale" in API group "apps" at the cluster scope: RBAC: role.rbac.authorization.k8s.io "r" not found"#
        );
        let p = Attributes {
            verb: "get".into(),
            path: "/metrics".into(),
            ..Attributes::default()
        };
        assert_eq!(
            forbidden(&UserInfo::anonymous(), &p, "").message,
            r#"forbidden: User "system:anonymous" cannot get path "/metrics""#
        );
    }
}
