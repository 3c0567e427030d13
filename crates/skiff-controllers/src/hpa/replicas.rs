//! The replica calculator for resource metrics (upstream
//! pkg/controller/podautoscaler/replica_calculator.go, `GetResourceReplicas` and
//! `GetRawResourceReplicas`): pure functions of the pods, their metrics and the
//! target, so they are tested table-driven.
//!
//! `desired = ceil(ready pods * usage / target)`, unchanged within the tolerance
//! (10 %). Pods being deleted or failed are ignored; pending pods, and for cpu pods
//! not ready (or whose sample predates readiness within the 5 min initialization
//! period), are "unready": left out, and when the usage says scale up they count
//! as 0 usage. Pods without metrics count as 100 % of target on scale down and 0
//! on scale up. A recommendation that those assumptions would flip in direction
//! (or bring within tolerance) keeps the current count.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

/// Upstream's default `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period` default (5 min).
pub const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// `--horizontal-pod-autoscaler-initial-readiness-delay` default (30 s).
pub const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// What the calculator needs of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Pod name (metrics are matched by name within the namespace).
    pub name: String,
    /// `status.phase`.
    pub phase: String,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The `Ready` condition: status and last transition time.
    pub ready: Option<(bool, Timestamp)>,
    /// `status.startTime`.
    pub start_time: Option<Timestamp>,
    /// Sum of the (selected) containers' requests for the resource, in milli-units;
    /// `Err(container)` names a container without a request.
    pub request: Result<i64, String>,
}

/// One pod's usage (upstream `PodMetric`): milli-units (milli-cores; bytes x 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodMetric {
    /// Usage, milli-units.
    pub value: i64,
    /// When it was sampled.
    pub timestamp: Timestamp,
    /// Over how long.
    pub window: SignedDuration,
}

/// The target of a resource metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `averageUtilization`: percent of the pods' requests.
    Utilization(i32),
    /// `averageValue`: per-pod average, milli-units.
    AverageValue(i64),
}

/// A replica recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    /// Recommended replicas.
    pub replicas: i32,
    /// Current utilization (percent of request), for `Utilization` targets.
    pub utilization: Option<i32>,
    /// Current average usage per pod, milli-units.
    pub average_value: i64,
}

/// Why no recommendation could be computed (upstream's error messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    /// The selector matched no pod.
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    /// Every pod was ignored, unready or without metrics.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    /// A container has no request for the resource (Utilization only).
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        /// The resource.
        resource: String,
        /// The container.
        container: String,
        /// The pod.
        pod: String,
    },
    /// No pod with metrics has a request.
    #[error("no metrics returned matched known pods")]
    NoMatchingPods,
}

