//! The kubelet's streaming endpoints: `/exec/{ns}/{pod}/{container}`,
//! `/attach/{ns}/{pod}/{container}` and `/portForward/{ns}/{pod}`. As upstream's
//! kubelet does when it does not redirect, each request asks the runtime (CRI
//! `Exec`, `Attach`, `PortForward`) for a URL on its streaming server and proxies
//! the client's HTTP upgrade (SPDY/3.1 or WebSocket) to it; the runtime speaks the
//! remotecommand/portforward protocols. Query parameters follow upstream's kubelet:
//! `input`, `output`, `error`, `tty` (`1`/`true`), repeated `command`, repeated `port`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode, header};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;

use crate::cri::Cri;
use crate::pods::{LABEL_CONTAINER, LABEL_NAME, LABEL_NAMESPACE};

/// Why a streaming request failed; each maps to the HTTP status the kubelet answers.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The request's parameters are invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No running container or ready sandbox matches (404).
    #[error("{0}")]
    NotFound(String),
    /// The runtime refused the CRI call (500).
    #[error("container runtime: {0}")]
    Runtime(#[from] tonic::Status),
    /// The runtime's streaming server could not be reached (502).
    #[error("runtime streaming server {url}: {message}")]
    Backend {
        /// The streaming URL the runtime returned.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        let code = match &self {
            StreamError::BadRequest(_) => StatusCode::BAD_REQUEST,
            StreamError::NotFound(_) => StatusCode::NOT_FOUND,
            StreamError::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
            StreamError::Backend { .. } => StatusCode::BAD_GATEWAY,
        };
        (code, self.to_string()).into_response()
    }
}

/// Streams an exec or attach session asks for (`input`/`output`/`error`/`tty`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Attach the client's stdin.
    pub stdin: bool,
    /// Stream stdout back.
    pub stdout: bool,
    /// Stream stderr back (never with a TTY, whose output is one stream).
    pub stderr: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// The command to run (exec only), in order.
    pub command: Vec<String>,
}

impl StreamOptions {
    /// Parses the kubelet's query parameters; at least one stream is required.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, StreamError> {
        let on = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .is_some_and(|(_, v)| matches!(v.as_str(), "1" | "true" | "True" | "TRUE"))
        };
        let tty = on("tty");
        let o = Self {
            stdin: on("input"),
            stdout: on("output"),
            stderr: on("error") && !tty,
            tty,
            command: pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
        };
        if !(o.stdin || o.stdout || o.stderr) {
            return Err(StreamError::BadRequest(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        Ok(o)
    }
}

/// The `port` query parameters of a port-forward request.
pub fn ports_from_query(pairs: &[(String, String)]) -> Result<Vec<i32>, StreamError> {
    pairs
        .iter()
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(i32::from(p)),
            _ => Err(StreamError::BadRequest(format!("invalid port {v:?}"))),
        })
        .collect()
}

/// Request headers that carry the upgrade negotiation, forwarded to the runtime.
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

/// The subset of `headers` forwarded to the runtime's streaming server (all values
/// of repeated headers, in order).
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

/// The ID of the running container `container` of pod `ns`/`pod`.
pub async fn running_container(cri: &Cri, ns: &str, pod: &str, container: &str) -> Result<String, StreamError> {
    let filter = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        label_selector: [(LABEL_NAMESPACE, ns), (LABEL_NAME, pod), (LABEL_CONTAINER, container)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let list = cri
        .runtime
        .clone()
        .list_containers(cri::ListContainersRequest { filter: Some(filter) })
        .await?
        .into_inner()
        .containers;
    list.into_iter()
        .max_by_key(|c| c.created_at)
        .map(|c| c.id)
        .ok_or_else(|| StreamError::NotFound(format!("container {container:?} in pod {pod:?} is not running")))
}

/// The ID of the ready sandbox of pod `ns`/`pod`.
pub async fn ready_sandbox(cri: &Cri, ns: &str, pod: &str) -> Result<String, StreamError> {
    let filter = cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: [(LABEL_NAMESPACE, ns), (LABEL_NAME, pod)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let list = cri
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) })
        .await?
        .into_inner()
        .items;
    list.into_iter()
        .max_by_key(|s| s.created_at)
        .map(|s| s.id)
        .ok_or_else(|| StreamError::NotFound(format!("pod {ns}/{pod} has no running sandbox on this node")))
}

