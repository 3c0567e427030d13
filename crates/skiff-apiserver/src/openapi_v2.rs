//! `/openapi/v2`: the Swagger 2.0 document of the whole API, as JSON or protobuf.
//!
//! Built from the resource registry (the same source as `/openapi/v3`): one path
//! per collection, object and subresource, with upstream's operation ids
//! (`listAppsV1NamespacedDeployment`, `patchCoreV1NamespacedPodStatus`, ...), the
//! `x-kubernetes-action` and `x-kubernetes-group-version-kind` extensions, and the
//! query parameters the server honours (kubectl's v2 `fieldValidation` check reads
//! them from the `patch` operations). `definitions` hold the schemas of every kind
//! served and of the types they reference ([`crate::openapi_schema`]), with
//! `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy` where upstream
//! declares them.
//!
//! Served as JSON or, for client-go's `OpenAPISchema()` (kubectl up to v1.28
//! needs it for `apply`), as the gnostic protobuf message
//! ([`crate::openapi_v2_proto`]); other media types get `406 NotAcceptable`.

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};
use skiff_api::registry::{self, ResourceInfo};

use crate::accept;
use crate::discovery;
use crate::openapi_schema::SchemaBuilder;
use crate::status::ApiError;

/// The JSON media type.
pub const JSON: &str = "application/json";

/// The protobuf media type client-go asks for (`openAPIV2mimePb`).
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The spelling of [`PROTOBUF`] without `@`, which upstream also accepts and sends
/// back as the response `Content-Type`: Go's `mime.ParseMediaType`, which client-go
/// applies to every response, rejects the `@`.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The encodings `/openapi/v2` is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Swagger 2.0 JSON.
    Json,
    /// gnostic `openapi.v2.Document` protobuf.
    Protobuf,
}

/// Why `/openapi/v2` cannot answer a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenApiV2Error {
    /// The `Accept` header admits neither JSON nor the protobuf form.
    #[error("only the following media types are accepted: {JSON}, {PROTOBUF} (the request accepts {accept:?})")]
    NotAcceptable {
        /// The request's `Accept` header.
        accept: String,
    },
}

impl From<OpenApiV2Error> for ApiError {
    fn from(e: OpenApiV2Error) -> Self {
        ApiError {
            code: 406,
            reason: "NotAcceptable",
            message: e.to_string(),
            details: None,
        }
    }
}

/// Chooses the encoding from an `Accept` header: the most preferred range that is
/// the protobuf type, `application/json` (without an object kind) or a wildcard
/// (JSON); no header means JSON.
pub fn negotiate(accept: Option<&str>) -> Result<Format, OpenApiV2Error> {
    let Some(a) = accept else { return Ok(Format::Json) };
    accept::ranges(a)
        .iter()
        .find_map(|r| {
            let full = format!("{}/{}", r.kind, r.subtype).to_ascii_lowercase();
            if full == PROTOBUF || full == PROTOBUF_CONTENT_TYPE {
                Some(Format::Protobuf)
            } else if r.is_wildcard() || (r.is("application", "json") && !r.params.contains_key("as")) {
                Some(Format::Json)
            } else {
                None
            }
        })
        .ok_or_else(|| OpenApiV2Error::NotAcceptable { accept: a.to_string() })
}

/// `core`, `apps`, `rbacAuthorization` -> `Core`, `Apps`, `RbacAuthorization`: the
/// group as upstream spells it in operation ids.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "type": ty, "uniqueItems": true, "description": description})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true, "description": description})
}

fn body_param(schema: Value) -> Value {
    json!({"name": "body", "in": "body", "required": true, "schema": schema})
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "allowWatchBookmarks",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
        ),
        query(
            "continue",
            "string",
            "The continue token of the previous page of a paginated list.",
        ),
        query(
            "fieldSelector",
            "string",
            "A selector to restrict the list of returned objects by their fields.",
        ),
        query(
            "labelSelector",
            "string",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        query(
            "limit",
            "integer",
            "The maximum number of objects to return in one page.",
        ),
        query(
            "resourceVersion",
            "string",
            "Which resource versions the request may be served from.",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "How resourceVersion is applied to list calls.",
        ),
        query(
            "sendInitialEvents",
            "boolean",
            "Whether a watch starts with synthetic events for the current state.",
        ),
        query("timeoutSeconds", "integer", "Timeout for the list/watch call."),
        query(
            "watch",
            "boolean",
            "Watch for changes and return them as a stream of events.",
        ),
    ]
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query(
            "dryRun",
            "string",
            "When present (All), the modifications are not persisted.",
        ),
        query("fieldManager", "string", "A name for the actor making the change."),
        query(
            "fieldValidation",
            "string",
            "How to handle unknown or duplicate fields in the object: Ignore, Warn or Strict.",
        ),
    ];
    if patch {
        p.push(query(
            "force",
            "boolean",
            "Force apply requests to take conflicting fields.",
        ));
    }
    p
}

