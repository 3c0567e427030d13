//! Watch caches of whole objects (kube-rs reflectors) for the scheduler's plugins
//! and preemption: claims, volumes, classes, PodDisruptionBudgets.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Starts a watch of `api` into a reflector store until `shutdown`, notifying
/// `changed` (if any) after every event. Watch failures are retried with backoff.
pub(crate) fn reflect<K>(api: Api<K>, changed: Option<Arc<Notify>>, shutdown: CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => match ev {
                    Some(Ok(_)) => {
                        if let Some(changed) = &changed {
                            changed.notify_one();
                        }
                    }
                    Some(Err(e)) => tracing::debug!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
                    None => return,
                },
            }
        }
    });
    store
}
