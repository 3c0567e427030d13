//! Storage objects on create: upstream defaulting of PersistentVolumes,
//! PersistentVolumeClaims and StorageClasses, and two admission plugins:
//!
//! - DefaultStorageClass (`plugin/pkg/admission/storage/storageclass/setdefault`):
//!   a claim that names no class (neither `spec.storageClassName` nor the beta
//!   annotation; an explicit `""` means "no class" and is kept) gets the default
//!   StorageClass, the one annotated
//!   `storageclass.kubernetes.io/is-default-class: "true"` (the newest if several).
//! - StorageObjectInUseProtection
//!   (`plugin/pkg/admission/storage/storageobjectinuseprotection`): claims get the
//!   `kubernetes.io/pvc-protection` finalizer and volumes the
//!   `kubernetes.io/pv-protection` finalizer, which the controller manager removes
//!   once no pod uses the claim or the volume is no longer bound.

use std::collections::HashMap;

use serde_json::{Value, json};
use skiff_api::registry;

use crate::list::{Selectors, list};
use crate::objects::Objects;
use crate::status::ApiError;

/// Annotation marking the default StorageClass.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The deprecated annotation naming a claim's class.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// Finalizer on claims.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Finalizer on volumes.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Defaults and admits a storage object being created (`kind` is
/// `PersistentVolumeClaim`, `PersistentVolume` or `StorageClass`; others are left
/// alone). Errors: store errors while looking up the default class.
pub async fn admit(objects: &Objects, kind: &str, obj: &mut Value) -> Result<(), ApiError> {
    match kind {
        "PersistentVolumeClaim" => {
            default_volume_mode(obj);
            obj["status"] = json!({"phase": "Pending"});
            if !names_class(obj)
                && let Some(class) = default_class(objects).await?
            {
                obj["spec"]["storageClassName"] = json!(class);
            }
            add_finalizer(obj, PVC_PROTECTION);
        }
        "PersistentVolume" => {
            default_volume_mode(obj);
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("persistentVolumeReclaimPolicy").or_insert(json!("Retain"));
            }
            obj["status"] = json!({"phase": "Pending", "lastPhaseTransitionTime": crate::objects::now_rfc3339()});
            add_finalizer(obj, PV_PROTECTION);
        }
        "StorageClass" => {
            if let Some(m) = obj.as_object_mut() {
                m.entry("reclaimPolicy").or_insert(json!("Delete"));
                m.entry("volumeBindingMode").or_insert(json!("Immediate"));
            }
        }
        _ => {}
    }
    Ok(())
}

fn default_volume_mode(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("volumeMode").or_insert(json!("Filesystem"));
    }
}

/// Whether a claim names a class (possibly `""`), by field or beta annotation.
pub fn names_class(pvc: &Value) -> bool {
    pvc.pointer("/spec/storageClassName").is_some_and(Value::is_string)
        || pvc
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(ANN_BETA_STORAGE_CLASS))
}

/// Adds `f` to `metadata.finalizers` unless present.
fn add_finalizer(obj: &mut Value, f: &str) {
    let meta = obj
        .as_object_mut()
        .map(|m| m.entry("metadata").or_insert_with(|| json!({})));
    let Some(meta) = meta.and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let arr = list.as_array_mut().expect("an array");
    if !arr.iter().any(|x| x.as_str() == Some(f)) {
        arr.push(json!(f));
    }
}

/// The name of the default class among `classes` (upstream `GetDefaultClass`):
/// of those annotated default, the newest by `creationTimestamp`, then the first
/// by name.
pub fn pick_default(classes: &[Value]) -> Option<String> {
    let name = |c: &Value| {
        c.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let created = |c: &Value| {
        c.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    classes
        .iter()
        .filter(|c| {
            c.pointer(&format!(
                "/metadata/annotations/{}",
                ANN_DEFAULT_CLASS.replace('/', "~1")
            )) == Some(&json!("true"))
        })
        .max_by(|a, b| created(a).cmp(&created(b)).then_with(|| name(b).cmp(&name(a))))
        .map(name)
}

async fn default_class(objects: &Objects) -> Result<Option<String>, ApiError> {
    let res = registry::lookup("storage.k8s.io", "v1", "storageclasses").expect("storageclasses are served");
    let listed = list(objects, res, None, &HashMap::new(), &Selectors::default()).await?;
    Ok(pick_default(&listed.items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_claims_without_a_class_get_the_default() {
        assert!(!names_class(&json!({"spec": {}})));
        assert!(names_class(&json!({"spec": {"storageClassName": ""}})));
        assert!(names_class(
            &json!({"spec": {}, "metadata": {"annotations": {ANN_BETA_STORAGE_CLASS: "x"}}})
        ));
    }

    #[test]
    fn the_newest_default_class_is_picked() {
        let sc = |name: &str, default: &str, t: &str| json!({"metadata": {"name": name, "creationTimestamp": t, "annotations": {ANN_DEFAULT_CLASS: default}}});
        let classes = [
            sc("a", "true", "2025-01-01T00:00:00Z"),
            sc("b", "true", "2025-06-01T00:00:00Z"),
            sc("c", "false", "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(pick_default(&classes).as_deref(), Some("b"));
        assert_eq!(pick_default(&classes[2..]), None);
    }

    #[test]
    fn finalizers_are_added_once() {
        let mut v = json!({"metadata": {"finalizers": [PVC_PROTECTION]}});
        add_finalizer(&mut v, PVC_PROTECTION);
        add_finalizer(&mut v, "other");
        assert_eq!(v["metadata"]["finalizers"], json!([PVC_PROTECTION, "other"]));
    }
}
