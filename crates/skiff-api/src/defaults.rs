//! Defaulting of built-in types, applied on create and update as the upstream
//! `SetDefaults_*` functions (pkg/apis/*/v1/defaults.go) and default admission do.

use serde_json::{Map, Value, json};

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

/// Inserts `value` at `key` when the key is absent or null.
fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// Applies defaults to an object of the given group and kind, in place.
pub fn apply(group: &str, kind: &str, object: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = object.get_mut("spec") {
                pod_spec(spec);
            }
        }
        ("apps", "Deployment") => deployment(object),
        ("apps", "ReplicaSet") => {
            if let Some(spec) = object.get_mut("spec").and_then(obj) {
                default_field(spec, "replicas", json!(1));
                if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
                    pod_spec(ps);
                }
            }
            copy_template_labels(object);
        }
        ("", "Namespace") => {
            let m = object.as_object_mut().expect("object");
            let spec = m.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                default_field(spec, "finalizers", json!(["kubernetes"]));
            }
            let status = m.entry("status").or_insert_with(|| json!({}));
            if let Some(status) = status.as_object_mut() {
                default_field(status, "phase", json!("Active"));
            }
        }
        ("", "Service") => service(object),
        ("autoscaling", "HorizontalPodAutoscaler") => crate::autoscaling::apply_defaults(object),
        ("", "LimitRange") => crate::limit_range::apply_defaults(object),
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(pc) = obj(object) {
                default_field(pc, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        ("apps", "StatefulSet" | "DaemonSet") | ("", "ReplicationController") | ("batch", "Job") => {
            if let Some(spec) = object.get_mut("spec").and_then(obj) {
                if kind == "StatefulSet" || kind == "ReplicationController" {
                    default_field(spec, "replicas", json!(1));
                }
                if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
                    pod_spec(ps);
                }
            }
            match kind {
                "ReplicationController" => replication_controller(object),
                "Job" => job(object),
                "DaemonSet" => daemon_set(object),
                "StatefulSet" => stateful_set(object),
                _ => {}
            }
        }
        ("batch", "CronJob") => {
            if let Some(spec) = object.get_mut("spec").and_then(obj) {
                default_field(spec, "concurrencyPolicy", json!("Allow"));
                default_field(spec, "suspend", json!(false));
                default_field(spec, "successfulJobsHistoryLimit", json!(3));
                default_field(spec, "failedJobsHistoryLimit", json!(1));
            }
            if let Some(ps) = object.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                pod_spec(ps);
            }
        }
        _ => {}
    }
}

/// Upstream `SetDefaults_ReplicationController`: with template labels, an empty
/// `spec.selector` and empty `metadata.labels` become those labels.
fn replication_controller(object: &mut Value) {
    let Some(labels) = object
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.is_object())
        .cloned()
    else {
        return;
    };
    if let Some(spec) = object.get_mut("spec").and_then(obj)
        && spec
            .get("selector")
            .is_none_or(|s| s.as_object().is_none_or(Map::is_empty))
    {
        spec.insert("selector".into(), labels);
    }
    copy_template_labels(object);
}

/// Upstream: a Deployment/ReplicaSet without `metadata.labels` gets the template's labels.
fn copy_template_labels(object: &mut Value) {
    let labels = object.pointer("/spec/template/metadata/labels").cloned();
    if let (Some(labels), Some(meta)) = (labels, object.get_mut("metadata").and_then(obj))
        && meta
            .get("labels")
            .is_none_or(|l| l.as_object().is_none_or(Map::is_empty))
    {
        meta.insert("labels".into(), labels);
    }
}

/// Upstream `SetDefaults_Job` plus the Job strategy's create-time selector
/// generation: without `manualSelector: true` and a selector, the selector matches
/// the Job's uid and the template gets the uid and name labels (both the
/// `batch.kubernetes.io/` and the legacy spelling).
fn job(object: &mut Value) {
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(spec) = object.get_mut("spec").and_then(obj) else {
        return;
    };
    let both_unset =
        spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null);
    if both_unset {
        spec.insert("completions".into(), json!(1));
    }
    default_field(spec, "parallelism", json!(1));
    let per_index = spec.get("backoffLimitPerIndex").is_some_and(|v| !v.is_null());
    default_field(spec, "backoffLimit", json!(if per_index { i32::MAX } else { 6 }));
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    let has_failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    default_field(
        spec,
        "podReplacementPolicy",
        json!(if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    let has_selector = spec.get("selector").is_some_and(|v| !v.is_null());
    if manual || has_selector {
        return;
    }
    let (Some(uid), Some(name)) = (uid, name) else { return };
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    let Some(template) = template.as_object_mut() else {
        return;
    };
    let meta = template.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else { return };
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    if let Some(labels) = labels.as_object_mut() {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.insert(k.into(), json!(v));
        }
    }
}

