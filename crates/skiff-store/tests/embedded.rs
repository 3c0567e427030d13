//! Behaviour of the embedded engine: CAS semantics, durability across reopen,
//! lists at past revisions, pagination, ordered gap-free watches, compaction.

use std::sync::Arc;

use futures::StreamExt;
use skiff_store::{EmbeddedStore, Error, EventKind, ListOptions, Store};

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(dir.path()).unwrap()
}

#[tokio::test]
async fn create_update_delete_with_cas() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let a = s.create("/registry/pods/ns/a", b"1".to_vec()).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    assert!(matches!(
        s.create("/registry/pods/ns/a", b"x".to_vec()).await,
        Err(Error::AlreadyExists(_))
    ));
    let a2 = s.update("/registry/pods/ns/a", 1, b"2".to_vec()).await.unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision), (1, 2));
    match s.update("/registry/pods/ns/a", 1, b"3".to_vec()).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(current.value, b"2"),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/registry/pods/ns/zz", 1, vec![]).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.delete("/registry/pods/ns/a", Some(1)).await,
        Err(Error::Conflict { .. })
    ));
    let d = s.delete("/registry/pods/ns/a", Some(2)).await.unwrap();
    assert_eq!(d.mod_revision, 3);
    assert_eq!(s.get("/registry/pods/ns/a").await.unwrap(), None);
    assert_eq!(s.current_revision().await.unwrap(), 3);
}

#[tokio::test]
async fn writes_survive_reopen_and_revisions_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Arc::new(open(&dir));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create(&format!("/registry/cm/ns/k{i:03}"), vec![i as u8]).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }
    // Dropping the store has closed the database; it reopens at once.
    let s = open(&dir);
    assert_eq!(s.current_revision().await.unwrap(), 50);
    let l = s.list("/registry/cm/", ListOptions::default()).await.unwrap();
    assert_eq!(l.items.len(), 50);
    let next = s.create("/registry/cm/ns/new", vec![]).await.unwrap();
    assert_eq!(next.mod_revision, 51);
}

#[tokio::test]
async fn list_at_past_revision_and_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for i in 0..5 {
        s.create(&format!("/registry/pods/a/p{i}"), vec![i]).await.unwrap();
    }
    s.create("/registry/pods/b/q", vec![9]).await.unwrap(); // rev 6
    s.update("/registry/pods/a/p0", 1, vec![42]).await.unwrap(); // rev 7
    s.delete("/registry/pods/a/p1", None).await.unwrap(); // rev 8
    let now = s.list("/registry/pods/a/", ListOptions::default()).await.unwrap();
    assert_eq!(now.revision, 8);
    assert_eq!(now.items.len(), 4);
    assert_eq!(now.items[0].value, vec![42]);
    let past = s
        .list(
            "/registry/pods/a/",
            ListOptions {
                revision: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(past.items.len(), 5);
    assert_eq!(past.items[0].value, vec![0]);
    assert_eq!(past.items[0].mod_revision, 1);
    let page1 = s
        .list(
            "/registry/pods/",
            ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page1.items.len(), 2);
    assert_eq!(page1.remaining, 3);
    let page2 = s
        .list(
            "/registry/pods/",
            ListOptions {
                limit: Some(10),
                start_after: Some(page1.items[1].key.clone()),
                revision: Some(page1.revision),
            },
        )
        .await
        .unwrap();
    assert_eq!(page2.items.len(), 3);
    assert_eq!(page2.remaining, 0);
    assert!(matches!(
        s.list(
            "/registry/pods/",
            ListOptions {
                revision: Some(99),
                ..Default::default()
            }
        )
        .await,
        Err(Error::FutureRevision { .. })
    ));
}

#[tokio::test]
async fn watch_replays_history_then_streams_live_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir));
    s.create("/registry/pods/a/x", vec![1]).await.unwrap(); // 1
    s.create("/registry/other/y", vec![1]).await.unwrap(); // 2
    s.update("/registry/pods/a/x", 1, vec![2]).await.unwrap(); // 3
    let mut w = s.watch("/registry/pods/", 1).await.unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                s.create(&format!("/registry/pods/a/n{i:03}"), vec![]).await.unwrap();
            }
        })
    };
    let first = w.next().await.unwrap().unwrap();
    assert_eq!((first.kind, first.revision()), (EventKind::Updated, 3));
    assert_eq!(first.prev.unwrap().value, vec![1]);
    let mut last = 3;
    for _ in 0..200 {
        let ev = w.next().await.unwrap().unwrap();
        assert!(ev.revision() > last, "revisions strictly increase");
        assert_eq!(ev.kind, EventKind::Created);
        last = ev.revision();
    }
    writer.await.unwrap();
    assert_eq!(last, 203);
    // after = 0 means only future events.
    let mut w2 = s.watch("/registry/pods/", 0).await.unwrap();
    s.delete("/registry/pods/a/x", None).await.unwrap();
    let ev = w2.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, ev.revision(), ev.kv.value.clone()),
        (EventKind::Deleted, 204, vec![2])
    );
}

