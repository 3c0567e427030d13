//! `skiff snapshot save` against a running `skiff server`, and `skiff snapshot
//! restore` into its data dir after the store file was damaged: the server refuses
//! the damaged file with the recovery command, and after the restore it serves every
//! object as of the snapshot, resourceVersions included. With an etcd datastore the
//! snapshot is etcd's own (`etcdctl snapshot status` reads it), and restoring it
//! into a new data dir moves the cluster to the embedded engine with every object
//! and resourceVersion.

#[path = "../../crates/skiff-store/tests/support/etcd.rs"]
mod etcd_member;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

fn skiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff")).args(args).output().unwrap()
}

/// etcd ports of this test binary (see the store tests' `support/etcd.rs`).
static PORTS: etcd_member::Ports = etcd_member::Ports::new(23850, 23860);

fn server(dir: &Path, port: u16) -> Child {
    server_with(dir, port, &[])
}

fn server_with(dir: &Path, port: u16, extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--disable-agent", "--disable-dns", "--data-dir"])
        .arg(dir)
        .args(["--https-listen-port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

fn wait_ready(dir: &Path, child: &mut Child) {
    for _ in 0..600 {
        if dir.join("admin.kubeconfig").exists() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "server exited ({status}): {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server did not become ready");
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn admin_client(dir: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(dir.join("admin.kubeconfig")).unwrap();
    kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap()
}

async fn config_maps(dir: &Path) -> Vec<(String, String, String)> {
    let api: Api<ConfigMap> = Api::namespaced(admin_client(dir).await, "default");
    let mut out: Vec<_> = api
        .list(&ListParams::default().labels("snapshot-test"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.unwrap(),
                c.metadata.resource_version.unwrap(),
                c.data.unwrap()["v"].clone(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_damage_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = server(&data, port);
    wait_ready(&data, &mut child);

    let kc = kube::config::Kubeconfig::read_from(data.join("admin.kubeconfig")).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..50 {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("cm-{i}"), "labels": {"snapshot-test": "yes"}},
            "data": {"v": i.to_string()}
        }))
        .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let before = config_maps(&data).await;

    let file = dir.path().join("backup.snap");
    let out = skiff(&[
        "snapshot",
        "save",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("saved skiff snapshot of revision"));
    // Written after the snapshot: gone after the restore.
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "later", "labels": {"snapshot-test": "yes"}}, "data": {"v": "x"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    stop(child);

    // The store file is damaged: the server refuses to start, naming the file and
    // the recovery command.
    let db_file = data.join("db/state.redb");
    let len = std::fs::metadata(&db_file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db_file)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let _ = std::fs::remove_file(data.join("admin.kubeconfig"));
    let mut child = server(&data, port);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(data.join("server.log")).unwrap();
    assert!(!status.success(), "the server started on a damaged store: {log}");
    assert!(log.contains(db_file.to_str().unwrap()), "{log}");
    assert!(log.contains("skiff snapshot restore"), "{log}");

    // Restore refuses the non-empty store dir; with the damaged one moved aside it
    // recreates the store, and the server serves the snapshot's state.
    let out = skiff(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    std::fs::rename(data.join("db"), dir.path().join("db.damaged")).unwrap();
    let out = skiff(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut child = server(&data, port);
    wait_ready(&data, &mut child);
    let after = config_maps(&data).await;
    stop(child);
    assert_eq!(before, after);
}

/// The etcd -> embedded migration: a server on etcd with a few hundred objects
/// (created, updated, deleted), `skiff snapshot save` writes etcd's own snapshot,
/// `skiff snapshot restore` puts it into a new data dir, and a server started there
/// on the embedded engine serves every object with the same resourceVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_snapshot_migrates_to_the_embedded_engine() {
    let member = tokio::task::spawn_blocking(|| etcd_member::Member::single(&PORTS))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("on-etcd");
    std::fs::create_dir(&data).unwrap();
    let endpoint = format!("etcd://127.0.0.1:{}", member.spec.client_port);
    let mut child = server_with(
        &data,
        free_port(),
        &["--datastore-endpoint", &endpoint, "--disable-snapshots"],
    );
    wait_ready(&data, &mut child);

    let api: Api<ConfigMap> = Api::namespaced(admin_client(&data).await, "default");
    for i in 0..300 {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("cm-{i}"), "labels": {"snapshot-test": "yes"}},
            "data": {"v": i.to_string()}
        }))
        .unwrap();
        let mut cm = api.create(&PostParams::default(), &cm).await.unwrap();
        if i % 3 == 0 {
            cm.data.as_mut().unwrap().insert("v".into(), format!("{i} updated"));
            api.replace(&format!("cm-{i}"), &PostParams::default(), &cm)
                .await
                .unwrap();
        } else if i % 7 == 0 {
            api.delete(&format!("cm-{i}"), &Default::default()).await.unwrap();
        }
    }
    let before = config_maps(&data).await;
    assert!(before.len() > 250, "{} config maps", before.len());

    let file = dir.path().join("etcd.snapshot");
    let out = skiff(&[
        "snapshot",
        "save",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("saved etcd snapshot of revision"), "{stderr}");
    let later: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "later", "labels": {"snapshot-test": "yes"}}, "data": {"v": "x"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &later).await.unwrap();
    stop(child);

    // The file is etcd's: etcd's own tool reads it.
    let status = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let embedded = dir.path().join("embedded");
    let out = skiff(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        embedded.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("from the etcd snapshot"), "{stderr}");
    let mut child = server(&embedded, free_port());
    wait_ready(&embedded, &mut child);
    let after = config_maps(&embedded).await;
    stop(child);
    assert_eq!(before, after);
}
