//! Field ownership (`metadata.managedFields`) and server-side apply, after
//! upstream's structured-merge-diff as the apiserver uses it
//! (KEP-555, "Server-Side Apply" in the API docs).
//!
//! - A *field set* is the set of paths an object sets: map keys (`f:<name>`), list
//!   elements of keyed lists by their key (`k:{"name":"c"}`, owning the element itself
//!   as `.`), elements of set-like primitive lists (`v:<json>`); other lists are
//!   atomic and owned as a whole. Sets are stored in the `FieldsV1` JSON form.
//! - Every write records its manager: apply writes the applied configuration's set
//!   as the manager's `Apply` entry; other writes (create, update, patch) give the
//!   manager's `Update` entry the fields whose values they changed and take them
//!   away from everybody else, as upstream does.
//! - [`apply`] merges an applied configuration into the live object: applied values
//!   win, keyed lists merge by key, and fields the same manager applied before but
//!   no longer applies are removed unless another manager owns them. A field owned by
//!   another manager with a different value is a conflict (HTTP 409 with the
//!   managers and paths) unless `force` moves the ownership.
//!
//! List keys come from the strategic-merge table in [`crate::patch::merge_key`].

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::patch::{ListStrategy, merge_key, strategic_merge};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    /// A map key: `f:<name>`.
    Field(String),
    /// An element of a keyed list, by its key fields (JSON object text): `k:{...}`.
    Key(String),
    /// An element of a set-like primitive list, by its JSON value: `v:<json>`.
    Value(String),
}

/// A path from the object root, e.g. `.spec.containers[name="web"].image`.
pub type Path = Vec<PathElement>;

/// A set of owned paths. A path ending in an element (`Key`/`Value`) that is in the
/// set means the element itself is owned (`.` in `FieldsV1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<Path>);

/// Top-level fields that are never owned: identity and server-managed metadata.
fn ignored(path: &[PathElement]) -> bool {
    match path {
        [PathElement::Field(f)] => matches!(f.as_str(), "apiVersion" | "kind" | "status"),
        [PathElement::Field(m), PathElement::Field(f)] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "managedFields"
                | "selfLink"
                | "generateName"
        ),
        _ => false,
    }
}

