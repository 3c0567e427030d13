//! The ResourceQuota admission step (upstream `plugin/pkg/admission/resourcequota`):
//! a write to a namespace that has ResourceQuotas is charged against each quota
//! whose scopes select the object and whose `status.hard` names a resource the
//! object uses ([`skiff_api::quota`] computes usage); if the charge would take any
//! quota over `status.hard` the write is refused with 403 Forbidden, otherwise
//! the quotas' `status.used` are raised before the object is stored.
//!
//! Creates are charged for every resource; updates only for Services and
//! PersistentVolumeClaims (type changes, resizes), by how much they grow.
//! Charges are compare-and-swap writes on each quota's resourceVersion, retried
//! on conflict, so two concurrent writes cannot both take the last unit; within
//! one apiserver, writes to a namespace are also evaluated one at a time, as
//! upstream's per-namespace work queue does. What a charge over-counts (an
//! object that then fails to store) the ResourceQuota controller corrects when
//! it next recalculates usage. Dry runs are checked but not charged.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::Value;
use skiff_api::quota::{self, Evaluator, QuotaStatus, ResourceList};
use skiff_api::registry::{self, ResourceInfo};

use crate::limit_ranger::forbidden;
use crate::objects::{Objects, decode};
use crate::status::ApiError;

/// How many times a charge is retried when a quota changed under it.
const MAX_ATTEMPTS: usize = 32;

/// Resources that are never stored and so never charged (upstream
/// `install.DefaultIgnoredResources`).
const IGNORED: &[(&str, &str)] = &[
    ("", "bindings"),
    ("", "componentstatuses"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "localsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
];

fn quotas_res() -> &'static ResourceInfo {
    registry::lookup("", "v1", "resourcequotas").expect("resourcequotas are served")
}

/// One lock per namespace: charges in a namespace are evaluated one at a time.
static NAMESPACE_LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = LazyLock::new(Default::default);

fn namespace_lock(ns: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = NAMESPACE_LOCKS.lock().expect("lock map");
    locks.entry(ns.to_string()).or_default().clone()
}

/// Admits `obj` (created, or updated from `old`) in `ns` against the namespace's
/// quotas and charges them, unless `dry_run`.
///
/// Errors (403 Forbidden, upstream's messages after `<resource> "<name>" is forbidden: `):
/// - `exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2`;
/// - `failed quota: q: must specify limits.cpu for: app` when a quota limits a
///   compute resource a container leaves unset;
/// - `status unknown for quota: q, resources: pods` before the ResourceQuota
///   controller has first calculated the quota's usage.
///
/// Also store errors, and 409 Conflict when the quotas kept changing.
pub async fn admit(
    objects: &Objects,
    res: &ResourceInfo,
    ns: &str,
    old: Option<&Value>,
    obj: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    if !res.namespaced || ns.is_empty() || IGNORED.contains(&(res.group, res.plural)) {
        return Ok(());
    }
    let evaluator = Evaluator::for_resource(res.group, res.plural);
    if old.is_some() && !evaluator.handles_update() {
        return Ok(());
    }
    let prefix = quotas_res().namespace_prefix(Some(ns));
    // The common case, a namespace without quotas, costs one empty range read.
    if objects
        .store()
        .list(&prefix, Default::default())
        .await?
        .items
        .is_empty()
    {
        return Ok(());
    }
    let lock = namespace_lock(ns);
    let _guard = lock.lock().await;
    let now = jiff::Timestamp::now();
    let mut delta = evaluator.usage(obj, now);
    if let Some(old) = old {
        delta = quota::subtract_non_negative(&delta, &evaluator.usage(old, now));
    }
    // Quotas (by uid) already charged in an earlier attempt.
    let mut charged: HashSet<String> = HashSet::new();
    for _ in 0..MAX_ATTEMPTS {
        let listed = objects.store().list(&prefix, Default::default()).await?;
        let mut writes: Vec<(String, i64, Value, ResourceList, ResourceList)> = Vec::new();
        for kv in &listed.items {
            let q = decode(kv)?;
            let name = q.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let matches = evaluator
                .matches_scopes(&q, obj)
                .map_err(|e| ApiError::internal(format!("error matching scopes of quota {name}, err: {e}")))?;
            if !matches {
                continue;
            }
            let status = QuotaStatus::of(&q);
            let restricted = evaluator.matching_resources(status.hard.keys());
            if restricted.is_empty() {
                continue;
            }
            evaluator
                .constraints(&restricted, obj)
                .map_err(|e| forbidden(res, obj, &format!("failed quota: {name}: {e}")))?;
            if !status.has_usage_stats(&restricted) {
                let mut names = restricted.clone();
                names.sort();
                return Err(forbidden(
                    res,
                    obj,
                    &format!("status unknown for quota: {name}, resources: {}", names.join(",")),
                ));
            }
            let uid = q.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
            if quota::is_zero(&delta) || charged.contains(uid) {
                continue;
            }
            let used = status.charge(name, &delta).map_err(|e| forbidden(res, obj, &e))?;
            writes.push((name.to_string(), kv.mod_revision, q.clone(), status.hard, used));
        }
        if dry_run {
            return Ok(());
        }
        let mut conflicted = false;
        for (name, rv, q, hard, used) in writes {
            let mut next = q;
            quota::set_status(&mut next, &hard, &used);
            if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let bytes = serde_json::to_vec(&next).expect("JSON values always serialize");
            match objects
                .store()
                .update(&quotas_res().key(Some(ns), &name), rv, bytes)
                .await
            {
                Ok(_) => {
                    let uid = next
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    charged.insert(uid.to_string());
                }
                // Changed (or deleted) since it was read: evaluate again.
                Err(skiff_store::Error::Conflict { .. } | skiff_store::Error::NotFound(_)) => {
                    conflicted = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !conflicted {
            return Ok(());
        }
    }
    Err(ApiError::conflict(
        quotas_res(),
        "",
        "resource quotas in this namespace changed too often to charge this request; please try again",
    ))
}

/// [`admit`] and the LimitRanger's checks for an update of `old` to `next`: only
/// PersistentVolumeClaims and Services whose spec changed are admitted again
/// (status and metadata writes are not), as upstream admits updates of them.
///
/// Errors: as [`admit`] and [`crate::limit_ranger::validate`].
pub async fn admit_update(
    objects: &Objects,
    res: &ResourceInfo,
    ns: Option<&str>,
    old: &Value,
    next: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let (Some(ns), true) = (
        ns,
        res.group.is_empty() && matches!(res.kind, "PersistentVolumeClaim" | "Service"),
    ) else {
        return Ok(());
    };
    if old.get("spec") == next.get("spec") {
        return Ok(());
    }
    crate::limit_ranger::validate(objects, res, ns, next).await?;
    admit(objects, res, ns, Some(old), next, dry_run).await
}