#[tokio::test]
async fn compaction_expires_old_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for i in 0..10 {
        s.create(&format!("/registry/pods/a/p{i}"), vec![]).await.unwrap();
    }
    s.compact(5).await.unwrap();
    assert!(matches!(
        s.watch("/registry/pods/", 3).await,
        Err(Error::Compacted {
            requested: 3,
            compacted: 5
        })
    ));
    assert!(matches!(
        s.list(
            "/registry/pods/",
            ListOptions {
                revision: Some(4),
                ..Default::default()
            }
        )
        .await,
        Err(Error::Compacted { .. })
    ));
    let mut w = s.watch("/registry/pods/", 5).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision(), 6);
    // Live keys keep their values.
    assert_eq!(
        s.list("/registry/pods/", ListOptions::default())
            .await
            .unwrap()
            .items
            .len(),
        10
    );
}

#[tokio::test]
async fn concurrent_writers_and_a_watcher_see_every_write_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir));
    s.create("/registry/pods/ns/seed", vec![]).await.unwrap(); // 1
    let mut w = s.watch("/registry/pods/", 1).await.unwrap();
    let writers: Vec<_> = (0..16)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..40 {
                    let key = format!("/registry/pods/ns/w{t:02}-{i:02}");
                    let kv = s.create(&key, vec![t, i]).await.unwrap();
                    let kv = s.update(&key, kv.mod_revision, vec![i, t]).await.unwrap();
                    revs.push(kv.mod_revision);
                }
                revs
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for t in writers {
        acknowledged.extend(t.await.unwrap());
    }
    assert_eq!(s.current_revision().await.unwrap(), 1 + 16 * 40 * 2);
    let mut expected = 2;
    while expected <= 1 + 16 * 40 * 2 {
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.revision(), expected, "no gap, no duplicate");
        expected += 1;
    }
    // Every acknowledged revision belongs to an update the watcher saw and the store keeps.
    acknowledged.sort();
    acknowledged.dedup();
    assert_eq!(acknowledged.len(), 16 * 40);
    drop(w);
    let s = Arc::into_inner(s).expect("no other owner");
    drop(s);
    let s = open(&dir);
    let all = s.list("/registry/pods/ns/w", ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 16 * 40);
    let mut revs: Vec<_> = all.items.iter().map(|kv| kv.mod_revision).collect();
    revs.sort();
    assert_eq!(revs, acknowledged);
}

#[tokio::test]
async fn a_lagging_watcher_catches_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir));
    let mut w = s.watch("/registry/cm/", 0).await.unwrap();
    // Far more than the live broadcast and the stream buffer hold, while nobody reads.
    let total: i64 = 6000;
    let writers: Vec<_> = (0..50)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..total / 50 {
                    s.create(&format!("/registry/cm/ns/{t}-{i}"), vec![]).await.unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.await.unwrap();
    }
    for rev in 1..=total {
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.revision(), rev);
    }
    s.create("/registry/cm/ns/last", vec![]).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().kv.key, "/registry/cm/ns/last");
}

