//! Integration tests of discovery and OpenAPI: aggregated discovery
//! (`apidiscovery.k8s.io/v2`) and the legacy documents over HTTPS, kube-rs's
//! discovery in both modes, `/openapi/v2`, and the machine's `kubectl`.

mod support;

use support::{TestServer, start};

use http::{HeaderMap, StatusCode, header};
use kube::discovery::{Discovery, Scope};
use serde_json::Value;

const CLIENT_GO_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// A raw GET with the given headers: status, response headers and JSON body (or
/// `Null` when the body is empty).
async fn get(s: &TestServer, path: &str, headers: &[(header::HeaderName, &str)]) -> (StatusCode, HeaderMap, Value) {
    let mut req = http::Request::get(path);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    let resp = s
        .client
        .send(req.body(kube::client::Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (parts.status, parts.headers, json)
}

fn find<'a>(items: &'a Value, key: &str, value: &str) -> &'a Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.pointer(key).and_then(Value::as_str) == Some(value))
        .unwrap_or_else(|| panic!("no item with {key} = {value} in {items}"))
}

#[tokio::test]
async fn aggregated_discovery_documents() {
    let s = start().await;

    let (code, h, apis) = get(&s, "/apis", &[(header::ACCEPT, CLIENT_GO_ACCEPT)]).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        h[header::CONTENT_TYPE],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(h[header::VARY], "Accept");
    assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    let apps = find(&apis["items"], "/metadata/name", "apps");
    let v1 = &apps["versions"][0];
    assert_eq!(
        (v1["version"].as_str(), v1["freshness"].as_str()),
        (Some("v1"), Some("Current"))
    );
    let deploy = find(&v1["resources"], "/resource", "deployments");
    assert_eq!(deploy["responseKind"]["kind"], "Deployment");
    assert_eq!(deploy["scope"], "Namespaced");
    assert_eq!(deploy["singularResource"], "deployment");
    assert_eq!(deploy["shortNames"], serde_json::json!(["deploy"]));
    assert!(deploy["categories"].as_array().unwrap().contains(&"all".into()));
    let scale = find(&deploy["subresources"], "/subresource", "scale");
    assert_eq!(
        scale["responseKind"],
        serde_json::json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert!(
        apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["metadata"]["name"] != "")
    );

    let (code, h, api) = get(&s, "/api", &[(header::ACCEPT, CLIENT_GO_ACCEPT)]).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("as=APIGroupDiscoveryList")
    );
    let items = api["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0]["metadata"].get("name").is_none_or(|n| n == ""));
    let pods = find(&items[0]["versions"][0]["resources"], "/resource", "pods");
    assert_eq!(pods["shortNames"], serde_json::json!(["po"]));
    for sub in ["status", "log", "binding"] {
        find(&pods["subresources"], "/subresource", sub);
    }
    assert_eq!(
        find(&pods["subresources"], "/subresource", "binding")["verbs"],
        serde_json::json!(["create"])
    );
    let nodes = find(&items[0]["versions"][0]["resources"], "/resource", "nodes");
    assert_eq!(nodes["scope"], "Cluster");

    // v2beta1 for older clients, with a matching content type.
    let (_, h, beta) = get(
        &s,
        "/apis",
        &[(
            header::ACCEPT,
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        )],
    )
    .await;
    assert_eq!(beta["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().contains("v=v2beta1"));

    // A matching ETag answers 304.
    let etag = h[header::ETAG].to_str().unwrap().to_string();
    let (code, _, body) = get(
        &s,
        "/apis",
        &[
            (
                header::ACCEPT,
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
            ),
            (header::IF_NONE_MATCH, &etag),
        ],
    )
    .await;
    assert_eq!((code, body), (StatusCode::NOT_MODIFIED, Value::Null));

    // Legacy clients keep the legacy documents.
    let (_, h, legacy) = get(&s, "/apis", &[(header::ACCEPT, "application/json")]).await;
    assert_eq!(legacy["kind"], "APIGroupList");
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    assert_eq!(h[header::VARY], "Accept");
    let (_, _, legacy) = get(&s, "/api", &[]).await;
    assert_eq!(legacy["kind"], "APIVersions");
}

#[tokio::test]
async fn kube_discovery_sees_groups_in_both_modes() {
    let s = start().await;
    let legacy = Discovery::new(s.client.clone()).run().await.unwrap();
    let aggregated = Discovery::new(s.client.clone()).run_aggregated().await.unwrap();
    for d in [&legacy, &aggregated] {
        for g in ["", "apps", "batch", "rbac.authorization.k8s.io", "coordination.k8s.io"] {
            assert!(d.has_group(g), "group {g:?} missing");
        }
        let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment");
        let (ar, caps) = d.resolve_gvk(&gvk).unwrap();
        assert_eq!(ar.plural, "deployments");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(caps.subresources.iter().any(|(sub, _)| sub.plural == "scale"));
        let (ar, caps) = d
            .resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "Node"))
            .unwrap();
        assert_eq!((ar.plural.as_str(), caps.scope), ("nodes", Scope::Cluster));
    }
    let names = |d: &Discovery| {
        let mut v: Vec<String> = d.groups().map(|g| g.name().to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&legacy), names(&aggregated));
}

