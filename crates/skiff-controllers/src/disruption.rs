//! Disruption controller (upstream pkg/controller/disruption): keeps the `status`
//! of every PodDisruptionBudget current, so the Eviction API (`pods/eviction`)
//! can tell whether one more voluntary disruption is allowed.
//!
//! For each budget the controller selects the pods of its namespace matching
//! `spec.selector` (an empty selector selects every pod, a missing one none),
//! then computes, as upstream's `trySync` does:
//! - `expectedPods`: the number of selected pods when `minAvailable` is an
//!   integer; otherwise the sum of the `spec.replicas` of the pods' controllers
//!   (ReplicationController, Deployment through its ReplicaSet, ReplicaSet,
//!   StatefulSet, or any resource with a `scale` subresource). Pods without a
//!   controller are left out of that sum and reported by an `UnmanagedPods`
//!   event;
//! - `desiredHealthy`: `minAvailable` (a percentage of `expectedPods`, rounded
//!   up), or `expectedPods - maxUnavailable` (percentages rounded up), never
//!   below 0;
//! - `currentHealthy`: selected pods that are Ready, not being deleted and not
//!   listed in `disruptedPods` (evictions the API approved less than
//!   [`DELETION_TIMEOUT`] ago whose pods are not gone yet);
//! - `disruptionsAllowed`: `currentHealthy - desiredHealthy`, 0 when negative or
//!   when no pod is expected;
//! - `observedGeneration`, and the `DisruptionAllowed` condition: True with
//!   reason `SufficientPods` while disruptions are allowed, False with
//!   `InsufficientPods` otherwise.
//!
//! When the computation fails for any reason but a write conflict (no controller
//! found for a pod, an invalid percentage, an API error), the controller fails
//! safe: `disruptionsAllowed` becomes 0 and the condition False with reason
//! `SyncFailed` and the error as message (upstream `failSafe`). Status is written
//! with `PUT .../status` carrying the resourceVersion that was read, so a
//! concurrent eviction's decrement is never overwritten; a conflict is retried on
//! the fresh object.
//!
//! The controller also clears stale `DisruptionTarget` pod conditions: a pod the
//! Eviction API marked for disruption whose deletion never came (e.g. a delete
//! precondition failed) gets the condition set back to False after
//! [`STALE_POD_DISRUPTION_TIMEOUT`] (upstream `syncStalePodDisruption`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use skiff_api::events::EventType;
use skiff_api::selector::LabelSelector;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{
    ControllerParts, controller_of, has_true_condition, is_conflict, is_not_found, record, reference, run_controller,
};
use crate::pod_cache::{PodCache, PodChange, PodInformer};

/// `Ok(None)` for a 404, the object otherwise.
fn missing<T>(r: Result<T, kube::Error>) -> Result<Option<T>, SyncError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(SyncError::Kube(e)),
    }
}

/// Source component of the controller's events (upstream's disruption
/// controller records as `controllermanager`).
const COMPONENT: &str = "controllermanager";

/// How long an eviction approved by the API (an entry of
/// `status.disruptedPods`) keeps its pod out of `currentHealthy` while the pod is
/// not yet being deleted (upstream `DeletionTimeout`, 2 minutes).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// How long a pod may carry a True `DisruptionTarget` condition without being
/// deleted before the condition is cleared (upstream
/// `stalePodDisruptionTimeout`, 2 minutes).
pub const STALE_POD_DISRUPTION_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// Type of the budget's condition (upstream `policy.DisruptionAllowedCondition`).
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
/// Condition reason: the budget allows at least one disruption.
pub const SUFFICIENT_PODS: &str = "SufficientPods";
/// Condition reason: the budget allows no disruption.
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
/// Condition reason: the controller could not compute the status.
pub const SYNC_FAILED: &str = "SyncFailed";

