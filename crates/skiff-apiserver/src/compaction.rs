//! Periodic compaction of the store's history, as the upstream apiserver's compactor
//! does for etcd (`--etcd-compaction-interval`, default 5 minutes): each tick compacts
//! up to the revision seen at the previous tick, so watchers always have at least one
//! interval of history to resume from, and older resourceVersions answer `410 Gone`.

use std::sync::Arc;
use std::time::Duration;

use skiff_store::Store;
use tokio_util::sync::CancellationToken;

/// Upstream's default compaction interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// Runs the compactor until `shutdown`.
pub async fn run(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Some(rev) = previous.filter(|r| *r > 0) {
            match store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "compacted store history"),
                Err(e) => tracing::warn!(error = %e, "store compaction failed"),
            }
        }
        previous = store.current_revision().await.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compacts_to_the_revision_of_the_previous_tick() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(skiff_store::EmbeddedStore::open(dir.path()).unwrap());
        for i in 0..3 {
            store.create(&format!("/registry/a/{i}"), vec![]).await.unwrap();
        }
        let token = CancellationToken::new();
        let task = tokio::spawn(run(store.clone(), Duration::from_millis(200), token.clone()));
        // The first tick records revision 3; the second compacts up to it.
        tokio::time::sleep(Duration::from_millis(250)).await;
        store.create("/registry/a/new", vec![]).await.unwrap();
        let mut expired = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if matches!(
                store.watch("/registry/", 2).await,
                Err(skiff_store::Error::Compacted { compacted: 3, .. })
            ) {
                expired = true;
                break;
            }
        }
        assert!(expired, "history before the previous tick is compacted");
        assert!(
            store.watch("/registry/", 3).await.is_ok(),
            "history since the previous tick is kept"
        );
        token.cancel();
        task.await.unwrap();
    }
}
