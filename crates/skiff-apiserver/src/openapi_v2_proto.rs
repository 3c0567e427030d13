//! The protobuf form of the Swagger 2.0 document
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), the only form
//! client-go's `OpenAPISchema()` requests: kubectl up to v1.28 loads it before
//! `apply` (patch metadata, client-side validation, its `fieldValidation` support
//! check) and fails when it is missing.
//!
//! The message shapes are those of gnostic's `openapi.v2` package (github.com/google/gnostic,
//! `openapiv2`), which kube-openapi's `util/proto` reads. Only the parts Skiff's
//! document uses are encoded: `Document` (swagger, info, paths, definitions),
//! `PathItem` and `Operation` (tags, operationId, produces, consumes, parameters,
//! responses, schemes, vendor extensions), body / query / path parameters,
//! responses and `Schema` (`$ref`, format, description, required,
//! additionalProperties, type, items, properties, vendor extensions). Maps are
//! ordered `Named*` pairs and vendor extension values are carried as YAML text
//! (JSON, which is YAML).

use serde_json::{Map, Value};

/// A protobuf message being written (proto3 wire format).
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut n: u64) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }

    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.varint(u64::from(field << 3 | 2));
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    /// A string field; empty strings are proto3 defaults and are not written.
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn string_of(&mut self, field: u32, v: &Value, key: &str) {
        if let Some(s) = v.get(key).and_then(Value::as_str) {
            self.string(field, s);
        }
    }

    fn strings_of(&mut self, field: u32, v: &Value, key: &str) {
        for s in v.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                self.bytes(field, s.as_bytes());
            }
        }
    }

    fn bool(&mut self, field: u32, b: bool) {
        if b {
            self.varint(u64::from(field << 3));
            self.varint(1);
        }
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    /// `NamedX { name = 1; value = 2; }`.
    fn named(&mut self, field: u32, name: &str, value: Msg) {
        let mut n = Msg::default();
        n.string(1, name);
        n.message(2, value);
        self.message(field, n);
    }

    /// Every `x-` key of `v` as `NamedAny { name, value: Any { yaml = 2 } }`.
    fn vendor_extensions(&mut self, field: u32, v: &Value) {
        for (k, val) in v.as_object().into_iter().flatten() {
            if k.starts_with("x-") {
                let mut any = Msg::default();
                any.string(2, &val.to_string());
                self.named(field, k, any);
            }
        }
    }
}

fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string_of(1, v, "$ref");
    m.string_of(2, v, "format");
    m.string_of(4, v, "description");
    m.strings_of(19, v, "required");
    match v.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Msg::default();
            item.varint(2 << 3);
            item.varint(u64::from(*b));
            m.message(21, item);
        }
        Some(s @ Value::Object(_)) => {
            let mut item = Msg::default();
            item.message(1, schema(s));
            m.message(21, item);
        }
        _ => {}
    }
    if let Some(t) = v.get("type").and_then(Value::as_str) {
        let mut ty = Msg::default();
        ty.string(1, t);
        m.message(22, ty);
    }
    if let Some(items) = v.get("items") {
        let mut it = Msg::default();
        it.message(1, schema(items));
        m.message(23, it);
    }
    if let Some(props) = v.get("properties").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, s) in props {
            p.named(1, name, schema(s));
        }
        m.message(25, p);
    }
    m.vendor_extensions(31, v);
    m
}

fn parameter(p: &Value) -> Msg {
    let in_ = p.get("in").and_then(Value::as_str).unwrap_or_default();
    let mut param = Msg::default();
    if in_ == "body" {
        let mut b = Msg::default();
        b.string_of(1, p, "description");
        b.string_of(2, p, "name");
        b.string(3, in_);
        b.bool(4, p["required"] == true);
        if let Some(s) = p.get("schema") {
            b.message(5, schema(s));
        }
        param.message(1, b);
    } else {
        // Query and path sub-schemas share their first fields; `type` and
        // `uniqueItems` sit at different numbers.
        let (kind_field, type_field, unique_field) = match in_ {
            "path" => (4, 5, 19),
            _ => (3, 6, 20),
        };
        let mut sub = Msg::default();
        sub.bool(1, p["required"] == true);
        sub.string(2, in_);
        sub.string_of(3, p, "description");
        sub.string_of(4, p, "name");
        sub.string_of(type_field, p, "type");
        sub.bool(unique_field, p["uniqueItems"] == true);
        let mut non_body = Msg::default();
        non_body.message(kind_field, sub);
        param.message(2, non_body);
    }
    let mut item = Msg::default();
    item.message(1, param);
    item
}

