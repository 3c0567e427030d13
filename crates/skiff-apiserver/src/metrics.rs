//! The resource metrics API `metrics.k8s.io/v1beta1` (`NodeMetrics`, `PodMetrics`),
//! what `kubectl top` and the HorizontalPodAutoscaler read.
//!
//! Upstream serves it from metrics-server behind the aggregation layer; Skiff's
//! apiserver serves it in-process with the same shapes: on each request it scrapes
//! the kubelets' Summary API (`GET https://{node}:{port}/stats/summary`, with the
//! same client and node address as `pods/{name}/log`) and converts what they report.
//! Nothing is stored. Like metrics-server, usage is the kubelet's rate
//! `usageNanoCores` and `memory.workingSetBytes`; a node or pod whose kubelet does
//! not answer, or that lacks either value (a container seen in only one sample so
//! far), is left out of lists and is `404 NotFound` on get. Only `get` and `list`
//! (with label and field selectors) are served; other verbs are `405`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_api::registry::{self, ResourceInfo};

use crate::App;
use crate::list::{self, Selectors};
use crate::request::ResourceRequest;
use crate::rest::json_response;
use crate::status::ApiError;

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
/// The API version.
pub const VERSION: &str = "v1beta1";
/// `window` reported with every sample: the kubelet's sampling interval, over which
/// its `usageNanoCores` rate is averaged ([`skiff_kubelet`'s `SAMPLE_INTERVAL`]).
pub const WINDOW: &str = "10s";
/// How long a kubelet may take to answer `/stats/summary`.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// CPU nano-cores as upstream's canonical quantity string (`NewScaledQuantity(n, Nano)`):
/// `0`, `250m`, `2`, or `123456789n` when not a whole number of micro-cores.
pub fn format_cpu(nano: u64) -> String {
    match nano {
        0 => "0".into(),
        n if n % 1_000_000_000 == 0 => format!("{}", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}u", n / 1_000),
        n => format!("{n}n"),
    }
}

/// Bytes as upstream's canonical BinarySI quantity string (`12Ki`, `3Mi`, `1000`).
pub fn format_memory(bytes: u64) -> String {
    skiff_api::resource_list::Quantity {
        milli: bytes as i128 * 1000,
        format: skiff_api::resource_list::Format::BinarySI,
    }
    .to_string()
}

/// `{cpu, memory}` usage from a Summary API `cpu`/`memory` pair, with the sample time;
/// `None` when either rate or working set is missing.
fn usage(stats: &Value) -> Option<(String, Value)> {
    let cpu = stats.pointer("/cpu/usageNanoCores").and_then(Value::as_u64)?;
    let mem = stats.pointer("/memory/workingSetBytes").and_then(Value::as_u64)?;
    let time = stats.pointer("/cpu/time").and_then(Value::as_str)?.to_string();
    Some((time, json!({"cpu": format_cpu(cpu), "memory": format_memory(mem)})))
}

fn metadata(obj: &Value, now: &str) -> Value {
    let mut m = json!({"name": obj.pointer("/metadata/name").cloned().unwrap_or(json!("")),
                       "creationTimestamp": now});
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        m["namespace"] = ns.clone();
    }
    if let Some(l) = obj.pointer("/metadata/labels") {
        m["labels"] = l.clone();
    }
    m
}

/// The `NodeMetrics` of `node` from its kubelet's summary, if the summary has usage.
pub fn node_metrics(node: &Value, summary: &Value, now: &str) -> Option<Value> {
    let (timestamp, usage) = usage(summary.get("node")?)?;
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(node, now),
        "timestamp": timestamp, "window": WINDOW, "usage": usage,
    }))
}

