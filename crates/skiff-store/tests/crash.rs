//! Crash safety of the embedded engine: a child process writes concurrently and is
//! killed with SIGKILL at a random moment, many times over the same directory. After
//! each crash every acknowledged write is there with intact bytes, nothing
//! half-written appears, and revisions continue from where they stopped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use futures::StreamExt;
use std::time::{Duration, Instant, SystemTime};

use skiff_store::{EmbeddedStore, KeyValue, ListOptions, Store};

const DIR_ENV: &str = "SKIFF_STORE_CRASH_DIR";
const TRIAL_ENV: &str = "SKIFF_STORE_CRASH_TRIAL";
const TRIALS: u32 = 20;
const WRITERS: u32 = 8;

/// A value that names its own key and version and is long enough to span pages, so a
/// torn or misplaced write cannot pass for a valid one.
fn value(key: &str, version: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "key": key,
        "version": version,
        "pad": "x".repeat(3000 + (version as usize % 7) * 700),
    }))
    .unwrap()
}

fn check_value(kv: &KeyValue) -> u32 {
    let v: serde_json::Value =
        serde_json::from_slice(&kv.value).unwrap_or_else(|e| panic!("{}: torn value: {e}", kv.key));
    assert_eq!(v["key"], kv.key.as_str(), "value stored under the wrong key");
    let version = v["version"].as_u64().unwrap() as u32;
    assert_eq!(kv.value, value(&kv.key, version), "{}: damaged value", kv.key);
    version
}

/// The writer process (run by `every_acknowledged_write_survives_sigkill`): creates
/// and then repeatedly updates keys from several tasks, printing one line per
/// acknowledged write: `ack KEY VERSION REVISION`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of every_acknowledged_write_survives_sigkill"]
async fn crash_writer_process() {
    let Ok(dir) = std::env::var(DIR_ENV) else { return };
    let trial = std::env::var(TRIAL_ENV).unwrap();
    let store = Arc::new(EmbeddedStore::open(std::path::Path::new(&dir)).unwrap());
    println!("ready {}", store.current_revision().await.unwrap());
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let trial = trial.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/registry/configmaps/t{trial}/w{w}-{}", i / 4);
                    let kv = if i % 4 == 0 {
                        store.create(&key, value(&key, 0)).await.unwrap()
                    } else {
                        let cur = store.get(&key).await.unwrap().unwrap();
                        store.update(&key, cur.mod_revision, value(&key, i % 4)).await.unwrap()
                    };
                    println!("ack {key} {} {}", i % 4, kv.mod_revision);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Kills the writer process if the test fails while it runs.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // Revision 1, so that every trial's watch below starts from a real revision.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seed = rt.block_on(EmbeddedStore::open(dir.path()).unwrap().create("/seed", vec![]));
    let mut last_revision = seed.unwrap().mod_revision;
    let mut total_acks = 0;
    for trial in 0..TRIALS {
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "crash_writer_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DIR_ENV, dir.path())
                .env(TRIAL_ENV, trial.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        // Wait until the store is open, then let it write for a pseudo-random 20-300 ms.
        let started_at = loop {
            let line = lines.next().expect("writer exited before opening the store").unwrap();
            // The test harness may print its own prefix on the same line.
            if let Some((_, rev)) = line.split_once("ready ") {
                break rev.trim().parse::<i64>().unwrap();
            }
        };
        assert_eq!(started_at, last_revision, "revisions continue after a crash");
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let deadline = Instant::now() + Duration::from_millis(20 + u64::from(nanos % 280));
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in lines {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() == 4 && f[0] == "ack" {
                    acks.push((
                        f[1].to_string(),
                        f[2].parse::<u32>().unwrap(),
                        f[3].parse::<i64>().unwrap(),
                    ));
                }
            }
            acks
        });
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        let acks = reader.join().unwrap();
        total_acks += acks.len();

        rt.block_on(async {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let rev = store.current_revision().await.unwrap();
            let all = store
                .list(&format!("/registry/configmaps/t{trial}/"), ListOptions::default())
                .await
                .unwrap();
            let stored: BTreeMap<&str, &KeyValue> = all.items.iter().map(|kv| (kv.key.as_str(), kv)).collect();
            for kv in &all.items {
                check_value(kv);
                assert!(kv.mod_revision <= rev);
            }
            for (key, version, acked_rev) in &acks {
                let kv = stored
                    .get(key.as_str())
                    .unwrap_or_else(|| panic!("acknowledged {key} lost"));
                assert!(
                    kv.mod_revision >= *acked_rev,
                    "{key}: acknowledged revision {acked_rev} rolled back to {}",
                    kv.mod_revision
                );
                if kv.mod_revision == *acked_rev {
                    assert_eq!(check_value(kv), *version);
                }
                assert!(rev >= *acked_rev);
            }
            // The history log holds every revision of this trial, in order, intact.
            let mut w = store.watch("/registry/", started_at).await.unwrap();
            for expected in started_at + 1..=rev {
                let ev = w.next().await.unwrap().unwrap();
                assert_eq!(ev.revision(), expected);
                check_value(&ev.kv);
            }
            last_revision = rev;
        });
    }
    eprintln!("{total_acks} acknowledged writes over {TRIALS} crashes, final revision {last_revision}");
    assert!(
        total_acks > TRIALS as usize,
        "the writer got too few writes in: {total_acks}"
    );
}
