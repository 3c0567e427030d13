//! Differential test: each engine against a plain in-memory model (a `BTreeMap` of
//! live keys plus the full list of events), for random sequences of create / update /
//! delete (with and without compare-and-swap), get, list at past revisions with
//! pagination, compaction, watches from any revision, and reopening the store.
//!
//! The embedded engine runs each case on a new data dir. The etcd engine runs every
//! case on one real etcd member (Debian's `etcd-server`, on loopback): a case starts
//! by deleting what the previous one left and compacting, and the model starts at
//! that revision (`base`) with that compacted revision.

use std::collections::BTreeMap;

use futures::StreamExt;
use proptest::prelude::*;
use skiff_store::{
    EmbeddedStore, Error, EtcdConfig, EtcdStore, EtcdTls, Event, EventKind, KeyValue, ListOptions, ListResult,
    Revision, Store, WatchStream,
};

mod support;

use support::etcd::{Member, Ports};

static PORTS: Ports = Ports::new(23880, 23890);

const KEYS: [&str; 6] = ["/a/k0", "/a/k1", "/a/k2", "/a/k10", "/b/k0", "/b/k1"];
const PREFIXES: [&str; 5] = ["", "/a/", "/b/", "/a/k1", "/c/"];

#[derive(Debug, Clone)]
enum Op {
    Create(usize, u8),
    /// Update with the key's current revision (`true`) or a stale one.
    Update(usize, bool, u8),
    /// Delete unconditionally (`None`), or with the current (`Some(true)`) or a stale revision.
    Delete(usize, Option<bool>),
    Get(usize),
    /// Prefix, revision as a fraction of the current one (0 = latest; > 255 = future),
    /// start after one of the keys, limit.
    List(usize, u16, Option<usize>, Option<usize>),
    /// Compact to this fraction of the current revision.
    Compact(u8),
    /// Start a watch on a prefix from this fraction of the current revision.
    Watch(usize, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    prop_oneof![
        4 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        4 => (key.clone(), prop::bool::weighted(0.8), any::<u8>()).prop_map(|(k, ok, v)| Op::Update(k, ok, v)),
        2 => (key.clone(), prop::option::of(prop::bool::weighted(0.8))).prop_map(|(k, e)| Op::Delete(k, e)),
        1 => key.clone().prop_map(Op::Get),
        3 => (0..PREFIXES.len(), 0u16..300, prop::option::of(key.clone()), prop::option::of(1usize..4))
            .prop_map(|(p, r, s, l)| Op::List(p, r, s, l)),
        1 => any::<u8>().prop_map(Op::Compact),
        1 => (0..PREFIXES.len(), any::<u8>()).prop_map(|(p, r)| Op::Watch(p, r)),
        1 => Just(Op::Reopen),
    ]
}

/// The reference: live keys, every event since `base`, and the compacted revision.
#[derive(Default)]
struct Model {
    /// The store's revision when the case started.
    base: Revision,
    live: BTreeMap<String, KeyValue>,
    events: Vec<Event>,
    compacted: Revision,
}

impl Model {
    fn revision(&self) -> Revision {
        self.base + self.events.len() as Revision
    }

    /// A revision this fraction (of 255) into the case's history.
    fn fraction(&self, f: u16) -> Revision {
        self.base + fraction(self.events.len() as Revision, f)
    }

    fn commit(&mut self, kind: EventKind, kv: KeyValue, prev: Option<KeyValue>) -> KeyValue {
        if kind == EventKind::Deleted {
            self.live.remove(&kv.key);
        } else {
            self.live.insert(kv.key.clone(), kv.clone());
        }
        self.events.push(Event {
            kind,
            kv: kv.clone(),
            prev,
        });
        kv
    }

    fn create(&mut self, key: &str, value: Vec<u8>) -> Result<KeyValue, Error> {
        if self.live.contains_key(key) {
            return Err(Error::AlreadyExists(key.into()));
        }
        let rev = self.revision() + 1;
        let kv = KeyValue {
            key: key.into(),
            value,
            create_revision: rev,
            mod_revision: rev,
        };
        Ok(self.commit(EventKind::Created, kv, None))
    }