#[tokio::test]
async fn openapi_v2_serves_json_and_protobuf() {
    let s = start().await;
    let (code, h, doc) = get(&s, "/openapi/v2", &[(header::ACCEPT, "application/json")]).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    assert_eq!(doc["swagger"], "2.0");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
    let container = &doc["definitions"]["io.k8s.api.core.v1.Container"];
    assert_eq!(
        container["properties"]["ports"]["x-kubernetes-patch-merge-key"],
        "containerPort"
    );

    let (code, _, status) = get(&s, "/openapi/v2", &[(header::ACCEPT, "application/yaml")]).await;
    assert_eq!(code, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("NotAcceptable"))
    );

    // The protobuf form client-go asks for.
    let req = http::Request::get("/openapi/v2")
        .header(
            header::ACCEPT,
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = s.client.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    // Field 1 (swagger) = "2.0".
    assert_eq!(&bytes[..5], b"\x0a\x032.0");
}

/// The machine's kubectl, if installed.
fn kubectl() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join("kubectl"))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_api_resources_uses_two_discovery_requests() {
    let Some(kubectl) = kubectl() else {
        eprintln!("kubectl is not installed; skipping");
        return;
    };
    let s = start().await;
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["-v=6", "api-resources"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl failed: {stderr}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("deployments"),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(row("nodes"), ["nodes", "no", "v1", "false", "Node"]);
    assert_eq!(row("leases"), ["leases", "coordination.k8s.io/v1", "true", "Lease"]);
    // One request each to /api and /apis, none per group/version.
    let count = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("/api?"), 1, "{stderr}");
    assert_eq!(count("/apis?"), 1, "{stderr}");
    assert_eq!(count("/apis/apps/v1"), 0, "{stderr}");
    assert_eq!(count("/api/v1?"), 0, "{stderr}");
}

/// kubectl 1.28, which loads `/openapi/v2` (protobuf) before `apply`, if it is
/// installed next to the machine's kubectl (as `kubectl.1.28`).
fn kubectl_1_28() -> Option<std::path::PathBuf> {
    let p = std::fs::canonicalize(kubectl()?).ok()?.parent()?.join("kubectl.1.28");
    p.is_file().then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_28_applies_and_patches_with_openapi_v2() {
    let Some(kubectl) = kubectl_1_28() else {
        eprintln!("kubectl.1.28 is not installed; skipping");
        return;
    };
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let apply = |replicas: u32, port: u32| {
        let manifest = dir.path().join(format!("deploy-{replicas}.yaml"));
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n        ports:\n        - containerPort: {port}\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["apply", "-f"])
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(apply(2, 80).contains("created"));
    assert!(apply(3, 8080).contains("configured"));
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(s.client.clone(), "default");
    let d = deploys.get("web").await.unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let ports = spec.template.spec.unwrap().containers[0].ports.clone().unwrap();
    assert_eq!(ports.iter().map(|p| p.container_port).collect::<Vec<_>>(), [8080]);
}
