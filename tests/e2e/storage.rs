//! End to end: persistent storage on a single-node cluster. A claim without a
//! class gets the default `local-path` class and is provisioned when a pod uses
//! it; a file a pod writes there is read back by a later pod; deleting the claim
//! deletes the volume and its directory (reclaim Delete); a StatefulSet's
//! volumeClaimTemplates give each ordinal its own Bound claim. Real binary, real
//! kubectl, real containerd/CNI.
//!
//! Only one cluster may run on a host at a time: run it under `flock -o
//! /tmp/skiff-e2e.lock cargo nextest run -p skiff --test storage`.

#[path = "support.rs"]
#[allow(dead_code)] // helpers other e2e tests use
mod support;

use std::time::Duration;

use support::{Cluster, eventually, require_environment};

const CLAIM: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 64Mi}
"#;

fn pod(name: &str, command: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "{command}"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: data}}
"#
    )
}

const STATEFUL_SET: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "hostname > /www/name; sleep 3600"]
        volumeMounts:
        - {name: www, mountPath: /www}
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 16Mi}
"#;

fn apply(c: &Cluster, manifest: &str) {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn wait_succeeded(c: &Cluster, pod: &str) {
    eventually(&format!("{pod} Succeeded"), Duration::from_secs(120), || {
        let phase = c.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
        if phase == "Succeeded" { Ok(()) } else { Err(phase) }
    });
}

#[test]
fn claims_keep_data_across_pods_and_are_reclaimed() {
    require_environment();
    let c = Cluster::start();
    c.wait_node_ready();
    let node = c.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);

    // The default class, as k3s ships it.
    let sc = eventually("the local-path StorageClass", Duration::from_secs(60), || {
        let out = c.kubectl(&["get", "storageclass", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("local-path") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(sc.contains("(default)") && sc.contains("rancher.io/local-path"), "{sc}");
    assert!(sc.contains("WaitForFirstConsumer") && sc.contains("Delete"), "{sc}");

    // The claim waits for its first consumer.
    apply(&c, CLAIM);
    assert_eq!(
        c.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.storageClassName}"]),
        "local-path"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]),
        "Pending"
    );

    // A pod writes a file; the claim is bound to a volume on this node.
    apply(&c, &pod("writer", "echo kept > /data/file"));
    wait_succeeded(&c, "writer");
    assert_eq!(
        c.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]),
        "Bound"
    );
    let pv = c.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    let path = c.kubectl_ok(&["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"]);
    assert!(path.starts_with(&c.dir.join("storage").display().to_string()), "{path}");
    let affinity = c.kubectl_ok(&[
        "get",
        "pv",
        &pv,
        "-o",
        "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}",
    ]);
    assert_eq!(affinity, node);
    assert_eq!(std::fs::read_to_string(format!("{path}/file")).unwrap(), "kept\n");

    // The writer goes; a new pod reads the same file.
    c.kubectl_ok(&["delete", "pod", "writer", "--wait=true"]);
    apply(&c, &pod("reader", "cat /data/file"));
    wait_succeeded(&c, "reader");
    assert_eq!(c.kubectl_ok(&["logs", "reader"]).trim(), "kept");

    // Deleting the claim deletes the volume and its data.
    c.kubectl_ok(&["delete", "pod", "reader", "--wait=true"]);
    c.kubectl_ok(&["delete", "pvc", "data", "--wait=true", "--timeout=60s"]);
    eventually("the volume and its directory removed", Duration::from_secs(60), || {
        let out = c.kubectl(&["get", "pv", &pv]);
        if !out.status.success() && !std::path::Path::new(&path).exists() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    });

    // A StatefulSet: one Bound claim per ordinal, each pod writing its own volume.
    apply(&c, STATEFUL_SET);
    c.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=180s"]);
    for i in 0..2 {
        let claim = format!("www-web-{i}");
        assert_eq!(
            c.kubectl_ok(&["get", "pvc", &claim, "-o", "jsonpath={.status.phase}"]),
            "Bound",
            "{claim}"
        );
        let pv = c.kubectl_ok(&["get", "pvc", &claim, "-o", "jsonpath={.spec.volumeName}"]);
        let path = c.kubectl_ok(&["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"]);
        let name = eventually(&format!("web-{i} wrote its name"), Duration::from_secs(60), || {
            std::fs::read_to_string(format!("{path}/name")).map_err(|e| e.to_string())
        });
        assert_eq!(name.trim(), format!("web-{i}"));
    }
}