/// Why a budget's status could not be computed; the message becomes the
/// `SyncFailed` condition's message, as upstream's error strings do.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// `minAvailable`/`maxUnavailable` is a string that is not a percentage
    /// (upstream `GetScaledValueFromIntOrPercent`).
    #[error("invalid type: string is not a percentage")]
    NotAPercentage,
    /// A percentage whose number does not parse.
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    InvalidPercentage(String),
    /// A selected pod's controller was not found, or it has no scale (e.g. a
    /// DaemonSet) while the budget needs the controllers' scale.
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    /// The budget's selector is not a valid label selector.
    #[error("invalid selector: {0}")]
    Selector(String),
    /// An API call failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Resolves an int-or-percent against `total` (upstream
/// `intstr.GetScaledValueFromIntOrPercent`): integers as they are, `"N%"` as
/// `N * total / 100`, rounded up when `round_up`.
///
/// # Errors
/// [`SyncError::NotAPercentage`] for a string without `%`,
/// [`SyncError::InvalidPercentage`] when the number does not parse.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, SyncError> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct = s.strip_suffix('%').ok_or(SyncError::NotAPercentage)?;
            let pct: i64 = pct.parse().map_err(|_| SyncError::InvalidPercentage(s.clone()))?;
            let num = pct * total as i64;
            Ok((if round_up {
                (num + 99).div_euclid(100)
            } else {
                num.div_euclid(100)
            }) as i32)
        }
    }
}

/// Whether the budget's arithmetic needs the scale of the pods' controllers:
/// `maxUnavailable` is set, or `minAvailable` is a percentage.
pub fn needs_controller_scale(spec: &PodDisruptionBudgetSpec) -> bool {
    spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)))
}

/// `(expectedPods, desiredHealthy)` for a budget selecting `selected` pods
/// whose controllers ask for `controller_scale` replicas in total (only read
/// when [`needs_controller_scale`]); upstream `getExpectedPodCount`. A budget
/// with neither field set expects and desires nothing.
///
/// # Errors
/// An invalid percentage ([`scaled_value`]).
pub fn expected_counts(
    spec: &PodDisruptionBudgetSpec,
    selected: i32,
    controller_scale: i32,
) -> Result<(i32, i32), SyncError> {
    if let Some(max_unavailable) = &spec.max_unavailable {
        let unavailable = scaled_value(max_unavailable, controller_scale, true)?;
        return Ok((controller_scale, (controller_scale - unavailable).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((selected, *n)),
        Some(pct @ IntOrString::String(_)) => Ok((controller_scale, scaled_value(pct, controller_scale, true)?)),
        None => Ok((0, 0)),
    }
}

/// The still-pending entries of `status.disruptedPods` (upstream
/// `buildDisruptedPodMap`).
#[derive(Debug, Default, PartialEq)]
pub struct DisruptedPods {
    /// Entries whose pod exists, is not being deleted and was approved less than
    /// [`DELETION_TIMEOUT`] ago.
    pub pending: BTreeMap<String, Time>,
    /// When the earliest pending entry expires: the budget must be synced again then.
    pub recheck_at: Option<jiff::Timestamp>,
    /// Pods whose eviction was approved but which were not deleted in time
    /// (each gets a `NotDeleted` warning event).
    pub not_deleted: Vec<String>,
}

/// Filters the recorded `disruptedPods` against the selected pods at `now`:
/// entries of pods that are gone or being deleted are dropped, entries older than
/// [`DELETION_TIMEOUT`] are dropped and reported in `not_deleted`.
pub fn disrupted_pods(
    recorded: Option<&BTreeMap<String, Time>>,
    pods: &[Arc<Pod>],
    now: jiff::Timestamp,
) -> DisruptedPods {
    let mut out = DisruptedPods::default();
    let Some(recorded) = recorded else { return out };
    let timeout = jiff::SignedDuration::from_secs(DELETION_TIMEOUT.as_secs() as i64);
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(at) = recorded.get(&name) else { continue };
        let expected_deletion = at.0.saturating_add(timeout).unwrap_or(at.0);
        if expected_deletion < now {
            out.not_deleted.push(name);
        } else {
            if out.recheck_at.is_none_or(|r| expected_deletion < r) {
                out.recheck_at = Some(expected_deletion);
            }
            out.pending.insert(name, at.clone());
        }
    }
    out
}

/// Selected pods that count as healthy (upstream `countHealthyPods`): Ready, not
/// being deleted, and not awaiting an approved eviction in `disrupted`.
pub fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .filter(|p| has_true_condition(p, "Ready"))
        .count() as i32
}

