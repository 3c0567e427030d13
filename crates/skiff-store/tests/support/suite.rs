//! The behavioural test suite every store engine must pass: CAS semantics, data
//! that outlives the store handle, lists at past revisions and pagination, ordered
//! gap-free watches, compaction.
//!
//! Engines number revisions from different bases (the embedded store starts at 0, a
//! fresh etcd at 1), so each test reads the starting revision `base` and checks
//! revisions relative to it. A test binary instantiates the suite with
//! [`store_suite!`] and a [`Harness`] constructor.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use skiff_store::{Error, EventKind, ListOptions, Revision, Store};

/// Opens a store on the harness's data (again).
pub type Opener = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>>>>>;

/// A fresh, empty store and the means to open it again on the same data.
pub struct Harness {
    /// Opens a store handle; the previous one must have been dropped first.
    pub open: Opener,
    /// Keeps the data alive (temporary directory, etcd process).
    pub _guard: Box<dyn std::any::Any>,
}

/// Instantiates every suite test for one engine: `$harness` is an `async fn() ->
/// Harness` giving a fresh store.
#[macro_export]
macro_rules! store_suite {
    ($harness:path) => {
        $crate::store_suite!(@tests $harness;
            create_update_delete_with_cas,
            writes_survive_reopen_and_revisions_continue,
            list_at_past_revision_and_pagination,
            watch_replays_history_then_streams_live_without_gaps,
            compaction_expires_old_revisions,
            concurrent_writers_and_a_watcher_see_every_write_once_in_order,
            a_lagging_watcher_catches_up,
            watch_filters_by_prefix_and_waits_for_future_revisions,
            compaction_keeps_lists_at_retained_revisions_and_is_monotonic,
            pagination_edges,
        );
    };
    (@tests $harness:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                support::suite::$name($harness().await).await;
            }
        )*
    };
}

async fn base_of(s: &dyn Store) -> Revision {
    s.current_revision().await.unwrap()
}

fn at(revision: Revision) -> ListOptions {
    ListOptions {
        revision: Some(revision),
        ..Default::default()
    }
}

pub async fn create_update_delete_with_cas(h: Harness) {
    let s = (h.open)().await;
    let b = base_of(&*s).await;
    let a = s.create("/registry/pods/ns/a", b"1".to_vec()).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (b + 1, b + 1));
    assert!(matches!(
        s.create("/registry/pods/ns/a", b"x".to_vec()).await,
        Err(Error::AlreadyExists(_))
    ));
    let a2 = s.update("/registry/pods/ns/a", b + 1, b"2".to_vec()).await.unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision), (b + 1, b + 2));
    assert_eq!(s.get("/registry/pods/ns/a").await.unwrap(), Some(a2.clone()));
    match s.update("/registry/pods/ns/a", b + 1, b"3".to_vec()).await {
        Err(Error::Conflict { current, expected, .. }) => {
            assert_eq!(
                (current.value.as_slice(), current.mod_revision, expected),
                (&b"2"[..], b + 2, b + 1)
            );
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/registry/pods/ns/zz", 1, vec![]).await,
        Err(Error::NotFound(_))
    ));
    // Expecting revision 0 never creates a missing key.
    assert!(matches!(
        s.update("/registry/pods/ns/zz", 0, vec![]).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.delete("/registry/pods/ns/zz", None).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.delete("/registry/pods/ns/a", Some(b + 1)).await,
        Err(Error::Conflict { .. })
    ));
    let d = s.delete("/registry/pods/ns/a", Some(b + 2)).await.unwrap();
    assert_eq!(
        (d.mod_revision, d.create_revision, d.value.as_slice()),
        (b + 3, b + 1, &b"2"[..])
    );
    assert_eq!(s.get("/registry/pods/ns/a").await.unwrap(), None);
    assert_eq!(s.current_revision().await.unwrap(), b + 3);
    // A failed write does not consume a revision.
    assert_eq!(
        s.create("/registry/pods/ns/a", vec![]).await.unwrap().mod_revision,
        b + 4
    );
    s.health().await.unwrap();
}

pub async fn writes_survive_reopen_and_revisions_continue(h: Harness) {
    let b = {
        let s = (h.open)().await;
        let b = base_of(&*s).await;
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
        b
    };
    // The first handle is gone; a new one sees everything.
    let s = (h.open)().await;
    assert_eq!(s.current_revision().await.unwrap(), b + 50);
    let l = s.list("/registry/cm/", ListOptions::default()).await.unwrap();
    assert_eq!(l.items.len(), 50);
    assert_eq!(l.items[7].value, vec![7]);
    let next = s.create("/registry/cm/ns/new", vec![]).await.unwrap();
    assert_eq!(next.mod_revision, b + 51);
}

