//! Snapshots of the embedded engine, and what happens when its file or its disk
//! fails: a damaged file is refused at start with the recovery command, a full disk
//! refuses writes (reads keep working) until space returns.

use std::path::Path;

use skiff_store::snapshot::{Snapshot, SnapshotError};
use skiff_store::{EmbeddedStore, Error, ListOptions, Store};

async fn all(s: &dyn Store) -> Vec<skiff_store::KeyValue> {
    s.list("/", ListOptions::default()).await.unwrap().items
}

#[tokio::test]
async fn snapshot_restores_every_key_with_its_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(&dir.path().join("a")).unwrap();
    for i in 0..1234 {
        s.create(
            &format!("/registry/configmaps/ns{}/cm{i}", i % 7),
            format!("v{i}").into_bytes(),
        )
        .await
        .unwrap();
    }
    let kv = s
        .update("/registry/configmaps/ns0/cm0", 1, b"changed".to_vec())
        .await
        .unwrap();
    s.delete("/registry/configmaps/ns1/cm1", None).await.unwrap();
    let taken_at = s.current_revision().await.unwrap();
    let snap = Snapshot::take(&s).await.unwrap();
    // Writes after the snapshot are not in it.
    s.create("/registry/namespaces/later", b"x".to_vec()).await.unwrap();
    assert_eq!(snap.revision, taken_at);
    assert_eq!(snap.items.len(), 1233);

    let file = dir.path().join("snap");
    snap.write_file(&file).unwrap();
    let read = Snapshot::read_file(&file).unwrap();
    assert_eq!(read, snap);

    let target = dir.path().join("restored");
    EmbeddedStore::restore(&target, &read).unwrap();
    let r = EmbeddedStore::open(&target).unwrap();
    assert_eq!(r.current_revision().await.unwrap(), taken_at);
    let restored = all(&r).await;
    assert_eq!(restored, snap.items);
    let got = r.get("/registry/configmaps/ns0/cm0").await.unwrap().unwrap();
    assert_eq!(
        (got.create_revision, got.mod_revision, got.value),
        (1, kv.mod_revision, b"changed".to_vec())
    );
    assert_eq!(r.get("/registry/namespaces/later").await.unwrap(), None);

    // The revision counter continues after the snapshot's; CAS on a restored
    // revision works.
    let next = r.create("/registry/namespaces/new", vec![]).await.unwrap();
    assert_eq!(next.mod_revision, taken_at + 1);
    r.update("/registry/configmaps/ns0/cm0", kv.mod_revision, b"again".to_vec())
        .await
        .unwrap();
    // History before the snapshot is gone: older watches are told to re-list.
    assert!(matches!(r.watch("/", taken_at - 1).await, Err(Error::Compacted { .. })));
    assert!(r.watch("/", taken_at).await.is_ok());

    // A non-empty target is refused.
    drop(r);
    let err = EmbeddedStore::restore(&target, &read).unwrap_err();
    assert!(matches!(err, SnapshotError::TargetNotEmpty(_)), "{err}");
}

#[test]
fn truncated_snapshot_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let snap = Snapshot {
        revision: 3,
        items: vec![skiff_store::KeyValue {
            key: "/registry/namespaces/default".into(),
            value: b"{}".to_vec(),
            create_revision: 1,
            mod_revision: 3,
        }],
    };
    let file = dir.path().join("snap");
    snap.write_file(&file).unwrap();
    let raw = std::fs::read(&file).unwrap();
    std::fs::write(&file, &raw[..raw.len() - 5]).unwrap();
    let err = Snapshot::read_file(&file).unwrap_err().to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains("truncated"),
        "{err}"
    );
}

/// Writes a store with some keys and returns its database file.
async fn populated(dir: &Path) -> std::path::PathBuf {
    let s = EmbeddedStore::open(dir).unwrap();
    for i in 0..200 {
        s.create(&format!("/registry/pods/default/p{i}"), vec![b'x'; 3000])
            .await
            .unwrap();
    }
    s.path().to_path_buf()
}