/// Field names along `path` (list elements elided), as [`merge_key`] wants them.
fn field_names(path: &[PathElement]) -> Vec<String> {
    path.iter()
        .filter_map(|p| match p {
            PathElement::Field(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn key_of(element: &Value, key: &str) -> Option<String> {
    let v = element.get(key)?;
    let mut m = Map::new();
    m.insert(key.to_string(), v.clone());
    Some(Value::Object(m).to_string())
}

/// The paths `obj` sets.
pub fn field_set(obj: &Value) -> FieldSet {
    let mut set = BTreeSet::new();
    collect(obj, &mut Vec::new(), &mut set);
    FieldSet(set)
}

fn collect(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    if ignored(path) {
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                collect(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !path.is_empty() => {
            let Some(PathElement::Field(field)) = path.last().cloned() else {
                out.insert(path.clone());
                return;
            };
            let parents = field_names(&path[..path.len() - 1]);
            match merge_key(&parents, &field) {
                ListStrategy::MergeKey(key) if items.iter().all(|i| key_of(i, key).is_some()) => {
                    for item in items {
                        path.push(PathElement::Key(key_of(item, key).expect("checked")));
                        out.insert(path.clone());
                        if let Value::Object(m) = item {
                            for (k, child) in m {
                                path.push(PathElement::Field(k.clone()));
                                collect(child, path, out);
                                path.pop();
                            }
                        }
                        path.pop();
                    }
                }
                ListStrategy::MergePrimitive => {
                    for item in items {
                        path.push(PathElement::Value(item.to_string()));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                _ => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

/// The value at `path` in `obj`, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        cur = match step {
            PathElement::Field(f) => cur.get(f)?,
            PathElement::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|e| key.iter().all(|(kk, kv)| e.get(kk) == Some(kv)))?
            }
            PathElement::Value(v) => {
                let want: Value = serde_json::from_str(v).ok()?;
                cur.as_array()?.iter().find(|e| **e == want)?
            }
        };
    }
    Some(cur)
}

/// Removes the value at `path` from `obj` (a no-op when absent).
fn remove_at(obj: &mut Value, path: &[PathElement]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parent_path {
        let next = match step {
            PathElement::Field(f) => cur.get_mut(f),
            PathElement::Key(k) => {
                let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                    return;
                };
                cur.as_array_mut()
                    .and_then(|a| a.iter_mut().find(|e| key.iter().all(|(kk, kv)| e.get(kk) == Some(kv))))
            }
            PathElement::Value(_) => return,
        };
        let Some(next) = next else { return };
        cur = next;
    }
    match last {
        PathElement::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        PathElement::Key(k) => {
            if let (Ok(key), Some(a)) = (serde_json::from_str::<Map<String, Value>>(k), cur.as_array_mut()) {
                a.retain(|e| !key.iter().all(|(kk, kv)| e.get(kk) == Some(kv)));
            }
        }
        PathElement::Value(v) => {
            if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
                a.retain(|e| *e != want);
            }
        }
    }
}

/// `FieldsV1` JSON of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = json!({});
    for path in &set.0 {
        let mut cur = &mut root;
        for step in path {
            let key = match step {
                PathElement::Field(f) => format!("f:{f}"),
                PathElement::Key(k) => format!("k:{k}"),
                PathElement::Value(v) => format!("v:{v}"),
            };
            cur = cur
                .as_object_mut()
                .expect("built as objects")
                .entry(key)
                .or_insert_with(|| json!({}));
        }
        if matches!(path.last(), Some(PathElement::Key(_) | PathElement::Value(_))) {
            cur.as_object_mut()
                .expect("built as objects")
                .insert(".".into(), json!({}));
        }
    }
    root
}

/// Parses `FieldsV1` JSON; unknown prefixes are skipped.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut set = BTreeSet::new();
    parse_fields(v, &mut Vec::new(), &mut set);
    FieldSet(set)
}

fn parse_fields(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, child) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        let step = if let Some(f) = k.strip_prefix("f:") {
            PathElement::Field(f.to_string())
        } else if let Some(key) = k.strip_prefix("k:") {
            PathElement::Key(key.to_string())
        } else if let Some(val) = k.strip_prefix("v:") {
            PathElement::Value(val.to_string())
        } else {
            continue;
        };
        path.push(step);
        parse_fields(child, path, out);
        path.pop();
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// The field manager's name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the fields were written in.
    pub api_version: String,
    /// RFC 3339 time of the last change to this entry.
    pub time: String,
    /// `status` for writes to the status subresource, else empty.
    pub subresource: String,
    /// The owned fields.
    pub fields: FieldSet,
}

/// Reads `metadata.managedFields`.
pub fn managed_entries(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    let s = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    list.iter()
        .map(|e| ManagedEntry {
            manager: s(e, "manager"),
            operation: s(e, "operation"),
            api_version: s(e, "apiVersion"),
            time: s(e, "time"),
            subresource: s(e, "subresource"),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

/// Writes `entries` (empty ones dropped) as `metadata.managedFields`.
pub fn set_managed_entries(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.0.is_empty())
        .map(|e| {
            let mut m = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                m["subresource"] = json!(e.subresource);
            }
            m
        })
        .collect();
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"].as_object_mut().expect("metadata is an object");
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Who wrote, and how: the identity recorded in managedFields.
#[derive(Debug, Clone)]
pub struct Manager<'a> {
    /// The `fieldManager` name.
    pub name: &'a str,
    /// The API version of the request.
    pub api_version: &'a str,
    /// `status` for the status subresource, else empty.
    pub subresource: &'a str,
    /// The time to record (RFC 3339).
    pub now: &'a str,
}

/// Records a non-apply write (create, update, patch) by `manager` going from `old`
/// (`None` for create) to `new`: the manager's `Update` entry gains the fields whose
/// values changed, and every other manager loses them. Fields that disappeared are
/// dropped from every entry.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &Manager<'_>) {
    let mut entries = old.map(managed_entries).unwrap_or_default();
    let new_set = field_set(new);
    let old_set = old.map(field_set).unwrap_or_default();
    let changed: BTreeSet<Path> = new_set
        .0
        .iter()
        .filter(|p| match old {
            None => true,
            // An element marker changes hands only when the element is new.
            Some(o) if matches!(p.last(), Some(PathElement::Key(_))) => value_at(o, p).is_none(),
            Some(o) => value_at(o, p) != value_at(new, p),
        })
        .cloned()
        .collect();
    let gone: BTreeSet<Path> = old_set.0.difference(&new_set.0).cloned().collect();
    if changed.is_empty() && gone.is_empty() {
        set_managed_entries(new, &entries);
        return;
    }
    for e in &mut entries {
        e.fields.0.retain(|p| !changed.contains(p) && !gone.contains(p));
    }
    let mine = entries
        .iter_mut()
        .find(|e| e.manager == manager.name && e.operation == "Update" && e.subresource == manager.subresource);
    match mine {
        Some(e) => {
            e.fields.0.extend(changed);
            e.time = manager.now.to_string();
            e.api_version = manager.api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: manager.name.to_string(),
            operation: "Update".into(),
            api_version: manager.api_version.to_string(),
            time: manager.now.to_string(),
            subresource: manager.subresource.to_string(),
            fields: FieldSet(changed),
        }),
    }
    set_managed_entries(new, &entries);
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The API version the other manager wrote in.
    pub api_version: String,
    /// The field, rendered as upstream renders it (`.spec.replicas`).
    pub field: String,
}

