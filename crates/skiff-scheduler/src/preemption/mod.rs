//! Pod priority and preemption (upstream `framework/preemption` and the
//! DefaultPreemption PostFilter plugin, `plugins/defaultpreemption`).
//!
//! When a pod fits on no node, [`Preemption::post_filter`] looks for nodes where
//! removing pods of **lower priority** makes it fit:
//!
//! 1. The pod must be eligible: its `preemptionPolicy` is not `Never`, and the node
//!    it was nominated to earlier has no lower-priority pod still terminating because
//!    of a preemption (it waits for those instead of preempting more).
//! 2. Only nodes whose filters failed with [`Code::Unschedulable`] are tried; those
//!    that failed with [`Code::UnschedulableAndUnresolvable`] (taints, affinity,
//!    cordon...) are not helped by removing pods.
//! 3. On each such node ([`select_victims_on_node`]): all lower-priority pods are
//!    removed from a copy of the node's [`NodeInfo`]; if the profile's filters pass,
//!    pods are added back one by one, highest priority first and those whose
//!    PodDisruptionBudget would be violated first, keeping each that still lets the
//!    pod fit. The rest are the victims.
//! 4. The node is chosen as upstream `pickOneNodeForPreemption` does
//!    ([`pick_one_node`]): fewest PDB violations, then the lowest highest-victim
//!    priority, the smallest sum of victim priorities, the fewest victims, the latest
//!    start of the most important victims, the first node.
//!
//! Then ([`prepare_candidate`]) each victim gets the `DisruptionTarget` condition
//! (reason `PreemptionByScheduler`) and is deleted gracefully with a `Preempted`
//! event, lower-priority pods nominated to the node lose their nomination, and the
//! preemptor gets `status.nominatedNodeName`. The preemptor goes back to the queue;
//! it is retried when the victims are gone.
//!
//! The [`Nominator`] remembers nominated pods: their requests are counted on their
//! node when pods of lower or equal priority are filtered
//! ([`run_filters_with_nominated`]), so the freed room is not taken by them.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use rand::Rng;
use serde_json::json;
use skiff_api::events::EventType;
use skiff_api::selector::LabelSelector;

use crate::algorithm::FitError;
use crate::binder::Binder;
use crate::cache::Cache;
use crate::framework::{Code, CycleState, Diagnosis, NodeInfo, PodInfo, Profile, Snapshot, Status, failure_message};

mod nominator;
pub use nominator::{Nominator, run_filters_with_nominated};

/// Reason of a node where no pod has lower priority than the preemptor.
pub const ERR_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Reason of a node whose failure no preemption can fix.
pub const ERR_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// PostFilter message of a pod with `preemptionPolicy: Never`.
pub const ERR_POLICY_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
/// PostFilter message of a pod whose nominated node still has a terminating victim.
pub const ERR_TERMINATING: &str = "not eligible due to a terminating pod on the nominated node.";
/// Reason of the `DisruptionTarget` condition set on victims.
pub const REASON_PREEMPTION: &str = "PreemptionByScheduler";
/// Upstream `MinCandidateNodesPercentage` default: nodes to dry-run, in percent.
pub const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
/// Upstream `MinCandidateNodesAbsolute` default.
pub const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

pub(crate) fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// `spec.priority`, 0 when unset (upstream `corev1helpers.PodPriority`).
pub fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn start_time(p: &Pod) -> Option<jiff::Timestamp> {
    p.status.as_ref()?.start_time.as_ref().map(|t| t.0)
}

/// `status.startTime` as an ordering key where a pod that has not started sorts
/// after every started one (upstream counts it as starting now).
type StartKey = (bool, Option<jiff::Timestamp>);

fn start_key(p: &Pod) -> StartKey {
    let t = start_time(p);
    (t.is_none(), t)
}

/// Upstream `MoreImportantPod`: higher priority first, then the one that started
/// earlier (a pod that has not started counts as starting now).
pub fn more_important(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    priority(b)
        .cmp(&priority(a))
        .then_with(|| start_key(a).cmp(&start_key(b)))
}