/// Sets `new` in `conditions` as upstream `meta.SetStatusCondition` does: an
/// existing condition of the same type keeps its `lastTransitionTime` unless its
/// status changes; reason, message and observedGeneration are replaced.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) => {
            if c.status != new.status {
                c.status = new.status;
                c.last_transition_time = new.last_transition_time;
            }
            c.reason = new.reason;
            c.message = new.message;
            c.observed_generation = new.observed_generation;
        }
        None => conditions.push(new),
    }
}

fn now_time(now: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The `DisruptionAllowed` condition for a status (upstream
/// `UpdateDisruptionAllowedCondition`): True/`SufficientPods` when
/// `disruptionsAllowed > 0`, else False/`InsufficientPods`.
pub fn update_disruption_allowed_condition(status: &mut PodDisruptionBudgetStatus, now: jiff::Timestamp) {
    let allowed = status.disruptions_allowed > 0;
    let mut conditions = status.conditions.take().unwrap_or_default();
    set_condition(
        &mut conditions,
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: if allowed { "True" } else { "False" }.into(),
            reason: if allowed { SUFFICIENT_PODS } else { INSUFFICIENT_PODS }.into(),
            message: String::new(),
            observed_generation: status.observed_generation,
            last_transition_time: now_time(now),
        },
    );
    status.conditions = Some(conditions);
}

/// The status a budget should report (upstream `updatePdbStatus`), keeping the
/// transition times of unchanged conditions.
pub fn next_status(
    pdb: &PodDisruptionBudget,
    current_healthy: i32,
    desired_healthy: i32,
    expected_pods: i32,
    disrupted: BTreeMap<String, Time>,
    now: jiff::Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut allowed = current_healthy - desired_healthy;
    if expected_pods <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let mut status = PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy,
        expected_pods,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: pdb.metadata.generation,
        conditions: pdb.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    update_disruption_allowed_condition(&mut status, now);
    status
}

/// The fail-safe status after a failed sync (upstream `failSafe`): no disruption
/// allowed, condition False with reason `SyncFailed` and the error as message;
/// the other fields are kept.
pub fn fail_safe_status(pdb: &PodDisruptionBudget, error: &str, now: jiff::Timestamp) -> PodDisruptionBudgetStatus {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    let mut conditions = status.conditions.take().unwrap_or_default();
    set_condition(
        &mut conditions,
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: "False".into(),
            reason: SYNC_FAILED.into(),
            message: error.to_string(),
            observed_generation: status.observed_generation,
            last_transition_time: now_time(now),
        },
    );
    status.conditions = Some(conditions);
    status
}

/// When a pod's `DisruptionTarget` condition becomes stale (upstream
/// `nonTerminatingPodHasStaleDisruptionCondition`): `None` when the pod is being
/// deleted, is terminal, has no True condition, or the kubelet set it (reason
/// `TerminationByKubelet`); otherwise how long from `now` until it is stale
/// (zero when it already is).
pub fn stale_disruption_wait(pod: &Pod, now: jiff::Timestamp) -> Option<Duration> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let cond = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget")?;
    if cond.status != "True" || cond.reason.as_deref() == Some("TerminationByKubelet") {
        return None;
    }
    let since = cond.last_transition_time.as_ref().map(|t| t.0).unwrap_or(now);
    let elapsed = now.duration_since(since).as_secs().max(0) as u64;
    Some(STALE_POD_DISRUPTION_TIMEOUT.saturating_sub(Duration::from_secs(elapsed)))
}

