//! The real `kubectl` against `skiff server --disable-agent`: `kubectl create quota`,
//! `kubectl run` refused with upstream's message once the quota is used up, and
//! `kubectl describe quota` showing the usage.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn server(dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--disable-agent", "--disable-dns", "--data-dir"])
        .arg(dir)
        .args(["--https-listen-port", &port.to_string()])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

fn kubectl(dir: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", dir.join("admin.kubeconfig"))
        .args(args)
        .output()
        .expect("running kubectl")
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kubectl_run_is_refused_once_the_quota_is_used_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = server(dir.path(), port);
    until("admin.kubeconfig", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "server exited ({status}): {}",
                std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
            );
        }
        dir.path().join("admin.kubeconfig").exists()
    });
    let ok = |args: &[&str]| {
        let out = kubectl(dir.path(), args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["create", "quota", "q", "--hard=pods=1"]);
    // Pods are refused until the controller has counted the namespace's usage.
    until("the quota's usage", || {
        kubectl(dir.path(), &["get", "quota", "q", "-o", "jsonpath={.status.used.pods}"]).stdout == b"0"
    });
    ok(&["run", "first", "--image=busybox", "--restart=Never"]);
    let out = kubectl(dir.path(), &["run", "second", "--image=busybox", "--restart=Never"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Error from server (Forbidden): pods "second" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"#
    );
    let described = ok(&["describe", "quota", "q"]);
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "1", "1"]),
        "{described}"
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}