/// Upstream apps/v1 `SetDefaults_DaemonSet`.
fn daemon_set(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(obj) else {
        return;
    };
    default_field(spec, "revisionHistoryLimit", json!(10));
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if strategy.is_null() {
        *strategy = json!({});
    }
    if let Some(s) = strategy.as_object_mut() {
        default_field(s, "type", json!("RollingUpdate"));
        if s.get("type") == Some(&json!("RollingUpdate")) {
            let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default_field(ru, "maxUnavailable", json!(1));
                default_field(ru, "maxSurge", json!(0));
            }
        }
    }
}

/// Upstream apps/v1 `SetDefaults_StatefulSet` (replicas are defaulted by the caller).
fn stateful_set(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(obj) else {
        return;
    };
    default_field(spec, "podManagementPolicy", json!("OrderedReady"));
    default_field(spec, "revisionHistoryLimit", json!(10));
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if strategy.is_null() {
        *strategy = json!({});
    }
    if let Some(s) = strategy.as_object_mut() {
        default_field(s, "type", json!("RollingUpdate"));
        if s.get("type") == Some(&json!("RollingUpdate")) {
            let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default_field(ru, "partition", json!(0));
            }
        }
    }
    let retention = spec
        .entry("persistentVolumeClaimRetentionPolicy")
        .or_insert_with(|| json!({}));
    if retention.is_null() {
        *retention = json!({});
    }
    if let Some(r) = retention.as_object_mut() {
        default_field(r, "whenDeleted", json!("Retain"));
        default_field(r, "whenScaled", json!("Retain"));
    }
    if let Some(Value::Array(claims)) = spec.get_mut("volumeClaimTemplates") {
        for c in claims.iter_mut() {
            if let Some(s) = c.get_mut("spec").and_then(obj) {
                default_field(s, "volumeMode", json!("Filesystem"));
            }
        }
    }
}

fn deployment(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec").and_then(obj) {
        default_field(spec, "replicas", json!(1));
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_field(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if let Some(s) = strategy.as_object_mut() {
            default_field(s, "type", json!("RollingUpdate"));
            if s.get("type") == Some(&json!("RollingUpdate")) {
                let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(ru) = ru.as_object_mut() {
                    default_field(ru, "maxUnavailable", json!("25%"));
                    default_field(ru, "maxSurge", json!("25%"));
                }
            }
        }
        if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
            pod_spec(ps);
        }
    }
    copy_template_labels(object);
}

fn service(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec").and_then(obj) {
        default_field(spec, "type", json!("ClusterIP"));
        default_field(spec, "sessionAffinity", json!("None"));
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports.iter_mut().filter_map(obj) {
                default_field(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    default_field(p, "targetPort", port);
                }
            }
        }
    }
}

fn probe(p: &mut Value) {
    if let Some(p) = obj(p) {
        default_field(p, "timeoutSeconds", json!(1));
        default_field(p, "periodSeconds", json!(10));
        default_field(p, "successThreshold", json!(1));
        default_field(p, "failureThreshold", json!(3));
        if let Some(h) = p.get_mut("httpGet").and_then(obj) {
            default_field(h, "path", json!("/"));
            default_field(h, "scheme", json!("HTTP"));
        }
    }
}

fn container(c: &mut Value) {
    let Some(c) = obj(c) else { return };
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
    let policy = if image_tag(&image).is_none_or(|t| t == "latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    default_field(c, "imagePullPolicy", json!(policy));
    default_field(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(c, "terminationMessagePolicy", json!("File"));
    default_field(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(obj) {
            default_field(p, "protocol", json!("TCP"));
        }
    }
    for key in ["readinessProbe", "livenessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(key) {
            probe(p);
        }
    }
}

/// The tag of an image reference (`None` when untagged or pinned by digest only).
pub fn image_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.split_once(':').map(|(_, t)| t)
}