pub async fn list_at_past_revision_and_pagination(h: Harness) {
    let s = (h.open)().await;
    let b = base_of(&*s).await;
    for i in 0..5 {
        s.create(&format!("/registry/pods/a/p{i}"), vec![i]).await.unwrap();
    }
    s.create("/registry/pods/b/q", vec![9]).await.unwrap(); // b+6
    s.update("/registry/pods/a/p0", b + 1, vec![42]).await.unwrap(); // b+7
    s.delete("/registry/pods/a/p1", None).await.unwrap(); // b+8
    let now = s.list("/registry/pods/a/", ListOptions::default()).await.unwrap();
    assert_eq!(now.revision, b + 8);
    assert_eq!(now.items.len(), 4);
    assert_eq!(now.items[0].value, vec![42]);
    let past = s.list("/registry/pods/a/", at(b + 5)).await.unwrap();
    assert_eq!(past.revision, b + 5);
    assert_eq!(past.items.len(), 5);
    assert_eq!(past.items[0].value, vec![0]);
    assert_eq!(past.items[0].mod_revision, b + 1);
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
    // The next page at the first page's revision ignores writes made in between.
    s.create("/registry/pods/a/p9", vec![]).await.unwrap();
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
    let keys: Vec<_> = page2.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["/registry/pods/a/p3", "/registry/pods/a/p4", "/registry/pods/b/q"]
    );
    assert_eq!((page2.remaining, page2.revision), (0, b + 8));
    assert!(matches!(
        s.list("/registry/pods/", at(b + 99)).await,
        Err(Error::FutureRevision { requested, current }) if requested == b + 99 && current == b + 9
    ));
}

pub async fn pagination_edges(h: Harness) {
    let s = (h.open)().await;
    for k in ["/r/a", "/r/b", "/r/c", "/s/a"] {
        s.create(k, vec![]).await.unwrap();
    }
    let list = |start_after: Option<&str>, limit: Option<usize>| {
        let s = s.clone();
        let opts = ListOptions {
            start_after: start_after.map(str::to_string),
            limit,
            revision: None,
        };
        async move { s.list("/r/", opts).await.unwrap() }
    };
    let none = list(None, Some(0)).await;
    assert_eq!((none.items.len(), none.remaining), (0, 3));
    let before = list(Some("/a"), Some(1)).await;
    assert_eq!((before.items[0].key.as_str(), before.remaining), ("/r/a", 2));
    let past = list(Some("/r/c"), None).await;
    assert_eq!((past.items.len(), past.remaining), (0, 0));
    let beyond = list(Some("/z"), None).await;
    assert_eq!((beyond.items.len(), beyond.remaining), (0, 0));
    let all = s.list("/", ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 4);
}

pub async fn watch_replays_history_then_streams_live_without_gaps(h: Harness) {
    let s = (h.open)().await;
    let b = base_of(&*s).await;
    s.create("/registry/pods/a/x", vec![1]).await.unwrap(); // b+1
    s.create("/registry/other/y", vec![1]).await.unwrap(); // b+2
    s.update("/registry/pods/a/x", b + 1, vec![2]).await.unwrap(); // b+3
    let mut w = s.watch("/registry/pods/", b + 1).await.unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                s.create(&format!("/registry/pods/a/n{i:03}"), vec![]).await.unwrap();
            }
        })
    };
    let first = w.next().await.unwrap().unwrap();
    assert_eq!((first.kind, first.revision()), (EventKind::Updated, b + 3));
    assert_eq!(first.kv.create_revision, b + 1);
    assert_eq!(first.prev.unwrap().value, vec![1]);
    let mut last = b + 3;
    for _ in 0..200 {
        let ev = w.next().await.unwrap().unwrap();
        assert!(ev.revision() > last, "revisions strictly increase");
        assert_eq!(ev.kind, EventKind::Created);
        assert!(ev.prev.is_none());
        last = ev.revision();
    }
    writer.await.unwrap();
    assert_eq!(last, b + 203);
    // after = 0 means only future events.
    let mut w2 = s.watch("/registry/pods/", 0).await.unwrap();
    s.delete("/registry/pods/a/x", None).await.unwrap();
    let ev = w2.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, ev.revision(), ev.kv.value.clone(), ev.kv.create_revision),
        (EventKind::Deleted, b + 204, vec![2], b + 1)
    );
    assert_eq!(ev.prev.map(|p| p.mod_revision), Some(b + 3));
}

