//! Garbage collector (upstream pkg/controller/garbagecollector): deletes dependents
//! whose owners are gone (background propagation), carries out the
//! `foregroundDeletion` and `orphan` finalizers on owners being deleted, and removes
//! dangling owner references from dependents that still have a live owner.
//!
//! It watches every resource discovery reports (list/watch/delete; events
//! excluded, as upstream), re-discovering every 30 s. The ownership graph is
//! rebuilt from the watch caches on each sweep; an owner missing from the caches
//! is confirmed absent with a live read before anything is deleted, so a lagging
//! cache never deletes an object whose owner exists.
//!
//! Like upstream's metadata-only informers, the caches keep only what the graph
//! needs: each object's metadata without managedFields, labels and annotations
//! (names, uid, owner references, finalizers, deletion state, resourceVersion);
//! its body is dropped as it arrives.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::discovery::{self, Served};

/// Finalizer: delete blocking dependents before the owner.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer: detach dependents before deleting the owner.
pub const ORPHAN: &str = "orphan";
const REDISCOVERY: Duration = Duration::from_secs(30);
/// Pause between a change and the sweep it triggers, batching bursts of events.
const SETTLE: Duration = Duration::from_millis(300);

/// What is known about one owner reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists (same uid).
    Exists,
    /// The owner exists and is waiting for its dependents (foreground deletion).
    WaitingForDependents,
    /// No object with that uid exists.
    Absent,
}

/// What to do with a dependent (upstream `attemptToDeleteItem`).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Leave it alone.
    Keep,
    /// Some owners remain: remove the references to these owner uids.
    RemoveReferences(Vec<String>),
    /// No owner remains: delete it with this propagation.
    Delete(PropagationPolicy),
}

/// Classifies a dependent from the states of its owners. `has_dependents` says
/// whether it owns objects itself (then a foreground-deleting owner makes it go
/// foreground too); `finalizers` are its own.
pub fn decide(owners: &[(OwnerReference, OwnerState)], has_dependents: bool, finalizers: &[String]) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let solid = owners.iter().filter(|(_, s)| *s == OwnerState::Exists).count();
    let stale: Vec<String> = owners
        .iter()
        .filter(|(_, s)| *s != OwnerState::Exists)
        .map(|(r, _)| r.uid.clone())
        .collect();
    if solid > 0 {
        return if stale.is_empty() {
            Decision::Keep
        } else {
            Decision::RemoveReferences(stale)
        };
    }
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::WaitingForDependents);
    let policy = if finalizers.iter().any(|f| f == ORPHAN) {
        PropagationPolicy::Orphan
    } else if finalizers.iter().any(|f| f == FOREGROUND) || (waiting && has_dependents) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    Decision::Delete(policy)
}

struct Kind {
    served: Served,
    store: reflector::Store<DynamicObject>,
}

fn api_for(client: &kube::Client, kind: &Kind, ns: Option<&str>) -> Api<DynamicObject> {
    match ns.filter(|_| kind.served.namespaced) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.served.ar),
        None => Api::all_with(client.clone(), &kind.served.ar),
    }
}

/// Reduces a watched object to what the ownership graph reads.
fn metadata_only(o: &mut DynamicObject) {
    o.data = serde_json::Value::Null;
    o.metadata.managed_fields = None;
    o.metadata.labels = None;
    o.metadata.annotations = None;
}

/// Whether a watch event can change what a sweep decides, so it is worth waking
/// the collector for: a deletion, a relist, or an object whose owner references,
/// finalizers or deletion state differ from the cached version (new objects
/// without any of them cannot be dependents nor need finalizing). Status updates,
/// lease renewals and the like do not wake it; the periodic sweep still runs.
fn changes_graph(
    cache: &reflector::Store<DynamicObject>,
    ar: &ApiResource,
    event: &watcher::Event<DynamicObject>,
) -> bool {
    let graph = |o: &DynamicObject| {
        (
            o.metadata.owner_references.clone().unwrap_or_default(),
            o.metadata.finalizers.clone().unwrap_or_default(),
            o.metadata.deletion_timestamp.is_some(),
        )
    };
    match event {
        watcher::Event::Init | watcher::Event::InitApply(_) => false,
        watcher::Event::InitDone | watcher::Event::Delete(_) => true,
        watcher::Event::Apply(o) => match cache.get(&ObjectRef::from_obj_with(o, ar.clone())) {
            Some(old) => graph(&old) != graph(o),
            None => graph(o) != Default::default(),
        },
    }
}

fn has_finalizer(o: &DynamicObject, f: &str) -> bool {
    o.metadata.finalizers.iter().flatten().any(|x| x == f)
}

