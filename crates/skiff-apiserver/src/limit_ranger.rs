//! The LimitRanger admission step (upstream `plugin/pkg/admission/limitranger`):
//! new pods get the requests and limits their namespace's LimitRanges default
//! (mutating, before the ServiceAccount step as upstream orders them), then pods
//! and PersistentVolumeClaims are checked against the ranges' `min`, `max` and
//! `maxLimitRequestRatio` (validating, after object validation). The rules
//! themselves are [`skiff_api::limit_range`].
//!
//! Pods are limited on create only (their containers are immutable); claims on
//! create and on updates of their spec. Subresource writes are never limited.

use serde_json::{Value, json};
use skiff_api::limit_range;
use skiff_api::registry::{self, ResourceInfo};

use crate::objects::{Objects, decode};
use crate::status::{ApiError, qualified};

fn limit_ranges_res() -> &'static ResourceInfo {
    registry::lookup("", "v1", "limitranges").expect("limitranges are served")
}

/// The LimitRanges of `ns`, in name order, with their `type: Container` items
/// defaulted ([`limit_range::apply_defaults`]).
///
/// Errors: store errors.
pub async fn limit_ranges(objects: &Objects, ns: &str) -> Result<Vec<Value>, ApiError> {
    let prefix = limit_ranges_res().namespace_prefix(Some(ns));
    let listed = objects.store().list(&prefix, Default::default()).await?;
    listed
        .items
        .iter()
        .map(|kv| {
            let mut lr = decode(kv)?;
            limit_range::apply_defaults(&mut lr);
            Ok(lr)
        })
        .collect()
}

/// The 403 Forbidden admission plugins answer with (upstream `admission.NewForbidden`):
/// `pods "web" is forbidden: <why>`, details naming the object.
pub fn forbidden(res: &ResourceInfo, obj: &Value, why: &str) -> ApiError {
    let meta = obj.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| meta.and_then(|m| m.get("generateName")).and_then(Value::as_str))
        .unwrap_or("Unknown");
    ApiError {
        details: Some(json!({"name": name, "group": res.group, "kind": res.plural})),
        ..ApiError::forbidden(format!("{} \"{name}\" is forbidden: {why}", qualified(res)))
    }
}

/// Defaults the requests and limits of a pod being created in `ns` from every
/// LimitRange there (upstream `PodMutateLimitFunc`), setting the
/// `kubernetes.io/limit-ranger` annotation when anything was filled in.
///
/// Errors: store errors.
pub async fn default_pod(objects: &Objects, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    for lr in limit_ranges(objects, ns).await? {
        limit_range::default_pod(&lr, pod);
    }
    Ok(())
}

/// Checks a pod or PersistentVolumeClaim being written in `ns` against every
/// LimitRange there; other resources pass.
///
/// Errors: 403 Forbidden with upstream's messages, e.g. `pods "web" is forbidden:
/// maximum cpu usage per Container is 500m, but limit is 1` (several violations of
/// one LimitRange print as `[a, b]`); store errors.
pub async fn validate(objects: &Objects, res: &ResourceInfo, ns: &str, obj: &Value) -> Result<(), ApiError> {
    let check: fn(&Value, &Value) -> Vec<String> = match (res.group, res.kind) {
        ("", "Pod") => limit_range::validate_pod,
        ("", "PersistentVolumeClaim") => limit_range::validate_pvc,
        _ => return Ok(()),
    };
    for lr in limit_ranges(objects, ns).await? {
        let errs = check(&lr, obj);
        if !errs.is_empty() {
            return Err(forbidden(res, obj, &limit_range::aggregate(&errs)));
        }
    }
    Ok(())
}