pub async fn compaction_expires_old_revisions(h: Harness) {
    let s = (h.open)().await;
    let b = base_of(&*s).await;
    for i in 0..10 {
        s.create(&format!("/registry/pods/a/p{i}"), vec![]).await.unwrap();
    }
    s.compact(b + 5).await.unwrap();
    match s.watch("/registry/pods/", b + 3).await {
        Err(Error::Compacted { requested, compacted }) => assert_eq!((requested, compacted), (b + 3, b + 5)),
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    match s.list("/registry/pods/", at(b + 4)).await {
        Err(Error::Compacted { requested, compacted }) => assert_eq!((requested, compacted), (b + 4, b + 5)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut w = s.watch("/registry/pods/", b + 5).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision(), b + 6);
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

pub async fn concurrent_writers_and_a_watcher_see_every_write_once_in_order(h: Harness) {
    let s = (h.open)().await;
    let b = base_of(&*s).await;
    s.create("/registry/pods/ns/seed", vec![]).await.unwrap(); // b+1
    let mut w = s.watch("/registry/pods/", b + 1).await.unwrap();
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
    let end = b + 1 + 16 * 40 * 2;
    assert_eq!(s.current_revision().await.unwrap(), end);
    let mut expected = b + 2;
    while expected <= end {
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.revision(), expected, "no gap, no duplicate");
        expected += 1;
    }
    // Every acknowledged revision belongs to an update the watcher saw and the store keeps.
    acknowledged.sort();
    acknowledged.dedup();
    assert_eq!(acknowledged.len(), 16 * 40);
    drop(w);
    drop(s);
    let s = (h.open)().await;
    let all = s.list("/registry/pods/ns/w", ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 16 * 40);
    let mut revs: Vec<_> = all.items.iter().map(|kv| kv.mod_revision).collect();
    revs.sort();
    assert_eq!(revs, acknowledged);
}

pub async fn a_lagging_watcher_catches_up(h: Harness) {
    let s = (h.open)().await;
    let b = base_of(&*s).await;
    let mut w = s.watch("/registry/cm/", 0).await.unwrap();
    // Far more than the engines' live buffers hold, while nobody reads.
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
        assert_eq!(ev.revision(), b + rev);
    }
    s.create("/registry/cm/ns/last", vec![]).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().kv.key, "/registry/cm/ns/last");
}

pub async fn watch_filters_by_prefix_and_waits_for_future_revisions(h: Harness) {
    let s = (h.open)().await;
    let b = base_of(&*s).await;
    s.create("/registry/pods/a/x", vec![]).await.unwrap(); // b+1
    // A start revision beyond the current one delivers only what comes after it.
    let mut ahead = s.watch("/registry/", b + 3).await.unwrap();
    let mut pods = s.watch("/registry/pods/", 0).await.unwrap();
    s.create("/registry/services/a/s", vec![]).await.unwrap(); // b+2
    s.create("/registry/pods/a/y", vec![]).await.unwrap(); // b+3
    s.create("/registry/pods/a/z", vec![]).await.unwrap(); // b+4
    let ev = pods.next().await.unwrap().unwrap();
    assert_eq!((ev.kv.key.as_str(), ev.revision()), ("/registry/pods/a/y", b + 3));
    assert_eq!(pods.next().await.unwrap().unwrap().revision(), b + 4);
    assert_eq!(ahead.next().await.unwrap().unwrap().revision(), b + 4);
}

pub async fn compaction_keeps_lists_at_retained_revisions_and_is_monotonic(h: Harness) {
    let s = (h.open)().await;
    let b = base_of(&*s).await;
    s.create("/r/a", vec![1]).await.unwrap(); // b+1
    s.create("/r/b", vec![1]).await.unwrap(); // b+2
    s.update("/r/a", b + 1, vec![2]).await.unwrap(); // b+3
    s.delete("/r/b", None).await.unwrap(); // b+4
    s.create("/r/c", vec![1]).await.unwrap(); // b+5
    s.compact(b + 3).await.unwrap();
    let at3 = s.list("/r/", at(b + 3)).await.unwrap();
    let keys: Vec<_> = at3.items.iter().map(|kv| (kv.key.as_str(), kv.value.clone())).collect();
    assert_eq!(keys, [("/r/a", vec![2]), ("/r/b", vec![1])]);
    // Compacting to an older revision changes nothing ...
    s.compact(b + 1).await.unwrap();
    assert_eq!(s.list("/r/", at(b + 3)).await.unwrap().items.len(), 2);
    // ... and beyond the current one stops at it.
    s.compact(b + 100).await.unwrap();
    drop(s);
    let s = (h.open)().await;
    assert!(matches!(s.list("/r/", at(b + 4)).await, Err(Error::Compacted { .. })));
    assert_eq!(s.list("/r/", at(b + 5)).await.unwrap().items.len(), 2);
    match s.watch("/r/", b + 4).await {
        Err(Error::Compacted { requested, compacted }) => assert_eq!((requested, compacted), (b + 4, b + 5)),
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    let now = s.list("/r/", ListOptions::default()).await.unwrap();
    assert_eq!(now.items.len(), 2);
    assert_eq!(s.create("/r/d", vec![]).await.unwrap().mod_revision, b + 6);
}
