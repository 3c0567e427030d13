//! A watch-fed cache of pods indexed by controller (the owner reference with
//! `controller: true`) and, for pods without one, by namespace — what the
//! ReplicaSet controller's claim step needs without listing from the apiserver.
//! Each change is reported as a [`PodChange`] so controllers can observe their
//! expectations and trigger reconciles in watch order.
//!
//! Memory: several controllers keep a cache each (as upstream's controllers each
//! have their own informer handlers), so a pod is stored once per process and
//! shared: every cache holding the same version (uid and resourceVersion) of a pod
//! holds the same `Arc` (module-private interning table, like the shared informer
//! of upstream's kube-controller-manager). `managedFields`, which no controller
//! reads, are dropped before a pod is cached.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::common::controller_of;

/// One observed change.
#[derive(Debug, Clone)]
pub enum PodChange {
    /// A pod the cache did not know.
    Added(Arc<Pod>),
    /// A new version of a known pod.
    Updated {
        /// The previous version.
        old: Arc<Pod>,
        /// The new version.
        new: Arc<Pod>,
    },
    /// A pod that is gone.
    Deleted(Arc<Pod>),
}

/// The pods cached anywhere in the process, by uid, as weak references to the
/// version last interned; entries of pods no cache holds any more are purged.
#[derive(Default)]
struct Interned {
    pods: HashMap<String, Weak<Pod>>,
    /// Number of entries after the last purge of dead ones.
    live_after_purge: usize,
}

static INTERNED: LazyLock<Mutex<Interned>> = LazyLock::new(Default::default);

/// The shared `Arc` for this version of the pod (without managedFields): the one
/// already cached elsewhere if it is equal, else `pod`, which becomes the shared one.
fn intern(mut pod: Pod) -> Arc<Pod> {
    pod.metadata.managed_fields = None;
    let u = uid(&pod);
    if u.is_empty() || pod.metadata.resource_version.is_none() {
        return Arc::new(pod);
    }
    let mut table = INTERNED.lock().expect("pod interning table");
    if let Some(known) = table.pods.get(&u).and_then(Weak::upgrade)
        && known.metadata.resource_version == pod.metadata.resource_version
        && *known == pod
    {
        return known;
    }
    let pod = Arc::new(pod);
    table.pods.insert(u, Arc::downgrade(&pod));
    // Amortized purge of pods no cache holds (deleted pods, dropped caches).
    if table.pods.len() > 2 * table.live_after_purge + 1024 {
        table.pods.retain(|_, w| w.strong_count() > 0);
        table.live_after_purge = table.pods.len();
    }
    pod
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Arc<Pod>>,
    by_controller: HashMap<String, HashSet<String>>,
    orphans: HashMap<String, HashSet<String>>,
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

impl Inner {
    fn index(&mut self, p: &Pod, insert: bool) {
        let u = uid(p);
        let set = match controller_of(&p.metadata) {
            Some(r) => self.by_controller.entry(r.uid.clone()).or_default(),
            None => self
                .orphans
                .entry(p.metadata.namespace.clone().unwrap_or_default())
                .or_default(),
        };
        if insert {
            set.insert(u);
        } else {
            set.remove(&u);
        }
    }

    fn put(&mut self, p: Arc<Pod>) -> PodChange {
        let old = self.pods.insert(uid(&p), p.clone());
        if let Some(o) = &old {
            self.index(o, false);
        }
        self.index(&p, true);
        match old {
            None => PodChange::Added(p),
            Some(old) => PodChange::Updated { old, new: p },
        }
    }

    fn remove(&mut self, u: &str) -> Option<PodChange> {
        let old = self.pods.remove(u)?;
        self.index(&old, false);
        Some(PodChange::Deleted(old))
    }
}

/// The cache. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct PodCache {
    inner: RwLock<Inner>,
}

