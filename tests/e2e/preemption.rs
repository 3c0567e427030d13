//! End to end: pod priority and preemption with the real binary, real kubectl and
//! real containers. The single node is filled with two pods of low priority, each
//! requesting half the node's cpu; a pod of high priority requesting the same
//! preempts the one of lowest priority (which terminates for real), is nominated to
//! the node, and runs there.
//!
//! Only one cluster may run on a host at a time: run it under `flock
//! /tmp/skiff-e2e.lock cargo nextest run -p skiff --test preemption`.

#[path = "support.rs"]
#[allow(dead_code)] // helpers other e2e tests use
mod support;

use std::time::Duration;

use support::{Cluster, eventually, require_environment};

const CLASSES: &str = r#"apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: lowest}
value: 1
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 10
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
"#;

fn pod(name: &str, class: &str, milli_cpu: i64) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  priorityClassName: {class}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    resources:
      requests: {{cpu: {milli_cpu}m}}
"#
    )
}

fn apply(c: &Cluster, manifest: &str) {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn wait_running(c: &Cluster, name: &str) {
    eventually(&format!("{name} Running"), Duration::from_secs(120), || {
        let phase = c.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        if phase == "Running" { Ok(()) } else { Err(phase) }
    });
}

fn milli(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().expect("millicores"),
        None => q.parse::<i64>().expect("cores") * 1000,
    }
}

#[test]
fn a_high_priority_pod_preempts_the_lowest_priority_pod() {
    require_environment();
    let c = Cluster::start();
    c.wait_node_ready();
    let node = c.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let alloc = c.kubectl_ok(&["get", "node", &node, "-o", "jsonpath={.status.allocatable.cpu}"]);
    // Whatever already runs on the node (nothing requests cpu on a fresh server).
    let used: i64 = c
        .kubectl_ok(&[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={range .items[*].spec.containers[*]}{.resources.requests.cpu}{\"\\n\"}{end}",
        ])
        .lines()
        .filter(|l| !l.is_empty())
        .map(milli)
        .sum();
    let half = (milli(&alloc) - used) / 2;
    assert!(half > 100, "node {node} has {alloc} cpu, {used}m requested");

    apply(&c, CLASSES);
    apply(&c, &pod("lowest", "lowest", half));
    apply(&c, &pod("low", "low", half));
    wait_running(&c, "lowest");
    wait_running(&c, "low");
    assert_eq!(
        c.kubectl_ok(&["get", "pod", "low", "-o", "jsonpath={.spec.priority}"]),
        "10"
    );

    apply(&c, &pod("vip", "high", half));
    wait_running(&c, "vip");
    let placed = c.kubectl_ok(&[
        "get",
        "pod",
        "vip",
        "-o",
        "jsonpath={.spec.nodeName}/{.status.nominatedNodeName}",
    ]);
    assert_eq!(placed, format!("{node}/{node}"));
    let gone = c.kubectl(&["get", "pod", "lowest"]);
    assert!(!gone.status.success(), "the lowest-priority pod was preempted");
    assert_eq!(
        c.kubectl_ok(&["get", "pod", "low", "-o", "jsonpath={.status.phase}"]),
        "Running"
    );
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[?(@.reason==\"Preempted\")]}{.involvedObject.name}: {.message}{\"\\n\"}{end}",
    ]);
    let uid = c.kubectl_ok(&["get", "pod", "vip", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(events, format!("lowest: Preempted by pod {uid} on node {node}\n"));
}
