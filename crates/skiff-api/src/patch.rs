//! Strategic merge patch (`application/strategic-merge-patch+json`), the patch type
//! `kubectl apply` (client-side) and `kubectl edit` send for built-in types.
//!
//! Semantics follow k8s.io/apimachinery/pkg/util/strategicpatch: maps merge
//! recursively and `null` deletes a key; lists of objects that carry a
//! `patchMergeKey` merge element-wise by that key; other lists are replaced, except
//! lists with the `merge` strategy of primitives (e.g. `metadata.finalizers`), which are
//! unioned. Directives: `$patch: replace|delete|merge` on maps and list elements,
//! `$setElementOrder/<list>`, `$retainKeys`, `$deleteFromPrimitiveList/<list>`.
//!
//! The patch metadata (merge keys) comes from the built-in types' struct tags
//! (`patchStrategy:"merge" patchMergeKey:"name"`); [`merge_key`] encodes that table.

use serde_json::{Map, Value};

/// A malformed patch; the apiserver answers `400 BadRequest` (or `422` for type errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid strategic merge patch: {0}")]
pub struct PatchError(pub String);

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replace the whole list (no `patchStrategy` on the field).
    Replace,
    /// Merge list-of-object elements by this key.
    MergeKey(&'static str),
    /// Union of primitive values (`patchStrategy:"merge"` on a primitive list).
    MergePrimitive,
}

/// The patch strategy of the list field `field` whose parent map is at `parent_path`
/// (field names from the root, list indices elided), per the upstream struct tags.
pub fn merge_key(parent_path: &[String], field: &str) -> ListStrategy {
    let parent = parent_path.last().map(String::as_str).unwrap_or("");
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::MergeKey("name"),
        "volumeMounts" => ListStrategy::MergeKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeKey("devicePath"),
        "hostAliases" => ListStrategy::MergeKey("ip"),
        "ownerReferences" if parent == "metadata" => ListStrategy::MergeKey("uid"),
        "finalizers" if parent == "metadata" => ListStrategy::MergePrimitive,
        "conditions" | "addresses" if parent == "status" => ListStrategy::MergeKey("type"),
        "topologySpreadConstraints" => ListStrategy::MergeKey("topologyKey"),
        "ports" => {
            // Container ports merge by containerPort; Service ports by port.
            if matches!(parent, "containers" | "initContainers" | "ephemeralContainers") {
                ListStrategy::MergeKey("containerPort")
            } else if parent == "spec" {
                ListStrategy::MergeKey("port")
            } else {
                ListStrategy::Replace
            }
        }
        _ => ListStrategy::Replace,
    }
}

/// Applies a strategic merge patch to `original`, returning the patched document.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let mut path = Vec::new();
    merge_value(original, patch, &mut path)
}

fn merge_value(original: &Value, patch: &Value, path: &mut Vec<String>) -> Result<Value, PatchError> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => {
            merge_map(o, p, path).map(|m| m.map(Value::Object).unwrap_or(Value::Null))
        }
        (_, Value::Object(p)) => {
            // Patching a non-map (or absent) value with a map: merge into empty.
            merge_map(&Map::new(), p, path).map(|m| m.map(Value::Object).unwrap_or(Value::Null))
        }
        (_, p) => Ok(p.clone()),
    }
}