    fn check(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, Error> {
        let cur = self.live.get(key).cloned().ok_or_else(|| Error::NotFound(key.into()))?;
        match expected {
            Some(e) if e != cur.mod_revision => Err(Error::Conflict {
                key: key.into(),
                expected: e,
                current: Box::new(cur),
            }),
            _ => Ok(cur),
        }
    }

    fn update(&mut self, key: &str, expected: Revision, value: Vec<u8>) -> Result<KeyValue, Error> {
        let prev = self.check(key, Some(expected))?;
        let kv = KeyValue {
            value,
            mod_revision: self.revision() + 1,
            ..prev.clone()
        };
        Ok(self.commit(EventKind::Updated, kv, Some(prev)))
    }

    fn delete(&mut self, key: &str, expected: Option<Revision>) -> Result<KeyValue, Error> {
        let prev = self.check(key, expected)?;
        let kv = KeyValue {
            mod_revision: self.revision() + 1,
            ..prev.clone()
        };
        Ok(self.commit(EventKind::Deleted, kv, Some(prev)))
    }

    /// State as of `at`, rebuilt from the start of history.
    fn state_at(&self, at: Revision) -> BTreeMap<String, KeyValue> {
        let mut state = BTreeMap::new();
        for ev in &self.events[..(at - self.base) as usize] {
            if ev.kind == EventKind::Deleted {
                state.remove(&ev.kv.key);
            } else {
                state.insert(ev.kv.key.clone(), ev.kv.clone());
            }
        }
        state
    }

    fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult, Error> {
        let at = opts.revision.filter(|r| *r > 0).unwrap_or(self.revision());
        if at > self.revision() {
            return Err(Error::FutureRevision {
                requested: at,
                current: self.revision(),
            });
        }
        if at < self.compacted {
            return Err(Error::Compacted {
                requested: at,
                compacted: self.compacted,
            });
        }
        let matching: Vec<KeyValue> = self
            .state_at(at)
            .into_values()
            .filter(|kv| kv.key.starts_with(prefix) && opts.start_after.as_ref().is_none_or(|s| &kv.key > s))
            .collect();
        let n = opts.limit.unwrap_or(usize::MAX).min(matching.len());
        Ok(ListResult {
            remaining: matching.len() - n,
            items: matching[..n].to_vec(),
            revision: at,
        })
    }

    fn watch_events(&self, prefix: &str, after: Revision, upto: Revision) -> Vec<Event> {
        self.events[(after - self.base) as usize..(upto - self.base) as usize]
            .iter()
            .filter(|ev| ev.kv.key.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// Compares results, treating errors as equal when they are the same variant with
/// the same fields.
fn same<T: PartialEq + std::fmt::Debug>(got: &Result<T, Error>, want: &Result<T, Error>) -> bool {
    match (got, want) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => format!("{a:?}") == format!("{b:?}"),
        _ => false,
    }
}

fn same_list(got: &Result<ListResult, Error>, want: &Result<ListResult, Error>) -> bool {
    match (got, want) {
        (Ok(a), Ok(b)) => a.items == b.items && a.revision == b.revision && a.remaining == b.remaining,
        (Err(a), Err(b)) => format!("{a:?}") == format!("{b:?}"),
        _ => false,
    }
}

/// A watch opened during the run, checked against the model when the store closes.
struct OpenWatch {
    prefix: &'static str,
    after: Revision,
    stream: WatchStream,
    /// The stream ended with `Compacted`: a compaction passed it before it had caught
    /// up from the log (etcd cancels such unsynced watchers the same way).
    compacted: bool,
}

/// Whether `r` is the end of a watch that a compaction overtook while it was still
/// catching up: `Compacted` with a position the model has compacted past.
fn overtaken(r: &Result<Event, Error>, after: Revision, model: &Model) -> bool {
    matches!(r, Err(Error::Compacted { requested, compacted })
        if *requested >= after && *requested < *compacted && *compacted <= model.compacted)
}

/// Checks a watch while the store is still open: it delivers exactly the model's
/// events for its prefix after its start revision, in order.
async fn check_watch(w: &mut OpenWatch, model: &Model) -> Result<(), TestCaseError> {
    if w.compacted {
        return Ok(());
    }
    for want in model.watch_events(w.prefix, w.after, model.revision()) {
        let rev = want.revision();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), w.stream.next()).await;
        match got {
            Ok(Some(Ok(ev))) => prop_assert_eq!(ev, want, "watch {:?} after {}", w.prefix, w.after),
            Ok(Some(r)) if overtaken(&r, w.after, model) => {
                w.compacted = true;
                return Ok(());
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "watch {:?} after {}: {other:?}",
                    w.prefix, w.after
                )));
            }
        }
        w.after = rev;
    }
    Ok(())
}

