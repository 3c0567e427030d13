//! A control plane of several `skiff server --disable-agent` processes sharing one
//! real etcd (Debian's `/usr/bin/etcd` on loopback): both servers come up at once with
//! one `--token` and agree on one CA, credentials issued through one work on the other,
//! writes through one are seen by watches on the other, only one controller-manager
//! acts, the survivor takes over when a server stops, and a server with a wrong token
//! is refused with an error naming `--token`.
//!
//! Needs `etcd` (package `etcd-server`) and `kubectl`; no node agent.

#[path = "../../crates/skiff-store/tests/support/etcd.rs"]
mod etcd;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

/// Ports of this test binary (etcd's and the servers').
static PORTS: etcd::Ports = etcd::Ports::new(23900, 23920);

const TOKEN: &str = "ha-test-cluster-token";

/// One `skiff server` process with its own data dir and port.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(endpoint: &str, token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = PORTS.take();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.args([
            "server",
            "--disable-agent",
            "--disable-dns",
            "--disable-snapshots",
            "--bind-address",
            "127.0.0.1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--https-listen-port", &port.to_string()])
        .args(["--datastore-endpoint", endpoint])
        .env_remove("SKIFF_TOKEN");
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self {
            dir,
            port,
            child: Some(child),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    fn kubeconfig(&self) -> PathBuf {
        self.path("admin.kubeconfig")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.kubeconfig().exists() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "server not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit on its own; its status and log.
    fn wait_exit(&mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "server did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for the exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `kubectl --kubeconfig KC --server https://127.0.0.1:PORT ARGS`.
fn kubectl(kubeconfig: &Path, port: u16, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg(format!("--server=https://127.0.0.1:{port}"))
        .args(args)
        .output()
        .expect("running kubectl")
}

fn kubectl_ok(kubeconfig: &Path, port: u16, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, port, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Retries `f` every 500 ms until it succeeds; panics with its last error after `timeout`.
fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
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

/// A kube client with `kubeconfig`'s credentials against the server on `port`.
async fn client(kubeconfig: &Path, port: u16) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.cluster_url = format!("https://127.0.0.1:{port}").parse().unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// Records the name of every Pod that ever exists in `default` from now on (a watch
/// from a list's resourceVersion, resumed from the last event seen if it ends).
async fn record_pod_names(api: Api<Pod>) -> Arc<Mutex<BTreeSet<String>>> {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let list = api.list(&ListParams::default()).await.unwrap();
    for p in list.items {
        seen.lock().unwrap().insert(p.metadata.name.unwrap());
    }
    let mut rv = list.metadata.resource_version.unwrap();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok(stream) = api.watch(&WatchParams::default(), &rv).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut stream = stream.boxed();
            while let Some(Ok(ev)) = stream.next().await {
                let pod = match ev {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => p,
                    WatchEvent::Bookmark(b) => {
                        rv = b.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Error(e) => panic!("pod watch failed: {e:?}"),
                };
                rv = pod.metadata.resource_version.clone().unwrap();
                out.lock().unwrap().insert(pod.metadata.name.unwrap());
            }
        }
    });
    seen
}

/// Waits until `count` Pods of Deployment `web` exist (read through the server on
/// `port`), then a few more seconds, and returns the names of every Pod ever seen.
fn settled_pods(kubeconfig: &Path, port: u16, count: usize, seen: &Mutex<BTreeSet<String>>) -> BTreeSet<String> {
    eventually(&format!("{count} pods"), Duration::from_secs(60), || {
        let names = kubectl_ok(kubeconfig, port, &["get", "pods", "-l", "app=web", "-o", "name"]);
        let n = names.lines().count();
        if n == count {
            Ok(())
        } else {
            Err(format!("{n} pods: {names}"))
        }
    });
    // Give a second, misbehaving controller-manager time to act.
    std::thread::sleep(Duration::from_secs(4));
    seen.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sharing_etcd_form_one_control_plane() {
    let member = etcd::Member::single(&PORTS);
    let endpoint = format!("etcd://127.0.0.1:{}", member.spec.client_port);

    // Two servers start at the same moment with one token.
    let mut a = Server::start(&endpoint, Some(TOKEN));
    let mut b = Server::start(&endpoint, Some(TOKEN));
    a.wait_ready();
    b.wait_ready();

    // Exactly one of them created the cluster's bootstrap data; the other adopted it.
    let created = [&a, &b]
        .iter()
        .filter(|s| {
            s.log()
                .contains("stored the cluster CA and service-account key in etcd")
        })
        .count();
    assert_eq!(created, 1, "A:\n{}\nB:\n{}", a.log(), b.log());

    // One cluster CA, although each server issued its own certificates.
    let ca = |s: &Server| std::fs::read_to_string(s.path("tls/ca.crt")).unwrap();
    assert_eq!(ca(&a), ca(&b));
    assert_ne!(
        std::fs::read_to_string(a.path("tls/server.crt")).unwrap(),
        std::fs::read_to_string(b.path("tls/server.crt")).unwrap()
    );

    // Server A's admin kubeconfig works against server B.
    let who = kubectl_ok(
        &a.kubeconfig(),
        b.port,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert_eq!(who, "system:admin");

    // A watch through B sees a ConfigMap created through A.
    let cms_b: Api<ConfigMap> = Api::namespaced(client(&b.kubeconfig(), b.port).await, "default");
    let rv = cms_b
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = cms_b.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    let cms_a: Api<ConfigMap> = Api::namespaced(client(&a.kubeconfig(), a.port).await, "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "through-a"}, "data": {"k": "v"}
    }))
    .unwrap();
    cms_a.create(&PostParams::default(), &cm).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = watch.next().await {
            if let WatchEvent::Added(cm) = ev.unwrap() {
                return cm;
            }
        }
        panic!("the watch through B ended");
    })
    .await
    .expect("the watch through B did not see the ConfigMap");
    assert_eq!(seen.metadata.name.as_deref(), Some("through-a"));
    assert_eq!(seen.data.unwrap()["k"], "v");

    // A ServiceAccount token minted through A authenticates on B.
    let sa_token = eventually("a token for default/default", Duration::from_secs(60), || {
        let out = kubectl(&a.kubeconfig(), a.port, &["create", "token", "default"]);
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap().trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let out = Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig=/dev/null")
        .arg(format!("--server=https://127.0.0.1:{}", b.port))
        .arg(format!("--certificate-authority={}", b.path("tls/ca.crt").display()))
        .arg(format!("--token={sa_token}"))
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "system:serviceaccount:default:default"
    );

    // A Deployment of 3 created through A gets exactly 3 Pods, never more: one
    // controller-manager acts at a time.
    let seen = record_pod_names(Api::namespaced(client(&b.kubeconfig(), b.port).await, "default")).await;
    kubectl_ok(
        &a.kubeconfig(),
        a.port,
        &["create", "deployment", "web", "--image=busybox", "--replicas=3"],
    );
    let names = settled_pods(&b.kubeconfig(), b.port, 3, &seen);
    assert_eq!(names.len(), 3, "pods that ever existed: {names:?}");

    // A stops; B keeps serving and its controllers take over.
    a.stop();
    kubectl_ok(&b.kubeconfig(), b.port, &["scale", "deployment", "web", "--replicas=5"]);
    let names = settled_pods(&b.kubeconfig(), b.port, 5, &seen);
    assert_eq!(names.len(), 5, "pods that ever existed: {names:?}");
    let pending = kubectl_ok(
        &b.kubeconfig(),
        b.port,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ],
    );
    assert_eq!(pending.split_whitespace().collect::<Vec<_>>(), ["Pending"; 5]);

    // A third server with a wrong token, or none, is refused with an error naming
    // --token, and writes no certificates.
    for token in [Some("not-the-token"), None] {
        let mut c = Server::start(&endpoint, token);
        let (status, log) = c.wait_exit();
        assert!(!status.success(), "{log}");
        assert!(log.contains("--token"), "{log}");
        assert!(log.contains("/skiff/bootstrap"), "{log}");
        assert!(!c.path("tls").exists(), "{log}");
    }

    // B still serves.
    let cms = kubectl_ok(
        &b.kubeconfig(),
        b.port,
        &["get", "configmap", "through-a", "-o", "name"],
    );
    assert_eq!(cms.trim(), "configmap/through-a");
    b.stop();
    drop(member);
}
