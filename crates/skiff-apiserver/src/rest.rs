//! The REST handler for resource paths: maps verb + path to object operations
//! (k8s.io/apiserver/pkg/endpoints/handlers).

use std::collections::HashMap;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use skiff_api::{managed_fields, patch, registry, table};

use crate::App;
use crate::list::{self, Selectors};
use crate::objects::{DeleteOptions, FieldValidation, WriteOptions, now_rfc3339};
use crate::request::{ResourceRequest, flag};
use crate::status::{ApiError, success};

/// A JSON response with optional `Warning` headers.
pub fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').next().is_some_and(|first| first.contains("as=Table")))
}

fn write_options(q: &HashMap<String, String>) -> Result<WriteOptions, ApiError> {
    let field_validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            )));
        }
    };
    Ok(WriteOptions {
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        field_validation,
    })
}

pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// A `Table` of `objects` (`kubectl get` output): built-in columns, or a custom
/// resource's `additionalPrinterColumns`.
fn render_table(res: &registry::ResourceInfo, objects: &[Value], list_meta: Value, include: &str) -> Value {
    let now = jiff::Timestamp::now();
    if registry::is_custom(res) {
        let columns = skiff_api::crd::version_info(res.group, res.version, res.kind)
            .map(|v| v.columns)
            .unwrap_or_default();
        return table::custom_table(&columns, objects, list_meta, include, now);
    }
    table::table(res.kind, objects, list_meta, include, now)
}

/// Who is writing, for `metadata.managedFields`: the `fieldManager` query
/// parameter, else the User-Agent's product name (upstream's default, e.g.
/// `kubectl` or `kube-controller-manager`).
struct Writer {
    name: String,
    api_version: String,
    now: String,
}

impl Writer {
    fn from_request(
        res: &registry::ResourceInfo,
        q: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let name = match q.get("fieldManager") {
            Some(m) if m.chars().count() > 128 => {
                return Err(ApiError::bad_request(format!(
                    "fieldManager: Too long: may not be more than 128 bytes (got {:?})",
                    m
                )));
            }
            Some(m) if !m.is_empty() => m.clone(),
            _ => headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .map(|s| s.trim().chars().take(128).collect::<String>())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".into()),
        };
        Ok(Self {
            name,
            api_version: res.api_version(),
            now: now_rfc3339(),
        })
    }

    fn manager<'a>(&'a self, subresource: &'a str) -> managed_fields::Manager<'a> {
        managed_fields::Manager {
            name: &self.name,
            api_version: &self.api_version,
            subresource,
            now: &self.now,
        }
    }
}

