//! What the benchmark drivers share: a fresh `skiff server --disable-agent` on its
//! own port and data dir, `skiff hollow` processes, waiting for nodes, and reading a
//! process's CPU time and resident memory from `/proc`.
// Each example compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) on drop.
pub struct Proc(pub Child);

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").arg(&pid).status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (VmRSS, VmHWM) of a process in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) the process used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is 0, utime 11, stime 12 (proc(5) 14 and 15).
    (ticks(11) + ticks(12)) / 100.0
}

/// The value at quantile `p` (0..=1) of ascending `sorted`, 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `x` rounded to three decimals, for JSON output.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(cfg).expect("client")
}

/// Whether the node's Ready condition is True.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// A running `skiff server --disable-agent --disable-dns` on 127.0.0.1.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// Its HTTPS port.
    pub port: u16,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
}

/// Starts a server with its data in `data_dir` and its log in `log_dir/server.log`
/// (with `extra` flags), and waits until it has written its admin kubeconfig.
pub async fn start_server(skiff: &Path, data_dir: &Path, log_dir: &Path, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(log_dir).unwrap();
    let log = std::fs::File::create(log_dir.join("server.log")).unwrap();
    let proc = Proc(
        Command::new(skiff)
            .args([
                "server",
                "--disable-agent",
                "--disable-dns",
                "--bind-address",
                "127.0.0.1",
            ])
            .arg("--https-listen-port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff server"),
    );
    let kubeconfig = data_dir.join("admin.kubeconfig");
    let t = Instant::now();
    while !kubeconfig.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "skiff server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server { proc, port, kubeconfig }
}

/// Starts `skiff hollow --kubeconfig K <args>`, logging to `log`.
pub fn start_hollow(skiff: &Path, kubeconfig: &Path, args: &[String], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(skiff)
            .arg("hollow")
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff hollow"),
    )
}

/// Waits until `count` nodes matching `label_selector` are Ready; panics after
/// `timeout` without progress.
pub async fn wait_nodes_ready(client: &kube::Client, label_selector: &str, count: usize, timeout: Duration) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut events = watcher(nodes, watcher::Config::default().labels(label_selector))
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut ready = HashSet::new();
    while ready.len() < count {
        match tokio::time::timeout(timeout, events.next()).await {
            Ok(Some(Ok(n))) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                if node_ready(&n) {
                    ready.insert(name);
                } else {
                    ready.remove(&name);
                }
            }
            Ok(Some(Err(e))) => eprintln!("node watch: {e}"),
            _ => panic!("only {} of {count} nodes Ready", ready.len()),
        }
    }
}
