//! `autoscaling/v1` HorizontalPodAutoscalers: a view of the objects stored as
//! `autoscaling/v2`, converted on the way in and out by
//! [`skiff_api::autoscaling`] (upstream serves both versions from one storage the
//! same way). Requests are rewritten to the `autoscaling/v2` resource and served by
//! [`crate::rest::handle`]:
//! - create and update bodies are converted to v2 (an update keeps what v1 cannot
//!   express from the stored object);
//! - patches (JSON, merge, strategic merge) apply to the v1 form of the stored
//!   object and are then written as an update with its resourceVersion as a
//!   precondition (a concurrent write is a 409); server-side apply is not supported
//!   on v1 (415);
//! - responses, list items and watch events are converted back to v1.

use std::collections::HashMap;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, header};
use http_body_util::BodyExt;
use serde_json::Value;
use skiff_api::autoscaling::{v1_to_v2, v2_to_v1};
use skiff_api::registry::{self, ResourceInfo};

use crate::App;
use crate::request::ResourceRequest;
use crate::rest;
use crate::status::ApiError;

/// Whether `res` is `autoscaling/v1` `horizontalpodautoscalers`.
pub fn is_v1_hpa(res: &ResourceInfo) -> bool {
    res.group == "autoscaling" && res.version == "v1" && res.plural == "horizontalpodautoscalers"
}

/// Converts one response object (an HPA, a list of them; anything else as is).
fn to_v1(mut v: Value) -> Value {
    match v.get("kind").and_then(Value::as_str) {
        Some("HorizontalPodAutoscaler") => v2_to_v1(&v),
        Some("HorizontalPodAutoscalerList") => {
            v["apiVersion"] = Value::from("autoscaling/v1");
            if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                for i in items.iter_mut() {
                    let mut item = v2_to_v1(i);
                    // List items carry no kind/apiVersion.
                    if let Some(o) = item.as_object_mut()
                        && i.get("kind").is_none()
                    {
                        o.remove("kind");
                        o.remove("apiVersion");
                    }
                    *i = item;
                }
            }
            v
        }
        _ => v,
    }
}

/// Converts the `object` of each watch event line in `chunk`.
fn convert_lines(chunk: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(chunk.len());
    for line in chunk.split_inclusive(|b| *b == b'\n') {
        match serde_json::from_slice::<Value>(line) {
            Ok(mut ev) => {
                if let Some(obj) = ev.get_mut("object") {
                    *obj = to_v1(obj.take());
                }
                serde_json::to_writer(&mut out, &ev).expect("JSON values always serialize");
                out.push(b'\n');
            }
            Err(_) => out.extend_from_slice(line),
        }
    }
    Bytes::from(out)
}

/// Serves a request for `autoscaling/v1` `horizontalpodautoscalers`.
pub async fn serve(
    app: &App,
    user: &crate::authn::UserInfo,
    method: &Method,
    mut rr: ResourceRequest,
    q: HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v2 = registry::lookup("autoscaling", "v2", "horizontalpodautoscalers").expect("autoscaling/v2 is served");
    rr.res = v2;
    let ns = rr.namespace.clone();
    let body = rest::json_body(headers, body)?;
    let mut headers = headers.clone();
    let mut method = method.clone();
    let json_bytes = |v: &Value| Bytes::from(serde_json::to_vec(v).expect("JSON values always serialize"));
    let body = match (&method, &rr.name) {
        (&Method::POST, None) => json_bytes(&v1_to_v2(&rest::parse_json(&body)?, None)),
        (&Method::PUT, Some(name)) => {
            let existing = app.objects.get(v2, ns.as_deref(), name).await.ok();
            json_bytes(&v1_to_v2(&rest::parse_json(&body)?, existing.as_ref()))
        }
        (&Method::PATCH, Some(name)) => {
            let ct = rest::content_type(&headers);
            if ct.starts_with("application/apply-patch") {
                return Err(ApiError::unsupported_media_type(
                    "server-side apply is not supported on autoscaling/v1; use autoscaling/v2",
                ));
            }
            let cur = app.objects.get(v2, ns.as_deref(), name).await?;
            let patched = rest::apply_patch(&ct, &v2_to_v1(&cur), &body)?;
            method = Method::PUT;
            headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            json_bytes(&v1_to_v2(&patched, Some(&cur)))
        }
        _ => body,
    };
    let watch = method == Method::GET && rr.name.is_none() && (rr.watch_path || crate::request::flag(&q, "watch"));
    let resp = rest::handle(app, user, &method, rr, q, &headers, body).await?;
    let (parts, body) = resp.into_parts();
    if watch {
        let stream = body.into_data_stream().map(|c| c.map(|b| convert_lines(&b)));
        return Ok(Response::from_parts(parts, Body::from_stream(stream)));
    }
    let bytes = body
        .collect()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .to_bytes();
    let out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Bytes::from(serde_json::to_vec(&to_v1(v)).expect("JSON values always serialize")),
        Err(_) => bytes,
    };
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_and_lists_are_converted() {
        let line = br#"{"type":"ADDED","object":{"kind":"HorizontalPodAutoscaler","apiVersion":"autoscaling/v2","metadata":{"name":"a"},"spec":{"maxReplicas":2,"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":50}}}]}}}
"#;
        let out: Value = serde_json::from_slice(&convert_lines(line)).unwrap();
        assert_eq!(out["type"], "ADDED");
        assert_eq!(out["object"]["apiVersion"], "autoscaling/v1");
        assert_eq!(out["object"]["spec"]["targetCPUUtilizationPercentage"], 50);
        let list = serde_json::json!({"kind": "HorizontalPodAutoscalerList", "apiVersion": "autoscaling/v2",
            "metadata": {}, "items": [{"metadata": {"name": "a"}, "spec": {"maxReplicas": 2}}]});
        let l = to_v1(list);
        assert_eq!(l["apiVersion"], "autoscaling/v1");
        assert!(l["items"][0].get("kind").is_none());
        assert_eq!(l["items"][0]["spec"]["maxReplicas"], 2);
        let status = serde_json::json!({"kind": "Status", "code": 404});
        assert_eq!(to_v1(status.clone()), status);
    }
}
