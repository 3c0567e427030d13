//! The scheduling framework (upstream pkg/scheduler/framework): a narrow trait per
//! extension point ([`FilterPlugin`], [`ScorePlugin`], [`PreFilterPlugin`],
//! [`PreScorePlugin`]), a [`Status`] with a [`Code`], the [`NodeInfo`] plugins see
//! and the cluster-wide [`Snapshot`], a [`Registry`] from plugin name to
//! constructor, and the [`Profile`] that runs the extension points for one pod.
//!
//! Plugins that need the whole cluster (pods on other nodes) compute their state
//! once per attempt: PreFilter returns a [`FilterState`] that then filters each
//! node, PreScore a [`ScoreState`] that scores each feasible node (upstream
//! `CycleState` entries). The states of one attempt form a [`CycleState`], which can
//! be cloned and told about pods added to or removed from a node
//! ([`CycleState::add_pod`], [`CycleState::remove_pod`], upstream PreFilter
//! `AddPod`/`RemovePod`) so preemption can re-run the filters on a copy.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::affinity_terms::{NamespaceLabels, PodAffinityTerms};
use crate::pod_index::PodIndex;
use crate::resources::{Resources, allocatable, pod_requests};

/// Highest score a plugin may give a node (upstream `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Outcome class of a plugin call (upstream `framework.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The node passes.
    Success,
    /// The node does not fit now but might after other pods go away.
    Unschedulable,
    /// The node does not fit and no preemption can change that.
    UnschedulableAndUnresolvable,
    /// The plugin failed internally.
    Error,
}

/// A plugin's verdict: a [`Code`] and the human-readable reasons, e.g.
/// `Insufficient cpu` (these phrases make up `FailedScheduling` messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The outcome.
    pub code: Code,
    /// Reasons for a non-success outcome, in upstream wording.
    pub reasons: Vec<String>,
}

impl Status {
    /// A passing status.
    pub fn success() -> Self {
        Self {
            code: Code::Success,
            reasons: Vec::new(),
        }
    }

    /// A failing status with one reason.
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        Self {
            code,
            reasons: vec![reason.into()],
        }
    }

    /// Whether the node passed.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// What the scheduler knows about one node: the Node object and the totals of the
/// pods bound or assumed to it (upstream `framework.NodeInfo`).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The Node, absent while only pods referring to it are known.
    pub node: Option<Arc<Node>>,
    /// `status.allocatable` of the node.
    pub allocatable: Resources,
    /// Sum of the effective requests of the node's pods.
    pub requested: Resources,
    /// The same with zero cpu/memory requests counted as the scoring defaults.
    pub non_zero_requested: Resources,
    /// Host ports in use, as `(protocol, hostIP, port)`.
    pub used_ports: BTreeSet<(String, String, i32)>,
    /// Pods on the node by uid, with what they add to the totals.
    pub pods: BTreeMap<String, PodUsage>,
    /// How many of [`NodeInfo::pods`] have pod affinity or anti-affinity (upstream
    /// `PodsWithAffinity`).
    pub pods_with_affinity: usize,
    /// How many of them have required pod anti-affinity (upstream
    /// `PodsWithRequiredAntiAffinity`).
    pub pods_with_required_anti_affinity: usize,
}

/// One pod placed on a node: the pod itself (shared, never copied), what it adds
/// to its node's totals, and its parsed pod (anti-)affinity.
#[derive(Debug, Clone, Default)]
pub struct PodUsage {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Effective requests.
    pub requested: Resources,
    /// Effective requests with scoring defaults.
    pub non_zero_requested: Resources,
    /// Host ports, as `(protocol, hostIP, port)`.
    pub ports: Vec<(String, String, i32)>,
    /// `affinity.podAffinity`/`podAntiAffinity`, `None` when the pod has neither.
    pub affinity: Option<Arc<PodAffinityTerms>>,
}

