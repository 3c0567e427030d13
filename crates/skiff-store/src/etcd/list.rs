//! Lists: etcd ranges at a revision, paginated like the embedded engine (keys
//! strictly after `start_after`, at most `limit`, `remaining` from etcd's count of the
//! whole range; upstream's etcd3 store pages the same way).

use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};

use super::error::{Failure, Retry};
use super::{EtcdStore, key_value, revision_of};
use crate::{Error, ListOptions, ListResult, Result, Revision};

/// The end of etcd's range for `prefix` (clientv3's `GetPrefixRangeEnd`): the prefix
/// with its last byte below `0xff` incremented and the rest dropped; `[0]` (every key
/// from the start key on) when there is none.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The start key of etcd's range for `prefix`: the prefix itself, or `[0]` (the
/// smallest key) for the empty prefix, which etcd does not accept as a key.
pub(super) fn range_start(prefix: &str) -> Vec<u8> {
    if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    }
}

/// The first key of the page: the prefix, or the smallest key after `start_after`.
fn page_start(prefix: &str, start_after: Option<&str>) -> Vec<u8> {
    match start_after {
        Some(s) if s >= prefix => {
            let mut k = s.as_bytes().to_vec();
            k.push(0);
            k
        }
        _ => range_start(prefix),
    }
}

pub(super) async fn list(s: &EtcdStore, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
    let requested = opts.revision.filter(|r| *r > 0);
    let mut get = GetOptions::new()
        .with_range(prefix_end(prefix.as_bytes()))
        .with_revision(requested.unwrap_or(0));
    match opts.limit {
        Some(0) => get = get.with_count_only(),
        Some(n) => get = get.with_limit(i64::try_from(n).unwrap_or(i64::MAX)),
        None => {}
    }
    let start = page_start(prefix, opts.start_after.as_deref());
    let range = || {
        let (mut kv, start, get) = (s.kv(), start.clone(), get.clone());
        async move { kv.get(start, Some(get)).await }
    };
    let resp = match s.call(Retry::Read, range).await {
        Ok(r) => r,
        Err(Failure::Compacted) => {
            let requested = requested.unwrap_or(0);
            return Err(Error::Compacted {
                requested,
                compacted: compacted_revision(s).await?,
            });
        }
        Err(Failure::FutureRevision) => {
            return Err(Error::FutureRevision {
                requested: requested.unwrap_or(0),
                current: s.header_revision(s.timeout).await?,
            });
        }
        Err(Failure::Other(e)) => return Err(e),
    };
    let items = resp.kvs().iter().map(key_value).collect::<Result<Vec<_>>>()?;
    let count = usize::try_from(resp.count()).unwrap_or(0);
    Ok(ListResult {
        remaining: count.saturating_sub(items.len()),
        revision: requested.unwrap_or(revision_of(resp.header())?),
        items,
    })
}

/// etcd's compacted revision. etcd has no request that returns it, but a watch that
/// starts before it is cancelled at once with `compact_revision` set (the way
/// upstream's reflector learns it from a `410`); this opens such a watch on a key
/// nobody writes. Only called after etcd reported a compacted revision.
pub(super) async fn compacted_revision(s: &EtcdStore) -> Result<Revision> {
    let probe = || async {
        let mut w = s.client.watch_client();
        let mut stream = w
            .watch(
                "/skiff/compaction-probe",
                Some(WatchOptions::new().with_start_revision(1)),
            )
            .await?;
        while let Some(resp) = stream.message().await? {
            if resp.compact_revision() > 0 {
                return Ok(resp.compact_revision());
            }
            if resp.canceled() {
                return Err(etcd_client::Error::WatchError(resp.cancel_reason().to_string()));
            }
        }
        Err(etcd_client::Error::WatchError("watch ended without an answer".into()))
    };
    // etcd checks a new watch against the compacted revision on its next watcher
    // sync (every 100 ms); a probe left waiting means nothing before it was compacted.
    match tokio::time::timeout(PROBE_TIMEOUT, s.call(Retry::Read, probe)).await {
        Ok(r) => Ok(r?),
        Err(_) => Ok(0),
    }
}

/// How long [`compacted_revision`] waits for etcd to cancel its probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::{page_start, prefix_end};

    #[test]
    fn ranges_follow_clientv3() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), [0]);
        assert_eq!(page_start("/r/", Some("/r/a")), b"/r/a\0");
        assert_eq!(page_start("/r/", Some("/a")), b"/r/");
        assert_eq!(page_start("", None), [0]);
    }
}