/// CRI `Exec`: the runtime's streaming URL for running `opts.command`.
pub async fn exec_url(cri: &Cri, container_id: String, opts: &StreamOptions) -> Result<String, StreamError> {
    if opts.command.is_empty() {
        return Err(StreamError::BadRequest(
            "you must specify at least one command for the container".into(),
        ));
    }
    Ok(cri
        .runtime
        .clone()
        .exec(cri::ExecRequest {
            container_id,
            cmd: opts.command.clone(),
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await?
        .into_inner()
        .url)
}

/// CRI `Attach`: the runtime's streaming URL for the container's main process.
pub async fn attach_url(cri: &Cri, container_id: String, opts: &StreamOptions) -> Result<String, StreamError> {
    Ok(cri
        .runtime
        .clone()
        .attach(cri::AttachRequest {
            container_id,
            stdin: opts.stdin,
            tty: opts.tty,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await?
        .into_inner()
        .url)
}

/// CRI `PortForward`: the runtime's streaming URL for the sandbox's ports.
pub async fn port_forward_url(cri: &Cri, pod_sandbox_id: String, port: Vec<i32>) -> Result<String, StreamError> {
    Ok(cri
        .runtime
        .clone()
        .port_forward(cri::PortForwardRequest { pod_sandbox_id, port })
        .await?
        .into_inner()
        .url)
}

/// Proxies the client's upgrade request `req` to the runtime's streaming `url`
/// (plain HTTP, as the supervised containerd serves it on loopback). A `101
/// Switching Protocols` answer is returned with the runtime's headers and the two
/// upgraded connections are spliced; any other answer is handed back unchanged so
/// the client can fall back (e.g. from WebSocket to SPDY).
pub async fn proxy_upgrade(url: &str, mut req: http::Request<Body>) -> Result<Response, StreamError> {
    let backend = |message: String| StreamError::Backend {
        url: url.to_string(),
        message,
    };
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| backend(e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(backend("only plain-HTTP streaming servers are supported".into()));
    }
    let authority = uri.authority().ok_or_else(|| backend("no host in URL".into()))?.clone();
    let tcp = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| backend(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| backend(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection ended with error");
        }
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = http::Request::builder().method(req.method().clone()).uri(path);
    if let Some(h) = out.headers_mut() {
        *h = forwarded_headers(req.headers());
        h.insert(
            header::HOST,
            authority.as_str().parse().map_err(|_| backend("invalid host".into()))?,
        );
    }
    let out = out
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| backend(e.to_string()))?;
    let mut resp = sender.send_request(out).await.map_err(|e| backend(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let client_side = hyper::upgrade::on(&mut req);
    let runtime_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, runtime) = match tokio::try_join!(client_side, runtime_side) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "stream upgrade failed");
                return;
            }
        };
        let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(runtime));
        if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
            tracing::debug!(error = %e, "stream proxy ended with error");
        }
    });
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace('+', " ")))
            .collect()
    }

    #[test]
    fn parses_stream_options() {
        let o = StreamOptions::from_query(&q("input=1&output=1&error=1&command=sh&command=-c&command=exit+3")).unwrap();
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        assert_eq!(o.command, ["sh", "-c", "exit 3"]);
        let t = StreamOptions::from_query(&q("output=1&error=1&tty=1")).unwrap();
        assert!(t.tty && !t.stderr, "a TTY merges stderr into stdout");
        assert!(matches!(
            StreamOptions::from_query(&q("tty=1&command=ls")),
            Err(StreamError::BadRequest(_))
        ));
        assert_eq!(ports_from_query(&q("port=80&port=8080")).unwrap(), [80, 8080]);
        assert!(ports_from_query(&q("port=0")).is_err());
    }

    #[test]
    fn forwards_only_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::COOKIE, "x".parse().unwrap());
        h.append("sec-websocket-protocol", "v5.channel.k8s.io".parse().unwrap());
        let f = forwarded_headers(&h);
        assert_eq!(f.len(), 2);
        assert!(f.get(header::COOKIE).is_none());
    }
}
