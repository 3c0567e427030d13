//! API errors rendered as `meta/v1` `Status` bodies with the upstream `reason` and
//! HTTP code (k8s.io/apimachinery/pkg/api/errors).

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_api::validation::FieldError;

/// An error answered to the client as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// Upstream `StatusReason`, e.g. `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `Status.details`, when the error concerns one object.
    pub details: Option<Value>,
}

/// `pods` or `deployments.apps`: how upstream names a resource in messages.
pub fn qualified(res: &ResourceInfo) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

fn details(res: &ResourceInfo, name: &str) -> Value {
    json!({"name": name, "group": res.group, "kind": res.plural})
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        Self {
            details: Some(details(res, name)),
            ..Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(res)))
        }
    }

    /// 404 NotFound for a path that names nothing served.
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        Self {
            details: Some(details(res, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(res)),
            )
        }
    }

    /// 409 Conflict (optimistic concurrency failure).
    pub fn conflict(res: &ResourceInfo, name: &str, why: &str) -> Self {
        Self {
            details: Some(details(res, name)),
            ..Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(res)),
            )
        }
    }

    /// 409 Conflict for a server-side apply that would take fields other managers
    /// own, in upstream's form: `Apply failed with N conflict(s): conflict(s) with
    /// "<manager>" using <apiVersion>: <field>` with one `FieldManagerConflict`
    /// cause per field.
    pub fn apply_conflicts(res: &ResourceInfo, name: &str, conflicts: &[skiff_api::managed_fields::Conflict]) -> Self {
        let n = conflicts.len();
        let message = if n == 1 {
            let c = &conflicts[0];
            format!(
                "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
                c.manager, c.api_version, c.field
            )
        } else {
            let mut by_manager: Vec<(String, String, Vec<String>)> = Vec::new();
            for c in conflicts {
                match by_manager
                    .iter_mut()
                    .find(|(m, v, _)| *m == c.manager && *v == c.api_version)
                {
                    Some((_, _, fields)) => fields.push(c.field.clone()),
                    None => by_manager.push((c.manager.clone(), c.api_version.clone(), vec![c.field.clone()])),
                }
            }
            let parts: Vec<String> = by_manager
                .iter()
                .map(|(m, v, fields)| {
                    let list: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
                    format!("conflicts with \"{m}\" using {v}:\n{}", list.join("\n"))
                })
                .collect();
            format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| {
                json!({"reason": "FieldManagerConflict",
                       "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                       "field": c.field})
            })
            .collect();
        let mut d = details(res, name);
        d["causes"] = json!(causes);
        Self {
            details: Some(d),
            ..Self::new(409, "Conflict", message)
        }
    }

    /// 410 Gone / Expired (compacted resourceVersion).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 422 Invalid with one cause per field error.
    pub fn invalid(res: &ResourceInfo, name: &str, errs: &[FieldError]) -> Self {
        let rendered: Vec<String> = errs.iter().map(FieldError::render).collect();
        let message = if rendered.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", kind_qualified(res), rendered[0])
        } else {
            format!(
                "{} \"{name}\" is invalid: [{}]",
                kind_qualified(res),
                rendered.join(", ")
            )
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        Self {
            details: Some(json!({"name": name, "group": res.group, "kind": res.kind, "causes": causes})),
            ..Self::new(422, "Invalid", message)
        }
    }

    /// 429 TooManyRequests with `details.retryAfterSeconds` (answered with a
    /// `Retry-After` header when positive) and one cause, as upstream
    /// `NewTooManyRequests` plus a cause (the Eviction API's `DisruptionBudget`).
    pub fn too_many_requests(message: impl Into<String>, retry_after_seconds: u32, cause: Value) -> Self {
        Self {
            details: Some(json!({"retryAfterSeconds": retry_after_seconds, "causes": [cause]})),
            ..Self::new(429, "TooManyRequests", message)
        }
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if self.reason.is_empty() {
            s.as_object_mut().expect("object").remove("reason");
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// `Deployment.apps` / `Pod`: how upstream names a kind in Invalid messages.
fn kind_qualified(res: &ResourceInfo) -> String {
    if res.group.is_empty() {
        res.kind.to_string()
    } else {
        format!("{}.{}", res.kind, res.group)
    }
}

impl From<skiff_store::Error> for ApiError {
    fn from(e: skiff_store::Error) -> Self {
        match e {
            skiff_store::Error::Compacted { requested, compacted } => {
                Self::expired(format!("too old resource version: {requested} ({compacted})"))
            }
            skiff_store::Error::FutureRevision { requested, current } => Self {
                details: Some(json!({"retryAfterSeconds": 1})),
                ..Self::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {requested}, current: {current}"),
                )
            },
            // Upstream has no StatusReason for it; the HTTP code says what it is.
            skiff_store::Error::NoSpace(m) => Self::new(507, "InsufficientStorage", m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            self.to_status().to_string(),
        )
            .into_response();
        // Upstream answers a positive retryAfterSeconds with a Retry-After header too.
        let retry_after = self
            .details
            .as_ref()
            .and_then(|d| d.get("retryAfterSeconds"))
            .and_then(Value::as_u64)
            .filter(|s| *s > 0);
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
        }
        resp
    }
}

/// A success `Status` (e.g. the answer to a binding).
pub fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_insufficient_storage() {
        let e = ApiError::from(skiff_store::Error::NoSpace("free disk space and retry".into()));
        let s = e.to_status();
        assert_eq!(
            (s["code"].as_u64(), s["reason"].as_str()),
            (Some(507), Some("InsufficientStorage"))
        );
        assert_eq!(s["message"], "free disk space and retry");
        assert_eq!(e.into_response().status(), StatusCode::INSUFFICIENT_STORAGE);
    }
}
