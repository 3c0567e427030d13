//! End to end, issue by issue as a user would do it: the real `skiff` binary, the
//! machine's real `kubectl`, real containerd/runc/CNI, images from the local registry.
//!
//! Needs root and `scripts/setup` (packages, registry, images); fails with a message
//! saying so otherwise. The test is a target of the `skiff` package, so cargo builds
//! `target/<profile>/skiff` before running it and hands over its path as
//! `CARGO_BIN_EXE_skiff`: `cargo nextest run -p skiff --test e2e`.

#[path = "support.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::{Cluster, eventually, http_get, require_environment};

fn deployment(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 3
      containers:
      - name: web
        image: {image}
        command: ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
        readinessProbe:
          httpGet:
            path: /
            port: 8080
          periodSeconds: 2
"#
    )
}

fn pods(c: &Cluster, selector: &str) -> Vec<Value> {
    let out = c.kubectl_ok(&["get", "pods", "-l", selector, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("pod list JSON");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Waits until exactly `n` pods match, all Running and Ready.
fn wait_ready(c: &Cluster, selector: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} ready pods"), Duration::from_secs(120), || {
        let ps = pods(c, selector);
        let ready = ps.iter().filter(|p| is_ready(p)).count();
        if ps.len() == n && ready == n {
            Ok(ps)
        } else {
            let not_ready: Vec<String> = ps
                .iter()
                .filter(|p| !is_ready(p))
                .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]))
                .collect();
            Err(format!("{} pods, {ready} ready; not ready: {not_ready:?}", ps.len()))
        }
    })
}

/// Waits until containerd has exactly `n` running tasks and `n` containers (sandboxes
/// included): containers of removed pods are really gone, not just stopped.
fn wait_tasks(c: &Cluster, n: usize) {
    eventually(
        &format!("{n} running containerd tasks and containers"),
        Duration::from_secs(60),
        || {
            let (t, k) = (c.running_tasks(), c.containers());
            if t == n && k == n {
                Ok(())
            } else {
                Err(format!("{t} tasks, {k} containers"))
            }
        },
    );
}

