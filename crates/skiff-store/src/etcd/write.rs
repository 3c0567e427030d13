//! Writes as etcd transactions (upstream `storage/etcd3/store.go`: `Create`,
//! `GuaranteedUpdate` and `Delete` compare on the key's revisions and read the key
//! back in the else branch) and compaction.

use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::error::{Failure, Retry};
use super::{EtcdStore, key_value, revision_of};
use crate::{Error, KeyValue, Result, Revision};

/// The key read back by the else branch of a failed transaction (`None`: absent).
fn read_back(resp: &TxnResponse) -> Result<Option<KeyValue>> {
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(g) = op {
            return g.kvs().first().map(key_value).transpose();
        }
    }
    Ok(None)
}

/// The compares for "the key exists and, if `expected` is set, was last written at it".
fn guard(key: &str, expected: Option<Revision>) -> Vec<Compare> {
    let mut when = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
    if let Some(e) = expected {
        when.push(Compare::mod_revision(key, CompareOp::Equal, e));
    }
    when
}

/// Maps a failed guarded transaction to [`Error::NotFound`] or [`Error::Conflict`].
fn refused(key: &str, expected: Option<Revision>, resp: &TxnResponse) -> Error {
    match (read_back(resp), expected) {
        (Err(e), _) => e,
        (Ok(None), _) => Error::NotFound(key.to_string()),
        (Ok(Some(current)), Some(expected)) => Error::Conflict {
            key: key.to_string(),
            expected,
            current: Box::new(current),
        },
        // The key exists and no revision was expected: the guard cannot fail.
        (Ok(Some(_)), None) => Error::Backend(format!("etcd refused the delete of {key}")),
    }
}

impl EtcdStore {
    /// One transaction request (a fresh client handle per attempt).
    fn kv_txn(&self, txn: &Txn) -> impl std::future::Future<Output = Result<TxnResponse, etcd_client::Error>> {
        let (mut kv, txn) = (self.kv(), txn.clone());
        async move { kv.txn(txn).await }
    }
}

pub(super) async fn create(s: &EtcdStore, key: &str, value: Vec<u8>) -> Result<KeyValue> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value.clone(), None)])
        .or_else([TxnOp::get(key, None)]);
    let resp = s.call(Retry::Write, || s.kv_txn(&txn)).await?;
    if !resp.succeeded() {
        return Err(Error::AlreadyExists(key.to_string()));
    }
    let rev = revision_of(resp.header())?;
    Ok(KeyValue {
        key: key.to_string(),
        value,
        create_revision: rev,
        mod_revision: rev,
    })
}

pub(super) async fn update(s: &EtcdStore, key: &str, expected: Revision, value: Vec<u8>) -> Result<KeyValue> {
    let txn = Txn::new()
        .when(guard(key, Some(expected)))
        .and_then([TxnOp::put(key, value.clone(), Some(PutOptions::new().with_prev_key()))])
        .or_else([TxnOp::get(key, None)]);
    let resp = s.call(Retry::Write, || s.kv_txn(&txn)).await?;
    if !resp.succeeded() {
        return Err(refused(key, Some(expected), &resp));
    }
    let rev = revision_of(resp.header())?;
    let create_revision = resp
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Put(p) => p.prev_key().map(|p| p.create_revision()),
            _ => None,
        })
        .ok_or_else(|| Error::Backend(format!("etcd did not return the previous value of {key}")))?;
    Ok(KeyValue {
        key: key.to_string(),
        value,
        create_revision,
        mod_revision: rev,
    })
}

pub(super) async fn delete(s: &EtcdStore, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
    let txn = Txn::new()
        .when(guard(key, expected))
        .and_then([TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()))])
        .or_else([TxnOp::get(key, None)]);
    let resp = s.call(Retry::Write, || s.kv_txn(&txn)).await?;
    if !resp.succeeded() {
        return Err(refused(key, expected, &resp));
    }
    let rev = revision_of(resp.header())?;
    let prev = resp
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(key_value),
            _ => None,
        })
        .ok_or_else(|| Error::Backend(format!("etcd did not return the deleted value of {key}")))??;
    Ok(KeyValue {
        mod_revision: rev,
        ..prev
    })
}

/// Compacts etcd's history up to `revision` (clamped to the current revision); a
/// revision etcd has already compacted is not an error, as with the embedded engine.
pub(super) async fn compact(s: &EtcdStore, revision: Revision) -> Result<()> {
    let current = s.header_revision(s.timeout).await?;
    let at = revision.min(current);
    if at <= 0 {
        return Ok(());
    }
    let compact = || {
        let mut kv = s.kv();
        async move { kv.compact(at, None).await }
    };
    match s.call(Retry::Read, compact).await {
        Ok(_) | Err(Failure::Compacted) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