impl PodUsage {
    /// The usage of `pod`.
    pub fn of(pod: &Arc<Pod>) -> Self {
        Self {
            pod: pod.clone(),
            requested: pod_requests(pod, false),
            non_zero_requested: pod_requests(pod, true),
            ports: host_ports(pod),
            affinity: PodAffinityTerms::of(pod).map(Arc::new),
        }
    }

    fn has_required_anti_affinity(&self) -> bool {
        self.affinity
            .as_ref()
            .is_some_and(|a| !a.required_anti_affinity.is_empty())
    }
}

/// Host ports a pod asks for, as `(protocol, hostIP, port)`; hostIP defaults to
/// `0.0.0.0` and protocol to `TCP`, as upstream.
pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let inits = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default();
    containers
        .iter()
        .chain(inits)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&h| h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or("0.0.0.0".into());
            Some((p.protocol.clone().unwrap_or("TCP".into()), ip, port))
        })
        .collect()
}

impl NodeInfo {
    /// A node with no pods yet.
    pub fn new(node: Arc<Node>) -> Self {
        let mut info = Self::default();
        info.set_node(node);
        info
    }

    /// Replaces the Node object (e.g. after a watch update).
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = allocatable(&node);
        self.node = Some(node);
    }

    /// The node's labels (empty while the Node is unknown or has none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&NONE)
    }

    /// The node's name, if the Node is known.
    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or_default()
    }

    /// Accounts a pod on this node (replacing an earlier accounting of the same uid).
    pub fn add_pod(&mut self, uid: &str, usage: PodUsage) {
        self.remove_pod(uid);
        self.requested.add(&usage.requested);
        self.non_zero_requested.add(&usage.non_zero_requested);
        self.used_ports.extend(usage.ports.iter().cloned());
        self.pods_with_affinity += usize::from(usage.affinity.is_some());
        self.pods_with_required_anti_affinity += usize::from(usage.has_required_anti_affinity());
        self.pods.insert(uid.to_string(), usage);
    }

    /// Removes a pod's accounting; returns whether it was there.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(usage) = self.pods.remove(uid) else {
            return false;
        };
        self.requested.sub(&usage.requested);
        self.non_zero_requested.sub(&usage.non_zero_requested);
        self.pods_with_affinity -= usize::from(usage.affinity.is_some());
        self.pods_with_required_anti_affinity -= usize::from(usage.has_required_anti_affinity());
        self.used_ports = self.pods.values().flat_map(|u| u.ports.iter().cloned()).collect();
        true
    }
}

/// The pod being scheduled, with what plugins compute from it once per attempt.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Its usage (requests, scoring requests, host ports).
    pub usage: PodUsage,
}

impl PodInfo {
    /// Wraps a pod.
    pub fn new(pod: Arc<Pod>) -> Self {
        let usage = PodUsage::of(&pod);
        Self { pod, usage }
    }
}

/// The Filter extension point: can the pod run on this node?
pub trait FilterPlugin: Send + Sync {
    /// The plugin's upstream name, e.g. `NodeResourcesFit`.
    fn name(&self) -> &'static str;
    /// Checks one node.
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// The Score extension point: how good is a feasible node, 0..=[`MAX_NODE_SCORE`]
/// after [`ScorePlugin::normalize`].
pub trait ScorePlugin: Send + Sync {
    /// The plugin's upstream name.
    fn name(&self) -> &'static str;
    /// Raw score of one feasible node.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Maps raw scores of all feasible nodes into 0..=[`MAX_NODE_SCORE`]; the
    /// default keeps them (for plugins that already score in range).
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// The whole cluster as PreFilter and PreScore see it during one attempt
/// (upstream `SharedLister`): every node with its pods, an index of the placed
/// pods, and the labels of every Namespace (for `namespaceSelector`).
pub struct Snapshot<'a> {
    /// Every node that has a Node object.
    pub nodes: &'a [&'a NodeInfo],
    /// Namespace name -> labels.
    pub namespaces: &'a NamespaceLabels,
    /// The placed pods by namespace + label and by controller.
    pub index: &'a PodIndex,
    /// Pods with pod affinity or anti-affinity, over all nodes.
    pub pods_with_affinity: usize,
    /// Pods with required pod anti-affinity, over all nodes.
    pub pods_with_required_anti_affinity: usize,
    by_name: OnceCell<HashMap<&'a str, &'a NodeInfo>>,
}

