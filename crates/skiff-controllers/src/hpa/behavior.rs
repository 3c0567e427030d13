//! From a metric recommendation to the replica count to set (upstream
//! horizontal.go `normalizeDesiredReplicas` and
//! `normalizeDesiredReplicasWithBehaviors`): stabilization over recent
//! recommendations, scaling-rate limits and min/max, with the AbleToScale and
//! ScalingLimited condition reasons upstream reports.
//!
//! Without `spec.behavior`: the highest recommendation of the last 5 minutes
//! (`--horizontal-pod-autoscaler-downscale-stabilization`) is used, scale up is
//! limited to `max(2 x current, 4)`. With it: the recommendation is kept between
//! the lowest of the scale-up window and the highest of the scale-down window, and
//! each direction is limited by its policies (`Pods`/`Percent` per `periodSeconds`,
//! counted from the scale events of that period, combined by `selectPolicy`
//! `Max`/`Min`, or no scaling that way with `Disabled`).

use jiff::{SignedDuration, Timestamp};

/// Upstream's default `--horizontal-pod-autoscaler-downscale-stabilization`.
pub const DOWNSCALE_STABILIZATION: SignedDuration = SignedDuration::from_secs(300);

/// A scaling policy's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyType {
    /// An absolute number of pods.
    Pods,
    /// A percentage of the replicas at the start of the period.
    Percent,
}

/// One policy: at most `value` (pods or percent) per `period_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Unit of `value`.
    pub kind: PolicyType,
    /// Amount.
    pub value: i32,
    /// Period length, seconds.
    pub period_seconds: i32,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// The rules of one direction (`HPAScalingRules`, defaulted by the apiserver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub stabilization_window_seconds: i32,
    /// `selectPolicy`.
    pub select_policy: SelectPolicy,
    /// `policies`.
    pub policies: Vec<Policy>,
}

/// `spec.behavior`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    /// `scaleUp`.
    pub scale_up: Rules,
    /// `scaleDown`.
    pub scale_down: Rules,
}

/// A completed scale in one direction: by how many replicas, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScaleEvent {
    at: Timestamp,
    change: i32,
}

/// What the controller remembers of one HPA between syncs (kept in memory, as
/// upstream does): recent recommendations and scale events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    recommendations: Vec<(Timestamp, i32)>,
    scale_up_events: Vec<ScaleEvent>,
    scale_down_events: Vec<ScaleEvent>,
}

/// A condition to set: `(status, reason, message)`.
pub type Condition = (bool, &'static str, &'static str);

/// The normalized count and the AbleToScale / ScalingLimited conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Replicas to set.
    pub replicas: i32,
    /// AbleToScale (always true here).
    pub able_to_scale: Condition,
    /// ScalingLimited.
    pub scaling_limited: Condition,
}