/// Server-side apply (`PATCH` with `application/apply-patch+yaml`): merges the
/// applied configuration into the object (creating it when absent, 201), taking
/// ownership of its fields for `fieldManager`; fields other managers own with other
/// values are a 409 with the conflicts unless `force=true`.
#[allow(clippy::too_many_arguments)]
async fn server_side_apply(
    app: &App,
    res: &'static registry::ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    q: &HashMap<String, String>,
    writer: &Writer,
    body: &[u8],
) -> Result<Response, ApiError> {
    let objects = &app.objects;
    if sub.is_some() {
        return Err(ApiError::unsupported_media_type(
            "server-side apply is supported on the main resource only, not on subresources",
        ));
    }
    if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::bad_request(
            "PATCH, fieldManager: Required value: is required for apply patch",
        ));
    }
    let opts = write_options(q)?;
    let force = flag(q, "force");
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the apply patch is not UTF-8"))?;
    let applied: Value =
        serde_yaml_ng::from_str(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request("the apply patch must be an object"));
    }
    let kind = applied.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = applied.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if kind != res.kind || api_version != res.api_version() {
        return Err(ApiError::bad_request(format!(
            "the apply patch is a {api_version:?} {kind:?}; this endpoint serves {} {}",
            res.api_version(),
            res.kind
        )));
    }
    if let Some(n) = applied.pointer("/metadata/name").and_then(Value::as_str)
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let manager = writer.manager("");
    match objects.get(res, ns, name).await {
        Err(e) if e.code == 404 => {
            let mut merged = managed_fields::apply(None, &applied, &manager, force)
                .map_err(|c| ApiError::apply_conflicts(res, name, &c))?;
            merged["metadata"]["name"] = json!(name);
            let w = objects.create(res, ns, merged, opts).await?;
            Ok(json_response(StatusCode::CREATED, &w.object, &w.warnings))
        }
        Err(e) => Err(e),
        Ok(_) => {
            let (_guard, in_use) = service_allocations(objects, res, None, ns, name).await?;
            let mut warnings = Vec::new();
            let out = objects
                .mutate(res, ns, name, None, opts.dry_run, |cur| {
                    let merged = managed_fields::apply(Some(cur), &applied, &manager, force)
                        .map_err(|c| ApiError::apply_conflicts(res, name, &c))?;
                    let managed = merged.pointer("/metadata/managedFields").cloned();
                    let (mut n, w) = objects.prepare_update(res, None, cur, merged, opts.field_validation)?;
                    if let Some(in_use) = &in_use {
                        objects.allocate_service(&mut n, Some(cur), in_use)?;
                    }
                    if let Some(m) = managed {
                        n["metadata"]["managedFields"] = m;
                    }
                    warnings = w;
                    Ok(n)
                })
                .await?;
            let out = maybe_finish_namespace(app, res, &out).await?;
            Ok(json_response(StatusCode::OK, &out, &warnings))
        }
    }
}

/// For writes to a Service's spec: the allocation lock (held until the write is
/// done) and the addresses the other Services hold.
async fn service_allocations<'a>(
    objects: &'a crate::objects::Objects,
    res: &registry::ResourceInfo,
    sub: Option<&str>,
    ns: Option<&str>,
    name: &str,
) -> Result<
    (
        Option<tokio::sync::MutexGuard<'a, ()>>,
        Option<crate::service_alloc::InUse>,
    ),
    ApiError,
> {
    if !res.group.is_empty() || res.kind != "Service" || sub.is_some() {
        return Ok((None, None));
    }
    let guard = objects.lock_service_allocations().await;
    let in_use = objects.services_in_use(ns, name).await?;
    Ok((Some(guard), Some(in_use)))
}

fn name_of(r: &ResourceRequest) -> Result<&str, ApiError> {
    r.name
        .as_deref()
        .ok_or_else(|| ApiError::method_not_allowed("a resource name is required"))
}

