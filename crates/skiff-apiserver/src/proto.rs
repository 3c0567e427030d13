//! Decoding of Kubernetes protobuf request bodies
//! (`Content-Type: application/vnd.kubernetes.protobuf`) into the JSON objects the
//! rest of the apiserver works on.
//!
//! client-go's typed clientsets (and so `kubectl create`, `kubectl run`,
//! `kubectl expose` since v1.32) send protobuf. The wire format is the one the
//! upstream API concepts page documents: the four magic bytes `k8s\0`, then a
//! `runtime.Unknown` message with `typeMeta` (1: `apiVersion`, 2: `kind`), `raw` (the
//! object's own message), `contentEncoding` and `contentType`. The object's message
//! is decoded by reflection over the API's `.proto` definitions (compiled by
//! `build.rs`) and transcoded to the JSON shape upstream's JSON serializer would
//! have produced for the same object: proto field names are the JSON names; the
//! apimachinery types with a custom JSON form (Time, MicroTime, Duration,
//! IntOrString, Quantity, FieldsV1, RawExtension, apiextensions JSON and the
//! JSONSchemaProps unions) get that form; `bytes` become base64 strings.
//!
//! Empty strings are dropped, as Go's decoder makes them indistinguishable from
//! absent fields and defaulting treats them as unset; numbers and booleans are kept
//! because pointer fields (e.g. `replicas: 0`, `allowPrivilegeEscalation: false`)
//! carry meaning in their zero values.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use protobuf::Message;
use protobuf::reflect::{FileDescriptor, MessageDescriptor, ReflectFieldRef, ReflectValueRef};
use serde_json::{Map, Value, json};

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a protobuf body could not be decoded; each maps to 400 BadRequest (or 415
/// for a kind without a protobuf definition).
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The body lacks the `k8s\0` prefix.
    #[error("the protobuf body does not start with the Kubernetes magic prefix \"k8s\\x00\"")]
    NoMagic,
    /// The `runtime.Unknown` envelope or the object message is malformed.
    #[error("unable to decode the protobuf body: {0}")]
    Malformed(String),
    /// No protobuf message is defined for the envelope's apiVersion and kind.
    #[error("no protobuf serialization is known for kind {kind:?} in version {api_version:?}")]
    UnknownKind {
        /// The envelope's `typeMeta.apiVersion`.
        api_version: String,
        /// The envelope's `typeMeta.kind`.
        kind: String,
    },
}

/// Top-level messages of the compiled API definitions, by message name.
struct Registry {
    by_name: HashMap<String, Vec<MessageDescriptor>>,
    unknown: MessageDescriptor,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/k8s-descriptors.bin"));
        let set = protobuf::descriptor::FileDescriptorSet::parse_from_bytes(bytes)
            .expect("the embedded descriptor set was written by build.rs");
        let files =
            FileDescriptor::new_dynamic_fds(set.file, &[]).expect("the embedded descriptor set is self-contained");
        let mut by_name: HashMap<String, Vec<MessageDescriptor>> = HashMap::new();
        for file in &files {
            for m in file.messages() {
                by_name.entry(m.name().to_string()).or_default().push(m);
            }
        }
        let unknown = by_name
            .get("Unknown")
            .and_then(|v| {
                v.iter()
                    .find(|m| m.full_name().ends_with("pkg.runtime.Unknown"))
                    .cloned()
            })
            .expect("runtime.Unknown is defined");
        Registry { by_name, unknown }
    })
}

/// The proto package suffix (`<group's first label>.<version>`) holding the types
/// of `api_version`: `apps/v1` -> `apps.v1`, `v1` -> `core.v1`,
/// `rbac.authorization.k8s.io/v1` -> `rbac.v1`.
fn package_suffix(api_version: &str) -> String {
    match api_version.split_once('/') {
        None => format!("core.{api_version}"),
        Some((group, version)) => format!("{}.{version}", group.split('.').next().unwrap_or(group)),
    }
}

