//! Encryption at rest over the embedded engine: what lands in the database file,
//! what readers see, watches, conflicts, and the documented key rotation.

use std::sync::Arc;

use futures::StreamExt;
use skiff_store::encryption::{EncryptionConfig, ResourceKeys};
use skiff_store::{EmbeddedStore, EncryptedStore, Error, EventKind, ListOptions, Store};

const OLD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const PASSWORD: &str = "correct-horse-battery-staple";

fn secret_json(name: &str) -> Vec<u8> {
    // A Secret as the apiserver stores it (JSON, data base64-encoded), with the
    // password also in plain text in an annotation, so the file checks cover both
    // forms.
    format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"{name}","namespace":"default","annotations":{{"note":"{PASSWORD}"}}}},"data":{{"password":"Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5LXN0YXBsZQ=="}}}}"#
    )
    .into_bytes()
}

fn config(providers: &str) -> EncryptionConfig {
    EncryptionConfig::parse(
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
        )
        .as_bytes(),
    )
    .unwrap()
}

fn keys() -> ResourceKeys {
    ResourceKeys::new([("", "secrets"), ("", "configmaps"), ("apps", "deployments")])
}

fn wrap(inner: Arc<dyn Store>, providers: &str) -> EncryptedStore {
    EncryptedStore::new(inner, config(providers), keys())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn aesgcm(name: &str, secret: &str) -> String {
    format!("      - aesgcm:\n          keys:\n            - name: {name}\n              secret: {secret}\n")
}

#[tokio::test]
async fn secrets_are_encrypted_in_the_database_file_and_readable_through_the_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let file = engine.path().to_path_buf();
    let store = wrap(engine.clone(), &aesgcm("key1", OLD));

    let key = "/registry/secrets/default/db";
    let created = store.create(key, secret_json("db")).await.unwrap();
    assert_eq!(created.value, secret_json("db"), "the caller sees what it wrote");
    // A ConfigMap is not configured: stored as it is (a control for the file check).
    store
        .create(
            "/registry/configmaps/default/c",
            b"{\"data\":{\"v\":\"plain-configmap-value\"}}".to_vec(),
        )
        .await
        .unwrap();

    let raw = engine.get(key).await.unwrap().unwrap();
    assert!(
        raw.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"),
        "{:?}",
        &raw.value[..30]
    );
    assert!(!contains(&raw.value, PASSWORD.as_bytes()));
    assert!(!contains(&raw.value, b"Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5LXN0YXBsZQ"));
    assert_eq!(store.get(key).await.unwrap().unwrap().value, secret_json("db"));
    let listed = store.list("/registry/secrets/", ListOptions::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].value, secret_json("db"));

    let bytes = std::fs::read(&file).unwrap();
    assert!(
        contains(&bytes, b"plain-configmap-value"),
        "the file check sees plain values"
    );
    assert!(contains(&bytes, b"k8s:enc:aesgcm:v1:key1:"));
    assert!(
        !contains(&bytes, PASSWORD.as_bytes()),
        "the password is not in {}",
        file.display()
    );
    assert!(!contains(&bytes, b"Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5LXN0YXBsZQ"));
}

#[tokio::test]
async fn watch_events_conflicts_and_deletes_carry_plain_values() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let store = wrap(engine, &aesgcm("key1", OLD));
    let key = "/registry/secrets/default/w";
    let mut watch = store.watch("/registry/secrets/", 0).await.unwrap();
    let a = store.create(key, b"{\"v\":1}".to_vec()).await.unwrap();
    let b = store.update(key, a.mod_revision, b"{\"v\":2}".to_vec()).await.unwrap();
    match store.update(key, a.mod_revision, b"{\"v\":3}".to_vec()).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(current.value, b"{\"v\":2}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let d = store.delete(key, Some(b.mod_revision)).await.unwrap();
    assert_eq!(d.value, b"{\"v\":2}");

    let created = watch.next().await.unwrap().unwrap();
    assert_eq!(
        (created.kind, created.kv.value.as_slice()),
        (EventKind::Created, &b"{\"v\":1}"[..])
    );
    let updated = watch.next().await.unwrap().unwrap();
    assert_eq!(updated.kv.value, b"{\"v\":2}");
    assert_eq!(updated.prev.unwrap().value, b"{\"v\":1}");
    let deleted = watch.next().await.unwrap().unwrap();
    assert_eq!(deleted.kind, EventKind::Deleted);
    assert_eq!(deleted.kv.value, b"{\"v\":2}");
    assert_eq!(deleted.prev.unwrap().value, b"{\"v\":2}");
}

#[tokio::test]
async fn every_provider_stores_its_prefix() {
    for (providers, prefix) in [
        (aesgcm("g", OLD), "k8s:enc:aesgcm:v1:g:"),
        (
            format!("      - aescbc:\n          keys:\n            - name: c\n              secret: {OLD}\n"),
            "k8s:enc:aescbc:v1:c:",
        ),
        (
            format!("      - secretbox:\n          keys:\n            - name: s\n              secret: {OLD}\n"),
            "k8s:enc:secretbox:v1:s:",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let engine: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let store = wrap(engine.clone(), &providers);
        store.create("/registry/secrets/ns/x", secret_json("x")).await.unwrap();
        let raw = engine.get("/registry/secrets/ns/x").await.unwrap().unwrap().value;
        assert!(raw.starts_with(prefix.as_bytes()), "{prefix}");
        assert_eq!(
            store.get("/registry/secrets/ns/x").await.unwrap().unwrap().value,
            secret_json("x")
        );
    }
}

#[tokio::test]
async fn plain_values_written_before_encryption_need_identity_and_are_encrypted_by_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let key = "/registry/secrets/default/old";
    let kv = engine.create(key, secret_json("old")).await.unwrap();

    // Without identity the plain value cannot be read (upstream: "no matching prefix found").
    let strict = wrap(engine.clone(), &aesgcm("key1", OLD));
    let err = strict.get(key).await.unwrap_err().to_string();
    assert!(err.contains(key) && err.contains("no matching prefix found"), "{err}");

    let store = wrap(
        engine.clone(),
        &format!("{}      - identity: {{}}\n", aesgcm("key1", OLD)),
    );
    let read = store.get(key).await.unwrap().unwrap();
    assert_eq!(read.value, secret_json("old"));
    assert!(
        store.is_stale(key, read.mod_revision),
        "a plain value is due for a rewrite"
    );
    store.update(key, kv.mod_revision, read.value).await.unwrap();
    let raw = engine.get(key).await.unwrap().unwrap();
    assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    assert!(!store.is_stale(key, raw.mod_revision));
}