impl<'a> Snapshot<'a> {
    /// A snapshot of `nodes` whose pods `index` holds; O(nodes).
    pub fn new(nodes: &'a [&'a NodeInfo], namespaces: &'a NamespaceLabels, index: &'a PodIndex) -> Self {
        let (mut affinity, mut anti) = (0, 0);
        for n in nodes {
            affinity += n.pods_with_affinity;
            anti += n.pods_with_required_anti_affinity;
        }
        Self {
            nodes,
            namespaces,
            index,
            pods_with_affinity: affinity,
            pods_with_required_anti_affinity: anti,
            by_name: OnceCell::new(),
        }
    }

    /// A node by name (the name map is built on first use, O(nodes)).
    pub fn node(&self, name: &str) -> Option<&'a NodeInfo> {
        self.by_name
            .get_or_init(|| self.nodes.iter().map(|n| (n.name(), *n)).collect())
            .get(name)
            .copied()
    }

    /// `(node, pod)` for every placed pod `index_hits` names (as `(uid, node)`),
    /// or for every placed pod when `index_hits` is `None`.
    pub fn pods(&self, index_hits: Option<Vec<(&str, &str)>>) -> Vec<(&'a NodeInfo, &'a PodUsage)> {
        match index_hits {
            Some(hits) => hits
                .into_iter()
                .filter_map(|(uid, node)| {
                    let n = self.node(node)?;
                    Some((n, n.pods.get(uid)?))
                })
                .collect(),
            None => self
                .nodes
                .iter()
                .flat_map(|n| n.pods.values().map(move |p| (*n, p)))
                .collect(),
        }
    }
}

/// What a PreFilter plugin decided for this attempt.
pub enum PreFilterResult {
    /// The plugin has nothing to check for this pod; its Filter is skipped
    /// (upstream `Skip`). Pods without constraints pay nothing more.
    Skip,
    /// The state the plugin's Filter uses on each node.
    State(Box<dyn FilterState>),
    /// The pod fits no node (e.g. `UnschedulableAndUnresolvable`); every node gets
    /// this status and the message reads `0/N nodes are available: <reason>.`
    Reject(Status),
}

/// The PreFilter extension point: look at the whole cluster once per attempt.
pub trait PreFilterPlugin: Send + Sync {
    /// The plugin's upstream name.
    fn name(&self) -> &'static str;
    /// Computes the attempt's filter state from `snapshot`.
    fn pre_filter(&self, pod: &PodInfo, snapshot: &Snapshot) -> PreFilterResult;
}

/// A PreFilter plugin's state for one attempt; its [`FilterState::filter`] is the
/// plugin's Filter. `add_pod`/`remove_pod` (upstream PreFilter extensions
/// `AddPod`/`RemovePod`) update it as if `other` were placed on / removed from
/// `node` (the node's info as it is after the change).
pub trait FilterState: Send + Sync {
    /// Checks one node.
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status;
    /// Accounts `other` as placed on `node`.
    fn add_pod(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo);
    /// Accounts `other` as gone from `node`.
    fn remove_pod(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo);
    /// A deep copy (upstream `StateData.Clone`).
    fn clone_box(&self) -> Box<dyn FilterState>;
}

/// The PreScore extension point: look at the whole cluster once per attempt
/// before scoring the feasible nodes.
pub trait PreScorePlugin: Send + Sync {
    /// The plugin's upstream name.
    fn name(&self) -> &'static str;
    /// The state that scores `feasible`, or `None` to skip the plugin's Score
    /// (every node scores 0 for it).
    fn pre_score(&self, pod: &PodInfo, feasible: &[&NodeInfo], snapshot: &Snapshot) -> Option<Box<dyn ScoreState>>;
}

