//! `/openapi/v3`: the OpenAPI v3 index and one document per group/version.
//!
//! The documents describe every served path and operation with the
//! `x-kubernetes-group-version-kind` extension and the query parameters the server
//! honours (notably `fieldValidation`, which kubectl checks before relying on
//! server-side field validation). Schemas of the types are not published yet.

use serde_json::{Map, Value, json};
use skiff_api::registry::{self, ResourceInfo};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group/version documents.
pub fn index() -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
    for (g, _) in registry::groups() {
        gvs.extend(registry::versions_of(g).into_iter().map(|v| (g, v)));
    }
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
    }
    json!({"paths": paths})
}

fn query_params(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect()
}

fn op(res: &ResourceInfo, action: &str, params: &[&str], patch: bool) -> Value {
    let mut o = json!({
        "operationId": format!("{action}{}", res.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": res.kind},
        "parameters": query_params(params),
        "responses": {"200": {"description": "OK"}},
    });
    if patch {
        o["requestBody"] = json!({"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
        }});
    }
    o
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`.
pub fn document(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut any = false;
    for res in registry::resources_of(group, version) {
        any = true;
        let base = format!("/{}", gv_path(group, version));
        let collection = if res.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", res.plural)
        } else {
            format!("{base}/{}", res.plural)
        };
        let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
        let mut coll = Map::new();
        coll.insert(
            "get".into(),
            op(
                res,
                "list",
                &[
                    "labelSelector",
                    "fieldSelector",
                    "limit",
                    "continue",
                    "resourceVersion",
                    "watch",
                ],
                false,
            ),
        );
        coll.insert("post".into(), op(res, "post", &write, false));
        paths.insert(collection.clone(), Value::Object(coll));
        if res.verbs.contains(&"get") {
            let mut item = Map::new();
            item.insert("get".into(), op(res, "get", &["pretty"], false));
            item.insert("put".into(), op(res, "put", &write, false));
            item.insert(
                "patch".into(),
                op(
                    res,
                    "patch",
                    &["dryRun", "fieldManager", "fieldValidation", "force", "pretty"],
                    true,
                ),
            );
            item.insert(
                "delete".into(),
                op(
                    res,
                    "delete",
                    &["dryRun", "gracePeriodSeconds", "propagationPolicy"],
                    false,
                ),
            );
            paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
        }
    }
    any.then(|| {
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBE_MINOR)},
            "paths": paths,
            "components": {"schemas": {}},
        })
    })
}
