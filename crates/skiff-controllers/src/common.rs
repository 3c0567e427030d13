//! Helpers shared by the controllers: controller references, pod readiness and
//! availability, and event recording.

use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use skiff_api::events::{Aggregator, EventType, Recording, new_event};

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller owner reference to an object (`controller` and `blockOwnerDeletion` set).
pub fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the pod is being deleted or has finished (upstream `IsPodActive` negated).
pub fn is_inactive(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
        || matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The time the pod's Ready condition became True, if it is Ready.
pub fn ready_since(p: &Pod) -> Option<jiff::Timestamp> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| {
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now)
    })
}

/// Ready for at least `min_ready_seconds` (upstream `IsPodAvailable`).
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    ready_since(p)
        .is_some_and(|t| min_ready_seconds <= 0 || t.as_second() + min_ready_seconds as i64 <= now.as_second())
}

/// An object reference for events.
pub fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

/// Repeats of an event folded into one (shared by all controllers of the process).
static EVENTS: std::sync::LazyLock<std::sync::Mutex<Aggregator>> = std::sync::LazyLock::new(Default::default);

/// Records a core/v1 Event about `involved` from `component` (its
/// `source.component`). A repeat of the same event (object, type, reason,
/// message) within client-go's 10-minute window bumps `count` and
/// `lastTimestamp` of the first instead of creating another. Failures are logged,
/// never fatal (as client-go's recorder).
pub async fn record(
    client: &kube::Client,
    involved: ObjectReference,
    ty: EventType,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = involved.namespace.clone().unwrap_or_else(|| "default".into());
    let now = jiff::Timestamp::now();
    let ev: Event = new_event(&involved, ty, reason, message, component, None, now);
    let recording = EVENTS.lock().expect("event aggregator").observe(ev, now);
    match recording {
        Recording::Create(ev) => {
            if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &ev)
                .await
            {
                tracing::debug!(error = %e, "recording event failed");
                let name = ev.metadata.name.clone().unwrap_or_default();
                EVENTS.lock().expect("event aggregator").forget(&ns, &name);
            }
        }
        Recording::Bump {
            namespace,
            name,
            count,
            last,
        } => {
            let patch = serde_json::json!({"count": count, "lastTimestamp": Time(last)});
            if let Err(e) = Api::<Event>::namespaced(client.clone(), &namespace)
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::debug!(error = %e, "updating event failed");
                EVENTS.lock().expect("event aggregator").forget(&namespace, &name);
            }
        }
    }
}

/// A label selector string (`a=b,c=d`) from `matchLabels` and `matchExpressions`.
pub fn selector_string(sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let vals = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({vals})", e.key),
            "NotIn" => format!("{} notin ({vals})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Sets (`owner: Some`) or removes (`None`) the controller reference of `owner_uid`
/// on a pod, keeping its other owner references (upstream adoption and release in
/// `PodControllerRefManager`). The patch carries the pod's uid as a precondition,
/// so a pod recreated under the same name is never touched.
pub async fn set_controller_ref(
    client: &kube::Client,
    pod: &Pod,
    owner_uid: &str,
    owner: Option<OwnerReference>,
) -> Result<Pod, kube::Error> {
    let mut refs: Vec<OwnerReference> = pod
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.uid != owner_uid)
        .collect();
    refs.extend(owner);
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    Api::<Pod>::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default())
        .patch(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
}

/// Whether an API error is a 404 NotFound.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletes `pod` only while it is still the object with its uid (a DeleteOptions
/// precondition), so a same-named replacement created meanwhile is never removed,
/// as upstream's controllers delete pods.
pub async fn delete_pod(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
        .map(|_| ())
}

/// Whether an API error is a 409 Conflict (stale resourceVersion or AlreadyExists).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Whether the pod has a condition `type_` with status True.
pub fn has_true_condition(p: &Pod, type_: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether a reflector store has seen its first full list (without waiting for it).
pub fn synced<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}

/// Drops `managedFields`, which no controller reads, from an object before it is cached.
pub fn strip_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// What a pod-owning controller hands to [`run_controller`]: its reconcile
/// context, the cache of its own kind `K` (with the writer that fills it), the
/// reconcile requests its pod (or node) handlers queue, and the signal that the
/// pods it reads are completely listed.
pub struct ControllerParts<K, C>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The reconciler's context.
    pub ctx: std::sync::Arc<C>,
    /// The cache of `K` the reconciler reads; [`run_controller`] fills it.
    pub store: kube::runtime::reflector::Store<K>,
    /// The writer of `store`.
    pub writer: kube::runtime::reflector::store::Writer<K>,
    /// Further reconcile requests (from pod or node changes).
    pub triggers: futures::channel::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<K>>,
    /// Fires once the pods the controller reads are completely listed (see
    /// [`crate::pod_cache::PodInformer::subscribe`]); nothing is reconciled before,
    /// since acting on a partial view would, say, create pods that already exist.
    pub pods_ready: tokio::sync::oneshot::Receiver<()>,
}

/// Runs a controller of kind `K` until `shutdown`: waits for `pods_ready`, then
/// watches every `K` into `store`, and reconciles each object on its own changes
/// and on every request from `triggers` (one reconcile of an object at a time,
/// retries as `error_policy` says), as upstream's controllers run a work queue fed by
/// their informers' handlers. `on_delete` runs for each deleted `K` (to forget its
/// expectations). Returns when `shutdown` is cancelled, or at once if the pods
/// never sync because the informer stopped.
pub async fn run_controller<K, C, F>(
    api: Api<K>,
    parts: ControllerParts<K, C>,
    mut on_delete: impl FnMut(&K) + Send + 'static,
    mut reconcile: impl FnMut(std::sync::Arc<K>, std::sync::Arc<C>) -> F,
    error_policy: impl Fn(std::sync::Arc<K>, &crate::Error, std::sync::Arc<C>) -> kube::runtime::controller::Action,
    shutdown: tokio_util::sync::CancellationToken,
) where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    F: std::future::Future<Output = Result<kube::runtime::controller::Action, crate::Error>>,
{
    use futures::{StreamExt, TryStreamExt, stream};
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::{WatchStreamExt, watcher};

    let ControllerParts {
        ctx,
        store,
        writer,
        triggers,
        pods_ready,
    } = parts;
    tokio::select! {
        _ = shutdown.cancelled() => return,
        r = pods_ready => if r.is_err() { return },
    }
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .map_ok(move |event| {
            let refs: Vec<ObjectRef<K>> = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![ObjectRef::from_obj(&o)],
                watcher::Event::Delete(o) => {
                    on_delete(&o);
                    Vec::new()
                }
                watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
            };
            stream::iter(refs.into_iter().map(Ok::<_, watcher::Error>))
        })
        .try_flatten();
    let queue = stream::select(events, triggers.map(Ok::<_, watcher::Error>));
    let reconciler = move |o, c| Box::pin(reconcile(o, c));
    kube::runtime::controller::applier(
        reconciler,
        error_policy,
        ctx,
        store,
        queue,
        kube::runtime::controller::Config::default(),
    )
    .take_until(async move { shutdown.cancelled().await })
    .for_each(|_| async {})
    .await;
}
