//! Encryption at rest seen from kubectl: a Secret created with kubectl reads back
//! through the API while the database file holds only ciphertext, and the
//! documented rotation (`kubectl get secrets -o json | kubectl replace -f -`)
//! rewrites every Secret with the new primary key.

#[allow(dead_code)]
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use skiff_store::encryption::{EncryptionConfig, ResourceKeys};
use skiff_store::{EncryptedStore, ListOptions, Store};
use support::{TestServer, start_with};

const KEY_OLD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_NEW: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// A configuration encrypting Secrets with AES-GCM keys `(name, secret)` in order,
/// with `identity` last.
fn config(keys: &[(&str, &str)]) -> EncryptionConfig {
    let keys: String = keys
        .iter()
        .map(|(n, s)| format!("            - name: {n}\n              secret: {s}\n"))
        .collect();
    EncryptionConfig::parse(
        format!(
            "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm:
          keys:
{keys}      - identity: {{}}
"
        )
        .as_bytes(),
    )
    .unwrap()
}

fn resource_keys() -> ResourceKeys {
    ResourceKeys::new(
        skiff_api::registry::RESOURCES
            .iter()
            .map(|r| (r.group, r.storage_resource)),
    )
}

fn kubectl(server: &TestServer, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Starts a server whose store encrypts Secrets with `keys`; returns it with the
/// engine underneath.
async fn start_encrypted(keys: &[(&str, &str)]) -> (TestServer, Arc<dyn Store>) {
    let mut engine = None;
    let server = start_with(|store| {
        engine = Some(store.clone());
        Arc::new(EncryptedStore::new(store, config(keys), resource_keys()))
    })
    .await;
    (server, engine.unwrap())
}

// kubectl runs as a blocking child process, so the server needs worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_a_secret_that_the_database_file_holds_encrypted() {
    let (s, engine) = start_encrypted(&[("key1", KEY_OLD)]).await;
    let password = "pa55-unguessable-7f3c9e";
    kubectl(
        &s,
        &[
            "create",
            "secret",
            "generic",
            "db",
            &format!("--from-literal=password={password}"),
        ],
    );
    kubectl(
        &s,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=plain-marker-5d1e",
        ],
    );

    let got = kubectl(&s, &["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    let decoded = base64::engine::general_purpose::STANDARD.decode(got.trim()).unwrap();
    assert_eq!(decoded, password.as_bytes());

    let raw = engine.get("/registry/secrets/default/db").await.unwrap().unwrap();
    assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"));

    let file = s._dir.path().join("db").join(skiff_store::embedded::DATABASE_FILE);
    let bytes = std::fs::read(&file).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(password);
    assert!(
        contains(&bytes, b"plain-marker-5d1e"),
        "ConfigMaps are stored as they are"
    );
    assert!(contains(&bytes, b"k8s:enc:aesgcm:v1:key1:"));
    assert!(
        !contains(&bytes, password.as_bytes()),
        "{} holds the password",
        file.display()
    );
    assert!(
        !contains(&bytes, b64.as_bytes()),
        "{} holds the base64 password",
        file.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_replace_moves_every_secret_to_the_new_primary_key() {
    // The server runs with "new" first and "old" second (step 3 of the rotation);
    // the Secrets were written while "old" was the only key.
    let (s, engine) = start_encrypted(&[("new", KEY_NEW), ("old", KEY_OLD)]).await;
    let before = EncryptedStore::new(engine.clone(), config(&[("old", KEY_OLD)]), resource_keys());
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for name in ["a", "b"] {
        let value = b64(&format!("value-{name}"));
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"{name}","namespace":"default","uid":"u-{name}","creationTimestamp":"2025-01-01T00:00:00Z"}},"type":"Opaque","data":{{"k":"{value}"}}}}"#
        );
        before
            .create(&format!("/registry/secrets/default/{name}"), body.into_bytes())
            .await
            .unwrap();
    }
    assert_eq!(
        kubectl(&s, &["get", "secret", "a", "-o", "jsonpath={.data.k}"]),
        b64("value-a")
    );

    let list = kubectl(&s, &["get", "secrets", "-A", "-o", "json"]);
    let mut replace = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["replace", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    replace.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
    let out = replace.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let raw = engine
        .list("/registry/secrets/default/", ListOptions::default())
        .await
        .unwrap();
    assert_eq!(raw.items.len(), 2);
    for kv in &raw.items {
        assert!(kv.value.starts_with(b"k8s:enc:aesgcm:v1:new:"), "{}", kv.key);
    }
    // The old key can now go: a store with only "new" reads everything.
    let after = EncryptedStore::new(engine.clone(), config(&[("new", KEY_NEW)]), resource_keys());
    let read = after.get("/registry/secrets/default/b").await.unwrap().unwrap();
    assert!(contains(&read.value, b64("value-b").as_bytes()));
}
