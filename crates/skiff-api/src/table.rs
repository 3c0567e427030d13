//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for
//! with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! Columns follow the upstream printers (pkg/printers/internalversion/printers.go);
//! columns with `priority: 1` are shown by `-o wide`.

use jiff::Timestamp;
use serde_json::{Value, json};

/// A column: name, type, format, description, priority.
type Column = (&'static str, &'static str, u8);

fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Node" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "Deployment" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "HorizontalPodAutoscaler" => vec![
            ("Name", "string", 0),
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            ("Age", "string", 0),
        ],
        "PodDisruptionBudget" => vec![
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        "Namespace" => vec![("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
        "Service" => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Event" => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        "ConfigMap" => vec![("Name", "string", 0), ("Data", "string", 0), ("Age", "string", 0)],
        "Secret" => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        "Lease" => vec![("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)],
        "CertificateSigningRequest" => vec![
            ("Name", "string", 0),
            ("Age", "string", 0),
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("RequestedDuration", "string", 0),
            ("Condition", "string", 0),
        ],
        "Endpoints" => vec![("Name", "string", 0), ("Endpoints", "string", 0), ("Age", "string", 0)],
        "EndpointSlice" => vec![
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "StorageClass" => vec![
            ("Name", "string", 0),
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            ("Age", "string", 0),
        ],
        "PersistentVolume" => vec![
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        "PersistentVolumeClaim" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        _ => vec![("Name", "string", 0), ("Age", "string", 0)],
    }
}

/// Renders a duration as upstream's `duration.HumanDuration` does (`45s`, `3m20s`,
/// `5h`, `2d3h`, `400d`, `3y20d`).
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if d / 365 < 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value, path: &str, now: Timestamp) -> String {
    obj.pointer(path)
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| human_duration(now.as_second() - t.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn s<'a>(obj: &'a Value, path: &str) -> &'a str {
    obj.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn i(obj: &Value, path: &str) -> i64 {
    obj.pointer(path).and_then(Value::as_i64).unwrap_or(0)
}

fn or_default<'a>(v: &'a str, default: &'a str) -> &'a str {
    if v.is_empty() { default } else { v }
}

/// Access modes as upstream prints them (`RWO,ROX,RWX,RWOP`).
fn access_modes(modes: Option<&Value>) -> String {
    let modes: Vec<&str> = modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
        .iter()
        .zip(["RWO", "ROX", "RWX", "RWOP"])
        .filter(|(m, _)| modes.contains(m))
        .map(|(_, short)| short)
        .collect::<Vec<_>>()
        .join(",")
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn containers_images(obj: &Value, spec_path: &str) -> (String, String) {
    let cs = obj
        .pointer(&format!("{spec_path}/containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return "<none>".into() };
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    if let Some(m) = sel
        .as_object()
        .filter(|m| !m.contains_key("matchLabels") && !m.contains_key("matchExpressions"))
    {
        parts.extend(m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let vals: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key = s(e, "/key");
            parts.push(match s(e, "/operator") {
                "In" => format!("{key} in ({})", vals.join(",")),
                "NotIn" => format!("{key} notin ({})", vals.join(",")),
                "Exists" => key.to_string(),
                _ => format!("!{key}"),
            });
        }
    }
    or_none(parts.join(","))
}

/// `a,b,c + 2 more...` as upstream prints long lists; `<none>` when empty.
fn list_more(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    let shown = items[..items.len().min(max)].join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else {
        shown
    }
}

/// The pod STATUS column, as upstream computes it: the phase or `status.reason`,
/// overridden by init-container and container waiting/terminated reasons, then
/// `Terminating` for pods being deleted.
pub fn pod_status(pod: &Value) -> String {
    let mut reason = s(pod, "/status/reason").to_string();
    if reason.is_empty() {
        reason = s(pod, "/status/phase").to_string();
    }
    let inits = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let n_init = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut initializing = false;
    for (idx, c) in inits.iter().enumerate() {
        let term = c.pointer("/state/terminated");
        if term.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        initializing = true;
        if let Some(t) = term {
            let r = s(t, "/reason");
            reason = if r.is_empty() {
                format!("Init:ExitCode:{}", i(t, "/exitCode"))
            } else {
                format!("Init:{r}")
            };
        } else if let Some(w) = c
            .pointer("/state/waiting")
            .filter(|w| !s(w, "/reason").is_empty() && s(w, "/reason") != "PodInitializing")
        {
            reason = format!("Init:{}", s(w, "/reason"));
        } else {
            reason = format!("Init:{idx}/{n_init}");
        }
        break;
    }
    if !initializing {
        let mut has_running = false;
        let cs = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in cs.iter().rev() {
            if let Some(w) = c.pointer("/state/waiting").filter(|w| !s(w, "/reason").is_empty()) {
                reason = s(w, "/reason").to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                let r = s(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if i(t, "/signal") != 0 {
                    format!("Signal:{}", i(t, "/signal"))
                } else {
                    format!("ExitCode:{}", i(t, "/exitCode"))
                };
            } else if c.get("ready") == Some(&Value::Bool(true)) && c.pointer("/state/running").is_some() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = if pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True"))
            {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        reason = if s(pod, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    if reason.is_empty() { "Pending".into() } else { reason }
}

fn cells(kind: &str, o: &Value, now: Timestamp) -> Vec<Value> {
    let name = s(o, "/metadata/name").to_string();
    match kind {
        "Pod" => {
            let cs = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = cs.iter().filter(|c| c.get("ready") == Some(&Value::Bool(true))).count();
            let restarts: i64 = cs.iter().map(|c| i(c, "/restartCount")).sum();
            let gates = o
                .pointer("/spec/readinessGates")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(age(o, "/metadata/creationTimestamp", now)),
                json!(or_none(s(o, "/status/podIP").into())),
                json!(or_none(s(o, "/spec/nodeName").into())),
                json!(or_none(s(o, "/status/nominatedNodeName").into())),
                json!(if gates == 0 {
                    "<none>".to_string()
                } else {
                    format!("0/{gates}")
                }),
            ]
        }
        "Node" => {
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut status = match conds.iter().find(|c| s(c, "/type") == "Ready").map(|c| s(c, "/status")) {
                Some("True") => "Ready".to_string(),
                Some("False") => "NotReady".to_string(),
                _ => "Unknown".to_string(),
            };
            if o.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            let addr = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| s(x, "/type") == t))
                    .map(|x| s(x, "/address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            vec![
                json!(name),
                json!(status),
                json!(or_none(roles.join(","))),
                json!(age(o, "/metadata/creationTimestamp", now)),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(s(o, "/status/nodeInfo/osImage")),
                json!(s(o, "/status/nodeInfo/kernelVersion")),
                json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]
        }
        "Deployment" | "ReplicaSet" | "ReplicationController" => {
            let (c, im) = containers_images(o, "/spec/template/spec");
            // A ReplicationController's selector is a plain label map.
            let sel = selector_string(o.pointer("/spec/selector"));
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            if kind == "Deployment" {
                vec![
                    json!(name),
                    json!(format!("{}/{}", i(o, "/status/readyReplicas"), desired)),
                    json!(i(o, "/status/updatedReplicas")),
                    json!(i(o, "/status/availableReplicas")),
                    json!(age(o, "/metadata/creationTimestamp", now)),
                    json!(c),
                    json!(im),
                    json!(sel),
                ]
            } else {
                vec![
                    json!(name),
                    json!(desired),
                    json!(i(o, "/status/replicas")),
                    json!(i(o, "/status/readyReplicas")),
                    json!(age(o, "/metadata/creationTimestamp", now)),
                    json!(c),
                    json!(im),
                    json!(sel),
                ]
            }
        }
        "HorizontalPodAutoscaler" => {
            let min = match o.pointer("/spec/minReplicas").and_then(Value::as_i64) {
                Some(m) => m.to_string(),
                None => "<unset>".into(),
            };
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    s(o, "/spec/scaleTargetRef/kind"),
                    s(o, "/spec/scaleTargetRef/name")
                )),
                json!(hpa_targets(o)),
                json!(min),
                json!(i(o, "/spec/maxReplicas")),
                json!(i(o, "/status/currentReplicas")),
                json!(age(o, "/metadata/creationTimestamp", now)),
            ]
        }
        "PodDisruptionBudget" => {
            let int_or_string = |p: &str| match o.pointer(p) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "N/A".into(),
            };
            vec![
                json!(name),
                json!(int_or_string("/spec/minAvailable")),
                json!(int_or_string("/spec/maxUnavailable")),
                json!(i(o, "/status/disruptionsAllowed")),
                json!(age(o, "/metadata/creationTimestamp", now)),
            ]
        }
        "Namespace" => vec![
            json!(name),
            json!(s(o, "/status/phase")),
            json!(age(o, "/metadata/creationTimestamp", now)),
        ],
        "Service" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let np = i(p, "/nodePort");
                            let proto = if s(p, "/protocol").is_empty() {
                                "TCP"
                            } else {
                                s(p, "/protocol")
                            };
                            if np > 0 {
                                format!("{}:{np}/{proto}", i(p, "/port"))
                            } else {
                                format!("{}/{proto}", i(p, "/port"))
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let external: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|x| s(x, "/ip").to_string()).collect())
                .unwrap_or_default();
            let ext = if !external.is_empty() {
                external.join(",")
            } else if s(o, "/spec/type") == "LoadBalancer" {
                "<pending>".into()
            } else {
                "<none>".into()
            };
            vec![
                json!(name),
                json!(s(o, "/spec/type")),
                json!(or_none(s(o, "/spec/clusterIP").into())),
                json!(ext),
                json!(or_none(ports.join(","))),
                json!(age(o, "/metadata/creationTimestamp", now)),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "Event" => {
            let last = if o.pointer("/lastTimestamp").is_some_and(|v| !v.is_null()) {
                age(o, "/lastTimestamp", now)
            } else if o.pointer("/eventTime").is_some_and(|v| !v.is_null()) {
                age(o, "/eventTime", now)
            } else {
                age(o, "/metadata/creationTimestamp", now)
            };
            vec![
                json!(last),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(format!(
                    "{}/{}",
                    s(o, "/involvedObject/kind").to_lowercase(),
                    s(o, "/involvedObject/name")
                )),
                json!(s(o, "/message")),
            ]
        }
        "ConfigMap" => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len())
                + o.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![
                json!(name),
                json!(n.to_string()),
                json!(age(o, "/metadata/creationTimestamp", now)),
            ]
        }
        "Secret" => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![
                json!(name),
                json!(s(o, "/type")),
                json!(n.to_string()),
                json!(age(o, "/metadata/creationTimestamp", now)),
            ]
        }
        "StorageClass" => {
            let default = [
                "storageclass.kubernetes.io/is-default-class",
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|k| {
                o.pointer("/metadata/annotations")
                    .and_then(|a| a.get(*k))
                    .and_then(Value::as_str)
                    == Some("true")
            });
            let shown = if default {
                format!("{name} (default)")
            } else {
                name.to_string()
            };
            vec![
                json!(shown),
                json!(s(o, "/provisioner")),
                json!(or_default(s(o, "/reclaimPolicy"), "Delete")),
                json!(or_default(s(o, "/volumeBindingMode"), "Immediate")),
                json!(
                    o.get("allowVolumeExpansion")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                        .to_string()
                ),
                json!(age(o, "/metadata/creationTimestamp", now)),
            ]
        }
        "PersistentVolume" => {
            let claim = match (s(o, "/spec/claimRef/namespace"), s(o, "/spec/claimRef/name")) {
                (_, "") => String::new(),
                (ns, n) => format!("{ns}/{n}"),
            };
            vec![
                json!(name),
                json!(s(o, "/spec/capacity/storage")),
                json!(access_modes(o.pointer("/spec/accessModes"))),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(o, "/status/phase")),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                json!(or_default(s(o, "/spec/volumeAttributesClassName"), "<unset>")),
                json!(s(o, "/status/reason")),
                json!(age(o, "/metadata/creationTimestamp", now)),
                json!(s(o, "/spec/volumeMode")),
            ]
        }
        "PersistentVolumeClaim" => {
            let bound = !s(o, "/spec/volumeName").is_empty();
            vec![
                json!(name),
                json!(if o.pointer("/metadata/deletionTimestamp").is_some() {
                    "Terminating"
                } else {
                    s(o, "/status/phase")
                }),
                json!(s(o, "/spec/volumeName")),
                json!(if bound { s(o, "/status/capacity/storage") } else { "" }),
                json!(if bound {
                    access_modes(o.pointer("/status/accessModes"))
                } else {
                    String::new()
                }),
                json!(s(o, "/spec/storageClassName")),
                json!(or_default(s(o, "/spec/volumeAttributesClassName"), "<unset>")),
                json!(age(o, "/metadata/creationTimestamp", now)),
                json!(s(o, "/spec/volumeMode")),
            ]
        }
        "CertificateSigningRequest" => vec![
            json!(name),
            json!(age(o, "/metadata/creationTimestamp", now)),
            json!(s(o, "/spec/signerName")),
            json!(s(o, "/spec/username")),
            json!(match o.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
                Some(secs) => human_seconds(secs),
                None => "<none>".to_string(),
            }),
            json!(csr_condition(o)),
        ],
        "Lease" => vec![
            json!(name),
            json!(s(o, "/spec/holderIdentity")),
            json!(age(o, "/metadata/creationTimestamp", now)),
        ],
        "Endpoints" => {
            let mut all = Vec::new();
            for sub in o.get("subsets").and_then(Value::as_array).cloned().unwrap_or_default() {
                let ports: Vec<i64> = sub
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(|p| p.iter().map(|p| i(p, "/port")).collect())
                    .unwrap_or_default();
                for a in sub
                    .get("addresses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    if ports.is_empty() {
                        all.push(s(&a, "/ip").to_string());
                    }
                    for p in &ports {
                        all.push(format!("{}:{p}", s(&a, "/ip")));
                    }
                }
            }
            vec![
                json!(name),
                json!(list_more(&all, 3)),
                json!(age(o, "/metadata/creationTimestamp", now)),
            ]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = o
                .get("ports")
                .and_then(Value::as_array)
                .map(|p| p.iter().map(|p| i(p, "/port").to_string()).collect())
                .unwrap_or_default();
            let addrs: Vec<String> = o
                .get("endpoints")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .filter_map(|e| e.pointer("/addresses/0").and_then(Value::as_str).map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                json!(name),
                json!(s(o, "/addressType")),
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(list_more(&addrs, 3)),
                json!(age(o, "/metadata/creationTimestamp", now)),
            ]
        }
        _ => vec![json!(name), json!(age(o, "/metadata/creationTimestamp", now))],
    }
}

/// A duration in seconds as kubectl prints it (`10m`, `24h`, `2d`).
fn human_seconds(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 && s >= 86_400 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 && s >= 3_600 => format!("{}h", s / 3_600),
        s if s % 60 == 0 && s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A CSR's condition column, as upstream's printer: the types of its `True`
/// conditions joined by commas, plus `Issued` once `status.certificate` is set;
/// `Pending` when there are none.
fn csr_condition(o: &Value) -> String {
    let mut out: Vec<String> = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter(|c| c.get("status").and_then(Value::as_str).is_none_or(|s| s == "True"))
                .filter_map(|c| c.get("type").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if o.pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        out.push("Issued".into());
    }
    if out.is_empty() {
        "Pending".into()
    } else {
        out.join(",")
    }
}

/// Builds a `Table` for `objects` of `kind`. `list_meta` is the list's `metadata`
/// (resourceVersion, continue). `include_object` is the `includeObject` parameter:
/// `None` omits row objects, `Metadata` (the default) embeds `PartialObjectMetadata`,
/// `Object` embeds the full object.
pub fn table(kind: &str, objects: &[Value], list_meta: Value, include_object: &str, now: Timestamp) -> Value {
    let cols: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(name, ty, priority)| {
            json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            json!({"cells": cells(kind, o, now), "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": cols, "rows": rows})
}

/// Builds a `Table` for custom objects from their CRD version's
/// `additionalPrinterColumns`: `Name`, then the columns (types `date` shown as
/// ages), as upstream's CRD table convertor does; without columns, `Name` and `Age`.
pub fn custom_table(
    columns: &[crate::crd::PrinterColumn],
    objects: &[Value],
    list_meta: Value,
    include_object: &str,
    now: Timestamp,
) -> Value {
    if columns.is_empty() {
        return table("", objects, list_meta, include_object, now);
    }
    let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0})];
    for c in columns {
        let ty = if c.type_ == "date" { "string" } else { c.type_.as_str() };
        cols.push(
            json!({"name": c.name, "type": ty, "format": if c.type_ == "date" { "date" } else { "" },
                         "description": "", "priority": c.priority}),
        );
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![json!(s(o, "/metadata/name"))];
            for c in columns {
                let v = crate::crd::column_value(o, &c.json_path);
                cells.push(match (c.type_.as_str(), v) {
                    ("date", Some(Value::String(_))) => {
                        let ptr = format!("/{}", c.json_path.trim_start_matches('.').replace('.', "/"));
                        json!(age(o, &ptr, now))
                    }
                    (_, Some(v)) => v,
                    (_, None) => Value::Null,
                });
            }
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": cols, "rows": rows})
}

/// The TARGETS column of `kubectl get hpa` (upstream `formatHPAMetrics`): per
/// resource metric `cpu: 97%/50%` or `memory: 12Mi/100Mi`, `<unknown>` without a
/// current value, at most two metrics then `+ N more...`.
fn hpa_targets(o: &Value) -> String {
    let specs = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let current = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut parts = Vec::new();
    for (idx, m) in specs.iter().enumerate() {
        let key = match m["type"].as_str() {
            Some("Resource") => "resource",
            Some("ContainerResource") => "containerResource",
            Some("Pods") => "pods",
            Some("Object") => "object",
            Some("External") => "external",
            _ => continue,
        };
        let src = &m[key];
        let target = &src["target"];
        let cur = current.get(idx).map(|c| &c[key]["current"]);
        let prefix = match key {
            "resource" | "containerResource" => format!("{}: ", src["name"].as_str().unwrap_or_default()),
            _ => String::new(),
        };
        let text = if let Some(t) = target["averageUtilization"].as_i64() {
            let c = cur
                .and_then(|c| c["averageUtilization"].as_i64())
                .map(|u| format!("{u}%"))
                .unwrap_or_else(|| "<unknown>".into());
            format!("{prefix}{c}/{t}%")
        } else {
            let t = target["averageValue"]
                .as_str()
                .or(target["value"].as_str())
                .unwrap_or_default();
            let c = cur
                .and_then(|c| c["averageValue"].as_str().or(c["value"].as_str()))
                .unwrap_or("<unknown>");
            format!("{prefix}{c}/{t}")
        };
        parts.push(text);
    }
    let more = parts.len().saturating_sub(2);
    parts.truncate(2);
    let mut out = parts.join(", ");
    if more > 0 {
        out.push_str(&format!(" + {more} more..."));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(1200), "20m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn hpa_rows() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let hpa = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                                 {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 97, "averageValue": "97m"}}}]}});
        let t = table("HorizontalPodAutoscaler", &[hpa], json!({}), "Metadata", now);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "Deployment/web",
                "cpu: 97%/50%, memory: <unknown>/100Mi",
                "1",
                3,
                2,
                "60s"
            ])
        );
    }

    #[test]
    fn pod_rows() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let pod = json!({"metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2, "state": {"running": {}}}]}});
        let t = table("Pod", &[pod], json!({}), "Metadata", now);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web-1",
                "1/1",
                "Running",
                "2",
                "60s",
                "10.42.0.5",
                "n1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web-1");
    }

    #[test]
    fn storage_rows() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let created = "2026-01-01T00:00:00Z";
        let sc = json!({"metadata": {"name": "local-path", "creationTimestamp": created,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
        let t = table("StorageClass", &[sc], json!({}), "Metadata", now);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "local-path (default)",
                "rancher.io/local-path",
                "Delete",
                "WaitForFirstConsumer",
                "false",
                "60s"
            ])
        );
        let pvc = json!({"metadata": {"name": "data", "creationTimestamp": created},
            "spec": {"volumeName": "pvc-1", "storageClassName": "local-path", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"]}});
        let t = table("PersistentVolumeClaim", &[pvc], json!({}), "Metadata", now);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "data",
                "Bound",
                "pvc-1",
                "1Gi",
                "RWO,RWX",
                "local-path",
                "<unset>",
                "60s",
                "Filesystem"
            ])
        );
        let pv = json!({"metadata": {"name": "pvc-1", "creationTimestamp": created},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
                     "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "local-path", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        let t = table("PersistentVolume", &[pv], json!({}), "Metadata", now);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "pvc-1",
                "1Gi",
                "RWO",
                "Delete",
                "Bound",
                "default/data",
                "local-path",
                "<unset>",
                "",
                "60s",
                "Filesystem"
            ])
        );
    }

    #[test]
    fn pod_status_reasons() {
        let waiting = json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(pod_status(&waiting), "ImagePullBackOff");
        let deleting = json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&deleting), "Terminating");
        let crash = json!({"status": {"phase": "Running", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&crash), "CrashLoopBackOff");
    }
}
