//! A machine joins a cluster with a bootstrap token: `skiff server --disable-agent`,
//! `skiff token create`, then `skiff agent` (its own data dir, on this host since the
//! server runs no node of its own). The node registers Ready as `system:node:<name>`
//! with a certificate it got through an auto-approved, issued CSR; unknown and
//! expired tokens are refused with 401; a pod runs on the node; `kubectl certificate
//! approve|deny` work; `kubectl logs` reaches the joined kubelet; and a restarted
//! agent reuses its credentials without a token.

#[allow(dead_code)] // helpers other e2e tests use
mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::{Cluster, eventually, free_port};

fn skiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff")).args(args).output().unwrap()
}

/// A running `skiff agent`; SIGTERM on drop.
struct Agent(Child);

impl Agent {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("agent")
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Agent(child)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// kubectl against the cluster's API with only a bearer token (no client certificate).
fn kubectl_with_token(c: &Cluster, token: &str, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", "/dev/null")
        .args([
            "--server",
            &format!("https://127.0.0.1:{}", c.api_port),
            "--insecure-skip-tls-verify",
            "--token",
            token,
        ])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A PEM CSR for `cn` (for the `kubectl certificate` checks).
fn csr_pem(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn csr_manifest(name: &str, cn: &str) -> String {
    use base64::Engine;
    let req = base64::engine::general_purpose::STANDARD.encode(csr_pem(cn));
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {req}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 3600\n  usages: [\"digital signature\", \"client auth\"]\n"
    )
}

/// The CSR requested by `user`.
fn csrs_by(cluster: &Cluster, user: &str) -> serde_json::Value {
    let csrs: serde_json::Value = serde_json::from_str(&cluster.kubectl_ok(&["get", "csr", "-o", "json"])).unwrap();
    csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["spec"]["username"] == user)
        .unwrap_or_else(|| panic!("no CSR by {user}: {csrs}"))
        .clone()
}

#[test]
fn a_node_joins_with_a_bootstrap_token() {
    support::require_environment();
    let mut cluster = Cluster::start_with(&["--disable-agent"]);
    let node_dir = cluster.dir.join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    cluster.agent_dir = node_dir.clone();
    let data_dir = cluster.dir.display().to_string();
    assert_eq!(cluster.kubectl_ok(&["get", "nodes", "--no-headers"]).trim(), "");

    // The server says how to join, with the CA pin.
    let log = std::fs::read_to_string(cluster.dir.join("server.log")).unwrap();
    let pin = log
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no --ca-cert-hash in the server's output:\n{log}"))
        .to_string();
    // No default token exists.
    let listed = skiff(&["token", "list", "--data-dir", &data_dir]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        1,
        "{}",
        text(&listed)
    );

    // An unknown token is refused with 401.
    let unknown = kubectl_with_token(&cluster, "abcdef.0123456789abcdef", &["get", "--raw", "/api"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown).contains("Unauthorized"), "{}", text(&unknown));

    // An expired token is refused too, and the token cleaner deletes its Secret.
    let expired = "expird.0123456789abcdef";
    let manifest = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-expird\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\ndata:\n  token-id: ZXhwaXJk\n  token-secret: MDEyMzQ1Njc4OWFiY2RlZg==\n  usage-bootstrap-authentication: dHJ1ZQ==\n  expiration: MjAyMC0wMS0wMVQwMDowMDowMFo=\n";
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "{}", text(&out));
    let refused = kubectl_with_token(&cluster, expired, &["get", "--raw", "/api"]);
    assert!(text(&refused).contains("Unauthorized"), "{}", text(&refused));
    eventually(
        "the expired token's Secret to be deleted",
        Duration::from_secs(30),
        || {
            let out = cluster.kubectl(&["get", "secret", "-n", "kube-system", "bootstrap-token-expird"]);
            if out.status.success() { Err(text(&out)) } else { Ok(()) }
        },
    );

    // `skiff token create` prints a token that authenticates as system:bootstrap:<id>.
    let created = skiff(&[
        "token",
        "create",
        "--data-dir",
        &data_dir,
        "--ttl",
        "1h",
        "--description",
        "e2e join",
    ]);
    assert!(created.status.success(), "{}", text(&created));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let (id, secret) = token.split_once('.').expect("<id>.<secret>");
    assert!(id.len() == 6 && secret.len() == 16, "{token}");
    let listed = String::from_utf8_lossy(&skiff(&["token", "list", "--data-dir", &data_dir]).stdout).into_owned();
    assert!(
        listed.contains(&token) && listed.contains("authentication,signing") && listed.contains("e2e join"),
        "{listed}"
    );
    let whoami = kubectl_with_token(&cluster, &token, &["auth", "whoami", "-o", "json"]);
    assert!(whoami.status.success(), "{}", text(&whoami));
    let who: serde_json::Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], format!("system:bootstrap:{id}"));
    assert!(
        who["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "system:bootstrappers")
    );
    // A bootstrap token may not do what a node does.
    let nodes = kubectl_with_token(&cluster, &token, &["get", "nodes"]);
    assert!(text(&nodes).contains("Forbidden"), "{}", text(&nodes));
    // cluster-info is public and signed for the token.
    let info = Command::new("curl")
        .args(["-sk"])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/kube-public/configmaps/cluster-info",
            cluster.api_port
        ))
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    eventually(
        "cluster-info to be signed for the token",
        Duration::from_secs(30),
        || {
            let out = cluster.kubectl_ok(&["get", "configmap", "-n", "kube-public", "cluster-info", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            if v["data"][format!("jws-kubeconfig-{id}")].is_string() {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
    assert!(
        info["data"]["kubeconfig"]
            .as_str()
            .unwrap()
            .contains("certificate-authority-data"),
        "{info}"
    );

    // The agent joins.
    let server = format!("https://127.0.0.1:{}", cluster.api_port);
    let kubelet_port = free_port().to_string();
    let node_args = [
        "--server",
        &server,
        "--node-name",
        "joined-1",
        "--node-ip",
        "127.0.0.1",
        "--kubelet-port",
        &kubelet_port,
    ];
    let mut agent = Agent::start(
        &node_dir,
        &[&node_args[..], &["--token", &token, "--ca-cert-hash", &pin]].concat(),
    );
    let agent_log = || std::fs::read_to_string(node_dir.join("agent.log")).unwrap_or_default();
    eventually("node joined-1 Ready", Duration::from_secs(120), || {
        let out = cluster.kubectl(&["get", "node", "joined-1", "--no-headers"]);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        if s.split_whitespace().nth(1) == Some("Ready") {
            Ok(())
        } else {
            Err(format!("{s}\nagent log:\n{}", agent_log()))
        }
    });
    // Its CSR was made by the token, approved automatically and issued.
    let csrs: serde_json::Value = serde_json::from_str(&cluster.kubectl_ok(&["get", "csr", "-o", "json"])).unwrap();
    let csr = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["spec"]["username"] == format!("system:bootstrap:{id}"))
        .unwrap_or_else(|| panic!("no CSR by the token: {csrs}"));
    assert_eq!(csr["spec"]["signerName"], "kubernetes.io/kube-apiserver-client-kubelet");
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved");
    assert!(csr["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()));
    let table = cluster.kubectl_ok(&["get", "csr", csr["metadata"]["name"].as_str().unwrap()]);
    assert!(table.contains("Approved,Issued"), "{table}");
    // The node talks to the API as itself.
    let node_kubeconfig = node_dir.join("kubelet.kubeconfig");
    let whoami = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&node_kubeconfig)
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    let who: serde_json::Value = serde_json::from_slice(&whoami.stdout).unwrap_or_default();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:node:joined-1",
        "{}",
        text(&whoami)
    );

    // A pod is scheduled to the joined node and runs.
    cluster.kubectl_ok(&[
        "run",
        "sleeper",
        "--image",
        "busybox",
        "--restart",
        "Never",
        "--",
        "sh",
        "-c",
        "echo hello from the joined node; sleep 3600",
    ]);
    eventually("pod sleeper Running on joined-1", Duration::from_secs(90), || {
        let out = cluster.kubectl_ok(&[
            "get",
            "pod",
            "sleeper",
            "-o",
            "jsonpath={.status.phase} {.spec.nodeName}",
        ]);
        if out == "Running joined-1" { Ok(()) } else { Err(out) }
    });
    // The apiserver reaches the joined kubelet (its serving certificate, requested
    // as the node, chains to the cluster CA).
    eventually("the pod's log through the apiserver", Duration::from_secs(30), || {
        let out = cluster.kubectl(&["logs", "sleeper"]);
        if text(&out).contains("hello from the joined node") {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    let serving = csrs_by(&cluster, "system:node:joined-1");
    assert_eq!(serving["spec"]["signerName"], "kubernetes.io/kubelet-serving");
    assert!(serving["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()));

    // `kubectl certificate approve` and `deny` on client certificate requests.
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &csr_manifest("jane", "jane"));
    assert!(out.status.success(), "{}", text(&out));
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &csr_manifest("mallory", "mallory"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(cluster.kubectl_ok(&["get", "csr", "jane"]).contains("Pending"));
    cluster.kubectl_ok(&["certificate", "approve", "jane"]);
    cluster.kubectl_ok(&["certificate", "deny", "mallory"]);
    eventually("jane's certificate", Duration::from_secs(30), || {
        let out = cluster.kubectl_ok(&["get", "csr", "jane", "--no-headers"]);
        if out.contains("Approved,Issued") {
            Ok(())
        } else {
            Err(out)
        }
    });
    let mallory = cluster.kubectl_ok(&["get", "csr", "mallory", "-o", "json"]);
    let mallory: serde_json::Value = serde_json::from_str(&mallory).unwrap();
    assert_eq!(mallory["status"]["conditions"][0]["type"], "Denied");
    assert!(mallory["status"]["certificate"].is_null());

    // Restarted without a token, the agent reuses its credentials.
    agent.stop();
    let mut agent = Agent::start(&node_dir, &node_args);
    eventually("the restarted agent", Duration::from_secs(60), || {
        let log = agent_log();
        if log.contains("using the existing node credentials") && log.matches("skiff agent is running").count() == 2 {
            Ok(())
        } else {
            Err(log)
        }
    });
    cluster.kubectl_ok(&["delete", "pod", "sleeper", "--grace-period=1"]);
    agent.stop();
}
