//! The Skiff scheduler: places unbound pods on nodes the way kube-scheduler does.
//!
//! It is an ordinary API client: it watches pods and nodes through the apiserver,
//! keeps a [`cache`] of nodes with the requests of their pods (including pods it
//! has *assumed* onto a node while their binding is in flight), takes pods from
//! the [`queue`] (priority order, backoff 1 s doubling to 10 s, unschedulable pods
//! retried on cluster events), runs the [`framework`]'s filter and score
//! [`plugins`] in [`algorithm`], and binds through `pods/{name}/binding`
//! ([`binder`]). A pod that fits nowhere gets a `FailedScheduling` event and a
//! `PodScheduled=False` condition (reason `Unschedulable`) carrying the upstream
//! message, e.g. `0/3 nodes are available: 1 node(s) had untolerated taint
//! {dedicated: gpu}, 2 Insufficient cpu.`, followed by what [`preemption`] found
//! (lower-priority pods are preempted to make room, as upstream DefaultPreemption).
//!
//! It schedules only while it holds the Lease `kube-system/kube-scheduler`
//! (leader election from the `skiff-leader` crate, client-go semantics).
#![deny(missing_docs)]

pub mod affinity_terms;
pub mod algorithm;
pub mod binder;
pub mod cache;
pub mod config;
pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod pod_index;
pub mod preemption;
pub mod queue;
mod reflect;
pub mod resources;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use rand::SeedableRng;
use skiff_api::events::EventType;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use binder::Binder;
use cache::Cache;
use config::SchedulerConfig;
use framework::{PodInfo, Profile, ProfileError};
use queue::SchedulingQueue;

