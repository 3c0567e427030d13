//! Aggregated discovery (KEP-3352, `apidiscovery.k8s.io/v2`, GA in v1.30; `v2beta1`
//! since v1.26): `/api` and `/apis` answer with one `APIGroupDiscoveryList` that
//! describes every group, version and resource (with subresources), so a client
//! learns the whole API in two requests instead of one per group/version.
//!
//! The document is served only when the client asks for it in `Accept`
//! (client-go sends
//! `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,`
//! `application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json`)
//! and client-go only parses it as aggregated when the response `Content-Type`
//! carries the same `g`, `v` and `as` parameters; everything else gets the legacy
//! documents of [`crate::discovery`]. `/api` holds the core group (name `""`),
//! `/apis` every named group. Both responses say `Vary: Accept`, carry an `ETag`
//! and answer a matching `If-None-Match` with `304 Not Modified`, as upstream's
//! handler (k8s.io/apiserver/pkg/endpoints/discovery/aggregated) does.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use skiff_api::registry::{self, ResourceInfo};

use crate::accept::{self, MediaRange};
use crate::discovery;

/// The API group of the aggregated discovery types.
pub const GROUP: &str = "apidiscovery.k8s.io";

/// The kind of the aggregated discovery document.
pub const LIST_KIND: &str = "APIGroupDiscoveryList";

/// Which version of the aggregated discovery types a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscoveryVersion {
    /// `apidiscovery.k8s.io/v2` (GA, v1.30).
    V2,
    /// `apidiscovery.k8s.io/v2beta1` (v1.26 to v1.32 clients also accept it).
    V2Beta1,
}

impl DiscoveryVersion {
    /// `v2` or `v2beta1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V2Beta1 => "v2beta1",
        }
    }

    /// The document's `apiVersion`, e.g. `apidiscovery.k8s.io/v2`.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V2 => "apidiscovery.k8s.io/v2",
            Self::V2Beta1 => "apidiscovery.k8s.io/v2beta1",
        }
    }

    /// The response `Content-Type`, with the `g`, `v`, `as` parameters client-go
    /// checks before decoding the body as aggregated discovery.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::V2 => "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            Self::V2Beta1 => "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        }
    }
}

/// The outcome of negotiating a discovery request's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// Serve the aggregated document in this version.
    Aggregated(DiscoveryVersion),
    /// Serve the legacy `APIVersions` / `APIGroupList` document.
    Legacy,
}

/// What one media range asks for; `None` when discovery cannot serve it.
fn classify(r: &MediaRange<'_>) -> Option<Negotiated> {
    let json = r.is("application", "json");
    let wildcard = r.is_wildcard();
    let (g, v, as_) = (r.params.get("g"), r.params.get("v"), r.params.get("as"));
    if g.is_none() && v.is_none() && as_.is_none() {
        return (json || wildcard).then_some(Negotiated::Legacy);
    }
    // `profile=nopeer` (v1.34 clients) asks to leave out resources served only by peer
    // apiservers; there are none here, so the plain document satisfies it.
    let profile_ok = r.params.get("profile").is_none_or(|p| *p == "nopeer");
    if !json || !profile_ok || g != Some(&GROUP) || as_ != Some(&LIST_KIND) {
        return None;
    }
    match v.copied() {
        Some("v2") => Some(Negotiated::Aggregated(DiscoveryVersion::V2)),
        Some("v2beta1") => Some(Negotiated::Aggregated(DiscoveryVersion::V2Beta1)),
        _ => None,
    }
}

/// Chooses the document for a discovery request from its `Accept` header: media
/// ranges are ordered by `q` (highest first; `q=0` excludes a range), then concrete
/// types before wildcards, then header order, and the first one discovery can serve
/// wins. No header, or no servable range, means the legacy document.
pub fn negotiate(accept: Option<&str>) -> Negotiated {
    let Some(accept) = accept else {
        return Negotiated::Legacy;
    };
    accept::ranges(accept)
        .iter()
        .find_map(classify)
        .unwrap_or(Negotiated::Legacy)
}

