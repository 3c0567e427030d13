//! Reads: point gets, prefix lists (at the latest or an older revision, paginated)
//! and log replay for watches. Each runs in one redb read transaction, so it sees a
//! single committed state.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{Database, ReadableDatabase};

use super::codec::{decode_current, decode_event, event_key};
use super::{CURRENT, LOG, META, backend, revisions_in};
use crate::{Error, Event, KeyValue, ListOptions, ListResult, Result, Revision};

/// Log events read per replay batch.
pub(super) const REPLAY_BATCH: usize = 1024;

/// Reads one key at the latest revision.
pub(super) fn get(db: &Database, key: &str) -> Result<Option<KeyValue>> {
    let tx = db.begin_read().map_err(backend)?;
    let t = tx.open_table(CURRENT).map_err(backend)?;
    match t.get(key).map_err(backend)? {
        Some(v) => Ok(Some(decode_current(key, v.value())?)),
        None => Ok(None),
    }
}

/// The smallest string greater than every string starting with `prefix`, if one
/// exists as valid UTF-8 (`None`: scan to the end of the table).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

/// Collects one page: the first `limit` items, then only counts the rest.
struct Page {
    items: Vec<KeyValue>,
    limit: usize,
    remaining: usize,
}

impl Page {
    fn offer(&mut self, item: impl FnOnce() -> Result<KeyValue>) -> Result<()> {
        if self.items.len() < self.limit {
            self.items.push(item()?);
        } else {
            self.remaining += 1;
        }
        Ok(())
    }
}

/// Lists keys under `prefix` as of `opts.revision` (latest if `None` or `<= 0`).
///
/// Keys written after the requested revision are rolled back with the log: the first
/// log event after that revision for a key carries the key's state at that revision
/// (`prev`, or absent for a create). The live table and that roll-back map are then
/// merged in key order, decoding values only for the returned page.
pub(super) fn list(db: &Database, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
    let tx = db.begin_read().map_err(backend)?;
    let (rev, compacted) = revisions_in(&tx.open_table(META).map_err(backend)?)?;
    let at = opts.revision.filter(|r| *r > 0).unwrap_or(rev);
    if at > rev {
        return Err(Error::FutureRevision {
            requested: at,
            current: rev,
        });
    }
    if at < compacted {
        return Err(Error::Compacted {
            requested: at,
            compacted,
        });
    }
    let in_range = |k: &str| k.starts_with(prefix) && opts.start_after.as_deref().is_none_or(|s| k > s);

    // State at `at` of every matching key written after it (None = absent then).
    let mut rollback: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
    if at < rev {
        let log = tx.open_table(LOG).map_err(backend)?;
        for entry in log.range((at as u64 + 1)..=(rev as u64)).map_err(backend)? {
            let (_, v) = entry.map_err(backend)?;
            let raw = v.value();
            let key = event_key(raw)?;
            if !in_range(key) || rollback.contains_key(key) {
                continue;
            }
            rollback.insert(key.to_string(), decode_event(raw)?.prev);
        }
    }

    let mut page = Page {
        items: Vec::new(),
        limit: opts.limit.unwrap_or(usize::MAX),
        remaining: 0,
    };
    let mut rollback = rollback.into_iter().peekable();
    let current = tx.open_table(CURRENT).map_err(backend)?;
    let lower = match &opts.start_after {
        Some(s) if s.as_str() >= prefix => Bound::Excluded(s.as_str()),
        _ => Bound::Included(prefix),
    };
    let end = prefix_end(prefix);
    let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let empty = match (lower, upper) {
        (Bound::Excluded(l) | Bound::Included(l), Bound::Excluded(u)) => l >= u,
        _ => false,
    };
    if !empty {
        for entry in current.range::<&str>((lower, upper)).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !in_range(key) {
                continue;
            }
            // Rolled-back keys that sort before this one.
            while let Some((_, state)) = rollback.next_if(|(rk, _)| rk.as_str() < key) {
                if let Some(kv) = state {
                    page.offer(|| Ok(kv))?;
                }
            }
            if let Some((_, state)) = rollback.next_if(|(rk, _)| rk == key) {
                if let Some(kv) = state {
                    page.offer(|| Ok(kv))?;
                }
                continue;
            }
            page.offer(|| decode_current(key, v.value()))?;
        }
    }
    for (_, state) in rollback {
        if let Some(kv) = state {
            page.offer(|| Ok(kv))?;
        }
    }
    Ok(ListResult {
        items: page.items,
        revision: at,
        remaining: page.remaining,
    })
}

/// Reads up to [`REPLAY_BATCH`] log entries after revision `after` and returns the
/// events among them for keys under `prefix`, and the last revision read (`after`
/// if the log has nothing newer).
///
/// Errors: [`Error::Compacted`] if `after` is older than the compacted revision.
pub(super) fn replay(db: &Database, prefix: &str, after: Revision) -> Result<(Vec<Event>, Revision)> {
    let tx = db.begin_read().map_err(backend)?;
    let (_, compacted) = revisions_in(&tx.open_table(META).map_err(backend)?)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let log = tx.open_table(LOG).map_err(backend)?;
    let mut out = Vec::new();
    let mut last = after;
    for entry in log.range((after as u64 + 1)..).map_err(backend)?.take(REPLAY_BATCH) {
        let (k, v) = entry.map_err(backend)?;
        last = k.value() as i64;
        let raw = v.value();
        if event_key(raw)?.starts_with(prefix) {
            out.push(decode_event(raw)?);
        }
    }
    Ok((out, last))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end("/registry/pods/").as_deref(), Some("/registry/pods0"));
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
    }
}
