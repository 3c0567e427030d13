//! Decoding and validation of incoming objects.
//!
//! [`decode`] checks an object against its built-in type (the `k8s-openapi` struct of
//! the kind): type errors are `400 BadRequest`, fields the type does not know are
//! reported so the apiserver can honour `fieldValidation=Strict|Warn|Ignore`.
//! [`validate`] applies the upstream validation rules (pkg/apis/*/validation) that
//! the served kinds need; each failure is a [`FieldError`] naming the field path, the
//! apiserver turns a non-empty list into `422 Invalid` with `details.causes`.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::selector::LabelSelector;

/// One validation failure (upstream `field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Cause reason, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: &'static str,
    /// Field path, e.g. `spec.template.spec.containers`.
    pub field: String,
    /// Human message, e.g. `Required value`.
    pub message: String,
}

impl FieldError {
    fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: \"{value}\": {detail}"),
        }
    }

    /// The upstream one-line rendering: `field: message`.
    pub fn render(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// Result of [`decode`].
#[derive(Debug, Default)]
pub struct Decoded {
    /// The object as its built-in type serializes it (unknown fields dropped);
    /// `None` for kinds without a built-in type.
    pub object: Option<Value>,
    /// Paths of fields the type does not define (`.spec.foo`-style, as upstream's
    /// strict decoding errors name them: `unknown field "spec.foo"`).
    pub unknown_fields: Vec<String>,
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(t).map_err(|e| e.to_string())
}

/// Decodes `object` as its built-in type. `Err` is a type error (message for a
/// `400 BadRequest`); kinds without a built-in type are accepted as is.
pub fn decode(group: &str, kind: &str, object: &Value) -> Result<Decoded, String> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core};
    let typed = match (group, kind) {
        ("", "Pod") => roundtrip::<core::Pod>(object)?,
        ("", "Namespace") => roundtrip::<core::Namespace>(object)?,
        ("", "Node") => roundtrip::<core::Node>(object)?,
        ("", "Event") => roundtrip::<core::Event>(object)?,
        ("", "ConfigMap") => roundtrip::<core::ConfigMap>(object)?,
        ("", "Secret") => roundtrip::<core::Secret>(object)?,
        ("", "Service") => roundtrip::<core::Service>(object)?,
        ("", "ServiceAccount") => roundtrip::<core::ServiceAccount>(object)?,
        ("", "Endpoints") => roundtrip::<core::Endpoints>(object)?,
        ("", "Binding") => roundtrip::<core::Binding>(object)?,
        ("apps", "Deployment") => roundtrip::<apps::Deployment>(object)?,
        ("apps", "ReplicaSet") => roundtrip::<apps::ReplicaSet>(object)?,
        ("coordination.k8s.io", "Lease") => roundtrip::<coord::Lease>(object)?,
        ("", "ReplicationController") => roundtrip::<core::ReplicationController>(object)?,
        ("", "PersistentVolume") => roundtrip::<core::PersistentVolume>(object)?,
        ("", "PersistentVolumeClaim") => roundtrip::<core::PersistentVolumeClaim>(object)?,
        ("", "PodTemplate") => roundtrip::<core::PodTemplate>(object)?,
        ("", "ResourceQuota") => roundtrip::<core::ResourceQuota>(object)?,
        ("", "LimitRange") => roundtrip::<core::LimitRange>(object)?,
        ("apps", "StatefulSet") => roundtrip::<apps::StatefulSet>(object)?,
        ("apps", "DaemonSet") => roundtrip::<apps::DaemonSet>(object)?,
        ("apps", "ControllerRevision") => roundtrip::<apps::ControllerRevision>(object)?,
        ("batch", "Job") => roundtrip::<k8s_openapi::api::batch::v1::Job>(object)?,
        ("batch", "CronJob") => roundtrip::<k8s_openapi::api::batch::v1::CronJob>(object)?,
        ("autoscaling", "HorizontalPodAutoscaler") => {
            roundtrip::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(object)?
        }
        ("policy", "PodDisruptionBudget") => roundtrip::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(object)?,
        ("networking.k8s.io", "Ingress") => roundtrip::<k8s_openapi::api::networking::v1::Ingress>(object)?,
        ("networking.k8s.io", "IngressClass") => roundtrip::<k8s_openapi::api::networking::v1::IngressClass>(object)?,
        ("networking.k8s.io", "NetworkPolicy") => roundtrip::<k8s_openapi::api::networking::v1::NetworkPolicy>(object)?,
        ("discovery.k8s.io", "EndpointSlice") => roundtrip::<k8s_openapi::api::discovery::v1::EndpointSlice>(object)?,
        ("rbac.authorization.k8s.io", "Role") => roundtrip::<k8s_openapi::api::rbac::v1::Role>(object)?,
        ("rbac.authorization.k8s.io", "RoleBinding") => roundtrip::<k8s_openapi::api::rbac::v1::RoleBinding>(object)?,
        ("rbac.authorization.k8s.io", "ClusterRole") => roundtrip::<k8s_openapi::api::rbac::v1::ClusterRole>(object)?,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            roundtrip::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(object)?
        }
        ("storage.k8s.io", "StorageClass") => roundtrip::<k8s_openapi::api::storage::v1::StorageClass>(object)?,
        ("scheduling.k8s.io", "PriorityClass") => roundtrip::<k8s_openapi::api::scheduling::v1::PriorityClass>(object)?,
        ("node.k8s.io", "RuntimeClass") => roundtrip::<k8s_openapi::api::node::v1::RuntimeClass>(object)?,
        _ => return Ok(Decoded::default()),
    };
    let mut unknown = Vec::new();
    diff_unknown(object, &typed, &mut String::new(), &mut unknown);
    Ok(Decoded {
        object: Some(typed),
        unknown_fields: unknown,
    })
}

