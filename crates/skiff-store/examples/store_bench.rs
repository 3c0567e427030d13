//! Store benchmark: write throughput and latency of the embedded engine at 1, 16 and
//! 256 concurrent writers, against two baselines measured in the same run:
//! - `etcd`: the etcd engine on a single local etcd member (Debian's `/usr/bin/etcd`,
//!   started by the benchmark on loopback with a temporary data dir, killed at the
//!   end), i.e. what `--datastore-endpoint` costs on the same machine;
//! - `baseline`: the same writes committed one redb transaction at a time (no group
//!   commit, no log), what a naive engine on the same database would do.
//!
//! - `sqlite`: the embedded engine's design on SQLite instead of redb (through
//!   `rusqlite`, bundled SQLite, WAL journal, `synchronous=FULL`): the same two
//!   tables (live keys with their revisions, and a log of every write) and one writer
//!   thread that commits every pending write in one transaction (group commit). It is
//!   the measurement behind choosing redb over SQLite (docs/store.md).
//!
//! Every write is durable before it is acknowledged in all four.
//!
//! Then reads, for the embedded engine and etcd (the two engines `skiff server` can
//! use), on `WRITES` keys of the same size:
//! - `list`: the whole prefix listed in pages of 500 keys at one revision, as the
//!   apiserver serves a paginated list: keys/s and the time of one full list (p50);
//! - `watch_replay`: one watch from before the first key, replaying the history: events/s;
//! - `watch_fanout`: 64 watchers on one prefix while 16 writers create `WRITES / 4`
//!   keys: events delivered per second over all watchers, until the last watcher has
//!   seen every event.
//!
//! Usage: `cargo run --release -p skiff-store --example store_bench [-- WRITES]`
//! (`WRITES` per concurrency level, default 4000; set `SKIFF_BENCH_NO_ETCD=1` to skip
//! etcd). Prints one JSON line and a human summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use skiff_store::{EmbeddedStore, EtcdConfig, EtcdStore, EtcdTls, Store};

#[path = "../tests/support/etcd.rs"]
mod etcd_member;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// Concurrency levels measured.
const WRITERS: [usize; 3] = [1, 16, 256];

/// Loopback ports of the benchmark's etcd.
static PORTS: etcd_member::Ports = etcd_member::Ports::new(23890, 23900);

/// Throughput (writes/s) and p50/p99 latency (ms) of one run.
#[derive(Clone, Copy)]
struct Figures {
    writes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Figures {
    fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort();
        let pct = |p: f64| {
            if latencies.is_empty() {
                return 0.0;
            }
            let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies[idx].as_secs_f64() * 1000.0
        };
        Self {
            writes_per_s: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"writes_per_s\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
            self.writes_per_s, self.p50_ms, self.p99_ms
        )
    }

    fn human(&self) -> String {
        format!(
            "{:.0} writes/s (p50 {:.2} ms, p99 {:.2} ms)",
            self.writes_per_s, self.p50_ms, self.p99_ms
        )
    }
}

fn value() -> Vec<u8> {
    // About the size of a small pod object.
    vec![b'x'; 2048]
}

