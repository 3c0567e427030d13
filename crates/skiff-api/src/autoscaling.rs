//! HorizontalPodAutoscaler defaulting and `autoscaling/v1` <-> `autoscaling/v2`
//! conversion. Objects are stored as `autoscaling/v2`; `autoscaling/v1` is a view of
//! the same objects (upstream pkg/apis/autoscaling/v1/conversion.go and
//! pkg/apis/autoscaling/v2/defaults.go).
//!
//! The v1 `spec.targetCPUUtilizationPercentage` is the v2 `Resource` metric `cpu`
//! with an `Utilization` target; v1 `status.currentCPUUtilizationPercentage` is the
//! matching entry of `status.currentMetrics`. What v1 cannot express (other
//! metrics, `behavior`, conditions) is kept from the stored v2 object when a v1
//! client writes (upstream keeps it in `autoscaling.alpha.kubernetes.io/*`
//! annotations of the v1 object instead).

use serde_json::{Map, Value, json};

/// Upstream `SetDefaults_HorizontalPodAutoscaler` (v2): `minReplicas` 1, a `cpu`
/// utilization target of 80 % when no metric is given, and for a given `behavior`
/// the default rules of each direction (scale up: no stabilization, max of 4 pods or
/// 100 % per 15 s; scale down: 300 s stabilization, 100 % per 15 s).
pub fn apply_defaults(hpa: &mut Value) {
    let Some(spec) = hpa.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("minReplicas").or_insert(json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty())
    {
        spec.insert("metrics".into(), json!([cpu_metric(80)]));
    }
    if let Some(b) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
        let up = b.entry("scaleUp").or_insert(json!({}));
        rules_defaults(
            up,
            0,
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                                     {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
        let down = b.entry("scaleDown").or_insert(json!({}));
        rules_defaults(
            down,
            300,
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

fn rules_defaults(rules: &mut Value, window: i64, policies: Value) {
    if let Some(r) = rules.as_object_mut() {
        r.entry("stabilizationWindowSeconds").or_insert(json!(window));
        r.entry("selectPolicy").or_insert(json!("Max"));
        if r.get("policies").and_then(Value::as_array).is_none_or(|p| p.is_empty()) {
            r.insert("policies".into(), policies);
        }
    }
}

fn cpu_metric(percent: i64) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": percent}}})
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m.pointer("/resource/name") == Some(&json!("cpu"))
        && m.pointer("/resource/target/type") == Some(&json!("Utilization"))
}

fn copy(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k) {
            to.insert((*k).to_string(), v.clone());
        }
    }
}

/// The `autoscaling/v1` form of a stored `autoscaling/v2` HorizontalPodAutoscaler.
pub fn v2_to_v1(v2: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    out.insert("apiVersion".into(), json!("autoscaling/v1"));
    copy(v2, &mut out, &["metadata"]);
    if let Some(spec) = v2.get("spec") {
        let mut s = Map::new();
        copy(spec, &mut s, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
        let cpu = spec
            .get("metrics")
            .and_then(Value::as_array)
            .and_then(|ms| ms.iter().find(|m| is_cpu_utilization(m)))
            .and_then(|m| m.pointer("/resource/target/averageUtilization"));
        if let Some(p) = cpu {
            s.insert("targetCPUUtilizationPercentage".into(), p.clone());
        }
        out.insert("spec".into(), Value::Object(s));
    }
    if let Some(status) = v2.get("status") {
        let mut s = Map::new();
        copy(
            status,
            &mut s,
            &[
                "observedGeneration",
                "lastScaleTime",
                "currentReplicas",
                "desiredReplicas",
            ],
        );
        let cpu = status
            .get("currentMetrics")
            .and_then(Value::as_array)
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["type"] == "Resource" && m.pointer("/resource/name") == Some(&json!("cpu")))
            })
            .and_then(|m| m.pointer("/resource/current/averageUtilization"));
        if let Some(p) = cpu {
            s.insert("currentCPUUtilizationPercentage".into(), p.clone());
        }
        s.entry("currentReplicas").or_insert(json!(0));
        s.entry("desiredReplicas").or_insert(json!(0));
        out.insert("status".into(), Value::Object(s));
    }
    Value::Object(out)
}