/// Collects paths present (non-null) in `input` but absent from `typed`.
fn diff_unknown(input: &Value, typed: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match t.get(k) {
                    Some(tv) => diff_unknown(v, tv, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{n}]"));
                diff_unknown(iv, tv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Whether `s` is a DNS-1123 subdomain (upstream `IsDNS1123Subdomain`): at most 253
/// characters of lower-case alphanumerics, `-` and `.`, starting and ending alphanumeric.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Whether `s` is a DNS-1123 label (upstream `IsDNS1123Label`): at most 63 characters
/// of lower-case alphanumerics and `-`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns1123_subdomain(s)
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Why `name` cannot be a path segment (`.`, `..`, or containing `/` or `%`), if
/// it cannot: the rule upstream applies to names of RBAC objects.
pub fn path_segment_name_problem(name: &str) -> Option<&'static str> {
    match name {
        "." => Some("may not be '.'"),
        ".." => Some("may not be '..'"),
        _ if name.contains('/') => Some("may not contain '/'"),
        _ if name.contains('%') => Some("may not contain '%'"),
        _ => None,
    }
}

/// Validates an object about to be stored. `name` is the final `metadata.name`.
pub fn validate(group: &str, kind: &str, object: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name"));
    } else if group == "rbac.authorization.k8s.io" {
        // RBAC objects only need names usable as a path segment, so that
        // `system:`-prefixed names work (upstream's ValidatePathSegmentName).
        if let Some(problem) = path_segment_name_problem(name) {
            errs.push(FieldError::invalid("metadata.name", name, problem));
        }
    } else {
        let label_only = matches!(kind, "Namespace" | "Service");
        let ok = if label_only {
            is_dns1123_label(name)
        } else {
            is_dns1123_subdomain(name)
        };
        if !ok {
            errs.push(FieldError::invalid(
                "metadata.name",
                name,
                if label_only { LABEL_MSG } else { SUBDOMAIN_MSG },
            ));
        }
    }
    match (group, kind) {
        ("", "Pod") => pod_spec(object.get("spec"), "spec", &mut errs),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => workload(object, &mut errs),
        ("batch", "Job") => pod_spec(object.pointer("/spec/template/spec"), "spec.template.spec", &mut errs),
        ("batch", "CronJob") => pod_spec(
            object.pointer("/spec/jobTemplate/spec/template/spec"),
            "spec.jobTemplate.spec.template.spec",
            &mut errs,
        ),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => errs.extend(crate::crd::validate(object)),
        ("scheduling.k8s.io", "PriorityClass") => priority_class(object, &mut errs),
        _ => {}
    }
    errs
}

/// Highest `value` of a PriorityClass users may create (upstream
/// `HighestUserDefinablePriority`, one billion); larger values are for the system classes.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;

/// The PriorityClasses the apiserver creates at start (upstream
/// `SystemPriorityClasses`): name, value, description. Names with the `system-` prefix
/// are reserved for them.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i32, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

fn forbidden(field: &str, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: format!("Forbidden: {detail}"),
    }
}

