//! End to end: resource metrics and the HorizontalPodAutoscaler.
//! `kubectl top nodes` and `kubectl top pods` show numbers scraped from the
//! kubelet's Summary API through `metrics.k8s.io`; a Deployment autoscaled with
//! `kubectl autoscale --cpu-percent=50 --min=1 --max=3` (an `autoscaling/v1` object)
//! whose pod burns a full core is scaled up, with the `SuccessfulRescale` event
//! and the HPA's status (read as `autoscaling/v2`) showing it.
//! Real binary, real kubectl, real containerd/CNI.
//!
//! Only one cluster may run on a host at a time: run it under `flock
//! /tmp/skiff-e2e.lock cargo nextest run -p skiff --test metrics`.

#[path = "support.rs"]
#[allow(dead_code)] // helpers other e2e tests use
mod support;

use std::time::Duration;

use support::{Cluster, eventually, require_environment};

const IDLE: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: idle
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: idle
    image: busybox
    command: ["sleep", "3600"]
"#;

/// One pod requesting 100m that burns a whole core.
const BURNER: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: burner
spec:
  replicas: 1
  selector:
    matchLabels: {app: burner}
  template:
    metadata:
      labels: {app: burner}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: burn
        image: busybox
        command: ["sh", "-c", "while :; do :; done"]
        resources:
          requests: {cpu: 100m}
"#;

#[test]
fn top_and_horizontal_pod_autoscaler() {
    require_environment();
    let c = Cluster::start_with(&["--horizontal-pod-autoscaler-sync-period", "5s"]);
    c.wait_node_ready();
    let apply = |m: &str| {
        let out = c.kubectl_stdin(&["apply", "-f", "-"], m);
        assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    };
    apply(IDLE);
    apply(BURNER);
    c.kubectl_ok(&["wait", "--for=condition=Ready", "pod/idle", "--timeout=60s"]);

    // `kubectl top nodes`: NAME CPU(cores) CPU% MEMORY(bytes) MEMORY%.
    let nodes = eventually("kubectl top nodes", Duration::from_secs(40), || {
        let out = c.kubectl(&["top", "nodes", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !text.trim().is_empty() {
            Ok(text)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let cols: Vec<&str> = nodes.split_whitespace().collect();
    assert!(cols.len() >= 5, "top nodes: {nodes}");
    assert!(
        cols[1].ends_with('m') || cols[1].parse::<u32>().is_ok(),
        "cpu column: {nodes}"
    );
    assert!(
        cols[3].ends_with("Mi") || cols[3].ends_with("Gi"),
        "memory column: {nodes}"
    );
    let memory_mi: u64 = cols[3].trim_end_matches("Mi").parse().unwrap_or(1024);
    assert!(memory_mi > 0, "node memory in use: {nodes}");

    // `kubectl top pods`: the idle pod uses (almost) no cpu and some memory.
    let pods = eventually("kubectl top pod idle", Duration::from_secs(40), || {
        let out = c.kubectl(&["top", "pod", "idle", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.starts_with("idle") {
            Ok(text)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let cols: Vec<&str> = pods.split_whitespace().collect();
    assert_eq!(cols.len(), 3, "top pod: {pods}");
    let cpu_m: u64 = cols[1].trim_end_matches('m').parse().expect("cpu in millicores");
    assert!(cpu_m < 50, "an idle sleep uses almost no cpu: {pods}");
    assert!(
        cols[2].ends_with("Mi") || cols[2].ends_with("Ki"),
        "memory column: {pods}"
    );

    // The burner shows about a core (at least well above its 100m request).
    let burner = eventually("burner uses cpu", Duration::from_secs(40), || {
        let out = c.kubectl(&["top", "pods", "-l", "app=burner", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let cpu: u64 = text
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.trim_end_matches('m').parse().ok())
            .unwrap_or(0);
        if cpu > 300 {
            Ok(text)
        } else {
            Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    assert!(burner.starts_with("burner-"), "{burner}");

    // A write verb on metrics is refused.
    let out = c.kubectl(&[
        "delete",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/idle",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MethodNotAllowed")
            || String::from_utf8_lossy(&out.stderr).contains("405"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    c.kubectl_ok(&[
        "autoscale",
        "deployment",
        "burner",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    let v1 = c.kubectl_ok(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "burner",
        "-o",
        "jsonpath={.spec.targetCPUUtilizationPercentage}",
    ]);
    assert_eq!(v1, "50");
    let desired = eventually("HPA scales the deployment up", Duration::from_secs(60), || {
        let d = c.kubectl_ok(&[
            "get",
            "horizontalpodautoscalers.v2.autoscaling",
            "burner",
            "-o",
            "jsonpath={.status.desiredReplicas}",
        ]);
        match d.parse::<u32>() {
            Ok(n) if n > 1 => Ok(n),
            _ => Err(c.kubectl_ok(&["get", "horizontalpodautoscalers.v2.autoscaling", "burner", "-o", "yaml"])),
        }
    });
    assert!(desired <= 3, "maxReplicas bounds the scale: {desired}");
    let replicas = c.kubectl_ok(&["get", "deployment", "burner", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, desired.to_string(), "the target's scale was updated");
    let status = c.kubectl_ok(&["get", "horizontalpodautoscalers.v2.autoscaling", "burner", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let util = status
        .pointer("/status/currentMetrics/0/resource/current/averageUtilization")
        .and_then(|u| u.as_i64())
        .unwrap_or(0);
    assert!(util > 50, "current utilization above target: {status}");
    assert!(
        status.pointer("/status/lastScaleTime").is_some_and(|t| t.is_string()),
        "{status}"
    );
    let conditions = status["status"]["conditions"].to_string();
    assert!(conditions.contains("ValidMetricFound"), "{conditions}");
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("reason: cpu resource utilization (percentage of request) above target"),
        "{events}"
    );
    let v1_status = c.kubectl_ok(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "burner",
        "-o",
        "jsonpath={.status.currentCPUUtilizationPercentage}",
    ]);
    assert!(
        v1_status.parse::<i64>().is_ok_and(|u| u > 50),
        "v1 view of the status: {v1_status}"
    );
}