/// The `spec.schedulerName` this scheduler serves (pods without one get it by
/// defaulting), also its event source component.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Pods attempted before the loop looks at watch events again.
const BATCH: usize = 64;

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scheduling profile could not be built.
    #[error("scheduler profile: {0}")]
    Profile(#[from] ProfileError),
    /// The scheduler configuration is invalid.
    #[error("scheduler configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// The leader-election configuration is invalid.
    #[error("leader election: {0}")]
    LeaderElection(#[from] skiff_leader::ConfigError),
}

/// Name of the Lease in `kube-system` the scheduler campaigns for, as upstream.
pub const LEASE_NAME: &str = "kube-scheduler";

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// Whether this scheduler's default profile should place the pod: not bound,
/// `schedulerName` [`SCHEDULER_NAME`] (or unset), no `schedulingGates`, not being
/// deleted, not finished.
pub fn is_pending(p: &Pod) -> bool {
    needs_node(p) && scheduler_name(p) == SCHEDULER_NAME
}

/// The pod's `spec.schedulerName`, [`SCHEDULER_NAME`] when unset.
pub fn scheduler_name(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(SCHEDULER_NAME)
}

/// Not bound, no `schedulingGates`, not being deleted, not finished: some
/// scheduler should place it.
fn needs_node(p: &Pod) -> bool {
    let Some(spec) = p.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
        && p.metadata.deletion_timestamp.is_none()
        && !cache::is_terminal(p)
}

/// The outcome of a binding call, reported back to the scheduling loop.
struct Bound {
    pod: Arc<Pod>,
    node: String,
    result: Result<(), kube::Error>,
}

/// The scheduling loop's state: everything but the API calls.
struct Scheduler {
    /// Profiles by the `schedulerName` they serve.
    profiles: BTreeMap<String, Profile>,
    cache: Cache,
    queue: SchedulingQueue,
    pods_synced: bool,
    nodes_synced: bool,
    namespaces_synced: bool,
    pod_buffer: Vec<Arc<Pod>>,
    node_buffer: Vec<Arc<Node>>,
    namespace_buffer: Vec<Namespace>,
    next_start: usize,
    rng: rand::rngs::StdRng,
    preemption: preemption::Preemption,
}

impl Scheduler {
    fn new(profiles: BTreeMap<String, Profile>) -> Self {
        Self {
            profiles,
            cache: Cache::new(),
            queue: SchedulingQueue::new(),
            pods_synced: false,
            nodes_synced: false,
            namespaces_synced: false,
            pod_buffer: Vec::new(),
            node_buffer: Vec::new(),
            namespace_buffer: Vec::new(),
            next_start: 0,
            rng: rand::rngs::StdRng::from_os_rng(),
            preemption: preemption::Preemption::new(),
        }
    }

    /// Whether one of this scheduler's profiles should place the pod.
    fn is_pending(&self, p: &Pod) -> bool {
        needs_node(p) && self.profiles.contains_key(scheduler_name(p))
    }

    fn synced(&self) -> bool {
        self.pods_synced && self.nodes_synced && self.namespaces_synced
    }

    /// Namespace labels feed pod affinity's `namespaceSelector`; a label change
    /// retries waiting pods.
    fn on_namespace_event(&mut self, event: watcher::Event<Namespace>, now: Instant) {
        let helps = match event {
            watcher::Event::Init => {
                self.namespace_buffer.clear();
                false
            }
            watcher::Event::InitApply(ns) => {
                self.namespace_buffer.push(ns);
                false
            }
            watcher::Event::InitDone => {
                self.cache
                    .replace_namespaces(&std::mem::take(&mut self.namespace_buffer));
                self.namespaces_synced = true;
                true
            }
            watcher::Event::Apply(ns) => self.cache.set_namespace(&ns),
            watcher::Event::Delete(ns) => {
                self.cache
                    .remove_namespace(ns.metadata.name.as_deref().unwrap_or_default());
                false
            }
        };
        if helps {
            self.queue.move_all(now);
        }
    }

    /// A pod was placed on a node: retry the waiting pods it may help (the
    /// `AssignedPodAdd` queueing hints of InterPodAffinity and PodTopologySpread).
    fn on_pod_placed(&mut self, pod: &Pod, now: Instant) {
        let namespaces = self.cache.namespaces();
        self.queue.move_matching(now, |waiting| {
            plugins::inter_pod_affinity::pod_added_may_help(waiting, pod, namespaces)
                || plugins::pod_topology_spread::pod_added_may_help(waiting, pod)
        });
    }

    fn on_pod(&mut self, pod: Arc<Pod>, now: Instant) {
        let u = uid(&pod);
        let newly_bound = cache::bound_node(&pod).is_some() && !cache::is_terminal(&pod) && !self.cache.is_placed(&u);
        let released = self.cache.observe_pod(&pod);
        let pending = self.is_pending(&pod);
        self.preemption.observe_pod(&pod, pending);
        if newly_bound {
            self.on_pod_placed(&pod, now);
        }
        if pending {
            if !self.cache.is_assumed(&u) {
                self.queue.add(pod, now);
            }
        } else {
            self.queue.remove(&u);
        }
        if released {
            self.queue.move_all(now);
        }
    }

    fn on_pod_event(&mut self, event: watcher::Event<Pod>, now: Instant) {
        match event {
            watcher::Event::Init => self.pod_buffer.clear(),
            watcher::Event::InitApply(p) => self.pod_buffer.push(Arc::new(p)),
            watcher::Event::InitDone => {
                let pods = std::mem::take(&mut self.pod_buffer);
                let released = self.cache.replace_pods(&pods);
                let pending: std::collections::HashSet<String> =
                    pods.iter().filter(|p| self.is_pending(p)).map(|p| uid(p)).collect();
                self.queue.retain(|u| pending.contains(u));
                self.preemption.retain_listed(&pods.iter().map(|p| uid(p)).collect());
                for p in pods {
                    self.on_pod(p, now);
                }
                if released {
                    self.queue.move_all(now);
                }
                self.pods_synced = true;
            }
            watcher::Event::Apply(p) => self.on_pod(Arc::new(p), now),
            watcher::Event::Delete(p) => {
                let u = uid(&p);
                self.queue.remove(&u);
                self.preemption.remove_pod(&u);
                if self.cache.remove_pod(&u) {
                    self.queue.move_all(now);
                }
            }
        }
    }

    fn on_node_event(&mut self, event: watcher::Event<Node>, now: Instant) {
        let helps = match event {
            watcher::Event::Init => {
                self.node_buffer.clear();
                false
            }
            watcher::Event::InitApply(n) => {
                self.node_buffer.push(Arc::new(n));
                false
            }
            watcher::Event::InitDone => {
                self.nodes_synced = true;
                self.cache.replace_nodes(std::mem::take(&mut self.node_buffer))
            }
            watcher::Event::Apply(n) => self.cache.set_node(Arc::new(n)),
            watcher::Event::Delete(n) => {
                self.cache.remove_node(n.metadata.name.as_deref().unwrap_or_default());
                false
            }
        };
        if helps {
            self.queue.move_all(now);
        }
    }

    /// Attempts up to [`BATCH`] pods; bindings and failure reports run as tasks.
    fn schedule_batch(&mut self, binder: &Arc<Binder>, bound: &mpsc::UnboundedSender<Bound>, now: Instant) {
        for _ in 0..BATCH {
            let Some(pod) = self.queue.pop(now) else { return };
            let u = uid(&pod);
            let info = PodInfo::new(pod.clone());
            let Some((profile_name, profile)) = self.profiles.get_key_value(scheduler_name(&pod)) else {
                // Its schedulerName changed to one this scheduler does not serve.
                self.queue.done(&u);
                continue;
            };
            let started = std::time::Instant::now();
            let result = algorithm::schedule_pod_with(
                profile,
                &self.cache,
                &self.preemption.nominator,
                &info,
                &mut self.next_start,
                &mut self.rng,
            );
            let attempt = match result {
                Ok(_) => metrics::AttemptResult::Scheduled,
                Err(_) => metrics::AttemptResult::Unschedulable,
            };
            metrics::observe_attempt(profile_name, attempt, started.elapsed());
            match result {
                Ok(node) => {
                    self.preemption.nominator.remove(&u);
                    self.cache.assume(&pod, &node);
                    self.queue.done(&u);
                    self.on_pod_placed(&pod, now);
                    let (binder, bound) = (binder.clone(), bound.clone());
                    tokio::spawn(async move {
                        let result = binder.bind(&pod, &node).await;
                        let _ = bound.send(Bound { pod, node, result });
                    });
                }
                Err(fit) => {
                    self.queue.unschedulable(&u, now);
                    let outcome = self.preemption.post_filter(
                        &self.profiles[scheduler_name(&pod)],
                        &self.cache,
                        &info,
                        &fit,
                        &mut self.rng,
                    );
                    let message = outcome.message(&fit);
                    tracing::debug!(pod = %pod.metadata.name.as_deref().unwrap_or_default(), %message, "unschedulable");
                    let binder = binder.clone();
                    let mut unnominate = false;
                    let preempt = match outcome {
                        preemption::Outcome::Preempt { candidate, clear } => {
                            self.preemption.nominate(&pod, &candidate.node, &clear);
                            Some((candidate, clear))
                        }
                        preemption::Outcome::Fail(_) => None,
                        preemption::Outcome::NoCandidate(_) => {
                            // Upstream withdraws the nomination of a pod preemption cannot help.
                            self.preemption.nominator.remove(&u);
                            unnominate = pod.status.as_ref().is_some_and(|s| s.nominated_node_name.is_some());
                            None
                        }
                    };
                    tokio::spawn(async move {
                        let client = binder.client().clone();
                        if let Some((c, clear)) = preempt {
                            preemption::prepare_candidate(&client, &binder, &pod, &c.node, &c.victims.pods, &clear)
                                .await;
                        } else if unnominate {
                            preemption::set_nominated_node_name(&client, &pod, None).await;
                        }
                        binder.unschedulable(&pod, &message).await
                    });
                }
            }
        }
    }

    /// A binding finished. On failure the assumption is dropped and the pod retried
    /// after backoff, unless it is gone or already bound (the watch will say).
    fn on_bound(&mut self, b: Bound, binder: &Arc<Binder>, now: Instant) {
        let Err(e) = b.result else { return };
        let u = uid(&b.pod);
        self.cache.forget(&u);
        self.queue.move_all(now);
        let gone = matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
        tracing::warn!(pod = %b.pod.metadata.name.as_deref().unwrap_or_default(), node = %b.node, error = %e, "binding failed");
        if gone {
            return;
        }
        self.queue.error(b.pod.clone(), now);
        let binder = binder.clone();
        tokio::spawn(async move {
            binder
                .record(
                    &b.pod,
                    EventType::Warning,
                    "FailedScheduling",
                    &format!("binding rejected: running Bind plugin \"DefaultBinder\": {e}"),
                )
                .await
        });
    }
}

/// Campaigns for the Lease `kube-system/kube-scheduler` with the upstream
/// defaults (15 s lease, 10 s renew deadline, 2 s retry, released on shutdown)
/// and schedules with the default profile while leading, until `shutdown` is
/// cancelled. Watch failures are retried with backoff; the function returns `Ok`
/// on shutdown and errs only if the profile cannot be built.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> Result<(), Error> {
    run_with_config(client, shutdown, SchedulerConfig::default()).await
}

