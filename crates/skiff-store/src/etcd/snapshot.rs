//! etcd's own snapshot through the Maintenance API (`Snapshot` RPC, what
//! `etcdctl snapshot save` calls): the member's bbolt database as of the moment it
//! answers, streamed in chunks, and then the SHA-256 of the database. The chunks are
//! passed on as they arrive, so the file is never held in memory; joined they are
//! exactly the file `etcdctl snapshot save` writes.

use futures::StreamExt;

use super::EtcdStore;
use super::error::{Retry, classify};
use crate::snapshot::{Format, NativeSnapshot};
use crate::{Error, Result};

/// Starts a snapshot: the current revision (a lower bound of the snapshot's), then
/// the `Snapshot` stream. Each chunk must arrive within the request timeout, so a
/// member that stops answering ends the stream with [`Error::Unavailable`].
pub(super) async fn native(store: &EtcdStore) -> Result<NativeSnapshot> {
    let revision = store.header_revision(store.timeout).await?;
    let stream = store
        .call(Retry::Read, || {
            let mut m = store.client.maintenance_client();
            async move { m.snapshot().await }
        })
        .await?;
    let endpoints = store.endpoints.clone();
    let timeout = store.timeout;
    let chunks = futures::stream::unfold(Some(stream), move |state| {
        let endpoints = endpoints.clone();
        async move {
            let mut stream = state?;
            match tokio::time::timeout(timeout, stream.message()).await {
                Ok(Ok(Some(resp))) => Some((Ok(resp.blob().to_vec()), Some(stream))),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some((Err(Error::from(classify(e, &endpoints))), None)),
                Err(_) => Some((
                    Err(Error::Unavailable {
                        endpoints,
                        reason: format!("the snapshot stream stalled for {}s", timeout.as_secs_f32()),
                    }),
                    None,
                )),
            }
        }
    });
    Ok(NativeSnapshot {
        format: Format::Etcd,
        revision,
        chunks: chunks.boxed(),
    })
}
