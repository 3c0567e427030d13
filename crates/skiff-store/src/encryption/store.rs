//! [`EncryptedStore`]: any [`Store`] with values encrypted at rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::config::EncryptionConfig;
use super::provider::{ENCRYPTED_PREFIX, TransformError};
use super::resources::ResourceKeys;
use super::transformer::ResourceTransformer;
use crate::{Error, Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream};

/// A [`Store`] that encrypts the values of the configured resources on their way in
/// and decrypts them on their way out (get, list, delete results, conflicts and
/// watch events with their previous values), over any engine (embedded or etcd).
///
/// Upstream: the apiserver's storage transformers (k8s.io/apiserver
/// `pkg/storage/value`), applied between the registry and etcd in the same place.
/// The AES-GCM additional authenticated data is the storage key, so a value copied
/// to another key does not decrypt. Keys of resources that the configuration does
/// not cover are passed through, but an encrypted value found there is an error
/// (upstream's identity transformer).
///
/// A value read with a provider or key that is not the first one configured is
/// *stale*: [`Store::is_stale`] reports it until the key is next written, so the
/// apiserver rewrites it even when an update changes nothing, which is how
/// `kubectl get secrets -A -o json | kubectl replace -f -` moves every Secret to the
/// new key during a rotation.
///
/// Errors: a value that cannot be decrypted (its key was removed from the
/// configuration, the wrong secret is configured under its name, it was altered)
/// fails the operation with [`Error::Backend`] naming the storage key and the
/// encryption key, never returns undecrypted bytes.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    codec: Arc<Codec>,
    /// Storage keys last read in a stale form, with the revision read.
    stale: Mutex<HashMap<String, Revision>>,
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("config", &self.codec.config)
            .finish_non_exhaustive()
    }
}

fn transform_error(key: &str, e: TransformError) -> Error {
    Error::Backend(format!("unable to transform key {key:?}: {e}"))
}

/// The configuration and the key-to-resource table: turns values into their stored
/// form and back. Shared with watch streams.
struct Codec {
    config: EncryptionConfig,
    resources: ResourceKeys,
}

impl Codec {
    fn transformer(&self, key: &str) -> Option<&Arc<ResourceTransformer>> {
        let gr = self.resources.resource_of(key)?;
        self.config.transformer_for(&gr)
    }

    /// Replaces `kv.value` by its plain form; returns whether it was stale.
    fn decode(&self, kv: &mut KeyValue) -> Result<bool> {
        match self.transformer(&kv.key) {
            None if kv.value.starts_with(ENCRYPTED_PREFIX) => {
                Err(transform_error(&kv.key, TransformError::EncryptedForIdentity))
            }
            None => Ok(false),
            Some(t) => {
                let (plain, stale) = t
                    .transform_from_storage(&kv.value, &kv.key)
                    .map_err(|e| transform_error(&kv.key, e))?;
                kv.value = plain;
                Ok(stale)
            }
        }
    }

    fn event(&self, mut ev: Event) -> Result<Event> {
        self.decode(&mut ev.kv)?;
        if let Some(prev) = ev.prev.as_mut() {
            self.decode(prev)?;
        }
        Ok(ev)
    }
}

impl EncryptedStore {
    /// Wraps `inner`. `resources` tells which group-resource each storage key holds
    /// (see [`ResourceKeys`]).
    pub fn new(inner: Arc<dyn Store>, config: EncryptionConfig, resources: ResourceKeys) -> Self {
        Self {
            inner,
            codec: Arc::new(Codec { config, resources }),
            stale: Mutex::new(HashMap::new()),
        }
    }

    /// The store underneath (values as stored, encrypted).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn stale(&self) -> std::sync::MutexGuard<'_, HashMap<String, Revision>> {
        self.stale.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored form of `value`, and the plain value when they differ.
    fn encode(&self, key: &str, value: Vec<u8>) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        match self.codec.transformer(key) {
            Some(t) if !t.writes_plain() => {
                let stored = t
                    .transform_to_storage(&value, key)
                    .map_err(|e| transform_error(key, e))?;
                Ok((stored, Some(value)))
            }
            _ => Ok((value, None)),
        }
    }

    /// `kv` with its value in plain form, remembering whether it was stale.
    fn read(&self, mut kv: KeyValue) -> Result<KeyValue> {
        let stale = self.codec.decode(&mut kv)?;
        let mut set = self.stale();
        if stale {
            set.insert(kv.key.clone(), kv.mod_revision);
        } else if !set.is_empty() {
            set.remove(&kv.key);
        }
        Ok(kv)
    }

    fn decode_error(&self, e: Error) -> Error {
        match e {
            Error::Conflict { key, expected, current } => match self.read(*current) {
                Ok(current) => Error::Conflict {
                    key,
                    expected,
                    current: Box::new(current),
                },
                Err(e) => e,
            },
            e => e,
        }
    }

    /// The result of a write as the caller sees it: the plain value it wrote.
    fn written(&self, mut kv: KeyValue, plain: Option<Vec<u8>>) -> KeyValue {
        if let Some(plain) = plain {
            kv.value = plain;
        }
        let mut set = self.stale();
        if !set.is_empty() {
            set.remove(&kv.key);
        }
        kv
    }
}

#[async_trait::async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match self.inner.get(key).await? {
            Some(kv) => self.read(kv).map(Some),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let mut res = self.inner.list(prefix, opts).await?;
        res.items = std::mem::take(&mut res.items)
            .into_iter()
            .map(|kv| self.read(kv))
            .collect::<Result<_>>()?;
        Ok(res)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let (stored, plain) = self.encode(key, value)?;
        let kv = self.inner.create(key, stored).await.map_err(|e| self.decode_error(e))?;
        Ok(self.written(kv, plain))
    }

    async fn update(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<KeyValue> {
        let (stored, plain) = self.encode(key, value)?;
        let kv = self
            .inner
            .update(key, expected, stored)
            .await
            .map_err(|e| self.decode_error(e))?;
        Ok(self.written(kv, plain))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let mut kv = self
            .inner
            .delete(key, expected)
            .await
            .map_err(|e| self.decode_error(e))?;
        self.codec.decode(&mut kv)?;
        Ok(self.written(kv, None))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let stream = self.inner.watch(prefix, after).await?;
        let codec = self.codec.clone();
        Ok(Box::pin(stream.map(move |item| item.and_then(|ev| codec.event(ev)))))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }

    /// The wrapped engine's snapshot, values as stored (encrypted).
    async fn native_snapshot(&self) -> Result<Option<crate::snapshot::NativeSnapshot>> {
        self.inner.native_snapshot().await
    }

    fn is_stale(&self, key: &str, mod_revision: Revision) -> bool {
        self.stale().get(key) == Some(&mod_revision) || self.inner.is_stale(key, mod_revision)
    }

    fn at_rest(&self) -> Option<&dyn Store> {
        Some(self.inner.at_rest().unwrap_or(self.inner.as_ref()))
    }
}
