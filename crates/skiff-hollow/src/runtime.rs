//! The running hollow nodes of one process, built to stay cheap at thousands of nodes:
//!
//! - **one** watch of all bound pods (`spec.nodeName!=`), dispatched in-process by node
//!   name, instead of a field-selected watch per node;
//! - **one** watch of Nodes, to re-post the status of a node the node lifecycle
//!   controller marked not Ready and to stop heartbeating a deleted one;
//! - **one** timer wheel for every node's Lease renewal: each node sits in one of
//!   [`WHEEL_SLOTS`] slots chosen at random (the jitter), the wheel advances one slot
//!   per `renew_interval / WHEEL_SLOTS`, so renewals are spread evenly instead of
//!   arriving in bursts, and no task exists per node;
//! - **one** executor that sends every request to the apiserver, with at most
//!   `max_in_flight` node requests (heartbeats before registrations) and as many pod
//!   requests in flight: a flood of pods cannot starve the leases, and when the
//!   apiserver is saturated by heartbeats, pods still make progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HollowConfig;
use crate::node::{self, LEASE_NAMESPACE};
use crate::pod;
use crate::state::{Decision, PodPhase, State};

/// Slots of the lease-renewal timer wheel (one renewal interval around).
pub const WHEEL_SLOTS: usize = 100;
/// How often progress is logged.
const STATS_INTERVAL: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Counters of what the nodes did, for progress logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Nodes registered (created or adopted).
    pub registered: AtomicU64,
    /// Lease renewals written (including the first lease).
    pub lease_renewals: AtomicU64,
    /// Node status posts after registration.
    pub status_posts: AtomicU64,
    /// Pods reported `Running`.
    pub pods_started: AtomicU64,
    /// Pods reported `Succeeded`.
    pub pods_completed: AtomicU64,
    /// Pods rejected at admission (`Failed`).
    pub pods_rejected: AtomicU64,
    /// Pods removed after graceful deletion.
    pub pods_deleted: AtomicU64,
    /// Requests that failed (each retry counts).
    pub errors: AtomicU64,
}

/// The identity of a pod for requests about it.
#[derive(Debug, Clone)]
pub(crate) struct PodKey {
    namespace: Box<str>,
    name: Box<str>,
    uid: Box<str>,
}

impl PodKey {
    fn of(p: &Pod) -> Self {
        Self {
            namespace: p.metadata.namespace.as_deref().unwrap_or_default().into(),
            name: p.metadata.name.as_deref().unwrap_or_default().into(),
            uid: p.metadata.uid.as_deref().unwrap_or_default().into(),
        }
    }
}

/// Which status write a [`Work::PodStatus`] is.
#[derive(Debug)]
pub(crate) enum StatusWrite {
    /// `Running`; with the pod and its address when it is to complete later.
    Start(Option<Box<(Pod, String)>>),
    /// `Succeeded`.
    Finish,
    /// `Failed` at admission.
    Reject,
}

/// One request (or short sequence of requests) for the executor.
#[derive(Debug)]
pub(crate) enum Work {
    Register {
        slot: u32,
        attempt: u32,
    },
    Heartbeat {
        slot: u32,
    },
    PodStatus {
        key: PodKey,
        status: Value,
        write: StatusWrite,
        attempt: u32,
    },
    PodDelete {
        key: PodKey,
        attempt: u32,
    },
}

/// Whether a failed request is worth retrying as it is.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(6));
    let jitter = rand::rng().random_range(0..=base.as_millis() as u64 / 2);
    (base + Duration::from_millis(jitter)).min(MAX_BACKOFF)
}

/// Shared by the watches, the wheel and the executor.
pub(crate) struct Hollow {
    client: kube::Client,
    cfg: HollowConfig,
    state: Mutex<State>,
    pub(crate) stats: Arc<Stats>,
    heartbeats: mpsc::UnboundedSender<Work>,
    registrations: mpsc::UnboundedSender<Work>,
    pod_work: mpsc::UnboundedSender<Work>,
    shutdown: CancellationToken,
    started: Instant,
    /// Renewals between two node status posts.
    report_every: u32,
}

pub(crate) type Queues = (
    mpsc::UnboundedReceiver<Work>,
    mpsc::UnboundedReceiver<Work>,
    mpsc::UnboundedReceiver<Work>,
);

