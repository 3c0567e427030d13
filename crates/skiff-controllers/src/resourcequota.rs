//! The ResourceQuota controller (upstream `pkg/controller/resourcequota`): keeps
//! every quota's `status.hard` equal to its `spec.hard` and its `status.used`
//! equal to what the objects in its namespace actually use (computed by
//! [`skiff_api::quota`], the same evaluators admission charges with).
//!
//! A namespace's quotas are recalculated when a quota is created or its
//! `spec.hard` changes (or its `status.used` is missing), when a tracked object
//! is deleted, when a pod stops counting (it finished, or its deletion grace ran
//! out), when a Service changes type or ports or a claim's storage changes, and
//! for every namespace with quotas each [`FULL_RESYNC`] (upstream's
//! `--resource-quota-sync-period`), which also corrects charges admission made
//! for writes that then failed. Status is written with the quota's
//! resourceVersion; a conflict recalculates.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service,
};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use skiff_api::quota::{self, Evaluator, ResourceList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// How often every quota is recalculated from scratch (upstream default 5 minutes).
pub const FULL_RESYNC: Duration = Duration::from_secs(5 * 60);

/// A de-duplicating queue of namespaces to recalculate.
#[derive(Default)]
struct Queue {
    pending: Mutex<BTreeSet<String>>,
    notify: Notify,
}

impl Queue {
    fn add(&self, ns: &str) {
        if self.pending.lock().expect("queue").insert(ns.to_string()) {
            self.notify.notify_one();
        }
    }

    fn pop(&self) -> Option<String> {
        self.pending.lock().expect("queue").pop_first()
    }
}

/// Shared state: the queue and which namespaces have quotas (by quota name).
#[derive(Default)]
struct State {
    queue: Queue,
    quotas: Mutex<HashMap<String, HashSet<String>>>,
}

impl State {
    /// Queues `ns` if it has quotas.
    fn touch(&self, ns: &str) {
        if self
            .quotas
            .lock()
            .expect("quotas")
            .get(ns)
            .is_some_and(|q| !q.is_empty())
        {
            self.queue.add(ns);
        }
    }
}

/// Whether a quota needs its status (re)computed right away: its `status.hard`
/// differs from `spec.hard`, or it has no `status.used` yet (upstream's
/// `updateQuota` filter and first sync).
pub fn needs_sync(q: &ResourceQuota) -> bool {
    let spec_hard = q.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
    let status = q.status.as_ref();
    let hard_json = |h: &std::collections::BTreeMap<String, _>| serde_json::to_value(h).ok();
    let status_hard = status.and_then(|s| s.hard.clone()).unwrap_or_default();
    quota::to_json(&quota::parse_list(hard_json(&spec_hard).as_ref()))
        != quota::to_json(&quota::parse_list(hard_json(&status_hard).as_ref()))
        || status.and_then(|s| s.used.as_ref()).is_none()
}

/// The (group, plural) resources whose objects a quota limiting `names` counts.
pub fn tracked_resources<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for n in names {
        for (g, p) in [("", "pods"), ("", "services"), ("", "persistentvolumeclaims")] {
            if Evaluator::for_resource(g, p).matching_resources([n]).len() == 1 {
                out.insert((g.to_string(), p.to_string()));
            }
        }
        if let Some(gr) = n.strip_prefix("count/") {
            let (plural, group) = gr.split_once('.').unwrap_or((gr, ""));
            out.insert((group.to_string(), plural.to_string()));
        } else if ["configmaps", "secrets", "replicationcontrollers", "resourcequotas"].contains(&n.as_str()) {
            out.insert((String::new(), n.clone()));
        }
    }
    out
}

