//! The kubelet's HTTPS API (port 10250): `/healthz`,
//! `/containerLogs/{namespace}/{pod}/{container}` (what the apiserver proxies
//! `pods/{name}/log` to) and the streaming endpoints `/exec`, `/attach` and
//! `/portForward` ([`crate::streaming`]), and the Summary API `/stats/summary`
//! ([`crate::stats`]). Clients must present a certificate signed by the cluster CA.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use http::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::cri::Cri;
use crate::stats::Sampler;
use crate::streaming::{self, StreamError, StreamOptions};
use crate::{Error, KubeletConfig, logs};

#[derive(Clone)]
struct Ctx {
    pods_dir: PathBuf,
    cri: Cri,
    sampler: Sampler,
}

fn tls(cfg: &KubeletConfig) -> Result<rustls::ServerConfig, Error> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())));
    let t = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read(&cfg.client_ca)?) {
        roots.add(c.map_err(|e| t(&e))?).map_err(|e| t(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| t(&e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&cfg.serving_cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| t(&e))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&cfg.serving_key)?).map_err(|e| t(&e))?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| t(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| t(&e))?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(c)
}

/// Finds the log file of a container: the newest pod directory for `ns`/`pod`, and
/// the highest (or, for `previous`, second highest) restart attempt.
fn log_file(pods_dir: &std::path::Path, ns: &str, pod: &str, container: &str, previous: bool) -> Option<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    let dir = std::fs::read_dir(pods_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?
        .path()
        .join(container);
    let mut attempts: Vec<u32> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".log")
                .and_then(|n| n.parse().ok())
        })
        .collect();
    attempts.sort();
    let pick = if previous {
        attempts.len().checked_sub(2)?
    } else {
        attempts.len().checked_sub(1)?
    };
    Some(dir.join(format!("{}.log", attempts[pick])))
}

async fn container_logs(
    State(ctx): State<Ctx>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let previous = flag("previous");
    let Some(path) = log_file(&ctx.pods_dir, &ns, &pod, &container, previous) else {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")
        };
        return (StatusCode::BAD_REQUEST, msg).into_response();
    };
    let timestamps = flag("timestamps");
    let text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    let mut rendered = logs::render(&text, timestamps);
    if let Some(n) = q.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        rendered = logs::tail(&rendered, n);
    }
    if let Some(n) = q.get("limitBytes").and_then(|n| n.parse::<usize>().ok()) {
        rendered.truncate(n);
    }
    if !flag("follow") {
        return (StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain")], rendered).into_response();
    }
    // Follow: the current content, then whatever is appended.
    let offset = text.len() as u64;
    let stream = futures::stream::unfold(
        (Some(rendered), path, offset, String::new()),
        move |(first, path, mut offset, mut partial)| async move {
            if let Some(f) = first {
                return Some((Ok::<Bytes, Infallible>(Bytes::from(f)), (None, path, offset, partial)));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Ok(mut file) = tokio::fs::File::open(&path).await else {
                    return None;
                };
                if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
                    return None;
                }
                let mut buf = String::new();
                if file.read_to_string(&mut buf).await.is_err() {
                    return None;
                }
                if buf.is_empty() {
                    continue;
                }
                offset += buf.len() as u64;
                partial.push_str(&buf);
                let complete = match partial.rfind('\n') {
                    Some(i) => {
                        let rest = partial.split_off(i + 1);
                        std::mem::replace(&mut partial, rest)
                    }
                    None => continue,
                };
                let out = logs::render(&complete, timestamps);
                return Some((Ok(Bytes::from(out)), (None, path, offset, partial)));
            }
        },
    );
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .expect("valid response")
}

/// `/exec/{ns}/{pod}/{container}` ([`streaming`]).
async fn exec(
    State(ctx): State<Ctx>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    req: axum::extract::Request,
) -> Result<Response, StreamError> {
    let opts = StreamOptions::from_query(&q)?;
    let id = streaming::running_container(&ctx.cri, &ns, &pod, &container).await?;
    let url = streaming::exec_url(&ctx.cri, id, &opts).await?;
    streaming::proxy_upgrade(&url, req).await
}

/// `/attach/{ns}/{pod}/{container}` ([`streaming`]).
async fn attach(
    State(ctx): State<Ctx>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    req: axum::extract::Request,
) -> Result<Response, StreamError> {
    let opts = StreamOptions::from_query(&q)?;
    let id = streaming::running_container(&ctx.cri, &ns, &pod, &container).await?;
    let url = streaming::attach_url(&ctx.cri, id, &opts).await?;
    streaming::proxy_upgrade(&url, req).await
}

/// `/portForward/{ns}/{pod}` ([`streaming`]).
async fn port_forward(
    State(ctx): State<Ctx>,
    Path((ns, pod)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    req: axum::extract::Request,
) -> Result<Response, StreamError> {
    let ports = streaming::ports_from_query(&q)?;
    let id = streaming::ready_sandbox(&ctx.cri, &ns, &pod).await?;
    let url = streaming::port_forward_url(&ctx.cri, id, ports).await?;
    streaming::proxy_upgrade(&url, req).await
}

/// `/stats/summary`: the sampler's latest [`crate::stats::Summary`] as JSON; 503
/// before the first sample.
async fn stats_summary(State(ctx): State<Ctx>) -> Response {
    match ctx.sampler.latest() {
        Some(s) => axum::Json(s).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no stats collected yet").into_response(),
    }
}

/// Serves the kubelet API until `shutdown`; streaming requests go to the runtime
/// behind `cri`, `/stats/summary` reads `sampler`.
pub async fn serve(cfg: KubeletConfig, cri: Cri, sampler: Sampler, shutdown: CancellationToken) -> Result<(), Error> {
    let tls = tls(&cfg)?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", cfg.port))
        .await
        .map_err(|e| Error::Io(format!("kubelet API on port {}: {e}", cfg.port)))?;
    let ctx = Ctx {
        pods_dir: cfg.root_dir.join("pods"),
        cri,
        sampler,
    };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/stats/summary", get(stats_summary))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", any(exec))
        .route("/attach/{ns}/{pod}/{container}", any(attach))
        .route("/portForward/{ns}/{pod}", any(port_forward))
        .with_state(ctx);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let svc = hyper_util::service::TowerToHyperService::new(
                    router.map_request(|r: http::Request<hyper::body::Incoming>| r.map(Body::new)),
                );
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}
