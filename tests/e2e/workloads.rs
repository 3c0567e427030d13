//! End to end: the workload controllers with real containers. A Job created with
//! `kubectl create job` (a protobuf body) runs to completion, a DaemonSet puts one pod
//! on the node, and a StatefulSet's pod gets its stable name and hostname. Real
//! binary, real kubectl, real containerd/CNI.
//!
//! Only one cluster may run on a host at a time: run it under `flock
//! /tmp/skiff-e2e.lock cargo nextest run -p skiff --test workloads`.

#[path = "support.rs"]
#[allow(dead_code)] // helpers other e2e tests use
mod support;

use std::time::Duration;

use support::{Cluster, eventually, require_environment};

const MANIFESTS: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: busybox
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - {name: tcp, port: 5432}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 1
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: busybox
        command: ["sh", "-c", "hostname; sleep 3600"]
"#;

#[test]
fn jobs_daemonsets_and_statefulsets_run_in_real_containers() {
    require_environment();
    let c = Cluster::start();
    c.wait_node_ready();

    // A Job: its pod runs to completion and the Job reports Complete.
    c.kubectl_ok(&[
        "create",
        "job",
        "hello",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo job-ran",
    ]);
    c.kubectl_ok(&["wait", "--for=condition=Complete", "job/hello", "--timeout=120s"]);
    assert_eq!(
        c.kubectl_ok(&["get", "job", "hello", "-o", "jsonpath={.status.succeeded}"]),
        "1"
    );
    let logs = c.kubectl_ok(&["logs", "job/hello"]);
    assert!(logs.contains("job-ran"), "{logs}");

    let applied = c.kubectl_stdin(&["apply", "-f", "-"], MANIFESTS);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));

    // The DaemonSet: one ready pod on the one node.
    eventually("the DaemonSet pod ready", Duration::from_secs(120), || {
        let ready = c.kubectl_ok(&["get", "daemonset", "agent", "-o", "jsonpath={.status.numberReady}"]);
        if ready == "1" {
            Ok(())
        } else {
            Err(format!("numberReady {ready:?}"))
        }
    });

    // The StatefulSet: pod db-0, whose hostname is its name.
    c.kubectl_ok(&["rollout", "status", "statefulset/db", "--timeout=120s"]);
    let logs = eventually("db-0's logs", Duration::from_secs(60), || {
        let logs = String::from_utf8_lossy(&c.kubectl(&["logs", "db-0"]).stdout).into_owned();
        if logs.trim().is_empty() {
            Err("no logs yet".into())
        } else {
            Ok(logs)
        }
    });
    assert_eq!(logs.lines().next(), Some("db-0"), "{logs}");
}