#[tokio::test]
async fn watch_filters_by_prefix_and_waits_for_future_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.create("/registry/pods/a/x", vec![]).await.unwrap(); // 1
    // A start revision beyond the current one delivers only what comes after it.
    let mut ahead = s.watch("/registry/", 3).await.unwrap();
    let mut pods = s.watch("/registry/pods/", 0).await.unwrap();
    s.create("/registry/services/a/s", vec![]).await.unwrap(); // 2
    s.create("/registry/pods/a/y", vec![]).await.unwrap(); // 3
    s.create("/registry/pods/a/z", vec![]).await.unwrap(); // 4
    let ev = pods.next().await.unwrap().unwrap();
    assert_eq!((ev.kv.key.as_str(), ev.revision()), ("/registry/pods/a/y", 3));
    assert_eq!(pods.next().await.unwrap().unwrap().revision(), 4);
    assert_eq!(ahead.next().await.unwrap().unwrap().revision(), 4);
}

#[tokio::test]
async fn dropping_the_store_ends_watches_after_delivering_committed_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let mut w = s.watch("/", 0).await.unwrap();
    for i in 0..10 {
        s.create(&format!("/k{i}"), vec![]).await.unwrap();
    }
    drop(s);
    let mut seen = Vec::new();
    while let Some(ev) = w.next().await {
        seen.push(ev.unwrap().revision());
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    drop(w);
    // Nothing holds the file any more.
    let s = open(&dir);
    assert_eq!(s.current_revision().await.unwrap(), 10);
}

#[tokio::test]
async fn opening_twice_or_a_damaged_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    match EmbeddedStore::open(dir.path()) {
        Err(Error::Backend(msg)) => assert!(msg.contains("already open"), "{msg}"),
        other => panic!("expected an error, got {other:?}"),
    }
    drop(s);

    let damaged = tempfile::tempdir().unwrap();
    let file = damaged.path().join(skiff_store::embedded::DATABASE_FILE);
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    match EmbeddedStore::open(damaged.path()) {
        Err(Error::Backend(msg)) => assert!(msg.contains(&file.display().to_string()), "{msg}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn compaction_keeps_lists_at_retained_revisions_and_is_monotonic() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.create("/r/a", vec![1]).await.unwrap(); // 1
    s.create("/r/b", vec![1]).await.unwrap(); // 2
    s.update("/r/a", 1, vec![2]).await.unwrap(); // 3
    s.delete("/r/b", None).await.unwrap(); // 4
    s.create("/r/c", vec![1]).await.unwrap(); // 5
    s.compact(3).await.unwrap();
    let at3 = s
        .list(
            "/r/",
            ListOptions {
                revision: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = at3.items.iter().map(|kv| (kv.key.as_str(), kv.value.clone())).collect();
    assert_eq!(keys, [("/r/a", vec![2]), ("/r/b", vec![1])]);
    // Compacting to an older revision changes nothing; beyond the current one stops at it.
    s.compact(1).await.unwrap();
    assert_eq!(s.compacted_revision(), 3);
    s.compact(100).await.unwrap();
    assert_eq!(s.compacted_revision(), 5);
    drop(s);
    let s = open(&dir);
    assert_eq!(s.compacted_revision(), 5);
    assert!(matches!(
        s.watch("/r/", 4).await,
        Err(Error::Compacted {
            requested: 4,
            compacted: 5
        })
    ));
    let now = s.list("/r/", ListOptions::default()).await.unwrap();
    assert_eq!(now.items.len(), 2);
    assert_eq!(s.create("/r/d", vec![]).await.unwrap().mod_revision, 6);
}