/// A PreScore plugin's state for one attempt: its Score and NormalizeScore.
pub trait ScoreState: Send + Sync {
    /// Raw score of one feasible node.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Maps the raw scores of `nodes` (same order) into 0..=[`MAX_NODE_SCORE`].
    fn normalize(&self, nodes: &[&NodeInfo], scores: &mut [i64]);
}

/// The PreFilter states of one attempt (upstream `CycleState`), one slot per
/// PreFilter plugin of the profile (`None` where the plugin skipped).
#[derive(Default)]
pub struct CycleState {
    filters: Vec<Option<Box<dyn FilterState>>>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        Self {
            filters: self.filters.iter().map(|s| s.as_ref().map(|s| s.clone_box())).collect(),
        }
    }
}

impl CycleState {
    /// Tells every state that `other` is now on `node` (upstream `RunPreFilterExtensionAddPod`).
    pub fn add_pod(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo) {
        for s in self.filters.iter_mut().flatten() {
            s.add_pod(pod, other, node);
        }
    }

    /// Tells every state that `other` left `node` (upstream `RunPreFilterExtensionRemovePod`).
    pub fn remove_pod(&mut self, pod: &PodInfo, other: &PodUsage, node: &NodeInfo) {
        for s in self.filters.iter_mut().flatten() {
            s.remove_pod(pod, other, node);
        }
    }
}

/// Upstream `DefaultNormalizeScore`: scales scores so the highest becomes
/// [`MAX_NODE_SCORE`]; with `reverse`, the highest becomes 0 instead. All-zero scores
/// become [`MAX_NODE_SCORE`] when reversed and stay 0 otherwise.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        let scaled = if max == 0 { 0 } else { *s * MAX_NODE_SCORE / max };
        *s = if reverse { MAX_NODE_SCORE - scaled } else { scaled };
    }
}

/// A plugin instance for the extension points it implements.
pub enum Plugin {
    /// Filter only.
    Filter(Box<dyn FilterPlugin>),
    /// Score only.
    Score(Box<dyn ScorePlugin>),
    /// Both; the same logic object serves each point.
    Both(Box<dyn FilterPlugin>, Box<dyn ScorePlugin>),
    /// PreFilter (whose state filters) and PreScore (whose state scores), for
    /// plugins that need the whole cluster.
    Cycle(Box<dyn PreFilterPlugin>, Box<dyn PreScorePlugin>),
}

/// Builds a plugin instance.
pub type PluginFactory = Arc<dyn Fn() -> Plugin + Send + Sync>;

/// Plugin name -> constructor (upstream `frameworkruntime.Registry`). A
/// constructor may capture the plugin's arguments (a profile's `pluginConfig`).
#[derive(Clone, Default)]
pub struct Registry(BTreeMap<&'static str, PluginFactory>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the constructor of `name`.
    pub fn insert(&mut self, name: &'static str, make: impl Fn() -> Plugin + Send + Sync + 'static) {
        self.0.insert(name, Arc::new(make));
    }

    /// The constructor of `name`.
    pub fn get(&self, name: &str) -> Option<&PluginFactory> {
        self.0.get(name)
    }

    /// The registered name equal to `name`, with the registry's lifetime.
    pub fn name(&self, name: &str) -> Option<&'static str> {
        self.0.get_key_value(name).map(|(k, _)| *k)
    }
}

/// An enabled plugin in a profile, with its score weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Registry name.
    pub name: &'static str,
    /// Weight of its score (ignored for filter-only plugins).
    pub weight: i64,
}

/// Why the pod fits nowhere: per node, the reasons of the first failing filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// Node name -> the failing status.
    pub node_to_status: BTreeMap<String, Status>,
    /// The reasons of a PreFilter plugin that rejected the pod for every node.
    pub pre_filter_msg: Option<String>,
}

/// Errors building a profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// A plugin name is not in the registry.
    #[error("plugin {0:?} is not registered")]
    UnknownPlugin(String),
}

/// A filter of the profile: stateless, or the state of the PreFilter plugin at an index.
enum FilterSlot {
    Plain(Box<dyn FilterPlugin>),
    Cycle(usize),
}

