//! The resources the apiserver serves, from API discovery: what the garbage
//! collector watches and what the namespace controller empties.

use kube::api::ApiResource;
use kube::discovery::{Discovery, Scope, verbs};

/// A served resource.
#[derive(Debug, Clone)]
pub struct Served {
    /// Group, version, kind and plural.
    pub ar: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

/// Resources upstream's garbage collector ignores by default: events.
pub fn ignored(ar: &ApiResource) -> bool {
    ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io")
}

/// Every served resource (preferred version per group) that supports list, watch
/// and delete, except [`ignored`] ones when `skip_ignored`.
pub async fn served(client: &kube::Client, skip_ignored: bool) -> Result<Vec<Served>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v));
            if !usable || (skip_ignored && ignored(&ar)) {
                continue;
            }
            out.push(Served {
                namespaced: caps.scope == Scope::Namespaced,
                ar,
            });
        }
    }
    Ok(out)
}