pub(crate) fn nominated_node_name(p: &Pod) -> Option<&str> {
    p.status
        .as_ref()?
        .nominated_node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// The pods chosen for eviction on one node, most important first.
#[derive(Debug, Clone, Default)]
pub struct Victims {
    /// The pods to delete.
    pub pods: Vec<Arc<Pod>>,
    /// How many of them a PodDisruptionBudget does not allow to disrupt.
    pub num_pdb_violations: usize,
}

/// A node where preemption lets the pod fit, and what it costs.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Node name.
    pub node: String,
    /// The victims there.
    pub victims: Victims,
}

/// Splits `pods` (order kept) into those whose eviction would violate a PDB and
/// the others (upstream `filterPodsWithPDBViolation`): a PDB of the pod's
/// namespace whose non-empty selector matches it, whose `disruptionsAllowed` runs
/// below zero once the earlier pods are counted; pods already in the PDB's
/// `disruptedPods` are not counted again.
pub fn split_by_pdb_violation(
    pods: Vec<Arc<Pod>>,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    let selectors: Vec<Option<LabelSelector>> = pdbs
        .iter()
        .map(|pdb| {
            let sel = pdb.spec.as_ref()?.selector.as_ref()?;
            let sel = LabelSelector::from_label_selector_json(&serde_json::to_value(sel).ok()?).ok()?;
            (!sel.is_empty()).then_some(sel)
        })
        .collect();
    let mut allowed: Vec<i32> = pdbs
        .iter()
        .map(|p| p.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for pod in pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut violated = false;
        if !labels.is_empty() {
            for (i, pdb) in pdbs.iter().enumerate() {
                let Some(sel) = &selectors[i] else { continue };
                if pdb.metadata.namespace != pod.metadata.namespace || !sel.matches(&labels) {
                    continue;
                }
                let name = pod.metadata.name.clone().unwrap_or_default();
                if pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(&name))
                {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(pod);
        } else {
            fine.push(pod);
        }
    }
    (violating, fine)
}

/// Upstream `SelectVictimsOnNode`: the fewest lower-priority pods of `node` whose
/// removal lets `pod` pass the profile's filters. `pods` looks up the Pod objects
/// of the node's pods by uid (pods it does not know, e.g. assumed ones, are never
/// victims). Errors: the status of a node where preemption does not help.
pub fn select_victims_on_node(
    profile: &Profile,
    state: &CycleState,
    nominator: &Nominator,
    pod: &PodInfo,
    node: &NodeInfo,
    pods: &HashMap<String, Arc<Pod>>,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> Result<Victims, Status> {
    let p = priority(&pod.pod);
    let mut potential: Vec<Arc<Pod>> = node
        .pods
        .keys()
        .filter_map(|u| pods.get(u))
        .filter(|v| priority(v) < p)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::new(Code::UnschedulableAndUnresolvable, ERR_NO_VICTIMS));
    }
    // The attempt's PreFilter state, told about every removal and re-addition
    // (upstream's RemovePod/AddPod extensions), on a copy of the node.
    let mut state = state.clone();
    let mut info = node.clone();
    for v in &potential {
        let u = uid(v);
        if let Some(usage) = node.pods.get(&u) {
            info.remove_pod(&u);
            state.remove_pod(pod, usage, &info);
        }
    }
    let status = run_filters_with_nominated(profile, &state, nominator, pod, &info);
    if !status.is_success() {
        return Err(status);
    }
    potential.sort_by(|a, b| more_important(a, b));
    let (violating, fine) = split_by_pdb_violation(potential, pdbs);
    let mixed = !violating.is_empty() && !fine.is_empty();
    let mut victims = Victims::default();
    for (v, is_violating) in violating
        .into_iter()
        .map(|v| (v, true))
        .chain(fine.into_iter().map(|v| (v, false)))
    {
        let u = uid(&v);
        let usage = node.pods.get(&u).cloned().unwrap_or_default();
        info.add_pod(&u, usage.clone());
        state.add_pod(pod, &usage, &info);
        if !run_filters_with_nominated(profile, &state, nominator, pod, &info).is_success() {
            info.remove_pod(&u);
            state.remove_pod(pod, &usage, &info);
            victims.num_pdb_violations += usize::from(is_violating);
            victims.pods.push(v);
        }
    }
    if mixed {
        victims.pods.sort_by(|a, b| more_important(a, b));
    }
    Ok(victims)
}