/// `writes` creates spread over `writers` tasks; keys are unique per `run`.
async fn store_writes(store: Arc<dyn Store>, run: &str, writes: usize, writers: usize) -> Figures {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..writes / writers {
                let t = Instant::now();
                store
                    .create(&format!("/registry/pods/{run}/w{w}-{i}"), value())
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
    Figures::of(all, started.elapsed())
}

fn baseline(writes: usize, writers: usize) -> Figures {
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
    Figures::of(all, started.elapsed())
}

/// A single local etcd member and a store on it (`None` if skipped).
async fn etcd() -> Option<(etcd_member::Member, Arc<dyn Store>)> {
    if std::env::var_os("SKIFF_BENCH_NO_ETCD").is_some() {
        return None;
    }
    let member = etcd_member::Member::single(&PORTS);
    let cfg = EtcdConfig::parse(
        &format!("etcd://127.0.0.1:{}", member.spec.client_port),
        EtcdTls::default(),
    )
    .unwrap();
    let store = EtcdStore::connect(&cfg).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = store.health().await {
        assert!(Instant::now() < deadline, "etcd not ready: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((member, Arc::new(store)))
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

/// `writes` creates spread over `writers` tasks on the SQLite design.
async fn sqlite(writes: usize, writers: usize) -> Figures {
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
    let elapsed = started.elapsed();
    drop(tx);
    writer.join().unwrap();
    Figures::of(all, elapsed)
}

/// Read-side figures of one engine.
struct Reads {
    list_keys_per_s: f64,
    list_p50_ms: f64,
    replay_events_per_s: f64,
    fanout_events_per_s: f64,
}

impl Reads {
    fn json(&self) -> String {
        format!(
            "{{\"list_keys_per_s\":{:.0},\"list_p50_ms\":{:.3},\"watch_replay_events_per_s\":{:.0},\"watch_fanout_events_per_s\":{:.0}}}",
            self.list_keys_per_s, self.list_p50_ms, self.replay_events_per_s, self.fanout_events_per_s
        )
    }

    fn human(&self) -> String {
        format!(
            "list {:.0} keys/s (full list p50 {:.1} ms), watch replay {:.0} events/s, fan-out to 64 watchers {:.0} events/s",
            self.list_keys_per_s, self.list_p50_ms, self.replay_events_per_s, self.fanout_events_per_s
        )
    }
}

/// Number of watchers of the fan-out measurement.
const FANOUT_WATCHERS: usize = 64;

/// Creates `n` keys under `prefix` with 16 writers (not measured).
async fn preload(store: &Arc<dyn Store>, prefix: &str, n: usize) {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                store.create(&format!("{prefix}{i:08}"), value()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Counts `n` events of a watch.
async fn drain(mut watch: skiff_store::WatchStream, n: usize) {
    use futures::StreamExt;
    for _ in 0..n {
        watch.next().await.expect("watch ended").expect("watch failed");
    }
}

/// List and watch throughput on `n` keys (see the module docs).
async fn reads(store: Arc<dyn Store>, run: &str, n: usize) -> Reads {
    let prefix = format!("/registry/configmaps/{run}/");
    // A first write outside the prefix, so that `before` is a real revision (a watch
    // from revision 0 would start at the current one and replay nothing).
    store
        .create(&format!("/registry/namespaces/{run}"), value())
        .await
        .unwrap();
    let before = store.current_revision().await.unwrap();
    preload(&store, &prefix, n).await;

    // Full paginated lists at one revision.
    let mut times = Vec::new();
    let started = Instant::now();
    for _ in 0..5 {
        let t = Instant::now();
        let mut opts = skiff_store::ListOptions {
            limit: Some(500),
            ..Default::default()
        };
        let mut seen = 0;
        loop {
            let page = store.list(&prefix, opts.clone()).await.unwrap();
            seen += page.items.len();
            if page.remaining == 0 {
                break;
            }
            opts.revision = Some(page.revision);
            opts.start_after = page.items.last().map(|kv| kv.key.clone());
        }
        assert_eq!(seen, n);
        times.push(t.elapsed());
    }
    let list = Figures::of(times, started.elapsed());

    // One watch replaying the history of the prefix.
    let t = Instant::now();
    drain(store.watch(&prefix, before).await.unwrap(), n).await;
    let replay_events_per_s = n as f64 / t.elapsed().as_secs_f64();

    // Live fan-out: watchers first, then the writes.
    let live = format!("/registry/events/{run}/");
    let m = n / 4;
    let from = store.current_revision().await.unwrap();
    let mut watchers = Vec::new();
    for _ in 0..FANOUT_WATCHERS {
        let watch = store.watch(&live, from).await.unwrap();
        watchers.push(tokio::spawn(drain(watch, m)));
    }
    let t = Instant::now();
    preload(&store, &live, m).await;
    for w in watchers {
        w.await.unwrap();
    }
    let fanout_events_per_s = (m * FANOUT_WATCHERS) as f64 / t.elapsed().as_secs_f64();

    Reads {
        list_keys_per_s: n as f64 * list.writes_per_s,
        list_p50_ms: list.p50_ms,
        replay_events_per_s,
        fanout_events_per_s,
    }
}

#[tokio::main]
async fn main() {
    let writes = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4000usize);
    let etcd = etcd().await;
    let mut json = Vec::new();
    let mut human = Vec::new();
    for writers in WRITERS {
        let dir = tempfile::tempdir().unwrap();
        let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let e = store_writes(embedded, "embedded", writes, writers).await;
        let x = match &etcd {
            Some((_, store)) => Some(store_writes(store.clone(), &format!("w{writers}"), writes, writers).await),
            None => None,
        };
        let b = baseline(writes, writers);
        let q = sqlite(writes, writers).await;
        let etcd_json = x.map_or("null".to_string(), |x| x.json());
        json.push(format!(
            "\"{writers}\":{{\"embedded\":{},\"etcd\":{etcd_json},\"baseline\":{},\"sqlite\":{}}}",
            e.json(),
            b.json(),
            q.json()
        ));
        human.push(format!(
            "{writers:>3} writers: embedded {} | etcd {} | baseline {} | sqlite {}",
            e.human(),
            x.map_or("skipped".to_string(), |x| x.human()),
            b.human(),
            q.human()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let e = reads(embedded, "embedded", writes).await;
    let x = match &etcd {
        Some((_, store)) => Some(reads(store.clone(), "reads", writes).await),
        None => None,
    };
    println!(
        "{{\"bench\":\"store\",\"writes\":{writes},\"value_bytes\":2048,\"writers\":{{{}}},\"reads\":{{\"embedded\":{},\"etcd\":{}}}}}",
        json.join(","),
        e.json(),
        x.as_ref().map_or("null".to_string(), Reads::json)
    );
    for line in human {
        println!("{line}");
    }
    println!("reads, {writes} keys: embedded {}", e.human());
    println!(
        "reads, {writes} keys: etcd     {}",
        x.as_ref().map_or("skipped".to_string(), Reads::human)
    );
}