/// Which discovery root a document describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    /// `/api`: the legacy core group only.
    Api,
    /// `/apis`: every named group.
    Apis,
}

/// `apidiscovery.k8s.io` `APIGroupDiscoveryList`: every group served under one root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiGroupDiscoveryList {
    /// `apidiscovery.k8s.io/v2` or `apidiscovery.k8s.io/v2beta1`.
    pub api_version: String,
    /// Always `APIGroupDiscoveryList`.
    pub kind: String,
    /// List metadata (empty).
    #[serde(default)]
    pub metadata: ListMeta,
    /// The groups, in discovery order.
    pub items: Vec<ApiGroupDiscovery>,
}

/// Empty list metadata (`{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListMeta {}

/// Metadata of one group: only its name (`""` for core, then omitted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMeta {
    /// The group name, e.g. `apps`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// `APIGroupDiscovery`: one group and its versions, most preferred first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiGroupDiscovery {
    /// The group's name.
    pub metadata: GroupMeta,
    /// Versions ordered by preference; the first is the preferred version.
    pub versions: Vec<ApiVersionDiscovery>,
}

/// Whether a version's resources are up to date (`Stale` for aggregated
/// apiservers that could not be reached; Skiff serves everything itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Freshness {
    /// The resources are current.
    Current,
    /// The resources could not be refreshed.
    Stale,
}

/// `APIVersionDiscovery`: the resources of one group/version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiVersionDiscovery {
    /// The version, e.g. `v1`.
    pub version: String,
    /// Resources, sorted by name.
    pub resources: Vec<ApiResourceDiscovery>,
    /// Always [`Freshness::Current`].
    pub freshness: Freshness,
}

/// Whether a resource's objects live in namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Namespaced.
    Namespaced,
    /// Cluster-scoped.
    Cluster,
}

/// Group, version and kind of the objects a resource or subresource answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseKind {
    /// Group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

/// `APIResourceDiscovery`: one resource of a group/version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceDiscovery {
    /// Plural resource name, e.g. `deployments`.
    pub resource: String,
    /// Kind of its objects.
    pub response_kind: ResponseKind,
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
    /// Singular name, e.g. `deployment`.
    pub singular_resource: String,
    /// Supported verbs.
    pub verbs: Vec<String>,
    /// Short names, e.g. `deploy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Subresources, e.g. `status`, `scale`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subresources: Vec<ApiSubresourceDiscovery>,
}

/// `APISubresourceDiscovery`: one subresource of a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSubresourceDiscovery {
    /// Subresource name, e.g. `scale`.
    pub subresource: String,
    /// Kind of its responses, e.g. `autoscaling/v1` `Scale`.
    pub response_kind: ResponseKind,
    /// Supported verbs.
    pub verbs: Vec<String>,
}

