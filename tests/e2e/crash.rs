//! Crash safety of the whole control plane: the real `skiff server` is killed with
//! SIGKILL at random moments while clients write; after a restart every acknowledged
//! write is there, intact, and resourceVersions keep increasing.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

const TRIALS: usize = 12;
const WRITERS: usize = 8;

fn start(dir: &std::path::Path, port: u16) -> Child {
    let _ = std::fs::remove_file(dir.join("admin.kubeconfig"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--disable-agent", "--data-dir"])
        .arg(dir)
        .args(["--https-listen-port", &port.to_string()])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starting skiff server");
    for _ in 0..200 {
        if dir.join("admin.kubeconfig").exists() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not become ready");
}

async fn client(dir: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(dir.join("admin.kubeconfig")).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(
        serde_json::json!({"metadata": {"name": name}, "data": {"payload": format!("{name}-{}", "x".repeat(512))}}),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut last_rv = 0i64;
    for trial in 0..TRIALS {
        let mut child = start(dir.path(), port);
        let api: Api<ConfigMap> = Api::namespaced(client(dir.path()).await, "default");
        // Everything acknowledged before is still there, intact.
        let present = api.list(&ListParams::default()).await.unwrap().items;
        for (name, rv) in acked.lock().unwrap().iter() {
            let cm = present
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name.as_str()));
            let cm = cm.unwrap_or_else(|| panic!("trial {trial}: acknowledged write {name} (rv {rv}) is missing"));
            assert_eq!(
                cm.data.as_ref().unwrap()["payload"],
                config_map(name).data.unwrap()["payload"],
                "{name} is intact"
            );
        }
        // Revisions continue past everything seen before the crash.
        let probe = api
            .create(&PostParams::default(), &config_map(&format!("probe-{trial}")))
            .await
            .unwrap();
        let rv: i64 = probe.metadata.resource_version.unwrap().parse().unwrap();
        assert!(
            rv > last_rv,
            "trial {trial}: resourceVersion {rv} does not continue after {last_rv}"
        );
        acked.lock().unwrap().push((format!("probe-{trial}"), rv));
        // Concurrent writers, then SIGKILL at a pseudo-random moment.
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let api = api.clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let name = format!("t{trial}-w{w}-{n}");
                    match api.create(&PostParams::default(), &config_map(&name)).await {
                        Ok(cm) => {
                            let rv = cm.metadata.resource_version.unwrap().parse().unwrap();
                            acked.lock().unwrap().push((name, rv));
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        let delay = 150 + (trial as u64 * 7919 + rv as u64 * 31) % 700;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        for t in tasks {
            let _ = t.await;
        }
        last_rv = acked.lock().unwrap().iter().map(|(_, rv)| *rv).max().unwrap_or(0);
    }
    let total = acked.lock().unwrap().len();
    eprintln!("{total} acknowledged writes over {TRIALS} crashes");
    assert!(
        total > TRIALS * 2,
        "the writers made progress ({total} acknowledged writes)"
    );
    // A final restart sees everything.
    let mut child = start(dir.path(), port);
    let api: Api<ConfigMap> = Api::namespaced(client(dir.path()).await, "default");
    let names: std::collections::HashSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    for (name, _) in acked.lock().unwrap().iter() {
        assert!(names.contains(name), "{name} missing after the final restart");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