pub(crate) fn message_for(api_version: &str, kind: &str) -> Result<MessageDescriptor, ProtoError> {
    let candidates = registry().by_name.get(kind);
    let package_of = |m: &MessageDescriptor| {
        m.full_name()
            .strip_suffix(&format!(".{kind}"))
            .unwrap_or_default()
            .to_string()
    };
    let suffix = format!(".{}", package_suffix(api_version));
    let found = candidates.and_then(|c| {
        c.iter()
            .find(|m| package_of(m).ends_with(&suffix))
            // Options types (DeleteOptions, ...) live in meta/v1 whatever the group.
            .or_else(|| c.iter().find(|m| package_of(m).ends_with("apis.meta.v1")))
            .cloned()
    });
    found.ok_or_else(|| ProtoError::UnknownKind {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    })
}

/// Decodes a complete protobuf body (magic + `runtime.Unknown` envelope) into a JSON
/// object carrying `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or(ProtoError::NoMagic)?;
    let reg = registry();
    let envelope = reg
        .unknown
        .parse_from_bytes(rest)
        .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let envelope = message_to_json(&*envelope);
    let api_version = envelope
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = envelope
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if envelope.get("contentEncoding").is_some() {
        return Err(ProtoError::Malformed("content encodings are not supported".into()));
    }
    let raw = match envelope.get("raw").and_then(Value::as_str) {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| ProtoError::Malformed(e.to_string()))?,
        None => Vec::new(),
    };
    let mut obj = match envelope.get("contentType").and_then(Value::as_str) {
        Some(ct) if ct.contains("json") => {
            serde_json::from_slice(&raw).map_err(|e| ProtoError::Malformed(e.to_string()))?
        }
        _ => {
            let md = message_for(&api_version, &kind)?;
            let msg = md
                .parse_from_bytes(&raw)
                .map_err(|e| ProtoError::Malformed(format!("{kind}: {e}")))?;
            message_to_json(&*msg)
        }
    };
    if let Some(m) = obj.as_object_mut() {
        if !api_version.is_empty() {
            m.insert("apiVersion".into(), json!(api_version));
        }
        if !kind.is_empty() {
            m.insert("kind".into(), json!(kind));
        }
    }
    Ok(obj)
}

fn message_to_json(msg: &dyn protobuf::MessageDyn) -> Value {
    let md = msg.descriptor_dyn();
    if let Some(special) = special_form(&md, msg) {
        return special;
    }
    let mut out = Map::new();
    for field in md.fields() {
        let value = match field.get_reflect(msg) {
            ReflectFieldRef::Optional(o) => match o.value() {
                Some(v) => value_to_json(v),
                None => None,
            },
            ReflectFieldRef::Repeated(r) => {
                if r.is_empty() {
                    None
                } else {
                    Some(Value::Array((0..r.len()).map(|i| element_to_json(r.get(i))).collect()))
                }
            }
            ReflectFieldRef::Map(m) => {
                if m.is_empty() {
                    None
                } else {
                    let mut obj = Map::new();
                    for (k, v) in &m {
                        let key = match k {
                            ReflectValueRef::String(s) => s.to_string(),
                            other => other.to_string(),
                        };
                        obj.insert(key, element_to_json(v));
                    }
                    Some(Value::Object(obj))
                }
            }
        };
        match value {
            Some(Value::Object(inner)) if is_inline(&field) => out.extend(inner),
            Some(v) => {
                out.insert(field.name().to_string(), v);
            }
            None => {}
        }
    }
    Value::Object(out)
}

/// Go structs embedded with `json:",inline"`: their proto form is a nested message
/// field, their JSON form has the nested fields in the parent object.
pub(crate) fn is_inline(field: &protobuf::reflect::FieldDescriptor) -> bool {
    const INLINE: &[&str] = &[
        "LocalObjectReference",
        "VolumeSource",
        "PersistentVolumeSource",
        "EphemeralContainerCommon",
        "IngressRuleValue",
        "RuleWithOperations",
        "Rule",
        "DeviceConfiguration",
    ];
    let protobuf::reflect::RuntimeFieldType::Singular(protobuf::reflect::RuntimeType::Message(m)) =
        field.runtime_field_type()
    else {
        return false;
    };
    let ty = m.name();
    if ty == "ProbeHandler" && field.name() == "handler" {
        return true;
    }
    let mut camel = ty.to_string();
    if let Some(first) = camel.get_mut(0..1) {
        first.make_ascii_lowercase();
    }
    INLINE.contains(&ty) && field.name() == camel
}

