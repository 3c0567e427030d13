//! HTTPS serving: TLS with optional client certificates (x509 client-cert
//! authentication, [`crate::authn`]), HTTP/1.1 and HTTP/2, authorization of every
//! request ([`crate::authz`]), and dispatch to discovery, health and resource
//! handlers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::authn::UserInfo;
use crate::authz::{self, Attributes, Decision};
use crate::status::ApiError;
use crate::{App, Error, aggregated_discovery, discovery, request, rest, stream_proxy};

/// Who the connection authenticated as: the user of its client certificate (verified
/// against the cluster CA during the TLS handshake), the anonymous user when it
/// presented none, or `None` when the certificate names no usable identity (401).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Option<UserInfo>);

/// The identity of a connection from its verified peer certificates (leaf first).
fn identity(certs: Option<&[CertificateDer<'_>]>) -> Option<UserInfo> {
    match certs.and_then(|c| c.first()) {
        None => Some(UserInfo::anonymous()),
        Some(leaf) => match UserInfo::from_client_certificate(leaf) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::debug!(error = %e, "rejecting client certificate");
                None
            }
        },
    }
}

/// Builds the rustls server config: serving cert, client certs verified against
/// `client_ca_pem` but optional (a request without one is anonymous and gets what
/// RBAC grants `system:anonymous`, such as `/healthz` and `/version`).
pub fn tls_config(cert_pem: &str, key_pem: &str, client_ca_pem: &str) -> Result<rustls::ServerConfig, Error> {
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, app: App, shutdown: CancellationToken) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let router = Router::new().fallback(dispatch).with_state(app);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let user = identity(stream.get_ref().1.peer_certificates());
            let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Authenticated(user.clone()));
                router.clone().oneshot(req.map(Body::new))
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended with error") },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn text(code: StatusCode, body: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// `/metrics`: the process's metrics in the Prometheus text exposition format
/// (version 0.0.4, which every scraper accepts, as upstream's default).
fn metrics(registry: &prometheus_client::registry::Registry) -> Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding metrics: {e}"));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn dispatch(State(app): State<App>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = match route(&app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    resp
}