/// Upstream `ValidatePriorityClass`: `system-` names must be a known system class
/// with its value and `globalDefault: false`; other classes may not exceed
/// [`HIGHEST_USER_DEFINABLE_PRIORITY`]; `preemptionPolicy` is `Never` or
/// `PreemptLowerPriority`.
fn priority_class(object: &Value, errs: &mut Vec<FieldError>) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let value = object.get("value").and_then(Value::as_i64).unwrap_or(0);
    let global_default = object.get("globalDefault").and_then(Value::as_bool).unwrap_or(false);
    if name.starts_with("system-") {
        let problem = match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, ..)| *n == name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some((n, v, _)) if i64::from(*v) != value => Some(format!("value of {n} PriorityClass must be {v}")),
            Some((n, ..)) if global_default => Some(format!("globalDefault of {n} PriorityClass must be false")),
            Some(_) => None,
        };
        if let Some(p) = problem {
            errs.push(forbidden(
                "metadata.name",
                &format!("priority class names with 'system-' prefix are reserved for system use only. error: {p}"),
            ));
        }
    } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
        errs.push(forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
        ));
    }
    if let Some(p) = object.get("preemptionPolicy").and_then(Value::as_str)
        && p != "Never"
        && p != "PreemptLowerPriority"
    {
        errs.push(FieldError {
            reason: "FieldValueNotSupported",
            field: "preemptionPolicy".into(),
            message: format!("Unsupported value: \"{p}\": supported values: \"Never\", \"PreemptLowerPriority\""),
        });
    }
}

/// Validates an update of an object already stored (rules beyond [`validate`] that
/// compare with the old object): a PriorityClass's `value` and `preemptionPolicy`
/// are immutable, as upstream `ValidatePriorityClassUpdate`.
pub fn validate_update(group: &str, kind: &str, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if (group, kind) == ("scheduling.k8s.io", "PriorityClass") {
        if old.get("value") != new.get("value") {
            errs.push(forbidden("value", "may not be changed in an update."));
        }
        if old.get("preemptionPolicy") != new.get("preemptionPolicy") {
            let v = new.get("preemptionPolicy").and_then(Value::as_str).unwrap_or_default();
            errs.push(FieldError::invalid("preemptionPolicy", v, "field is immutable"));
        }
    }
    errs
}