fn operation(op: &Value) -> Msg {
    let mut m = Msg::default();
    m.strings_of(1, op, "tags");
    m.string_of(3, op, "description");
    m.string_of(5, op, "operationId");
    m.strings_of(6, op, "produces");
    m.strings_of(7, op, "consumes");
    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        m.message(8, parameter(p));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut rs = Msg::default();
        for (code, r) in responses {
            let mut resp = Msg::default();
            resp.string_of(1, r, "description");
            if let Some(s) = r.get("schema") {
                let mut item = Msg::default();
                item.message(1, schema(s));
                resp.message(2, item);
            }
            let mut value = Msg::default();
            value.message(1, resp);
            rs.named(1, code, value);
        }
        m.message(9, rs);
    }
    m.strings_of(10, op, "schemes");
    m.vendor_extensions(13, op);
    m
}

fn path_item(item: &Value) -> Msg {
    let mut m = Msg::default();
    for (method, field) in [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("patch", 8)] {
        if let Some(op) = item.get(method) {
            m.message(field, operation(op));
        }
    }
    for p in item.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        m.message(9, parameter(p));
    }
    m
}

/// Encodes a Swagger 2.0 JSON document (as [`crate::openapi_v2::document`] builds
/// it) as a gnostic `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut m = Msg::default();
    m.string_of(1, doc, "swagger");
    if let Some(info) = doc.get("info") {
        let mut i = Msg::default();
        i.string_of(1, info, "title");
        i.string_of(2, info, "version");
        m.message(2, i);
    }
    let empty = Map::new();
    let mut paths = Msg::default();
    for (p, item) in doc.get("paths").and_then(Value::as_object).unwrap_or(&empty) {
        paths.named(2, p, path_item(item));
    }
    m.message(8, paths);
    let mut defs = Msg::default();
    for (name, s) in doc.get("definitions").and_then(Value::as_object).unwrap_or(&empty) {
        defs.named(1, name, schema(s));
    }
    m.message(9, defs);
    m.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads the length-delimited fields of one message: (field number, payload).
    fn fields(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        fn varint(b: &mut &[u8]) -> u64 {
            let mut n = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                n |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return n;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            match key & 7 {
                0 => {
                    let v = varint(&mut b);
                    out.push(((key >> 3) as u32, v.to_le_bytes().to_vec()));
                }
                2 => {
                    let len = varint(&mut b) as usize;
                    out.push(((key >> 3) as u32, b[..len].to_vec()));
                    b = &b[len..];
                }
                other => panic!("unexpected wire type {other}"),
            }
        }
        out
    }

    fn get(b: &[u8], field: u32) -> Vec<u8> {
        fields(b).into_iter().find(|(f, _)| *f == field).unwrap().1
    }

    #[test]
    fn encodes_definitions_with_refs_and_extensions() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": {},
            "definitions": {"io.k8s.api.apps.v1.Deployment": {
                "type": "object",
                "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"}},
                "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}],
            }},
        });
        let b = encode(&doc);
        assert_eq!(get(&b, 1), b"2.0");
        assert_eq!(get(&get(&b, 2), 2), b"v1.33.0");
        let named = get(&get(&b, 9), 1);
        assert_eq!(get(&named, 1), b"io.k8s.api.apps.v1.Deployment");
        let s = get(&named, 2);
        assert_eq!(get(&get(&s, 22), 1), b"object");
        let prop = get(&get(&s, 25), 1);
        assert_eq!(get(&prop, 1), b"spec");
        assert_eq!(
            get(&get(&prop, 2), 1),
            b"#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let ext = get(&s, 31);
        assert_eq!(get(&ext, 1), b"x-kubernetes-group-version-kind");
        let yaml: Value = serde_json::from_slice(&get(&get(&ext, 2), 2)).unwrap();
        assert_eq!(yaml[0]["kind"], "Deployment");
    }

    #[test]
    fn encodes_query_parameters_of_operations() {
        let doc = json!({"swagger": "2.0", "paths": {"/x": {"patch": {
            "operationId": "patchX",
            "parameters": [{"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true}],
            "x-kubernetes-action": "patch",
        }}}});
        let b = encode(&doc);
        let item = get(&get(&get(&b, 8), 2), 2);
        let op = get(&item, 8);
        assert_eq!(get(&op, 5), b"patchX");
        let query = get(&get(&get(&get(&op, 8), 1), 2), 3);
        assert_eq!(get(&query, 2), b"query");
        assert_eq!(get(&query, 4), b"fieldValidation");
        assert_eq!(get(&query, 6), b"string");
    }
}