/// Orders versions the way upstream's `version.CompareKubeAwareVersionStrings`
/// does: GA before beta before alpha, higher major first, then higher pre-release
/// number; strings that are not Kubernetes versions come last, alphabetically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let (stage, n) = if tail.is_empty() {
            return Some((2, major, 0));
        } else if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n)
        } else {
            return None;
        };
        Some((stage, major, n.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

fn resource_entry(r: &ResourceInfo) -> ApiResourceDiscovery {
    ApiResourceDiscovery {
        resource: r.plural.to_string(),
        response_kind: ResponseKind {
            group: r.group.to_string(),
            version: r.version.to_string(),
            kind: r.kind.to_string(),
        },
        scope: if r.namespaced {
            Scope::Namespaced
        } else {
            Scope::Cluster
        },
        singular_resource: r.singular.to_string(),
        verbs: strings(r.verbs),
        short_names: strings(r.short_names),
        categories: strings(r.categories),
        subresources: r
            .subresources
            .iter()
            .map(|s| {
                let info = discovery::subresource(r, s);
                ApiSubresourceDiscovery {
                    subresource: (*s).to_string(),
                    response_kind: ResponseKind {
                        group: info.group.to_string(),
                        version: info.version.to_string(),
                        kind: info.kind.to_string(),
                    },
                    verbs: strings(info.verbs),
                }
            })
            .collect(),
    }
}

/// Builds the document for `root` from the resource registry: groups in registry
/// order, versions by [`compare_versions`], resources sorted by name.
pub fn document(root: Root, version: DiscoveryVersion) -> ApiGroupDiscoveryList {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in registry::all() {
        let wanted = match root {
            Root::Api => r.group.is_empty(),
            Root::Apis => !r.group.is_empty(),
        };
        if wanted && !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    let items = groups
        .into_iter()
        .map(|group| {
            let mut versions: Vec<&'static str> = Vec::new();
            for r in registry::all().into_iter().filter(|r| r.group == group) {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            versions.sort_by(|a, b| compare_versions(a, b));
            ApiGroupDiscovery {
                metadata: GroupMeta {
                    name: group.to_string(),
                },
                versions: versions
                    .into_iter()
                    .map(|v| {
                        let mut resources: Vec<ApiResourceDiscovery> =
                            registry::resources_of(group, v).map(resource_entry).collect();
                        resources.sort_by(|a, b| a.resource.cmp(&b.resource));
                        ApiVersionDiscovery {
                            version: v.to_string(),
                            resources,
                            freshness: Freshness::Current,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    ApiGroupDiscoveryList {
        api_version: version.api_version().to_string(),
        kind: LIST_KIND.to_string(),
        metadata: ListMeta {},
        items,
    }
}

/// A serialized document and its entity tag.
struct Rendered {
    body: String,
    etag: String,
}

/// Renders the document now: custom resources come and go with their CRDs, so
/// it is not cached (it is a few kilobytes built from the in-memory registry).
fn rendered(root: Root, version: DiscoveryVersion) -> Rendered {
    let body = serde_json::to_string(&document(root, version)).expect("discovery documents serialize to JSON");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    let etag = format!("\"{:016X}\"", h.finish());
    Rendered { body, etag }
}

/// The HTTP answer for an aggregated discovery request: the document with its
/// content type, `Vary: Accept` and `ETag`, or `304 Not Modified` when the
/// request's `If-None-Match` names the current entity tag.
pub fn response(root: Root, version: DiscoveryVersion, request_headers: &HeaderMap) -> Response {
    let doc = rendered(root, version);
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == doc.etag || t.trim() == "*"));
    let headers = [
        (header::CONTENT_TYPE, version.content_type()),
        (header::VARY, "Accept"),
        (header::ETAG, doc.etag.as_str()),
    ];
    if not_modified {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (StatusCode::OK, headers, doc.body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_GO: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn negotiation_picks_the_first_supported_range() {
        use DiscoveryVersion::*;
        use Negotiated::*;
        assert_eq!(negotiate(Some(CLIENT_GO)), Aggregated(V2));
        assert_eq!(negotiate(None), Legacy);
        assert_eq!(negotiate(Some("application/json")), Legacy);
        assert_eq!(negotiate(Some("*/*")), Legacy);
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            )),
            Aggregated(V2Beta1)
        );
        // Unknown versions and kinds are skipped, not fatal.
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList, application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            )),
            Aggregated(V2Beta1)
        );
        assert_eq!(negotiate(Some("application/json;as=Table;v=v1;g=meta.k8s.io")), Legacy);
        // q-values reorder; q=0 excludes.
        assert_eq!(
            negotiate(Some(
                "application/json;q=0.9, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            )),
            Aggregated(V2)
        );
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0.5, application/json"
            )),
            Legacy
        );
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0, application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList;q=0.1"
            )),
            Aggregated(V2Beta1)
        );
        // Parameters in any order, spaces, and the v1.34 `profile=nopeer`.
        assert_eq!(
            negotiate(Some(
                "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
            )),
            Aggregated(V2)
        );
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json"
            )),
            Aggregated(V2)
        );
        // A wildcard ranks after a concrete type of the same q.
        assert_eq!(
            negotiate(Some(
                "*/*, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            )),
            Aggregated(V2)
        );
        assert_eq!(negotiate(Some("application/yaml")), Legacy);
    }

    #[test]
    fn kube_aware_version_order() {
        let mut v = vec!["v1beta1", "v1alpha1", "v2", "v1", "v2beta2", "v2beta1", "foo", "v10"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            ["v10", "v2", "v1", "v2beta2", "v2beta1", "v1beta1", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn api_root_holds_only_core() {
        let doc = document(Root::Api, DiscoveryVersion::V2);
        assert_eq!(doc.items.len(), 1);
        let core = &doc.items[0];
        assert_eq!(core.metadata.name, "");
        assert_eq!(core.versions[0].version, "v1");
        let pods = core.versions[0]
            .resources
            .iter()
            .find(|r| r.resource == "pods")
            .unwrap();
        assert_eq!(pods.scope, Scope::Namespaced);
        assert_eq!(pods.singular_resource, "pod");
        assert_eq!(pods.short_names, ["po"]);
        assert_eq!(pods.categories, ["all"]);
        let subs: Vec<&str> = pods.subresources.iter().map(|s| s.subresource.as_str()).collect();
        assert_eq!(subs, ["status", "binding", "log", "eviction"]);
        let eviction = &pods.subresources[3];
        assert_eq!(
            (
                eviction.response_kind.group.as_str(),
                eviction.response_kind.version.as_str(),
                eviction.response_kind.kind.as_str()
            ),
            ("policy", "v1", "Eviction")
        );
        assert_eq!(eviction.verbs, ["create"]);
        let binding = &pods.subresources[1];
        assert_eq!(
            (
                binding.response_kind.version.as_str(),
                binding.response_kind.kind.as_str()
            ),
            ("v1", "Binding")
        );
        assert_eq!(binding.verbs, ["create"]);
        let names: Vec<&str> = core.versions[0].resources.iter().map(|r| r.resource.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let nodes = core.versions[0]
            .resources
            .iter()
            .find(|r| r.resource == "nodes")
            .unwrap();
        assert_eq!(nodes.scope, Scope::Cluster);
    }

    #[test]
    fn apis_root_serialises_like_upstream() {
        let doc = document(Root::Apis, DiscoveryVersion::V2Beta1);
        assert!(doc.items.iter().all(|g| !g.metadata.name.is_empty()));
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        assert_eq!(v["kind"], "APIGroupDiscoveryList");
        let apps = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        assert_eq!(apps["versions"][0]["freshness"], "Current");
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(
            deploy["responseKind"],
            serde_json::json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["singularResource"], "deployment");
        assert_eq!(deploy["shortNames"], serde_json::json!(["deploy"]));
        let scale = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(
            scale["responseKind"],
            serde_json::json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        // Empty lists are omitted, as Go's omitempty does.
        let leases = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "coordination.k8s.io")
            .unwrap();
        let lease = &leases["versions"][0]["resources"][0];
        assert!(lease.get("shortNames").is_none() && lease.get("subresources").is_none());
    }

    #[test]
    fn responses_carry_content_type_vary_and_etag() {
        let resp = response(Root::Apis, DiscoveryVersion::V2, &HeaderMap::new());
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(
            h[header::CONTENT_TYPE],
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        assert_eq!(h[header::VARY], "Accept");
        let etag = h[header::ETAG].clone();
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, etag);
        let again = response(Root::Apis, DiscoveryVersion::V2, &req);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = response(Root::Api, DiscoveryVersion::V2, &req);
        assert_eq!(other.status(), StatusCode::OK);
    }
}