/// Serves one resource request.
pub async fn handle(
    app: &App,
    user: &crate::authn::UserInfo,
    method: &Method,
    r: ResourceRequest,
    q: HashMap<String, String>,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let res = r.res;
    let ns = r.namespace.as_deref();
    let objects = &app.objects;
    let table_out = wants_table(headers);
    let render_one = move |obj: &Value| -> Value {
        if table_out {
            render_table(res, std::slice::from_ref(obj), json!({}), "Metadata")
        } else {
            obj.clone()
        }
    };
    if res.namespaced && r.name.is_some() && ns.is_none() {
        return Err(ApiError::no_route());
    }
    let sub = r.subresource.as_deref();
    if res.group == "certificates.k8s.io" && sub == Some("approval") && matches!(*method, Method::PUT | Method::PATCH) {
        let cur = objects.get(res, ns, name_of(&r)?).await?;
        let signer = cur
            .pointer("/spec/signerName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        crate::csr::check_approver(&app.authorizer, user, signer)?;
    }
    let writer = Writer::from_request(res, &q, headers)?;
    let body = json_body(headers, body)?;
    match (method.clone(), r.name.is_some(), sub) {
        (Method::GET, false, None) => {
            let sel = Selectors::from_query(&q)?;
            if r.watch_path || flag(&q, "watch") {
                let include = q.get("includeObject").cloned().unwrap_or_else(|| "Metadata".into());
                let render: crate::watch::Render = table_out.then(|| {
                    Box::new(move |obj: Value| render_table(res, std::slice::from_ref(&obj), json!({}), &include))
                        as Box<dyn Fn(Value) -> Value + Send>
                });
                let rx = crate::watch::start(objects, res, ns, &q, sel, render, objects.watch_lines()).await?;
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                return Ok(Response::builder()
                    .status(200)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from_stream(stream))
                    .expect("valid response"));
            }
            let listed = list::list(objects, res, ns, &q, &sel).await?;
            let body = if table_out {
                let meta = list::list_meta(&listed);
                let include = q.get("includeObject").map(String::as_str).unwrap_or("Metadata");
                render_table(res, &listed.items, meta, include)
            } else {
                list::list_object(res, listed)
            };
            Ok(json_response(StatusCode::OK, &body, &[]))
        }
        (Method::GET, true, None | Some("status") | Some("approval")) => {
            let obj = objects.get(res, ns, name_of(&r)?).await?;
            Ok(json_response(StatusCode::OK, &render_one(&obj), &[]))
        }
        (Method::GET, true, Some("scale")) => {
            let obj = objects.get(res, ns, name_of(&r)?).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&obj), &[]))
        }
        (Method::GET, true, Some("log")) => crate::logs::pod_logs(app, ns.unwrap_or_default(), name_of(&r)?, &q).await,
        (Method::POST, false, None) => {
            let obj = parse_json(&body)?;
            if res.plural == "bindings" {
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                return bind(app, ns.unwrap_or_default(), &name, &obj, &q).await;
            }
            let mut obj = obj;
            if res.group == "certificates.k8s.io" {
                crate::csr::prepare_create(res, &mut obj, user)?;
            }
            if obj.is_object() {
                managed_fields::record_update(None, &mut obj, &writer.manager(""));
            }
            let w = objects.create(res, ns, obj, write_options(&q)?).await?;
            Ok(json_response(StatusCode::CREATED, &w.object, &w.warnings))
        }
        (Method::POST, true, Some("token")) => {
            crate::serviceaccount_token::create(objects, &app.tokens, ns.unwrap_or_default(), name_of(&r)?, &body).await
        }
        (Method::POST, true, Some("eviction")) => {
            crate::eviction::evict(app, ns.unwrap_or_default(), name_of(&r)?, &body, &q).await
        }
        (Method::POST, true, Some("binding")) => {
            let obj = parse_json(&body)?;
            bind(app, ns.unwrap_or_default(), name_of(&r)?, &obj, &q).await
        }
        (Method::PUT, true, Some("scale")) | (Method::PATCH, true, Some("scale")) => {
            let name = name_of(&r)?.to_string();
            let opts = write_options(&q)?;
            let is_patch = *method == Method::PATCH;
            let content_type = content_type(headers);
            let input = body.clone();
            let mut warnings = Vec::new();
            let precondition = if is_patch { None } else { rv_of(&parse_json(&body)?)? };
            let out = objects
                .mutate(res, ns, &name, precondition, opts.dry_run, |cur| {
                    let scale = scale_of(cur);
                    let new_scale = if is_patch {
                        apply_patch(&content_type, &scale, &input)?
                    } else {
                        parse_json(&input)?
                    };
                    let replicas = new_scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
                    let mut next = cur.clone();
                    next["spec"]["replicas"] = json!(replicas);
                    let (mut n, w) = objects.prepare_update(res, None, cur, next, opts.field_validation)?;
                    managed_fields::record_update(Some(cur), &mut n, &writer.manager("scale"));
                    warnings = w;
                    Ok(n)
                })
                .await?;
            Ok(json_response(StatusCode::OK, &scale_of(&out), &warnings))
        }
        (Method::PUT, true, None | Some("status") | Some("finalize") | Some("approval")) => {
            let name = name_of(&r)?.to_string();
            let opts = write_options(&q)?;
            let new = parse_json(&body)?;
            let precondition = rv_of(&new)?;
            let mut warnings = Vec::new();
            let (_guard, in_use) = service_allocations(objects, res, sub, ns, &name).await?;
            let out = objects
                .mutate(res, ns, &name, precondition, opts.dry_run, |cur| {
                    if sub == Some("finalize") {
                        let mut next = cur.clone();
                        next["spec"]["finalizers"] = new.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
                        return Ok(next);
                    }
                    let (mut n, w) = objects.prepare_update(res, sub, cur, new.clone(), opts.field_validation)?;
                    if let Some(in_use) = &in_use {
                        objects.allocate_service(&mut n, Some(cur), in_use)?;
                    }
                    managed_fields::record_update(Some(cur), &mut n, &writer.manager(sub.unwrap_or_default()));
                    warnings = w;
                    Ok(n)
                })
                .await?;
            let out = maybe_finish_namespace(app, res, &out).await?;
            Ok(json_response(StatusCode::OK, &render_one(&out), &warnings))
        }
        (Method::PATCH, true, None | Some("status") | Some("approval")) => {
            let name = name_of(&r)?.to_string();
            let opts = write_options(&q)?;
            let content_type = content_type(headers);
            if content_type.starts_with("application/apply-patch") {
                return server_side_apply(app, res, ns, &name, sub, &q, &writer, &body).await;
            }
            let mut warnings = Vec::new();
            let (_guard, in_use) = service_allocations(objects, res, sub, ns, &name).await?;
            let out = objects
                .mutate(res, ns, &name, None, opts.dry_run, |cur| {
                    let patched = apply_patch(&content_type, cur, &body)?;
                    // A resourceVersion in the patch is a precondition.
                    if let Some(rv) = patched.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                        && rv != cur.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default() {
                            return Err(ApiError::conflict(res, &name, "the object has been modified; please apply your changes to the latest version and try again"));
                        }
                    let (mut n, w) = objects.prepare_update(res, sub, cur, patched, opts.field_validation)?;
                    if let Some(in_use) = &in_use {
                        objects.allocate_service(&mut n, Some(cur), in_use)?;
                    }
                    managed_fields::record_update(Some(cur), &mut n, &writer.manager(sub.unwrap_or_default()));
                    warnings = w;
                    Ok(n)
                })
                .await?;
            let out = maybe_finish_namespace(app, res, &out).await?;
            Ok(json_response(StatusCode::OK, &render_one(&out), &warnings))
        }
        (Method::DELETE, true, None) => {
            let opts = delete_options(&q, &body)?;
            let out = objects.delete(res, ns, name_of(&r)?, &opts).await?;
            Ok(json_response(StatusCode::OK, &out, &[]))
        }
        (Method::DELETE, false, None) => {
            let opts = delete_options(&q, &body)?;
            let sel = Selectors::from_query(&q)?;
            let listed = list::list(objects, res, ns, &HashMap::new(), &sel).await?;
            let mut deleted = Vec::new();
            for obj in &listed.items {
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let ons = obj.pointer("/metadata/namespace").and_then(Value::as_str);
                match objects.delete(res, ons, name, &opts).await {
                    Ok(o) => deleted.push(o),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let body =
                json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {}, "items": deleted});
            Ok(json_response(StatusCode::OK, &body, &[]))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// The request body as JSON bytes: client-go's typed clients send protobuf
/// (`application/vnd.kubernetes.protobuf`), which is decoded; anything else is
/// passed through. An undecodable body is 400, a kind without a protobuf
/// definition 415.
pub fn json_body(headers: &HeaderMap, body: bytes::Bytes) -> Result<bytes::Bytes, ApiError> {
    if body.is_empty() || !content_type(headers).starts_with(crate::proto::MEDIA_TYPE) {
        return Ok(body);
    }
    let obj = crate::proto::decode(&body).map_err(|e| match e {
        crate::proto::ProtoError::UnknownKind { .. } => ApiError::unsupported_media_type(e.to_string()),
        other => ApiError::bad_request(other.to_string()),
    })?;
    Ok(bytes::Bytes::from(
        serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

fn rv_of(obj: &Value) -> Result<Option<i64>, ApiError> {
    match obj.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}

/// Applies a JSON patch, JSON merge patch or strategic merge patch.
pub(crate) fn apply_patch(content_type: &str, cur: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let p = parse_json(body)?;
    match content_type {
        "application/json-patch+json" => {
            let ops: json_patch::Patch =
                serde_json::from_value(p).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut doc = cur.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: e.to_string(),
                details: None,
            })?;
            Ok(doc)
        }
        "application/merge-patch+json" => {
            let mut doc = cur.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        "application/strategic-merge-patch+json" => {
            patch::strategic_merge(cur, &p).map_err(|e| ApiError::bad_request(e.to_string()))
        }
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
        ))),
    }
}

