//! Helpers for end-to-end tests: a real `skiff server` process, the machine's real
//! `kubectl`, and containerd's `ctr` for looking behind the API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fails the test with a clear message when the machine lacks what e2e tests need.
pub fn require_environment() {
    let missing: Vec<&str> = ["kubectl", "containerd", "runc", "ctr", "skopeo"]
        .into_iter()
        .filter(|b| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {b}"))
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}: run scripts/setup first");
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "end-to-end tests run containers and need root"
    );
    let registry = Command::new("sh")
        .arg("-c")
        .arg("curl -fsS http://127.0.0.1:5000/v2/ >/dev/null")
        .status();
    assert!(
        registry.is_ok_and(|s| s.success()),
        "the local registry on 127.0.0.1:5000 is not running: run scripts/setup"
    );
    for image in ["library/busybox:latest", "library/busybox:1.35", "pause:3.10"] {
        let found = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://127.0.0.1:5000/{image}"))
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "image {image} is not in the local registry: run scripts/setup");
    }
    let version = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .expect("kubectl version");
    let minor = kubectl_minor(&String::from_utf8_lossy(&version.stdout));
    assert!(
        minor.is_some_and(|m| m >= 32),
        "end-to-end tests need kubectl >= 1.32, found {:?}",
        String::from_utf8_lossy(&version.stdout)
    );
}

/// The minor version from `kubectl version --client -o json` output
/// (`clientVersion.minor`, e.g. `"32"` or `"32+"`).
fn kubectl_minor(json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let minor = v["clientVersion"]["minor"].as_str()?;
    minor.trim_end_matches('+').parse().ok()
}

/// A free TCP port on the host.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns `Ok`, failing the test after `timeout` with the last error.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("timed out after {timeout:?} waiting for {what}: {e}"),
        }
    }
}

/// A running `skiff server` with its own data dir and ports.
pub struct Cluster {
    pub dir: PathBuf,
    pub api_port: u16,
    pub kubelet_port: u16,
    /// Extra `skiff server` flags (see [`Cluster::start_with`]).
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Cluster {
    /// Starts a server in a fresh temporary data dir.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server in a fresh temporary data dir with extra `skiff server` flags.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("skiff-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Cluster {
            dir,
            api_port: free_port(),
            kubelet_port: free_port(),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        c.spawn();
        c
    }

    /// Starts the server process on the existing data dir.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["server", "--data-dir"])
            .arg(&self.dir)
            .args(["--https-listen-port", &self.api_port.to_string()])
            .args(["--kubelet-port", &self.kubelet_port.to_string()])
            .args(&self.extra_args)
            // `SKIFF_LOG` from the test's environment (e.g. `info,skiff_kubelet=debug`) or info.
            .env(
                "SKIFF_LOG",
                std::env::var("SKIFF_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting skiff server");
        self.child = Some(child);
        let kubeconfig = self.kubeconfig();
        eventually("admin.kubeconfig", Duration::from_secs(60), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("skiff server exited with {status}; log:\n{}", self.log_tail());
            }
            if kubeconfig.exists() {
                Ok(())
            } else {
                Err("not yet written".into())
            }
        });
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (up to 60 s) until the cluster's single node reports Ready.
    pub fn wait_node_ready(&self) {
        eventually("node Ready", Duration::from_secs(60), || {
            let out = self.kubectl_ok(&["get", "nodes", "--no-headers"]);
            if out.split_whitespace().nth(1) == Some("Ready") {
                Ok(())
            } else {
                Err(out)
            }
        });
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs kubectl against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// Runs kubectl and returns stdout, failing the test on a non-zero exit.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl with a manifest on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], manifest: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Running tasks (sandboxes and containers) in this node's containerd.
    pub fn running_tasks(&self) -> usize {
        let sock = self.dir.join("agent/containerd/containerd.sock");
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io", "tasks", "ls", "-q"])
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// Containers (sandboxes and application containers, running or not) known to this
    /// node's containerd in the CRI namespace.
    pub fn containers(&self) -> usize {
        let sock = self.dir.join("agent/containerd/containerd.sock");
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io", "containers", "ls", "-q"])
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    fn containerd_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("agent/containerd/containerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cluster {
    /// Tears the cluster down so nothing outlives the test, even when it failed half-way:
    /// workloads and pods are deleted through the API, whatever containers are left are
    /// killed and removed through containerd, then the server (and with it its
    /// containerd) is stopped, leftover mounts are unmounted and the data dir is removed
    /// (kept when `SKIFF_E2E_KEEP` is set, for debugging), and the proxy's nftables
    /// table is deleted.
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.kubectl(&[
                "delete",
                "deployments,replicasets,replicationcontrollers,statefulsets,daemonsets,jobs,cronjobs",
                "--all",
                "-A",
                "--wait=false",
            ]);
            let _ = self.kubectl(&[
                "delete",
                "pods",
                "--all",
                "-A",
                "--grace-period=0",
                "--force",
                "--wait=false",
            ]);
            let _ = eventually_quiet(Duration::from_secs(30), || {
                self.running_tasks() == 0 && self.containers() == 0
            });
            self.force_remove_containers();
        }
        self.stop();
        if let Some(pid) = self.containerd_pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        // The proxy leaves its Service rules in place on shutdown (as upstream); remove
        // them so no rule outlives the cluster.
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", "skiff-proxy"])
            .output();
        if std::env::var_os("SKIFF_E2E_KEEP").is_none() {
            let _ = remove_tree(&self.dir);
        }
    }
}

impl Cluster {
    /// Kills and removes, through `ctr`, every container the kubelet did not clean up.
    fn force_remove_containers(&self) {
        let sock = self.dir.join("agent/containerd/containerd.sock");
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .arg("--address")
                .arg(&sock)
                .args(["-n", "k8s.io"])
                .args(args)
                .output()
        };
        let Ok(out) = ctr(&["containers", "ls", "-q"]) else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = ctr(&["tasks", "delete", "-f", id]);
            let _ = ctr(&["containers", "delete", id]);
        }
    }
}

fn eventually_quiet(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    // Unmount anything containerd left mounted under the data dir first.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
    std::fs::remove_dir_all(dir)
}

/// A minimal HTTP/1.0 GET from the host; returns (status code, body).
pub fn http_get(ip: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response {buf:?}"))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