impl PodCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new version of a pod.
    pub fn apply(&self, pod: Pod) -> PodChange {
        let pod = intern(pod);
        self.inner.write().expect("pod cache").put(pod)
    }

    /// Records a deletion; `None` if the pod was unknown.
    pub fn delete(&self, pod: &Pod) -> Option<PodChange> {
        self.inner.write().expect("pod cache").remove(&uid(pod))
    }

    /// Replaces the contents after a relist, reporting what changed (pods missing
    /// from the list are reported deleted).
    pub fn replace(&self, pods: Vec<Pod>) -> Vec<PodChange> {
        let pods: Vec<Arc<Pod>> = pods.into_iter().map(intern).collect();
        let mut inner = self.inner.write().expect("pod cache");
        let listed: HashSet<String> = pods.iter().map(|p| uid(p)).collect();
        let gone: Vec<String> = inner.pods.keys().filter(|u| !listed.contains(*u)).cloned().collect();
        let mut changes: Vec<PodChange> = gone.iter().filter_map(|u| inner.remove(u)).collect();
        for p in pods {
            let unchanged = inner
                .pods
                .get(&uid(&p))
                .is_some_and(|o| o.metadata.resource_version == p.metadata.resource_version);
            if !unchanged {
                changes.push(inner.put(p));
            }
        }
        changes
    }

    /// Pods whose controller reference has this uid.
    pub fn controlled_by(&self, controller_uid: &str) -> Vec<Arc<Pod>> {
        let inner = self.inner.read().expect("pod cache");
        inner
            .by_controller
            .get(controller_uid)
            .into_iter()
            .flatten()
            .filter_map(|u| inner.pods.get(u).cloned())
            .collect()
    }

    /// Pods in `namespace` without a controller reference.
    pub fn orphans_in(&self, namespace: &str) -> Vec<Arc<Pod>> {
        let inner = self.inner.read().expect("pod cache");
        inner
            .orphans
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|u| inner.pods.get(u).cloned())
            .collect()
    }

    /// Every cached pod of `namespace` (a scan of the cache).
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<Pod>> {
        let inner = self.inner.read().expect("pod cache");
        inner
            .pods
            .values()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }

    /// Number of cached pods.
    pub fn len(&self) -> usize {
        self.inner.read().expect("pod cache").pods.len()
    }

    /// Whether no pod is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Feeds `cache` from a watch of all pods until `shutdown`, calling `on_change`
/// for every change after it is applied; `ready` fires after the first full list.
pub async fn run(
    client: kube::Client,
    cache: Arc<PodCache>,
    mut on_change: impl FnMut(PodChange) + Send,
    ready: tokio::sync::oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut ready = Some(ready);
    let mut buffer: Vec<Pod> = Vec::new();
    let mut events = watcher(Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.next() => match e {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    continue;
                }
                None => return,
            },
        };
        match event {
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply(p) => buffer.push(p),
            watcher::Event::InitDone => {
                for change in cache.replace(std::mem::take(&mut buffer)) {
                    on_change(change);
                }
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            watcher::Event::Apply(p) => on_change(cache.apply(p)),
            watcher::Event::Delete(p) => {
                if let Some(change) = cache.delete(&p) {
                    on_change(change);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, rv: &str, owner: Option<&str>) -> Pod {
        let refs = owner
            .map(|o| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o, "uid": o, "controller": true}]));
        serde_json::from_value(json!({"metadata": {"name": name, "uid": name, "namespace": "ns",
            "resourceVersion": rv, "ownerReferences": refs}}))
        .unwrap()
    }

    #[test]
    fn indexes_follow_owner_changes_and_relists() {
        let c = PodCache::new();
        assert!(matches!(c.apply(pod("a", "1", None)), PodChange::Added(_)));
        assert_eq!(c.orphans_in("ns").len(), 1);
        assert!(matches!(c.apply(pod("a", "2", Some("rs"))), PodChange::Updated { .. }));
        assert_eq!(c.orphans_in("ns").len(), 0);
        assert_eq!(c.controlled_by("rs").len(), 1);
        let changes = c.replace(vec![pod("a", "2", Some("rs")), pod("b", "3", Some("rs"))]);
        assert_eq!(changes.len(), 1, "only the new pod changed");
        let changes = c.replace(vec![pod("b", "3", Some("rs"))]);
        assert!(matches!(&changes[..], [PodChange::Deleted(p)] if p.metadata.name.as_deref() == Some("a")));
        assert_eq!(c.controlled_by("rs").len(), 1);
        assert!(c.delete(&pod("b", "4", Some("rs"))).is_some());
        assert!(c.is_empty());
    }
}
