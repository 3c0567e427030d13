//! End to end: Service traffic through the proxy's nftables rules. A Deployment of
//! busybox httpd behind a ClusterIP Service is reachable by the ClusterIP from the host
//! and from another pod (by ClusterIP and by DNS name through the cluster DNS), on its
//! NodePort, and a Service without endpoints refuses
//! connections. Real binary, real kubectl, real containerd/CNI, real nftables.
//!
//! Only one cluster may run on a host at a time (shared `cni0` bridge and the
//! `ip skiff-proxy` table): run it under `flock /tmp/skiff-e2e.lock cargo nextest run
//! -p skiff --test services`.

#[path = "support.rs"]
mod support;

use std::time::Duration;

use support::{Cluster, eventually, http_get, require_environment};

const WEB: &str = r#"apiVersion: apps/v1
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
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: busybox
        command: ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30880}
---
apiVersion: v1
kind: Service
metadata:
  name: nobody
spec:
  selector: {app: nobody}
  ports:
  - {name: http, port: 80, targetPort: 8080}
"#;

fn client_pod(cluster_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox
    command:
    - sh
    - -c
    - |
      fetch() {{ for i in $(seq 1 30); do if wget -qO- "$1"; then return 0; fi; sleep 1; done; return 1; }}
      fetch http://{cluster_ip}/ && echo fetched-through-service || exit 1
      # By name: cluster DNS (10.43.0.10, reached through the proxy) and the pod's
      # search path turn "web" into web.default.svc.cluster.local.
      fetch http://web/ && echo fetched-by-short-name || exit 2
      fetch http://web.default.svc.cluster.local/ && echo fetched-by-fqdn || exit 3
"#
    )
}

#[test]
fn services_are_reachable_through_the_proxy() {
    require_environment();
    let c = Cluster::start();
    c.wait_node_ready();
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], WEB);
    assert!(
        applied.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let cluster_ip = c.kubectl_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        cluster_ip.starts_with("10.43."),
        "ClusterIP from the service range: {cluster_ip:?}"
    );

    // From the host, by ClusterIP (nat output hook).
    let (code, body) = eventually("the ClusterIP from the host", Duration::from_secs(60), || {
        http_get(&cluster_ip, 80, "/")
    });
    assert_eq!(code, 200);
    assert!(body.contains("skiff busybox"), "{body}");

    // On the NodePort, at the node's address and on localhost.
    let node_ip = c.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    for ip in [node_ip.as_str(), "127.0.0.1"] {
        let (code, body) = eventually(&format!("the NodePort on {ip}"), Duration::from_secs(30), || {
            http_get(ip, 30880, "/")
        });
        assert_eq!(code, 200);
        assert!(body.contains("skiff busybox"), "{body}");
    }

    // From another pod (prerouting hook, through the cni0 bridge).
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], &client_pod(&cluster_ip));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let logs = eventually("the client pod's fetch", Duration::from_secs(150), || {
        let phase = c.kubectl_ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        let logs = String::from_utf8_lossy(&c.kubectl(&["logs", "client"]).stdout).into_owned();
        match phase.as_str() {
            "Succeeded" => Ok(logs),
            "Failed" => panic!("the client pod could not reach {cluster_ip}: {logs}"),
            _ => Err(format!("phase {phase}, logs {logs:?}")),
        }
    });
    assert!(
        logs.contains("skiff busybox")
            && logs.contains("fetched-through-service")
            && logs.contains("fetched-by-short-name")
            && logs.contains("fetched-by-fqdn"),
        "{logs}"
    );

    // A Service without endpoints refuses connections instead of timing out.
    let nobody = c.kubectl_ok(&["get", "service", "nobody", "-o", "jsonpath={.spec.clusterIP}"]);
    let err = eventually(
        "the endpoint-less Service to be rejected",
        Duration::from_secs(30),
        || match http_get(&nobody, 80, "/") {
            Err(e) if e.to_lowercase().contains("refused") => Ok(e),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(err.to_lowercase().contains("refused"));

    // Scaling to zero removes the endpoints: the ClusterIP now refuses too.
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=0"]);
    eventually(
        "the ClusterIP to refuse without endpoints",
        Duration::from_secs(60),
        || match http_get(&cluster_ip, 80, "/") {
            Err(e) if e.to_lowercase().contains("refused") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}
