//! Controller expectations (upstream pkg/controller `ControllerExpectations`): how
//! many pod creations and which pod deletions a controller has issued but not yet
//! seen through its watch. While any are outstanding the controller does not add
//! or remove pods, so a slow watch can never make it create or delete twice.
//! Expectations lapse after 5 minutes (upstream `ExpectationsTimeout`) so a lost
//! event cannot wedge a controller.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

/// How long outstanding expectations are trusted.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
struct Record {
    adds: i64,
    deletes: HashSet<String>,
    set_at: Instant,
}

/// Outstanding creations and deletions per controller, keyed by the controller's uid.
#[derive(Debug, Default)]
pub struct Expectations {
    records: HashMap<String, Record>,
}

impl Expectations {
    /// No expectations.
    pub fn new() -> Self {
        Self::default()
    }

    /// The controller is about to create `count` pods.
    pub fn expect_creations(&mut self, controller: &str, count: usize, now: Instant) {
        let r = self.records.entry(controller.to_string()).or_insert_with(|| Record {
            adds: 0,
            deletes: HashSet::new(),
            set_at: now,
        });
        r.adds = count as i64;
        r.set_at = now;
    }

    /// The controller is about to delete the pods with these uids.
    pub fn expect_deletions(&mut self, controller: &str, pods: impl IntoIterator<Item = String>, now: Instant) {
        let r = self.records.entry(controller.to_string()).or_insert_with(|| Record {
            adds: 0,
            deletes: HashSet::new(),
            set_at: now,
        });
        r.deletes = pods.into_iter().collect();
        r.set_at = now;
    }

    /// A pod owned by the controller appeared (or a creation failed and will not appear).
    pub fn creation_observed(&mut self, controller: &str) {
        if let Some(r) = self.records.get_mut(controller) {
            r.adds -= 1;
        }
    }

    /// A pod owned by the controller is going away (or its deletion failed).
    pub fn deletion_observed(&mut self, controller: &str, pod_uid: &str) {
        if let Some(r) = self.records.get_mut(controller) {
            r.deletes.remove(pod_uid);
        }
    }

    /// Whether the controller may act: nothing outstanding, or expectations expired.
    pub fn satisfied(&self, controller: &str, now: Instant) -> bool {
        match self.records.get(controller) {
            None => true,
            Some(r) => (r.adds <= 0 && r.deletes.is_empty()) || r.set_at + EXPECTATIONS_TIMEOUT <= now,
        }
    }

    /// Forgets a deleted controller.
    pub fn remove(&mut self, controller: &str) {
        self.records.remove(controller);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_and_deletions_must_be_observed() {
        let t = Instant::now();
        let mut e = Expectations::new();
        assert!(e.satisfied("rs", t));
        e.expect_creations("rs", 2, t);
        assert!(!e.satisfied("rs", t));
        e.creation_observed("rs");
        assert!(!e.satisfied("rs", t), "one of two creations seen");
        e.creation_observed("rs");
        assert!(e.satisfied("rs", t));
        e.expect_deletions("rs", ["a".to_string(), "b".to_string()], t);
        e.deletion_observed("rs", "a");
        e.deletion_observed("rs", "zzz");
        assert!(!e.satisfied("rs", t));
        e.deletion_observed("rs", "b");
        assert!(e.satisfied("rs", t));
    }

    #[test]
    fn expectations_lapse_after_the_timeout() {
        let t = Instant::now();
        let mut e = Expectations::new();
        e.expect_creations("rs", 1, t);
        assert!(!e.satisfied("rs", t + Duration::from_secs(60)));
        assert!(e.satisfied("rs", t + EXPECTATIONS_TIMEOUT));
        e.remove("rs");
        assert!(e.satisfied("rs", t));
    }
}
