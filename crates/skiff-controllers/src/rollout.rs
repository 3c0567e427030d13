//! Pure rollout arithmetic of the Deployment controller
//! (pkg/controller/deployment/util/deployment_util.go and rolling.go).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Resolves an int-or-percent against `total`; percentages round up when
/// `round_up`, down otherwise (upstream `GetScaledValueFromIntOrPercent`).
pub fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default_percent: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(default_percent);
            scaled(pct, total, round_up)
        }
        None => scaled(default_percent, total, round_up),
    }
}

fn scaled(pct: i32, total: i32, round_up: bool) -> i32 {
    let num = pct as i64 * total as i64;
    (if round_up { (num + 99) / 100 } else { num / 100 }) as i32
}

/// `(maxSurge, maxUnavailable)` for `replicas`: surge rounds up, unavailable rounds
/// down, and if both are zero unavailable becomes 1 (upstream `ResolveFenceposts`).
pub fn fenceposts(surge: Option<&IntOrString>, unavailable: Option<&IntOrString>, replicas: i32) -> (i32, i32) {
    let s = resolve(surge, replicas, true, 25);
    let mut u = resolve(unavailable, replicas, false, 25);
    if s == 0 && u == 0 {
        u = 1;
    }
    (s, u)
}

/// The new ReplicaSet's replica count after scaling up (upstream `NewRSNewReplicas`
/// for RollingUpdate): fill up to `replicas + maxSurge` total pods, never past `replicas`.
pub fn new_rs_replicas(replicas: i32, max_surge: i32, total_current: i32, new_current: i32) -> i32 {
    if new_current >= replicas {
        return replicas;
    }
    let max_total = replicas + max_surge;
    if total_current >= max_total {
        return new_current;
    }
    let scale_up = (max_total - total_current).min(replicas - new_current);
    new_current + scale_up
}

/// How many old pods may be removed now (upstream `reconcileOldReplicaSets`):
/// `allPods - minAvailable - newRSUnavailable`, never negative.
pub fn max_scaled_down(all_pods: i32, replicas: i32, max_unavailable: i32, new_spec: i32, new_available: i32) -> i32 {
    let min_available = replicas - max_unavailable;
    let new_unavailable = (new_spec - new_available).max(0);
    (all_pods - min_available - new_unavailable).max(0)
}

/// FNV-1a (32 bit), the hash upstream uses for `pod-template-hash`.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in data {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// Renders a hash with the alphabet upstream uses for generated names
/// (`SafeEncodeString`: no vowels, no ambiguous characters).
pub fn safe_encode(n: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    n.to_string()
        .bytes()
        .map(|d| ALPHABET[(d - b'0') as usize % ALPHABET.len()] as char)
        .collect()
}

/// The `pod-template-hash` of a template (its canonical JSON) and collision count.
pub fn template_hash(template_json: &str, collision_count: Option<i32>) -> String {
    let mut data = template_json.as_bytes().to_vec();
    if let Some(c) = collision_count {
        data.extend_from_slice(c.to_string().as_bytes());
    }
    safe_encode(fnv32a(&data))
}

/// One ReplicaSet as the scaling arithmetic sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsCounts {
    /// `spec.replicas`.
    pub spec: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// Upstream `cleanupUnhealthyReplicas`: scales old ReplicaSets (oldest first) down
/// by their unavailable pods, at most `max_cleanup` in total. Returns the new
/// `spec.replicas` of each.
pub fn cleanup_unhealthy(old: &[RsCounts], max_cleanup: i32) -> Vec<i32> {
    let mut total = 0;
    old.iter()
        .map(|rs| {
            if total >= max_cleanup || rs.spec == 0 || rs.spec <= rs.available {
                return rs.spec;
            }
            let by = (max_cleanup - total).min(rs.spec - rs.available);
            total += by;
            rs.spec - by
        })
        .collect()
}

/// Upstream `scaleDownOldReplicaSetsForRollingUpdate`: removes old pods (oldest
/// ReplicaSets first) while more than `min_available` pods stay available;
/// `available_total` counts available pods of all ReplicaSets, new included.
/// Returns the new `spec.replicas` of each old ReplicaSet.
pub fn scale_down_old(old: &[RsCounts], available_total: i32, min_available: i32) -> Vec<i32> {
    let budget = (available_total - min_available).max(0);
    let mut total = 0;
    old.iter()
        .map(|rs| {
            if total >= budget || rs.spec == 0 {
                return rs.spec;
            }
            let by = rs.spec.min(budget - total);
            total += by;
            rs.spec - by
        })
        .collect()
}

/// One active ReplicaSet for proportional scaling: its `spec.replicas` and its
/// `deployment.kubernetes.io/max-replicas` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleInput {
    /// `spec.replicas`.
    pub spec: i32,
    /// The max-replicas annotation, if present and numeric.
    pub max_replicas: Option<i32>,
}

