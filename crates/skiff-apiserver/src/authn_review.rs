//! `TokenReview` and `SelfSubjectReview` (`authentication.k8s.io/v1`,
//! k8s.io/kubernetes/pkg/registry/authentication): ask the apiserver who a token
//! belongs to (webhook token authenticators and `kubectl auth whoami` use them).
//! Nothing is stored; the answer is the submitted object with `status` filled in.
//!
//! Bearer tokens the apiserver accepts are ServiceAccount tokens
//! ([`crate::serviceaccount_token`]); a TokenReview of anything else answers
//! `authenticated: false` with the reason in `status.error`.

use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;

use crate::authn::UserInfo;
use crate::objects::Objects;
use crate::serviceaccount_token::{self, Claims, ISSUER, TokenSigner};
use crate::status::ApiError;

/// The API group of authentication reviews.
pub const GROUP: &str = "authentication.k8s.io";

/// `user.extra` keys upstream sets for a pod-bound ServiceAccount token.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// See [`EXTRA_POD_NAME`].
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// See [`EXTRA_POD_NAME`]; set for node-bound tokens (and pod-bound ones
/// are not, since Skiff's tokens do not record the node).
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// See [`EXTRA_POD_NAME`].
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";

/// The `user` of a TokenReview for valid ServiceAccount token claims: name, the
/// ServiceAccount's uid, groups, and the bound pod/node in `extra`.
pub fn user_of(claims: &Claims) -> Value {
    let user = claims.user();
    let k = &claims.kubernetes;
    let mut extra = serde_json::Map::new();
    if let Some(p) = &k.pod {
        extra.insert(EXTRA_POD_NAME.into(), json!([p.name]));
        extra.insert(EXTRA_POD_UID.into(), json!([p.uid]));
    }
    if let Some(n) = &k.node {
        extra.insert(EXTRA_NODE_NAME.into(), json!([n.name]));
        extra.insert(EXTRA_NODE_UID.into(), json!([n.uid]));
    }
    let mut out = json!({"username": user.name, "uid": k.serviceaccount.uid, "groups": user.groups});
    if !extra.is_empty() {
        out["extra"] = Value::Object(extra);
    }
    out
}

fn answer(res: &ResourceInfo, body: Value, status: Value) -> Value {
    let mut out = body;
    out["apiVersion"] = json!(res.api_version());
    out["kind"] = json!(res.kind);
    if !out.get("metadata").is_some_and(Value::is_object) {
        out["metadata"] = json!({});
    }
    // Not stored, so never created: upstream answers `creationTimestamp: null`.
    out["metadata"]["creationTimestamp"] = Value::Null;
    out["status"] = status;
    out
}

/// Answers a review (`POST /apis/authentication.k8s.io/v1/{tokenreviews,selfsubjectreviews}`).
///
/// - `tokenreviews`: `spec.token` (required: 400 BadRequest `token is required for
///   TokenReview in authentication` otherwise) is checked for `spec.audiences`
///   (default: the apiserver's); `status` is `{authenticated: true, user,
///   audiences}` or `{user: {}, error}`.
/// - `selfsubjectreviews`: `status.userInfo` is the requester.
pub async fn review(
    objects: &Objects,
    signer: &TokenSigner,
    requester: &UserInfo,
    res: &ResourceInfo,
    body: Value,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    match res.plural {
        "selfsubjectreviews" => {
            let status = json!({"userInfo": {"username": requester.name, "groups": requester.groups}});
            Ok(answer(res, body, status))
        }
        "tokenreviews" => {
            let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
            let token = spec.get("token").and_then(Value::as_str).unwrap_or_default();
            if token.is_empty() {
                return Err(ApiError::bad_request(
                    "token is required for TokenReview in authentication",
                ));
            }
            let wanted: Vec<String> = spec
                .get("audiences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
                .filter(|a: &Vec<String>| !a.is_empty())
                .unwrap_or_else(|| vec![ISSUER.to_string()]);
            let wanted_refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let status = match serviceaccount_token::review(objects, signer, token, &wanted_refs).await {
                Ok((claims, audiences)) => json!({
                    "authenticated": true,
                    "user": user_of(&claims),
                    "audiences": audiences,
                }),
                Err(serviceaccount_token::Rejection::Lookup(e)) => return Err(ApiError::internal(e)),
                Err(e) => json!({"user": {}, "error": e.to_string()}),
            };
            Ok(answer(res, body, status))
        }
        _ => Err(ApiError::no_route()),
    }
}