/// New `status.used` for a quota: for each resource of `hard` some evaluator
/// counts, the summed usage of the `objects` (per tracked resource) its scopes
/// select; other resources keep their `previous` figure (upstream
/// `syncResourceQuota` + `CalculateUsage`).
pub fn calculate_used(
    quota_obj: &Value,
    hard: &ResourceList,
    previous: &ResourceList,
    objects: &[((String, String), Vec<Value>)],
    now: jiff::Timestamp,
) -> Result<ResourceList, String> {
    let mut used = quota::mask(previous, hard.keys());
    for ((group, plural), items) in objects {
        let evaluator = Evaluator::for_resource(group, plural);
        let names = evaluator.matching_resources(hard.keys());
        if names.is_empty() {
            continue;
        }
        let mut sum: ResourceList = names.iter().map(|n| (n.clone(), quota::Quantity::ZERO)).collect();
        for obj in items {
            if evaluator.matches_scopes(quota_obj, obj)? {
                sum = quota::add(&sum, &quota::mask(&evaluator.usage(obj, now), &names));
            }
        }
        used.extend(sum);
    }
    Ok(used)
}

async fn api_resource(client: &kube::Client, group: &str, plural: &str) -> Result<Option<ApiResource>, Error> {
    if group.is_empty() {
        return Ok(skiff_api::registry::all()
            .into_iter()
            .find(|r| r.group.is_empty() && r.plural == plural)
            .map(|r| ApiResource {
                group: String::new(),
                version: r.version.to_string(),
                api_version: r.api_version(),
                kind: r.kind.to_string(),
                plural: plural.to_string(),
            }));
    }
    match kube::discovery::group(client, group).await {
        Ok(g) => Ok(g
            .recommended_resources()
            .into_iter()
            .find(|(ar, _)| ar.plural == plural)
            .map(|(ar, _)| ar)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Recalculates every quota of `ns`; `Ok(true)` when a write conflicted and the
/// namespace should be synced again.
async fn sync_namespace(client: &kube::Client, ns: &str) -> Result<bool, Error> {
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let quotas = api.list(&ListParams::default()).await?.items;
    let mut tracked = BTreeSet::new();
    for q in &quotas {
        let hard = q.spec.as_ref().and_then(|s| s.hard.as_ref());
        tracked.extend(tracked_resources(hard.into_iter().flat_map(|h| h.keys())));
    }
    let mut objects = Vec::new();
    for (group, plural) in tracked {
        let Some(ar) = api_resource(client, &group, &plural).await? else {
            objects.push(((group, plural), Vec::new()));
            continue;
        };
        let list = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .list(&ListParams::default())
            .await?;
        let items = list
            .items
            .into_iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?;
        objects.push(((group, plural), items));
    }
    let now = jiff::Timestamp::now();
    let mut again = false;
    for q in quotas {
        let name = q.metadata.name.clone().unwrap_or_default();
        let value = serde_json::to_value(&q)?;
        let hard = quota::parse_list(value.pointer("/spec/hard"));
        let previous = quota::parse_list(value.pointer("/status/used"));
        let used = calculate_used(&value, &hard, &previous, &objects, now).map_err(Error::Invalid)?;
        let status_hard = quota::parse_list(value.pointer("/status/hard"));
        let unchanged = value.pointer("/status/used").is_some()
            && quota::to_json(&status_hard) == quota::to_json(&hard)
            && quota::to_json(&previous) == quota::to_json(&used);
        if unchanged {
            continue;
        }
        let mut next = value;
        quota::set_status(&mut next, &hard, &used);
        let next: ResourceQuota = serde_json::from_value(next)?;
        match api.replace_status(&name, &PostParams::default(), &next).await {
            Ok(_) => tracing::debug!(namespace = ns, quota = %name, "updated quota usage"),
            Err(e) if crate::common::is_conflict(&e) => again = true,
            Err(e) if crate::common::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(again)
}

/// [`quota::pod_counts`] for a typed pod (watch events are not serialized again).
pub fn pod_counts(p: &Pod, now: jiff::Timestamp) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    match (&p.metadata.deletion_timestamp, p.metadata.deletion_grace_period_seconds) {
        (Some(t), Some(g)) => {
            t.0.checked_add(jiff::SignedDuration::from_secs(g))
                .map(|end| now <= end)
                .unwrap_or(true)
        }
        _ => true,
    }
}

/// Watches objects of kind `K` in all namespaces and queues a namespace when
/// `changed` says an event there may lower usage.
async fn watch_kind<K>(
    client: kube::Client,
    state: Arc<State>,
    shutdown: CancellationToken,
    mut changed: impl FnMut(&watcher::Event<K>) -> Option<String> + Send,
) where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = stream.next() => match e {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "resource quota watch failed; retrying");
                    continue;
                }
                None => return,
            },
        };
        if let Some(ns) = changed(&event) {
            state.touch(&ns);
        }
    }
}