const READY_FOR_NEW_SCALE: Condition = (true, "ReadyForNewScale", "recommended size matches current size");
const DOWN_STABILIZED: Condition = (
    true,
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: Condition = (
    true,
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const WITHIN_RANGE: (&str, &str) = ("DesiredWithinRange", "the desired count is within the acceptable range");
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

fn limited(result: i32, wanted: i32, (reason, message): (&'static str, &'static str)) -> Condition {
    (result != wanted, reason, message)
}

/// Normalizes `desired` (the metrics' recommendation) for an HPA whose target has
/// `current` replicas, and records the recommendation in `history`.
pub fn normalize(
    history: &mut History,
    behavior: Option<&Behavior>,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Timestamp,
) -> Normalized {
    match behavior {
        None => {
            // stabilizeRecommendation: the highest recommendation within the window.
            let cutoff = now - DOWNSCALE_STABILIZATION;
            let stabilized = history
                .recommendations
                .iter()
                .filter(|(at, _)| *at > cutoff)
                .map(|(_, r)| *r)
                .fold(desired, i32::max);
            record(history, now, desired, cutoff, cutoff);
            let able = if stabilized != desired {
                DOWN_STABILIZED
            } else {
                READY_FOR_NEW_SCALE
            };
            // convertDesiredReplicasWithRules.
            let up_limit = (2 * current).max(4);
            let (max_allowed, max_reason) = if max > up_limit {
                (up_limit, UP_LIMIT)
            } else {
                (max, TOO_MANY)
            };
            let (replicas, reason) = if stabilized < min {
                (min, TOO_FEW)
            } else if stabilized > max_allowed {
                (max_allowed, max_reason)
            } else {
                (stabilized, WITHIN_RANGE)
            };
            Normalized {
                replicas,
                able_to_scale: able,
                scaling_limited: limited(replicas, stabilized, reason),
            }
        }
        Some(b) => {
            let up_cutoff = now - SignedDuration::from_secs(b.scale_up.stabilization_window_seconds.into());
            let down_cutoff = now - SignedDuration::from_secs(b.scale_down.stabilization_window_seconds.into());
            let (mut up_rec, mut down_rec) = (desired, desired);
            for (at, r) in &history.recommendations {
                if *at > up_cutoff {
                    up_rec = up_rec.min(*r);
                }
                if *at > down_cutoff {
                    down_rec = down_rec.max(*r);
                }
            }
            let stabilized = current.max(up_rec).min(down_rec);
            record(history, now, desired, up_cutoff, down_cutoff);
            let able = if stabilized == desired {
                READY_FOR_NEW_SCALE
            } else if stabilized > desired {
                DOWN_STABILIZED
            } else {
                UP_STABILIZED
            };
            let (replicas, reason) = rate_limited(history, b, current, stabilized, min, max, now);
            Normalized {
                replicas,
                able_to_scale: able,
                scaling_limited: limited(replicas, stabilized, reason),
            }
        }
    }
}

/// Stores a recommendation, reusing a slot older than both windows.
fn record(history: &mut History, now: Timestamp, desired: i32, up_cutoff: Timestamp, down_cutoff: Timestamp) {
    let old = history
        .recommendations
        .iter()
        .position(|(at, _)| *at < up_cutoff && *at < down_cutoff);
    match old {
        Some(i) => history.recommendations[i] = (now, desired),
        None => history.recommendations.push((now, desired)),
    }
}

fn change_in_period(events: &[ScaleEvent], period_seconds: i32, now: Timestamp) -> i32 {
    let cutoff = now - SignedDuration::from_secs(period_seconds.into());
    events.iter().filter(|e| e.at > cutoff).map(|e| e.change).sum()
}

/// The highest count scale up may reach now (upstream
/// `calculateScaleUpLimitWithScalingRules`).
fn scale_up_limit(history: &History, rules: &Rules, current: i32, now: Timestamp) -> i32 {
    let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i64::from(i32::MAX), i64::min),
        SelectPolicy::Max => (i64::from(i32::MIN), i64::max),
    };
    for p in &rules.policies {
        let added = change_in_period(&history.scale_up_events, p.period_seconds, now);
        let deleted = change_in_period(&history.scale_down_events, p.period_seconds, now);
        let start = i64::from(current - added + deleted);
        let proposed = match p.kind {
            PolicyType::Pods => start + i64::from(p.value),
            PolicyType::Percent => (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64,
        };
        result = pick(result, proposed);
    }
    result.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// The lowest count scale down may reach now (upstream
/// `calculateScaleDownLimitWithBehaviors`).
fn scale_down_limit(history: &History, rules: &Rules, current: i32, now: Timestamp) -> i32 {
    let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i64::from(i32::MIN), i64::max),
        SelectPolicy::Max => (i64::from(i32::MAX), i64::min),
    };
    for p in &rules.policies {
        let added = change_in_period(&history.scale_up_events, p.period_seconds, now);
        let deleted = change_in_period(&history.scale_down_events, p.period_seconds, now);
        let start = i64::from(current - added + deleted);
        let proposed = match p.kind {
            PolicyType::Pods => start - i64::from(p.value),
            PolicyType::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
        };
        result = pick(result, proposed);
    }
    result.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Upstream `convertDesiredReplicasWithBehaviorRate`.
fn rate_limited(
    history: &History,
    b: &Behavior,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Timestamp,
) -> (i32, (&'static str, &'static str)) {
    if desired > current {
        let limit = scale_up_limit(history, &b.scale_up, current, now).max(current);
        let (allowed, reason) = if max > limit {
            (limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        if desired > allowed {
            return (allowed, reason);
        }
    } else if desired < current {
        let limit = scale_down_limit(history, &b.scale_down, current, now).min(current);
        let (allowed, reason) = if min < limit {
            (limit, DOWN_LIMIT)
        } else {
            (min, TOO_FEW)
        };
        if desired < allowed {
            return (allowed, reason);
        }
    }
    (desired, WITHIN_RANGE)
}

/// Records a completed scale from `prev` to `new` replicas (only with a
/// behavior: the events feed its policies). Events older than the direction's
/// longest policy period are dropped.
pub fn record_scale(history: &mut History, behavior: Option<&Behavior>, prev: i32, new: i32, now: Timestamp) {
    let Some(b) = behavior else { return };
    let (rules, events, change) = if new > prev {
        (&b.scale_up, &mut history.scale_up_events, new - prev)
    } else if new < prev {
        (&b.scale_down, &mut history.scale_down_events, prev - new)
    } else {
        return;
    };
    let longest = rules.policies.iter().map(|p| p.period_seconds).max().unwrap_or(0);
    let cutoff = now - SignedDuration::from_secs(longest.into());
    events.retain(|e| e.at > cutoff);
    events.push(ScaleEvent { at: now, change });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn rules(window: i32, select: SelectPolicy, policies: &[(PolicyType, i32, i32)]) -> Rules {
        Rules {
            stabilization_window_seconds: window,
            select_policy: select,
            policies: policies
                .iter()
                .map(|(kind, value, period_seconds)| Policy {
                    kind: *kind,
                    value: *value,
                    period_seconds: *period_seconds,
                })
                .collect(),
        }
    }

    /// The apiserver's defaults for a given behavior.
    fn default_behavior() -> Behavior {
        Behavior {
            scale_up: rules(
                0,
                SelectPolicy::Max,
                &[(PolicyType::Pods, 4, 15), (PolicyType::Percent, 100, 15)],
            ),
            scale_down: rules(300, SelectPolicy::Max, &[(PolicyType::Percent, 100, 15)]),
        }
    }

    #[test]
    fn without_behavior_scale_up_is_limited_and_down_is_stabilized() {
        let mut h = History::default();
        // current 2 -> 10 wanted, limit max(4, 4) = 4.
        let n = normalize(&mut h, None, 2, 10, 1, 20, t(0));
        assert_eq!(n.replicas, 4);
        assert_eq!(n.scaling_limited, (true, UP_LIMIT.0, UP_LIMIT.1));
        assert_eq!(n.able_to_scale.1, "ReadyForNewScale");
        // A lower recommendation within 5 minutes keeps the highest one (10), limited to 8.
        let n = normalize(&mut h, None, 4, 2, 1, 20, t(60));
        assert_eq!(n.replicas, 8);
        assert_eq!(n.able_to_scale.1, "ScaleDownStabilized");
        // After the window the low recommendation applies.
        let n = normalize(&mut h, None, 8, 2, 1, 20, t(400));
        assert_eq!(n.replicas, 2);
        assert_eq!(n.scaling_limited, (false, WITHIN_RANGE.0, WITHIN_RANGE.1));
        // Bounds.
        let n = normalize(&mut h, None, 2, 0, 1, 20, t(1000));
        assert_eq!((n.replicas, n.scaling_limited.1), (1, "TooFewReplicas"));
        let n = normalize(&mut History::default(), None, 3, 5, 1, 4, t(0));
        assert_eq!((n.replicas, n.scaling_limited.1), (4, "TooManyReplicas"));
    }

    #[test]
    fn behavior_policies_limit_the_rate() {
        struct Case {
            name: &'static str,
            behavior: Behavior,
            current: i32,
            desired: i32,
            min: i32,
            max: i32,
            /// Earlier scale events: (seconds before now, prev, new).
            events: Vec<(i64, i32, i32)>,
            want: i32,
            want_reason: &'static str,
        }
        let d = default_behavior;
        let cases = vec![
            Case {
                name: "default up: max(4 pods, 100 %)",
                behavior: d(),
                current: 1,
                desired: 20,
                min: 1,
                max: 50,
                events: vec![],
                want: 5,
                want_reason: "ScaleUpLimit",
            },
            Case {
                name: "default up from 10: 100 % wins",
                behavior: d(),
                current: 10,
                desired: 50,
                min: 1,
                max: 50,
                events: vec![],
                want: 20,
                want_reason: "ScaleUpLimit",
            },
            Case {
                name: "max bound",
                behavior: d(),
                current: 10,
                desired: 50,
                min: 1,
                max: 12,
                events: vec![],
                want: 12,
                want_reason: "TooManyReplicas",
            },
            Case {
                name: "within range",
                behavior: d(),
                current: 3,
                desired: 5,
                min: 1,
                max: 10,
                events: vec![],
                want: 5,
                want_reason: "DesiredWithinRange",
            },
            Case {
                name: "select Min picks the smaller policy",
                behavior: Behavior {
                    scale_up: rules(
                        0,
                        SelectPolicy::Min,
                        &[(PolicyType::Pods, 4, 15), (PolicyType::Percent, 100, 15)],
                    ),
                    ..d()
                },
                current: 10,
                desired: 50,
                min: 1,
                max: 50,
                events: vec![],
                want: 14,
                want_reason: "ScaleUpLimit",
            },
            Case {
                name: "disabled scale up",
                behavior: Behavior {
                    scale_up: rules(0, SelectPolicy::Disabled, &[(PolicyType::Pods, 4, 15)]),
                    ..d()
                },
                current: 3,
                desired: 6,
                min: 1,
                max: 10,
                events: vec![],
                want: 3,
                want_reason: "ScaleUpLimit",
            },
            Case {
                name: "scale events in the period count against the policy",
                behavior: Behavior {
                    scale_up: rules(0, SelectPolicy::Max, &[(PolicyType::Pods, 2, 60)]),
                    ..d()
                },
                // Scaled 2 -> 4 thirty seconds ago: the period started at 2, so at most 4.
                current: 4,
                desired: 8,
                min: 1,
                max: 10,
                events: vec![(30, 2, 4)],
                want: 4,
                want_reason: "ScaleUpLimit",
            },
            Case {
                name: "events older than the period do not count",
                behavior: Behavior {
                    scale_up: rules(0, SelectPolicy::Max, &[(PolicyType::Pods, 2, 60)]),
                    ..d()
                },
                current: 4,
                desired: 8,
                min: 1,
                max: 10,
                events: vec![(90, 2, 4)],
                want: 6,
                want_reason: "ScaleUpLimit",
            },
            Case {
                name: "scale down percent policy",
                behavior: Behavior {
                    scale_down: rules(0, SelectPolicy::Max, &[(PolicyType::Percent, 50, 60)]),
                    ..d()
                },
                current: 10,
                desired: 1,
                min: 1,
                max: 10,
                events: vec![],
                want: 5,
                want_reason: "ScaleDownLimit",
            },
            Case {
                name: "scale down pods policy with min bound",
                behavior: Behavior {
                    scale_down: rules(0, SelectPolicy::Max, &[(PolicyType::Pods, 5, 60)]),
                    ..d()
                },
                current: 6,
                desired: 1,
                min: 3,
                max: 10,
                events: vec![],
                want: 3,
                want_reason: "TooFewReplicas",
            },
            Case {
                name: "scale down disabled",
                behavior: Behavior {
                    scale_down: rules(0, SelectPolicy::Disabled, &[(PolicyType::Percent, 100, 15)]),
                    ..d()
                },
                current: 6,
                desired: 1,
                min: 1,
                max: 10,
                events: vec![],
                want: 6,
                want_reason: "ScaleDownLimit",
            },
        ];
        for c in cases {
            let mut h = History::default();
            for (ago, prev, new) in &c.events {
                record_scale(&mut h, Some(&c.behavior), *prev, *new, t(-ago));
            }
            let n = normalize(&mut h, Some(&c.behavior), c.current, c.desired, c.min, c.max, t(0));
            assert_eq!(n.replicas, c.want, "{}", c.name);
            assert_eq!(n.scaling_limited.1, c.want_reason, "{}", c.name);
            assert_eq!(n.scaling_limited.0, c.want != c.desired, "{}", c.name);
        }
    }

    #[test]
    fn behavior_stabilization_windows() {
        let b = default_behavior();
        let mut h = History::default();
        // Down window 300 s: recommendations of 8, then 3 -> stays at 8.
        assert_eq!(normalize(&mut h, Some(&b), 8, 8, 1, 10, t(0)).replicas, 8);
        let n = normalize(&mut h, Some(&b), 8, 3, 1, 10, t(30));
        assert_eq!(n.replicas, 8);
        assert_eq!(n.able_to_scale.1, "ScaleDownStabilized");
        // After 300 s the 3 (recorded at t=30) and a new 3 apply.
        assert_eq!(normalize(&mut h, Some(&b), 8, 3, 1, 10, t(331)).replicas, 3);
        // Up window 60 s: a recommendation of 2 within it caps scale up at 2.
        let up = Behavior {
            scale_up: rules(60, SelectPolicy::Max, &[(PolicyType::Pods, 10, 15)]),
            ..b
        };
        let mut h = History::default();
        normalize(&mut h, Some(&up), 2, 2, 1, 10, t(0));
        let n = normalize(&mut h, Some(&up), 2, 6, 1, 10, t(30));
        assert_eq!(n.replicas, 2);
        assert_eq!(n.able_to_scale.1, "ScaleUpStabilized");
        assert_eq!(normalize(&mut h, Some(&up), 2, 6, 1, 10, t(100)).replicas, 6);
    }
}