/// The `PodMetrics` of `pod` from its node's summary: every container of the pod in
/// the summary must have usage, else `None` (as metrics-server drops incomplete pods).
pub fn pod_metrics(pod: &Value, summary: &Value, now: &str) -> Option<Value> {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str)?;
    let name = pod.pointer("/metadata/name").and_then(Value::as_str)?;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let entry = summary.get("pods")?.as_array()?.iter().find(|p| {
        p.pointer("/podRef/namespace").and_then(Value::as_str) == Some(ns)
            && p.pointer("/podRef/name").and_then(Value::as_str) == Some(name)
            && (uid.is_empty() || p.pointer("/podRef/uid").and_then(Value::as_str) == Some(uid))
    })?;
    let mut timestamp = String::new();
    let mut containers = Vec::new();
    for c in entry.get("containers")?.as_array()? {
        let (t, u) = usage(c)?;
        timestamp = timestamp.max(t);
        containers.push(json!({"name": c.get("name")?, "usage": u}));
    }
    if containers.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(pod, now),
        "timestamp": timestamp, "window": WINDOW, "containers": containers,
    }))
}

/// Fetches a node's summary; `None` (logged) when its kubelet is unreachable or
/// answers with an error.
async fn scrape(app: &App, node: &Value) -> Option<Value> {
    let name = node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let base = crate::logs::node_kubelet_base(node)?;
    let uri = format!("{base}/stats/summary");
    let req = http::Request::get(&uri).body(axum::body::Body::empty()).ok()?;
    let fetch = async {
        let resp = app.kubelet.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body).trim()));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, fetch).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(node = name, error = %e, "scraping kubelet summary");
            None
        }
        Err(_) => {
            tracing::debug!(node = name, "scraping kubelet summary timed out");
            None
        }
    }
}

/// Scrapes the named nodes concurrently: node name -> summary.
async fn scrape_nodes(app: &App, names: impl IntoIterator<Item = String>) -> HashMap<String, Value> {
    let nodes_res = registry::lookup("", "v1", "nodes").expect("nodes are served");
    let tasks = names.into_iter().map(|n| async move {
        let node = app.objects.get(nodes_res, None, &n).await.ok()?;
        Some((n, scrape(app, &node).await?))
    });
    futures::future::join_all(tasks).await.into_iter().flatten().collect()
}

fn selector_query(q: &HashMap<String, String>) -> HashMap<String, String> {
    q.iter()
        .filter(|(k, _)| *k == "labelSelector" || *k == "fieldSelector")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn list_response(res: &ResourceInfo, items: Vec<Value>) -> axum::response::Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {}, "items": items}),
        &[],
    )
}