/// The `autoscaling/v2` form of an `autoscaling/v1` object written by a client.
/// `existing` is the stored object on updates: its metrics other than the cpu
/// utilization target, its `behavior` and the status fields v1 lacks are kept.
pub fn v1_to_v2(v1: &Value, existing: Option<&Value>) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    out.insert("apiVersion".into(), json!("autoscaling/v2"));
    copy(v1, &mut out, &["metadata"]);
    if let Some(spec) = v1.get("spec") {
        let mut s = Map::new();
        copy(spec, &mut s, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
        let mut metrics: Vec<Value> = Vec::new();
        if let Some(p) = spec.get("targetCPUUtilizationPercentage").filter(|p| !p.is_null()) {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": p}}}));
        }
        if let Some(old) = existing.and_then(|e| e.get("spec")) {
            if let Some(ms) = old.get("metrics").and_then(Value::as_array) {
                metrics.extend(ms.iter().filter(|m| !is_cpu_utilization(m)).cloned());
            }
            copy(old, &mut s, &["behavior"]);
        }
        if !metrics.is_empty() {
            s.insert("metrics".into(), json!(metrics));
        }
        out.insert("spec".into(), Value::Object(s));
    }
    if let Some(status) = v1.get("status") {
        let mut s = Map::new();
        copy(
            status,
            &mut s,
            &[
                "observedGeneration",
                "lastScaleTime",
                "currentReplicas",
                "desiredReplicas",
            ],
        );
        if let Some(old) = existing.and_then(|e| e.get("status")) {
            copy(old, &mut s, &["currentMetrics", "conditions"]);
        }
        out.insert("status".into(), Value::Object(s));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_upstream() {
        let mut h = json!({"spec": {"maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}});
        apply_defaults(&mut h);
        assert_eq!(h["spec"]["minReplicas"], 1);
        assert_eq!(h["spec"]["metrics"], json!([cpu_metric(80)]));
        assert_eq!(h["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(
            h["spec"]["behavior"]["scaleUp"]["policies"][0],
            json!({"type": "Pods", "value": 4, "periodSeconds": 15})
        );
        assert_eq!(h["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 60);
        assert_eq!(h["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max");
        let mut plain = json!({"spec": {"maxReplicas": 3}});
        apply_defaults(&mut plain);
        assert!(plain["spec"].get("behavior").is_none(), "no behavior is not defaulted");
    }

    #[test]
    fn v1_round_trips_through_v2() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        let v2 = v1_to_v2(&v1, None);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(v2["spec"]["metrics"], json!([cpu_metric(50)]));
        let mut stored = v2.clone();
        stored["status"] = json!({"currentReplicas": 2, "desiredReplicas": 3,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 97, "averageValue": "97m"}}}]});
        let back = v2_to_v1(&stored);
        assert_eq!(back["spec"], v1["spec"]);
        assert_eq!(back["status"]["currentCPUUtilizationPercentage"], 97);
        assert_eq!(back["status"]["desiredReplicas"], 3);
    }

    #[test]
    fn v1_update_keeps_what_v1_cannot_express() {
        let memory = json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}});
        let stored = json!({"spec": {"maxReplicas": 5, "metrics": [cpu_metric(80), memory.clone()],
                                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}}});
        let v1 = json!({"spec": {"maxReplicas": 4, "targetCPUUtilizationPercentage": 60}});
        let v2 = v1_to_v2(&v1, Some(&stored));
        assert_eq!(v2["spec"]["metrics"], json!([cpu_metric(60), memory]));
        assert_eq!(v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 10);
        assert_eq!(v2["spec"]["maxReplicas"], 4);
    }
}