/// Renders a path as upstream's conflict messages do: `.spec.containers[name="web"].image`.
pub fn render_path(path: &[PathElement]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            PathElement::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PathElement::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(kk, kv)| format!("{kk}={kv}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElement::Value(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

/// Server-side apply of `applied` by `manager` onto `live` (`None` when the object
/// does not exist yet). Returns the merged object with updated managedFields, or
/// the conflicts when `force` is false and another manager owns an applied field
/// with a different value.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &Manager<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut entries = managed_entries(live_obj);
    let applied_set = field_set(applied);
    let is_mine =
        |e: &ManagedEntry| e.manager == manager.name && e.operation == "Apply" && e.subresource == manager.subresource;
    let mut conflicts = Vec::new();
    let mut conflicting: BTreeSet<Path> = BTreeSet::new();
    for e in entries.iter().filter(|e| !is_mine(e)) {
        for p in e.fields.0.intersection(&applied_set.0) {
            // An element marker conflicts only through its fields.
            if matches!(p.last(), Some(PathElement::Key(_))) {
                continue;
            }
            if value_at(live_obj, p) != value_at(applied, p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: render_path(p),
                });
                conflicting.insert(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    // Applied values win; maps and keyed lists merge (strategic merge semantics).
    let mut patch = applied.clone();
    if let Some(m) = patch.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    let mut merged = match live {
        Some(l) => strategic_merge(l, &patch).unwrap_or_else(|_| patch.clone()),
        None => patch.clone(),
    };
    // Fields this manager applied before and applies no more are removed unless
    // someone else still owns them.
    let previous = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| e.fields.0.iter().cloned())
        .collect();
    for p in previous.0.difference(&applied_set.0) {
        if !others.contains(p) && !others.iter().any(|o| o.starts_with(p)) {
            remove_at(&mut merged, p);
        }
    }
    if force {
        for e in entries.iter_mut().filter(|e| !is_mine(e)) {
            e.fields.0.retain(|p| !conflicting.contains(p));
        }
    }
    entries.retain(|e| !is_mine(e));
    entries.push(ManagedEntry {
        manager: manager.name.to_string(),
        operation: "Apply".into(),
        api_version: manager.api_version.to_string(),
        time: manager.now.to_string(),
        subresource: manager.subresource.to_string(),
        fields: applied_set,
    });
    set_managed_entries(&mut merged, &entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mgr(name: &str) -> Manager<'_> {
        Manager {
            name,
            api_version: "apps/v1",
            subresource: "",
            now: "2026-01-01T00:00:00Z",
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}
        })
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let set = field_set(&deployment(2, "nginx"));
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {},
                              "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                                  ".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn apply_creates_then_a_second_manager_conflicts_unless_forced() {
        let created = apply(None, &deployment(2, "nginx"), &mgr("kubectl"), false).unwrap();
        assert_eq!(created["spec"]["replicas"], json!(2));
        assert_eq!(created["metadata"]["managedFields"][0]["manager"], json!("kubectl"));
        assert_eq!(created["metadata"]["managedFields"][0]["operation"], json!("Apply"));
        // Same values from another manager: shared ownership, no conflict.
        let shared = apply(Some(&created), &deployment(2, "nginx"), &mgr("other"), false).unwrap();
        assert_eq!(managed_entries(&shared).len(), 2);
        // A different value: conflict naming the owner and the field.
        let err = apply(Some(&created), &deployment(3, "nginx"), &mgr("other"), false).unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "kubectl".into(),
                api_version: "apps/v1".into(),
                field: ".spec.replicas".into()
            }]
        );
        let forced = apply(Some(&created), &deployment(3, "nginx"), &mgr("other"), true).unwrap();
        assert_eq!(forced["spec"]["replicas"], json!(3));
        let kubectl = managed_entries(&forced)
            .into_iter()
            .find(|e| e.manager == "kubectl")
            .unwrap();
        assert!(!kubectl.fields.0.contains(&vec![
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
    }

    #[test]
    fn fields_dropped_from_the_applied_config_are_removed_unless_owned_elsewhere() {
        let mut first = deployment(2, "nginx");
        first["metadata"]["labels"]["tier"] = json!("front");
        let live = apply(None, &first, &mgr("kubectl"), false).unwrap();
        let next = apply(Some(&live), &deployment(2, "nginx"), &mgr("kubectl"), false).unwrap();
        assert_eq!(next["metadata"]["labels"], json!({"app": "web"}));
        // A field another manager set survives the applier dropping it.
        let mut scaled = next.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&next), &mut scaled, &mgr("kubectl-scale"));
        let mut without_replicas = deployment(2, "nginx");
        without_replicas["spec"].as_object_mut().unwrap().remove("replicas");
        let after = apply(Some(&scaled), &without_replicas, &mgr("kubectl"), false).unwrap();
        assert_eq!(after["spec"]["replicas"], json!(5));
    }

    #[test]
    fn keyed_list_elements_merge_and_are_owned_per_element() {
        let live = apply(None, &deployment(1, "nginx"), &mgr("kubectl"), false).unwrap();
        let mut sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "log", "image": "busybox"}]}}}});
        let both = apply(Some(&live), &sidecar, &mgr("injector"), false).unwrap();
        let names: Vec<&str> = both["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web", "log"]);
        // The injector withdrawing its container removes only that element.
        sidecar["spec"]["template"]["spec"]["containers"] = json!([]);
        let back = apply(Some(&both), &sidecar, &mgr("injector"), false).unwrap();
        assert_eq!(
            back["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(),
            1
        );
    }

    #[test]
    fn updates_take_changed_fields_from_other_managers() {
        let live = apply(None, &deployment(2, "nginx"), &mgr("kubectl"), false).unwrap();
        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        record_update(Some(&live), &mut edited, &mgr("kubectl-edit"));
        let entries = managed_entries(&edited);
        let edit = entries.iter().find(|e| e.manager == "kubectl-edit").unwrap();
        assert_eq!(edit.operation, "Update");
        assert_eq!(edit.fields.0.len(), 1);
        // Re-applying the old image now conflicts with kubectl-edit.
        let err = apply(Some(&edited), &deployment(2, "nginx"), &mgr("kubectl"), false).unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
        assert_eq!(err[0].field, ".spec.template.spec.containers[name=\"web\"].image");
    }
}
