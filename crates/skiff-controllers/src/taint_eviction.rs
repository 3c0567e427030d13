//! Taint-based eviction (upstream pkg/controller/tainteviction, the "taint manager"):
//! pods bound to a node with `NoExecute` taints are deleted when they do not tolerate
//! one of them, at once, or when the shortest `tolerationSeconds` of the tolerations
//! they use has passed since the taint was added. A toleration without
//! `tolerationSeconds` tolerates the taint forever. This is what moves pods off a node
//! whose kubelet went silent: the node lifecycle controller adds
//! `node.kubernetes.io/unreachable:NoExecute`, admission gave every pod a 300 s
//! toleration of it (DefaultTolerationSeconds), and after that the pods are deleted
//! so their controllers recreate them elsewhere.
//!
//! Before deleting, the pod gets the `DisruptionTarget` condition (reason
//! `DeletionByTaintManager`) and a `TaintManagerEviction` event, as upstream.
//!
//! Nodes come from a watch-fed cache; every 2 s each node that has `NoExecute` taints
//! has its pods listed (field selector `spec.nodeName`), so a cluster without such
//! taints costs no requests. A taint's start is its `timeAdded`, or, without one, when
//! this controller first saw it.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

use crate::scheduling::tolerates;

/// How often tainted nodes are examined.
const PERIOD: Duration = Duration::from_secs(2);
/// `source.component` of the events.
const COMPONENT: &str = "taint-eviction-controller";

/// What to do with one pod on a node with `NoExecute` taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A `NoExecute` taint is not tolerated, or a toleration's time has run out.
    EvictNow,
    /// Every taint is tolerated until this time (seconds since the epoch).
    EvictAt(i64),
    /// Every taint is tolerated forever.
    Keep,
}

/// The decision for a pod with `tolerations` on a node with `taints` (only the
/// `NoExecute` ones matter), at `now` (seconds since the epoch). `started` gives each
/// taint's start (its `timeAdded`, or when it was first seen). For each taint, the
/// pod's deadline is its start plus the smallest `tolerationSeconds` among the
/// tolerations matching it (negative counts as 0, none as forever); the pod goes at
/// the earliest deadline.
pub fn decide(tolerations: &[Toleration], taints: &[Taint], started: impl Fn(&Taint) -> i64, now: i64) -> Decision {
    let mut deadline: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Decision::EvictNow;
        }
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let at = started(taint) + seconds.max(0);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        None => Decision::Keep,
        Some(at) if at <= now => Decision::EvictNow,
        Some(at) => Decision::EvictAt(at),
    }
}

/// Identity of a taint on a node, for remembering when a taint without `timeAdded`
/// was first seen.
type TaintId = (String, String, String, String);

fn taint_id(node: &str, t: &Taint) -> TaintId {
    (
        node.to_string(),
        t.key.clone(),
        t.value.clone().unwrap_or_default(),
        t.effect.clone(),
    )
}

/// Controller state kept between passes.
#[derive(Default)]
struct Seen {
    first_seen: HashMap<TaintId, i64>,
}

/// One pass over the cached nodes that carry `NoExecute` taints.
async fn pass(client: &kube::Client, nodes: &Store<Node>, seen: &mut Seen) {
    let now = jiff::Timestamp::now().as_second();
    let mut live: HashMap<TaintId, i64> = HashMap::new();
    for node in nodes.state() {
        let name = node.metadata.name.clone().unwrap_or_default();
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if taints.is_empty() {
            continue;
        }
        for t in &taints {
            let id = taint_id(&name, t);
            let first = seen.first_seen.get(&id).copied().unwrap_or(now);
            live.insert(id, first);
        }
        let started = |t: &Taint| {
            t.time_added
                .as_ref()
                .map(|a| a.0.as_second())
                .or_else(|| live.get(&taint_id(&name, t)).copied())
                .unwrap_or(now)
        };
        let pods: Api<Pod> = Api::all(client.clone());
        let list = match pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "listing the pods of a tainted node failed");
                continue;
            }
        };
        for pod in list.items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            if decide(&tolerations, &taints, started, now) == Decision::EvictNow {
                evict(client, &pod).await;
            }
        }
    }
    // Forget taints that are gone, so a taint added again starts afresh.
    seen.first_seen = live;
}

