//! End to end: the pod network across nodes and LoadBalancer addresses. The node IPAM
//! controller gives the server's own Node the first podCIDR and the kubelet writes its
//! CNI configuration from it; a LoadBalancer Service with pods behind it gets an
//! address of the default pool and is reachable on it from the host; a second Node
//! whose InternalIP is on a directly connected network (a veth pair made for the test)
//! gets a podCIDR and a host-gw route `<podCIDR> via <InternalIP> proto 115`, removed
//! when the Node is deleted, while a Node behind a router gets none.
//!
//! Only one cluster may run on a host at a time: run it under
//! `flock /tmp/skiff-e2e.lock cargo nextest run -p skiff --test networking`.

#[path = "support.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use support::{Cluster, eventually, http_get, require_environment};

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
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
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
"#;

/// The veth pair standing in for the network shared with another node; deleted on
/// drop (which also removes every route through it).
struct Link(&'static str);

impl Link {
    fn create(name: &'static str, peer: &str, addr: &str) -> Self {
        let _ = Command::new("ip").args(["link", "del", name]).output();
        for args in [
            vec!["link", "add", name, "type", "veth", "peer", "name", peer],
            vec!["addr", "add", addr, "dev", name],
            vec!["link", "set", name, "up"],
            vec!["link", "set", peer, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Link(name)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
    }
}

fn owned_routes() -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "proto", "115"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fake_node(c: &Cluster, name: &str, internal_ip: &str) -> String {
    let applied = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"),
    );
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let patch = format!(r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"{internal_ip}"}}]}}}}"#);
    c.kubectl_ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
    eventually(&format!("a podCIDR for {name}"), Duration::from_secs(30), || {
        let cidr = c.kubectl_ok(&["get", "node", name, "-o", "jsonpath={.spec.podCIDR}"]);
        if cidr.is_empty() {
            Err("none yet".into())
        } else {
            Ok(cidr)
        }
    })
}

#[test]
fn pod_network_and_load_balancers() {
    require_environment();
    let c = Cluster::start();
    c.wait_node_ready();

    // The server's Node got the first podCIDR, and the kubelet's CNI configuration
    // hands out addresses from it.
    let cidr = c.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].spec.podCIDR}"]);
    assert_eq!(cidr, "10.42.0.0/24");
    let conflist = std::fs::read_to_string(c.dir.join("agent/cni/10-skiff.conflist")).unwrap();
    assert!(conflist.contains("\"subnet\": \"10.42.0.0/24\""), "{conflist}");

    // A LoadBalancer Service gets an address of the default pool, reachable from the host.
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], WEB);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let pod_ip = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    assert!(
        pod_ip.starts_with("10.42.0."),
        "pod IP from the node's podCIDR: {pod_ip}"
    );
    let lb_ip = eventually("the LoadBalancer ingress IP", Duration::from_secs(30), || {
        let ip = c.kubectl_ok(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        if ip.is_empty() { Err("none yet".into()) } else { Ok(ip) }
    });
    assert_eq!(lb_ip, "10.44.0.1", "the first address of the default pool");
    let (code, body) = eventually("the LoadBalancer IP from the host", Duration::from_secs(60), || {
        http_get(&lb_ip, 80, "/")
    });
    assert_eq!(code, 200);
    assert!(body.contains("skiff busybox"), "{body}");

    // host-gw routes to other nodes' podCIDRs.
    let _link = Link::create("skiffe2e0", "skiffe2e1", "198.18.0.1/24");
    let peer_cidr = fake_node(&c, "peer", "198.18.0.2");
    assert_eq!(peer_cidr, "10.42.1.0/24");
    let far_cidr = fake_node(&c, "far", "203.0.113.9");
    eventually("the host-gw route to peer", Duration::from_secs(45), || {
        let routes = owned_routes();
        if routes.contains(&format!("{peer_cidr} via 198.18.0.2 dev skiffe2e0")) {
            Ok(())
        } else {
            Err(routes)
        }
    });
    let routes = owned_routes();
    assert!(
        !routes.contains(&far_cidr),
        "no route via a gateway that is not directly connected: {routes}"
    );
    assert!(
        !routes.contains("10.42.0.0/24"),
        "no route to the node's own podCIDR: {routes}"
    );
    c.kubectl_ok(&["delete", "node", "peer", "far"]);
    eventually("the host-gw route to be removed", Duration::from_secs(45), || {
        let routes = owned_routes();
        if routes.contains(&peer_cidr) {
            Err(routes)
        } else {
            Ok(())
        }
    });
}