/// After the store is dropped a checked watch ends: cleanly, or with an error when it
/// had not yet read past the last events (which did not match its prefix). It never
/// delivers anything more.
async fn check_watch_ends(w: OpenWatch, model: &Model) -> Result<(), TestCaseError> {
    let (ended, after) = (w.compacted, w.after);
    let rest: Vec<_> = w.stream.collect().await;
    match rest.as_slice() {
        [] | [Err(Error::Backend(_))] => Ok(()),
        [r] if !ended && overtaken(r, after, model) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "watch {:?}: after close: {other:?}",
            w.prefix
        ))),
    }
}

fn fraction(of: Revision, f: u16) -> Revision {
    of * Revision::from(f) / 255
}

/// What the runner needs from an engine.
trait Engine {
    /// The engine's store.
    type S: Store;
    /// Opens the store on the engine's data (again, after [`Op::Reopen`]).
    async fn open(&self) -> Self::S;
    /// The engine's own view of its compacted revision, where it exposes one.
    fn compacted(&self, _store: &Self::S) -> Option<Revision> {
        None
    }
    /// Whether dropping the store ends its watches (the embedded engine's do; an
    /// etcd watch lives on the cluster, not in the store handle).
    const WATCHES_END_WITH_STORE: bool;
}

struct Embedded(tempfile::TempDir);

impl Engine for Embedded {
    type S = EmbeddedStore;
    async fn open(&self) -> EmbeddedStore {
        EmbeddedStore::open(self.0.path()).unwrap()
    }
    fn compacted(&self, store: &EmbeddedStore) -> Option<Revision> {
        Some(store.compacted_revision())
    }
    const WATCHES_END_WITH_STORE: bool = true;
}

struct Etcd(EtcdConfig);

impl Engine for Etcd {
    type S = EtcdStore;
    async fn open(&self) -> EtcdStore {
        EtcdStore::connect(&self.0).await.unwrap()
    }
    const WATCHES_END_WITH_STORE: bool = false;
}

