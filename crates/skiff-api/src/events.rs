//! Construction of core/v1 `Event`s as components record them (the
//! `k8s.io/client-go/tools/record` conventions): name `<object>.<unique hex>`,
//! `involvedObject` from the object, `source.component`, first/last timestamps.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// Now as a `metav1.Time` string (RFC 3339, seconds, UTC).
pub fn now_string() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something went wrong.
    Warning,
}

/// Builds an event about `involved`, stamped `now`. `unique` makes the name unique
/// (e.g. nanoseconds as hex, as client-go does).
pub fn new_event(
    involved: &ObjectReference,
    ty: EventType,
    reason: &str,
    message: &str,
    component: &str,
    host: Option<&str>,
    now: jiff::Timestamp,
) -> Event {
    let name = involved.name.clone().unwrap_or_default();
    let unique = format!("{:x}", now.as_nanosecond());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{unique}")),
            namespace: Some(involved.namespace.clone().unwrap_or_else(|| "default".into())),
            ..Default::default()
        },
        involved_object: involved.clone(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(match ty {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: host.map(String::from),
        }),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(host.unwrap_or(component).to_string()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

/// How long a repeated event keeps being folded into the first one (client-go's
/// event correlator uses a 10-minute window).
pub const AGGREGATION_WINDOW_SECONDS: i64 = 600;

/// What to do with an event after [`Aggregator::observe`].
#[derive(Debug, Clone, PartialEq)]
pub enum Recording {
    /// A new event: create it.
    Create(Box<Event>),
    /// A repeat of an existing event: patch its `count` and `lastTimestamp`.
    Bump {
        /// Namespace of the existing event.
        namespace: String,
        /// Name of the existing event.
        name: String,
        /// The new count.
        count: i32,
        /// The new `lastTimestamp`.
        last: jiff::Timestamp,
    },
}

/// Folds repeats of the same event (same object, type, reason and message) into one
/// event with a growing `count`, so `kubectl describe` shows `(x5 over 2m)` instead of
/// five rows. Pure bookkeeping; the caller does the API calls.
#[derive(Debug, Default)]
pub struct Aggregator {
    seen: std::collections::HashMap<String, (String, String, i32, jiff::Timestamp)>,
}

impl Aggregator {
    /// Decides how to record `event` observed at `now`.
    pub fn observe(&mut self, event: Event, now: jiff::Timestamp) -> Recording {
        let o = &event.involved_object;
        let key = format!(
            "{}/{}/{}/{}/{}/{}/{}",
            o.namespace.as_deref().unwrap_or_default(),
            o.kind.as_deref().unwrap_or_default(),
            o.name.as_deref().unwrap_or_default(),
            o.uid.as_deref().unwrap_or_default(),
            event.type_.as_deref().unwrap_or_default(),
            event.reason.as_deref().unwrap_or_default(),
            event.message.as_deref().unwrap_or_default(),
        );
        self.seen
            .retain(|_, (_, _, _, first)| now.as_second() - first.as_second() < AGGREGATION_WINDOW_SECONDS);
        match self.seen.get_mut(&key) {
            Some((ns, name, count, _)) => {
                *count += 1;
                Recording::Bump {
                    namespace: ns.clone(),
                    name: name.clone(),
                    count: *count,
                    last: now,
                }
            }
            None => {
                let ns = event.metadata.namespace.clone().unwrap_or_default();
                let name = event.metadata.name.clone().unwrap_or_default();
                self.seen.insert(key, (ns, name, 1, now));
                Recording::Create(Box::new(event))
            }
        }
    }

    /// Forgets an event whose creation failed, so the next repeat creates it again.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.seen.retain(|_, (ns, n, _, _)| !(ns == namespace && n == name));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeats_are_folded_into_counts() {
        let r = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("p".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut agg = Aggregator::default();
        let e = |t| new_event(&r, EventType::Warning, "BackOff", "Back-off", "kubelet", None, t);
        let Recording::Create(first) = agg.observe(e(t0), t0) else {
            panic!("first is created")
        };
        let t1 = t0.checked_add(jiff::SignedDuration::from_secs(30)).unwrap();
        match agg.observe(e(t1), t1) {
            Recording::Bump { name, count, .. } => {
                assert_eq!(Some(name), first.metadata.name);
                assert_eq!(count, 2);
            }
            other => panic!("expected a bump, got {other:?}"),
        }
        let later = t0.checked_add(jiff::SignedDuration::from_secs(700)).unwrap();
        assert!(
            matches!(agg.observe(e(later), later), Recording::Create(_)),
            "outside the window a new event starts"
        );
    }

    use super::*;

    #[test]
    fn names_and_fields() {
        let r = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("web-1".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let e = new_event(
            &r,
            EventType::Warning,
            "BackOff",
            "Back-off",
            "kubelet",
            Some("n1"),
            now,
        );
        assert!(e.metadata.name.unwrap().starts_with("web-1."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.source.unwrap().host.as_deref(), Some("n1"));
    }
}