/// Waits until the pod's `DisruptionTarget` condition is stale, then sets it to
/// False, if the pod (same uid) still has it then; the status patch carries the
/// resourceVersion read, so a pod that changed meanwhile is looked at again by
/// the watch instead.
async fn clear_stale_disruption(client: kube::Client, pod: Arc<Pod>, wait: Duration) {
    tokio::time::sleep(wait).await;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let Ok(Some(fresh)) = api.get_opt(&name).await else {
        return;
    };
    if fresh.metadata.uid != pod.metadata.uid
        || stale_disruption_wait(&fresh, jiff::Timestamp::now()) != Some(Duration::ZERO)
    {
        return;
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": fresh.metadata.resource_version},
        "status": {"conditions": [{"type": "DisruptionTarget", "status": "False",
            "lastTransitionTime": now_time(jiff::Timestamp::now())}]},
    });
    if let Err(e) = api
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(patch),
        )
        .await
    {
        tracing::debug!(error = %e, pod = %name, "clearing a stale DisruptionTarget condition failed");
    }
}

/// The budget's selector: `None` for a missing selector (selects nothing); an
/// empty one selects every pod of the namespace (policy/v1 semantics).
fn selector_of(pdb: &PodDisruptionBudget) -> Result<Option<LabelSelector>, SyncError> {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Ok(None);
    };
    let v = serde_json::to_value(sel).map_err(|e| SyncError::Selector(e.to_string()))?;
    LabelSelector::from_label_selector_json(&v)
        .map(Some)
        .map_err(|e| SyncError::Selector(e.to_string()))
}

/// Whether the budget selects `pod` (same namespace, matching selector).
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if pdb.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let empty = BTreeMap::new();
    match selector_of(pdb) {
        Ok(Some(sel)) => sel.matches(pod.metadata.labels.as_ref().unwrap_or(&empty)),
        _ => false,
    }
}

struct Ctx {
    client: kube::Client,
    pods: Arc<PodCache>,
}

impl Ctx {
    async fn event(&self, pdb: &PodDisruptionBudget, ty: EventType, reason: &str, message: &str) {
        record(
            &self.client,
            reference("policy/v1", "PodDisruptionBudget", &pdb.metadata),
            ty,
            reason,
            message,
            COMPONENT,
        )
        .await;
    }

