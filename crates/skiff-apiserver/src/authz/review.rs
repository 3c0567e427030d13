//! `SelfSubjectAccessReview` and `SubjectAccessReview` (`authorization.k8s.io/v1`):
//! ask the authorizer whether a user may do something, as `kubectl auth can-i` does
//! (k8s.io/kubernetes/pkg/registry/authorization). Nothing is stored; the answer is
//! the submitted object with `status` filled in.

use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_api::validation::FieldError;

use super::{Attributes, Authorizer, Decision};
use crate::authn::UserInfo;
use crate::status::ApiError;

/// The API group of access reviews.
pub const GROUP: &str = "authorization.k8s.io";

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The attributes a review's `spec` asks about: exactly one of
/// `resourceAttributes` and `nonResourceAttributes` must be set (422 otherwise).
pub fn spec_attributes(res: &ResourceInfo, spec: &Value) -> Result<Attributes, ApiError> {
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    match (resource, non_resource) {
        (Some(r), None) => Ok(Attributes {
            verb: str_at(r, "verb").into(),
            resource_request: true,
            path: String::new(),
            api_group: str_at(r, "group").into(),
            api_version: str_at(r, "version").into(),
            resource: str_at(r, "resource").into(),
            subresource: str_at(r, "subresource").into(),
            namespace: str_at(r, "namespace").into(),
            name: str_at(r, "name").into(),
        }),
        (None, Some(n)) => Ok(Attributes {
            verb: str_at(n, "verb").into(),
            resource_request: false,
            path: str_at(n, "path").into(),
            ..Attributes::default()
        }),
        _ => Err(ApiError::invalid(
            res,
            "",
            &[FieldError {
                reason: "FieldValueRequired",
                field: "spec.resourceAttributes".into(),
                message: "exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
            }],
        )),
    }
}

/// Answers a review. For `selfsubjectaccessreviews` the subject is `requester`; for
/// `subjectaccessreviews` it is `spec.user`/`spec.groups` (one of them required).
/// Returns the review with `status.allowed` (and `status.reason` when the
/// authorizer gave one).
pub fn review(
    authorizer: &Authorizer,
    requester: &UserInfo,
    res: &ResourceInfo,
    body: Value,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let attrs = spec_attributes(res, &spec)?;
    let subject = if res.plural == "selfsubjectaccessreviews" {
        requester.clone()
    } else {
        let name = str_at(&spec, "user").to_string();
        let groups: Vec<String> = spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| g.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        if name.is_empty() && groups.is_empty() {
            return Err(ApiError::invalid(
                res,
                "",
                &[FieldError {
                    reason: "FieldValueRequired",
                    field: "spec.user".into(),
                    message: "at least one of user or group must be specified".into(),
                }],
            ));
        }
        UserInfo { name, groups }
    };
    let status = match authorizer.authorize(&subject, &attrs) {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny { reason } if reason.is_empty() => json!({"allowed": false}),
        Decision::Deny { reason } => json!({"allowed": false, "reason": reason}),
    };
    let mut out = body;
    out["apiVersion"] = json!(res.api_version());
    out["kind"] = json!(res.kind);
    if out.get("metadata").is_none_or(|m| !m.is_object()) {
        out["metadata"] = json!({});
    }
    out["spec"] = spec;
    out["status"] = status;
    Ok(out)
}