/// Upstream `getReplicaSetFraction`: how many replicas this ReplicaSet gains
/// (or loses) when the Deployment goes to `replicas` (+ `max_surge`), in
/// proportion to the size it had when the annotation was written.
fn fraction(rs: ScaleInput, replicas: i32, max_surge: i32, status_replicas: i32) -> i32 {
    if replicas == 0 {
        return -rs.spec;
    }
    let annotated = rs.max_replicas.unwrap_or(status_replicas);
    if annotated <= 0 {
        return 0;
    }
    let new_size = (rs.spec as f64 * (replicas + max_surge) as f64 / annotated as f64).round() as i32;
    new_size - rs.spec
}

/// Proportional scaling of a Deployment resized mid-rollout (upstream
/// `DeploymentController.scale` for RollingUpdate): spreads the difference between
/// `replicas + max_surge` and the current total over the active ReplicaSets in
/// proportion to their size; the rounding leftover goes to the first. `active`
/// must be sorted largest first (newer first when adding, older first when
/// removing). Returns the new sizes in the same order.
pub fn proportional_sizes(active: &[ScaleInput], replicas: i32, max_surge: i32, status_replicas: i32) -> Vec<i32> {
    let allowed = if replicas > 0 { replicas + max_surge } else { 0 };
    let current: i32 = active.iter().map(|r| r.spec).sum();
    let to_add = allowed - current;
    let mut added = 0;
    let mut sizes: Vec<i32> = active
        .iter()
        .map(|&rs| {
            if to_add == 0 || rs.spec == 0 || to_add == added {
                return rs.spec;
            }
            let f = fraction(rs, replicas, max_surge, status_replicas);
            let allowed_now = to_add - added;
            let p = if to_add > 0 {
                f.min(allowed_now)
            } else {
                f.max(allowed_now)
            };
            added += p;
            rs.spec + p
        })
        .collect();
    if to_add != 0
        && to_add != added
        && let Some(first) = sizes.first_mut()
    {
        *first = (*first + to_add - added).max(0);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_like_upstream() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(Some(&pct("25%")), Some(&pct("25%")), 3), (1, 0));
        assert_eq!(fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10), (3, 2));
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 3),
            (0, 1)
        );
        assert_eq!(fenceposts(None, None, 4), (1, 1));
    }

    #[test]
    fn rolling_arithmetic() {
        // 3 replicas, surge 1: new RS may go to 1 while 3 old pods exist.
        assert_eq!(new_rs_replicas(3, 1, 3, 0), 1);
        assert_eq!(new_rs_replicas(3, 1, 4, 1), 1);
        assert_eq!(new_rs_replicas(3, 1, 3, 1), 2);
        assert_eq!(new_rs_replicas(3, 1, 0, 0), 3);
        assert_eq!(new_rs_replicas(3, 1, 5, 5), 3);
        // 4 pods (3 old + 1 new unavailable), maxUnavailable 0: nothing can go yet.
        assert_eq!(max_scaled_down(4, 3, 0, 1, 0), 0);
        // Once the new pod is available, one old pod may go.
        assert_eq!(max_scaled_down(4, 3, 0, 1, 1), 1);
    }

    #[test]
    fn template_hash_is_stable_and_safe() {
        let a = template_hash("{\"spec\":{}}", None);
        assert_eq!(a, template_hash("{\"spec\":{}}", None));
        assert_ne!(a, template_hash("{\"spec\":{}}", Some(1)));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn old_replica_sets_shrink_unhealthy_first_then_within_availability() {
        let old = [RsCounts { spec: 2, available: 2 }, RsCounts { spec: 3, available: 1 }];
        assert_eq!(cleanup_unhealthy(&old, 1), vec![2, 2]);
        assert_eq!(cleanup_unhealthy(&old, 5), vec![2, 1]);
        assert_eq!(cleanup_unhealthy(&old, 0), vec![2, 3]);
        // 5 available, at least 3 must stay: 2 old pods may go, oldest first.
        assert_eq!(scale_down_old(&old, 5, 3), vec![0, 3]);
        assert_eq!(scale_down_old(&old, 3, 3), vec![2, 3]);
    }

    #[test]
    fn proportional_scaling_keeps_the_ratio() {
        // 10 replicas mid-rollout (surge 3): new RS 8, old RS 5 = 13 = 10 + 3.
        // Scaled to 20 (+5 surge = 25): both grow by ~25/13.
        let rs = [
            ScaleInput {
                spec: 8,
                max_replicas: Some(13),
            },
            ScaleInput {
                spec: 5,
                max_replicas: Some(13),
            },
        ];
        let sizes = proportional_sizes(&rs, 20, 5, 13);
        assert_eq!(sizes.iter().sum::<i32>(), 25);
        assert_eq!(sizes, vec![15, 10]);
        // Down to 0: everything goes.
        assert_eq!(proportional_sizes(&rs, 0, 0, 13), vec![0, 0]);
        // Rounding leftovers land on the first (largest) ReplicaSet.
        let rs = [
            ScaleInput {
                spec: 1,
                max_replicas: Some(3),
            },
            ScaleInput {
                spec: 1,
                max_replicas: Some(3),
            },
            ScaleInput {
                spec: 1,
                max_replicas: Some(3),
            },
        ];
        assert_eq!(proportional_sizes(&rs, 4, 0, 3), vec![2, 1, 1]);
    }
}