fn assert_refused(dir: &Path, file: &Path) {
    let err = EmbeddedStore::open(dir).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "error does not name the file: {err}"
    );
    assert!(
        err.contains("skiff snapshot restore"),
        "error does not say how to recover: {err}"
    );
    // Nothing was replaced by an empty database.
    assert!(file.exists());
}

#[tokio::test]
async fn damaged_database_files_are_refused_with_the_recovery_command() {
    let root = tempfile::tempdir().unwrap();

    let truncated = root.path().join("data1/db");
    let file = populated(&truncated).await;
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_refused(&truncated, &file);

    let emptied = root.path().join("data2/db");
    let file = populated(&emptied).await;
    std::fs::write(&file, b"").unwrap();
    assert_refused(&emptied, &file);

    let garbage = root.path().join("data3/db");
    let file = populated(&garbage).await;
    let mut raw = std::fs::read(&file).unwrap();
    // Overwrite everything after the first page (the header) with noise.
    for (i, b) in raw.iter_mut().enumerate().skip(4096) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&file, &raw).unwrap();
    assert_refused(&garbage, &file);
}

/// Runs `cmd` and returns whether it succeeded.
fn sh(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn full_disk_refuses_writes_keeps_reads_and_recovers() {
    // A real full disk: a small tmpfs mounted for this test (needs root).
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    if !sh("mount", &["-t", "tmpfs", "-o", "size=24m", "tmpfs", m]) {
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(m.to_string());

    let s = EmbeddedStore::open(&mnt.join("db")).unwrap();
    let first = s
        .create("/registry/pods/default/before", vec![b'a'; 1000])
        .await
        .unwrap();
    // Fill the filesystem with another file until it is full.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let err = s
        .create("/registry/pods/default/during", vec![b'b'; 1000])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace(_)), "{err}");
    assert!(err.to_string().contains("free disk space"), "{err}");
    // Reads keep working, and nothing was half-written.
    assert_eq!(
        s.get("/registry/pods/default/before").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.get("/registry/pods/default/during").await.unwrap(), None);
    assert_eq!(all(&s).await.len(), 1);
    assert_eq!(s.current_revision().await.unwrap(), first.mod_revision);

    // Space returns: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let after = s
        .create("/registry/pods/default/after", vec![b'c'; 1000])
        .await
        .unwrap();
    assert_eq!(after.mod_revision, first.mod_revision + 1);
    drop(s);
    let s = EmbeddedStore::open(&mnt.join("db")).unwrap();
    assert_eq!(all(&s).await.len(), 2);
}

#[tokio::test]
async fn snapshots_of_an_encrypting_store_keep_secrets_encrypted() {
    use skiff_store::EncryptedStore;
    use skiff_store::encryption::{EncryptionConfig, ResourceKeys};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
    let config = EncryptionConfig::parse(
        b"apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: key1\n              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )
    .unwrap();
    let store = EncryptedStore::new(engine.clone(), config, ResourceKeys::new([("", "secrets")]));
    let plain = br#"{"kind":"Secret","data":{"password":"hunter2-plaintext"}}"#.to_vec();
    store
        .create("/registry/secrets/default/db", plain.clone())
        .await
        .unwrap();

    let snap = Snapshot::take(&store).await.unwrap();
    let raw = snap.encode();
    assert!(
        !raw.windows(17).any(|w| w == b"hunter2-plaintext"),
        "the snapshot holds the Secret in plain text"
    );
    assert!(snap.items[0].value.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    // Restored under the same configuration, the Secret reads back.
    let target = dir.path().join("restored");
    EmbeddedStore::restore(&target, &snap).unwrap();
    drop(store);
    let restored = Arc::new(EmbeddedStore::open(&target).unwrap());
    let config = EncryptionConfig::parse(
        b"apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: key1\n              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )
    .unwrap();
    let store = EncryptedStore::new(restored, config, ResourceKeys::new([("", "secrets")]));
    assert_eq!(
        store.get("/registry/secrets/default/db").await.unwrap().unwrap().value,
        plain
    );
}
