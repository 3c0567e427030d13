//! A watch-fed cache of pods indexed by controller (the owner reference with
//! `controller: true`) and, for pods without one, by namespace — what the
//! ReplicaSet controller's claim step needs without listing from the apiserver.
//! Each change is reported as a [`PodChange`] so controllers can observe their
//! expectations and trigger reconciles in watch order.
//!
//! Memory: the controllers that own pods (ReplicaSet, ReplicationController, Job,
//! DaemonSet, StatefulSet, disruption) share one [`PodInformer`] — one watch, one
//! decoded copy of each pod — and subscribe to its changes, as upstream's
//! kube-controller-manager shares one pod informer between its controllers.
//! `managedFields`, which no controller reads, are dropped before a pod is cached.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

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

/// The pod as cached: without `managedFields`, which no controller reads.
fn cached(mut pod: Pod) -> Arc<Pod> {
    pod.metadata.managed_fields = None;
    Arc::new(pod)
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
        let pod = cached(pod);
        self.inner.write().expect("pod cache").put(pod)
    }

    /// Records a deletion; `None` if the pod was unknown.
    pub fn delete(&self, pod: &Pod) -> Option<PodChange> {
        self.inner.write().expect("pod cache").remove(&uid(pod))
    }

    /// Replaces the contents after a relist, reporting what changed (pods missing
    /// from the list are reported deleted).
    pub fn replace(&self, pods: Vec<Pod>) -> Vec<PodChange> {
        let pods: Vec<Arc<Pod>> = pods.into_iter().map(cached).collect();
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

    /// Every cached pod.
    pub fn all(&self) -> Vec<Arc<Pod>> {
        self.inner.read().expect("pod cache").pods.values().cloned().collect()
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

/// A pod event handler of a [`PodInformer`] subscriber; called for every change,
/// in watch order, right after the change is applied to the shared cache.
type Handler = Box<dyn FnMut(PodChange) + Send>;

/// The subscribers of a [`PodInformer`] and whether its first full list is in.
#[derive(Default)]
struct Subscribers {
    handlers: Vec<Handler>,
    /// Ready signals of subscribers waiting for the first full list.
    waiting: Vec<tokio::sync::oneshot::Sender<()>>,
    synced: bool,
}

/// One watch of all pods feeding one [`PodCache`] that every pod-owning
/// controller of the process reads, with change handlers per controller: upstream's
/// shared pod informer (client-go `SharedIndexInformer` with `AddEventHandler`).
/// Each pod is decoded once per event and held once, however many controllers
/// subscribe.
///
/// A subscriber that joins after the first full list gets every cached pod as
/// [`PodChange::Added`] first (client-go's synthetic adds for a late handler), so it
/// observes the same stream of changes whenever it subscribes.
pub struct PodInformer {
    cache: Arc<PodCache>,
    subscribers: Mutex<Subscribers>,
}

impl std::fmt::Debug for PodInformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodInformer").field("pods", &self.cache.len()).finish()
    }
}