/// Merges maps; `Ok(None)` means the map itself is deleted (`$patch: delete`).
fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            return Ok(Some(out));
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError(format!("unknown patch type {other:?}"))),
    }
    let mut out = original.clone();
    if let Some(retain) = patch.get("$retainKeys") {
        let keys: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| PatchError("$retainKeys must be a list".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<Value> = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        let ov = original.get(k);
        let merged = match pv {
            Value::Object(_) => {
                path.push(k.clone());
                let r = merge_value(ov.unwrap_or(&Value::Null), pv, path);
                path.pop();
                r?
            }
            Value::Array(plist) => {
                let strategy = merge_key(path, k);
                let olist = ov.and_then(Value::as_array).cloned().unwrap_or_default();
                path.push(k.clone());
                let r = merge_list(&olist, plist, strategy, path);
                path.pop();
                let mut list = r?;
                if let Some(order) = patch.get(&format!("$setElementOrder/{k}")).and_then(Value::as_array) {
                    apply_order(&mut list, order, strategy);
                }
                Value::Array(list)
            }
            other => other.clone(),
        };
        if merged.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), merged);
        }
    }
    // A `$setElementOrder` without the list itself only reorders.
    for (k, order) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && !patch.contains_key(field)
        {
            let strategy = merge_key(path, field);
            if let (Some(Value::Array(list)), Some(order)) = (out.get_mut(field), order.as_array()) {
                apply_order(list, order, strategy);
            }
        }
    }
    Ok(Some(out))
}

fn merge_list(
    original: &[Value],
    patch: &[Value],
    strategy: ListStrategy,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    match strategy {
        ListStrategy::Replace => Ok(patch.iter().filter(|v| v.get("$patch").is_none()).cloned().collect()),
        ListStrategy::MergePrimitive => {
            let mut out = original.to_vec();
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::MergeKey(key) => {
            if patch
                .iter()
                .any(|v| v.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(patch.iter().filter(|v| v.get("$patch").is_none()).cloned().collect());
            }
            let mut out = original.to_vec();
            for pv in patch {
                let Some(pobj) = pv.as_object() else {
                    return Err(PatchError(format!("list element must be an object with key {key:?}")));
                };
                let Some(kv) = pobj.get(key) else {
                    return Err(PatchError(format!("map in list does not contain merge key {key:?}")));
                };
                let pos = out.iter().position(|o| o.get(key) == Some(kv));
                let delete = pobj.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let merged = merge_value(&out[i], pv, path)?;
                        out[i] = merged;
                    }
                    (None, false) => {
                        let merged = merge_value(&Value::Null, pv, path)?;
                        out.push(merged);
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Reorders `list` so elements named in `order` come first in that order; the rest keep
/// their relative order after them.
fn apply_order(list: &mut [Value], order: &[Value], strategy: ListStrategy) {
    let rank = |v: &Value| -> usize {
        let id = match strategy {
            ListStrategy::MergeKey(k) => v.get(k),
            _ => Some(v),
        };
        order
            .iter()
            .position(|o| match strategy {
                ListStrategy::MergeKey(k) => o.get(k) == id,
                _ => Some(o) == id,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_containers_by_name_and_keeps_other_fields() {
        let orig = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "busybox", "args": ["a"]},
            {"name": "side", "image": "x"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web", "image": "busybox:1.35"}]
        }}}});
        let out = strategic_merge(&orig, &patch).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0], json!({"name": "web", "image": "busybox:1.35", "args": ["a"]}));
        assert_eq!(cs[1]["name"], "side");
    }

    #[test]
    fn null_deletes_and_patch_delete_removes_elements() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch =
            json!({"metadata": {"labels": {"a": null}}, "spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        let out = strategic_merge(&orig, &patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"containers": [{"name": "b"}]}})
        );
    }

    #[test]
    fn unkeyed_lists_replace_and_finalizers_union() {
        let orig =
            json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "c", "args": ["1", "2"]}]}});
        let patch = json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "c", "args": ["3"]}]}});
        let out = strategic_merge(&orig, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["3"]));
    }

    #[test]
    fn replace_directive_and_retain_keys() {
        let orig = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = strategic_merge(&orig, &patch).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let patch = json!({"spec": {"$patch": "replace", "x": 1}});
        assert_eq!(strategic_merge(&orig, &patch).unwrap(), json!({"spec": {"x": 1}}));
        assert!(strategic_merge(&orig, &json!({"spec": {"containers": [1]}})).is_err());
    }
}
