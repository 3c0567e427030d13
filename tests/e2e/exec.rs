//! End to end: `kubectl exec`, `kubectl attach` and `kubectl port-forward` into real
//! busybox pods.
//! The apiserver proxies the upgraded connection to the kubelet, which proxies it
//! to containerd's streaming server. Checks stdout and the exit code of a command,
//! a non-zero exit code, stdin piped through `cat`, attaching to a container's
//! output, and a port-forward to busybox httpd. Real binary, real kubectl, real containerd/CNI.
//!
//! Only one cluster may run on a host at a time: run it under `flock
//! /tmp/skiff-e2e.lock cargo nextest run -p skiff --test exec`.

#[path = "support.rs"]
#[allow(dead_code)] // helpers other e2e tests use
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Cluster, eventually, free_port, http_get, require_environment};

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: busybox
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
---
apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: talker
    image: busybox
    command: ["sh", "-c", "while true; do echo tick; sleep 1; done"]
"#;

/// Kills a child process when dropped (the port-forward outlives assertions).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exec_attach_and_port_forward_reach_the_container() {
    require_environment();
    let c = Cluster::start();
    c.wait_node_ready();
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], POD);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/shell",
        "pod/talker",
        "--timeout=120s",
    ]);

    // stdout and exit code 0.
    let out = c.kubectl(&["exec", "shell", "--", "echo", "hello"]);
    assert!(
        out.status.success(),
        "exec failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log_tail()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    // The command's exit code becomes kubectl's.
    let out = c.kubectl(&["exec", "shell", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));

    // stdin reaches the command and its output comes back.
    let out = c.kubectl_stdin(&["exec", "-i", "shell", "--", "cat"], "hi\nthere\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\nthere\n");

    // An unknown container is rejected by the apiserver.
    let out = c.kubectl(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container nope is not valid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // port-forward from a local port to busybox httpd in the pod.
    c.kubectl_ok(&[
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "mkdir -p /www && echo forwarded-page > /www/index.html",
    ]);
    let port = free_port();
    let mut pf = Command::new("kubectl")
        .env("KUBECONFIG", c.kubeconfig())
        .args(["port-forward", "pod/shell", &format!("{port}:8080")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .expect("running kubectl port-forward");
    let (code, body) = eventually("the forwarded port", Duration::from_secs(30), || {
        if let Ok(Some(status)) = pf.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = pf.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("kubectl port-forward exited with {status}: {err}");
        }
        http_get("127.0.0.1", port, "/")
    });
    assert_eq!(code, 200);
    assert!(body.contains("forwarded-page"), "{body}");
    drop(pf);

    // attach: the output of the container's main process streams to the client.
    let mut attach = Command::new("kubectl")
        .env("KUBECONFIG", c.kubeconfig())
        .args(["attach", "talker"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("running kubectl attach");
    let stdout = attach.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a line from kubectl attach");
    assert_eq!(line, "tick");
    drop(attach);

    // A larger stdin arrives completely before the command sees end of input.
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", c.kubeconfig())
        .args(["exec", "-i", "shell", "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child.stdin.take().unwrap().write_all(&[b'x'; 100_000]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
}