/// The earliest start among the highest-priority victims (upstream
/// `GetEarliestPodStartTime`); pods that have not started count as now.
fn earliest_start_of_most_important(victims: &[Arc<Pod>]) -> Option<StartKey> {
    let top = victims.iter().map(|v| priority(v)).max()?;
    victims
        .iter()
        .filter(|v| priority(v) == top)
        .map(|v| start_key(v))
        .min()
}

/// Upstream `pickOneNodeForPreemption`: a node without victims if any, else the
/// fewest PDB violations, then the lowest priority of the most important victim,
/// the smallest sum of victim priorities, the fewest victims, the latest start of
/// the most important victims, and finally the first candidate. Returns an index
/// into `candidates`.
pub fn pick_one_node(candidates: &[Candidate]) -> Option<usize> {
    if let Some(i) = candidates.iter().position(|c| c.victims.pods.is_empty()) {
        return Some(i);
    }
    let mut best: Vec<usize> = (0..candidates.len()).collect();
    let keep_min = |best: &mut Vec<usize>, key: &dyn Fn(&Candidate) -> i64| {
        let min = best.iter().map(|&i| key(&candidates[i])).min();
        best.retain(|&i| Some(key(&candidates[i])) == min);
    };
    keep_min(&mut best, &|c| c.victims.num_pdb_violations as i64);
    keep_min(&mut best, &|c| {
        c.victims
            .pods
            .iter()
            .map(|v| priority(v))
            .max()
            .map_or(i64::MIN, i64::from)
    });
    // Priorities shifted to be positive, as upstream (`MaxInt32 + 1` added to each).
    keep_min(&mut best, &|c| {
        c.victims
            .pods
            .iter()
            .map(|v| i64::from(priority(v)) + i64::from(i32::MAX) + 1)
            .sum()
    });
    keep_min(&mut best, &|c| c.victims.pods.len() as i64);
    let starts: Vec<(usize, Option<StartKey>)> = best
        .iter()
        .map(|&i| (i, earliest_start_of_most_important(&candidates[i].victims.pods)))
        .collect();
    let latest = starts.iter().map(|(_, s)| *s).max().flatten();
    starts.into_iter().find(|(_, s)| *s == latest).map(|(i, _)| i)
}

/// What [`Preemption::post_filter`] decided.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Preempt: delete the victims on the candidate's node and nominate the pod
    /// there; `clear` are lower-priority pods nominated to that node, whose
    /// nominations are withdrawn.
    Preempt {
        /// The chosen node and victims.
        candidate: Candidate,
        /// Nominated pods of lower priority on that node.
        clear: Vec<Arc<Pod>>,
    },
    /// The pod may not preempt now (`preemptionPolicy: Never`, or victims of its
    /// earlier preemption still terminating); the message (without the
    /// `preemption: ` prefix) says why. A nomination is kept.
    Fail(String),
    /// No node where preemption helps; the message says why per node. A nomination
    /// the pod had is withdrawn, as upstream.
    NoCandidate(String),
}

impl Outcome {
    /// The `FailedScheduling` message for `fit` with this outcome (upstream
    /// `FitError.Error` with the PostFilter message): e.g. `0/1 nodes are available:
    /// 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption
    /// victims found for incoming pod..`
    pub fn message(&self, fit: &FitError) -> String {
        match self {
            Outcome::Preempt { .. } => fit.to_string(),
            Outcome::Fail(m) | Outcome::NoCandidate(m) => format!("{fit} preemption: {m}."),
        }
    }
}

/// The preemption state of the scheduling loop: the Pod objects of bound pods (the
/// cache keeps only their usage), the [`Nominator`], the PodDisruptionBudget watch
/// cache (policy/v1) and the client that deletes victims.
#[derive(Default)]
pub struct Preemption {
    /// Bound, unfinished pods by uid.
    pub pods: HashMap<String, Arc<Pod>>,
    /// Nominated pods.
    pub nominator: Nominator,
    pdbs: Option<Store<PodDisruptionBudget>>,
}

impl Preemption {
    /// Empty state without PDBs (every budget counts as absent).
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `pdbs` (a reflector of `policy/v1` PodDisruptionBudgets) for violations.
    pub fn with_pdbs(mut self, pdbs: Store<PodDisruptionBudget>) -> Self {
        self.pdbs = Some(pdbs);
        self
    }

