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

use std::collections::{BTreeMap, HashMap};
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
use crate::framework::{Code, Diagnosis, NodeInfo, PodInfo, Profile, Status, failure_message};

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

fn uid(p: &Pod) -> String {
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

fn nominated_node_name(p: &Pod) -> Option<&str> {
    p.status
        .as_ref()?
        .nominated_node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Pods nominated to nodes (upstream `nominator`): pods waiting for victims to go,
/// keyed by uid.
#[derive(Debug, Default)]
pub struct Nominator {
    by_node: HashMap<String, BTreeMap<String, Arc<Pod>>>,
    node_of: HashMap<String, String>,
}

impl Nominator {
    /// No nominations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Nominates `pod` to `node`, replacing an earlier nomination.
    pub fn add(&mut self, pod: Arc<Pod>, node: &str) {
        let u = uid(&pod);
        self.remove(&u);
        self.node_of.insert(u.clone(), node.to_string());
        self.by_node.entry(node.to_string()).or_default().insert(u, pod);
    }

    /// Drops the nomination of a pod (bound, deleted, or nominated no more).
    pub fn remove(&mut self, uid: &str) {
        if let Some(node) = self.node_of.remove(uid)
            && let Some(pods) = self.by_node.get_mut(&node)
        {
            pods.remove(uid);
            if pods.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    /// The node `uid` is nominated to.
    pub fn nominated_node(&self, uid: &str) -> Option<&str> {
        self.node_of.get(uid).map(String::as_str)
    }

    /// Pods nominated to `node`.
    pub fn pods_on(&self, node: &str) -> impl Iterator<Item = &Arc<Pod>> {
        self.by_node.get(node).into_iter().flat_map(|m| m.values())
    }

    /// Records a pending pod from the watch: a `status.nominatedNodeName` nominates
    /// it; a pod whose previous version had one and this one has none loses it; a
    /// pod nominated here whose status does not say so yet keeps its nomination
    /// (the status write may still be in flight), as upstream `updateNominatedPod`.
    pub fn observe_pending(&mut self, pod: &Arc<Pod>) {
        let u = uid(pod);
        match nominated_node_name(pod) {
            Some(node) => self.add(pod.clone(), node),
            None => {
                let Some(node) = self.node_of.get(&u).cloned() else {
                    return;
                };
                let had = self
                    .by_node
                    .get(&node)
                    .and_then(|m| m.get(&u))
                    .is_some_and(|old| nominated_node_name(old).is_some());
                if had {
                    self.remove(&u);
                } else {
                    self.add(pod.clone(), &node);
                }
            }
        }
    }

    /// `node` with the pods nominated to it that matter for `pod` (priority at least
    /// `pod`'s, not `pod` itself) added, or `None` when there are none (upstream
    /// `addGENominatedPods`).
    pub fn node_with_nominated(&self, pod: &PodInfo, node: &NodeInfo) -> Option<NodeInfo> {
        let me = uid(&pod.pod);
        let p = priority(&pod.pod);
        let mut added: Option<NodeInfo> = None;
        for n in self.pods_on(node.name()) {
            let u = uid(n);
            if u == me || priority(n) < p || node.pods.contains_key(&u) {
                continue;
            }
            added
                .get_or_insert_with(|| node.clone())
                .add_pod(&u, crate::framework::PodUsage::of(n));
        }
        added
    }
}

/// Upstream `RunFilterPluginsWithNominatedPods`: the filters must pass with the
/// nominated pods of equal or higher priority counted on the node, and without them.
pub fn run_filters_with_nominated(profile: &Profile, nominator: &Nominator, pod: &PodInfo, node: &NodeInfo) -> Status {
    if let Some(with) = nominator.node_with_nominated(pod, node) {
        let s = profile.run_filters(pod, &with);
        if !s.is_success() {
            return s;
        }
    }
    profile.run_filters(pod, node)
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
    let mut info = node.clone();
    for v in &potential {
        info.remove_pod(&uid(v));
    }
    let status = run_filters_with_nominated(profile, nominator, pod, &info);
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
        info.add_pod(&u, usage);
        if !run_filters_with_nominated(profile, nominator, pod, &info).is_success() {
            info.remove_pod(&u);
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
            .node_of
            .keys()
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
        if !nodes.is_empty() {
            let want = (nodes.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
                .max(MIN_CANDIDATE_NODES_ABSOLUTE)
                .min(nodes.len());
            let offset = rng.random_range(0..nodes.len());
            let pdbs = self.pdbs();
            for i in 0..nodes.len() {
                let node = nodes[(offset + i) % nodes.len()];
                match select_victims_on_node(profile, &self.nominator, pod, node, &self.pods, &pdbs) {
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
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (store, writer) = reflector::store::<PodDisruptionBudget>();
    let stream = watcher(Api::<PodDisruptionBudget>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => match ev {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "PodDisruptionBudget watch failed; retrying"),
                    None => return,
                },
            }
        }
    });
    store
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use serde_json::Value;

    use super::*;
    use crate::framework::PodUsage;
    use crate::plugins::{default_plugins, registry};

    fn profile() -> Profile {
        Profile::new(&registry(), &default_plugins()).unwrap()
    }

    /// A pod in `default` requesting `cpu`, with `priority`; `extra` is merged into it.
    fn pod(name: &str, cpu: &str, prio: i32, extra: Value) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "uid": name, "namespace": "default"},
            "spec": {"priority": prio,
                     "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}});
        for (k, x) in extra.as_object().cloned().unwrap_or_default() {
            match k.as_str() {
                "labels" => v["metadata"]["labels"] = x,
                "startTime" => v["status"] = json!({"startTime": x}),
                "preemptionPolicy" => v["spec"]["preemptionPolicy"] = x,
                _ => unreachable!("{k}"),
            }
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    struct World {
        cache: Cache,
        state: Preemption,
    }

    /// Nodes of `cpu` cores each with their bound pods.
    fn world(nodes: &[(&str, &str, Vec<Arc<Pod>>)]) -> World {
        let mut cache = Cache::new();
        let mut state = Preemption::new();
        for (name, cpu, pods) in nodes {
            let n = crate::plugins::testing::node(name, cpu, "8Gi", json!({}));
            cache.set_node(n.node.clone().unwrap());
            for p in pods {
                let mut bound = (**p).clone();
                bound.spec.as_mut().unwrap().node_name = Some(name.to_string());
                let bound = Arc::new(bound);
                cache.observe_pod(&bound);
                state.observe_pod(&bound, false);
            }
        }
        World { cache, state }
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
    }

    fn attempt(w: &World, preemptor: &Arc<Pod>) -> (Outcome, String) {
        let info = PodInfo::new(preemptor.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let fit =
            crate::algorithm::schedule_pod_with(&profile(), &w.cache, &w.state.nominator, &info, &mut 0, &mut rng)
                .expect_err("the preemptor fits nowhere");
        let outcome = w.state.post_filter(&profile(), &w.cache, &info, &fit, &mut rng);
        let message = outcome.message(&fit);
        (outcome, message)
    }

    #[test]
    fn victims_and_node_choice_follow_upstream() {
        let none = json!({});
        let t = |s: &str| json!({"startTime": s});
        struct Case {
            name: &'static str,
            nodes: Vec<(&'static str, &'static str, Vec<Arc<Pod>>)>,
            preemptor: Arc<Pod>,
            pdbs: Vec<Value>,
            /// Chosen node and its victims, or the failure message.
            want: Result<(&'static str, Vec<&'static str>), &'static str>,
        }
        let cases = vec![
            Case {
                name: "only lower-priority pods are victims",
                nodes: vec![(
                    "n1",
                    "2",
                    vec![pod("low", "1", 10, none.clone()), pod("high", "1", 20, none.clone())],
                )],
                preemptor: pod("p", "1", 15, none.clone()),
                pdbs: vec![],
                want: Ok(("n1", vec!["low"])),
            },
            Case {
                name: "equal priority is never preempted",
                nodes: vec![("n1", "1", vec![pod("same", "1", 10, none.clone())])],
                preemptor: pod("p", "1", 10, none.clone()),
                pdbs: vec![],
                want: Err(
                    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
                           1 No preemption victims found for incoming pod..",
                ),
            },
            Case {
                name: "preemptionPolicy Never never preempts",
                nodes: vec![("n1", "1", vec![pod("low", "1", 0, none.clone())])],
                preemptor: pod("p", "1", 100, json!({"preemptionPolicy": "Never"})),
                pdbs: vec![],
                want: Err("0/1 nodes are available: 1 Insufficient cpu. \
                           preemption: not eligible due to preemptionPolicy=Never.."),
            },
            Case {
                name: "higher-priority pods are reprieved first, leaving the fewest victims",
                nodes: vec![(
                    "n1",
                    "4",
                    vec![
                        pod("p1", "1", 1, none.clone()),
                        pod("p2", "1", 2, none.clone()),
                        pod("p3", "2", 3, none.clone()),
                    ],
                )],
                preemptor: pod("p", "2", 10, none.clone()),
                pdbs: vec![],
                want: Ok(("n1", vec!["p2", "p1"])),
            },
            Case {
                name: "the node whose victims a PDB protects is avoided",
                nodes: vec![
                    ("a", "1", vec![pod("guarded", "1", 1, json!({"labels": {"app": "db"}}))]),
                    ("b", "1", vec![pod("free", "1", 5, json!({"labels": {"app": "web"}}))]),
                ],
                preemptor: pod("p", "1", 10, none.clone()),
                pdbs: vec![json!({"metadata": {"name": "db", "namespace": "default"},
                    "spec": {"selector": {"matchLabels": {"app": "db"}}}, "status": {"disruptionsAllowed": 0,
                    "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}})],
                want: Ok(("b", vec!["free"])),
            },
            Case {
                name: "the lowest highest-victim priority wins",
                nodes: vec![
                    ("a", "1", vec![pod("five", "1", 5, none.clone())]),
                    ("b", "1", vec![pod("three", "1", 3, none.clone())]),
                ],
                preemptor: pod("p", "1", 10, none.clone()),
                pdbs: vec![],
                want: Ok(("b", vec!["three"])),
            },
            Case {
                name: "then the fewest victims (smallest priority sum)",
                nodes: vec![
                    (
                        "a",
                        "1",
                        vec![pod("a1", "500m", 1, none.clone()), pod("a2", "500m", 1, none.clone())],
                    ),
                    ("b", "1", vec![pod("b1", "1", 1, none.clone())]),
                ],
                preemptor: pod("p", "1", 10, none.clone()),
                pdbs: vec![],
                want: Ok(("b", vec!["b1"])),
            },
            Case {
                name: "then the victims that started last",
                nodes: vec![
                    ("a", "1", vec![pod("old", "1", 1, t("2026-01-01T00:00:00Z"))]),
                    ("b", "1", vec![pod("new", "1", 1, t("2026-06-01T00:00:00Z"))]),
                ],
                preemptor: pod("p", "1", 10, none.clone()),
                pdbs: vec![],
                want: Ok(("b", vec!["new"])),
            },
            Case {
                name: "nodes failing for unresolvable reasons are not helped",
                nodes: vec![("n1", "1", vec![pod("low", "1", 0, none.clone())])],
                preemptor: Arc::new({
                    let mut p = (*pod("p", "1", 10, none.clone())).clone();
                    p.spec.as_mut().unwrap().node_selector = Some([("disk".to_string(), "ssd".to_string())].into());
                    p
                }),
                pdbs: vec![],
                want: Err(
                    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
                           preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling..",
                ),
            },
        ];
        for c in cases {
            let mut w = world(&c.nodes);
            let (store, mut writer) = kube::runtime::reflector::store::<PodDisruptionBudget>();
            for p in c.pdbs {
                writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
                    serde_json::from_value(p).unwrap(),
                ));
            }
            w.state = std::mem::take(&mut w.state).with_pdbs(store);
            let (outcome, message) = attempt(&w, &c.preemptor);
            match (&c.want, outcome) {
                (Ok((node, victims)), Outcome::Preempt { candidate, .. }) => {
                    assert_eq!(candidate.node, *node, "{}", c.name);
                    assert_eq!(names(&candidate.victims.pods), *victims, "{}", c.name);
                }
                (Err(want), Outcome::Fail(_) | Outcome::NoCandidate(_)) => assert_eq!(message, *want, "{}", c.name),
                (want, got) => panic!("{}: want {want:?}, got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn pdb_violations_are_counted_in_budget_order() {
        let guarded = |n: &str| pod(n, "1", 1, json!({"labels": {"app": "db"}}));
        let pdb: PodDisruptionBudget =
            serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}},
            "status": {"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}}))
            .unwrap();
        let (violating, fine) = split_by_pdb_violation(vec![guarded("x"), guarded("y")], &[Arc::new(pdb)]);
        assert_eq!((names(&violating), names(&fine)), (vec!["y"], vec!["x"]));
    }

    #[test]
    fn nominated_pods_hold_room_against_lower_and_equal_priority() {
        let mut w = world(&[("n1", "2", vec![pod("busy", "1", 0, json!({}))])]);
        let nominated = pod("nominated", "1", 10, json!({}));
        w.state.nominate(&nominated, "n1", &[]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let try_pod = |p: Arc<Pod>, rng: &mut rand::rngs::StdRng| {
            crate::algorithm::schedule_pod_with(&profile(), &w.cache, &w.state.nominator, &PodInfo::new(p), &mut 0, rng)
        };
        assert!(try_pod(pod("lower", "1", 5, json!({})), &mut rng).is_err());
        assert!(try_pod(pod("equal", "1", 10, json!({})), &mut rng).is_err());
        assert_eq!(try_pod(pod("higher", "1", 20, json!({})), &mut rng).unwrap(), "n1");
        // The nominated pod itself fits on its node.
        assert_eq!(try_pod(nominated.clone(), &mut rng).unwrap(), "n1");
        // A pod nominated to a node whose victims are still terminating waits.
        let mut victim = (*pod("victim", "1", 0, json!({}))).clone();
        victim.spec.as_mut().unwrap().node_name = Some("n1".into());
        victim.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        victim.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": REASON_PREEMPTION}]}))
            .unwrap(),
        );
        let victim = Arc::new(victim);
        w.cache.observe_pod(&victim);
        w.state.observe_pod(&victim, false);
        let big = pod("big", "2", 10, json!({}));
        w.state.nominate(&big, "n1", &[]);
        let (_, message) = attempt(&w, &big);
        assert!(
            message.ends_with("preemption: not eligible due to a terminating pod on the nominated node.."),
            "{message}"
        );
        let _ = PodUsage::default();
    }
}
