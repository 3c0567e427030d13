//! `pods/{name}/log`: proxied to the kubelet's HTTPS API on the pod's node
//! (`/containerLogs/{namespace}/{pod}/{container}`), as upstream's apiserver does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use skiff_api::registry;

use crate::App;
use crate::status::ApiError;

/// HTTPS client for kubelets: trusts the cluster CA and presents the apiserver's
/// kubelet-client certificate.
pub type KubeletClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// Builds the kubelet client from PEM material.
pub fn kubelet_client(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<KubeletClient, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Serves `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
pub async fn pod_logs(app: &App, ns: &str, name: &str, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let pods = registry::lookup("", "v1", "pods").expect("pods are served");
    let pod = app.objects.get(pods, Some(ns), name).await?;
    let container = pick_container(&pod, name, q.get("container").map(String::as_str))?;
    let base = kubelet_base(app, &pod, name).await?;
    let mut query: Vec<(String, String)> = Vec::new();
    for k in [
        "follow",
        "previous",
        "timestamps",
        "tailLines",
        "limitBytes",
        "sinceSeconds",
        "sinceTime",
    ] {
        if let Some(v) = q.get(k) {
            query.push((k.to_string(), v.clone()));
        }
    }
    let qs = serde_urlencoded::to_string(&query).unwrap_or_default();
    let uri = format!("{base}/containerLogs/{ns}/{name}/{container}?{qs}");
    let req = http::Request::get(&uri)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = app
        .kubelet
        .request(req)
        .await
        .map_err(|e| ApiError::internal(format!("Get \"{uri}\": {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_string();
        return Err(ApiError {
            code: if status.as_u16() == 404 { 404 } else { 400 },
            reason: if status.as_u16() == 404 {
                "NotFound"
            } else {
                "BadRequest"
            },
            message: msg,
            details: None,
        });
    }
    let stream = resp.into_body().into_data_stream();
    Ok(Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

/// The container a per-container pod subresource (`log`, `exec`, `attach`) addresses:
/// the `container` query parameter, which must name one of the pod's (init)
/// containers, or the only app container when it is absent (400 otherwise, with
/// upstream's messages).
pub(crate) fn pick_container(pod: &Value, name: &str, container: Option<&str>) -> Result<String, ApiError> {
    let containers: Vec<String> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    let app_containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let picked = match container.filter(|c| !c.is_empty()) {
        Some(c) => {
            if !containers.iter().any(|x| x == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if app_containers.len() == 1 => app_containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                app_containers.join(" ")
            )));
        }
    };
    Ok(picked)
}

/// `https://{node address}:{kubelet port}` of the node the pod is bound to
/// (the node's InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`);
/// 400 when the pod is not bound yet.
pub(crate) async fn kubelet_base(app: &App, pod: &Value, name: &str) -> Result<String, ApiError> {
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = registry::lookup("", "v1", "nodes").expect("nodes are served");
    let node = app.objects.get(nodes, None, node_name).await?;
    node_kubelet_base(&node).ok_or_else(|| ApiError::internal(format!("node {node_name} has no address")))
}

/// `https://{address}:{port}` of a Node's kubelet API: its InternalIP (else its first
/// address) and `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset);
/// `None` when the node reports no address.
pub(crate) fn node_kubelet_base(node: &Value) -> Option<String> {
    let addr = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP").or_else(|| a.first()))
        .and_then(|x| x["address"].as_str())?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .unwrap_or(10250);
    let host = if addr.contains(':') { format!("[{addr}]") } else { addr };
    Some(format!("https://{host}:{port}"))
}