/// A list element or map value as JSON: unlike fields, empty strings are values
/// here (e.g. `apiGroups: [""]`).
fn element_to_json(v: ReflectValueRef<'_>) -> Value {
    match v {
        ReflectValueRef::String(s) => json!(s),
        other => value_to_json(other).unwrap_or(Value::Null),
    }
}

/// A field value as JSON; `None` for values Go's JSON encoding would omit (empty
/// strings, zero Times).
fn value_to_json(v: ReflectValueRef<'_>) -> Option<Value> {
    Some(match v {
        ReflectValueRef::U32(n) => json!(n),
        ReflectValueRef::U64(n) => json!(n),
        ReflectValueRef::I32(n) => json!(n),
        ReflectValueRef::I64(n) => json!(n),
        ReflectValueRef::F32(n) => json!(n),
        ReflectValueRef::F64(n) => json!(n),
        ReflectValueRef::Bool(b) => json!(b),
        ReflectValueRef::String("") => return None,
        ReflectValueRef::String(s) => json!(s),
        ReflectValueRef::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ReflectValueRef::Enum(d, n) => match d.value_by_number(n) {
            Some(e) => json!(e.name()),
            None => json!(n),
        },
        ReflectValueRef::Message(m) => {
            let v = message_to_json(&*m);
            if v.is_null() {
                return None;
            }
            v
        }
    })
}

fn field_value<'a>(
    md: &MessageDescriptor,
    msg: &'a dyn protobuf::MessageDyn,
    name: &str,
) -> Option<ReflectValueRef<'a>> {
    match md.field_by_name(name)?.get_reflect(msg) {
        ReflectFieldRef::Optional(o) => o.value(),
        _ => None,
    }
}

fn int_field(md: &MessageDescriptor, msg: &dyn protobuf::MessageDyn, name: &str) -> i64 {
    match field_value(md, msg, name) {
        Some(ReflectValueRef::I64(n)) => n,
        Some(ReflectValueRef::I32(n)) => n.into(),
        _ => 0,
    }
}

fn raw_json(md: &MessageDescriptor, msg: &dyn protobuf::MessageDyn, name: &str) -> Value {
    match field_value(md, msg, name) {
        Some(ReflectValueRef::Bytes(b)) if !b.is_empty() => {
            if b.starts_with(MAGIC) {
                decode(b).unwrap_or(Value::Null)
            } else {
                serde_json::from_slice(b).unwrap_or(Value::Null)
            }
        }
        _ => Value::Null,
    }
}

