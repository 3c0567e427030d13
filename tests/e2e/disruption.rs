//! End to end: `kubectl drain` against PodDisruptionBudgets, and
//! ReplicationControllers scaled with `kubectl scale rc`. Real binary, real
//! kubectl (which finds `pods/eviction` in discovery and evicts through it),
//! real containerd/CNI.
//!
//! On the single node, a Deployment of 2 replicas under a budget of
//! `minAvailable: 1` can lose one pod: the drain cordons the node, evicts one
//! pod, and the other is refused with 429 for as long as the replacement cannot
//! be scheduled anywhere, so a drain with `--timeout=20s` fails with the
//! budget's message. Once the budget is deleted the drain completes.
//!
//! Only one cluster may run on a host at a time: run it under `flock
//! /tmp/skiff-e2e.lock cargo nextest run -p skiff --test disruption`.

#[path = "support.rs"]
#[allow(dead_code)] // helpers other e2e tests use
mod support;

use std::time::Duration;

use support::{Cluster, eventually, require_environment};

const MANIFESTS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox
        command: ["sleep", "3600"]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: web}
"#;

const RC: &str = r#"apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 1
  template:
    metadata:
      labels: {app: legacy}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: legacy
        image: busybox
        command: ["sleep", "3600"]
"#;

fn wait_for_jsonpath(c: &Cluster, what: &str, args: &[&str], want: &str) {
    eventually(what, Duration::from_secs(120), || {
        let got = c.kubectl_ok(args);
        if got == want { Ok(()) } else { Err(format!("{got:?}")) }
    });
}

#[test]
fn drain_respects_disruption_budgets_and_replication_controllers_scale() {
    require_environment();
    let c = Cluster::start();
    c.wait_node_ready();
    let node = c.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);

    let applied = c.kubectl_stdin(&["apply", "-f", "-"], MANIFESTS);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    wait_for_jsonpath(
        &c,
        "the budget allowing one disruption",
        &["get", "pdb", "web", "-o", "jsonpath={.status.disruptionsAllowed}"],
        "1",
    );

    // One pod may go; the other is protected while its replacement is pending.
    let drain = [
        "drain",
        node.as_str(),
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=20s",
    ];
    let out = c.kubectl(&drain);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the drain must not complete while the budget allows nothing"
    );
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    assert_eq!(
        c.kubectl_ok(&["get", "node", &node, "-o", "jsonpath={.spec.unschedulable}"]),
        "true"
    );
    let pdb = c.kubectl_ok(&[
        "get",
        "pdb",
        "web",
        "-o",
        "jsonpath={.status.currentHealthy}/{.status.desiredHealthy}/{.status.disruptionsAllowed}",
    ]);
    assert_eq!(pdb, "1/1/0");
    let reason = c.kubectl_ok(&[
        "get",
        "pdb",
        "web",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"DisruptionAllowed\")].reason}",
    ]);
    assert_eq!(reason, "InsufficientPods");

    // Without the budget the drain completes and no web pod is left on the node.
    c.kubectl_ok(&["delete", "pdb", "web"]);
    let drain = [
        "drain",
        node.as_str(),
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=120s",
    ];
    let out = c.kubectl_ok(&drain);
    assert!(out.contains("drained"), "{out}");
    let selector = format!("spec.nodeName={node}");
    eventually("no web pod on the drained node", Duration::from_secs(60), || {
        let left = c.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            &selector,
            "-o",
            "name",
        ]);
        if left.trim().is_empty() { Ok(()) } else { Err(left) }
    });
    c.kubectl_ok(&["uncordon", &node]);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);

    // A ReplicationController follows `kubectl scale rc`.
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], RC);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    assert_eq!(
        c.kubectl_ok(&["get", "rc", "legacy", "-o", "jsonpath={.spec.selector.app}"]),
        "legacy"
    );
    wait_for_jsonpath(
        &c,
        "1 ready legacy pod",
        &["get", "rc", "legacy", "-o", "jsonpath={.status.readyReplicas}"],
        "1",
    );
    c.kubectl_ok(&["scale", "rc", "legacy", "--replicas=3"]);
    wait_for_jsonpath(
        &c,
        "3 ready legacy pods",
        &["get", "rc", "legacy", "-o", "jsonpath={.status.readyReplicas}"],
        "3",
    );
    let pods = c.kubectl_ok(&["get", "pods", "-l", "app=legacy", "-o", "name"]);
    assert_eq!(pods.lines().count(), 3, "{pods}");
    c.kubectl_ok(&["scale", "rc", "legacy", "--replicas=1"]);
    wait_for_jsonpath(
        &c,
        "1 legacy replica",
        &["get", "rc", "legacy", "-o", "jsonpath={.status.replicas}"],
        "1",
    );
}