impl Hollow {
    pub(crate) fn new(
        client: kube::Client,
        cfg: HollowConfig,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, Queues) {
        let (hb_tx, hb_rx) = mpsc::unbounded_channel();
        let (reg_tx, reg_rx) = mpsc::unbounded_channel();
        let (pod_tx, pod_rx) = mpsc::unbounded_channel();
        let report_every =
            (cfg.status_report_frequency.as_millis() / cfg.renew_interval().as_millis().max(1)).max(1) as u32;
        let mut state = State::new(&cfg);
        {
            // Spread the periodic status posts over the report period.
            let mut rng = rand::rng();
            for n in &mut state.nodes {
                n.renewals_since_status = rng.random_range(0..report_every);
            }
        }
        let me = Arc::new(Self {
            client,
            cfg,
            state: Mutex::new(state),
            stats,
            heartbeats: hb_tx,
            registrations: reg_tx,
            pod_work: pod_tx,
            shutdown,
            started: Instant::now(),
            report_every,
        });
        (me, (hb_rx, reg_rx, pod_rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("hollow state lock")
    }

    fn send(&self, work: Work) {
        let queue = match &work {
            Work::Heartbeat { .. } => &self.heartbeats,
            Work::Register { .. } => &self.registrations,
            Work::PodStatus { .. } | Work::PodDelete { .. } => &self.pod_work,
        };
        // The receivers live as long as the executor; after shutdown nothing matters.
        let _ = queue.send(work);
    }

    /// Queues `work` again after a backoff.
    fn retry(self: &Arc<Self>, work: Work, attempt: u32) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.shutdown.cancelled() => {}
                _ = tokio::time::sleep(backoff(attempt)) => me.send(work),
            }
        });
    }

    /// Queues the registration of every node.
    pub(crate) fn register_all(&self) {
        let mut st = self.lock();
        for (slot, n) in st.nodes.iter_mut().enumerate() {
            n.busy = true;
            let _ = self.registrations.send(Work::Register {
                slot: slot as u32,
                attempt: 0,
            });
        }
    }

    /// Sends queued work to the apiserver: node requests (heartbeats first, then
    /// registrations) and pod requests each with at most `max_in_flight` in flight,
    /// so that neither class starves the other when the apiserver is saturated.
    pub(crate) async fn executor(self: Arc<Self>, queues: Queues) {
        let (mut heartbeats, mut registrations, mut pods) = queues;
        let node_limit = Arc::new(Semaphore::new(self.cfg.max_in_flight));
        let pod_limit = Arc::new(Semaphore::new(self.cfg.max_in_flight));
        let pod_side = {
            let me = self.clone();
            async move {
                loop {
                    let permit = tokio::select! {
                        _ = me.shutdown.cancelled() => return,
                        p = pod_limit.clone().acquire_owned() => p.expect("semaphore never closed"),
                    };
                    let work = tokio::select! {
                        _ = me.shutdown.cancelled() => return,
                        w = pods.recv() => match w { Some(w) => w, None => return },
                    };
                    me.clone().spawn(work, permit);
                }
            }
        };
        let node_side = async move {
            loop {
                let permit = tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    p = node_limit.clone().acquire_owned() => p.expect("semaphore never closed"),
                };
                let work = tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return,
                    Some(w) = heartbeats.recv() => w,
                    Some(w) = registrations.recv() => w,
                    else => return,
                };
                self.clone().spawn(work, permit);
            }
        };
        tokio::join!(pod_side, node_side);
    }

    fn spawn(self: Arc<Self>, work: Work, permit: tokio::sync::OwnedSemaphorePermit) {
        tokio::spawn(async move {
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = self.clone().execute(work) => {}
            }
            drop(permit);
        });
    }

    async fn execute(self: Arc<Self>, work: Work) {
        match work {
            Work::Register { slot, attempt } => self.register(slot, attempt).await,
            Work::Heartbeat { slot } => self.heartbeat(slot).await,
            Work::PodStatus {
                key,
                status,
                write,
                attempt,
            } => self.write_pod_status(key, status, write, attempt).await,
            Work::PodDelete { key, attempt } => self.delete_pod(key, attempt).await,
        }
    }

    fn node_api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Registers node `slot`: creates the Node with its status (or adopts an existing
    /// one, re-posting its status), then its Lease.
    async fn register(self: Arc<Self>, slot: u32, attempt: u32) {
        let index = self.cfg.first_index + slot;
        let name = self.cfg.node_name(index);
        let now = jiff::Timestamp::now();
        let now_s = rfc3339(now);
        let nodes = self.node_api();
        let created = match nodes
            .create(&PostParams::default(), &node::node_object(&self.cfg, index, &now_s))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The Node exists (this process restarted): adopt it with a fresh status.
                let status = json!({"status": node::node_status(&self.cfg, index, &now_s, &now_s)});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
            }
            other => other,
        };
        let uid = match created {
            Ok(n) => n.metadata.uid.unwrap_or_default(),
            Err(e) if transient(&e) || code(&e) == Some(404) => {
                tracing::debug!(node = %name, error = %e, "registering node failed; retrying");
                return self.clone().retry(
                    Work::Register {
                        slot,
                        attempt: attempt + 1,
                    },
                    attempt,
                );
            }
            Err(e) => {
                tracing::error!(node = %name, error = %e, "registering node failed; the node stays unregistered");
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        {
            let mut st = self.lock();
            let n = &mut st.nodes[slot as usize];
            n.uid = Some(uid.as_str().into());
            n.ready_since = now.as_second();
            n.deleted = false;
        }
        if let Err(e) = self.renew_lease(slot, &name, &uid).await {
            tracing::debug!(node = %name, error = %e, "creating node lease failed; the next heartbeat retries");
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.lock().nodes[slot as usize].busy = false;
        let done = self.stats.registered.fetch_add(1, Ordering::Relaxed) + 1;
        let total = u64::from(self.cfg.nodes);
        if done == total {
            tracing::info!(
                nodes = total,
                seconds = format!("{:.1}", self.started.elapsed().as_secs_f64()),
                "all hollow nodes registered"
            );
        } else if total >= 10 && done.is_multiple_of(total / 10) {
            tracing::info!("registered {done}/{total} hollow nodes");
        }
    }

    /// Writes the Lease of node `slot` renewed now: an update against the last known
    /// resourceVersion, falling back to a read (conflict) or create (missing), as the
    /// kubelet's lease controller does.
    async fn renew_lease(&self, slot: u32, name: &str, uid: &str) -> Result<(), kube::Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let duration = self.cfg.lease_duration_seconds;
        let pp = PostParams::default();
        let rv = self.lock().nodes[slot as usize].lease_rv.clone();
        let now = jiff::Timestamp::now();
        let first = match rv.as_deref() {
            Some(rv) => {
                leases
                    .replace(name, &pp, &node::lease_object(name, uid, duration, Some(rv), now))
                    .await
            }
            None => {
                leases
                    .create(&pp, &node::lease_object(name, uid, duration, None, now))
                    .await
            }
        };
        let lease = match first {
            Ok(l) => l,
            Err(e) if matches!(code(&e), Some(404 | 409)) => match leases.get_opt(name).await? {
                Some(cur) => {
                    let rv = cur.metadata.resource_version.as_deref();
                    leases
                        .replace(name, &pp, &node::lease_object(name, uid, duration, rv, now))
                        .await?
                }
                None => {
                    leases
                        .create(&pp, &node::lease_object(name, uid, duration, None, now))
                        .await?
                }
            },
            Err(e) => return Err(e),
        };
        self.lock().nodes[slot as usize].lease_rv = lease.metadata.resource_version.map(Into::into);
        self.stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One heartbeat of node `slot`: its status when due (every report period, or at
    /// once after it was seen not Ready), then its Lease.
    async fn heartbeat(self: Arc<Self>, slot: u32) {
        let index = self.cfg.first_index + slot;
        let name = self.cfg.node_name(index);
        let now = jiff::Timestamp::now();
        let (uid, report, since) = {
            let mut st = self.lock();
            let n = &mut st.nodes[slot as usize];
            n.renewals_since_status += 1;
            if n.force_status {
                n.ready_since = now.as_second();
            }
            let report = n.force_status || n.renewals_since_status >= self.report_every;
            (n.uid.clone(), report, n.ready_since)
        };
        let Some(uid) = uid else {
            self.lock().nodes[slot as usize].busy = false;
            return;
        };
        if report {
            let since = jiff::Timestamp::from_second(since).unwrap_or(now);
            let status = json!({"status": node::node_status(&self.cfg, index, &rfc3339(now), &rfc3339(since))});
            match self
                .node_api()
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => {
                    self.stats.status_posts.fetch_add(1, Ordering::Relaxed);
                    let mut st = self.lock();
                    let n = &mut st.nodes[slot as usize];
                    n.renewals_since_status = 0;
                    n.force_status = false;
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "posting node status failed");
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Err(e) = self.renew_lease(slot, &name, &uid).await {
            tracing::debug!(node = %name, error = %e, "renewing node lease failed");
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.lock().nodes[slot as usize].busy = false;
    }

    /// Advances the lease-renewal wheel until shutdown.
    pub(crate) async fn wheel(self: Arc<Self>) {
        let mut wheel: Vec<Vec<u32>> = vec![Vec::new(); WHEEL_SLOTS];
        {
            let mut rng = rand::rng();
            for slot in 0..self.cfg.nodes {
                wheel[rng.random_range(0..WHEEL_SLOTS)].push(slot);
            }
        }
        let tick = self.cfg.renew_interval() / WHEEL_SLOTS as u32;
        let mut interval = tokio::time::interval_at(Instant::now() + tick, tick);
        let mut k = 0;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let mut st = self.lock();
            for &slot in &wheel[k] {
                let n = &mut st.nodes[slot as usize];
                if n.uid.is_some() && !n.deleted && !n.busy {
                    n.busy = true;
                    let _ = self.heartbeats.send(Work::Heartbeat { slot });
                }
            }
            drop(st);
            k = (k + 1) % WHEEL_SLOTS;
        }
    }

    /// Watches Nodes: a node of ours seen not Ready gets its status re-posted at once;
    /// a deleted one stops heartbeating.
    pub(crate) async fn watch_nodes(self: Arc<Self>) {
        let mut stream = watcher(self.node_api(), watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            let ev = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Err(e)) => tracing::debug!(error = %e, "node watch failed; retrying"),
                Some(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => {
                    let Some(slot) = n.metadata.name.as_deref().and_then(|name| self.cfg.slot_of(name)) else {
                        continue;
                    };
                    if !node::needs_status(&n) {
                        continue;
                    }
                    let mut st = self.lock();
                    let state = &mut st.nodes[slot as usize];
                    let ours = state
                        .uid
                        .as_deref()
                        .is_some_and(|u| Some(u) == n.metadata.uid.as_deref());
                    if ours && !state.deleted {
                        state.force_status = true;
                        if !state.busy {
                            state.busy = true;
                            let _ = self.heartbeats.send(Work::Heartbeat { slot });
                        }
                    }
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    let Some(slot) = n.metadata.name.as_deref().and_then(|name| self.cfg.slot_of(name)) else {
                        continue;
                    };
                    let mut st = self.lock();
                    let state = &mut st.nodes[slot as usize];
                    if state
                        .uid
                        .as_deref()
                        .is_some_and(|u| Some(u) == n.metadata.uid.as_deref())
                    {
                        tracing::warn!(node = %self.cfg.node_name(self.cfg.first_index + slot), "node was deleted; it stops heartbeating");
                        state.deleted = true;
                        state.lease_rv = None;
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Watches every bound pod and dispatches it to its node.
    pub(crate) async fn watch_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default().fields("spec.nodeName!="))
            .default_backoff()
            .boxed();
        loop {
            let ev = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Err(e)) => tracing::debug!(error = %e, "pod watch failed; retrying"),
                Some(Ok(watcher::Event::Init)) => self.lock().relist_started(),
                Some(Ok(watcher::Event::InitDone)) => self.lock().relist_done(),
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => self.on_pod(p),
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(uid) = p.metadata.uid.as_deref() {
                        self.lock().remove(uid);
                    }
                }
            }
        }
    }

    fn on_pod(self: &Arc<Self>, p: Pod) {
        let Some(slot) = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| self.cfg.slot_of(n))
        else {
            return;
        };
        let decision = self.lock().observe(&self.cfg, slot, &p);
        let key = PodKey::of(&p);
        match decision {
            Decision::Nothing => {}
            Decision::Start { pod_ip } => {
                let host_ip = self.cfg.node_ip(self.cfg.first_index + slot).to_string();
                let pod_ip = pod_ip.to_string();
                let now = rfc3339(jiff::Timestamp::now());
                let status = pod::running_status(&p, &host_ip, &pod_ip, &now);
                let completes =
                    (self.cfg.complete_after.is_some() && pod::runs_to_completion(&p)).then(|| Box::new((p, pod_ip)));
                self.send(Work::PodStatus {
                    key,
                    status,
                    write: StatusWrite::Start(completes),
                    attempt: 0,
                });
            }
            Decision::Reject { reason, message } => {
                tracing::warn!(pod = %format!("{}/{}", key.namespace, key.name), %reason, %message, "pod rejected at admission");
                self.send(Work::PodStatus {
                    key,
                    status: json!({"phase": "Failed", "reason": reason, "message": message}),
                    write: StatusWrite::Reject,
                    attempt: 0,
                });
            }
            Decision::Delete => self.send(Work::PodDelete { key, attempt: 0 }),
        }
    }

    async fn write_pod_status(self: Arc<Self>, key: PodKey, status: Value, write: StatusWrite, attempt: u32) {
        let due = match write {
            StatusWrite::Start(_) => PodPhase::Starting,
            StatusWrite::Finish => PodPhase::Finishing,
            StatusWrite::Reject => PodPhase::Finished,
        };
        if !self.lock().is(&key.uid, due) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        // The UID in the patch makes it fail on a pod recreated under the same name.
        let body = json!({"metadata": {"uid": key.uid}, "status": status});
        match api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => match write {
                StatusWrite::Start(completes) => {
                    self.stats.pods_started.fetch_add(1, Ordering::Relaxed);
                    let still_running = self.lock().started(&key.uid);
                    if still_running && let (Some(after), Some(c)) = (self.cfg.complete_after, completes) {
                        self.complete_later(key, *c, after);
                    }
                }
                StatusWrite::Finish => {
                    self.stats.pods_completed.fetch_add(1, Ordering::Relaxed);
                    self.lock().finished(&key.uid);
                }
                StatusWrite::Reject => {
                    self.stats.pods_rejected.fetch_add(1, Ordering::Relaxed);
                }
            },
            // Gone: its DELETED event cleans up.
            Err(e) if code(&e) == Some(404) => {}
            Err(e) if transient(&e) => self.clone().retry(
                Work::PodStatus {
                    key,
                    status,
                    write,
                    attempt: attempt + 1,
                },
                attempt,
            ),
            Err(e) => {
                tracing::warn!(pod = %format!("{}/{}", key.namespace, key.name), error = %e, "writing pod status failed");
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(write, StatusWrite::Start(_)) {
                    self.lock().start_failed(&key.uid);
                }
            }
        }
    }

    /// After `after`, reports a run-to-completion pod `Succeeded`.
    fn complete_later(self: &Arc<Self>, key: PodKey, (p, pod_ip): (Pod, String), after: Duration) {
        let me = self.clone();
        let started_at = rfc3339(jiff::Timestamp::now());
        tokio::spawn(async move {
            tokio::select! {
                _ = me.shutdown.cancelled() => return,
                _ = tokio::time::sleep(after) => {}
            }
            if !me.lock().finishing(&key.uid) {
                return;
            }
            let slot = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .and_then(|n| me.cfg.slot_of(n))
                .unwrap_or_default();
            let host_ip = me.cfg.node_ip(me.cfg.first_index + slot).to_string();
            let now = rfc3339(jiff::Timestamp::now());
            let status = pod::succeeded_status(&p, &host_ip, &pod_ip, &started_at, &now);
            me.send(Work::PodStatus {
                key,
                status,
                write: StatusWrite::Finish,
                attempt: 0,
            });
        });
    }

    /// Removes a pod whose deletion was requested: its (absent) containers are
    /// stopped, so the kubelet's final delete with grace period 0 and a UID
    /// precondition follows at once.
    async fn delete_pod(self: Arc<Self>, key: PodKey, attempt: u32) {
        if !self.lock().is(&key.uid, PodPhase::Deleting) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(key.uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&key.name, &dp).await {
            Ok(_) => {
                self.stats.pods_deleted.fetch_add(1, Ordering::Relaxed);
            }
            // Already gone, or the name now belongs to another pod.
            Err(e) if matches!(code(&e), Some(404 | 409)) => {}
            Err(e) if transient(&e) => self.clone().retry(
                Work::PodDelete {
                    key,
                    attempt: attempt + 1,
                },
                attempt,
            ),
            Err(e) => {
                tracing::warn!(pod = %format!("{}/{}", key.namespace, key.name), error = %e, "deleting pod failed");
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Logs progress every [`STATS_INTERVAL`] until shutdown.
    pub(crate) async fn report(self: Arc<Self>) {
        let mut interval = tokio::time::interval_at(Instant::now() + STATS_INTERVAL, STATS_INTERVAL);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let (running, pods) = {
                let st = self.lock();
                (st.running(), st.pods.len())
            };
            let s = &self.stats;
            tracing::info!(
                registered = s.registered.load(Ordering::Relaxed),
                nodes = self.cfg.nodes,
                pods_running = running,
                pods_known = pods,
                lease_renewals = s.lease_renewals.load(Ordering::Relaxed),
                pods_started = s.pods_started.load(Ordering::Relaxed),
                pods_deleted = s.pods_deleted.load(Ordering::Relaxed),
                errors = s.errors.load(Ordering::Relaxed),
                "hollow nodes"
            );
        }
    }
}
