//! The apply path against a real kernel: the proxy's ruleset is applied inside a fresh
//! network namespace ("node") wired by a veth pair to a second namespace ("backend")
//! that runs busybox httpd. Connections to a Service's ClusterIP from the node, and to
//! the ClusterIP and the NodePort from the backend namespace (routed through the node),
//! reach the backend; a Service without endpoints is refused.
//!
//! Needs root, `ip`, `nft` and `busybox` (see `scripts/setup`).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_proxy::{Ipv4Cidr, Nft, RuleConfig, model, rules};

const PREFIX: &str = "skiff-proxy-test-";

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Self {
        let name = format!("{PREFIX}{}-{role}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        must(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

/// Removes namespaces left by earlier runs that were killed before cleaning up.
fn remove_stale_namespaces() {
    let out = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// A process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_environment() {
    let uid = run(&["id", "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the proxy's netns test creates network namespaces and needs root"
    );
    for tool in ["ip", "nft", "busybox"] {
        let found = run(&["sh", "-c", &format!("command -v {tool}")]);
        assert!(found.status.success(), "{tool} is missing: run scripts/setup");
    }
}

/// `busybox wget` of `url` from inside `ns`: Ok(body) or Err(stderr).
fn wget(ns: &Netns, url: &str) -> Result<String, String> {
    // busybox 1.35's `wget -T` crashes; `timeout` bounds the attempt instead.
    let out = ns.exec(&["timeout", "5", "busybox", "wget", "-q", "-O", "-", url]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("timed out waiting for {what}: {e}"),
        }
    }
}

fn service(name: &str, ip: &str, node_port: Option<i32>) -> Service {
    let mut port = json!({"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"});
    let mut spec = json!({"clusterIP": ip, "clusterIPs": [ip], "selector": {"app": name}});
    if let Some(np) = node_port {
        port["nodePort"] = json!(np);
        spec["type"] = json!("NodePort");
    }
    spec["ports"] = json!([port]);
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec}))
    .unwrap()
}

fn slice(svc: &str, ip: &str, port: i32) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-x"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node"}],
    }))
    .unwrap()
}

#[tokio::test]
async fn service_traffic_reaches_the_backend_and_endpointless_services_are_refused() {
    require_environment();
    remove_stale_namespaces();
    let node = Netns::new("node");
    let backend = Netns::new("backend");
    must(&[
        "ip", "-n", &node.0, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &backend.0,
    ]);
    must(&["ip", "-n", &node.0, "addr", "add", "10.99.0.1/24", "dev", "veth0"]);
    must(&["ip", "-n", &node.0, "link", "set", "veth0", "up"]);
    must(&["ip", "-n", &backend.0, "addr", "add", "10.99.0.2/24", "dev", "veth1"]);
    must(&["ip", "-n", &backend.0, "link", "set", "veth1", "up"]);
    // The node has a default route (ClusterIPs are routed like any other address); the
    // backend reaches Service addresses through the node, as a pod does via its gateway.
    must(&["ip", "-n", &node.0, "route", "add", "default", "via", "10.99.0.2"]);
    must(&["ip", "-n", &backend.0, "route", "add", "default", "via", "10.99.0.1"]);
    let fwd = node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    assert!(fwd.status.success(), "{}", String::from_utf8_lossy(&fwd.stderr));

    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello from the backend\n").unwrap();
    let www_path = www.path().display().to_string();
    let _httpd = Process(
        Command::new("ip")
            .args([
                "netns", "exec", &backend.0, "busybox", "httpd", "-f", "-p", "8080", "-h", &www_path,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting busybox httpd"),
    );
    eventually("the backend to serve directly", || {
        wget(&node, "http://10.99.0.2:8080/")
    });

    let cfg = RuleConfig {
        node_name: "node".into(),
        cluster_cidr: Some("10.99.0.0/24".parse::<Ipv4Cidr>().unwrap()),
        nodeport_addresses: vec![],
        localhost_nodeports: false,
        masquerade_all: false,
    };
    let mut web = service("web", "10.96.0.10", Some(30080));
    web.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let services = [web, service("empty", "10.96.0.11", None)];
    let nft = Nft::in_netns(&node.0);
    let first = rules::render(&model::build(&services, &[slice("web", "10.99.0.2", 8080)]), &cfg);
    nft.apply(&first.full_transaction())
        .await
        .expect("applying the ruleset");
    assert!(nft.table_exists().await.unwrap());

    // From the node itself (output hook), by ClusterIP.
    let body = eventually("ClusterIP from the node", || wget(&node, "http://10.96.0.10/"));
    assert_eq!(body, "hello from the backend\n");
    // From the backend namespace through the node (prerouting, forwarding, hairpin
    // masquerade: the client is the endpoint itself).
    let body = eventually("ClusterIP routed through the node", || {
        wget(&backend, "http://10.96.0.10/")
    });
    assert_eq!(body, "hello from the backend\n");
    // NodePort on the node's address.
    let body = eventually("NodePort", || wget(&backend, "http://10.99.0.1:30080/"));
    assert_eq!(body, "hello from the backend\n");

    // No endpoints: refused at once, from the node and through it.
    for client in [&node, &backend] {
        let err = wget(client, "http://10.96.0.11/").expect_err("a Service without endpoints must not answer");
        assert!(err.contains("refused"), "expected a refused connection, got {err:?}");
    }

    // The node's own connection was remembered for ClientIP affinity, and an update
    // that changes another Service keeps that memory.
    let affinity = "aff-default/web/tcp/http/10.99.0.2/8080/10800";
    let elements = |listed: &str| {
        listed
            .split(&format!("set {affinity} {{"))
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_default()
            .to_string()
    };
    let listed = nft.list_table().await.unwrap();
    assert!(elements(&listed).contains("10.99.0.1"), "{listed}");
    let mut more = services.to_vec();
    more.push(service("other", "10.96.0.12", None));
    let second = rules::render(&model::build(&more, &[slice("web", "10.99.0.2", 8080)]), &cfg);
    nft.apply(&second.update_transaction(&first))
        .await
        .expect("updating the ruleset");
    let listed = nft.list_table().await.unwrap();
    assert!(elements(&listed).contains("10.99.0.1"), "affinity kept: {listed}");
    assert!(listed.contains("10.96.0.12 . tcp . 80 : goto reject-chain"), "{listed}");
    let body = wget(&node, "http://10.96.0.10/").expect("still served after the update");
    assert_eq!(body, "hello from the backend\n");

    // Another update removes the endpoint: its chains and affinity set go, and the
    // Service is refused.
    let third = rules::render(&model::build(&services, &[]), &cfg);
    nft.apply(&third.update_transaction(&second))
        .await
        .expect("updating the ruleset again");
    let err = wget(&node, "http://10.96.0.10/").expect_err("endpoints removed");
    assert!(err.contains("refused"), "{err:?}");
    let listed = nft.list_table().await.unwrap();
    assert!(listed.contains("10.96.0.10 . tcp . 80 : goto reject-chain"), "{listed}");
    assert!(
        !listed.contains("aff-") && !listed.contains("ep-"),
        "stale objects deleted: {listed}"
    );

    nft.delete_table().await.unwrap();
    assert!(!nft.table_exists().await.unwrap());
}
