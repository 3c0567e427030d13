//! Store benchmark: write throughput and latency of the embedded engine at 1, 16 and
//! 256 concurrent writers, against two baselines measured in the same run:
//! - `etcd`: the etcd engine on a single local etcd member (Debian's `/usr/bin/etcd`,
//!   started by the benchmark on loopback with a temporary data dir, killed at the
//!   end), i.e. what `--datastore-endpoint` costs on the same machine;
//! - `baseline`: the same writes committed one redb transaction at a time (no group
//!   commit, no log), what a naive engine on the same database would do.
//!
//! Every write is durable before it is acknowledged in all three.
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
        let etcd_json = x.map_or("null".to_string(), |x| x.json());
        json.push(format!(
            "\"{writers}\":{{\"embedded\":{},\"etcd\":{etcd_json},\"baseline\":{}}}",
            e.json(),
            b.json()
        ));
        human.push(format!(
            "{writers:>3} writers: embedded {} | etcd {} | baseline {}",
            e.human(),
            x.map_or("skipped".to_string(), |x| x.human()),
            b.human()
        ));
    }
    println!(
        "{{\"bench\":\"store\",\"writes\":{writes},\"value_bytes\":2048,\"writers\":{{{}}}}}",
        json.join(",")
    );
    for line in human {
        println!("{line}");
    }
}