fn deleted_ns<K: kube::Resource>(e: &watcher::Event<K>) -> Option<String> {
    match e {
        watcher::Event::Delete(o) => o.meta().namespace.clone(),
        _ => None,
    }
}

/// Queues the namespace on deletes and when `key` (what the object is charged
/// for) changes from the last one seen for the object's uid.
fn keyed<K: kube::Resource>(
    mut key: impl FnMut(&K) -> String + Send,
) -> impl FnMut(&watcher::Event<K>) -> Option<String> + Send {
    let mut seen: HashMap<String, String> = HashMap::new();
    move |e| {
        let (obj, deleted) = match e {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (o, false),
            watcher::Event::Delete(o) => (o, true),
            _ => return None,
        };
        let uid = obj.meta().uid.clone().unwrap_or_default();
        let ns = obj.meta().namespace.clone();
        if deleted {
            seen.remove(&uid);
            return ns;
        }
        let k = key(obj);
        // The first sight of an object (created, or listed at start) changes
        // nothing: it was charged on create or is counted by the first sync.
        let before = seen.insert(uid, k.clone());
        before.is_some_and(|b| b != k).then_some(ns).flatten()
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let state = Arc::new(State::default());
    // A pod that stops counting (finished, or past its deletion grace) is an update.
    let pods = watch_kind::<Pod>(
        client.clone(),
        state.clone(),
        shutdown.clone(),
        keyed(|p: &Pod| pod_counts(p, jiff::Timestamp::now()).to_string()),
    );
    let services = watch_kind::<Service>(
        client.clone(),
        state.clone(),
        shutdown.clone(),
        keyed(|s: &Service| {
            let spec = s.spec.as_ref();
            format!(
                "{:?}/{}",
                spec.and_then(|s| s.type_.clone()),
                spec.and_then(|s| s.ports.as_ref()).map_or(0, Vec::len)
            )
        }),
    );
    let claims = watch_kind::<PersistentVolumeClaim>(
        client.clone(),
        state.clone(),
        shutdown.clone(),
        keyed(|c: &PersistentVolumeClaim| {
            let v = serde_json::to_value(c).unwrap_or_default();
            quota::to_json(&Evaluator::PersistentVolumeClaim.usage(&v, jiff::Timestamp::now())).to_string()
        }),
    );
    let others = {
        let (c, s, t) = (client.clone(), state.clone(), shutdown.clone());
        async move {
            tokio::join!(
                watch_kind::<ConfigMap>(c.clone(), s.clone(), t.clone(), deleted_ns),
                watch_kind::<Secret>(c.clone(), s.clone(), t.clone(), deleted_ns),
                watch_kind::<ReplicationController>(c.clone(), s.clone(), t.clone(), deleted_ns),
                watch_kind::<Deployment>(c.clone(), s.clone(), t.clone(), deleted_ns),
                watch_kind::<ReplicaSet>(c.clone(), s.clone(), t.clone(), deleted_ns),
                watch_kind::<StatefulSet>(c.clone(), s.clone(), t.clone(), deleted_ns),
                watch_kind::<DaemonSet>(c.clone(), s.clone(), t.clone(), deleted_ns),
                watch_kind::<Job>(c.clone(), s.clone(), t.clone(), deleted_ns),
                watch_kind::<CronJob>(c, s, t, deleted_ns),
            );
        }
    };
    let quotas = {
        let state = state.clone();
        watch_kind::<ResourceQuota>(client.clone(), state.clone(), shutdown.clone(), move |e| {
            let (q, initial) = match e {
                watcher::Event::Apply(q) => (q, false),
                watcher::Event::InitApply(q) => (q, true),
                watcher::Event::Delete(q) => {
                    let ns = q.metadata.namespace.clone().unwrap_or_default();
                    let mut all = state.quotas.lock().expect("quotas");
                    if let Some(names) = all.get_mut(&ns) {
                        names.remove(q.metadata.name.as_deref().unwrap_or_default());
                    }
                    // Other quotas may count resourcequotas.
                    return Some(ns);
                }
                _ => return None,
            };
            let ns = q.metadata.namespace.clone().unwrap_or_default();
            let name = q.metadata.name.clone().unwrap_or_default();
            let added = state
                .quotas
                .lock()
                .expect("quotas")
                .entry(ns.clone())
                .or_default()
                .insert(name);
            (initial || added || needs_sync(q)).then_some(ns)
        })
    };
    let resync = {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(FULL_RESYNC) => {}
                }
                let namespaces: Vec<String> = state.quotas.lock().expect("quotas").keys().cloned().collect();
                for ns in namespaces {
                    state.touch(&ns);
                }
            }
        }
    };
    let worker = {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        async move {
            loop {
                let Some(ns) = state.queue.pop() else {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = state.queue.notify.notified() => continue,
                    }
                };
                match sync_namespace(&client, &ns).await {
                    Ok(false) => {}
                    Ok(true) => state.queue.add(&ns),
                    Err(e) => {
                        tracing::warn!(namespace = %ns, error = %e, "resource quota sync failed");
                        let state = state.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            state.queue.add(&ns);
                        });
                    }
                }
            }
        }
    };
    tokio::join!(pods, services, claims, others, quotas, resync, worker);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quotas_track_the_resources_their_hard_limits_name() {
        let names: Vec<String> = [
            "pods",
            "requests.cpu",
            "count/deployments.apps",
            "secrets",
            "services.nodeports",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got: Vec<(String, String)> = tracked_resources(&names).into_iter().collect();
        let want: Vec<(String, String)> = [("", "pods"), ("", "secrets"), ("", "services"), ("apps", "deployments")]
            .iter()
            .map(|(g, p)| (g.to_string(), p.to_string()))
            .collect();
        let mut want = want;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn finished_and_overdue_pods_stop_counting() {
        let now = jiff::Timestamp::now();
        let pod = |v: Value| -> Pod { serde_json::from_value(v).unwrap() };
        assert!(pod_counts(&pod(json!({"status": {"phase": "Running"}})), now));
        assert!(!pod_counts(&pod(json!({"status": {"phase": "Failed"}})), now));
        let deleting = |secs_ago: i64, grace: i64| {
            let t = now.checked_sub(jiff::SignedDuration::from_secs(secs_ago)).unwrap();
            pod(json!({"metadata": {"deletionTimestamp": t.to_string(), "deletionGracePeriodSeconds": grace}}))
        };
        assert!(pod_counts(&deleting(10, 30), now));
        assert!(!pod_counts(&deleting(60, 30), now));
    }

    #[test]
    fn usage_is_recalculated_from_the_objects() {
        let q = json!({"spec": {"hard": {"pods": "5", "requests.cpu": "2", "foo": "1"}},
                       "status": {"used": {"pods": "4", "foo": "1"}}});
        let hard = quota::parse_list(q.pointer("/spec/hard"));
        let previous = quota::parse_list(q.pointer("/status/used"));
        let pod = |phase: &str, cpu: &str| {
            json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": cpu}}}]},
                   "status": {"phase": phase}})
        };
        let objects = vec![(
            (String::new(), "pods".to_string()),
            vec![pod("Running", "500m"), pod("Succeeded", "1"), pod("Pending", "250m")],
        )];
        let used = calculate_used(&q, &hard, &previous, &objects, jiff::Timestamp::now()).unwrap();
        assert_eq!(
            quota::to_json(&used),
            json!({"foo": "1", "pods": "2", "requests.cpu": "750m"})
        );
        let empty = vec![((String::new(), "pods".to_string()), vec![])];
        let used = calculate_used(&q, &hard, &previous, &empty, jiff::Timestamp::now()).unwrap();
        assert_eq!(
            quota::to_json(&used),
            json!({"foo": "1", "pods": "0", "requests.cpu": "0"})
        );
    }
}
