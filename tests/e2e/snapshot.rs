//! `skiff snapshot save` against a running `skiff server`, and `skiff snapshot
//! restore` into its data dir after the store file was damaged: the server refuses
//! the damaged file with the recovery command, and after the restore it serves every
//! object as of the snapshot, resourceVersions included.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

fn skiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff")).args(args).output().unwrap()
}

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

async fn config_maps(dir: &Path) -> Vec<(String, String, String)> {
    let kc = kube::config::Kubeconfig::read_from(dir.join("admin.kubeconfig")).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("saved snapshot of revision"));
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
