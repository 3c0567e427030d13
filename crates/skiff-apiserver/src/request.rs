//! Parsing of resource request paths and query parameters
//! (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go).

use std::collections::HashMap;

use skiff_api::registry::{self, ResourceInfo};

use crate::status::ApiError;

/// A request for a resource, parsed from its path.
#[derive(Debug, Clone)]
pub struct ResourceRequest {
    /// The resource.
    pub res: &'static ResourceInfo,
    /// Namespace from the path (`None` for cluster-scoped or all-namespaces requests).
    pub namespace: Option<String>,
    /// Object name, when the path names one.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `binding`, `log`, `finalize`).
    pub subresource: Option<String>,
    /// Whether the legacy `/watch/` path prefix was used.
    pub watch_path: bool,
}

/// Parses `/api/v1/...` or `/apis/<group>/<version>/...`. `Ok(None)` means the path is
/// not a resource path (discovery and other endpoints handle it).
pub fn parse_path(path: &str) -> Result<Option<ResourceRequest>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let (watch_path, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, r @ ..] if !r.is_empty() && !matches!(r[0], "status" | "finalize") => {
            (Some((*ns).to_string()), r)
        }
        r => (None, r),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_string()), None),
        [p, n, s] => (*p, Some((*n).to_string()), Some((*s).to_string())),
        _ => return Err(ApiError::no_route()),
    };
    let res = registry::lookup(group, version, plural).ok_or_else(ApiError::no_route)?;
    if namespace.is_some() && !res.namespaced {
        return Err(ApiError::no_route());
    }
    if let Some(s) = &sub
        && !res.subresources.contains(&s.as_str())
    {
        return Err(ApiError::no_route());
    }
    Ok(Some(ResourceRequest {
        res,
        namespace,
        name,
        subresource: sub,
        watch_path,
    }))
}

/// Query parameters as a map (last value wins).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// A boolean query parameter (`true`/`1`).
pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_paths() {
        let r = parse_path("/api/v1/namespaces/default/pods/web/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                r.res.plural,
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let r = parse_path("/api/v1/namespaces/default").unwrap().unwrap();
        assert_eq!((r.res.plural, r.name.as_deref()), ("namespaces", Some("default")));
        let r = parse_path("/api/v1/namespaces/x/finalize").unwrap().unwrap();
        assert_eq!(
            (r.res.plural, r.subresource.as_deref()),
            ("namespaces", Some("finalize"))
        );
        let r = parse_path("/apis/apps/v1/deployments").unwrap().unwrap();
        assert!(r.namespace.is_none() && r.name.is_none());
        assert!(parse_path("/api/v1").unwrap().is_none());
        assert_eq!(parse_path("/api/v1/nope").unwrap_err().code, 404);
        assert_eq!(parse_path("/api/v1/namespaces/a/nodes").unwrap_err().code, 404);
    }
}
