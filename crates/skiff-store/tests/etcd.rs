//! The etcd engine against a real single-member etcd (Debian's `etcd-server`) on
//! loopback: the shared store suite, TLS with client certificates, and the errors a
//! user sees when etcd is unreachable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_store::{EtcdConfig, EtcdStore, EtcdTls, Store};

mod support;

use support::etcd::{Member, MemberTls, Ports};
use support::suite::Harness;

/// Ports of this test binary (the cluster test and others use other ranges).
static PORTS: Ports = Ports::new(23800, 23850);

fn config(spec: &str, tls: EtcdTls) -> EtcdConfig {
    EtcdConfig::parse(spec, tls).unwrap()
}

/// A fresh single-member etcd; every opened store is a new client of it.
async fn harness() -> Harness {
    let member = tokio::task::spawn_blocking(|| Member::single(&PORTS)).await.unwrap();
    let cfg = config(
        &format!("etcd://127.0.0.1:{}", member.spec.client_port),
        EtcdTls::default(),
    );
    let store = EtcdStore::connect(&cfg).await.unwrap();
    wait_ready(&store).await;
    Harness {
        open: Box::new(move || {
            let cfg = cfg.clone();
            Box::pin(async move { Arc::new(EtcdStore::connect(&cfg).await.unwrap()) as Arc<dyn Store> })
        }),
        _guard: Box::new(member),
    }
}