/// The JSON form of the apimachinery types whose JSON is not their message shape;
/// `None` for ordinary messages. `Some(Value::Null)` means "omit".
fn special_form(md: &MessageDescriptor, msg: &dyn protobuf::MessageDyn) -> Option<Value> {
    let full = md.full_name();
    let name = md.name();
    let in_pkg = |pkg: &str| full.strip_suffix(name).is_some_and(|p| p.ends_with(pkg));
    if in_pkg("apis.meta.v1.") {
        match name {
            "Time" | "MicroTime" => {
                let secs = int_field(md, msg, "seconds");
                let nanos = int_field(md, msg, "nanos");
                if secs == 0 && nanos == 0 {
                    return Some(Value::Null);
                }
                return Some(Value::String(format_time(secs, nanos, name == "MicroTime")));
            }
            "Duration" => return Some(Value::String(go_duration(int_field(md, msg, "duration")))),
            "FieldsV1" => return Some(raw_json(md, msg, "Raw")),
            _ => return None,
        }
    }
    if in_pkg("util.intstr.") && name == "IntOrString" {
        return Some(if int_field(md, msg, "type") == 1 {
            match field_value(md, msg, "strVal") {
                Some(ReflectValueRef::String(s)) => json!(s),
                _ => json!(""),
            }
        } else {
            json!(int_field(md, msg, "intVal"))
        });
    }
    if in_pkg("api.resource.") && name == "Quantity" {
        return Some(match field_value(md, msg, "string") {
            Some(ReflectValueRef::String(s)) if !s.is_empty() => json!(s),
            _ => json!("0"),
        });
    }
    if in_pkg("pkg.runtime.") && name == "RawExtension" {
        return Some(raw_json(md, msg, "raw"));
    }
    if in_pkg("apiextensions.v1.") {
        let sub = |field: &str| match field_value(md, msg, field) {
            Some(ReflectValueRef::Message(m)) => Some(message_to_json(&*m)),
            _ => None,
        };
        let list = |field: &str| -> Vec<Value> {
            match md.field_by_name(field).map(|f| f.get_reflect(msg)) {
                Some(ReflectFieldRef::Repeated(r)) => (0..r.len()).map(|i| element_to_json(r.get(i))).collect(),
                _ => Vec::new(),
            }
        };
        match name {
            "JSON" => return Some(raw_json(md, msg, "raw")),
            "JSONSchemaPropsOrBool" => {
                return Some(sub("schema").unwrap_or_else(|| {
                    json!(matches!(
                        field_value(md, msg, "allows"),
                        Some(ReflectValueRef::Bool(true))
                    ))
                }));
            }
            "JSONSchemaPropsOrArray" => {
                return Some(sub("schema").unwrap_or_else(|| Value::Array(list("jSONSchemas"))));
            }
            "JSONSchemaPropsOrStringArray" => {
                return Some(sub("schema").unwrap_or_else(|| Value::Array(list("property"))));
            }
            _ => return None,
        }
    }
    None
}

/// RFC 3339 in UTC: whole seconds for `metav1.Time`, microseconds for `MicroTime`
/// (the upstream JSON forms).
fn format_time(secs: i64, nanos: i64, micro: bool) -> String {
    let ts = jiff::Timestamp::new(secs, 0).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if micro {
        format!("{base}.{:06}Z", nanos / 1000)
    } else {
        format!("{base}Z")
    }
}

