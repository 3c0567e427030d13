//! The scheduling queue (upstream `PriorityQueue` in pkg/scheduler/backend/queue):
//!
//! - **activeQ**: pods ready for an attempt, highest `spec.priority` first, then in
//!   the order they were queued (the PrioritySort plugin).
//! - **backoffQ**: pods that failed recently, waiting out their backoff (1 s after
//!   the first failed attempt, doubling per attempt up to 10 s).
//! - **unschedulable pods**: pods no node fits; they leave only when a cluster
//!   event that could help arrives ([`SchedulingQueue::move_all`]: a node added or
//!   changed, a pod removed; [`SchedulingQueue::move_matching`]: a pod placed that
//!   their pod affinity or spread constraints select), when their own spec
//!   changes, or after 5 minutes
//!   (upstream `podMaxInUnschedulablePodsDuration`).
//!
//! Pure bookkeeping over an injected clock, so timing is unit-testable.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

/// Backoff after the first failed attempt (upstream `podInitialBackoffSeconds`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Backoff ceiling (upstream `podMaxBackoffSeconds`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest stay among unschedulable pods without a helpful event.
pub const MAX_UNSCHEDULABLE_DURATION: Duration = Duration::from_secs(5 * 60);

/// Backoff after `attempts` failed attempts: 1 s, 2 s, 4 s, 8 s, then 10 s.
pub fn backoff_duration(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d.min(MAX_BACKOFF)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    state: State,
    attempts: u32,
    /// Order of first queueing (FIFO among equal priorities).
    queued: u64,
    /// Ticket of the live activeQ heap item (older items are stale).
    ticket: u64,
    backoff_until: Instant,
    unschedulable_since: Instant,
    /// `move_cycle` when the pod was popped.
    popped_cycle: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    queued: u64,
    ticket: u64,
    uid: String,
}

impl Ord for ActiveItem {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.queued.cmp(&self.queued))
            .then_with(|| o.ticket.cmp(&self.ticket))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether an update may change the pod's scheduling result (upstream strips