/// Defaults a PodSpec (pod, or a template's spec).
pub fn pod_spec(spec: &mut Value) {
    let Some(s) = obj(spec) else { return };
    default_field(s, "restartPolicy", json!("Always"));
    default_field(s, "dnsPolicy", json!("ClusterFirst"));
    default_field(s, "schedulerName", json!("default-scheduler"));
    default_field(s, "terminationGracePeriodSeconds", json!(30));
    default_field(s, "securityContext", json!({}));
    default_field(s, "enableServiceLinks", json!(true));

    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = s.get_mut(key) {
            cs.iter_mut().for_each(container);
        }
    }
}

/// ServiceAccount admission for pods (not templates): a pod without
/// `serviceAccountName` runs as its namespace's `default` account.
pub fn service_account(pod: &mut Value) {
    let Some(s) = pod.get_mut("spec").and_then(obj) else {
        return;
    };
    default_field(s, "serviceAccountName", json!("default"));
    if let Some(sa) = s.get("serviceAccountName").cloned() {
        default_field(s, "serviceAccount", sa);
    }
}

/// Tolerations the DefaultTolerationSeconds admission plugin adds to every pod
/// (`not-ready` and `unreachable`, NoExecute, 300 s), unless already tolerated.
pub fn default_tolerations(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(obj) else {
        return;
    };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else { return };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let present = list.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                || (t.get("key").is_none() && t.get("operator").and_then(Value::as_str) == Some("Exists"))
        });
        if !present {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_match_upstream() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox:1.35", "readinessProbe": {"httpGet": {"port": 8080}}}]}});
        apply("", "Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["spec"]["containers"][1]["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(
            pod["spec"]["containers"][1]["readinessProbe"]["httpGet"]["scheme"],
            "HTTP"
        );
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn replication_controllers_default_selector_and_labels_from_the_template() {
        let mut rc = json!({"metadata": {"name": "web"}, "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}});
        apply("", "ReplicationController", &mut rc);
        assert_eq!(rc["spec"]["replicas"], 1);
        assert_eq!(rc["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "web"}));
        let mut given = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"selector": {"app": "web"},
            "template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}});
        apply("", "ReplicationController", &mut given);
        assert_eq!(
            given["spec"]["selector"],
            json!({"app": "web"}),
            "an explicit selector is kept"
        );
        assert_eq!(given["metadata"]["labels"], json!({"x": "y"}));
    }

    #[test]
    fn job_defaults_generate_a_selector_from_the_uid() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}});
        apply("batch", "Job", &mut j);
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(j["spec"]["completionMode"], "NonIndexed");
        assert_eq!(j["spec"]["suspend"], false);
        assert_eq!(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let labels = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(labels["job-name"], "pi");

        // A work queue keeps completions unset; a manual selector is left alone.
        let mut q = json!({"metadata": {"name": "q", "uid": "u-2"},
            "spec": {"parallelism": 3, "manualSelector": true, "template": {"spec": {"containers": []}}}});
        apply("batch", "Job", &mut q);
        assert!(q["spec"].get("completions").is_none());
        assert!(q["spec"].get("selector").is_none());
        assert_eq!(q["spec"]["parallelism"], 3);
    }

    #[test]
    fn cronjob_daemonset_statefulset_defaults() {
        let mut c = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        apply("batch", "CronJob", &mut c);
        assert_eq!(c["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(c["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(c["spec"]["suspend"], false);

        let mut d = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply("apps", "DaemonSet", &mut d);
        assert_eq!(d["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);

        let mut s = json!({"spec": {"template": {"spec": {"containers": []}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]}});
        apply("apps", "StatefulSet", &mut s);
        assert_eq!(s["spec"]["replicas"], 1);
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(s["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
        assert_eq!(
            s["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
            "Retain"
        );
        assert_eq!(s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("busybox"), None);
        assert_eq!(image_tag("localhost:5000/busybox"), None);
        assert_eq!(image_tag("localhost:5000/busybox:1.35"), Some("1.35"));
        assert_eq!(image_tag("busybox@sha256:abc"), None);
    }

    #[test]
    fn default_tolerations_added_once() {
        let mut pod = json!({"spec": {}});
        default_tolerations(&mut pod);
        default_tolerations(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
    }
}
