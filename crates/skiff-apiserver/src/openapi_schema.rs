//! OpenAPI schemas of the API types, derived from the upstream `.proto` definitions
//! the apiserver already embeds for protobuf decoding ([`crate::proto`]) and from
//! their doc comments, which keep the Go markers upstream's `openapi-gen` reads
//! (`+patchMergeKey`, `+patchStrategy`, `+listType`, `+listMapKey`, `+mapType`,
//! `+structType`). `required` is not published: upstream derives it from `+optional`
//! together with the Go json tags' `omitempty`, and the `.proto` files carry only the
//! former, so it would mark optional fields (e.g. `PodSpec.initContainers`) as
//! required.
//!
//! Shapes follow upstream's published definitions (api/openapi-spec/swagger.json):
//! definition names are the Go package path reversed into `io.k8s.…`
//! (`io.k8s.api.apps.v1.Deployment`, `io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`);
//! proto field names are the JSON names; `json:",inline"` members are flattened;
//! Time, MicroTime, Duration, Quantity, IntOrString, FieldsV1 and RawExtension have
//! their JSON (not message) form; top-level kinds get `apiVersion`, `kind` and
//! `x-kubernetes-group-version-kind`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::OnceLock;

use protobuf::reflect::{MessageDescriptor, RuntimeFieldType, RuntimeType};
use serde_json::{Map, Value, json};

/// The documentation of one field: description and `+marker` lines.
#[derive(Debug, Clone, Default)]
struct FieldDoc {
    description: String,
    markers: Vec<(String, String)>,
}

#[derive(Default)]
struct Docs {
    messages: HashMap<String, String>,
    fields: HashMap<(String, String), FieldDoc>,
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut d = Docs::default();
        for line in include_str!(concat!(env!("OUT_DIR"), "/k8s-field-docs.tsv")).lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            match cols.as_slice() {
                ["M", msg, desc] => {
                    d.messages.insert((*msg).to_string(), unescape(desc));
                }
                ["F", msg, field, desc, markers] => {
                    let markers = unescape(markers)
                        .split(';')
                        .filter(|m| !m.is_empty())
                        .map(|m| match m.split_once('=') {
                            Some((k, v)) => (k.to_string(), v.to_string()),
                            None => (m.to_string(), String::new()),
                        })
                        .collect();
                    d.fields.insert(
                        ((*msg).to_string(), (*field).to_string()),
                        FieldDoc {
                            description: unescape(desc),
                            markers,
                        },
                    );
                }
                _ => {}
            }
        }
        d
    })
}

/// The upstream definition name of a proto message:
/// `api.apps.v1.Deployment` -> `io.k8s.api.apps.v1.Deployment`,
/// `apiextensions_apiserver.pkg…` -> `io.k8s.apiextensions-apiserver.pkg…`.
pub fn definition_name(proto_full_name: &str) -> String {
    let (first, rest) = proto_full_name.split_once('.').unwrap_or((proto_full_name, ""));
    format!("io.k8s.{}.{rest}", first.replace('_', "-"))
}

/// The JSON form of the apimachinery types that are not serialized as messages.
fn special_schema(full_name: &str) -> Option<Value> {
    Some(match full_name {
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            json!({"type": "string", "format": "date-time"})
        }
        "apimachinery.pkg.apis.meta.v1.Duration" | "apimachinery.pkg.api.resource.Quantity" => {
            json!({"type": "string"})
        }
        "apimachinery.pkg.util.intstr.IntOrString" => json!({"type": "string", "format": "int-or-string"}),
        "apimachinery.pkg.apis.meta.v1.FieldsV1" | "apimachinery.pkg.runtime.RawExtension" => {
            json!({"type": "object"})
        }
        _ => return None,
    })
}

/// Builds OpenAPI schemas for messages and everything they reference.
pub struct SchemaBuilder {
    ref_prefix: &'static str,
    gvks: HashMap<String, Vec<Value>>,
    queue: VecDeque<MessageDescriptor>,
    done: BTreeMap<String, Value>,
}

impl SchemaBuilder {
    /// A builder whose references start with `ref_prefix` (`#/definitions/` for
    /// Swagger 2.0, `#/components/schemas/` for OpenAPI 3).
    pub fn new(ref_prefix: &'static str) -> Self {
        Self {
            ref_prefix,
            gvks: HashMap::new(),
            queue: VecDeque::new(),
            done: BTreeMap::new(),
        }
    }

    /// Adds the definition of `kind` in `api_version` (and what it references),
    /// tagged with `x-kubernetes-group-version-kind`. Returns its definition name,
    /// or `None` when no message defines the kind.
    pub fn add_kind(&mut self, api_version: &str, kind: &str) -> Option<String> {
        let md = crate::proto::message_for(api_version, kind).ok()?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = json!({"group": group, "version": version, "kind": kind});
        let entry = self.gvks.entry(md.full_name().to_string()).or_default();
        if !entry.contains(&gvk) {
            entry.push(gvk);
        }
        let name = definition_name(md.full_name());
        self.queue.push_back(md);
        Some(name)
    }

    /// A `$ref` to a definition.
    pub fn reference(&self, definition: &str) -> Value {
        json!({"$ref": format!("{}{definition}", self.ref_prefix)})
    }