/// [`run`] with the profiles of a scheduler configuration.
pub async fn run_with_config(
    client: kube::Client,
    shutdown: CancellationToken,
    config: SchedulerConfig,
) -> Result<(), Error> {
    let election = skiff_leader::Config::new(skiff_leader::LEASE_NAMESPACE, LEASE_NAME);
    run_elected(client, shutdown, election, config).await
}

/// [`run`] with an explicit leader-election configuration and scheduler
/// configuration (its profiles): the scheduling loop stops when leadership is lost
/// (binding calls already sent finish on their own) and starts over from fresh
/// watches and an empty cache when it is regained.
pub async fn run_elected(
    client: kube::Client,
    shutdown: CancellationToken,
    election: skiff_leader::Config,
    config: SchedulerConfig,
) -> Result<(), Error> {
    // Fail before campaigning if a profile cannot be built.
    for p in &config.profiles {
        p.build()?;
    }
    let elector = skiff_leader::LeaderElector::new(client.clone(), election)?;
    elector
        .run(shutdown, |leading| schedule(client.clone(), config.clone(), leading))
        .await
}

/// The scheduling loop, until `shutdown` is cancelled.
async fn schedule(client: kube::Client, config: SchedulerConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let volumes = plugins::volume_binding::Volumes::start(client.clone(), shutdown.clone());
    let mut profiles = BTreeMap::new();
    for p in &config.profiles {
        let mut profile = p.build()?;
        profile.add_filter(Box::new(plugins::volume_binding::VolumeBinding::new(volumes.clone())));
        profiles.insert(p.scheduler_name.clone(), profile);
    }
    let binder = Arc::new(Binder::new(client.clone()).with_volumes(volumes.clone()));
    let mut pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut namespaces = watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let (bound_tx, mut bound_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler::new(profiles);
    s.preemption = preemption::Preemption::new().with_pdbs(preemption::watch_pdbs(client.clone(), shutdown.clone()));
    tracing::info!("scheduler started");
    loop {
        if s.synced() {
            s.schedule_batch(&binder, &bound_tx, Instant::now());
        }
        let more = s.synced() && s.queue.has_active();
        let wakeup = s.queue.next_wakeup();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            ev = pods.next() => match ev {
                Some(Ok(ev)) => s.on_pod_event(ev, Instant::now()),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => return Ok(()),
            },
            ev = nodes.next() => match ev {
                Some(Ok(ev)) => s.on_node_event(ev, Instant::now()),
                Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                None => return Ok(()),
            },
            ev = namespaces.next() => match ev {
                Some(Ok(ev)) => s.on_namespace_event(ev, Instant::now()),
                Some(Err(e)) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
                None => return Ok(()),
            },
            Some(b) = bound_rx.recv() => s.on_bound(b, &binder, Instant::now()),
            _ = volumes.changed() => s.queue.move_all(Instant::now()),
            _ = tokio::time::sleep_until(wakeup.unwrap_or_else(Instant::now)), if wakeup.is_some() => {}
            _ = std::future::ready(()), if more => {}
        }
    }
}