/// A scorer of the profile: stateless, or the PreScore plugin at an index.
enum ScoreSlot {
    Plain(Box<dyn ScorePlugin>),
    Cycle(Box<dyn PreScorePlugin>),
}

/// A scheduling profile: PreFilter, filters in order, then PreScore and weighted
/// scores (upstream `frameworkImpl` for one `schedulerName`).
pub struct Profile {
    pre_filters: Vec<Box<dyn PreFilterPlugin>>,
    filters: Vec<FilterSlot>,
    scorers: Vec<(ScoreSlot, i64)>,
    /// `percentageOfNodesToScore`; `None` (or 0 in a config) is adaptive.
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl Profile {
    /// Instantiates `plugins` from `registry`, keeping their order.
    pub fn new(registry: &Registry, plugins: &[PluginSpec]) -> Result<Self, ProfileError> {
        let mut p = Self {
            pre_filters: Vec::new(),
            filters: Vec::new(),
            scorers: Vec::new(),
            percentage_of_nodes_to_score: None,
        };
        for spec in plugins {
            let make = registry
                .get(spec.name)
                .ok_or_else(|| ProfileError::UnknownPlugin(spec.name.to_string()))?;
            match make() {
                Plugin::Filter(f) => p.filters.push(FilterSlot::Plain(f)),
                Plugin::Score(s) => p.scorers.push((ScoreSlot::Plain(s), spec.weight)),
                Plugin::Both(f, s) => {
                    p.filters.push(FilterSlot::Plain(f));
                    p.scorers.push((ScoreSlot::Plain(s), spec.weight));
                }
                Plugin::Cycle(f, s) => {
                    p.filters.push(FilterSlot::Cycle(p.pre_filters.len()));
                    p.pre_filters.push(f);
                    // Weight 0 (score disabled): no PreScore work at all.
                    if spec.weight != 0 {
                        p.scorers.push((ScoreSlot::Cycle(s), spec.weight));
                    }
                }
            }
        }
        Ok(p)
    }

    /// Adds a filter that needs state the registry cannot give it (e.g.
    /// VolumeBinding's watch caches): after the profile's other stateless filters
    /// and before the first PreFilter-backed one (PodTopologySpread,
    /// InterPodAffinity), where upstream runs the volume filters.
    pub fn add_filter(&mut self, filter: Box<dyn FilterPlugin>) {
        let at = self
            .filters
            .iter()
            .position(|f| matches!(f, FilterSlot::Cycle(_)))
            .unwrap_or(self.filters.len());
        self.filters.insert(at, FilterSlot::Plain(filter));
    }

    /// Runs every PreFilter plugin (upstream `RunPreFilterPlugins`); the first
    /// rejection stops the attempt and is returned.
    pub fn run_pre_filters(&self, pod: &PodInfo, snapshot: &Snapshot) -> Result<CycleState, Status> {
        let mut state = CycleState::default();
        for p in &self.pre_filters {
            match p.pre_filter(pod, snapshot) {
                PreFilterResult::Skip => state.filters.push(None),
                PreFilterResult::State(s) => state.filters.push(Some(s)),
                PreFilterResult::Reject(status) => return Err(status),
            }
        }
        Ok(state)
    }

    /// Runs the filters on one node with the attempt's `state`, stopping at the
    /// first failure as upstream's `RunFilterPlugins` does.
    pub fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for f in &self.filters {
            let s = match f {
                FilterSlot::Plain(f) => f.filter(pod, node),
                FilterSlot::Cycle(i) => match state.filters.get(*i) {
                    Some(Some(s)) => s.filter(pod, node),
                    _ => continue,
                },
            };
            if !s.is_success() {
                return s;
            }
        }
        Status::success()
    }