#[test]
fn single_node_cluster_runs_a_deployment_in_real_containers() {
    require_environment();
    let mut c = Cluster::start();

    // 2. The node registers and becomes Ready.
    c.wait_node_ready();

    // 3. Three pods running with their own IPs, serving HTTP, with logs and events.
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], &deployment("busybox"));
    assert!(
        applied.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let ps = wait_ready(&c, "app=web", 3);
    let ips: BTreeSet<String> = ps
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ips.len(), 3, "each pod has its own IP: {ips:?}");
    for ip in &ips {
        let (code, body) = eventually("HTTP from the pod", Duration::from_secs(20), || http_get(ip, 8080, "/"));
        assert_eq!(code, 200);
        assert!(body.contains("skiff busybox"), "{body}");
    }
    let name = ps[0]["metadata"]["name"].as_str().unwrap().to_string();
    let logs = eventually("container logs", Duration::from_secs(20), || {
        let l = c.kubectl_ok(&["logs", &name]);
        if l.contains("response:200") { Ok(l) } else { Err(l) }
    });
    assert!(!logs.is_empty());
    let described = c.kubectl_ok(&["describe", "pod", &name]);
    assert!(
        described.contains("Events:") && described.contains("Started") && described.contains("Scheduled"),
        "{described}"
    );

    // A Service selecting the pods gets their addresses as endpoints.
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n";
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], svc);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    eventually("service endpoints", Duration::from_secs(30), || {
        // NotFound until the endpoints controller has written the object: retry.
        let out = c.kubectl(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let out = String::from_utf8_lossy(&out.stdout);
        let got: BTreeSet<String> = out.split_whitespace().map(String::from).collect();
        if got == ips {
            Ok(())
        } else {
            Err(format!("{got:?} != {ips:?}"))
        }
    });
    let slices = c.kubectl_ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[*].endpoints[*].addresses[0]}",
    ]);
    assert_eq!(slices.split_whitespace().collect::<BTreeSet<_>>().len(), 3, "{slices}");

    // 4. Scale up and down; removed pods' containers are gone from containerd.
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    wait_ready(&c, "app=web", 5);
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=1"]);
    eventually("scale down to 1 pod", Duration::from_secs(60), || {
        let n = pods(&c, "app=web").len();
        if n == 1 { Ok(()) } else { Err(format!("{n} pods")) }
    });
    wait_tasks(&c, 2); // one sandbox + one container

    // 6. Restart the server: objects persist, running pods are adopted, not duplicated.
    let before: Vec<(String, String)> = pods(&c, "app=web")
        .iter()
        .map(|p| {
            (
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                p["status"]["containerStatuses"][0]["containerID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    c.stop();
    c.spawn();
    eventually("API after restart", Duration::from_secs(60), || {
        let out = c.kubectl(&["get", "deployment", "web"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let after_pods = wait_ready(&c, "app=web", 1);
    let after: Vec<(String, String)> = after_pods
        .iter()
        .map(|p| {
            (
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                p["status"]["containerStatuses"][0]["containerID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(before, after, "the same pod and container survive a server restart");
    wait_tasks(&c, 2);

    // 7. A changed image tag rolls out through a new ReplicaSet.
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    wait_ready(&c, "app=web", 3);
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], &deployment("busybox:1.35"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let rs = c.kubectl_ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.replicas}{\" \"}{end}",
    ]);
    let mut counts: Vec<&str> = rs.split_whitespace().collect();
    counts.sort();
    assert_eq!(counts, vec!["0", "3"], "old ReplicaSet scaled down, new one up");
    let new = wait_ready(&c, "app=web", 3);
    assert!(
        new.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "busybox:1.35")
    );

    // Bad input is rejected with the field named, and nothing is stored.
    let bad = c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\nspec:\n  containers: []\n",
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("spec.containers: Required value"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!c.kubectl(&["get", "pod", "broken"]).status.success(), "nothing stored");
    let bad = c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\nspec:\n  selector:\n    matchLabels: {app: broken}\n  template:\n    metadata:\n      labels: {app: broken}\n    spec:\n      containers: []\n",
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("spec.template.spec.containers: Required value"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        !c.kubectl(&["get", "deployment", "broken"]).status.success(),
        "nothing stored"
    );

    // A crashing container is restarted with backoff.
    c.kubectl_ok(&[
        "run",
        "crasher",
        "--image=busybox:1.35",
        "--restart=Always",
        "--",
        "sh",
        "-c",
        "echo bye; exit 3",
    ]);
    eventually("CrashLoopBackOff", Duration::from_secs(90), || {
        let p: Value = serde_json::from_str(&c.kubectl_ok(&["get", "pod", "crasher", "-o", "json"])).unwrap();
        let cs = &p["status"]["containerStatuses"][0];
        let waiting = cs["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if waiting == "CrashLoopBackOff"
            && cs["restartCount"].as_i64().unwrap_or(0) >= 1
            && cs["lastState"]["terminated"]["exitCode"] == 3
        {
            Ok(())
        } else {
            Err(cs.to_string())
        }
    });
    c.kubectl_ok(&["delete", "pod", "crasher", "--grace-period=1"]);

    // An image that cannot be pulled is reported, and the pod recovers once it exists.
    let tag = format!("e2e-{}", std::process::id());
    c.kubectl_ok(&[
        "run",
        "late",
        &format!("--image=busybox:{tag}"),
        "--restart=Always",
        "--",
        "sleep",
        "3600",
    ]);
    eventually("ErrImagePull", Duration::from_secs(60), || {
        let out = c.kubectl_ok(&[
            "get",
            "pod",
            "late",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ]);
        if out == "ErrImagePull" || out == "ImagePullBackOff" {
            Ok(())
        } else {
            Err(out)
        }
    });
    let pushed = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "docker://127.0.0.1:5000/library/busybox:latest",
            &format!("docker://127.0.0.1:5000/library/busybox:{tag}"),
        ])
        .status()
        .unwrap();
    assert!(pushed.success());
    eventually("pod running after the image appears", Duration::from_secs(90), || {
        let out = c.kubectl_ok(&["get", "pod", "late", "-o", "jsonpath={.status.phase}"]);
        if out == "Running" { Ok(()) } else { Err(out) }
    });
    c.kubectl_ok(&["delete", "pod", "late", "--grace-period=1"]);

    // ConfigMap data reaches a pod as environment and as files, and updates propagate.
    let cm =
        |v: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: greeting\ndata:\n  greeting: {v}\n");
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], &cm("hello"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let reader = r#"apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: reader
    image: busybox:1.35
    command: ["sh", "-c", "echo env=$GREETING; while true; do echo file=$(cat /cfg/greeting); sleep 1; done"]
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef: {name: greeting, key: greeting}
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
  volumes:
  - name: cfg
    configMap: {name: greeting}
"#;
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], reader);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    eventually("configmap as env and file", Duration::from_secs(60), || {
        let l = String::from_utf8_lossy(&c.kubectl(&["logs", "reader"]).stdout).into_owned();
        if l.contains("env=hello") && l.contains("file=hello") {
            Ok(())
        } else {
            Err(l)
        }
    });
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], &cm("updated"));
    assert!(applied.status.success());
    eventually(
        "configmap update reaches the mounted file",
        Duration::from_secs(90),
        || {
            let l = String::from_utf8_lossy(&c.kubectl(&["logs", "reader", "--tail=1"]).stdout).into_owned();
            if l.contains("file=updated") { Ok(()) } else { Err(l) }
        },
    );
    c.kubectl_ok(&["delete", "pod", "reader", "--grace-period=1"]);

    // 5. Deleting the manifest removes the Deployment, its ReplicaSets, Pods and containers.
    let deleted = c.kubectl_stdin(&["delete", "-f", "-"], &deployment("busybox:1.35"));
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    eventually("garbage collection", Duration::from_secs(90), || {
        let rs = c.kubectl_ok(&["get", "rs", "-l", "app=web", "--no-headers"]);
        let ps = pods(&c, "app=web").len();
        if rs.trim().is_empty() && ps == 0 {
            Ok(())
        } else {
            Err(format!("rs: {rs:?}, pods: {ps}"))
        }
    });
    wait_tasks(&c, 0);
}