    /// `(uid, replicas)` of the controller `owner` of a pod in `ns`, as upstream's
    /// finders: a ReplicationController, the Deployment of a ReplicaSet (or the
    /// ReplicaSet itself when it has none), a StatefulSet, else the `scale`
    /// subresource of whatever kind the reference names. `None` when the
    /// controller is gone, was replaced (another uid) or has no scale.
    async fn controller_scale(&self, ns: &str, owner: &OwnerReference) -> Result<Option<(String, i32)>, SyncError> {
        let group = owner.api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        let found = |uid: Option<&String>, replicas: Option<i32>| {
            (uid == Some(&owner.uid)).then(|| (owner.uid.clone(), replicas.unwrap_or(1)))
        };
        match (group, owner.kind.as_str()) {
            ("", "ReplicationController") => {
                let api: Api<ReplicationController> = Api::namespaced(self.client.clone(), ns);
                let rc = missing(api.get(&owner.name).await)?;
                Ok(rc.and_then(|rc| found(rc.metadata.uid.as_ref(), rc.spec.and_then(|s| s.replicas))))
            }
            ("apps", "ReplicaSet") => {
                let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
                let Some(rs) = missing(api.get(&owner.name).await)? else {
                    return Ok(None);
                };
                if rs.metadata.uid.as_ref() != Some(&owner.uid) {
                    return Ok(None);
                }
                if let Some(d) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment") {
                    let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
                    if let Some(dep) = missing(api.get(&d.name).await)?
                        && dep.metadata.uid.as_ref() == Some(&d.uid)
                    {
                        return Ok(Some((d.uid.clone(), dep.spec.and_then(|s| s.replicas).unwrap_or(1))));
                    }
                }
                Ok(found(rs.metadata.uid.as_ref(), rs.spec.and_then(|s| s.replicas)))
            }
            ("apps", "StatefulSet") => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
                let sts = missing(api.get(&owner.name).await)?;
                Ok(sts.and_then(|s| found(s.metadata.uid.as_ref(), s.spec.and_then(|s| s.replicas))))
            }
            _ => {
                let gvk = GroupVersionKind::from(owner.clone());
                let ar = match kube::discovery::pinned_kind(&self.client, &gvk).await {
                    Ok((ar, _)) => ar,
                    Err(e) if is_not_found(&e) || matches!(e, kube::Error::Discovery(_)) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
                match missing(api.get_scale(&owner.name).await)? {
                    Some(scale) => Ok(found(scale.metadata.uid.as_ref(), scale.spec.and_then(|s| s.replicas))),
                    None => Ok(None),
                }
            }
        }
    }

    /// Sum of the scales of the controllers of `pods` (each counted once) and the
    /// names of pods without a controller (upstream `getExpectedScale`).
    async fn expected_scale(&self, ns: &str, pods: &[Arc<Pod>]) -> Result<(i32, Vec<String>), SyncError> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        let mut unmanaged = Vec::new();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(owner) = controller_of(&pod.metadata) else {
                unmanaged.push(name);
                continue;
            };
            if scales.contains_key(&owner.uid) {
                continue;
            }
            match self.controller_scale(ns, owner).await? {
                Some((uid, replicas)) => {
                    // A Deployment's scale counts once whatever ReplicaSet a pod is in.
                    scales.insert(owner.uid.clone(), 0);
                    scales.insert(uid, replicas);
                }
                None => return Err(SyncError::NoController(name)),
            }
        }
        Ok((scales.values().sum(), unmanaged))
    }

    /// Upstream `trySync`: computes and writes the status; returns when the
    /// budget must be looked at again (an approved eviction expiring).
    async fn try_sync(&self, pdb: &PodDisruptionBudget, now: jiff::Timestamp) -> Result<Option<Duration>, SyncError> {
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        let spec = pdb.spec.clone().unwrap_or_default();
        let selector = selector_of(pdb)?;
        let empty = BTreeMap::new();
        let mut pods: Vec<Arc<Pod>> = match &selector {
            None => Vec::new(),
            Some(sel) => self
                .pods
                .in_namespace(&ns)
                .into_iter()
                .filter(|p| sel.matches(p.metadata.labels.as_ref().unwrap_or(&empty)))
                .collect(),
        };
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        if pods.is_empty() {
            self.event(pdb, EventType::Normal, "NoPods", "No matching pods found")
                .await;
        }
        let (scale, unmanaged) = if needs_controller_scale(&spec) {
            match self.expected_scale(&ns, &pods).await {
                Ok(v) => v,
                Err(e) => {
                    let msg = format!("Failed to calculate the number of expected pods: {e}");
                    self.event(pdb, EventType::Warning, "CalculateExpectedPodCountFailed", &msg)
                        .await;
                    return Err(e);
                }
            }
        } else {
            (0, Vec::new())
        };
        let (expected, desired) = expected_counts(&spec, pods.len() as i32, scale)?;
        if !unmanaged.is_empty() {
            let sel = spec
                .selector
                .as_ref()
                .map(crate::common::selector_string)
                .unwrap_or_default();
            let msg = format!(
                "Pods selected by this PodDisruptionBudget (selector: {sel}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value."
            );
            self.event(pdb, EventType::Warning, "UnmanagedPods", &msg).await;
        }
        let recorded = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref());
        let disrupted = disrupted_pods(recorded, &pods, now);
        for name in &disrupted.not_deleted {
            let pdb_ns = pdb.metadata.namespace.clone().unwrap_or_default();
            let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
            if let Some(pod) = pods.iter().find(|p| p.metadata.name.as_deref() == Some(name.as_str())) {
                record(
                    &self.client,
                    reference("v1", "Pod", &pod.metadata),
                    EventType::Warning,
                    "NotDeleted",
                    &format!("Pod was expected by PDB {pdb_ns}/{pdb_name} to be deleted but it wasn't"),
                    COMPONENT,
                )
                .await;
            }
        }
        let healthy = count_healthy(&pods, &disrupted.pending);
        let status = next_status(pdb, healthy, desired, expected, disrupted.pending, now);
        self.write_status(pdb, status).await?;
        Ok(disrupted
            .recheck_at
            .map(|at| Duration::from_secs(at.duration_since(now).as_secs().max(1) as u64)))
    }

    /// Writes `status` unless it is already the budget's, with the budget's
    /// resourceVersion as precondition.
    async fn write_status(
        &self,
        pdb: &PodDisruptionBudget,
        status: PodDisruptionBudgetStatus,
    ) -> Result<(), kube::Error> {
        if pdb.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut next = pdb.clone();
        next.status = Some(status);
        next.metadata.managed_fields = None;
        Api::<PodDisruptionBudget>::namespaced(
            self.client.clone(),
            pdb.metadata.namespace.as_deref().unwrap_or_default(),
        )
        .replace_status(
            pdb.metadata.name.as_deref().unwrap_or_default(),
            &PostParams::default(),
            &next,
        )
        .await
        .map(|_| ())
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = jiff::Timestamp::now();
    match ctx.try_sync(&pdb, now).await {
        Ok(Some(recheck)) => Ok(Action::requeue(recheck)),
        Ok(None) => Ok(Action::await_change()),
        Err(SyncError::Kube(e)) if is_conflict(&e) || is_not_found(&e) => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, pdb = ?pdb.metadata.name, "disruption budget sync failed; failing safe");
            let status = fail_safe_status(&pdb, &e.to_string(), now);
            ctx.write_status(&pdb, status).await?;
            // Not a hot loop: the budget is looked at again on any change of its
            // pods, and periodically in case the cause went away on its own.
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

fn error_policy(_pdb: Arc<PodDisruptionBudget>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(error = %e, "disruption budget sync will be retried");
    Action::requeue(Duration::from_secs(1))
}

/// Runs the disruption controller until `shutdown`: PodDisruptionBudgets are
/// reconciled on their own changes and on every change of a pod they select
/// (before and after the change, so a pod that stops matching is seen too),
/// from a watch-fed [`PodCache`] (a pod informer of its own); nothing is computed
/// before the first full list of pods.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let pods = PodInformer::start(client.clone(), shutdown.clone());
    run_with_pods(client, pods, shutdown).await
}

