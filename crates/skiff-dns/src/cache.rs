//! Reflectors over Services and EndpointSlices (all namespaces) and the task that
//! turns their contents into [`Snapshot`]s: after both have listed once, and after
//! every change (debounced), a new snapshot is built and published.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::records::{Snapshot, ZoneConfig};

/// How long changes are gathered before a rebuild, so that a burst of events (a
/// rollout touching many slices) costs one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Drives a reflector's watch stream, signalling `changed` after every event.
/// Watch errors are retried with kube's default backoff.
async fn drive<S, E>(stream: S, changed: Arc<Notify>, what: &'static str)
where
    S: Stream<Item = Result<watcher::Event<E>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!(error = %e, "watching {what}"),
        }
    }
}

fn serial() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    u32::try_from(secs % u64::from(u32::MAX)).unwrap_or_default()
}

fn build(zone: &ZoneConfig, services: &Store<Service>, slices: &Store<EndpointSlice>) -> Snapshot {
    let services = services.state();
    let slices = slices.state();
    Snapshot::build(
        zone,
        services.iter().map(AsRef::as_ref),
        slices.iter().map(AsRef::as_ref),
        serial(),
    )
}

/// Watches the cluster and publishes a snapshot on `publish` after the first full
/// list of both resources and after every change, until `shutdown`.
pub async fn run(
    client: kube::Client,
    zone: ZoneConfig,
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    shutdown: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let service_stream = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|s: &mut Service| s.metadata.managed_fields = None)
        .reflect(services_writer);
    let slice_stream = watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(|s: &mut EndpointSlice| s.metadata.managed_fields = None)
        .reflect(slices_writer);
    let watches = async {
        tokio::join!(
            drive(service_stream, changed.clone(), "Services"),
            drive(slice_stream, changed.clone(), "EndpointSlices"),
        )
    };
    let publisher = async {
        if services.wait_until_ready().await.is_err() || slices.wait_until_ready().await.is_err() {
            return;
        }
        loop {
            let snapshot = build(&zone, &services, &slices);
            tracing::debug!(names = snapshot.len(), "cluster DNS snapshot rebuilt");
            publish.send_replace(Some(Arc::new(snapshot)));
            changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = watches => {}
        _ = publisher => {}
    }
}