struct Collector {
    client: kube::Client,
    kinds: Vec<Kind>,
    watched: HashSet<(String, String)>,
}

impl Collector {
    fn kind_of(&self, r: &OwnerReference) -> Option<&Kind> {
        self.kinds
            .iter()
            .find(|k| k.served.ar.kind == r.kind && k.served.ar.api_version == r.api_version)
            .or_else(|| {
                // Same group and kind, another version.
                let group = r.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                self.kinds
                    .iter()
                    .find(|k| k.served.ar.kind == r.kind && k.served.ar.group == group)
            })
    }

    /// Starts watching `served` resources not watched yet.
    fn watch_new(&mut self, served: Vec<Served>, wake: &mpsc::Sender<()>, shutdown: &CancellationToken) {
        for s in served {
            let key = (s.ar.api_version.clone(), s.ar.plural.clone());
            if !self.watched.insert(key) {
                continue;
            }
            let mut writer = reflector::store::Writer::<DynamicObject>::new(s.ar.clone());
            let store = writer.as_reader();
            let reader = store.clone();
            let mut events = watcher(
                Api::<DynamicObject>::all_with(self.client.clone(), &s.ar),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(metadata_only)
            .boxed();
            let (tx, token, ar) = (wake.clone(), shutdown.clone(), s.ar.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        item = events.next() => match item {
                            Some(Ok(event)) => {
                                let wake = changes_graph(&reader, &ar, &event);
                                writer.apply_watcher_event(&event);
                                if wake {
                                    let _ = tx.try_send(());
                                }
                            }
                            // The watcher retries with backoff.
                            Some(Err(_)) => {}
                            None => return,
                        }
                    }
                }
            });
            self.kinds.push(Kind { served: s, store });
        }
    }

    /// Live check of an owner the caches do not show (upstream `isDangling`).
    async fn confirm_absent(&self, ns: Option<&str>, r: &OwnerReference) -> bool {
        let Some(kind) = self.kind_of(r) else {
            // An owner of a kind that is not served cannot be resolved: keep.
            return false;
        };
        match api_for(&self.client, kind, ns).get_opt(&r.name).await {
            Ok(Some(o)) => o.metadata.uid.as_deref() != Some(r.uid.as_str()),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    async fn delete(&self, kind: &Kind, o: &DynamicObject, policy: PropagationPolicy) {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: o.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = o.metadata.name.clone().unwrap_or_default();
        match api_for(&self.client, kind, o.metadata.namespace.as_deref())
            .delete(&name, &dp)
            .await
        {
            Ok(_) => {
                tracing::info!(kind = %kind.served.ar.kind, namespace = ?o.metadata.namespace, %name, "deleted dependent whose owners are gone")
            }
            Err(e) => tracing::debug!(error = %e, %name, "garbage collection delete failed"),
        }
    }

    async fn remove_owner_refs(&self, kind: &Kind, o: &DynamicObject, uids: &[String]) {
        let refs: Vec<&OwnerReference> = o
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| !uids.contains(&r.uid))
            .collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": o.metadata.uid}});
        let name = o.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api_for(&self.client, kind, o.metadata.namespace.as_deref())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(error = %e, %name, "removing owner references failed");
        }
    }

    async fn remove_finalizer(&self, kind: &Kind, o: &DynamicObject, finalizer: &str) {
        let remaining: Vec<&String> = o
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .collect();
        let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": o.metadata.resource_version}});
        let name = o.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api_for(&self.client, kind, o.metadata.namespace.as_deref())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(error = %e, %name, "removing finalizer failed");
        }
    }

    async fn sweep(&self) {
        let objects: Vec<(usize, Arc<DynamicObject>)> = self
            .kinds
            .iter()
            .enumerate()
            .flat_map(|(i, k)| k.store.state().into_iter().map(move |o| (i, o)))
            .collect();
        let by_uid: HashMap<&str, &DynamicObject> = objects
            .iter()
            .filter_map(|(_, o)| Some((o.metadata.uid.as_deref()?, o.as_ref())))
            .collect();
        let mut dependents: HashMap<&str, Vec<(usize, &DynamicObject, &OwnerReference)>> = HashMap::new();
        for (i, o) in &objects {
            for r in o.metadata.owner_references.iter().flatten() {
                dependents.entry(r.uid.as_str()).or_default().push((*i, o, r));
            }
        }
        for (i, o) in &objects {
            let kind = &self.kinds[*i];
            let uid = o.metadata.uid.as_deref().unwrap_or_default();
            let deps = dependents.get(uid).cloned().unwrap_or_default();
            if o.metadata.deletion_timestamp.is_some() {
                if has_finalizer(o, FOREGROUND) {
                    // Upstream `processDeletingDependentsItem`: delete dependents;
                    // the owner goes once no blocking dependent is left.
                    for (j, dep, _) in &deps {
                        if dep.metadata.deletion_timestamp.is_none() {
                            self.attempt_to_delete(*j, dep, &by_uid, &dependents).await;
                        }
                    }
                    if !deps.iter().any(|(_, _, r)| r.block_owner_deletion == Some(true)) {
                        self.remove_finalizer(kind, o, FOREGROUND).await;
                    }
                } else if has_finalizer(o, ORPHAN) {
                    for (j, dep, _) in &deps {
                        self.remove_owner_refs(&self.kinds[*j], dep, &[uid.to_string()]).await;
                    }
                    self.remove_finalizer(kind, o, ORPHAN).await;
                }
                continue;
            }
            if o.metadata.owner_references.as_ref().is_some_and(|r| !r.is_empty()) {
                self.attempt_to_delete(*i, o, &by_uid, &dependents).await;
            }
        }
    }

    /// Upstream `attemptToDeleteItem` for one dependent.
    async fn attempt_to_delete(
        &self,
        i: usize,
        o: &DynamicObject,
        by_uid: &HashMap<&str, &DynamicObject>,
        dependents: &HashMap<&str, Vec<(usize, &DynamicObject, &OwnerReference)>>,
    ) {
        let ns = o.metadata.namespace.as_deref();
        let mut owners = Vec::new();
        for r in o.metadata.owner_references.iter().flatten() {
            let state = match by_uid.get(r.uid.as_str()) {
                Some(owner) if owner.metadata.deletion_timestamp.is_some() && has_finalizer(owner, FOREGROUND) => {
                    OwnerState::WaitingForDependents
                }
                Some(_) => OwnerState::Exists,
                None if self.confirm_absent(ns, r).await => OwnerState::Absent,
                None => OwnerState::Exists,
            };
            owners.push((r.clone(), state));
        }
        let uid = o.metadata.uid.as_deref().unwrap_or_default();
        let has_dependents = dependents.get(uid).is_some_and(|d| !d.is_empty());
        let finalizers = o.metadata.finalizers.clone().unwrap_or_default();
        match decide(&owners, has_dependents, &finalizers) {
            Decision::Keep => {}
            Decision::RemoveReferences(uids) => self.remove_owner_refs(&self.kinds[i], o, &uids).await,
            Decision::Delete(policy) => self.delete(&self.kinds[i], o, policy).await,
        }
    }
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let mut gc = Collector {
        client: client.clone(),
        kinds: Vec::new(),
        watched: HashSet::new(),
    };
    let mut last_discovery = tokio::time::Instant::now() - REDISCOVERY;
    loop {
        if last_discovery.elapsed() >= REDISCOVERY {
            match discovery::served(&client, true).await {
                Ok(served) => {
                    gc.watch_new(served, &wake_tx, &shutdown);
                    last_discovery = tokio::time::Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "garbage collector discovery failed; retrying"),
            }
        }
        // A kind whose watch cannot start must not stall collection of the others:
        // its objects are simply not swept yet (owners are confirmed live anyway).
        let ready = futures::future::join_all(gc.kinds.iter().map(|k| k.store.wait_until_ready()));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::timeout(Duration::from_secs(10), ready) => {}
        }
        if !gc.kinds.is_empty() {
            gc.sweep().await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // Let a burst of watch events settle: a sweep walks every cached object.
        tokio::time::sleep(SETTLE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: uid.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    #[test]
    fn dependents_go_only_when_no_owner_remains() {
        use OwnerState::*;
        assert_eq!(decide(&[], false, &[]), Decision::Keep);
        assert_eq!(decide(&[(r("a", true), Exists)], false, &[]), Decision::Keep);
        assert_eq!(
            decide(&[(r("a", true), Exists), (r("b", true), Absent)], false, &[]),
            Decision::RemoveReferences(vec!["b".into()])
        );
        assert_eq!(
            decide(&[(r("b", true), Absent)], false, &[]),
            Decision::Delete(PropagationPolicy::Background)
        );
    }

    #[test]
    fn foreground_owners_propagate_foreground_to_dependents_with_dependents() {
        use OwnerState::*;
        assert_eq!(
            decide(&[(r("d", true), WaitingForDependents)], true, &[]),
            Decision::Delete(PropagationPolicy::Foreground)
        );
        assert_eq!(
            decide(&[(r("d", true), WaitingForDependents)], false, &[]),
            Decision::Delete(PropagationPolicy::Background)
        );
        assert_eq!(
            decide(&[(r("d", true), Absent)], true, &["orphan".into()]),
            Decision::Delete(PropagationPolicy::Orphan)
        );
    }
}
