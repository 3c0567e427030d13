//! The etcd engine on a 3-member etcd cluster (Debian's `etcd-server`, on loopback)
//! losing members under write load: with one member killed (SIGKILL) the store keeps
//! serving and watches continue without gaps; with two killed the cluster has no
//! quorum and writes fail with [`Error::Unavailable`] instead of hanging; when one
//! returns writes succeed again, and every acknowledged write is there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use skiff_store::{Error, EtcdConfig, EtcdStore, EtcdTls, ListOptions, Store};

mod support;

use support::etcd::{Cluster, Ports};

static PORTS: Ports = Ports::new(23860, 23880);

/// Retries `f` until it succeeds (panics after 60 s with the last error).
async fn eventually<T, F: std::future::Future<Output = Result<T, Error>>>(mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("still failing after 60s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A writer task; it returns the keys it wrote with their values.
type Writer = tokio::task::JoinHandle<Vec<(String, Vec<u8>)>>;

/// Writers creating keys until `stop`; returns every acknowledged key with its value.
fn start_writers(store: &Arc<EtcdStore>, stop: &Arc<AtomicBool>, phase: &'static str) -> Vec<Writer> {
    (0..8)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("/registry/configmaps/ns/{phase}-{t}-{i}");
                    let value = key.as_bytes().to_vec();
                    match store.create(&key, value.clone()).await {
                        Ok(_) => acked.push((key, value)),
                        // An election or a dead connection: not acknowledged, retry later.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect()
}

async fn stop_writers(stop: &AtomicBool, writers: Vec<Writer>) -> Vec<(String, Vec<u8>)> {
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_member_cluster_survives_one_loss_and_recovers_from_two() {
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::start(&PORTS, 3)).await.unwrap();
    let mut cfg = EtcdConfig::parse(&cluster.endpoint_spec(), EtcdTls::default()).unwrap();
    cfg.request_timeout = Duration::from_secs(3);
    let store = Arc::new(EtcdStore::connect(&cfg).await.unwrap());
    eventually(|| store.health()).await;
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/registry/configmaps/", start).await.unwrap();

    // Load, then kill one member in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&store, &stop, "one-down");
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.members[0].kill();
    let killed_at = store.current_revision().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut acked = stop_writers(&stop, writers).await;
    // The cluster kept serving writes after the loss.
    let after_kill = eventually(|| store.current_revision()).await;
    assert!(
        killed_at.is_err() || after_kill > *killed_at.as_ref().unwrap(),
        "no write succeeded after one member was killed"
    );
    eventually(|| store.create("/registry/configmaps/ns/with-two", vec![1])).await;
    acked.push(("/registry/configmaps/ns/with-two".into(), vec![1]));

    // The watch opened before the kill saw every write, in order, without a gap.
    let end = store.current_revision().await.unwrap();
    let mut seen = BTreeMap::new();
    let mut expected = start + 1;
    while expected <= end {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("watch stalled")
            .expect("watch ended")
            .expect("watch failed");
        assert_eq!(ev.revision(), expected, "no gap, no duplicate");
        seen.insert(ev.kv.key.clone(), ev.kv.value.clone());
        expected += 1;
    }
    for (k, v) in &acked {
        assert_eq!(seen.get(k), Some(v), "watch missed acknowledged {k}");
    }

    // Two members down: no quorum. Writes fail with a clear error, they do not hang.
    cluster.members[1].kill();
    let failed = tokio::time::timeout(
        Duration::from_secs(30),
        store.create("/registry/configmaps/ns/no-quorum", vec![]),
    )
    .await
    .expect("a write without quorum must fail, not hang");
    match failed {
        Err(Error::Unavailable { endpoints, .. }) => assert_eq!(endpoints, cfg.endpoints.join(",")),
        other => panic!("expected Unavailable without quorum, got {other:?}"),
    }
    assert!(matches!(store.health().await, Err(Error::Unavailable { .. })));

    // One member back: quorum again, writes succeed.
    tokio::task::block_in_place(|| cluster.members[1].restart());
    eventually(|| store.health()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&store, &stop, "recovered");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recovered = stop_writers(&stop, writers).await;
    assert!(!recovered.is_empty(), "no write succeeded after quorum returned");
    acked.extend(recovered);

    // Every acknowledged write is there, with its value.
    let all = eventually(|| store.list("/registry/configmaps/", ListOptions::default())).await;
    let stored: BTreeMap<_, _> = all.items.into_iter().map(|kv| (kv.key, kv.value)).collect();
    for (k, v) in &acked {
        assert_eq!(stored.get(k), Some(v), "acknowledged write {k} lost");
    }
}
