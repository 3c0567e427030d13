//! Encryption at rest through the real binary: `skiff server
//! --encryption-provider-config` with kubectl, the database file read after the
//! server stops, and upstream's key rotation across restarts (add the new key
//! second, make it first, `kubectl get secrets -A -o json | kubectl replace -f -`,
//! remove the old key).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use skiff_store::{EmbeddedStore, ListOptions, Store};

const KEY_OLD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_NEW: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const PASSWORD: &str = "e2e-pa55word-4b8f1c";

fn write_config(dir: &Path, keys: &[(&str, &str)]) -> std::path::PathBuf {
    let keys: String = keys
        .iter()
        .map(|(n, s)| format!("            - name: {n}\n              secret: {s}\n"))
        .collect();
    let path = dir.join("encryption.yaml");
    std::fs::write(
        &path,
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
        ),
    )
    .unwrap();
    path
}

struct Server {
    child: Child,
}

impl Server {
    fn start(dir: &Path, port: u16, config: &Path) -> Self {
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
            .arg("--encryption-provider-config")
            .arg(config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting skiff server");
        for _ in 0..1200 {
            if dir.join("admin.kubeconfig").exists() {
                return Server { child };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "skiff server exited with {status}:\n{}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not become ready");
    }

    /// SIGTERM, then wait for the process (and its hold on the database) to end.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..600 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubectl(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn kubectl_ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(dir, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
    );
    String::from_utf8(out.stdout).unwrap()
}

fn password_of(dir: &Path, name: &str) -> String {
    let b64 = kubectl_ok(dir, &["get", "secret", name, "-o", "jsonpath={.data.password}"], None);
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b64.trim().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The stored values of every Secret, read with the engine opened directly.
async fn raw_secrets(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let engine = EmbeddedStore::open(&dir.join("db")).unwrap();
    let list = engine
        .list("/registry/secrets/default/", ListOptions::default())
        .await
        .unwrap();
    list.items.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    // Encrypted with "old"; kubectl reads it back.
    let config = write_config(dir, &[("old", KEY_OLD)]);
    let server = Server::start(dir, port, &config);
    kubectl_ok(
        dir,
        &[
            "create",
            "secret",
            "generic",
            "db",
            &format!("--from-literal=password={PASSWORD}"),
        ],
        None,
    );
    assert_eq!(password_of(dir, "db"), PASSWORD);
    server.stop();

    let file = dir.join("db").join(skiff_store::embedded::DATABASE_FILE);
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !contains(&bytes, PASSWORD.as_bytes()),
        "{} holds the password",
        file.display()
    );
    let raw = raw_secrets(dir).await;
    let (_, db) = raw.iter().find(|(k, _)| k.ends_with("/db")).unwrap();
    assert!(db.starts_with(b"k8s:enc:aesgcm:v1:old:"));

    // Rotation step 1: "new" second. Step 2: "new" first; the old value still reads.
    let config = write_config(dir, &[("old", KEY_OLD), ("new", KEY_NEW)]);
    Server::start(dir, port, &config).stop();
    let config = write_config(dir, &[("new", KEY_NEW), ("old", KEY_OLD)]);
    let server = Server::start(dir, port, &config);
    assert_eq!(password_of(dir, "db"), PASSWORD);

    // Step 3: rewrite every Secret.
    let all = kubectl_ok(dir, &["get", "secrets", "-A", "-o", "json"], None);
    kubectl_ok(dir, &["replace", "-f", "-"], Some(&all));
    server.stop();
    for (key, value) in raw_secrets(dir).await {
        assert!(value.starts_with(b"k8s:enc:aesgcm:v1:new:"), "{key} was not rewritten");
    }

    // Step 4: drop the old key; everything still reads.
    let config = write_config(dir, &[("new", KEY_NEW)]);
    let server = Server::start(dir, port, &config);
    assert_eq!(password_of(dir, "db"), PASSWORD);
    server.stop();
}