/// status and bookkeeping metadata before comparing): spec, labels or annotations.
pub fn is_significant_update(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

/// The queue of pods waiting for a node, keyed by pod uid.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BTreeSet<(Instant, u64, String)>,
    seq: u64,
    move_cycle: u64,
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_active(&mut self, uid: &str) {
        let ticket = self.next_seq();
        if let Some(e) = self.entries.get_mut(uid) {
            e.state = State::Active;
            e.ticket = ticket;
            self.active.push(ActiveItem {
                priority: priority(&e.pod),
                queued: e.queued,
                ticket,
                uid: uid.to_string(),
            });
        }
    }

    fn push_backoff(&mut self, uid: &str) {
        let seq = self.next_seq();
        if let Some(e) = self.entries.get_mut(uid) {
            e.state = State::Backoff;
            self.backoff.insert((e.backoff_until, seq, uid.to_string()));
        }
    }

    /// Moves a waiting pod on: to activeQ if its backoff is over, else to backoffQ.
    fn reactivate(&mut self, uid: &str, now: Instant) {
        let Some(e) = self.entries.get(uid) else { return };
        if e.backoff_until <= now {
            self.push_active(uid);
        } else {
            self.push_backoff(uid);
        }
    }

    /// Adds a pending pod, or records a newer version of one already queued. A
    /// significant change to an unschedulable pod sends it back for another attempt.
    pub fn add(&mut self, pod: Arc<Pod>, now: Instant) {
        let u = uid(&pod);
        match self.entries.get_mut(&u) {
            None => {
                let queued = self.next_seq();
                self.entries.insert(
                    u.clone(),
                    Entry {
                        pod,
                        state: State::Active,
                        attempts: 0,
                        queued,
                        ticket: 0,
                        backoff_until: now,
                        unschedulable_since: now,
                        popped_cycle: 0,
                    },
                );
                self.push_active(&u);
            }
            Some(e) => {
                let significant = is_significant_update(&e.pod, &pod);
                let reprioritized = priority(&e.pod) != priority(&pod);
                e.pod = pod;
                match e.state {
                    State::Unschedulable if significant => self.reactivate(&u, now),
                    State::Active if reprioritized => self.push_active(&u),
                    _ => {}
                }
            }
        }
    }

    /// Forgets a pod (deleted, bound elsewhere, or no longer ours).
    pub fn remove(&mut self, uid: &str) {
        self.entries.remove(uid);
    }

    /// Keeps only the pods for which `keep(uid)` holds (after a relist).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|u, _| keep(u));
    }

    /// Whether the pod is queued or in flight.
    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// Moves pods whose time has come: finished backoffs to activeQ, pods
    /// unschedulable for [`MAX_UNSCHEDULABLE_DURATION`] back for another attempt.
    pub fn flush(&mut self, now: Instant) {
        while let Some(first) = self.backoff.first().cloned() {
            if first.0 > now {
                break;
            }
            self.backoff.pop_first();
            let (_, _, u) = first;
            if self
                .entries
                .get(&u)
                .is_some_and(|e| e.state == State::Backoff && e.backoff_until <= now)
            {
                self.push_active(&u);
            }
        }
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.state == State::Unschedulable && e.unschedulable_since + MAX_UNSCHEDULABLE_DURATION <= now
            })
            .map(|(u, _)| u.clone())
            .collect();
        for u in stale {
            self.reactivate(&u, now);
        }
    }

    /// Whether activeQ holds a pod (after [`SchedulingQueue::flush`]); drops stale
    /// heap items on the way.
    pub fn has_active(&mut self) -> bool {
        while let Some(top) = self.active.peek() {
            if self
                .entries
                .get(&top.uid)
                .is_some_and(|e| e.state == State::Active && e.ticket == top.ticket)
            {
                return true;
            }
            self.active.pop();
        }
        false
    }

    /// Takes the next pod to schedule, marking it in flight.
    pub fn pop(&mut self, now: Instant) -> Option<Arc<Pod>> {
        self.flush(now);
        while let Some(item) = self.active.pop() {
            let cycle = self.move_cycle;
            let Some(e) = self.entries.get_mut(&item.uid) else {
                continue;
            };
            if e.state != State::Active || e.ticket != item.ticket {
                continue;
            }
            e.state = State::InFlight;
            e.attempts += 1;
            e.popped_cycle = cycle;
            return Some(e.pod.clone());
        }
        None
    }

    /// The pod was assumed onto a node: it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.remove(uid);
    }

    /// No node fits the in-flight pod. It waits among the unschedulable pods, or in
    /// backoffQ if a helpful event arrived while it was being scheduled.
    pub fn unschedulable(&mut self, uid: &str, now: Instant) {
        let cycle = self.move_cycle;
        let Some(e) = self.entries.get_mut(uid) else { return };
        if e.state != State::InFlight {
            return;
        }
        e.backoff_until = now + backoff_duration(e.attempts);
        if cycle > e.popped_cycle {
            self.push_backoff(uid);
        } else {
            e.state = State::Unschedulable;
            e.unschedulable_since = now;
        }
    }

    /// An attempt failed for another reason (e.g. the binding call): retry after backoff.
    /// A pod no longer queued (it was assumed) is queued again.
    pub fn error(&mut self, pod: Arc<Pod>, now: Instant) {
        let u = uid(&pod);
        if !self.entries.contains_key(&u) {
            self.add(pod, now);
        }
        let Some(e) = self.entries.get_mut(&u) else { return };
        e.attempts = e.attempts.max(1);
        e.backoff_until = now + backoff_duration(e.attempts);
        self.push_backoff(&u);
    }

    /// A cluster event that may make unschedulable pods fit (upstream
    /// `MoveAllToActiveOrBackoffQueue`).
    pub fn move_all(&mut self, now: Instant) {
        self.move_cycle += 1;
        let waiting: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Unschedulable)
            .map(|(u, _)| u.clone())
            .collect();
        for u in waiting {
            self.reactivate(&u, now);
        }
    }

    /// A cluster event that may make some unschedulable pods fit: moves those
    /// for which `helps` holds (upstream queueing hints).
    pub fn move_matching(&mut self, now: Instant, helps: impl Fn(&Pod) -> bool) {
        let waiting: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Unschedulable && helps(&e.pod))
            .map(|(u, _)| u.clone())
            .collect();
        if waiting.is_empty() {
            return;
        }
        self.move_cycle += 1;
        for u in waiting {
            self.reactivate(&u, now);
        }
    }

    /// When [`SchedulingQueue::flush`] next has work: the earliest backoff expiry or
    /// unschedulable timeout.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.first().map(|(t, _, _)| *t);
        let unsched = self
            .entries
            .values()
            .filter(|e| e.state == State::Unschedulable)
            .map(|e| e.unschedulable_since + MAX_UNSCHEDULABLE_DURATION)
            .min();
        backoff.into_iter().chain(unsched).min()
    }

    /// Number of pods known to the queue (any state).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no pod is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, prio: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "uid": name},
                "spec": {"containers": [{"name": "c"}], "priority": prio}}))
            .unwrap(),
        )
    }

    fn name(p: Option<Arc<Pod>>) -> Option<String> {
        p.and_then(|p| p.metadata.name.clone())
    }

    #[test]
    fn pops_by_priority_then_fifo() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a", 0), t);
        q.add(pod("b", 10), t);
        q.add(pod("c", 0), t);
        assert_eq!(name(q.pop(t)).as_deref(), Some("b"));
        assert_eq!(name(q.pop(t)).as_deref(), Some("a"));
        assert_eq!(name(q.pop(t)).as_deref(), Some("c"));
        assert_eq!(q.pop(t), None);
    }

    #[test]
    fn targeted_moves_retry_only_the_pods_they_help() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        for n in ["a", "b"] {
            q.add(pod(n, 0), t);
            q.pop(t).unwrap();
            q.unschedulable(n, t);
        }
        let later = t + Duration::from_secs(5);
        q.move_matching(later, |p| p.metadata.name.as_deref() == Some("b"));
        assert_eq!(name(q.pop(later)).as_deref(), Some("b"));
        assert_eq!(q.pop(later), None, "a still waits for an event that helps it");
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let secs: Vec<u64> = (1..=6).map(|a| backoff_duration(a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn unschedulable_pods_wait_for_an_event_then_their_backoff() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a", 0), t);
        q.pop(t).unwrap();
        q.unschedulable("a", t);
        // No event: nothing to do even after the backoff.
        assert_eq!(q.pop(t + Duration::from_secs(30)), None);
        // A node appears before the 1 s backoff is over: the pod goes to backoffQ.
        q.move_all(t + Duration::from_millis(500));
        assert_eq!(q.pop(t + Duration::from_millis(600)), None);
        assert_eq!(q.next_wakeup(), Some(t + Duration::from_secs(1)));
        assert_eq!(name(q.pop(t + Duration::from_secs(1))).as_deref(), Some("a"));
        // Second failure: 2 s backoff; an event after it moves the pod straight to activeQ.
        q.unschedulable("a", t + Duration::from_secs(1));
        q.move_all(t + Duration::from_secs(4));
        assert_eq!(name(q.pop(t + Duration::from_secs(4))).as_deref(), Some("a"));
    }

    #[test]
    fn an_event_during_the_attempt_is_not_lost() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a", 0), t);
        q.pop(t).unwrap();
        q.move_all(t);
        q.unschedulable("a", t);
        assert_eq!(name(q.pop(t + Duration::from_secs(1))).as_deref(), Some("a"));
    }

    #[test]
    fn status_updates_do_not_requeue_but_spec_changes_do() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a", 0), t);
        q.pop(t).unwrap();
        q.unschedulable("a", t);
        let mut status_only = (*pod("a", 0)).clone();
        status_only.status = Some(Default::default());
        q.add(Arc::new(status_only), t + Duration::from_secs(2));
        assert_eq!(q.pop(t + Duration::from_secs(2)), None);
        let mut relabeled = (*pod("a", 0)).clone();
        relabeled.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        q.add(Arc::new(relabeled), t + Duration::from_secs(2));
        assert_eq!(name(q.pop(t + Duration::from_secs(2))).as_deref(), Some("a"));
    }

    #[test]
    fn unschedulable_pods_are_retried_after_five_minutes() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a", 0), t);
        q.pop(t).unwrap();
        q.unschedulable("a", t);
        assert_eq!(q.next_wakeup(), Some(t + MAX_UNSCHEDULABLE_DURATION));
        assert_eq!(name(q.pop(t + MAX_UNSCHEDULABLE_DURATION)).as_deref(), Some("a"));
    }

    #[test]
    fn errors_back_off_and_removed_pods_vanish() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        let a = pod("a", 0);
        q.add(a.clone(), t);
        q.pop(t).unwrap();
        q.done("a");
        assert!(q.is_empty());
        q.error(a, t);
        assert_eq!(q.pop(t), None);
        assert_eq!(name(q.pop(t + Duration::from_secs(1))).as_deref(), Some("a"));
        q.remove("a");
        q.unschedulable("a", t);
        assert!(q.is_empty());
    }
}