fn delete_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "When present (All), the modifications are not persisted.",
        ),
        query(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object is deleted.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
        ),
    ]
}

/// The pieces every operation of one resource (or subresource) shares.
struct Ctx {
    gvk: Value,
    tag: String,
}

fn operation(ctx: &Ctx, action: &str, id: String, params: Vec<Value>, response: Value, consumes: &[&str]) -> Value {
    let produces: &[&str] = match action {
        "list" => &["application/json", "application/json;stream=watch"],
        _ if id.ends_with("Log") => &["text/plain"],
        _ => &["application/json"],
    };
    let mut responses = Map::new();
    responses.insert("200".into(), json!({"description": "OK", "schema": response}));
    if action == "post" {
        responses.insert("201".into(), json!({"description": "Created", "schema": response}));
        responses.insert("202".into(), json!({"description": "Accepted", "schema": response}));
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    json!({
        "operationId": id,
        "tags": [ctx.tag],
        "consumes": consumes,
        "produces": produces,
        "schemes": ["https"],
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": ctx.gvk,
    })
}

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn add_resource(res: &ResourceInfo, defs: &mut SchemaBuilder, paths: &mut Map<String, Value>) {
    let api_version = res.api_version();
    let Some(kind_def) = defs.add_kind(&api_version, res.kind) else {
        return;
    };
    let kind_ref = defs.reference(&kind_def);
    let list_ref = defs
        .add_kind(&api_version, &res.list_kind())
        .map(|d| defs.reference(&d))
        .unwrap_or_else(|| json!({"type": "object"}));
    let status_def = defs.add_kind("v1", "Status").unwrap_or_default();
    let status_ref = defs.reference(&status_def);
    let patch_ref = defs
        .add_kind("v1", "Patch")
        .map(|d| defs.reference(&d))
        .unwrap_or_else(|| json!({"type": "object"}));
    let delete_options_ref = defs
        .add_kind("v1", "DeleteOptions")
        .map(|d| defs.reference(&d))
        .unwrap_or_else(|| json!({"type": "object"}));

    let prefix = if res.group.is_empty() {
        format!("/api/{}", res.version)
    } else {
        format!("/apis/{}/{}", res.group, res.version)
    };
    let g = group_camel(res.group);
    let v = upper_first(res.version);
    let scope = if res.namespaced { "Namespaced" } else { "" };
    let tag = {
        let mut t = g.clone();
        if let Some(first) = t.get_mut(0..1) {
            first.make_ascii_lowercase();
        }
        format!("{t}_{}", res.version)
    };
    let ctx = Ctx {
        gvk: json!({"group": res.group, "version": res.version, "kind": res.kind}),
        tag,
    };
    let has = |verb: &str| res.verbs.contains(&verb);
    let ns_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name_param = |what: &str| path_param("name", &format!("name of the {what}"));
    let pretty = query("pretty", "string", "If 'true', then the output is pretty printed.");
    let mut common = vec![pretty.clone()];
    if res.namespaced {
        common.insert(0, ns_param.clone());
    }
    let base = if res.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", res.plural)
    } else {
        format!("{prefix}/{}", res.plural)
    };
    let k = res.kind;

    let mut coll = Map::new();
    if has("list") {
        coll.insert(
            "get".into(),
            operation(
                &ctx,
                "list",
                format!("list{g}{v}{scope}{k}"),
                list_params(),
                list_ref.clone(),
                &["*/*"],
            ),
        );
    }
    if has("create") {
        let mut p = vec![body_param(kind_ref.clone())];
        p.extend(write_params(false));
        coll.insert(
            "post".into(),
            operation(
                &ctx,
                "post",
                format!("create{g}{v}{scope}{k}"),
                p,
                kind_ref.clone(),
                &["*/*"],
            ),
        );
    }
    if has("deletecollection") {
        let mut p = vec![body_param(delete_options_ref.clone())];
        p.extend(delete_params());
        p.extend(list_params().into_iter().filter(|q| q["name"] != "watch"));
        coll.insert(
            "delete".into(),
            operation(
                &ctx,
                "deletecollection",
                format!("delete{g}{v}Collection{scope}{k}"),
                p,
                status_ref.clone(),
                &["*/*"],
            ),
        );
    }
    if !coll.is_empty() {
        coll.insert("parameters".into(), json!(common));
        paths.insert(base.clone(), Value::Object(coll));
    }
    if res.namespaced && has("list") {
        let mut all = Map::new();
        all.insert(
            "get".into(),
            operation(
                &ctx,
                "list",
                format!("list{g}{v}{k}ForAllNamespaces"),
                list_params(),
                list_ref,
                &["*/*"],
            ),
        );
        all.insert("parameters".into(), json!([pretty.clone()]));
        paths.insert(format!("{prefix}/{}", res.plural), Value::Object(all));
    }

    let mut item_params = vec![name_param(res.kind)];
    item_params.extend(common.iter().cloned());
    let mut item = Map::new();
    if has("get") {
        item.insert(
            "get".into(),
            operation(
                &ctx,
                "get",
                format!("read{g}{v}{scope}{k}"),
                vec![],
                kind_ref.clone(),
                &["*/*"],
            ),
        );
    }
    if has("update") {
        let mut p = vec![body_param(kind_ref.clone())];
        p.extend(write_params(false));
        item.insert(
            "put".into(),
            operation(
                &ctx,
                "put",
                format!("replace{g}{v}{scope}{k}"),
                p,
                kind_ref.clone(),
                &["*/*"],
            ),
        );
    }
    if has("patch") {
        let mut p = vec![body_param(patch_ref.clone())];
        p.extend(write_params(true));
        item.insert(
            "patch".into(),
            operation(
                &ctx,
                "patch",
                format!("patch{g}{v}{scope}{k}"),
                p,
                kind_ref.clone(),
                PATCH_TYPES,
            ),
        );
    }
    if has("delete") {
        let mut p = vec![body_param(delete_options_ref)];
        p.extend(delete_params());
        item.insert(
            "delete".into(),
            operation(
                &ctx,
                "delete",
                format!("delete{g}{v}{scope}{k}"),
                p,
                status_ref,
                &["*/*"],
            ),
        );
    }
    if !item.is_empty() {
        item.insert("parameters".into(), json!(item_params));
        paths.insert(format!("{base}/{{name}}"), Value::Object(item));
    }

    for sub in res.subresources {
        let info = discovery::subresource(res, sub);
        let sub_api_version = if info.group.is_empty() {
            info.version.to_string()
        } else {
            format!("{}/{}", info.group, info.version)
        };
        let sub_ref = if *sub == "log" {
            json!({"type": "string"})
        } else {
            match defs.add_kind(&sub_api_version, info.kind) {
                Some(d) => defs.reference(&d),
                None => continue,
            }
        };
        let sub_ctx = Ctx {
            gvk: json!({"group": info.group, "version": info.version, "kind": info.kind}),
            tag: ctx.tag.clone(),
        };
        let suffix = upper_first(sub);
        let mut ops = Map::new();
        for verb in info.verbs {
            let (method, action, id_verb, params, consumes): (&str, &str, &str, Vec<Value>, &[&str]) = match *verb {
                "get" if *sub == "log" => (
                    "get",
                    "get",
                    "read",
                    [
                        ("container", "string", "The container for which to stream logs."),
                        ("follow", "boolean", "Follow the log stream of the pod."),
                        (
                            "limitBytes",
                            "integer",
                            "The number of bytes to read before terminating the log output.",
                        ),
                        (
                            "previous",
                            "boolean",
                            "Return the logs of the previous terminated container.",
                        ),
                        (
                            "sinceSeconds",
                            "integer",
                            "Only return logs newer than this many seconds.",
                        ),
                        (
                            "tailLines",
                            "integer",
                            "The number of lines from the end of the logs to show.",
                        ),
                        (
                            "timestamps",
                            "boolean",
                            "Prefix every line of log output with an RFC3339 timestamp.",
                        ),
                    ]
                    .iter()
                    .map(|(n, t, d)| query(n, t, d))
                    .collect(),
                    &["*/*"],
                ),
                "get" => ("get", "get", "read", vec![], &["*/*"]),
                "update" => {
                    let mut p = vec![body_param(sub_ref.clone())];
                    p.extend(write_params(false));
                    ("put", "put", "replace", p, &["*/*"])
                }
                "patch" => {
                    let mut p = vec![body_param(patch_ref.clone())];
                    p.extend(write_params(true));
                    ("patch", "patch", "patch", p, PATCH_TYPES)
                }
                "create" => {
                    let mut p = vec![body_param(sub_ref.clone())];
                    p.extend(write_params(false));
                    ("post", "post", "create", p, &["*/*"])
                }
                _ => continue,
            };
            ops.insert(
                method.into(),
                operation(
                    &sub_ctx,
                    action,
                    format!("{id_verb}{g}{v}{scope}{k}{suffix}"),
                    params,
                    sub_ref.clone(),
                    consumes,
                ),
            );
        }
        if !ops.is_empty() {
            let mut p = vec![path_param("name", &format!("name of the {}", info.kind))];
            p.extend(common.iter().cloned());
            ops.insert("parameters".into(), json!(p));
            paths.insert(format!("{base}/{{name}}/{sub}"), Value::Object(ops));
        }
    }
}

