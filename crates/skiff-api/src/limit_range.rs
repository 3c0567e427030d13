//! LimitRange semantics (upstream `plugin/pkg/admission/limitranger` and
//! `SetDefaults_LimitRangeItem`): defaulting a LimitRange's `type: Container`
//! items, defaulting containers' requests and limits from them (recorded in the
//! [`ANNOTATION`] annotation), and the min/max/maxLimitRequestRatio checks for
//! containers, pods and PersistentVolumeClaims with upstream's messages.

use serde_json::{Map, Value, json};

use crate::quota::{Quantity, ResourceList, parse_list, pod_container_resources};

/// The annotation the LimitRanger sets on pods whose resources it defaulted.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn items(lr: &Value) -> impl Iterator<Item = &Value> {
    lr.pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn type_of(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Defaults a LimitRange's `type: Container` items in place (upstream
/// `SetDefaults_LimitRangeItem`): `default` from `max`, then `defaultRequest`
/// from `default`, then from `min`, for resources not already set.
pub fn apply_defaults(lr: &mut Value) {
    let Some(limits) = lr.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else {
        return;
    };
    for item in limits.iter_mut().filter(|i| type_of(i) == "Container") {
        let Some(m) = item.as_object_mut() else { continue };
        let copy_missing = |m: &mut Map<String, Value>, from: &str, to: &str| {
            let src = m.get(from).and_then(Value::as_object).cloned().unwrap_or_default();
            let dst = m.entry(to).or_insert_with(|| json!({}));
            if !dst.is_object() {
                *dst = json!({});
            }
            let dst = dst.as_object_mut().expect("an object");
            for (k, v) in src {
                dst.entry(k).or_insert(v);
            }
        };
        copy_missing(m, "max", "default");
        copy_missing(m, "default", "defaultRequest");
        copy_missing(m, "min", "defaultRequest");
        for k in ["default", "defaultRequest"] {
            if m.get(k).and_then(Value::as_object).is_some_and(Map::is_empty) {
                m.remove(k);
            }
        }
    }
}

/// Sets the requests and limits a LimitRange's `type: Container` items default
/// on every container and init container that leaves them unset (upstream
/// `PodMutateLimitFunc`), and records what was set in [`ANNOTATION`]:
/// `LimitRanger plugin set: cpu, memory request for container app; cpu limit for
/// init container setup`. `lr` should already have [`apply_defaults`] applied.
pub fn default_pod(lr: &Value, pod: &mut Value) {
    let mut requests = Map::new();
    let mut limits = Map::new();
    for item in items(lr).filter(|i| type_of(i) == "Container") {
        for (key, into) in [("defaultRequest", &mut requests), ("default", &mut limits)] {
            if let Some(m) = item.get(key).and_then(Value::as_object) {
                for (k, v) in m {
                    into.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (list, prefix) in [("containers", "container"), ("initContainers", "init container")] {
        let Some(cs) = pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut().filter(|c| c.is_object()) {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            if !c.get("resources").is_some_and(Value::is_object) {
                c["resources"] = json!({});
            }
            let mut set = |which: &str, defaults: &Map<String, Value>| -> Vec<String> {
                let res = &mut c["resources"];
                if !res.get(which).is_some_and(Value::is_object) {
                    res[which] = json!({});
                }
                let have = res[which].as_object_mut().expect("an object");
                let mut added = Vec::new();
                for (k, v) in defaults {
                    if !have.contains_key(k) {
                        have.insert(k.clone(), v.clone());
                        added.push(k.clone());
                    }
                }
                added.sort();
                added
            };
            let set_limits = set("limits", &limits);
            let set_requests = set("requests", &requests);
            if !set_requests.is_empty() {
                notes.push(format!("{} request for {prefix} {name}", set_requests.join(", ")));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {prefix} {name}", set_limits.join(", ")));
            }
            // An empty map the defaulting left behind is not part of the pod.
            for which in ["limits", "requests"] {
                if c["resources"][which].as_object().is_some_and(Map::is_empty) {
                    c["resources"].as_object_mut().expect("an object").remove(which);
                }
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    if !pod.pointer("/metadata/annotations").is_some_and(Value::is_object) {
        pod["metadata"]["annotations"] = json!({});
    }
    pod["metadata"]["annotations"][ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
}

fn min_constraint(kind: &str, r: &str, enforced: Quantity, req: &ResourceList, lim: &ResourceList) -> Option<String> {
    let Some(q) = req.get(r) else {
        return Some(format!(
            "minimum {r} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if q.milli < enforced.milli {
        return Some(format!(
            "minimum {r} usage per {kind} is {enforced}, but request is {q}"
        ));
    }
    match lim.get(r) {
        Some(l) if l.milli < enforced.milli => {
            Some(format!("minimum {r} usage per {kind} is {enforced}, but limit is {l}"))
        }
        _ => None,
    }
}

fn max_constraint(kind: &str, r: &str, enforced: Quantity, req: &ResourceList, lim: &ResourceList) -> Option<String> {
    let Some(l) = lim.get(r) else {
        return Some(format!(
            "maximum {r} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if l.milli > enforced.milli {
        return Some(format!("maximum {r} usage per {kind} is {enforced}, but limit is {l}"));
    }
    match req.get(r) {
        Some(q) if q.milli > enforced.milli => Some(format!(
            "maximum {r} usage per {kind} is {enforced}, but request is {q}"
        )),
        _ => None,
    }
}

fn max_request_constraint(kind: &str, r: &str, enforced: Quantity, req: &ResourceList) -> Option<String> {
    match req.get(r) {
        None => Some(format!(
            "maximum {r} usage per {kind} is {enforced}.  No request is specified"
        )),
        Some(q) if q.milli > enforced.milli => Some(format!(
            "maximum {r} usage per {kind} is {enforced}, but request is {q}"
        )),
        _ => None,
    }
}

fn ratio_constraint(kind: &str, r: &str, enforced: Quantity, req: &ResourceList, lim: &ResourceList) -> Option<String> {
    let q = req.get(r).filter(|q| q.milli != 0);
    let l = lim.get(r).filter(|l| l.milli != 0);
    let Some(q) = q else {
        return Some(format!(
            "{r} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    };
    let Some(l) = l else {
        return Some(format!(
            "{r} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    };
    let observed = l.milli as f64 / q.milli as f64;
    if observed * 1000.0 > enforced.milli as f64 {
        return Some(format!(
            "{r} max limit to request ratio per {kind} is {enforced}, but provided ratio is {observed:.6}"
        ));
    }
    None
}

/// Checks `req`/`lim` against one LimitRange item's `min`, `max` and
/// `maxLimitRequestRatio` (resources in name order), appending messages to `errs`.
fn check_item(item: &Value, kind: &str, req: &ResourceList, lim: &ResourceList, errs: &mut Vec<String>) {
    for (r, v) in parse_list(item.get("min")) {
        errs.extend(min_constraint(kind, &r, v, req, lim));
    }
    for (r, v) in parse_list(item.get("max")) {
        errs.extend(max_constraint(kind, &r, v, req, lim));
    }
    for (r, v) in parse_list(item.get("maxLimitRequestRatio")) {
        errs.extend(ratio_constraint(kind, &r, v, req, lim));
    }
}

/// Every violation of `lr` by the pod (upstream `PodValidateLimitFunc`): each
/// container and init container against `type: Container` items, the summed
/// requests and limits (init containers at their peak) against `type: Pod` items.
pub fn validate_pod(lr: &Value, pod: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    for item in items(lr) {
        match type_of(item) {
            "Container" => {
                for list in ["containers", "initContainers"] {
                    for c in pod
                        .pointer(&format!("/spec/{list}"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let req = parse_list(c.pointer("/resources/requests"));
                        let lim = parse_list(c.pointer("/resources/limits"));
                        check_item(item, "Container", &req, &lim, &mut errs);
                    }
                }
            }
            "Pod" => {
                let req = pod_container_resources(pod, "requests");
                let lim = pod_container_resources(pod, "limits");
                check_item(item, "Pod", &req, &lim, &mut errs);
            }
            _ => {}
        }
    }
    errs
}

/// Every violation of `lr` by a PersistentVolumeClaim (upstream
/// `PersistentVolumeClaimValidateLimitFunc`): `spec.resources.requests` against
/// `type: PersistentVolumeClaim` items' `min` and `max`.
pub fn validate_pvc(lr: &Value, pvc: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let req = parse_list(pvc.pointer("/spec/resources/requests"));
    for item in items(lr).filter(|i| type_of(i) == "PersistentVolumeClaim") {
        for (r, v) in parse_list(item.get("min")) {
            errs.extend(min_constraint(
                "PersistentVolumeClaim",
                &r,
                v,
                &req,
                &ResourceList::new(),
            ));
        }
        for (r, v) in parse_list(item.get("max")) {
            errs.extend(max_request_constraint("PersistentVolumeClaim", &r, v, &req));
        }
    }
    errs
}

/// Joins errors as upstream's `utilerrors.NewAggregate` prints them: one message
/// alone, several as `[a, b]`.
pub fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        _ => format!("[{}]", errs.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr(limits: Value) -> Value {
        let mut lr = json!({"spec": {"limits": limits}});
        apply_defaults(&mut lr);
        lr
    }

    #[test]
    fn container_items_default_from_max_and_min() {
        let l = lr(json!([{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]));
        assert_eq!(l["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
        assert_eq!(
            l["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );
    }

    #[test]
    fn defaults_fill_what_containers_leave_unset_and_are_recorded() {
        let l = lr(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "250m", "memory": "128Mi"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "app", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]}});
        default_pod(&l, &mut pod);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"limits": {"cpu": "1", "memory": "256Mi"}, "requests": {"cpu": "1", "memory": "128Mi"}})
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"]["requests"],
            json!({"cpu": "250m", "memory": "128Mi"})
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: memory request for container app; memory limit for container app; \
             cpu, memory request for init container setup; cpu, memory limit for init container setup"
        );
    }

    #[test]
    fn min_max_and_ratio_messages() {
        let l = lr(
            json!([{"type": "Container", "max": {"cpu": "500m"}, "min": {"cpu": "100m"},
                           "maxLimitRequestRatio": {"cpu": "2"}}]),
        );
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "200m"}}}]}});
        assert_eq!(
            validate_pod(&l, &pod),
            [
                "maximum cpu usage per Container is 500m, but limit is 1",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 5.000000",
            ]
        );
        let small = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "50m"}, "requests": {"cpu": "50m"}}}]}});
        assert_eq!(
            validate_pod(&l, &small),
            ["minimum cpu usage per Container is 100m, but request is 50m"]
        );
        assert_eq!(aggregate(&["a".into(), "b".into()]), "[a, b]");
    }

    #[test]
    fn pod_items_check_sums_and_claims_check_storage() {
        let l = lr(json!([
            {"type": "Pod", "max": {"memory": "1Gi"}},
            {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}
        ]));
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "768Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "512Mi"}}}]}});
        assert_eq!(
            validate_pod(&l, &pod),
            ["maximum memory usage per Pod is 1Gi, but limit is 1280Mi"]
        );
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "20Gi"}}}});
        assert_eq!(
            validate_pvc(&l, &pvc),
            ["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
        );
        let tiny = json!({"spec": {"resources": {"requests": {"storage": "100Mi"}}}});
        assert_eq!(
            validate_pvc(&l, &tiny),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 100Mi"]
        );
    }
}
