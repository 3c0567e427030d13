//! CustomResourceDefinitions (apiextensions.k8s.io/v1): what a CRD makes the
//! apiserver serve, and the structural-schema handling of custom objects, after
//! upstream's apiextensions-apiserver:
//!
//! - [`register`] turns a CRD into one served resource per `served` version (names,
//!   scope, short names, categories, `status`/`scale` subresources) and remembers
//!   each version's `openAPIV3Schema` and `additionalPrinterColumns`.
//! - [`process`] applies a version's schema to an incoming object the way upstream's
//!   structural schema does: `default`s are filled in, fields the schema does not
//!   declare are pruned (reported so `fieldValidation=Strict` can reject them) unless
//!   `x-kubernetes-preserve-unknown-fields`, nulls of non-nullable fields are dropped,
//!   and types, `required`, `enum`, bounds and patterns are validated with upstream's
//!   messages.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::{Map, Value};

use crate::registry::{self, ResourceInfo};
use crate::validation::FieldError;

/// A printer column of `kubectl get` (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, ...).
    pub type_: String,
    /// Simple JSONPath into the object, e.g. `.spec.replicas`.
    pub json_path: String,
    /// Priority (0 is shown by default; others with `-o wide`).
    pub priority: i64,
}

/// What one served version of a CRD needs beyond its [`ResourceInfo`].
#[derive(Debug, Clone, Default)]
pub struct VersionInfo {
    /// `openAPIV3Schema`, if any.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<PrinterColumn>,
}

/// Served versions by (group, version, kind).
type VersionMap = HashMap<(String, String, String), VersionInfo>;

static VERSIONS: RwLock<Option<VersionMap>> = RwLock::new(None);

/// Schema and columns of a custom resource version (group, version, kind).
pub fn version_info(group: &str, version: &str, kind: &str) -> Option<VersionInfo> {
    let map = VERSIONS.read().unwrap_or_else(|e| e.into_inner());
    map.as_ref()?
        .get(&(group.to_string(), version.to_string(), kind.to_string()))
        .cloned()
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

/// Starts serving `crd` (an apiextensions.k8s.io/v1 CustomResourceDefinition as
/// JSON), replacing what an earlier version of it registered. Errors describe
/// what is missing (the object is validated before it is stored, so this only
/// fails for objects written behind the apiserver's back).
pub fn register(crd: &Value) -> Result<(), String> {
    let spec = crd.get("spec").ok_or("spec is missing")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("spec.group is missing")?;
    let names = spec.get("names").ok_or("spec.names is missing")?;
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .ok_or("spec.names.plural is missing")?;
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("spec.names.kind is missing")?;
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let short = registry::leak_list(&strs(names.get("shortNames")));
    let categories = registry::leak_list(&strs(names.get("categories")));
    let mut infos = Vec::new();
    let mut versions = Vec::new();
    for v in spec.get("versions").and_then(Value::as_array).into_iter().flatten() {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let Some(name) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        let mut subresources = Vec::new();
        let status = v.pointer("/subresources/status").is_some();
        if status {
            subresources.push("status".to_string());
        }
        // The scale handler reads .spec.replicas and .status.replicas.
        let scale = v.pointer("/subresources/scale");
        if scale.is_some_and(|s| {
            s.get("specReplicasPath").and_then(Value::as_str) == Some(".spec.replicas")
                && s.get("statusReplicasPath").and_then(Value::as_str) == Some(".status.replicas")
        }) {
            subresources.push("scale".to_string());
        }
        infos.push(ResourceInfo {
            group: registry::leak(group),
            version: registry::leak(name),
            kind: registry::leak(kind),
            plural: registry::leak(plural),
            singular: registry::leak(&singular),
            namespaced,
            short_names: short,
            categories,
            verbs: registry::ALL_VERBS,
            subresources: registry::leak_list(&subresources),
            has_status_subresource: status,
            // Custom objects live under /registry/<group>/<plural>/, as upstream stores them.
            storage_resource: registry::leak(&format!("{group}/{plural}")),
        });
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some(PrinterColumn {
                    name: c.get("name")?.as_str()?.to_string(),
                    type_: c.get("type").and_then(Value::as_str).unwrap_or("string").to_string(),
                    json_path: c.get("jsonPath")?.as_str()?.to_string(),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                })
            })
            .collect();
        versions.push((
            name.to_string(),
            VersionInfo {
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                columns,
            },
        ));
    }
    registry::set_custom_resources(group, plural, infos);
    let mut map = VERSIONS.write().unwrap_or_else(|e| e.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    map.retain(|(g, _, k), _| !(g == group && k == kind));
    for (version, info) in versions {
        map.insert((group.to_string(), version, kind.to_string()), info);
    }
    Ok(())
}