/// Builds the Swagger 2.0 document for every served resource.
pub fn document() -> Value {
    let mut defs = SchemaBuilder::new("#/definitions/");
    let mut paths = Map::new();
    for res in registry::all() {
        add_resource(res, &mut defs, &mut paths);
    }
    for (api_version, kind) in [("v1", "WatchEvent"), ("v1", "APIResourceList"), ("v1", "APIGroupList")] {
        defs.add_kind(api_version, kind);
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", discovery::KUBE_MINOR)},
        "paths": paths,
        "definitions": defs.finish(),
    })
}

struct Rendered {
    json: String,
    protobuf: Vec<u8>,
    etag: String,
}

fn rendered() -> &'static Rendered {
    static DOC: OnceLock<Rendered> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = document();
        let json = doc.to_string();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        json.hash(&mut h);
        Rendered {
            etag: format!("\"{:016X}\"", h.finish()),
            protobuf: crate::openapi_v2_proto::encode(&doc),
            json,
        }
    })
}

/// The HTTP answer for `GET /openapi/v2`: the document in the negotiated encoding
/// with an `ETag` (or `304 Not Modified` for a matching `If-None-Match`), or
/// `406 NotAcceptable` as a `Status`.
pub fn response(request_headers: &HeaderMap) -> Result<Response, ApiError> {
    let format = negotiate(request_headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))?;
    let doc = rendered();
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == doc.etag || t.trim() == "*"));
    let (content_type, body) = match format {
        Format::Json => (JSON, doc.json.clone().into_bytes()),
        Format::Protobuf => (PROTOBUF_CONTENT_TYPE, doc.protobuf.clone()),
    };
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::VARY, "Accept"),
        (header::ETAG, doc.etag.as_str()),
    ];
    Ok(if not_modified {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (StatusCode::OK, headers, body).into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_json_or_protobuf() {
        assert_eq!(negotiate(None), Ok(Format::Json));
        assert_eq!(negotiate(Some("application/json")), Ok(Format::Json));
        assert_eq!(negotiate(Some("*/*")), Ok(Format::Json));
        assert_eq!(negotiate(Some(PROTOBUF)), Ok(Format::Protobuf));
        assert_eq!(
            negotiate(Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")),
            Ok(Format::Protobuf)
        );
        assert_eq!(
            negotiate(Some(&format!("{PROTOBUF};q=0.5, application/json"))),
            Ok(Format::Json)
        );
        let err = negotiate(Some("application/yaml")).unwrap_err();
        let status = ApiError::from(err);
        assert_eq!((status.code, status.reason), (406, "NotAcceptable"));
    }

    #[test]
    fn operation_ids_follow_upstream() {
        assert_eq!(group_camel(""), "Core");
        assert_eq!(group_camel("rbac.authorization.k8s.io"), "RbacAuthorization");
        assert_eq!(group_camel("apps"), "Apps");
    }

    #[test]
    fn document_has_paths_operations_and_definitions() {
        let doc = document();
        assert_eq!(doc["swagger"], "2.0");
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(p["patch"]["operationId"], "patchAppsV1NamespacedDeployment");
        assert_eq!(
            p["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert!(
            p["patch"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == "fieldValidation")
        );
        let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(scale["get"]["operationId"], "readAppsV1NamespacedDeploymentScale");
        assert_eq!(
            scale["get"]["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.autoscaling.v1.Scale"
        );
        assert_eq!(
            doc["paths"]["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        assert_eq!(
            doc["paths"]["/api/v1/nodes/{name}/status"]["put"]["operationId"],
            "replaceCoreV1NodeStatus"
        );
        let defs = &doc["definitions"];
        assert_eq!(
            defs["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        assert!(defs["io.k8s.api.apps.v1.DeploymentList"].is_object());
        assert!(defs["io.k8s.apimachinery.pkg.apis.meta.v1.Status"].is_object());
        // Every reference resolves.
        let text = doc.to_string();
        for piece in text.split("\"#/definitions/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(defs.get(name).is_some(), "dangling reference {name}");
        }
    }
}