    /// Records the latest version of a pod from the watch.
    pub fn observe_pod(&mut self, pod: &Arc<Pod>, pending: bool) {
        let u = uid(pod);
        if pending {
            self.pods.remove(&u);
            self.nominator.observe_pending(pod);
            return;
        }
        self.nominator.remove(&u);
        if crate::cache::bound_node(pod).is_some() && !crate::cache::is_terminal(pod) {
            self.pods.insert(u, pod.clone());
        } else {
            self.pods.remove(&u);
        }
    }

    /// A pod was deleted.
    pub fn remove_pod(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.nominator.remove(uid);
    }

    /// After a relist: forgets pods no longer listed (the listed ones are then
    /// observed one by one).
    pub fn retain_listed(&mut self, listed: &std::collections::HashSet<String>) {
        self.pods.retain(|u, _| listed.contains(u));
        let gone: Vec<String> = self
            .nominator
            .nominated_uids()
            .filter(|u| !listed.contains(*u))
            .cloned()
            .collect();
        for u in gone {
            self.nominator.remove(&u);
        }
    }

    fn pdbs(&self) -> Vec<Arc<PodDisruptionBudget>> {
        self.pdbs.as_ref().map(Store::state).unwrap_or_default()
    }

    /// Upstream `PodEligibleToPreemptOthers`.
    fn eligible(&self, cache: &Cache, pod: &Pod, nominated_status: Option<&Status>) -> Result<(), &'static str> {
        let never = pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never");
        if never {
            return Err(ERR_POLICY_NEVER);
        }
        let nominated = self
            .nominator
            .nominated_node(&uid(pod))
            .or_else(|| nominated_node_name(pod));
        let Some(node) = nominated.and_then(|n| cache.node(n)) else {
            return Ok(());
        };
        if nominated_status.is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable) {
            return Ok(());
        }
        let p = priority(pod);
        let terminating = node
            .pods
            .keys()
            .filter_map(|u| self.pods.get(u))
            .any(|v| priority(v) < p && terminating_by_preemption(v));
        if terminating { Err(ERR_TERMINATING) } else { Ok(()) }
    }

    /// The DefaultPreemption PostFilter for a pod that fit nowhere (`fit`): finds
    /// candidates among at most max(10 %, 100) of the nodes where preemption might
    /// help, starting at a random node, and picks one.
    pub fn post_filter(
        &self,
        profile: &Profile,
        cache: &Cache,
        pod: &PodInfo,
        fit: &FitError,
        rng: &mut impl Rng,
    ) -> Outcome {
        let nominated_status = self
            .nominator
            .nominated_node(&uid(&pod.pod))
            .or_else(|| nominated_node_name(&pod.pod))
            .and_then(|n| fit.diagnosis.node_to_status.get(n));
        if let Err(why) = self.eligible(cache, &pod.pod, nominated_status) {
            return Outcome::Fail(why.to_string());
        }
        let nodes: Vec<&NodeInfo> = cache
            .nodes()
            .filter(|n| {
                fit.diagnosis
                    .node_to_status
                    .get(n.name())
                    .is_some_and(|s| s.code == Code::Unschedulable)
            })
            .collect();
        let total = cache.num_nodes();
        let mut diagnosis = Diagnosis::default();
        for n in cache.nodes() {
            diagnosis.node_to_status.insert(
                n.name().to_string(),
                Status::new(Code::UnschedulableAndUnresolvable, ERR_NOT_HELPFUL),
            );
        }
        let mut candidates = Vec::new();
        // A pod its PreFilters reject cannot be helped by removing pods.
        let all: Vec<&NodeInfo> = cache.nodes().collect();
        let state = profile
            .run_pre_filters(pod, &Snapshot::new(&all, cache.namespaces(), cache.index()))
            .ok();
        if let Some(state) = state.as_ref()
            && !nodes.is_empty()
        {
            let want = (nodes.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
                .max(MIN_CANDIDATE_NODES_ABSOLUTE)
                .min(nodes.len());
            let offset = rng.random_range(0..nodes.len());
            let pdbs = self.pdbs();
            for i in 0..nodes.len() {
                let node = nodes[(offset + i) % nodes.len()];
                match select_victims_on_node(profile, state, &self.nominator, pod, node, &self.pods, &pdbs) {
                    Ok(victims) => {
                        diagnosis.node_to_status.remove(node.name());
                        candidates.push(Candidate {
                            node: node.name().to_string(),
                            victims,
                        });
                        if candidates.len() >= want {
                            break;
                        }
                    }
                    Err(status) => {
                        diagnosis.node_to_status.insert(node.name().to_string(), status);
                    }
                }
            }
        }
        let Some(best) = pick_one_node(&candidates) else {
            return Outcome::NoCandidate(failure_message(total, &diagnosis));
        };
        let candidate = candidates.swap_remove(best);
        let p = priority(&pod.pod);
        let me = uid(&pod.pod);
        let clear = self
            .nominator
            .pods_on(&candidate.node)
            .filter(|n| priority(n) < p && uid(n) != me)
            .cloned()
            .collect();
        Outcome::Preempt { candidate, clear }
    }

    /// Applies an [`Outcome::Preempt`] to the in-memory state: the pod is nominated
    /// to the node and the cleared pods lose their nominations.
    pub fn nominate(&mut self, pod: &Arc<Pod>, node: &str, clear: &[Arc<Pod>]) {
        for c in clear {
            self.nominator.remove(&uid(c));
        }
        self.nominator.add(pod.clone(), node);
    }
}

