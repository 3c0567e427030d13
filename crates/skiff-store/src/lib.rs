//! The revisioned key-value store behind the apiserver.
//!
//! The interface is shaped like the subset of etcd v3 that the Kubernetes apiserver
//! needs (the same subset kine's `Backend` exposes): point reads, prefix lists at a
//! revision with pagination, create-if-absent, compare-and-swap update and delete on
//! the key's `mod_revision`, ordered watches from a revision, and compaction.
//!
//! Keys follow upstream: `/registry/<resource>/<namespace>/<name>` for namespaced
//! objects and `/registry/<resource>/<name>` for cluster-scoped ones. Values are
//! opaque bytes (the apiserver stores JSON).
//!
//! Revisions are a single cluster-wide counter, strictly increasing by one for every
//! successful write (create, update or delete). A key's `create_revision` is the
//! revision of the write that created it; its `mod_revision` is the revision of the
//! last write to it, which the apiserver exposes as `metadata.resourceVersion`.
//!
//! Two engines implement [`Store`]: [`EmbeddedStore`] (the default, one redb file in
//! the data dir) and [`EtcdStore`] (an etcd v3 cluster, for control planes of several
//! servers; its revisions are etcd's, so a fresh etcd starts at revision 1). One
//! behavioural suite (`tests/support/suite.rs`) and the differential test run against
//! both.
#![deny(missing_docs)]

use std::pin::Pin;

use futures::Stream;

pub mod bbolt;
pub mod embedded;
pub mod encryption;
pub mod etcd;
pub mod snapshot;

pub use embedded::{DEFAULT_CACHE_BYTES, EmbeddedStore};
pub use encryption::EncryptedStore;
pub use etcd::{EtcdConfig, EtcdStore, EtcdTls};

/// A store revision (etcd's `revision`). `0` means "no revision" / "latest" where an
/// argument accepts it.
pub type Revision = i64;

/// One key with its value and revisions, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web-1`.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Revision of the write that created this key (unchanged by updates).
    pub create_revision: Revision,
    /// Revision of the last write to this key. For a deleted key reported in a
    /// [`Event`] of kind [`EventKind::Deleted`], the revision of the delete.
    pub mod_revision: Revision,
}

/// What happened to a key in a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key did not exist before this write.
    Created,
    /// The key existed and its value was replaced.
    Updated,
    /// The key was removed.
    Deleted,
}

/// One change, delivered by [`Store::watch`] in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Kind of change.
    pub kind: EventKind,
    /// The key after the change. For [`EventKind::Deleted`] this carries the last
    /// value the key had, with `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The key before the change (`None` for [`EventKind::Created`]).
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Options of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Serve the list as of this revision (`None` = latest). A revision older than the
    /// compacted revision fails with [`Error::Compacted`]; one newer than the current
    /// revision fails with [`Error::FutureRevision`].
    pub revision: Option<Revision>,
    /// Return only keys strictly greater than this one (pagination `continue`).
    pub start_after: Option<String>,
    /// Return at most this many items (`None` = all).
    pub limit: Option<usize>,
}

/// Result of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    /// Matching keys in ascending key order.
    pub items: Vec<KeyValue>,
    /// The revision the list was served at (pass it back in
    /// [`ListOptions::revision`] to continue a paginated list consistently).
    pub revision: Revision,
    /// Number of matching keys left after the returned page (0 when complete).
    pub remaining: usize,
}

