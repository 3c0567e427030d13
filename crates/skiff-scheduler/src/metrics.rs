//! The scheduler's Prometheus metrics, named and bucketed as kube-scheduler's
//! (upstream pkg/scheduler/metrics):
//!
//! - `scheduler_scheduling_attempt_duration_seconds{result, profile}`: histogram of
//!   one scheduling attempt (filter, score and node choice, up to the moment the
//!   binding is handed off), buckets 1 ms doubling 15 times;
//! - `scheduler_schedule_attempts_total{result, profile}`: counter of attempts.
//!
//! `result` is `scheduled`, `unschedulable` or `error`. The metrics live in one
//! process-wide set, as upstream's legacy registry; [`register`] adds them to the
//! registry a server exposes on `/metrics`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome label of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptResult {
    /// A node was chosen.
    Scheduled,
    /// No node fits.
    Unschedulable,
    /// The attempt failed internally.
    Error,
}

impl AttemptResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Unschedulable => "unschedulable",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
    profile: String,
}

struct Metrics {
    attempt_duration: Family<AttemptLabels, Histogram>,
    attempts: Family<AttemptLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    attempt_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15))),
    attempts: Family::default(),
});

/// Records one scheduling attempt of `profile` that took `elapsed`.
pub fn observe_attempt(profile: &str, result: AttemptResult, elapsed: Duration) {
    let labels = AttemptLabels {
        result: result.as_str(),
        profile: profile.to_string(),
    };
    METRICS
        .attempt_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    METRICS.attempts.get_or_create(&labels).inc();
}

/// Adds the scheduler's metrics to `registry` (prefix `scheduler_`).
pub fn register(registry: &mut Registry) {
    let sub = registry.sub_registry_with_prefix("scheduler");
    sub.register(
        "scheduling_attempt_duration_seconds",
        "Scheduling attempt latency in seconds (scheduling algorithm + binding hand-off)",
        METRICS.attempt_duration.clone(),
    );
    sub.register(
        "schedule_attempts",
        "Number of attempts to schedule pods, by the result",
        METRICS.attempts.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn attempts_are_exposed_in_the_text_format() {
        let mut registry = Registry::default();
        register(&mut registry);
        observe_attempt(
            "default-scheduler",
            AttemptResult::Scheduled,
            Duration::from_micros(1500),
        );
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("# TYPE scheduler_scheduling_attempt_duration_seconds histogram"),
            "{out}"
        );
        // 1.5 ms falls in the 2 ms bucket, not the 1 ms one.
        let bucket = |le: &str| {
            format!(
                r#"scheduler_scheduling_attempt_duration_seconds_bucket{{le="{le}",result="scheduled",profile="default-scheduler"}}"#
            )
        };
        assert!(out.contains(&format!("{} 0\n", bucket("0.001"))), "{out}");
        assert!(out.contains(&format!("{} 1\n", bucket("0.002"))), "{out}");
        assert!(out.contains(&format!("{} 1\n", bucket("+Inf"))), "{out}");
        assert!(
            out.contains(r#"scheduler_schedule_attempts_total{result="scheduled",profile="default-scheduler"}"#),
            "{out}"
        );
    }
}