/// Whether a pod is terminating because the scheduler preempted it (deletion
/// started and `DisruptionTarget=True` with reason `PreemptionByScheduler`).
pub fn terminating_by_preemption(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"))
            .is_some_and(|c| c.status == "True" && c.reason.as_deref() == Some(REASON_PREEMPTION))
}

/// Upstream `prepareCandidate` and the nomination write: each victim gets the
/// `DisruptionTarget` condition, is deleted (with its own grace period) and gets a
/// `Preempted` event `Preempted by pod <uid> on node <node>`; each pod in `clear`
/// gets its `status.nominatedNodeName` removed; `pod` gets
/// `status.nominatedNodeName: node`. Failures are logged; the pod is retried anyway.
pub async fn prepare_candidate(
    client: &kube::Client,
    binder: &Binder,
    pod: &Pod,
    node: &str,
    victims: &[Arc<Pod>],
    clear: &[Arc<Pod>],
) {
    let pod_uid = uid(pod);
    for v in victims {
        let ns = v.metadata.namespace.clone().unwrap_or_default();
        let name = v.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": REASON_PREEMPTION,
            "message": format!("{}: preempting to accommodate a higher priority pod", crate::SCHEDULER_NAME),
            "lastTransitionTime": skiff_api::events::now_string(),
        }]}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition))
            .await
        {
            tracing::debug!(error = %e, victim = %format!("{ns}/{name}"), "setting DisruptionTarget failed");
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => {
                tracing::warn!(error = %e, victim = %format!("{ns}/{name}"), "preempting failed");
                continue;
            }
        }
        tracing::info!(victim = %format!("{ns}/{name}"), %node, preemptor = %pod.metadata.name.as_deref().unwrap_or_default(), "preempted");
        binder
            .record(
                v,
                EventType::Normal,
                "Preempted",
                &format!("Preempted by pod {pod_uid} on node {node}"),
            )
            .await;
    }
    for c in clear {
        set_nominated_node_name(client, c, None).await;
    }
    set_nominated_node_name(client, pod, Some(node)).await;
}

/// Sets (or with `None` removes) a pod's `status.nominatedNodeName`; failures are
/// logged.
pub async fn set_nominated_node_name(client: &kube::Client, pod: &Pod, node: Option<&str>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let patch = json!({"status": {"nominatedNodeName": node}});
    if let Err(e) = Api::<Pod>::namespaced(client.clone(), &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::debug!(error = %e, pod = %format!("{ns}/{name}"), "updating nominatedNodeName failed");
    }
}

/// Starts a watch cache of `policy/v1` PodDisruptionBudgets in all namespaces,
/// until `shutdown`; watch failures are retried with backoff.
pub fn watch_pdbs(client: kube::Client, shutdown: tokio_util::sync::CancellationToken) -> Store<PodDisruptionBudget> {
    crate::reflect::reflect(Api::all(client), None, shutdown)
}

#[cfg(test)]
mod tests;