/// The `autoscaling/v1` `Scale` of a Deployment, ReplicaSet, StatefulSet or
/// ReplicationController (whose `spec.selector` is a plain label map).
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| {
            if obj["kind"] == "ReplicationController" {
                s.as_object()
            } else {
                s.get("matchLabels").and_then(Value::as_object)
            }
        })
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

/// `DeleteOptions` from the query and a JSON body (fields of the body are used
/// where the query has none); 400 for an unsupported propagationPolicy.
pub(crate) fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_json(body)?
    };
    let grace = q
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse::<i64>().ok())
        .or_else(|| b.get("gracePeriodSeconds").and_then(Value::as_i64));
    let propagation = q
        .get("propagationPolicy")
        .cloned()
        .or_else(|| b.get("propagationPolicy").and_then(Value::as_str).map(String::from));
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {p:?}"
        )));
    }
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All")
        || b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        grace_period_seconds: grace,
        propagation,
        orphan_dependents: q
            .get("orphanDependents")
            .map(|v| v == "true")
            .or_else(|| b.get("orphanDependents").and_then(Value::as_bool)),
        precondition_uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        precondition_rv: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run,
    })
}

/// `POST pods/{name}/binding`: assigns the pod to the target node (409 if already bound).
async fn bind(
    app: &App,
    ns: &str,
    name: &str,
    binding: &Value,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let pods = registry::lookup("", "v1", "pods").expect("pods are served");
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            pods,
            name,
            &[skiff_api::validation::FieldError {
                reason: "FieldValueRequired",
                field: "target.name".into(),
                message: "Required value".into(),
            }],
        ));
    }
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(String::from);
    app.objects
        .mutate(pods, Some(ns), name, None, dry_run, |cur| {
            if let Some(uid) = &uid
                && cur.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                    return Err(ApiError::conflict(pods, name, "the UID in the binding does not match the pod"));
                }
            if cur.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                return Err(ApiError::conflict(pods, name, "pod is being deleted, cannot be assigned to a host"));
            }
            if let Some(existing) = cur.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict(pods, name, &format!("pod {name} is already assigned to node \"{existing}\"")));
            }
            let mut next = cur.clone();
            next["spec"]["nodeName"] = json!(node);
            let mut conds: Vec<Value> = next.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
            next["status"]["conditions"] = Value::Array(conds);
            Ok(next)
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &success(201), &[]))
}

/// A namespace whose finalizers are all gone while terminating is removed.
async fn maybe_finish_namespace(app: &App, res: &registry::ResourceInfo, obj: &Value) -> Result<Value, ApiError> {
    if res.kind != "Namespace" || obj.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) {
        return Ok(obj.clone());
    }
    let spec_empty = obj
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    let meta_empty = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if spec_empty && meta_empty {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok());
        match app.objects.store().delete(&res.key(None, name), rv).await {
            Ok(_) | Err(skiff_store::Error::NotFound(_)) => {}
            Err(skiff_store::Error::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(obj.clone())
}
