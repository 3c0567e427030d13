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

#[cfg(test)]
mod tests {
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
