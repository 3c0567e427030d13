//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`) and
//! `/version`, in the legacy (non-aggregated) format that kubectl and client
//! libraries fall back to.

use serde_json::{Value, json};
use skiff_api::registry::{self, ResourceInfo};

/// Kubernetes version Skiff implements.
pub const KUBE_MINOR: &str = "33";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": KUBE_MINOR, "gitVersion": format!("v1.{KUBE_MINOR}.0+skiff-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none", "compiler": "rustc", "platform": format!("linux/{}", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn group_doc(name: &str, version: &str) -> Value {
    let gv = |v: &str| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    let versions: Vec<Value> = registry::versions_of(name).into_iter().map(gv).collect();
    json!({"name": name, "versions": versions, "preferredVersion": gv(version)})
}

/// `/apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = registry::groups().into_iter().map(|(g, v)| group_doc(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, if served.
pub fn group(name: &str) -> Option<Value> {
    registry::groups().into_iter().find(|(g, _)| *g == name).map(|(g, v)| {
        let mut d = group_doc(g, v);
        d["kind"] = json!("APIGroup");
        d["apiVersion"] = json!("v1");
        d
    })
}

/// What a subresource answers with: the kind its responses carry and the verbs it
/// supports, as upstream registers them (k8s.io/kubernetes/pkg/registry: `status`
/// returns the parent kind, `scale` an `autoscaling/v1` `Scale`, `binding` a
/// `Binding`, `eviction` creates a `policy/v1` `Eviction`, `log` is a streamed `get` on a Pod, `finalize` updates a Namespace, `token`
/// creates an `authentication.k8s.io/v1` `TokenRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubresourceInfo {
    /// Group of the response kind (`""` for core).
    pub group: &'static str,
    /// Version of the response kind.
    pub version: &'static str,
    /// Response kind, e.g. `Scale`.
    pub kind: &'static str,
    /// Verbs of the subresource.
    pub verbs: &'static [&'static str],
}

/// The [`SubresourceInfo`] of subresource `sub` of `r`.
pub fn subresource(r: &ResourceInfo, sub: &str) -> SubresourceInfo {
    let same = |kind, verbs| SubresourceInfo {
        group: r.group,
        version: r.version,
        kind,
        verbs,
    };
    match sub {
        "status" => same(r.kind, &["get", "patch", "update"]),
        "scale" => SubresourceInfo {
            group: "autoscaling",
            version: "v1",
            kind: "Scale",
            verbs: &["get", "patch", "update"],
        },
        "binding" => same("Binding", &["create"]),
        "eviction" => SubresourceInfo {
            group: "policy",
            version: "v1",
            kind: "Eviction",
            verbs: &["create"],
        },
        "log" => same("Pod", &["get"]),
        "finalize" => same("Namespace", &["update"]),
        "token" => SubresourceInfo {
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
        },
        _ => same(r.kind, &["get"]),
    }
}

fn sub_entry(r: &ResourceInfo, sub: &str) -> Value {
    let info = subresource(r, sub);
    let mut e = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": info.kind, "verbs": info.verbs});
    if (info.group, info.version) != (r.group, r.version) {
        e["group"] = json!(info.group);
        e["version"] = json!(info.version);
    }
    e
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in registry::resources_of(group, version) {
        let mut e = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs});
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        for s in r.subresources {
            resources.push(sub_entry(r, s));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_list_the_eviction_subresource_as_kubectl_drain_expects() {
        // kubectl drain evicts only when v1 lists pods/eviction with kind
        // Eviction and a group and version.
        let doc = resource_list("", "v1").unwrap();
        let eviction = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .unwrap();
        assert_eq!(
            (
                &eviction["group"],
                &eviction["version"],
                &eviction["kind"],
                &eviction["verbs"]
            ),
            (&json!("policy"), &json!("v1"), &json!("Eviction"), &json!(["create"]))
        );
    }

    #[test]
    fn serviceaccounts_list_the_token_subresource() {
        let doc = resource_list("", "v1").unwrap();
        let token = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "serviceaccounts/token")
            .unwrap();
        assert_eq!(
            (&token["group"], &token["version"], &token["kind"], &token["verbs"]),
            (
                &json!("authentication.k8s.io"),
                &json!("v1"),
                &json!("TokenRequest"),
                &json!(["create"])
            )
        );
    }
}
