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
}
