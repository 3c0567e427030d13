//! The etcd engine: the store on an etcd v3 cluster, for HA control planes.
//!
//! Keys are stored as they are named (`/registry/...`, the same layout as upstream's
//! kube-apiserver), values as the bytes the apiserver gives, and revisions are etcd's
//! own: a key's `create_revision` and `mod_revision` are etcd's, and the store revision
//! is the cluster's header revision. Writes are single etcd transactions, as in
//! upstream's `storage/etcd3` store:
//! - create: `If(create_revision(key) == 0) Then(put) Else(get)`;
//! - update and delete: `If(mod_revision(key) == expected && create_revision(key) > 0)
//!   Then(put | delete) Else(get)`, so a failed compare answers with the current value
//!   ([`Error::Conflict`]) or its absence ([`Error::NotFound`]) without another read.
//!
//! Lists are etcd ranges at a revision, watches etcd watches with `prev_kv` (module
//! `watch`), and compaction is etcd's compaction. Every request is bounded by
//! [`EtcdConfig::request_timeout`] and carries etcd's `require-leader` metadata, so a
//! cluster without quorum fails requests quickly with [`Error::Unavailable`] instead
//! of letting them hang.
//!
//! Several stores (several skiff servers) may share one etcd cluster: everything they
//! know comes from etcd, so a write through one is seen by watches on every other.

mod config;
mod error;
mod list;
mod snapshot;
mod watch;
mod write;

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};

pub use config::{EtcdConfig, EtcdTls};
use error::{Failure, Retry, bounded};

use crate::{Error, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream};

/// Largest response accepted from etcd (a whole-prefix list can be large); upstream's
/// etcd client allows `math.MaxInt32` bytes.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// Timeout of the health check behind `/readyz` (upstream's etcd check uses a short
/// linearizable read the same way).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The store on an etcd v3 cluster. Cheap to share behind an `Arc`; all methods take
/// `&self` and each request clones the underlying gRPC channel handle.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Endpoints, comma-separated, for error messages.
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).finish()
    }
}

fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Backend(format!("reading the datastore {what} {}: {e}", path.display())))
}

impl EtcdStore {
    /// Creates a client for the cluster in `config`. Connections are made lazily and
    /// balanced over every endpoint, so this succeeds while etcd is still starting;
    /// requests then fail with [`Error::Unavailable`] until a member answers.
    ///
    /// Errors: [`Error::Backend`] for an unreadable TLS file or an invalid endpoint.
    pub async fn connect(config: &EtcdConfig) -> Result<Self> {
        let endpoints = config.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), config.request_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if config.tls.is_set() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &config.tls.ca_file {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_pem(ca, "CA file")?));
            }
            match (&config.tls.cert_file, &config.tls.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read_pem(cert, "certificate file")?,
                        read_pem(key, "key file")?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Backend(
                        "--datastore-certfile and --datastore-keyfile must be given together".into(),
                    ));
                }
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| Error::Backend(format!("etcd endpoints {endpoints}: {e}")))?;
        Ok(Self {
            client,
            endpoints,
            timeout: config.request_timeout,
        })
    }

    /// The configured endpoints, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Runs `request` under the request timeout, retrying as `retry` allows.
    async fn call<T, F>(&self, retry: Retry, request: impl FnMut() -> F) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        bounded(self.timeout, &self.endpoints, retry, request).await
    }

    /// A linearizable read of one key that never exists, returning the cluster's
    /// current revision (the response header's).
    async fn header_revision(&self, timeout: Duration) -> Result<Revision> {
        let resp = bounded(timeout, &self.endpoints, Retry::Read, || {
            let mut kv = self.kv();
            async move { kv.get("health", Some(GetOptions::new().with_count_only())).await }
        })
        .await?;
        revision_of(resp.header())
    }
}

/// The revision in a response header (etcd always sends one).
fn revision_of(h: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    h.map(|h| h.revision())
        .ok_or_else(|| Error::Backend("etcd answered without a response header".into()))
}

/// Converts an etcd key-value (keys are UTF-8: the store only writes `&str` keys).
fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| Error::Backend(format!("etcd key is not UTF-8: {e}")))?
            .to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .call(Retry::Read, || {
                let mut kv = self.kv();
                async move { kv.get(key, None).await }
            })
            .await?;
        resp.kvs().first().map(key_value).transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        list::list(self, prefix, &opts).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        write::create(self, key, value).await
    }

    async fn update(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<KeyValue> {
        write::update(self, key, expected, value).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        write::delete(self, key, expected).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        watch::watch(self, prefix, after).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.header_revision(self.timeout).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        write::compact(self, revision).await
    }

    async fn native_snapshot(&self) -> Result<Option<crate::snapshot::NativeSnapshot>> {
        snapshot::native(self).await.map(Some)
    }

    async fn health(&self) -> Result<()> {
        self.header_revision(HEALTH_TIMEOUT.min(self.timeout)).await.map(|_| ())
    }
}
