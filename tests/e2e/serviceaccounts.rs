//! End to end: ServiceAccount credentials inside a pod. A pod created right after
//! its namespace gets the `default` ServiceAccount and the `kube-api-access-*`
//! volume; inside the container `/var/run/secrets/kubernetes.io/serviceaccount/`
//! holds `token`, `ca.crt` (the cluster CA) and `namespace`, exactly what in-cluster
//! clients read. The token read from the pod authenticates to the apiserver as
//! `system:serviceaccount:<ns>:default` and stops working once the pod is deleted.
//! Real binary, real kubectl, real containerd/CNI.
//!
//! Only one cluster may run on a host at a time: run it under `flock
//! /tmp/skiff-e2e.lock cargo nextest run -p skiff --test serviceaccounts`.

#[path = "support.rs"]
#[allow(dead_code)] // helpers other e2e tests use
mod support;

use std::process::{Command, Output};

use support::{Cluster, require_environment};

const NS: &str = "sa-e2e";
const DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: sa-e2e
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox
    command: ["sleep", "3600"]
"#;

/// kubectl with nothing but a bearer token (no admin kubeconfig credentials).
fn kubectl_with_token(c: &Cluster, token: &str, args: &[&str]) -> Output {
    let ca = c.dir.join("tls/ca.crt");
    Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig=/dev/null")
        .arg(format!("--server=https://127.0.0.1:{}", c.api_port))
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--token={token}"))
        .args(args)
        .output()
        .expect("running kubectl")
}

#[test]
fn a_pod_reads_its_service_account_credentials_and_they_die_with_it() {
    require_environment();
    let c = Cluster::start();
    c.wait_node_ready();

    // The pod is created right after its namespace, before or just as the
    // ServiceAccount controller creates `default`: admission waits for it.
    c.kubectl_ok(&["create", "namespace", NS]);
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], POD);
    assert!(
        applied.status.success(),
        "{}\nserver log:\n{}",
        String::from_utf8_lossy(&applied.stderr),
        c.log_tail()
    );
    assert_eq!(
        c.kubectl_ok(&[
            "get",
            "pod",
            "client",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.serviceAccountName}"
        ]),
        "default"
    );
    let volume = c.kubectl_ok(&[
        "get",
        "pod",
        "client",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.volumes[0].name}",
    ]);
    assert!(volume.starts_with("kube-api-access-"), "{volume}");
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "-n",
        NS,
        "--timeout=120s",
    ]);

    // In-cluster clients find the apiserver through the `kubernetes` Service.
    let service_ip = c.kubectl_ok(&[
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let env = c.kubectl_ok(&["exec", "client", "-n", NS, "--", "env"]);
    assert!(
        env.lines()
            .any(|l| l == format!("KUBERNETES_SERVICE_HOST={service_ip}")),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "KUBERNETES_SERVICE_PORT=443"), "{env}");

    let cat = |file: &str| c.kubectl_ok(&["exec", "client", "-n", NS, "--", "cat", &format!("{DIR}/{file}")]);
    assert_eq!(cat("namespace"), NS);
    let ca = std::fs::read_to_string(c.dir.join("tls/ca.crt")).unwrap();
    assert_eq!(cat("ca.crt"), ca, "the pod trusts the cluster CA");
    let token = cat("token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // The files are links into the atomically swapped `..data` directory.
    let listing = c.kubectl_ok(&["exec", "client", "-n", NS, "--", "ls", "-la", DIR]);
    assert!(listing.contains("..data ->"), "{listing}");
    assert!(listing.contains("token -> ..data/token"), "{listing}");

    // The token authenticates as the pod's ServiceAccount (which RBAC does not
    // let list pods, so the answer names the user).
    let out = kubectl_with_token(&c, &token, &["get", "pods", "-n", NS]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"User "system:serviceaccount:sa-e2e:default" cannot list resource "pods""#),
        "{err}"
    );

    let whoami = kubectl_with_token(
        &c,
        &token,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert!(whoami.status.success(), "{}", String::from_utf8_lossy(&whoami.stderr));
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:serviceaccount:sa-e2e:default"
    );

    // Once the pod is gone, so is the token's validity.
    c.kubectl_ok(&["delete", "pod", "client", "-n", NS, "--wait=true", "--timeout=120s"]);
    let out = kubectl_with_token(&c, &token, &["get", "pods", "-n", NS]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Unauthorized"), "{err}");
}