    /// Runs PreScore, then the weighted, normalized scores of the feasible
    /// nodes, in their order.
    pub fn run_scores(&self, pod: &PodInfo, nodes: &[&NodeInfo], snapshot: &Snapshot) -> Vec<i64> {
        let mut totals = vec![0; nodes.len()];
        for (plugin, weight) in &self.scorers {
            let scores = match plugin {
                ScoreSlot::Plain(plugin) => {
                    let mut scores: Vec<i64> = nodes.iter().map(|n| plugin.score(pod, n)).collect();
                    plugin.normalize(&mut scores);
                    scores
                }
                ScoreSlot::Cycle(plugin) => {
                    let Some(state) = plugin.pre_score(pod, nodes, snapshot) else {
                        continue;
                    };
                    let mut scores: Vec<i64> = nodes.iter().map(|n| state.score(pod, n)).collect();
                    state.normalize(nodes, &mut scores);
                    scores
                }
            };
            for (t, s) in totals.iter_mut().zip(scores) {
                *t += s.clamp(0, MAX_NODE_SCORE) * weight;
            }
        }
        totals
    }
}

/// How many feasible nodes to find before scoring (upstream
/// `numFeasibleNodesToFind`): all of them below 100 nodes or at 100 %; otherwise
/// `percentage` percent of them, or when it is `None` the adaptive
/// `50 - nodes/125` percent (at least 5 %); never fewer than 100.
pub fn num_feasible_nodes_to_find(total: usize, percentage: Option<u32>) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if total < MIN_FEASIBLE || percentage.is_some_and(|p| p >= 100) {
        return total;
    }
    let percentage = match percentage {
        Some(p) => p as usize,
        None => (50 - (total / 125) as i64).max(5) as usize,
    };
    (total * percentage / 100).max(MIN_FEASIBLE)
}

/// Renders the `FailedScheduling` message (upstream `FitError.Error`):
/// `0/N nodes are available: <count> <reason>, ...`, the `<count> <reason>` strings
/// sorted as strings (so `1 node(s) had ...` comes before `2 Insufficient cpu`), or
/// `no nodes available to schedule pods` when there are no nodes. A PreFilter
/// rejection reads `0/N nodes are available: <its reasons>.` instead.
pub fn failure_message(total_nodes: usize, diagnosis: &Diagnosis) -> String {
    if total_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    if let Some(msg) = &diagnosis.pre_filter_msg {
        return format!("0/{total_nodes} nodes are available: {msg}.");
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in diagnosis.node_to_status.values() {
        for r in &status.reasons {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_scales_and_reverses() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 100]);
    }

    #[test]
    fn adaptive_percentage_of_nodes_to_score() {
        assert_eq!(num_feasible_nodes_to_find(50, None), 50);
        assert_eq!(num_feasible_nodes_to_find(100, None), 100);
        // 1000 nodes: 50 - 8 = 42 %.
        assert_eq!(num_feasible_nodes_to_find(1000, None), 420);
        // 5000 nodes: 50 - 40 = 10 %.
        assert_eq!(num_feasible_nodes_to_find(5000, None), 500);
        // 10000 nodes: floor of 5 %.
        assert_eq!(num_feasible_nodes_to_find(10000, None), 500);
        // Configured: 30 % of 1000, but never fewer than 100 nodes; 100 % is all.
        assert_eq!(num_feasible_nodes_to_find(1000, Some(30)), 300);
        assert_eq!(num_feasible_nodes_to_find(200, Some(10)), 100);
        assert_eq!(num_feasible_nodes_to_find(5000, Some(100)), 5000);
    }

    #[test]
    fn failure_messages_count_sorted_reasons() {
        let mut d = Diagnosis::default();
        for (n, r) in [
            ("a", "Insufficient cpu"),
            ("b", "Insufficient cpu"),
            ("c", "node(s) had untolerated taint {a: b}"),
        ] {
            d.node_to_status.insert(n.into(), Status::new(Code::Unschedulable, r));
        }
        d.node_to_status
            .get_mut("b")
            .unwrap()
            .reasons
            .push("Insufficient memory".into());
        assert_eq!(
            failure_message(3, &d),
            "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu."
        );
        assert_eq!(failure_message(0, &d), "no nodes available to schedule pods");
    }
}