/// Marks the pod with the `DisruptionTarget` condition, records the event and deletes
/// it (with its own grace period). Failures are logged; the next pass retries.
async fn evict(client: &kube::Client, pod: &Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    tracing::info!(pod = %format!("{ns}/{name}"), "deleting pod: NoExecute taint not tolerated (any longer)");
    let condition = json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": skiff_api::events::now_string(),
    }]}});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition))
        .await
    {
        tracing::debug!(pod = %name, error = %e, "setting DisruptionTarget failed");
    }
    crate::common::record(
        client,
        pod.object_ref(&()),
        EventType::Normal,
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/{name}"),
        COMPONENT,
    )
    .await;
    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
        match e {
            kube::Error::Api(s) if s.code == 404 => {}
            e => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "taint eviction failed; retrying"),
        }
    }
}

/// Runs the taint eviction controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let (nodes, writer) = reflector::store::<Node>();
    let mut events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(crate::common::strip_managed_fields)
        .reflect(writer)
        .boxed();
    let mut seen = Seen::default();
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => match event {
                Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                Some(Ok(_)) => {}
                None => return,
            },
            _ = ticker.tick() => {
                if crate::common::synced(&nodes) {
                    pass(&client, &nodes, &mut seen).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|s| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::from_second(s).unwrap())
            }),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn started(t: &Taint) -> i64 {
        t.time_added.as_ref().map(|a| a.0.as_second()).unwrap_or(0)
    }

    #[test]
    fn untolerated_taints_evict_at_once_and_tolerations_delay_or_prevent_it() {
        let unreachable = taint("node.kubernetes.io/unreachable", "NoExecute", Some(1_000));
        let schedule_only = taint("dedicated", "NoSchedule", None);
        // NoSchedule taints never evict.
        assert_eq!(
            decide(&[], std::slice::from_ref(&schedule_only), started, 5_000),
            Decision::Keep
        );
        // Not tolerated: now.
        assert_eq!(
            decide(&[], std::slice::from_ref(&unreachable), started, 1_000),
            Decision::EvictNow
        );
        // The default 300 s toleration: at timeAdded + 300.
        let default = [toleration("node.kubernetes.io/unreachable", Some(300))];
        assert_eq!(
            decide(&default, std::slice::from_ref(&unreachable), started, 1_100),
            Decision::EvictAt(1_300)
        );
        assert_eq!(
            decide(&default, std::slice::from_ref(&unreachable), started, 1_300),
            Decision::EvictNow
        );
        // Forever (a DaemonSet's toleration): never.
        let forever = [toleration("node.kubernetes.io/unreachable", None)];
        assert_eq!(
            decide(&forever, std::slice::from_ref(&unreachable), started, 99_999),
            Decision::Keep
        );
        // Of two matching tolerations the shorter wins; negative seconds mean at once.
        let both = [
            toleration("node.kubernetes.io/unreachable", None),
            toleration("", Some(60)),
        ];
        assert_eq!(
            decide(&both, std::slice::from_ref(&unreachable), started, 1_000),
            Decision::EvictAt(1_060)
        );
        let negative = [toleration("node.kubernetes.io/unreachable", Some(-5))];
        assert_eq!(
            decide(&negative, std::slice::from_ref(&unreachable), started, 1_000),
            Decision::EvictNow
        );
        // Two taints: one untolerated is enough.
        let not_ready = taint("node.kubernetes.io/not-ready", "NoExecute", Some(1_000));
        assert_eq!(
            decide(&default, &[unreachable.clone(), not_ready], started, 1_000),
            Decision::EvictNow
        );
        // The earliest deadline across taints.
        let late = taint("maintenance", "NoExecute", Some(2_000));
        let tol = [
            toleration("node.kubernetes.io/unreachable", Some(300)),
            toleration("maintenance", Some(10)),
        ];
        assert_eq!(
            decide(&tol, &[unreachable, late], started, 1_000),
            Decision::EvictAt(1_300)
        );
    }
}
