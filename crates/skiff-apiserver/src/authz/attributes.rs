//! Authorization attributes of a request, computed from its method, path and query
//! the way upstream's `RequestInfoFactory` does
//! (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go).

use std::collections::HashMap;

use http::Method;

/// What a request asks to do (upstream's `authorizer.Attributes` minus the user).
///
/// A *resource request* is one under `/api/<version>/...` or
/// `/apis/<group>/<version>/...` that names a resource; everything else (discovery,
/// `/healthz`, `/version`, `/openapi/...`) is a *non-resource request* authorized by
/// [`Attributes::path`] and [`Attributes::verb`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// For resource requests one of `get`, `list`, `watch`, `create`, `update`,
    /// `patch`, `delete`, `deletecollection`; for non-resource requests the
    /// lower-cased HTTP method (`get`, `post`, ...).
    pub verb: String,
    /// Whether this is a resource request.
    pub resource_request: bool,
    /// The request path (used for non-resource requests).
    pub path: String,
    /// API group (`""` for the core group).
    pub api_group: String,
    /// API version, e.g. `v1`.
    pub api_version: String,
    /// Resource (plural), e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `status` or `log` (`""` when none).
    pub subresource: String,
    /// Namespace (`""` for cluster-scoped and all-namespaces requests). For
    /// `/api/v1/namespaces/<name>` it is `<name>`, as upstream sets it.
    pub namespace: String,
    /// Object name (`""` when the request names none). For list and watch it comes
    /// from a `metadata.name=<name>` field selector, as upstream does.
    pub name: String,
}

/// Namespace subresources: `/namespaces/<name>/<these>` are not resources in the namespace.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// The attributes of a request. `query` holds the decoded query parameters
    /// (`watch`, `fieldSelector` are looked at).
    pub fn from_request(method: &Method, path: &str, query: &HashMap<String, String>) -> Self {
        let non_resource = || Self {
            verb: method.as_str().to_ascii_lowercase(),
            resource_request: false,
            path: path.to_string(),
            ..Self::default()
        };
        let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, mut rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return non_resource(),
        };
        if rest.is_empty() {
            // `/api/v1`, `/apis/apps/v1`: discovery.
            return non_resource();
        }
        let mut verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if rest[0] == "watch" {
            verb = "watch".into();
            rest = &rest[1..];
        }
        let mut namespace = "";
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            namespace = rest[1];
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        let resource = rest.first().copied().unwrap_or_default();
        let mut name = rest.get(1).copied().unwrap_or_default().to_string();
        let subresource = rest.get(2).copied().unwrap_or_default();
        if name.is_empty() {
            match verb.as_str() {
                "get" => verb = "list".into(),
                "delete" => verb = "deletecollection".into(),
                _ => {}
            }
        }
        if verb == "list" && query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            verb = "watch".into();
        }
        if matches!(verb.as_str(), "list" | "watch")
            && name.is_empty()
            && let Some(fs) = query.get("fieldSelector")
            && let Ok(sel) = skiff_api::selector::FieldSelector::parse(fs)
            && let Some(n) = sel.exact("metadata.name")
        {
            name = n.to_string();
        }
        Self {
            verb,
            resource_request: true,
            path: path.to_string(),
            api_group: group.into(),
            api_version: version.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str, q: &[(&str, &str)]) -> Attributes {
        let q = q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Attributes::from_request(&method, path, &q)
    }

    fn summary(a: &Attributes) -> (bool, &str, &str, &str, &str, &str, &str) {
        (
            a.resource_request,
            a.verb.as_str(),
            a.api_group.as_str(),
            a.resource.as_str(),
            a.subresource.as_str(),
            a.namespace.as_str(),
            a.name.as_str(),
        )
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        let a = attrs(Method::GET, "/api/v1/namespaces/default/pods", &[]);
        assert_eq!(summary(&a), (true, "list", "", "pods", "", "default", ""));
        let a = attrs(Method::GET, "/api/v1/namespaces/default/pods", &[("watch", "true")]);
        assert_eq!(a.verb, "watch");
        let a = attrs(Method::GET, "/api/v1/watch/namespaces/default/pods/web", &[]);
        assert_eq!(summary(&a), (true, "watch", "", "pods", "", "default", "web"));
        let a = attrs(Method::GET, "/api/v1/pods", &[("fieldSelector", "metadata.name=web")]);
        assert_eq!(summary(&a), (true, "list", "", "pods", "", "", "web"));
        let a = attrs(Method::DELETE, "/apis/apps/v1/namespaces/x/deployments", &[]);
        assert_eq!(
            summary(&a),
            (true, "deletecollection", "apps", "deployments", "", "x", "")
        );
        let a = attrs(Method::DELETE, "/apis/apps/v1/namespaces/x/deployments/d", &[]);
        assert_eq!(a.verb, "delete");
        let a = attrs(Method::POST, "/api/v1/namespaces/x/pods/p/binding", &[]);
        assert_eq!(summary(&a), (true, "create", "", "pods", "binding", "x", "p"));
        let a = attrs(Method::PATCH, "/apis/apps/v1/namespaces/x/deployments/d/scale", &[]);
        assert_eq!(summary(&a), (true, "patch", "apps", "deployments", "scale", "x", "d"));
        let a = attrs(Method::PUT, "/api/v1/nodes/n1/status", &[]);
        assert_eq!(summary(&a), (true, "update", "", "nodes", "status", "", "n1"));
    }

    #[test]
    fn namespaces_are_their_own_namespace() {
        let a = attrs(Method::GET, "/api/v1/namespaces/team", &[]);
        assert_eq!(summary(&a), (true, "get", "", "namespaces", "", "team", "team"));
        let a = attrs(Method::PUT, "/api/v1/namespaces/team/finalize", &[]);
        assert_eq!(
            summary(&a),
            (true, "update", "", "namespaces", "finalize", "team", "team")
        );
        let a = attrs(Method::GET, "/api/v1/namespaces", &[]);
        assert_eq!(summary(&a), (true, "list", "", "namespaces", "", "", ""));
    }

    #[test]
    fn discovery_and_health_are_non_resource_requests() {
        for p in [
            "/healthz",
            "/version",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/openapi/v3",
        ] {
            let a = attrs(Method::GET, p, &[]);
            assert!(!a.resource_request, "{p}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", p));
        }
        assert_eq!(attrs(Method::POST, "/logs", &[]).verb, "post");
    }
}
