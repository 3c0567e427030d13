//! The embedded engine: the shared store suite (`support/suite.rs`), plus what only
//! this engine has: a data file that one process holds open at a time, damaged-file
//! errors, watches that end when the store is dropped, the compacted revision.

use std::sync::Arc;

use futures::StreamExt;
use skiff_store::{EmbeddedStore, Error, ListOptions, Store};

mod support;

use support::suite::Harness;

/// A fresh embedded store in a temporary directory.
async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    Harness {
        open: Box::new(move || {
            let path = path.clone();
            Box::pin(async move { Arc::new(EmbeddedStore::open(&path).unwrap()) as Arc<dyn Store> })
        }),
        _guard: Box::new(dir),
    }
}

store_suite!(harness);

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(dir.path()).unwrap()
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
async fn the_compacted_revision_is_kept_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for i in 0..5 {
        s.create(&format!("/r/{i}"), vec![]).await.unwrap();
    }
    s.compact(3).await.unwrap();
    s.compact(1).await.unwrap();
    assert_eq!(s.compacted_revision(), 3);
    s.compact(100).await.unwrap();
    assert_eq!(s.compacted_revision(), 5);
    drop(s);
    let s = open(&dir);
    assert_eq!(s.compacted_revision(), 5);
    assert_eq!(s.list("/r/", ListOptions::default()).await.unwrap().items.len(), 5);
}