async fn run<E: Engine>(engine: &E, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut store = Some(engine.open().await);
    // Start from an empty keyspace with no history: the model's starting point.
    let s = store.as_ref().unwrap();
    for kv in s.list("", ListOptions::default()).await.unwrap().items {
        s.delete(&kv.key, None).await.unwrap();
    }
    let base = s.current_revision().await.unwrap();
    s.compact(base).await.unwrap();
    let mut model = Model {
        base,
        compacted: base,
        ..Model::default()
    };
    let mut watches: Vec<OpenWatch> = Vec::new();
    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            Op::Create(k, v) => {
                let got = s.create(KEYS[k], vec![v]).await;
                let want = model.create(KEYS[k], vec![v]);
                prop_assert!(same(&got, &want), "create {}: {:?} != {:?}", KEYS[k], got, want);
            }
            Op::Update(k, current, v) => {
                let expected = match model.live.get(KEYS[k]) {
                    Some(kv) if current => kv.mod_revision,
                    Some(kv) => kv.mod_revision - 1,
                    None => 1,
                };
                let got = s.update(KEYS[k], expected, vec![v]).await;
                let want = model.update(KEYS[k], expected, vec![v]);
                prop_assert!(same(&got, &want), "update {}: {:?} != {:?}", KEYS[k], got, want);
            }
            Op::Delete(k, current) => {
                let cur = model.live.get(KEYS[k]).map_or(1, |kv| kv.mod_revision);
                let expected = current.map(|c| if c { cur } else { cur + 1 });
                let got = s.delete(KEYS[k], expected).await;
                let want = model.delete(KEYS[k], expected);
                prop_assert!(same(&got, &want), "delete {}: {:?} != {:?}", KEYS[k], got, want);
            }
            Op::Get(k) => {
                let got = s.get(KEYS[k]).await.unwrap();
                prop_assert_eq!(got.as_ref(), model.live.get(KEYS[k]));
            }
            Op::List(p, r, start, limit) => {
                let revision = match r {
                    0 => None,
                    r if r > 255 => Some(model.revision() + Revision::from(r - 255)),
                    r => Some(model.fraction(r)),
                };
                let opts = ListOptions {
                    revision,
                    start_after: start.map(|k| KEYS[k].to_string()),
                    limit,
                };
                let got = s.list(PREFIXES[p], opts.clone()).await;
                let want = model.list(PREFIXES[p], &opts);
                prop_assert!(
                    same_list(&got, &want),
                    "list {:?} {:?}: {:?} != {:?}",
                    PREFIXES[p],
                    opts,
                    got,
                    want
                );
            }
            Op::Compact(f) => {
                let rev = model.fraction(u16::from(f));
                s.compact(rev).await.unwrap();
                model.compacted = model.compacted.max(rev);
                if let Some(c) = engine.compacted(s) {
                    prop_assert_eq!(c, model.compacted);
                }
            }
            Op::Watch(p, f) => {
                let rel = fraction(model.revision() - model.base, u16::from(f));
                let requested = if rel == 0 { 0 } else { model.base + rel };
                // `0` means "from now".
                let after = if requested == 0 { model.revision() } else { requested };
                match s.watch(PREFIXES[p], requested).await {
                    Ok(stream) => {
                        prop_assert!(after >= model.compacted, "watch from compacted {after} accepted");
                        watches.push(OpenWatch {
                            prefix: PREFIXES[p],
                            after,
                            stream,
                            compacted: false,
                        });
                    }
                    Err(Error::Compacted { requested, compacted }) => {
                        prop_assert_eq!((requested, compacted), (after, model.compacted));
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("watch: {e}"))),
                }
            }
            Op::Reopen => {
                for w in &mut watches {
                    check_watch(w, &model).await?;
                }
                drop(store.take());
                if E::WATCHES_END_WITH_STORE {
                    for w in watches.drain(..) {
                        check_watch_ends(w, &model).await?;
                    }
                }
                let s = engine.open().await;
                prop_assert_eq!(s.current_revision().await.unwrap(), model.revision());
                if let Some(c) = engine.compacted(&s) {
                    prop_assert_eq!(c, model.compacted);
                }
                store = Some(s);
            }
        }
    }
    let s = store.take().unwrap();
    let all = s.list("", ListOptions::default()).await.unwrap();
    prop_assert_eq!(all.items, model.live.values().cloned().collect::<Vec<_>>());
    for w in &mut watches {
        check_watch(w, &model).await?;
    }
    drop(s);
    if E::WATCHES_END_WITH_STORE {
        for w in watches {
            check_watch_ends(w, &model).await?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn embedded_engine_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&Embedded(tempfile::tempdir().unwrap()), ops))?;
    }
}

/// The etcd engine against the model: every case on one etcd member, started here
/// and killed when the test ends (also when it fails).
#[test]
fn etcd_engine_matches_the_model() {
    let member = Member::single(&PORTS);
    let cfg = EtcdConfig::parse(
        &format!("etcd://127.0.0.1:{}", member.spec.client_port),
        EtcdTls::default(),
    )
    .unwrap();
    let engine = Etcd(cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = engine.open().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while let Err(e) = store.health().await {
            assert!(std::time::Instant::now() < deadline, "etcd not ready: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let config = ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..80), |ops| {
        rt.block_on(run(&engine, ops))
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
    drop(member);
}
