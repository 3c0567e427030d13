//! Streaming pod subresources: `pods/{name}/exec`, `pods/{name}/attach` and
//! `pods/{name}/portforward`. As upstream's apiserver does (without stream
//! translation), the client's HTTP upgrade (SPDY/3.1 or WebSocket) is proxied
//! unchanged to the kubelet's `/exec/{ns}/{pod}/{container}`,
//! `/attach/{ns}/{pod}/{container}` or `/portForward/{ns}/{pod}`, and after the
//! kubelet switches protocols the two connections are spliced together. The
//! remotecommand and portforward protocols themselves are spoken end to end by
//! the client and the container runtime's streaming server.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, HeaderName, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use skiff_api::registry;

use crate::App;
use crate::authn::UserInfo;
use crate::authz::{self, Attributes, Decision};
use crate::status::ApiError;

/// Which streaming subresource a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `pods/exec`: run a command in a container.
    Exec,
    /// `pods/attach`: attach to a container's main process.
    Attach,
    /// `pods/portforward`: forward ports of the pod's network namespace.
    PortForward,
}

/// A parsed streaming request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    /// The subresource.
    pub kind: StreamKind,
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
}

/// Recognizes `/api/v1/namespaces/{ns}/pods/{name}/{exec|attach|portforward}`.
pub fn match_path(path: &str) -> Option<StreamTarget> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "pods", pod, sub] = segs.as_slice() else {
        return None;
    };
    let kind = match *sub {
        "exec" => StreamKind::Exec,
        "attach" => StreamKind::Attach,
        "portforward" => StreamKind::PortForward,
        _ => return None,
    };
    if ns.is_empty() || pod.is_empty() {
        return None;
    }
    Some(StreamTarget {
        kind,
        namespace: (*ns).to_string(),
        pod: (*pod).to_string(),
    })
}

/// Request headers that carry the upgrade negotiation and are forwarded to the
/// kubelet; everything else (notably credentials) stays behind.
const FORWARDED_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "origin",
];