    /// Builds every queued definition and those they reference, keyed by name.
    pub fn finish(mut self) -> Map<String, Value> {
        while let Some(md) = self.queue.pop_front() {
            let name = definition_name(md.full_name());
            if self.done.contains_key(&name) {
                continue;
            }
            let schema = self.message_schema(&md);
            self.done.insert(name, schema);
        }
        // Kinds whose message was built before its group-version-kind was known.
        for (full, gvks) in &self.gvks {
            if let Some(Value::Object(d)) = self.done.get_mut(&definition_name(full)) {
                d.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks.clone()));
            }
        }
        self.done.into_iter().collect()
    }

    fn message_schema(&mut self, md: &MessageDescriptor) -> Value {
        let docs = docs();
        let mut schema = special_schema(md.full_name()).unwrap_or_else(|| {
            let mut properties = Map::new();
            self.collect_fields(md, &mut properties);
            let top_level = md.field_by_name("metadata").is_some_and(|f| {
                matches!(f.runtime_field_type(), RuntimeFieldType::Singular(RuntimeType::Message(m))
                    if matches!(m.name(), "ObjectMeta" | "ListMeta"))
            });
            if top_level {
                properties.insert(
                    "apiVersion".into(),
                    json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object (group/version, or just the version for the core group). See https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
                );
                properties.insert(
                    "kind".into(),
                    json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents, in CamelCase. See https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
                );
            }
            let mut s = json!({"type": "object"});
            if !properties.is_empty() {
                s["properties"] = Value::Object(properties);
            }
            s
        });
        if let Some(desc) = docs.messages.get(md.full_name()).filter(|d| !d.is_empty()) {
            schema["description"] = json!(desc);
        }
        schema
    }

    fn collect_fields(&mut self, md: &MessageDescriptor, properties: &mut Map<String, Value>) {
        let docs = docs();
        for field in md.fields() {
            if crate::proto::is_inline(&field)
                && let RuntimeFieldType::Singular(RuntimeType::Message(inner)) = field.runtime_field_type()
            {
                self.collect_fields(&inner, properties);
                continue;
            }
            let name = field.name().to_string();
            let doc = docs
                .fields
                .get(&(md.full_name().to_string(), name.clone()))
                .cloned()
                .unwrap_or_default();
            let mut s = match field.runtime_field_type() {
                RuntimeFieldType::Singular(t) => self.type_schema(t),
                RuntimeFieldType::Repeated(t) => json!({"type": "array", "items": self.type_schema(t)}),
                RuntimeFieldType::Map(_, v) => json!({"type": "object", "additionalProperties": self.type_schema(v)}),
            };
            if !doc.description.is_empty() {
                s["description"] = json!(doc.description);
            }
            let mut map_keys = Vec::new();
            for (k, v) in &doc.markers {
                match k.as_str() {
                    "patchMergeKey" => s["x-kubernetes-patch-merge-key"] = json!(v),
                    "patchStrategy" => s["x-kubernetes-patch-strategy"] = json!(v),
                    "listType" => s["x-kubernetes-list-type"] = json!(v),
                    "listMapKey" => map_keys.push(v.clone()),
                    "mapType" | "structType" => s["x-kubernetes-map-type"] = json!(v),
                    _ => {}
                }
            }
            if !map_keys.is_empty() {
                s["x-kubernetes-list-map-keys"] = json!(map_keys);
            }
            properties.insert(name, s);
        }
    }

    fn type_schema(&mut self, t: RuntimeType) -> Value {
        match t {
            RuntimeType::I32 | RuntimeType::U32 => json!({"type": "integer", "format": "int32"}),
            RuntimeType::I64 | RuntimeType::U64 => json!({"type": "integer", "format": "int64"}),
            RuntimeType::F32 => json!({"type": "number", "format": "float"}),
            RuntimeType::F64 => json!({"type": "number", "format": "double"}),
            RuntimeType::Bool => json!({"type": "boolean"}),
            RuntimeType::String | RuntimeType::Enum(_) => json!({"type": "string"}),
            RuntimeType::VecU8 => json!({"type": "string", "format": "byte"}),
            RuntimeType::Message(m) => {
                let name = definition_name(m.full_name());
                if !self.done.contains_key(&name) {
                    self.queue.push_back(m);
                }
                self.reference(&name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream() {
        assert_eq!(
            definition_name("api.apps.v1.Deployment"),
            "io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            definition_name("apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON"),
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON"
        );
    }

    #[test]
    fn pod_spec_schema_carries_markers_and_flattens_inline_members() {
        let mut b = SchemaBuilder::new("#/definitions/");
        assert_eq!(b.add_kind("v1", "Pod").as_deref(), Some("io.k8s.api.core.v1.Pod"));
        let defs = b.finish();
        let pod = &defs["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Pod"}])
        );
        assert_eq!(pod["properties"]["kind"]["type"], "string");
        assert_eq!(
            pod["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        let spec = &defs["io.k8s.api.core.v1.PodSpec"];
        let containers = &spec["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(
            containers["items"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        // `required` is left out: `+optional` alone does not decide it (upstream also
        // reads `omitempty` from the Go json tags, which the .proto files lack).
        assert!(spec.get("required").is_none());
        assert!(spec["description"].as_str().unwrap().contains("PodSpec"));
        // VolumeSource is inlined into Volume.
        assert!(defs["io.k8s.api.core.v1.Volume"]["properties"]["configMap"].is_object());
        assert_eq!(defs["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["format"], "date-time");
        assert_eq!(
            defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
            "int-or-string"
        );
        let labels = &defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["labels"];
        assert_eq!(labels["additionalProperties"]["type"], "string");
    }
}