/// A stream of watch events, in strictly increasing revision order, with no gaps
/// for the watched prefix. A slow consumer does not lose events (the engine catches
/// up from its history); the stream ends with an error item only if that history has
/// been compacted past the watcher ([`Error::Compacted`], the apiserver answers
/// `410 Gone` and the client re-lists) or the store fails or shuts down. Dropping the
/// stream releases everything the watch holds.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>;

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` found the key already present.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The key does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// A compare-and-swap failed: the key's `mod_revision` differs from the expected one.
    /// Carries the current value so the caller can retry without another read.
    #[error("key {key} was modified (expected revision {expected}, current {})", current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The key as it is now.
        current: Box<KeyValue>,
    },
    /// The requested revision has been compacted away (the apiserver answers `410 Gone`).
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compacted revision; history strictly after it is available.
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The disk holding the store is full: the write was refused and nothing changed.
    /// Reads keep working; writes succeed again once space is freed. The apiserver
    /// answers `507 Insufficient Storage`.
    #[error("insufficient storage: {0}")]
    NoSpace(String),
    /// The underlying engine failed (I/O, corruption, a rejected request).
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The datastore cannot be reached or cannot serve the request now: no member of
    /// the etcd cluster answered within the request timeout, or the cluster has no
    /// leader (lost quorum). Retrying later may succeed; the apiserver answers `500`
    /// with this message (as upstream does for etcd failures) and reports it on
    /// `/readyz` (upstream's etcd readiness check).
    #[error("datastore unavailable ({endpoints}): {reason}")]
    Unavailable {
        /// The endpoints the store was configured with, comma-separated.
        endpoints: String,
        /// What failed (timeout, connection refused, no leader, ...).
        reason: String,
    },
}

/// Shorthand for store results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The storage interface the apiserver uses. Implemented by the embedded engine and
/// the etcd engine; one test suite runs against every implementation.
///
/// Every write is durable when its future resolves successfully.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the latest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Lists keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Creates `key`; fails with [`Error::AlreadyExists`] if present.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;

    /// Replaces the value of `key` if its `mod_revision` equals `expected`
    /// ([`Error::Conflict`] otherwise, [`Error::NotFound`] if absent).
    async fn update(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<KeyValue>;

    /// Deletes `key`, if `expected` is `Some`, only when its `mod_revision` matches.
    /// Returns the deleted key with `mod_revision` set to the delete's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Watches keys under `prefix` for changes with revision strictly greater than
    /// `after`: first the retained history, then live changes, with no gap and no
    /// duplicate between the two. `after = 0` starts at the current revision (only
    /// future changes, like etcd's start revision 0); an `after` beyond the current
    /// revision waits for it. Fails with [`Error::Compacted`] if `after` is older than
    /// the compacted revision (`after` equal to it is fine: history after it is kept).
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The revision of the latest write.
    async fn current_revision(&self) -> Result<Revision>;

    /// Discards history at and before `revision` (values of live keys are kept);
    /// afterwards lists at and watches from older revisions fail with
    /// [`Error::Compacted`]. A `revision` beyond the current one compacts up to the
    /// current one; one at or below the compacted revision changes nothing.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Whether the value read for `key` at `mod_revision` is stored in an outdated
    /// form and should be written again even by an update that changes nothing.
    /// Upstream: the `stale` result of a storage transformer's
    /// `TransformFromStorage`, which makes `GuaranteedUpdate` write an unchanged
    /// object; the [`EncryptedStore`] reports values read with a provider or key
    /// that is no longer the first configured one, so rewriting every object moves
    /// them all to the new key. Engines store values as given: `false`.
    fn is_stale(&self, key: &str, mod_revision: Revision) -> bool {
        let _ = (key, mod_revision);
        false
    }

    /// The store whose values are as they rest on disk, if it is not this one: a
    /// wrapper that transforms values (the [`EncryptedStore`]) returns the store it
    /// wraps, so that a snapshot ([`snapshot::Snapshot::take`]) holds what is at
    /// rest — encrypted Secrets stay encrypted in backups, as an etcd snapshot of an
    /// encrypting apiserver does. Engines return `None`.
    fn at_rest(&self) -> Option<&dyn Store> {
        None
    }

    /// The engine's own snapshot, streamed, if the engine has a format of its own
    /// that its tools restore: the etcd engine answers etcd's Maintenance API
    /// snapshot (a bbolt database and its SHA-256, the file `etcdctl snapshot save`
    /// writes and `etcdctl snapshot restore` reads). `None` (the default): callers
    /// take a [`snapshot::Snapshot`] through this trait instead. Values are as they
    /// rest on disk; wrappers forward this to the store they wrap, so with
    /// encryption at rest an etcd snapshot holds the ciphertext, as upstream's does.
    ///
    /// Errors: [`Error::Unavailable`] when the engine cannot be reached; errors of
    /// the stream itself arrive as its items.
    async fn native_snapshot(&self) -> Result<Option<snapshot::NativeSnapshot>> {
        Ok(None)
    }

    /// Checks that the store can serve linearizable requests now (the apiserver's
    /// `/readyz` `etcd` check). The embedded engine is always healthy while open; the
    /// etcd engine does a quorum read with a short timeout like upstream's etcd health
    /// check. Errors: [`Error::Unavailable`] when the datastore cannot answer.
    async fn health(&self) -> Result<()> {
        Ok(())
    }
}