/// The subset of `headers` forwarded to the kubelet ([`FORWARDED_HEADERS`]; repeated
/// headers such as `X-Stream-Protocol-Version` keep all their values, in order).
pub fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED_HEADERS {
        let name = HeaderName::from_static(name);
        for v in headers.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` plus an
/// `Upgrade` header), which every streaming subresource requires.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

/// The kubelet path and query for a streaming request, from the client's raw query
/// (`PodExecOptions`, `PodAttachOptions`, `PodPortForwardOptions` parameters):
/// `stdin`/`stdout`/`stderr`/`tty` become the kubelet's `input`/`output`/`error`/
/// `tty` (value `1`), each `command` is kept in order, each `ports` becomes `port`.
/// `container` is the already resolved container (ignored for port-forward).
pub fn kubelet_path_and_query(
    target: &StreamTarget,
    container: &str,
    pairs: &[(String, String)],
) -> Result<String, ApiError> {
    let mut query: Vec<(&str, String)> = Vec::new();
    let on = |k: &str| pairs.iter().rev().find(|(n, _)| n == k).is_some_and(|(_, v)| truthy(v));
    let path = match target.kind {
        StreamKind::Exec | StreamKind::Attach => {
            let (stdin, stdout, stderr, tty) = (on("stdin"), on("stdout"), on("stderr"), on("tty"));
            if !(stdin || stdout || stderr) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            for (set, key) in [(stdin, "input"), (stdout, "output"), (stderr, "error"), (tty, "tty")] {
                if set {
                    query.push((key, "1".into()));
                }
            }
            let segment = if target.kind == StreamKind::Exec {
                let commands: Vec<&String> = pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v).collect();
                if commands.is_empty() {
                    return Err(ApiError::bad_request(
                        "you must specify at least one command for the container",
                    ));
                }
                query.extend(commands.into_iter().map(|c| ("command", c.clone())));
                "exec"
            } else {
                "attach"
            };
            format!("/{segment}/{}/{}/{container}", target.namespace, target.pod)
        }
        StreamKind::PortForward => {
            for (_, v) in pairs.iter().filter(|(k, _)| k == "ports") {
                for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match p.parse::<u16>() {
                        Ok(n) if n > 0 => query.push(("port", n.to_string())),
                        _ => return Err(ApiError::bad_request(format!("invalid port {p:?}"))),
                    }
                }
            }
            format!("/portForward/{}/{}", target.namespace, target.pod)
        }
    };
    let qs = serde_urlencoded::to_string(&query).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(if qs.is_empty() { path } else { format!("{path}?{qs}") })
}

/// Serves a streaming subresource request that already passed authorization for
/// its own verb. A `GET` (the WebSocket form) must also be allowed to `create` the
/// subresource, as upstream requires since Kubernetes 1.31 (KEP-4006).
pub async fn serve(
    app: &App,
    user: &UserInfo,
    attrs: &Attributes,
    target: StreamTarget,
    mut req: Request,
) -> Result<Response, ApiError> {
    if attrs.verb != "create" {
        let create = Attributes {
            verb: "create".into(),
            ..attrs.clone()
        };
        if let Decision::Deny { reason } = app.authorizer.authorize(user, &create) {
            return Err(authz::forbidden(user, &create, &reason));
        }
    }
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            req.method()
        )));
    }
    let pairs = query_pairs(req.uri().query());
    let pods = registry::lookup("", "v1", "pods").expect("pods are served");
    let pod = app.objects.get(pods, Some(&target.namespace), &target.pod).await?;
    let container = match target.kind {
        StreamKind::PortForward => String::new(),
        _ => {
            let requested = pairs
                .iter()
                .rev()
                .find(|(k, _)| k == "container")
                .map(|(_, v)| v.as_str());
            crate::logs::pick_container(&pod, &target.pod, requested)?
        }
    };
    if let Some(phase @ ("Succeeded" | "Failed")) = pod.pointer("/status/phase").and_then(Value::as_str) {
        let what = match target.kind {
            StreamKind::Exec => "exec into a container",
            StreamKind::Attach => "attach to a container",
            StreamKind::PortForward => "port-forward to a pod",
        };
        return Err(ApiError::bad_request(format!(
            "cannot {what} in a completed pod; current phase is {phase}"
        )));
    }
    let path = kubelet_path_and_query(&target, &container, &pairs)?;
    if !is_upgrade(req.headers()) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let base = crate::logs::kubelet_base(app, &pod, &target.pod).await?;
    let uri = format!("{base}{path}");
    let mut out = http::Request::builder().method(req.method().clone()).uri(&uri);
    if let Some(h) = out.headers_mut() {
        *h = forwarded_headers(req.headers());
    }
    let out = out.body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = app
        .kubelet
        .request(out)
        .await
        .map_err(|e| ApiError::internal(format!("error dialing backend: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The kubelet (or the runtime behind it) refused the upgrade: hand its answer
        // to the client, which may retry with another protocol (WebSocket -> SPDY).
        let (parts, body) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let client_side = hyper::upgrade::on(&mut req);
    let kubelet_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::try_join!(client_side, kubelet_side) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "stream upgrade failed");
                return;
            }
        };
        let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(kubelet));
        if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
            tracing::debug!(error = %e, "stream proxy ended with error");
        }
    });
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}

/// Parses the raw query into ordered pairs (repeated keys kept).
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(Some(q))
    }

    #[test]
    fn matches_streaming_paths_only() {
        let t = match_path("/api/v1/namespaces/default/pods/web/exec").unwrap();
        assert_eq!(
            (t.kind, t.namespace.as_str(), t.pod.as_str()),
            (StreamKind::Exec, "default", "web")
        );
        assert_eq!(
            match_path("/api/v1/namespaces/a/pods/b/portforward").unwrap().kind,
            StreamKind::PortForward
        );
        assert_eq!(
            match_path("/api/v1/namespaces/a/pods/b/attach").unwrap().kind,
            StreamKind::Attach
        );
        assert!(match_path("/api/v1/namespaces/a/pods/b/log").is_none());
        assert!(match_path("/api/v1/namespaces/a/services/b/exec").is_none());
        assert!(match_path("/apis/apps/v1/namespaces/a/pods/b/exec").is_none());
    }

    #[test]
    fn builds_kubelet_exec_query() {
        let t = match_path("/api/v1/namespaces/ns/pods/p/exec").unwrap();
        let q =
            pairs("command=sh&command=-c&command=echo+a%26b&container=c&stdin=true&stdout=true&stderr=false&tty=false");
        assert_eq!(
            kubelet_path_and_query(&t, "c", &q).unwrap(),
            "/exec/ns/p/c?input=1&output=1&command=sh&command=-c&command=echo+a%26b"
        );
        assert_eq!(
            kubelet_path_and_query(&t, "c", &pairs("stdout=true")).unwrap_err().code,
            400
        );
        assert_eq!(
            kubelet_path_and_query(&t, "c", &pairs("command=ls")).unwrap_err().code,
            400
        );
        let a = match_path("/api/v1/namespaces/ns/pods/p/attach").unwrap();
        assert_eq!(
            kubelet_path_and_query(&a, "c", &pairs("stdin=1&stdout=1&tty=1")).unwrap(),
            "/attach/ns/p/c?input=1&output=1&tty=1"
        );
        let f = match_path("/api/v1/namespaces/ns/pods/p/portforward").unwrap();
        assert_eq!(
            kubelet_path_and_query(&f, "", &pairs("ports=8080&ports=53")).unwrap(),
            "/portForward/ns/p?port=8080&port=53"
        );
        assert_eq!(kubelet_path_and_query(&f, "", &pairs("ports=x")).unwrap_err().code, 400);
    }

    #[test]
    fn forwards_only_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "SPDY/3.1".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        h.append("x-stream-protocol-version", "v4.channel.k8s.io".parse().unwrap());
        h.append("x-stream-protocol-version", "v3.channel.k8s.io".parse().unwrap());
        assert!(is_upgrade(&h));
        let f = forwarded_headers(&h);
        assert!(f.get(header::AUTHORIZATION).is_none());
        let versions: Vec<_> = f.get_all("x-stream-protocol-version").iter().collect();
        assert_eq!(versions, ["v4.channel.k8s.io", "v3.channel.k8s.io"]);
        assert_eq!(f.get(header::UPGRADE).unwrap(), "SPDY/3.1");
        let mut plain = HeaderMap::new();
        plain.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        assert!(!is_upgrade(&plain));
    }
}