/// Pods sorted into ready (counted), unready, missing (no metrics) and ignored
/// (upstream `groupPods`).
#[derive(Debug, Default, PartialEq)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn group_pods(pods: &[PodInfo], metrics: &BTreeMap<String, PodMetric>, cpu: bool, now: Timestamp) -> Groups {
    let mut g = Groups::default();
    for p in pods {
        if p.deleting || p.phase == "Failed" {
            g.ignored.insert(p.name.clone());
            continue;
        }
        if p.phase == "Pending" {
            g.unready.insert(p.name.clone());
            continue;
        }
        let Some(metric) = metrics.get(&p.name) else {
            g.missing.insert(p.name.clone());
            continue;
        };
        if cpu {
            let unready = match (p.ready, p.start_time) {
                (Some((status, transition)), Some(start)) => {
                    if start + CPU_INITIALIZATION_PERIOD > now {
                        // Within the initialization period: unready, or no full window
                        // sampled since readiness changed.
                        !status || metric.timestamp < transition + metric.window
                    } else {
                        // Never been ready.
                        !status && start + INITIAL_READINESS_DELAY > transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(p.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// `(ratio, utilization, raw average)` of `metrics` against `target`.
fn usage_ratio(
    metrics: &BTreeMap<String, PodMetric>,
    requests: &BTreeMap<String, i64>,
    target: Target,
) -> Result<(f64, Option<i32>, i64), CalcError> {
    match target {
        Target::Utilization(t) => {
            let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
            for (name, m) in metrics {
                if let Some(r) = requests.get(name) {
                    used += m.value;
                    requested += r;
                    n += 1;
                }
            }
            if requested == 0 {
                return Err(CalcError::NoMatchingPods);
            }
            let utilization = (used * 100 / requested) as i32;
            Ok((utilization as f64 / t as f64, Some(utilization), used / n))
        }
        Target::AverageValue(t) => {
            let total: i64 = metrics.values().map(|m| m.value).sum();
            let avg = total / metrics.len().max(1) as i64;
            Ok((avg as f64 / t as f64, None, avg))
        }
    }
}

/// The recommended replica count for a resource metric (cpu when `cpu`), given the
/// target's current replicas (`spec.replicas` of its scale), its pods and their
/// metrics keyed by pod name.
pub fn resource_replicas(
    current: i32,
    target: Target,
    resource: &str,
    pods: &[PodInfo],
    metrics: &BTreeMap<String, PodMetric>,
    now: Timestamp,
) -> Result<Recommendation, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let g = group_pods(pods, metrics, resource == "cpu", now);
    let mut metrics: BTreeMap<String, PodMetric> = metrics
        .iter()
        .filter(|(name, _)| !g.ignored.contains(*name) && !g.unready.contains(*name))
        .filter(|(name, _)| pods.iter().any(|p| &p.name == *name))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if metrics.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let mut requests = BTreeMap::new();
    if matches!(target, Target::Utilization(_)) {
        for p in pods {
            match &p.request {
                Ok(r) => {
                    requests.insert(p.name.clone(), *r);
                }
                Err(container) => {
                    return Err(CalcError::MissingRequest {
                        resource: resource.to_string(),
                        container: container.clone(),
                        pod: p.name.clone(),
                    });
                }
            }
        }
    }
    let (ratio, utilization, average_value) = usage_ratio(&metrics, &requests, target)?;
    let rec = |replicas| Recommendation {
        replicas,
        utilization,
        average_value,
    };
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok(rec(current));
        }
        return Ok(rec((ratio * g.ready as f64).ceil() as i32));
    }
    let fill = |metrics: &mut BTreeMap<String, PodMetric>, name: &String, value: i64| {
        metrics.insert(
            name.clone(),
            PodMetric {
                value,
                timestamp: now,
                window: SignedDuration::ZERO,
            },
        );
    };
    for name in &g.missing {
        let value = if ratio < 1.0 {
            // Assume the pod uses 100 % of the target.
            match target {
                Target::Utilization(_) => requests.get(name).copied().unwrap_or(0),
                Target::AverageValue(t) => t,
            }
        } else {
            0
        };
        fill(&mut metrics, name, value);
    }
    if scale_up_with_unready {
        for name in &g.unready {
            fill(&mut metrics, name, 0);
        }
    }
    let (new_ratio, _, _) = usage_ratio(&metrics, &requests, target)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0) {
        return Ok(rec(current));
    }
    let new = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && new > current) || (new_ratio > 1.0 && new < current) {
        return Ok(rec(current));
    }
    Ok(rec(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    /// A running pod that became ready long ago with a 1 core (1000m) request.
    fn pod(name: &str) -> PodInfo {
        PodInfo {
            name: name.into(),
            phase: "Running".into(),
            deleting: false,
            ready: Some((true, t(-3600))),
            start_time: Some(t(-3600)),
            request: Ok(1000),
        }
    }

    fn metric(value: i64) -> PodMetric {
        PodMetric {
            value,
            timestamp: t(-5),
            window: SignedDuration::from_secs(10),
        }
    }

    struct Case {
        name: &'static str,
        current: i32,
        target: Target,
        resource: &'static str,
        pods: Vec<PodInfo>,
        usage: Vec<(&'static str, i64)>,
        want: Result<i32, CalcError>,
        want_utilization: Option<i32>,
    }

    fn case(name: &'static str, current: i32, pods: Vec<PodInfo>, usage: Vec<(&'static str, i64)>, want: i32) -> Case {
        Case {
            name,
            current,
            target: Target::Utilization(30),
            resource: "cpu",
            pods,
            usage,
            want: Ok(want),
            want_utilization: None,
        }
    }

    fn pods(names: &[&str]) -> Vec<PodInfo> {
        names.iter().map(|n| pod(n)).collect()
    }

    #[test]
    fn replica_calculator_cases() {
        let unready = |name: &str| PodInfo {
            ready: Some((false, t(-3600))),
            start_time: Some(t(-3600)),
            ..pod(name)
        };
        let mut cases = vec![
            // Upstream TestReplicaCalcScaleUp: 3 pods at 300m/500m/700m of 1 core, target 30 %.
            Case {
                want_utilization: Some(50),
                ..case(
                    "scale up",
                    3,
                    pods(&["a", "b", "c"]),
                    vec![("a", 300), ("b", 500), ("c", 700)],
                    5,
                )
            },
            // 28 % against 30 % is within the tolerance.
            case(
                "within tolerance below",
                5,
                pods(&["a", "b", "c", "d", "e"]),
                vec![("a", 100), ("b", 300), ("c", 500), ("d", 250), ("e", 250)],
                5,
            ),
            case(
                "scale down by ratio",
                5,
                pods(&["a", "b", "c", "d", "e"]),
                vec![("a", 100), ("b", 100), ("c", 100), ("d", 100), ("e", 100)],
                2,
            ),
            // Within the 10 % tolerance nothing changes.
            case(
                "tolerance",
                3,
                pods(&["a", "b", "c"]),
                vec![("a", 310), ("b", 320), ("c", 300)],
                3,
            ),
            // TestReplicaCalcScaleUpUnreadyLessScale: unready pods count as 0 on scale up.
            case(
                "unready counted as zero on scale up",
                3,
                vec![unready("a"), pod("b"), pod("c")],
                vec![("a", 300), ("b", 500), ("c", 700)],
                4,
            ),
            // TestReplicaCalcScaleUpUnreadyNoScale: ready pods are at target; unready ignored.
            case(
                "unready only no scale",
                3,
                vec![pod("a"), unready("b"), unready("c")],
                vec![("a", 300), ("b", 3000), ("c", 3000)],
                3,
            ),
            // Pending pods are unready.
            case(
                "pending counted as zero",
                2,
                vec![
                    pod("a"),
                    PodInfo {
                        phase: "Pending".into(),
                        ..pod("b")
                    },
                ],
                vec![("a", 900)],
                3,
            ),
            // TestReplicaCalcScaleUpIgnoresFailedPods / deleted pods.
            case(
                "failed and deleted ignored",
                2,
                vec![
                    pod("a"),
                    pod("b"),
                    PodInfo {
                        phase: "Failed".into(),
                        ..pod("c")
                    },
                    PodInfo {
                        deleting: true,
                        ..pod("d")
                    },
                ],
                vec![("a", 500), ("b", 700), ("c", 0), ("d", 0)],
                4,
            ),
            // TestReplicaCalcMissingMetricsNoChangeEq: missing metrics on scale up count 0.
            case(
                "missing metrics scale up",
                3,
                pods(&["a", "b", "c"]),
                vec![("a", 900), ("b", 900)],
                6,
            ),
            // TestReplicaCalcMissingMetricsScaleDown: missing counts as 100 % of request.
            case(
                "missing metrics scale down",
                6,
                pods(&["a", "b", "c", "d", "e", "f"]),
                vec![("a", 0), ("b", 0), ("c", 0), ("d", 0), ("e", 0)],
                4,
            ),
            // Missing metrics that flip the direction keep the current count.
            case("missing metrics no flip", 2, pods(&["a", "b"]), vec![("a", 290)], 2),
            // Pod started within the cpu initialization period whose sample predates readiness + window.
            case(
                "sample before readiness is unready",
                2,
                vec![
                    pod("a"),
                    PodInfo {
                        ready: Some((true, t(-8))),
                        start_time: Some(t(-60)),
                        ..pod("b")
                    },
                ],
                vec![("a", 900), ("b", 5000)],
                3,
            ),
            Case {
                target: Target::AverageValue(200),
                ..case("average value", 2, pods(&["a", "b"]), vec![("a", 500), ("b", 700)], 6)
            },
            Case {
                target: Target::AverageValue(200 * 1000 * 1024 * 1024),
                resource: "memory",
                // Unready pods are not special for memory.
                ..case(
                    "memory average value",
                    2,
                    vec![pod("a"), unready("b")],
                    vec![("a", 300 * 1000 * 1024 * 1024), ("b", 300 * 1000 * 1024 * 1024)],
                    3,
                )
            },
            Case {
                want: Err(CalcError::NoPods),
                ..case("no pods", 1, vec![], vec![], 0)
            },
            Case {
                want: Err(CalcError::NoMetrics),
                ..case("only unready", 1, vec![unready("a")], vec![("a", 100)], 0)
            },
            Case {
                want: Err(CalcError::MissingRequest {
                    resource: "cpu".into(),
                    container: "app".into(),
                    pod: "a".into(),
                }),
                ..case(
                    "missing request",
                    1,
                    vec![PodInfo {
                        request: Err("app".into()),
                        ..pod("a")
                    }],
                    vec![("a", 100)],
                    0,
                )
            },
        ];
        for c in cases.drain(..) {
            let metrics: BTreeMap<String, PodMetric> =
                c.usage.iter().map(|(n, v)| (n.to_string(), metric(*v))).collect();
            let got = resource_replicas(c.current, c.target, c.resource, &c.pods, &metrics, t(0));
            assert_eq!(got.map(|r| r.replicas), c.want, "{}", c.name);
            if let Some(u) = c.want_utilization {
                let r = resource_replicas(c.current, c.target, c.resource, &c.pods, &metrics, t(0)).unwrap();
                assert_eq!(r.utilization, Some(u), "{}", c.name);
                assert_eq!(r.average_value, 500, "{}", c.name);
            }
        }
    }
}
