//! Store benchmark: write latency and throughput of the embedded engine, against a
//! baseline measured in the same run: the same writes committed one redb transaction
//! at a time (no group commit, no log), i.e. what a naive engine on the same database
//! would do.
//!
//! A second comparison runs the same workload on SQLite (through `rusqlite`, WAL
//! journal, `synchronous=FULL`) with the engine's own design: the same two tables
//! (live keys with their revisions, and a log of every write), one writer thread
//! that commits every pending request in one transaction (group commit). It is the
//! measurement behind choosing redb over SQLite (docs/store.md).
//!
//! Usage: `cargo run --release -p skiff-store --example store_bench [-- WRITES WRITERS]`.
//! Prints one JSON line and a human summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use skiff_store::{EmbeddedStore, Store};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn value() -> Vec<u8> {
    // About the size of a small pod object.
    vec![b'x'; 2048]
}

async fn embedded(writes: usize, writers: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..writes / writers {
                let t = Instant::now();
                store
                    .create(&format!("/registry/pods/ns/w{w}-{i}"), value())
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    (
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

fn baseline(writes: usize, writers: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("b.redb")).unwrap());
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                for i in 0..writes / writers {
                    let t = Instant::now();
                    let tx = db.begin_write().unwrap();
                    {
                        let mut table = tx.open_table(TABLE).unwrap();
                        table
                            .insert(format!("/registry/pods/ns/w{w}-{i}").as_str(), value().as_slice())
                            .unwrap();
                    }
                    tx.commit().unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    (
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

/// One write for the SQLite writer thread, and where to answer it.
struct SqliteWrite {
    key: String,
    value: Vec<u8>,
    done: tokio::sync::oneshot::Sender<i64>,
}

/// The SQLite writer: drains every pending write into one transaction that inserts
/// into `current` and `log` (like the embedded engine's tables), commits with
/// `synchronous=FULL` (fsync of the WAL), then answers each write with its revision.
fn sqlite_writer(path: std::path::PathBuf, rx: std::sync::mpsc::Receiver<SqliteWrite>) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE current (key TEXT PRIMARY KEY, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE log (rev INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB NOT NULL);",
    )
    .unwrap();
    let mut rev = 0i64;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let tx = conn.transaction().unwrap();
        let mut revs = Vec::with_capacity(batch.len());
        {
            let mut exists = tx.prepare_cached("SELECT 1 FROM current WHERE key = ?1").unwrap();
            let mut cur = tx
                .prepare_cached("INSERT INTO current (key, create_rev, mod_rev, value) VALUES (?1, ?2, ?2, ?3)")
                .unwrap();
            let mut log = tx
                .prepare_cached("INSERT INTO log (rev, key, value) VALUES (?1, ?2, ?3)")
                .unwrap();
            for w in &batch {
                // Create-if-absent, as `Store::create`.
                assert!(!exists.exists([&w.key]).unwrap());
                rev += 1;
                cur.execute(rusqlite::params![w.key, rev, w.value]).unwrap();
                log.execute(rusqlite::params![rev, w.key, w.value]).unwrap();
                revs.push(rev);
            }
        }
        tx.commit().unwrap();
        for (w, r) in batch.into_iter().zip(revs) {
            let _ = w.done.send(r);
        }
    }
}

async fn sqlite(writes: usize, writers: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<SqliteWrite>();
    let path = dir.path().join("s.sqlite");
    let writer = std::thread::spawn(move || sqlite_writer(path, rx));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..writes / writers {
                let t = Instant::now();
                let (done, answer) = tokio::sync::oneshot::channel();
                tx.send(SqliteWrite {
                    key: format!("/registry/pods/ns/w{w}-{i}"),
                    value: value(),
                    done,
                })
                .unwrap();
                answer.await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(tx);
    writer.join().unwrap();
    all.sort();
    (
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let writes = args.first().copied().unwrap_or(4000);
    let writers = args.get(1).copied().unwrap_or(32);
    let (e1_tput, e1_p50, e1_p99) = embedded(writes / 4, 1).await;
    let (b1_tput, b1_p50, b1_p99) = baseline(writes / 4, 1);
    let (en_tput, en_p50, en_p99) = embedded(writes, writers).await;
    let (bn_tput, bn_p50, bn_p99) = baseline(writes, writers);
    let (s1_tput, s1_p50, s1_p99) = sqlite(writes / 4, 1).await;
    let (sn_tput, sn_p50, sn_p99) = sqlite(writes, writers).await;
    println!(
        "{{\"bench\":\"store\",\"writes\":{writes},\"writers\":{writers},\
\"embedded_1_writer\":{{\"writes_per_s\":{e1_tput:.0},\"p50_ms\":{e1_p50:.3},\"p99_ms\":{e1_p99:.3}}},\
\"baseline_1_writer\":{{\"writes_per_s\":{b1_tput:.0},\"p50_ms\":{b1_p50:.3},\"p99_ms\":{b1_p99:.3}}},\
\"embedded_concurrent\":{{\"writes_per_s\":{en_tput:.0},\"p50_ms\":{en_p50:.3},\"p99_ms\":{en_p99:.3}}},\
\"baseline_concurrent\":{{\"writes_per_s\":{bn_tput:.0},\"p50_ms\":{bn_p50:.3},\"p99_ms\":{bn_p99:.3}}},\
\"sqlite_1_writer\":{{\"writes_per_s\":{s1_tput:.0},\"p50_ms\":{s1_p50:.3},\"p99_ms\":{s1_p99:.3}}},\
\"sqlite_concurrent\":{{\"writes_per_s\":{sn_tput:.0},\"p50_ms\":{sn_p50:.3},\"p99_ms\":{sn_p99:.3}}}}}"
    );
    println!(
        "1 writer:        embedded {e1_tput:.0} writes/s (p50 {e1_p50:.2} ms, p99 {e1_p99:.2} ms) | baseline {b1_tput:.0} writes/s (p50 {b1_p50:.2} ms, p99 {b1_p99:.2} ms)"
    );
    println!(
        "1 writer:        sqlite (WAL, synchronous=FULL, group commit) {s1_tput:.0} writes/s (p50 {s1_p50:.2} ms, p99 {s1_p99:.2} ms)"
    );
    println!(
        "{writers} writers:      sqlite (WAL, synchronous=FULL, group commit) {sn_tput:.0} writes/s (p50 {sn_p50:.2} ms, p99 {sn_p99:.2} ms)"
    );
    println!(
        "{writers} writers:      embedded {en_tput:.0} writes/s (p50 {en_p50:.2} ms, p99 {en_p99:.2} ms) | baseline {bn_tput:.0} writes/s (p50 {bn_p50:.2} ms, p99 {bn_p99:.2} ms)"
    );
}