/// Waits until the member has elected itself and serves quorum reads.
async fn wait_ready(store: &EtcdStore) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.health().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("etcd not ready: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

store_suite!(harness);

#[tokio::test]
async fn an_unreachable_etcd_fails_requests_quickly_with_unavailable() {
    // Nothing listens on this port.
    let port = PORTS.take();
    let mut cfg = config(&format!("etcd://127.0.0.1:{port}"), EtcdTls::default());
    cfg.request_timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(&cfg).await.unwrap();
    for result in [
        store.create("/registry/pods/a/b", vec![]).await.map(|_| ()),
        store.get("/registry/pods/a/b").await.map(|_| ()),
        store.watch("/registry/", 0).await.map(|_| ()),
        store.health().await,
    ] {
        match result {
            Err(skiff_store::Error::Unavailable { endpoints, .. }) => {
                assert_eq!(endpoints, format!("http://127.0.0.1:{port}"));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn tls_with_client_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "etcd-ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).unwrap();
        let (c, k) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    let (server_cert, server_key) = leaf(
        "etcd-server",
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf("skiff-apiserver", vec![], ExtendedKeyUsagePurpose::ClientAuth);
    let member_tls = MemberTls {
        cert: server_cert,
        key: server_key,
        client_ca: ca.clone(),
    };
    let member = tokio::task::spawn_blocking(move || Member::single_with_tls(&PORTS, Some(member_tls)))
        .await
        .unwrap();
    let endpoint = format!("etcd://127.0.0.1:{}", member.spec.client_port);

    let tls = EtcdTls {
        ca_file: Some(ca.clone()),
        cert_file: Some(client_cert),
        key_file: Some(client_key),
    };
    let store = EtcdStore::connect(&config(&endpoint, tls)).await.unwrap();
    wait_ready(&store).await;
    let kv = store.create("/registry/secrets/ns/s", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get("/registry/secrets/ns/s").await.unwrap(), Some(kv));

    // Without a client certificate etcd refuses the connection.
    let mut cfg = config(
        &endpoint,
        EtcdTls {
            ca_file: Some(ca),
            ..Default::default()
        },
    );
    cfg.request_timeout = Duration::from_secs(2);
    let anonymous = EtcdStore::connect(&cfg).await.unwrap();
    assert!(anonymous.get("/registry/secrets/ns/s").await.is_err());
}

/// A single etcd member, its `host:port`, the etcd engine on it, and that engine behind
/// an aesgcm encryption of Secrets (with `identity` to read plain values).
async fn encrypting_etcd_store() -> (Member, String, Arc<EtcdStore>, skiff_store::EncryptedStore) {
    use skiff_store::encryption::{EncryptionConfig, ResourceKeys};
    let member = tokio::task::spawn_blocking(|| Member::single(&PORTS)).await.unwrap();
    let endpoint = format!("127.0.0.1:{}", member.spec.client_port);
    let engine = Arc::new(
        EtcdStore::connect(&config(&format!("etcd://{endpoint}"), EtcdTls::default()))
            .await
            .unwrap(),
    );
    wait_ready(&engine).await;
    let encryption = EncryptionConfig::parse(
        b"apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: key1\n              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n      - identity: {}\n",
    )
    .unwrap();
    let store = skiff_store::EncryptedStore::new(engine.clone(), encryption, ResourceKeys::new([("", "secrets")]));
    (member, endpoint, engine, store)
}

/// Encryption at rest and snapshots on the etcd engine: `etcdctl get` (what anyone
/// with access to etcd sees) shows upstream's `k8s:enc:aesgcm:v1:<key>:` prefix and
/// no plain value, while reads through the wrapper return the Secret; a snapshot of
/// the etcd-backed store restores into an embedded data dir with every key, value (as
/// at rest) and revision, and the restored store's revision counter continues.
#[tokio::test]
async fn etcdctl_sees_only_ciphertext_and_a_snapshot_restores_into_the_embedded_engine() {
    use skiff_store::snapshot::Snapshot;
    use skiff_store::{EmbeddedStore, ListOptions};

    const PASSWORD: &str = "correct-horse-battery-staple";
    // The member lives as long as the test: dropping it stops etcd.
    let (_member, endpoint, engine, store) = encrypting_etcd_store().await;

    let secret = format!(r#"{{"kind":"Secret","metadata":{{"name":"db"}},"stringData":{{"password":"{PASSWORD}"}}}}"#);
    let key = "/registry/secrets/default/db";
    store.create(key, secret.clone().into_bytes()).await.unwrap();
    store
        .create(
            "/registry/configmaps/default/c",
            b"{\"data\":{\"v\":\"plain\"}}".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(store.get(key).await.unwrap().unwrap().value, secret.as_bytes());

    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoint, "get", key, "--print-value-only"])
        .output()
        .await
        .expect("running etcdctl (scripts/setup installs etcd-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stdout.starts_with(b"k8s:enc:aesgcm:v1:key1:"),
        "etcdctl shows {:?}",
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(40)])
    );
    assert!(
        !out.stdout.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
        "the password is in etcd in plain text"
    );

    let snapshot = Snapshot::take(&store).await.unwrap();
    let live = engine.list("/registry/", ListOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    EmbeddedStore::restore(&data, &snapshot).unwrap();
    let restored = EmbeddedStore::open(&data).unwrap();
    let got = restored.list("/registry/", ListOptions::default()).await.unwrap();
    assert_eq!(got.items, live.items, "keys, values as at rest, and revisions");
    assert_eq!(restored.current_revision().await.unwrap(), snapshot.revision);
    let next = restored
        .create("/registry/configmaps/default/after", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(next.mod_revision, snapshot.revision + 1);
}

/// etcd's own snapshot through the store (`snapshot::save` on an encrypting
/// etcd-backed store, as `skiff snapshot save` and the scheduled snapshots take it):
/// the file is etcd's (`etcdctl snapshot status` reads it, `etcdctl snapshot
/// restore` rebuilds an etcd member from it with every key), and it restores into
/// the embedded engine with every key, value (as at rest: Secrets stay encrypted),
/// create and mod revision of etcd's list at the snapshot's revision, after
/// updates, deletes and compactions. Truncated or damaged copies are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_native_snapshot_is_etcds_and_restores_into_the_embedded_engine() {
    use skiff_store::snapshot::{Format, SnapshotError, read_any_file, save};
    use skiff_store::{EmbeddedStore, ListOptions};

    let (_member, _endpoint, engine, store) = encrypting_etcd_store().await;

    // A few hundred keys: creates, updates, deletes, a compaction, more of each after
    // it, and a delete as the last write before the snapshot.
    let mut revs = Vec::new();
    for i in 0..300 {
        let key = if i % 5 == 0 {
            format!("/registry/secrets/ns{}/s{i}", i % 3)
        } else {
            format!("/registry/configmaps/ns{}/cm{i}", i % 3)
        };
        revs.push((
            key.clone(),
            store.create(&key, format!("value {i}").into_bytes()).await.unwrap(),
        ));
    }
    for (i, (key, kv)) in revs.iter_mut().enumerate() {
        if i % 4 == 1 {
            *kv = store
                .update(key, kv.mod_revision, format!("updated {i}").into_bytes())
                .await
                .unwrap();
        } else if i % 7 == 2 {
            store.delete(key, None).await.unwrap();
        }
    }
    let mid = store.current_revision().await.unwrap();
    store.compact(mid - 20).await.unwrap();
    for (i, (key, kv)) in revs.iter().enumerate() {
        if i % 11 == 3 && i % 7 != 2 {
            if i % 2 == 0 {
                store
                    .update(key, kv.mod_revision, b"after compaction".to_vec())
                    .await
                    .unwrap();
            } else {
                store.delete(key, None).await.unwrap();
            }
        }
    }
    store.create("/registry/namespaces/gone", b"{}".to_vec()).await.unwrap();
    store.delete("/registry/namespaces/gone", None).await.unwrap();
    // Compacting at the delete removes its tombstone: the snapshot's revision then
    // comes from etcd's compaction records, not from its newest entry.
    store.compact(store.current_revision().await.unwrap()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.db");
    let saved = save(&store, &file).await.unwrap();
    let at = engine.current_revision().await.unwrap();
    // Written after the snapshot: not in it.
    store
        .create("/registry/namespaces/later", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(saved.format, Format::Etcd);
    assert_eq!(saved.revision, at, "the file records the revision it was taken at");
    assert_eq!(saved.bytes, std::fs::metadata(&file).unwrap().len());

    // etcd's own tools accept the file.
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .output()
        .await
        .expect("running etcdctl (scripts/setup installs etcd-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // etcd counts every stored revision; the compactions left one per live key.
    let stored = status["totalKey"].as_u64().unwrap();

    // Into the embedded engine: everything etcd lists at that revision, as stored.
    let expected = engine
        .list(
            "/",
            ListOptions {
                revision: Some(saved.revision),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
    assert!(expected.len() > 200, "{} keys", expected.len());
    assert!(stored >= expected.len() as u64, "{status}");
    let read = read_any_file(&file, false).unwrap();
    assert_eq!(read.format, Format::Etcd);
    assert_eq!(read.snapshot.revision, saved.revision);
    let data = dir.path().join("restored");
    EmbeddedStore::restore(&data, &read.snapshot).unwrap();
    let restored = EmbeddedStore::open(&data).unwrap();
    let got = restored.list("/", ListOptions::default()).await.unwrap().items;
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected, "keys, values as at rest, create and mod revisions");
    let secret = got.iter().find(|kv| kv.key.starts_with("/registry/secrets/")).unwrap();
    assert!(secret.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    assert_eq!(restored.current_revision().await.unwrap(), saved.revision);
    let next = restored
        .create("/registry/namespaces/after", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(next.mod_revision, saved.revision + 1);

    // `etcdctl snapshot restore` rebuilds an etcd member with the same keys.
    let etcd_dir = tempfile::tempdir().unwrap();
    let (client_port, peer_port) = (PORTS.take(), PORTS.take());
    let spec = support::etcd::MemberSpec {
        name: "m0".into(),
        client_port,
        peer_port,
        initial_cluster: format!("m0=http://127.0.0.1:{peer_port}"),
        token: "restored".into(),
        tls: None,
    };
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(etcd_dir.path().join("m0.etcd"))
        .args(["--name", "m0", "--initial-cluster", &spec.initial_cluster])
        .args(["--initial-cluster-token", "restored"])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let etcd_path = etcd_dir.path().to_path_buf();
    let rebuilt_member = tokio::task::spawn_blocking(move || {
        let mut m = Member::start_in(spec, &etcd_path);
        m.wait_listening();
        m
    })
    .await
    .unwrap();
    let rebuilt = EtcdStore::connect(&config(
        &format!("etcd://127.0.0.1:{}", rebuilt_member.spec.client_port),
        EtcdTls::default(),
    ))
    .await
    .unwrap();
    wait_ready(&rebuilt).await;
    let from_etcd = rebuilt.list("/", ListOptions::default()).await.unwrap().items;
    assert_eq!(from_etcd, expected, "etcdctl's restore has the same keys and revisions");

    // A truncated or damaged file is refused before anything is written.
    let raw = std::fs::read(&file).unwrap();
    let bad = dir.path().join("bad.db");
    let mut flipped = raw.clone();
    flipped[raw.len() / 2] ^= 0x10;
    for (what, bytes) in [
        ("one byte short", &raw[..raw.len() - 1]),
        ("without its checksum", &raw[..raw.len() - 32]),
        ("half a file", &raw[..raw.len() / 2]),
        (
            "whole pages and a checksum, cut short",
            &[&raw[..8192], &raw[raw.len() - 32..]].concat()[..],
        ),
        ("a flipped byte", &flipped[..]),
    ] {
        std::fs::write(&bad, bytes).unwrap();
        let target = dir.path().join("never");
        let result = read_any_file(&bad, false).and_then(|r| EmbeddedStore::restore(&target, &r.snapshot));
        match result {
            Err(SnapshotError::Invalid(m)) => assert!(m.contains("bad.db"), "{what}: {m}"),
            other => panic!("{what}: accepted ({other:?})"),
        }
        assert!(!target.exists(), "{what}: a store was written");
    }
    // The database without etcd's checksum (as a member's db file) is read when
    // asked to skip the check, as `etcdctl snapshot restore --skip-hash-check`.
    std::fs::write(&bad, &raw[..raw.len() - 32]).unwrap();
    assert_eq!(read_any_file(&bad, true).unwrap().snapshot, read.snapshot);
}