impl PodInformer {
    /// An informer with an empty cache; feed it with [`PodInformer::run`].
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            cache: Arc::new(PodCache::new()),
            subscribers: Mutex::new(Subscribers::default()),
        })
    }

    /// A new informer already running (on its own task) until `shutdown`: for a
    /// controller run alone, outside the controller manager's shared informer.
    pub fn start(client: kube::Client, shutdown: CancellationToken) -> Arc<Self> {
        let informer = Self::new();
        tokio::spawn(informer.clone().run(client, shutdown));
        informer
    }

    /// The shared cache (complete once a subscriber's ready signal has fired).
    pub fn cache(&self) -> Arc<PodCache> {
        self.cache.clone()
    }

    /// Registers `on_change` for every later change; the returned receiver fires
    /// once the cache holds a full list (at once if it already does). A handler
    /// runs on the informer's task while the cache is locked against other
    /// changes, so it must not block (controllers send to a queue).
    pub fn subscribe(
        &self,
        mut on_change: impl FnMut(PodChange) + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut subs = self.subscribers.lock().expect("pod informer subscribers");
        if subs.synced {
            for p in self.cache.all() {
                on_change(PodChange::Added(p));
            }
            let _ = tx.send(());
        } else {
            subs.waiting.push(tx);
        }
        subs.handlers.push(Box::new(on_change));
        rx
    }

    /// Applies a change through `f` and hands what changed to every subscriber, in
    /// one critical section so a concurrent [`PodInformer::subscribe`] sees each
    /// change either in its replay or as an event, never both or neither.
    fn dispatch(&self, f: impl FnOnce(&PodCache) -> Vec<PodChange>) {
        let mut subs = self.subscribers.lock().expect("pod informer subscribers");
        for change in f(&self.cache) {
            if let [only] = &mut subs.handlers[..] {
                only(change);
            } else {
                for h in subs.handlers.iter_mut() {
                    h(change.clone());
                }
            }
        }
    }

    fn mark_synced(&self) {
        let mut subs = self.subscribers.lock().expect("pod informer subscribers");
        subs.synced = true;
        for tx in subs.waiting.drain(..) {
            let _ = tx.send(());
        }
    }

    /// Feeds the cache from a watch of all pods until `shutdown` (relisting with
    /// backoff after errors, as a reflector does).
    pub async fn run(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
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
                watcher::Event::InitApply(mut p) => {
                    p.metadata.managed_fields = None;
                    buffer.push(p);
                }
                watcher::Event::InitDone => {
                    let pods = std::mem::take(&mut buffer);
                    self.dispatch(|c| c.replace(pods));
                    self.mark_synced();
                }
                watcher::Event::Apply(p) => self.dispatch(|c| vec![c.apply(p)]),
                watcher::Event::Delete(p) => self.dispatch(|c| c.delete(&p).into_iter().collect()),
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

    #[test]
    fn subscribers_share_one_cache_and_late_ones_get_the_pods_first() {
        let informer = PodInformer::new();
        let seen = |log: Arc<Mutex<Vec<String>>>| {
            move |change: PodChange| {
                let (kind, p) = match &change {
                    PodChange::Added(p) => ("add", p),
                    PodChange::Updated { new, .. } => ("update", new),
                    PodChange::Deleted(p) => ("delete", p),
                };
                let rv = p.metadata.resource_version.clone().unwrap_or_default();
                log.lock().unwrap().push(format!(
                    "{kind} {}@{rv}",
                    p.metadata.name.as_deref().unwrap_or_default()
                ));
            }
        };
        let early: Arc<Mutex<Vec<String>>> = Default::default();
        let mut early_ready = informer.subscribe(seen(early.clone()));
        informer.dispatch(|c| c.replace(vec![pod("a", "1", Some("rs"))]));
        assert!(early_ready.try_recv().is_err(), "not ready before the list is complete");
        informer.mark_synced();
        assert!(early_ready.try_recv().is_ok());
        informer.dispatch(|c| vec![c.apply(pod("b", "2", None))]);

        let late: Arc<Mutex<Vec<String>>> = Default::default();
        let mut late_ready = informer.subscribe(seen(late.clone()));
        assert!(late_ready.try_recv().is_ok(), "ready at once after the first list");
        let mut replayed = late.lock().unwrap().clone();
        replayed.sort();
        assert_eq!(replayed, ["add a@1", "add b@2"]);

        informer.dispatch(|c| vec![c.apply(pod("a", "3", Some("rs")))]);
        informer.dispatch(|c| c.delete(&pod("b", "2", None)).into_iter().collect());
        assert_eq!(
            *early.lock().unwrap(),
            ["add a@1", "add b@2", "update a@3", "delete b@2"]
        );
        assert_eq!(late.lock().unwrap()[2..], ["update a@3", "delete b@2"]);
        let cached = informer.cache().controlled_by("rs");
        assert_eq!(cached.len(), 1);
        assert_eq!(cached[0].metadata.resource_version.as_deref(), Some("3"));
    }
}