/// Go's `time.Duration.String()` form of `nanos` (`1h2m3.5s`, `300ms`, `0s`), which
/// is how `metav1.Duration` appears in JSON.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |value: u64, unit: u64| -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let s = format!("{whole}.{rest:0digits$}");
        s.trim_end_matches('0').to_string()
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = (n / 60_000_000_000) % 60;
    let seconds = frac(n % 60_000_000_000, 1_000_000_000);
    let mut out = sign.to_string();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a protobuf varint.
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field_bytes(num: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(num << 3 | 2), out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn field_varint(num: u32, n: u64, out: &mut Vec<u8>) {
        varint(u64::from(num << 3), out);
        varint(n, out);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        field_bytes(1, api_version.as_bytes(), &mut type_meta);
        field_bytes(2, kind.as_bytes(), &mut type_meta);
        let mut unknown = Vec::new();
        field_bytes(1, &type_meta, &mut unknown);
        field_bytes(2, raw, &mut unknown);
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        body
    }

    #[test]
    fn a_configmap_decodes_with_metadata_data_and_type_meta() {
        // ConfigMap { metadata(1){name(1), namespace(3), labels(11)}, data(2) map }
        let mut meta = Vec::new();
        field_bytes(1, b"cfg", &mut meta);
        field_bytes(3, b"", &mut meta);
        let mut label = Vec::new();
        field_bytes(1, b"app", &mut label);
        field_bytes(2, b"web", &mut label);
        field_bytes(11, &label, &mut meta);
        // creationTimestamp(8) as a zero Time: omitted.
        field_bytes(8, &[], &mut meta);
        let mut cm = Vec::new();
        field_bytes(1, &meta, &mut cm);
        let mut entry = Vec::new();
        field_bytes(1, b"a", &mut entry);
        field_bytes(2, b"b", &mut entry);
        field_bytes(2, &entry, &mut cm);
        let obj = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cfg", "labels": {"app": "web"}},
                   "data": {"a": "b"}})
        );
    }

    #[test]
    fn special_types_take_their_json_forms() {
        // Deployment { spec(2) { replicas(1)=0, strategy(4){ rollingUpdate(2){ maxUnavailable(1)=IntOrString str "25%" } } } }
        let mut ios = Vec::new();
        field_varint(1, 1, &mut ios);
        field_bytes(3, b"25%", &mut ios);
        let mut ru = Vec::new();
        field_bytes(1, &ios, &mut ru);
        let mut strategy = Vec::new();
        field_bytes(2, &ru, &mut strategy);
        let mut spec = Vec::new();
        field_varint(1, 0, &mut spec);
        field_bytes(4, &strategy, &mut spec);
        let mut d = Vec::new();
        field_bytes(2, &spec, &mut d);
        let obj = decode(&envelope("apps/v1", "Deployment", &d)).unwrap();
        assert_eq!(obj["spec"]["replicas"], json!(0));
        assert_eq!(obj["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], json!("25%"));
    }

    #[test]
    fn secrets_bytes_become_base64_and_times_rfc3339() {
        let mut meta = Vec::new();
        field_bytes(1, b"s", &mut meta);
        let mut time = Vec::new();
        field_varint(1, 1_700_000_000, &mut time);
        field_bytes(8, &time, &mut meta);
        let mut secret = Vec::new();
        field_bytes(1, &meta, &mut secret);
        let mut entry = Vec::new();
        field_bytes(1, b"k", &mut entry);
        field_bytes(2, b"hello", &mut entry);
        field_bytes(2, &entry, &mut secret);
        let obj = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(obj["data"]["k"], json!("aGVsbG8="));
        assert_eq!(obj["metadata"]["creationTimestamp"], json!("2023-11-14T22:13:20Z"));
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert!(matches!(decode(b"{}"), Err(ProtoError::NoMagic)));
        assert!(matches!(decode(b"k8s\0\xff\xff\xff"), Err(ProtoError::Malformed(_))));
        assert!(matches!(
            decode(&envelope("example.com/v1", "Widget", &[])),
            Err(ProtoError::UnknownKind { .. })
        ));
        assert!(decode(&envelope("v1", "ConfigMap", b"\x0a\xff")).is_err());
    }

    #[test]
    fn kinds_resolve_to_their_group_packages() {
        assert!(message_for("rbac.authorization.k8s.io/v1", "ClusterRole").is_ok());
        assert!(message_for("autoscaling/v2", "HorizontalPodAutoscaler").is_ok());
        assert!(message_for("apiextensions.k8s.io/v1", "CustomResourceDefinition").is_ok());
        assert!(message_for("v1", "DeleteOptions").is_ok());
        let pod = message_for("v1", "Pod").unwrap();
        assert!(pod.full_name().ends_with("core.v1.Pod"));
    }

    #[test]
    fn inline_structs_merge_into_their_parent_and_list_elements_keep_empty_strings() {
        // ConfigMapKeySelector { localObjectReference(1){name(1)}, key(2), optional(3) }
        let mut lor = Vec::new();
        field_bytes(1, b"settings", &mut lor);
        let mut sel = Vec::new();
        field_bytes(1, &lor, &mut sel);
        field_bytes(2, b"mode", &mut sel);
        field_varint(3, 0, &mut sel);
        let obj = decode(&envelope("v1", "ConfigMapKeySelector", &sel)).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMapKeySelector", "name": "settings", "key": "mode", "optional": false})
        );
        // PolicyRule { verbs(1), apiGroups(2) = [""] }
        let mut rule = Vec::new();
        field_bytes(1, b"get", &mut rule);
        field_bytes(2, b"", &mut rule);
        let obj = decode(&envelope("rbac.authorization.k8s.io/v1", "PolicyRule", &rule)).unwrap();
        assert_eq!(obj["apiGroups"], json!([""]));
        assert_eq!(obj["verbs"], json!(["get"]));
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(60_000_000_000), "1m0s");
        assert_eq!(go_duration(-2_000), "-2µs");
    }
}