/// Upstream's CRD validation rules that Skiff depends on: the name is
/// `<plural>.<group>`, names and scope are given, exactly one version is the
/// storage version, and at least one version is served.
pub fn validate(crd: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (group, plural, kind) = (s("/spec/group"), s("/spec/names/plural"), s("/spec/names/kind"));
    let req = |field: &str| FieldError {
        reason: "FieldValueRequired",
        field: field.to_string(),
        message: "Required value".into(),
    };
    if group.is_empty() {
        errs.push(req("spec.group"));
    }
    if plural.is_empty() {
        errs.push(req("spec.names.plural"));
    }
    if kind.is_empty() {
        errs.push(req("spec.names.kind"));
    }
    let name = s("/metadata/name");
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if !matches!(s("/spec/scope"), "Namespaced" | "Cluster") {
        errs.push(FieldError {
            reason: "FieldValueNotSupported",
            field: "spec.scope".into(),
            message: format!(
                "Unsupported value: \"{}\": supported values: \"Cluster\", \"Namespaced\"",
                s("/spec/scope")
            ),
        });
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(req("spec.versions"));
    } else {
        let storage = versions
            .iter()
            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .count();
        if storage != 1 {
            errs.push(invalid(
                "spec.versions",
                &storage.to_string(),
                "must have exactly one version marked as storage version",
            ));
        }
        if !versions
            .iter()
            .any(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        {
            errs.push(invalid(
                "spec.versions",
                "",
                "must have at least one version marked as served",
            ));
        }
    }
    errs
}

/// Stops serving `crd`.
pub fn unregister(crd: &Value) {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    registry::set_custom_resources(group, plural, Vec::new());
    let mut map = VERSIONS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(map) = map.as_mut() {
        map.retain(|(g, _, k), _| !(g == group && k == kind));
    }
}

/// Result of [`process`].
#[derive(Debug, Default)]
pub struct Processed {
    /// Paths of pruned unknown fields (`.spec.foo`), for `fieldValidation`.
    pub unknown_fields: Vec<String>,
    /// Validation errors (422).
    pub errors: Vec<FieldError>,
}

/// Defaults, prunes and validates `obj` against a version's `openAPIV3Schema`.
/// `apiVersion`, `kind` and `metadata` at the root are left to the generic code.
pub fn process(schema: &Value, obj: &mut Value) -> Processed {
    let mut out = Processed::default();
    let Some(map) = obj.as_object_mut() else {
        out.errors.push(invalid("", "object", "must be an object"));
        return out;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    apply_defaults(schema, map);
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let path = k.clone();
        match props.and_then(|p| p.get(&k)) {
            Some(sub) => {
                let v = map.get_mut(&k).expect("key exists");
                if v.is_null() && !nullable(sub) {
                    map.remove(&k);
                    continue;
                }
                walk(sub, v, &path, &mut out);
            }
            None if preserves_unknown(schema) => {}
            None => {
                map.remove(&k);
                out.unknown_fields.push(format!(".{path}"));
            }
        }
    }
    required(schema, map, "", &mut out);
    out
}

fn nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn apply_defaults(schema: &Value, map: &mut Map<String, Value>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            if !map.contains_key(k)
                && let Some(d) = sub.get("default")
            {
                map.insert(k.clone(), d.clone());
            }
        }
    }
}

