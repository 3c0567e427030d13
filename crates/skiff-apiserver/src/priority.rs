//! The Priority admission plugin (upstream `plugin/pkg/admission/priority`) and the
//! system PriorityClasses the apiserver creates at start
//! (upstream `pkg/registry/scheduling/rest`).
//!
//! - A new pod's `spec.priorityClassName` is resolved to `spec.priority` and
//!   `spec.preemptionPolicy` (the class's, `PreemptLowerPriority` when it has none). A
//!   pod without a class gets the `globalDefault` class (its name too), or priority 0.
//!   An unknown class is `403 Forbidden`: `no PriorityClass with name X was found`. A
//!   pod that states a `priority` or `preemptionPolicy` other than the computed one is
//!   `403 Forbidden` with upstream's message.
//! - A PriorityClass may be `globalDefault` only while no other class is:
//!   `PriorityClass X is already marked as default. Only one default can exist`.

use std::collections::HashMap;

use serde_json::{Value, json};
use skiff_api::registry::{self, ResourceInfo};
use skiff_api::validation::SYSTEM_PRIORITY_CLASSES;

use crate::limit_ranger::forbidden;
use crate::list::{Selectors, list};
use crate::objects::{FieldValidation, Objects, WriteOptions};
use crate::status::ApiError;

/// `preemptionPolicy` of classes and pods that state none.
pub const DEFAULT_PREEMPTION_POLICY: &str = "PreemptLowerPriority";

fn classes() -> &'static ResourceInfo {
    registry::lookup("scheduling.k8s.io", "v1", "priorityclasses").expect("priorityclasses are served")
}

fn pods() -> &'static ResourceInfo {
    registry::lookup("", "v1", "pods").expect("pods are served")
}

fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

fn is_global_default(v: &Value) -> bool {
    v.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)
}

/// The global default class among `classes`: the one with the lowest value if a
/// race left several (upstream `getDefaultPriorityClass`).
pub fn pick_default(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| is_global_default(c))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
}

async fn all_classes(objects: &Objects) -> Result<Vec<Value>, ApiError> {
    Ok(list(objects, classes(), None, &HashMap::new(), &Selectors::default())
        .await?
        .items)
}

/// Resolves the priority of a pod being created, in place (see the module docs).
/// Errors: `403 Forbidden` for an unknown class or a conflicting `priority` /
/// `preemptionPolicy`; store errors.
pub async fn admit_pod(objects: &Objects, pod: &mut Value) -> Result<(), ApiError> {
    let class_name = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let class = if class_name.is_empty() {
        pick_default(&all_classes(objects).await?).cloned()
    } else {
        match objects.get(classes(), None, &class_name).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 => {
                return Err(forbidden(
                    pods(),
                    pod,
                    &format!("no PriorityClass with name {class_name} was found"),
                ));
            }
            Err(e) => return Err(e),
        }
    };
    let priority = class
        .as_ref()
        .and_then(|c| c.get("value"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let policy = class
        .as_ref()
        .and_then(|c| c.get("preemptionPolicy"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_PREEMPTION_POLICY)
        .to_string();
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && given != priority
    {
        return Err(forbidden(
            pods(),
            pod,
            &format!(
                "the integer value of priority ({given}) must not be provided in pod spec; \
                 priority admission controller computed {priority} from the given PriorityClass name"
            ),
        ));
    }
    if let Some(given) = pod.pointer("/spec/preemptionPolicy").and_then(Value::as_str)
        && given != policy
    {
        return Err(forbidden(
            pods(),
            pod,
            &format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; \
                 priority admission controller computed {policy} from the given PriorityClass name"
            ),
        ));
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        if class_name.is_empty()
            && let Some(c) = &class
        {
            spec.insert("priorityClassName".into(), json!(name_of(c)));
        }
        spec.insert("priority".into(), json!(priority));
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

/// Validating admission of a PriorityClass being created (`old` is `None`) or
/// updated: at most one `globalDefault` class. Errors: `403 Forbidden`.
pub async fn validate_class(objects: &Objects, class: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    if !is_global_default(class) || old.is_some_and(is_global_default) {
        return Ok(());
    }
    let all = all_classes(objects).await?;
    if let Some(d) = pick_default(&all)
        && name_of(d) != name_of(class)
    {
        return Err(forbidden(
            classes(),
            class,
            &format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                name_of(d)
            ),
        ));
    }
    Ok(())
}

/// Creates `system-node-critical` and `system-cluster-critical` if missing, as
/// upstream's apiserver does at start.
pub async fn ensure_system_classes(objects: &Objects) -> Result<(), ApiError> {
    for (name, value, description) in SYSTEM_PRIORITY_CLASSES {
        let pc = json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description,
        });
        let opts = WriteOptions {
            dry_run: false,
            field_validation: FieldValidation::Strict,
        };
        match objects.create(classes(), None, pc, opts).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_global_default_wins() {
        let pc = |n: &str, v: i64, d: bool| json!({"metadata": {"name": n}, "value": v, "globalDefault": d});
        let all = [pc("a", 10, true), pc("b", 5, true), pc("c", 1, false)];
        assert_eq!(pick_default(&all).map(name_of), Some("b"));
        assert_eq!(pick_default(&all[2..]), None);
    }
}