fn workload(object: &Value, errs: &mut Vec<FieldError>) {
    let spec = object.get("spec");
    if let Some(r) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64)
        && r < 0
    {
        errs.push(FieldError::invalid(
            "spec.replicas",
            &r.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    let selector = spec.and_then(|s| s.get("selector"));
    match selector {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.selector")),
        Some(sel) => match LabelSelector::from_label_selector_json(sel) {
            Err(e) => errs.push(FieldError::invalid("spec.selector", "", &e.to_string())),
            Ok(s) if s.is_empty() => errs.push(FieldError::invalid(
                "spec.selector",
                "",
                "empty selector is invalid for deployment",
            )),
            Ok(s) => {
                let tmpl = spec.and_then(|s| s.get("template")).cloned().unwrap_or(Value::Null);
                if !s.matches_object(&tmpl) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        &tmpl
                            .pointer("/metadata/labels")
                            .map(|l| l.to_string())
                            .unwrap_or_default(),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    pod_spec(object.pointer("/spec/template/spec"), "spec.template.spec", errs);
}

fn pod_spec(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    match containers {
        None => errs.push(FieldError::required(format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => errs.push(FieldError::required(format!("{path}.containers"))),
        Some(cs) => {
            let mut seen = Vec::new();
            for (i, c) in cs.iter().enumerate() {
                let p = format!("{path}.containers[{i}]");
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    errs.push(FieldError::required(format!("{p}.name")));
                } else if !is_dns1123_label(name) {
                    errs.push(FieldError::invalid(format!("{p}.name"), name, LABEL_MSG));
                } else if seen.contains(&name) {
                    errs.push(FieldError {
                        reason: "FieldValueDuplicate",
                        field: format!("{p}.name"),
                        message: format!("Duplicate value: \"{name}\""),
                    });
                } else {
                    seen.push(name);
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s.trim().is_empty())
                {
                    errs.push(FieldError::required(format!("{p}.image")));
                }
            }
        }
    }
    if let Some(rp) = spec.and_then(|s| s.get("restartPolicy")).and_then(Value::as_str)
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        errs.push(FieldError {
            reason: "FieldValueNotSupported",
            field: format!("{path}.restartPolicy"),
            message: format!("Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\""),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn priority_classes_keep_system_names_and_values_reserved() {
        let pc = |name: &str, value: i64| json!({"metadata": {"name": name}, "value": value});
        assert!(validate("scheduling.k8s.io", "PriorityClass", &pc("high", 1_000_000_000)).is_empty());
        assert_eq!(
            validate("scheduling.k8s.io", "PriorityClass", &pc("high", 1_000_000_001))[0].render(),
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        );
        assert!(
            validate(
                "scheduling.k8s.io",
                "PriorityClass",
                &pc("system-node-critical", 2_000_001_000)
            )
            .is_empty()
        );
        assert_eq!(
            validate("scheduling.k8s.io", "PriorityClass", &pc("system-mine", 5))[0].render(),
            "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. \
             error: system-mine is not a known system priority class"
        );
        let mut bad = pc("p", 1);
        bad["preemptionPolicy"] = json!("Sometimes");
        assert_eq!(
            validate("scheduling.k8s.io", "PriorityClass", &bad)[0].render(),
            "preemptionPolicy: Unsupported value: \"Sometimes\": supported values: \"Never\", \"PreemptLowerPriority\""
        );
        let errs = validate_update("scheduling.k8s.io", "PriorityClass", &pc("p", 1), &pc("p", 2));
        assert_eq!(errs[0].render(), "value: Forbidden: may not be changed in an update.");
    }

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}], "nope": true}});
        let d = decode("", "Pod", &pod).unwrap();
        assert_eq!(d.unknown_fields, vec!["spec.containers[0].bogus", "spec.nope"]);
        assert!(decode("", "Pod", &json!({"spec": {"containers": "x"}})).is_err());
    }

    #[test]
    fn missing_containers_name_the_field() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}}});
        let errs = validate("apps", "Deployment", &d);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].render(), "spec.template.spec.containers: Required value");
    }

    #[test]
    fn names_and_selectors() {
        let p = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert_eq!(validate("", "Pod", &p)[0].field, "metadata.name");
        let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            validate("apps", "Deployment", &d)[0].field,
            "spec.template.metadata.labels"
        );
        assert!(is_dns1123_label("web-1") && !is_dns1123_label("a.b") && is_dns1123_subdomain("a.b"));
        assert_eq!(path_segment_name_problem("system:node"), None);
        assert_eq!(path_segment_name_problem("a/b"), Some("may not contain '/'"));
        assert_eq!(path_segment_name_problem(".."), Some("may not be '..'"));
    }
}