fn required(schema: &Value, map: &Map<String, Value>, path: &str, out: &mut Processed) {
    for r in strs(schema.get("required")) {
        if !map.contains_key(&r) {
            let field = if path.is_empty() {
                r.clone()
            } else {
                format!("{path}.{r}")
            };
            out.errors.push(FieldError {
                reason: "FieldValueRequired",
                field,
                message: "Required value".into(),
            });
        }
    }
}

fn invalid(path: &str, value: &str, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!("Invalid value: \"{value}\": {detail}"),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, out: &mut Processed) {
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    let ty = schema.get("type").and_then(Value::as_str);
    let got = type_name(v);
    if int_or_string {
        if !matches!(got, "integer" | "string") {
            out.errors.push(invalid(
                path,
                got,
                &format!("{path} in body must be of type int-or-string: \"{got}\""),
            ));
            return;
        }
    } else if let Some(want) = ty {
        let ok = want == got || (want == "number" && got == "integer");
        if !ok {
            out.errors.push(invalid(
                path,
                got,
                &format!("{path} in body must be of type {want}: \"{got}\""),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(|a| format!("\"{}\"", short(a))).collect();
        out.errors.push(FieldError {
            reason: "FieldValueNotSupported",
            field: path.to_string(),
            message: format!(
                "Unsupported value: \"{}\": supported values: {}",
                short(v),
                list.join(", ")
            ),
        });
    }
    match v {
        Value::Object(map) => {
            if schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true) {
                // apiVersion/kind/metadata of embedded objects are kept as they are.
            }
            apply_defaults(schema, map);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = format!("{path}.{k}");
                let embedded_meta = schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true)
                    && matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                let sub = props.and_then(|p| p.get(&k)).or(additional.filter(|a| a.is_object()));
                match sub {
                    Some(sub) => {
                        let child = map.get_mut(&k).expect("key exists");
                        if child.is_null() && !nullable(sub) {
                            map.remove(&k);
                            continue;
                        }
                        walk(sub, child, &child_path, out);
                    }
                    None if embedded_meta
                        || preserves_unknown(schema)
                        || additional.and_then(Value::as_bool) == Some(true) => {}
                    None => {
                        map.remove(&k);
                        out.unknown_fields.push(format!(".{child_path}"));
                    }
                }
            }
            required(schema, map, path, out);
            bound(
                schema,
                "minProperties",
                "maxProperties",
                map.len(),
                path,
                "properties",
                out,
            );
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
            bound(schema, "minItems", "maxItems", items.len(), path, "items", out);
        }
        Value::String(s) => {
            bound(
                schema,
                "minLength",
                "maxLength",
                s.chars().count(),
                path,
                "characters",
                out,
            );
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => {
                        out.errors
                            .push(invalid(path, s, &format!("{path} in body should match '{p}'")));
                    }
                    _ => {}
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                let excl = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if x < min || (excl && x == min) {
                    let rel = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    out.errors.push(invalid(
                        path,
                        &n.to_string(),
                        &format!("{path} in body should be {rel} {min}"),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                let excl = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if x > max || (excl && x == max) {
                    let rel = if excl { "less than" } else { "less than or equal to" };
                    out.errors.push(invalid(
                        path,
                        &n.to_string(),
                        &format!("{path} in body should be {rel} {max}"),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn bound(schema: &Value, min_key: &str, max_key: &str, n: usize, path: &str, what: &str, out: &mut Processed) {
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64)
        && (n as u64) < min
    {
        out.errors.push(FieldError {
            reason: "FieldValueInvalid",
            field: path.to_string(),
            message: format!("Invalid value: {n}: {path} in body should have at least {min} {what}"),
        });
    }
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64)
        && (n as u64) > max
    {
        out.errors.push(FieldError {
            reason: "FieldValueTooMany",
            field: path.to_string(),
            message: format!("Too many: {n}: must have at most {max} {what}"),
        });
    }
}

/// Evaluates a printer column's simple JSONPath (`.a.b`, `.a[0].b`,
/// `.metadata.labels.app`) on `obj`.
pub fn column_value(obj: &Value, json_path: &str) -> Option<Value> {
    let mut cur = obj;
    let path = json_path.trim_start_matches('{').trim_end_matches('}');
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                        "port": {"x-kubernetes-int-or-string": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        })
    }

    #[test]
    fn defaults_are_applied_and_unknown_fields_pruned() {
        let mut obj = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 3, "extra": 1, "labels": {"a": "b"}, "free": {"anything": {"goes": true}}, "port": "http"},
            "junk": true});
        let p = process(&schema(), &mut obj);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.unknown_fields, vec![".junk".to_string(), ".spec.extra".to_string()]);
        assert_eq!(obj["spec"]["color"], json!("red"));
        assert!(obj["spec"].get("extra").is_none());
        assert_eq!(obj["spec"]["free"]["anything"]["goes"], json!(true));
        assert_eq!(obj["metadata"]["name"], json!("w"));
    }

    #[test]
    fn violations_get_upstream_messages() {
        let mut obj = json!({"spec": {"size": "big", "color": "green", "name": "ABC", "tags": ["a", "b", "c"]}});
        let p = process(&schema(), &mut obj);
        let rendered: Vec<String> = p.errors.iter().map(FieldError::render).collect();
        assert!(
            rendered.contains(
                &"spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
                    .to_string()
            ),
            "{rendered:?}"
        );
        assert!(
            rendered
                .contains(&"spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\"".to_string()),
            "{rendered:?}"
        );
        assert!(
            rendered
                .iter()
                .any(|r| r.starts_with("spec.name: Invalid value: \"ABC\": spec.name in body should match")),
            "{rendered:?}"
        );
        assert!(
            rendered
                .iter()
                .any(|r| r.starts_with("spec.tags: Too many: 3: must have at most 2 items")),
            "{rendered:?}"
        );
        let mut missing = json!({"spec": {}});
        let p = process(&schema(), &mut missing);
        assert_eq!(p.errors[0].render(), "spec.size: Required value");
        let mut small = json!({"spec": {"size": 0}});
        let p = process(&schema(), &mut small);
        assert_eq!(
            p.errors[0].render(),
            "spec.size: Invalid value: \"0\": spec.size in body should be greater than or equal to 1"
        );
    }

    #[test]
    fn crds_register_served_versions_with_their_names() {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gadgets.test.skiff.dev"},
            "spec": {"group": "test.skiff.dev", "scope": "Namespaced",
                     "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
                     "versions": [
                        {"name": "v1", "served": true, "storage": true,
                         "schema": {"openAPIV3Schema": schema()},
                         "subresources": {"status": {}},
                         "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]},
                        {"name": "v0", "served": false, "storage": false}]}
        });
        register(&crd).unwrap();
        let r = registry::lookup("test.skiff.dev", "v1", "gadgets").unwrap();
        assert_eq!(r.kind, "Gadget");
        assert!(r.namespaced && r.has_status_subresource);
        assert_eq!(r.short_names, ["gd"]);
        assert!(registry::is_custom(r));
        assert!(registry::lookup("test.skiff.dev", "v0", "gadgets").is_none());
        let info = version_info("test.skiff.dev", "v1", "Gadget").unwrap();
        assert_eq!(info.columns[0].json_path, ".spec.size");
        unregister(&crd);
        assert!(registry::lookup("test.skiff.dev", "v1", "gadgets").is_none());
    }

    #[test]
    fn printer_column_paths() {
        let obj = json!({"spec": {"items": [{"name": "a"}]}, "metadata": {"labels": {"app": "x"}}});
        assert_eq!(column_value(&obj, ".spec.items[0].name"), Some(json!("a")));
        assert_eq!(column_value(&obj, ".metadata.labels.app"), Some(json!("x")));
        assert_eq!(column_value(&obj, ".spec.missing"), None);
    }
}