#[tokio::test]
async fn key_rotation_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let names = ["a", "b", "c"].map(|n| format!("/registry/secrets/default/{n}"));

    // Start: key "old" only.
    let store = wrap(engine.clone(), &aesgcm("old", OLD));
    for k in &names {
        store.create(k, secret_json(k)).await.unwrap();
    }
    drop(store);

    // Step 1: add "new" as the second key, restart: still writes with "old".
    let both = format!(
        "      - aesgcm:\n          keys:\n            - name: old\n              secret: {OLD}\n            - name: new\n              secret: {NEW}\n"
    );
    let store = wrap(engine.clone(), &both);
    let kv = store.get(&names[0]).await.unwrap().unwrap();
    assert!(!store.is_stale(&names[0], kv.mod_revision));
    drop(store);

    // Step 2: make "new" the first key, restart: old values still read, now stale.
    let swapped = format!(
        "      - aesgcm:\n          keys:\n            - name: new\n              secret: {NEW}\n            - name: old\n              secret: {OLD}\n"
    );
    let store = wrap(engine.clone(), &swapped);
    for k in &names {
        let kv = store.get(k).await.unwrap().unwrap();
        assert_eq!(kv.value, secret_json(k));
        assert!(store.is_stale(k, kv.mod_revision));
    }

    // Step 3: rewrite every secret (what `kubectl replace` does through the apiserver).
    let list = store.list("/registry/secrets/", ListOptions::default()).await.unwrap();
    for kv in list.items {
        store.update(&kv.key, kv.mod_revision, kv.value).await.unwrap();
    }
    for k in &names {
        let raw = engine.get(k).await.unwrap().unwrap();
        assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:new:"), "{k}");
        assert!(!store.is_stale(k, raw.mod_revision));
    }
    drop(store);

    // Step 4: remove the old key, restart: everything still reads.
    let store = wrap(engine.clone(), &aesgcm("new", NEW));
    for k in &names {
        assert_eq!(store.get(k).await.unwrap().unwrap().value, secret_json(k));
    }

    // A value still written with a removed key fails, naming both keys.
    let straggler = "/registry/secrets/default/straggler";
    wrap(engine.clone(), &aesgcm("old", OLD))
        .create(straggler, secret_json("s"))
        .await
        .unwrap();
    let err = store.get(straggler).await.unwrap_err().to_string();
    assert!(err.contains(straggler) && err.contains("key \"old\""), "{err}");
    let err = store
        .list("/registry/secrets/", ListOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(straggler), "{err}");

    // The same name with another secret is refused too, never returned as garbage.
    let impostor = wrap(engine.clone(), &aesgcm("new", OLD));
    let err = impostor.get(&names[0]).await.unwrap_err().to_string();
    assert!(err.contains("key \"new\" cannot decrypt"), "{err}");
}

#[tokio::test]
async fn unconfigured_resources_pass_through_but_refuse_encrypted_values() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let store = wrap(engine.clone(), &aesgcm("k", OLD));
    store.create("/registry/configmaps/ns/c", b"{}".to_vec()).await.unwrap();
    assert_eq!(
        engine.get("/registry/configmaps/ns/c").await.unwrap().unwrap().value,
        b"{}"
    );
    engine
        .create(
            "/registry/configmaps/ns/odd",
            b"k8s:enc:aesgcm:v1:k:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_vec(),
        )
        .await
        .unwrap();
    let err = store.get("/registry/configmaps/ns/odd").await.unwrap_err().to_string();
    assert!(
        err.contains("identity transformer tried to read encrypted data"),
        "{err}"
    );
}

#[tokio::test]
async fn group_resources_and_wildcards_map_to_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let cfg = EncryptionConfig::parse(
        format!(
            "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [deployments.apps]
    providers: [{{secretbox: {{keys: [{{name: s, secret: {OLD}}}]}}}}]
  - resources: ['*.example.com']
    providers: [{{aescbc: {{keys: [{{name: c, secret: {OLD}}}]}}}}]
"
        )
        .as_bytes(),
    )
    .unwrap();
    let store = EncryptedStore::new(engine.clone(), cfg, keys());
    for (key, prefix) in [
        ("/registry/deployments/ns/web", &b"k8s:enc:secretbox:v1:s:"[..]),
        ("/registry/example.com/widgets/ns/w", b"k8s:enc:aescbc:v1:c:"),
        ("/registry/secrets/ns/s", b"{"),
        ("/registry/other.org/widgets/ns/w", b"{"),
    ] {
        store.create(key, b"{}".to_vec()).await.unwrap();
        let raw = engine.get(key).await.unwrap().unwrap().value;
        assert!(raw.starts_with(prefix), "{key}");
        assert_eq!(store.get(key).await.unwrap().unwrap().value, b"{}");
    }
}