/// Serves a request for `nodes` or `pods` of `metrics.k8s.io/v1beta1`.
pub async fn serve(
    app: &App,
    method: &Method,
    rr: &ResourceRequest,
    q: &HashMap<String, String>,
) -> Result<axum::response::Response, ApiError> {
    if *method != Method::GET || rr.subresource.is_some() || crate::request::flag(q, "watch") || rr.watch_path {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    let now = crate::objects::now_rfc3339();
    let source = registry::lookup("", "v1", rr.res.plural).expect("nodes and pods are served");
    let ns = rr.namespace.as_deref();
    let objects: Vec<Value> = match &rr.name {
        Some(name) => match app.objects.get(source, ns, name).await {
            Ok(o) => vec![o],
            Err(e) if e.code == 404 => return Err(ApiError::not_found(rr.res, name)),
            Err(e) => return Err(e),
        },
        None => {
            let sq = selector_query(q);
            let sel = Selectors::from_query(&sq)?;
            list::list(&app.objects, source, ns, &sq, &sel).await?.items
        }
    };
    let is_nodes = rr.res.plural == "nodes";
    let node_of = |o: &Value| -> Option<String> {
        let p = if is_nodes { "/metadata/name" } else { "/spec/nodeName" };
        o.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let wanted: BTreeMap<String, ()> = objects.iter().filter_map(node_of).map(|n| (n, ())).collect();
    let summaries = scrape_nodes(app, wanted.into_keys()).await;
    let items: Vec<Value> = objects
        .iter()
        .filter_map(|o| {
            let summary = summaries.get(&node_of(o)?)?;
            if is_nodes {
                node_metrics(o, summary, &now)
            } else {
                pod_metrics(o, summary, &now)
            }
        })
        .collect();
    match &rr.name {
        Some(name) => {
            let item = items
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found(rr.res, name))?;
            Ok(json_response(StatusCode::OK, &item, &[]))
        }
        None => Ok(list_response(rr.res, items)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_canonically() {
        assert_eq!(format_cpu(0), "0");
        assert_eq!(format_cpu(250_000_000), "250m");
        assert_eq!(format_cpu(2_000_000_000), "2");
        assert_eq!(format_cpu(1_500), "1500n");
        assert_eq!(format_cpu(12_000), "12u");
        assert_eq!(format_cpu(123_456_789), "123456789n");
        assert_eq!(format_memory(3 * 1024 * 1024), "3Mi");
        assert_eq!(format_memory(12 * 1024 + 1024), "13Ki");
        assert_eq!(format_memory(1000), "1k");
    }

    fn summary() -> Value {
        json!({
            "node": {"nodeName": "n1",
                     "cpu": {"time": "2026-01-01T00:00:10Z", "usageNanoCores": 1_250_000_000u64, "usageCoreNanoSeconds": 9},
                     "memory": {"time": "2026-01-01T00:00:10Z", "workingSetBytes": 2u64 << 30}},
            "pods": [
                {"podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                 "containers": [
                    {"name": "app", "cpu": {"time": "2026-01-01T00:00:10Z", "usageNanoCores": 500_000_000u64},
                     "memory": {"time": "2026-01-01T00:00:10Z", "workingSetBytes": 1u64 << 20}},
                    {"name": "side", "cpu": {"time": "2026-01-01T00:00:11Z", "usageNanoCores": 1_000u64},
                     "memory": {"time": "2026-01-01T00:00:11Z", "workingSetBytes": 4096u64}}]},
                {"podRef": {"name": "new", "namespace": "default", "uid": "u2"},
                 "containers": [{"name": "app", "cpu": {"time": "2026-01-01T00:00:10Z"},
                                 "memory": {"time": "2026-01-01T00:00:10Z", "workingSetBytes": 1}}]}
            ]
        })
    }

    #[test]
    fn node_metrics_have_metrics_server_shape() {
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let m = node_metrics(&node, &summary(), "now").unwrap();
        assert_eq!(m["kind"], "NodeMetrics");
        assert_eq!(m["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(m["metadata"]["name"], "n1");
        assert_eq!(m["metadata"]["labels"]["a"], "b");
        assert_eq!(m["timestamp"], "2026-01-01T00:00:10Z");
        assert_eq!(m["window"], "10s");
        assert_eq!(m["usage"], json!({"cpu": "1250m", "memory": "2Gi"}));
        assert!(node_metrics(&node, &json!({"node": {"nodeName": "n1"}}), "now").is_none());
    }

    #[test]
    fn pod_metrics_need_every_container_and_the_same_uid() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1"}});
        let m = pod_metrics(&pod, &summary(), "now").unwrap();
        assert_eq!(m["kind"], "PodMetrics");
        assert_eq!(m["metadata"]["namespace"], "default");
        assert_eq!(m["timestamp"], "2026-01-01T00:00:11Z");
        assert_eq!(
            m["containers"],
            json!([{"name": "app", "usage": {"cpu": "500m", "memory": "1Mi"}},
                   {"name": "side", "usage": {"cpu": "1u", "memory": "4Ki"}}])
        );
        let recreated = json!({"metadata": {"name": "web", "namespace": "default", "uid": "other"}});
        assert!(pod_metrics(&recreated, &summary(), "now").is_none());
        let first_sample = json!({"metadata": {"name": "new", "namespace": "default", "uid": "u2"}});
        assert!(pod_metrics(&first_sample, &summary(), "now").is_none());
    }
}