/// [`run`] reading pods from a shared [`PodInformer`] (the caller runs it).
pub async fn run_with_pods(client: kube::Client, pods: Arc<PodInformer>, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.cache(),
    });
    let (budgets, budget_writer) = reflector::store::<PodDisruptionBudget>();
    let (trigger_tx, triggers) = futures::channel::mpsc::unbounded::<ObjectRef<PodDisruptionBudget>>();
    let pods_ready = {
        let budgets = budgets.clone();
        let stale_client = client.clone();
        // Pods (uid) with a stale-condition check pending, so each gets one timer.
        let pending: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Default::default();
        pods.subscribe(move |change: PodChange| {
            let pods = match &change {
                PodChange::Added(p) | PodChange::Deleted(p) => vec![p.clone()],
                PodChange::Updated { old, new } => vec![old.clone(), new.clone()],
            };
            if let PodChange::Added(p) | PodChange::Updated { new: p, .. } = &change
                && let Some(wait) = stale_disruption_wait(p, jiff::Timestamp::now())
            {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if pending.lock().expect("pending checks").insert(uid.clone()) {
                    let (client, pod, pending) = (stale_client.clone(), p.clone(), pending.clone());
                    tokio::spawn(async move {
                        clear_stale_disruption(client, pod, wait).await;
                        pending.lock().expect("pending checks").remove(&uid);
                    });
                }
            }
            let mut refs: Vec<ObjectRef<PodDisruptionBudget>> = Vec::new();
            for b in budgets.state() {
                if pods.iter().any(|p| selects(&b, p)) {
                    refs.push(ObjectRef::from_obj(b.as_ref()));
                }
            }
            for r in refs {
                let _ = trigger_tx.unbounded_send(r);
            }
        })
    };
    let parts = ControllerParts {
        ctx,
        store: budgets,
        writer: budget_writer,
        triggers,
        pods_ready,
    };
    let api = Api::<PodDisruptionBudget>::all(client);
    run_controller(api, parts, |_| {}, reconcile, error_policy, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pdb(spec: serde_json::Value, status: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "generation": 2},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"},
                    "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z")},
                "status": {"phase": "Running", "conditions": [{"type": "Ready",
                    "status": if ready {"True"} else {"False"}}]},
            }))
            .unwrap(),
        )
    }

    fn spec(v: serde_json::Value) -> PodDisruptionBudgetSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn percentages_round_up_and_reject_garbage() {
        assert_eq!(scaled_value(&IntOrString::String("50%".into()), 3, true).unwrap(), 2);
        assert_eq!(scaled_value(&IntOrString::String("50%".into()), 3, false).unwrap(), 1);
        assert_eq!(scaled_value(&IntOrString::Int(4), 3, true).unwrap(), 4);
        assert_eq!(
            scaled_value(&IntOrString::String("half".into()), 3, true)
                .unwrap_err()
                .to_string(),
            "invalid type: string is not a percentage"
        );
        assert!(matches!(
            scaled_value(&IntOrString::String("x%".into()), 3, true),
            Err(SyncError::InvalidPercentage(_))
        ));
    }

    #[test]
    fn expected_and_desired_follow_upstream_arithmetic() {
        // minAvailable as an integer: expected = selected pods, no scale needed.
        let s = spec(json!({"minAvailable": 2}));
        assert!(!needs_controller_scale(&s));
        assert_eq!(expected_counts(&s, 3, 0).unwrap(), (3, 2));
        // minAvailable as a percentage of the controllers' scale, rounded up.
        let s = spec(json!({"minAvailable": "50%"}));
        assert!(needs_controller_scale(&s));
        assert_eq!(expected_counts(&s, 2, 5).unwrap(), (5, 3));
        // maxUnavailable: desired = scale - maxUnavailable (rounded up), never negative.
        let s = spec(json!({"maxUnavailable": 1}));
        assert_eq!(expected_counts(&s, 3, 4).unwrap(), (4, 3));
        let s = spec(json!({"maxUnavailable": "30%"}));
        assert_eq!(expected_counts(&s, 10, 10).unwrap(), (10, 7));
        let s = spec(json!({"maxUnavailable": 5}));
        assert_eq!(expected_counts(&s, 2, 2).unwrap(), (2, 0));
    }

    #[test]
    fn healthy_pods_exclude_unready_deleting_and_disrupted() {
        let pods = vec![
            pod("a", true, false),
            pod("b", false, false),
            pod("c", true, true),
            pod("d", true, false),
        ];
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let recorded: BTreeMap<String, Time> = [
            ("d".to_string(), Time("2026-01-01T00:00:30Z".parse().unwrap())),
            ("c".to_string(), Time("2026-01-01T00:00:30Z".parse().unwrap())),
            ("gone".to_string(), Time("2026-01-01T00:00:30Z".parse().unwrap())),
        ]
        .into();
        let d = disrupted_pods(Some(&recorded), &pods, now);
        assert_eq!(
            d.pending.keys().collect::<Vec<_>>(),
            vec!["d"],
            "deleting and gone pods drop out"
        );
        assert_eq!(d.recheck_at, Some("2026-01-01T00:02:30Z".parse().unwrap()));
        assert_eq!(count_healthy(&pods, &d.pending), 1, "only a is healthy");
        // After the deletion timeout the entry lapses and d counts again.
        let later: jiff::Timestamp = "2026-01-01T00:03:00Z".parse().unwrap();
        let d = disrupted_pods(Some(&recorded), &pods, later);
        assert!(d.pending.is_empty());
        assert_eq!(d.not_deleted, vec!["d"]);
        assert_eq!(count_healthy(&pods, &d.pending), 2);
    }

    #[test]
    fn status_allows_the_surplus_and_sets_the_condition() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let b = pdb(json!({"minAvailable": 1}), json!({}));
        let s = next_status(&b, 3, 1, 3, BTreeMap::new(), now);
        assert_eq!((s.disruptions_allowed, s.observed_generation), (2, Some(2)));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("DisruptionAllowed", "True", "SufficientPods")
        );
        // Fewer healthy than desired: nothing allowed, never negative.
        let s = next_status(&b, 0, 1, 3, BTreeMap::new(), now);
        assert_eq!(s.disruptions_allowed, 0);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "InsufficientPods"));
        // No expected pods: nothing allowed even with healthy pods.
        assert_eq!(next_status(&b, 2, 0, 0, BTreeMap::new(), now).disruptions_allowed, 0);
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let b = pdb(
            json!({"minAvailable": 1}),
            json!({"disruptionsAllowed": 1, "conditions": [{"type": "DisruptionAllowed", "status": "True",
                "reason": "SufficientPods", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}),
        );
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = next_status(&b, 3, 1, 3, BTreeMap::new(), now);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            c.last_transition_time.0,
            "2025-01-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        let failed = fail_safe_status(&b, "found no controllers for pod \"x\"", now);
        assert_eq!(failed.disruptions_allowed, 0);
        let c = &failed.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", "SyncFailed", "found no controllers for pod \"x\"")
        );
        assert_eq!(c.last_transition_time.0, now);
    }

    #[test]
    fn disruption_target_conditions_go_stale_after_two_minutes() {
        let with = |cond: serde_json::Value, deleting: bool| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z")},
                "status": {"phase": "Running", "conditions": [cond]},
            }))
            .unwrap()
        };
        let marked = json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "lastTransitionTime": "2026-01-01T00:00:00Z"});
        let now: jiff::Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        assert_eq!(
            stale_disruption_wait(&with(marked.clone(), false), now),
            Some(Duration::from_secs(90))
        );
        let later: jiff::Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        assert_eq!(
            stale_disruption_wait(&with(marked.clone(), false), later),
            Some(Duration::ZERO)
        );
        assert_eq!(
            stale_disruption_wait(&with(marked, true), later),
            None,
            "a deleting pod is not stale"
        );
        let kubelet = json!({"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
            "lastTransitionTime": "2026-01-01T00:00:00Z"});
        assert_eq!(stale_disruption_wait(&with(kubelet, false), later), None);
    }

    #[test]
    fn empty_selectors_select_all_and_missing_ones_none() {
        let all = pdb(json!({"minAvailable": 1, "selector": {}}), json!({}));
        let none = pdb(json!({"minAvailable": 1}), json!({}));
        let web = pdb(
            json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
            json!({}),
        );
        let db = pdb(
            json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
            json!({}),
        );
        let p = pod("a", true, false);
        assert!(selects(&all, &p) && selects(&web, &p));
        assert!(!selects(&none, &p) && !selects(&db, &p));
    }
}