async fn route(app: &App, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let Some(mut user) = req.extensions().get::<Authenticated>().and_then(|a| a.0.clone()) else {
        return Err(ApiError::unauthorized());
    };
    // As upstream's union authenticator: a client certificate wins; otherwise a
    // bearer token (a bootstrap token `<id>.<secret>`, else a ServiceAccount token)
    // must be valid (401 if not), and no credentials is anonymous.
    if user.name == crate::authn::ANONYMOUS_USER
        && let Some(token) = bearer_token(req.headers())
    {
        user = match skiff_api::bootstrap_token::BootstrapToken::parse(token) {
            Ok(t) => crate::authn::bootstrap_token(&app.objects, &t).await?,
            Err(_) => crate::serviceaccount_token::authenticate(&app.objects, &app.tokens, token).await?,
        };
    }
    let method = req.method().clone();
    let q: HashMap<String, String> = request::parse_query(req.uri().query());
    let attrs = Attributes::from_request(&method, &path, &q);
    if let Decision::Deny { reason } = app.authorizer.authorize(&user, &attrs) {
        tracing::debug!(user = %user.name, verb = %attrs.verb, %path, "forbidden");
        return Err(authz::forbidden(&user, &attrs, &reason));
    }
    if let Some(target) = stream_proxy::match_path(&path) {
        return stream_proxy::serve(app, &user, &attrs, target, req).await;
    }
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => {
            // Upstream's `etcd` check: the datastore answers a quorum read.
            return match app.objects.store().health().await {
                Ok(_) => Ok(text(StatusCode::OK, "ok")),
                Err(e) => Ok(text(StatusCode::INTERNAL_SERVER_ERROR, &format!("[-]etcd failed: {e}"))),
            };
        }
        "/version" | "/version/" => return Ok(rest::json_response(StatusCode::OK, &discovery::version(), &[])),
        "/metrics" if method == Method::GET => return Ok(metrics(&app.metrics)),
        SNAPSHOT_PATH => return snapshot(app, &method).await,
        _ => {}
    }
    if method == Method::GET {
        let trimmed = path.trim_end_matches('/');
        let root = match trimmed {
            "/api" => Some(aggregated_discovery::Root::Api),
            "/apis" => Some(aggregated_discovery::Root::Apis),
            _ => None,
        };
        if let Some(root) = root {
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
            if let aggregated_discovery::Negotiated::Aggregated(version) = aggregated_discovery::negotiate(accept) {
                return Ok(aggregated_discovery::response(root, version, req.headers()));
            }
            let doc = match root {
                aggregated_discovery::Root::Api => discovery::core_versions(&app.server_address),
                aggregated_discovery::Root::Apis => discovery::group_list(),
            };
            let mut resp = rest::json_response(StatusCode::OK, &doc, &[]);
            resp.headers_mut()
                .insert(header::VARY, http::HeaderValue::from_static("Accept"));
            return Ok(resp);
        }
        if trimmed == "/openapi/v2" {
            return crate::openapi_v2::response(req.headers());
        }
        let doc = match trimmed {
            "/openapi/v3" => Some(crate::openapi::index()),
            "/openapi/v3/api/v1" => crate::openapi::document("", "v1"),
            "/api/v1" => discovery::resource_list("", "v1"),
            _ => {
                let segs: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
                match segs.as_slice() {
                    ["apis", g] => Some(discovery::group(g).ok_or_else(ApiError::no_route)?),
                    ["apis", g, v] => Some(discovery::resource_list(g, v).ok_or_else(ApiError::no_route)?),
                    ["openapi", "v3", "apis", g, v] => {
                        Some(crate::openapi::document(g, v).ok_or_else(ApiError::no_route)?)
                    }
                    _ => None,
                }
            }
        };
        if let Some(doc) = doc {
            return Ok(rest::json_response(StatusCode::OK, &doc, &[]));
        }
    }
    let Some(rr) = request::parse_path(&path)? else {
        return Err(ApiError::no_route());
    };
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .map_err(|e| ApiError {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: e.to_string(),
            details: None,
        })?;
    if rr.res.group == authz::review::GROUP {
        if method != Method::POST || rr.name.is_some() {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
        let body = rest::json_body(&headers, body)?;
        let obj = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
        let out = authz::review::review(&app.authorizer, &user, rr.res, obj)?;
        return Ok(rest::json_response(StatusCode::CREATED, &out, &[]));
    }
    if rr.res.group == crate::authn_review::GROUP {
        if method != Method::POST || rr.name.is_some() {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
        let body = rest::json_body(&headers, body)?;
        let obj = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
        let out = crate::authn_review::review(&app.objects, &app.tokens, &user, rr.res, obj).await?;
        return Ok(rest::json_response(StatusCode::CREATED, &out, &[]));
    }
    if crate::autoscaling_v1::is_v1_hpa(rr.res) {
        return crate::autoscaling_v1::serve(app, &user, &method, rr, q, &headers, body).await;
    }
    if rr.res.group == crate::metrics::GROUP {
        return crate::metrics::serve(app, &method, &rr, &q).await;
    }
    rest::handle(app, &user, &method, rr, q, &headers, body).await
}

/// The non-resource path that serves a snapshot of the whole store (`skiff snapshot
/// save`). Like any non-resource URL it is authorized by RBAC: only subjects whose
/// roles grant `get` on it (or on `nonResourceURLs: ["*"]`, as `cluster-admin` and
/// the `system:masters` group have) may read it, since it holds every Secret.
pub const SNAPSHOT_PATH: &str = "/skiff/snapshot";

/// `GET /skiff/snapshot`: a consistent snapshot of every key. When the engine has a
/// snapshot of its own ([`skiff_store::Store::native_snapshot`], etcd's), that is
/// streamed as the engine produces it (the file `etcdctl snapshot save` writes);
/// otherwise a [`skiff_store::snapshot::Snapshot`] in Skiff's format, taken through
/// the store trait. Headers: `x-skiff-snapshot-format` (`etcd` or `skiff`) and
/// `x-skiff-snapshot-revision` (the snapshot's revision; for a streamed etcd
/// snapshot the revision when it was requested, which the snapshot holds at least).
async fn snapshot(app: &App, method: &Method) -> Result<Response, ApiError> {
    use futures::StreamExt;
    use skiff_store::snapshot::{Format, Snapshot, SnapshotError};
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "only GET is allowed on {SNAPSHOT_PATH} ({method})"
        )));
    }
    let store = app.objects.store();
    let headers = |format: Format, revision: skiff_store::Revision| {
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static("x-skiff-snapshot-format"),
                format.name().to_string(),
            ),
            (
                header::HeaderName::from_static("x-skiff-snapshot-revision"),
                revision.to_string(),
            ),
        ]
    };
    if let Some(native) = store.native_snapshot().await? {
        tracing::info!(
            revision = native.revision,
            format = native.format.name(),
            "streaming snapshot"
        );
        let body = axum::body::Body::from_stream(native.chunks.inspect(|c| {
            if let Err(e) = c {
                tracing::error!(error = %e, "snapshot stream failed");
            }
        }));
        return Ok((StatusCode::OK, headers(native.format, native.revision), body).into_response());
    }
    let snap = Snapshot::take(store.as_ref()).await.map_err(|e| match e {
        SnapshotError::Store(e) => ApiError::from(e),
        e => ApiError::internal(e.to_string()),
    })?;
    tracing::info!(revision = snap.revision, keys = snap.items.len(), "snapshot served");
    Ok((StatusCode::OK, headers(Format::Skiff, snap.revision), snap.encode()).into_response())
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Binds the listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}
