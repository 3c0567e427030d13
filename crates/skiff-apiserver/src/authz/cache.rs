//! An in-memory copy of the RBAC objects, kept current by watching the store, so
//! authorizing a request never reads the store (upstream's authorizer reads the
//! same objects through informers).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use skiff_api::registry;
use skiff_store::{EventKind, KeyValue, ListOptions, Revision, Store};
use tokio_util::sync::CancellationToken;

use super::rbac::Policy;

/// How long to wait before re-listing after the watch failed.
const RETRY: Duration = Duration::from_secs(1);

/// The four RBAC kinds, by storage key prefix.
#[derive(Default)]
struct Objects {
    roles: BTreeMap<String, Role>,
    cluster_roles: BTreeMap<String, ClusterRole>,
    role_bindings: BTreeMap<String, RoleBinding>,
    cluster_role_bindings: BTreeMap<String, ClusterRoleBinding>,
}

/// Storage prefixes of Roles, ClusterRoles, RoleBindings and ClusterRoleBindings.
fn prefixes() -> [String; 4] {
    ["roles", "clusterroles", "rolebindings", "clusterrolebindings"].map(|plural| {
        registry::lookup("rbac.authorization.k8s.io", "v1", plural)
            .expect("RBAC resources are served")
            .key_prefix()
    })
}

fn put<T: serde::de::DeserializeOwned>(map: &mut BTreeMap<String, T>, kv: &KeyValue) {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => {
            map.insert(kv.key.clone(), v);
        }
        Err(e) => tracing::warn!(key = %kv.key, error = %e, "ignoring an RBAC object that does not parse"),
    }
}

impl Objects {
    fn apply(&mut self, kv: &KeyValue, deleted: bool) {
        let [roles, cluster_roles, role_bindings, cluster_role_bindings] = prefixes();
        macro_rules! route {
            ($map:expr) => {
                if deleted {
                    $map.remove(&kv.key);
                } else {
                    put(&mut $map, kv);
                }
            };
        }
        if kv.key.starts_with(&roles) {
            route!(self.roles)
        } else if kv.key.starts_with(&cluster_roles) {
            route!(self.cluster_roles)
        } else if kv.key.starts_with(&role_bindings) {
            route!(self.role_bindings)
        } else if kv.key.starts_with(&cluster_role_bindings) {
            route!(self.cluster_role_bindings)
        }
    }

    fn compile(&self) -> Policy {
        Policy::new(
            self.roles.values().cloned().collect(),
            self.cluster_roles.values().cloned().collect(),
            self.role_bindings.values().cloned().collect(),
            self.cluster_role_bindings.values().cloned().collect(),
        )
    }
}

/// The current RBAC [`Policy`], cheap to clone and to read from request handlers.
#[derive(Clone)]
pub struct PolicyCache {
    current: Arc<RwLock<Arc<Policy>>>,
}

impl PolicyCache {
    /// Loads the RBAC objects from the store and keeps them current in a background
    /// task (a watch per kind, re-listing after a watch failure) until `shutdown`.
    /// Errors only if the initial list fails.
    pub async fn start(store: Arc<dyn Store>, shutdown: CancellationToken) -> Result<Self, skiff_store::Error> {
        let (objects, revision) = load(store.as_ref()).await?;
        let cache = Self {
            current: Arc::new(RwLock::new(Arc::new(objects.compile()))),
        };
        let task_cache = cache.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = task_cache.follow(store, objects, revision) => {}
            }
        });
        Ok(cache)
    }

    /// The policy as of the latest change seen.
    pub fn snapshot(&self) -> Arc<Policy> {
        self.current.read().expect("policy lock poisoned").clone()
    }

    fn set(&self, objects: &Objects) {
        *self.current.write().expect("policy lock poisoned") = Arc::new(objects.compile());
    }

    /// Applies watch events forever, re-listing when a watch ends.
    async fn follow(&self, store: Arc<dyn Store>, mut objects: Objects, mut revision: Revision) {
        loop {
            if let Err(e) = self.watch(store.as_ref(), &mut objects, &mut revision).await {
                tracing::warn!(error = %e, "watching RBAC objects failed; re-listing");
            }
            tokio::time::sleep(RETRY).await;
            match load(store.as_ref()).await {
                Ok((o, r)) => {
                    objects = o;
                    revision = r;
                    self.set(&objects);
                }
                Err(e) => tracing::warn!(error = %e, "listing RBAC objects failed"),
            }
        }
    }

    async fn watch(
        &self,
        store: &dyn Store,
        objects: &mut Objects,
        revision: &mut Revision,
    ) -> Result<(), skiff_store::Error> {
        let mut streams = Vec::new();
        for p in prefixes() {
            streams.push(store.watch(&p, *revision).await?);
        }
        let mut events = futures::stream::select_all(streams);
        while let Some(first) = events.next().await {
            // Apply everything already delivered before recompiling once.
            let mut next = Some(first);
            while let Some(ev) = next {
                let ev = ev?;
                *revision = (*revision).max(ev.revision());
                objects.apply(&ev.kv, ev.kind == EventKind::Deleted);
                next = events.next().now_or_never().flatten();
            }
            self.set(objects);
        }
        Ok(())
    }
}

/// Lists the four kinds at one revision.
async fn load(store: &dyn Store) -> Result<(Objects, Revision), skiff_store::Error> {
    let mut objects = Objects::default();
    let mut revision = None;
    for p in prefixes() {
        let list = store
            .list(
                &p,
                ListOptions {
                    revision,
                    ..ListOptions::default()
                },
            )
            .await?;
        revision = Some(list.revision);
        for kv in &list.items {
            objects.apply(kv, false);
        }
    }
    Ok((objects, revision.unwrap_or_default()))
}
