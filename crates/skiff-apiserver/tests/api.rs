//! Integration tests: a real apiserver on a free port with a temporary embedded
//! store, driven through the `kube` client exactly as other components use it.

mod support;

use support::{TestServer, start};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn system_namespaces_exist() {
    let s = start().await;
    let ns: Api<Namespace> = Api::all(s.client.clone());
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&want.to_string()), "{want} missing from {names:?}");
    }
}

#[tokio::test]
async fn pod_crud_defaults_and_conflicts() {
    let s = start().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("web", json!({"app": "web"})))
        .await
        .unwrap();
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(created.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());

    // AlreadyExists.
    let err = pods
        .create(&PostParams::default(), &pod("web", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    // Stale update -> 409 Conflict.
    let mut a = pods.get("web").await.unwrap();
    let mut b = a.clone();
    a.metadata.labels.get_or_insert_default().insert("x".into(), "1".into());
    pods.replace("web", &PostParams::default(), &a).await.unwrap();
    b.metadata.labels.get_or_insert_default().insert("x".into(), "2".into());
    let err = pods.replace("web", &PostParams::default(), &b).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    // Label selectors.
    pods.create(&PostParams::default(), &pod("other", json!({"app": "db"})))
        .await
        .unwrap();
    let l = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(l.items.len(), 1);
    let l = pods
        .list(&ListParams::default().labels("app in (web,db)"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 2);

    // Unbound pods are deleted immediately.
    pods.delete("other", &DeleteParams::default()).await.unwrap();
    let err = pods.get("other").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_field_paths() {
    let s = start().await;
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}
    }))
    .unwrap();
    let err = deploys.create(&PostParams::default(), &d).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected API error")
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("spec.template.spec.containers: Required value"),
        "{}",
        status.message
    );
    assert!(deploys.get_opt("web").await.unwrap().is_none(), "nothing is stored");

    // Unknown fields with fieldValidation=Strict are a 400.
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let patch = json!({"spec": {"bogus": 1}});
    pods.create(&PostParams::default(), &pod("p", json!({}))).await.unwrap();
    let pp = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..Default::default()
    };
    let err = pods.patch("p", &pp, &Patch::Merge(&patch)).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400 && s.message.contains("unknown field \"spec.bogus\"")),
        "{err:?}"
    );
}

#[tokio::test]
async fn watch_delivers_changes_in_order() {
    let s = start().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let first = pods
        .create(&PostParams::default(), &pod("a", json!({"app": "w"})))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().labels("app=w"), &rv)
        .await
        .unwrap()
        .boxed();
    pods.create(&PostParams::default(), &pod("b", json!({"app": "w"})))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("c", json!({"app": "other"})))
        .await
        .unwrap();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(p) => seen.push(format!("ADDED {}", p.metadata.name.unwrap())),
            WatchEvent::Modified(p) => seen.push(format!("MODIFIED {}", p.metadata.name.unwrap())),
            WatchEvent::Deleted(p) => seen.push(format!("DELETED {}", p.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, vec!["ADDED b", "MODIFIED a", "DELETED b"]);
}

#[tokio::test]
async fn strategic_merge_patch_changes_one_container() {
    let s = start().await;
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "web", "image": "busybox", "args": ["httpd"]}, {"name": "side", "image": "busybox"}]}}}
    }))
    .unwrap();
    let created = deploys.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:1.35"}]}}}});
    let out = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let cs = &out.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].image.as_deref(), Some("busybox:1.35"));
    assert_eq!(cs[0].args.as_deref(), Some(&["httpd".to_string()][..]));
    assert_eq!(out.metadata.generation, Some(2));
    // Scale subresource.
    let scale = deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    assert_eq!(deploys.get("web").await.unwrap().spec.unwrap().replicas, Some(4));
}

#[tokio::test]
async fn other_built_in_kinds_are_served_and_validated() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let s = start().await;
    let jobs: Api<Job> = Api::namespaced(s.client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "pi"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "busybox"}]}}}
    }))
    .unwrap();
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let bad: Job = serde_json::from_value(
        json!({"metadata": {"name": "bad"}, "spec": {"template": {"spec": {"containers": []}}}}),
    )
    .unwrap();
    let err = jobs.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("spec.template.spec.containers")),
        "{err:?}"
    );
    let roles: Api<ClusterRole> = Api::all(s.client.clone());
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "view-pods"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})).unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    assert_eq!(
        roles.get("view-pods").await.unwrap().rules.unwrap()[0].verbs,
        vec!["get"]
    );
}

/// The machine's kubectl (v1.32+ typed `create` commands send protobuf bodies).
fn kubectl(server: &TestServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

// kubectl runs as a blocking child process, so the server needs worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf_and_the_objects_arrive_intact() {
    let s = start().await;
    for args in [
        vec![
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=0",
            "--port=80",
        ],
        vec!["create", "configmap", "settings", "--from-literal=mode=fast"],
        vec![
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=hunter2",
        ],
        vec!["create", "role", "reader", "--verb=get", "--resource=pods"],
        vec!["create", "ingress", "site", "--rule=example.com/shop=web:8080"],
    ] {
        let out = kubectl(&s, &args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deploy: Deployment = Api::namespaced(s.client.clone(), "default").get("web").await.unwrap();
    let spec = deploy.spec.unwrap();
    assert_eq!(spec.replicas, Some(0), "a pointer field's zero value survives");
    let template = spec.template.spec.unwrap();
    assert_eq!(template.containers[0].image.as_deref(), Some("busybox"));
    assert_eq!(template.containers[0].ports.as_ref().unwrap()[0].container_port, 80);
    let cm: k8s_openapi::api::core::v1::ConfigMap = Api::namespaced(s.client.clone(), "default")
        .get("settings")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["mode"], "fast");
    let secret: k8s_openapi::api::core::v1::Secret =
        Api::namespaced(s.client.clone(), "default").get("creds").await.unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"hunter2");
    let role: k8s_openapi::api::rbac::v1::Role = Api::namespaced(s.client.clone(), "default")
        .get("reader")
        .await
        .unwrap();
    assert_eq!(role.rules.unwrap()[0].api_groups, Some(vec![String::new()]));
    let ing: k8s_openapi::api::networking::v1::Ingress =
        Api::namespaced(s.client.clone(), "default").get("site").await.unwrap();
    let rule = &ing.spec.unwrap().rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("example.com"));
    let path = &rule.http.as_ref().unwrap().paths[0];
    assert_eq!(path.path.as_deref(), Some("/shop"));
    assert_eq!(path.backend.service.as_ref().unwrap().name, "web");
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports_that_survive_updates() {
    use k8s_openapi::api::core::v1::Service;
    let s = start().await;
    let services: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let kubernetes = services.get("kubernetes").await.unwrap();
    assert_eq!(kubernetes.spec.unwrap().cluster_ip.as_deref(), Some("10.43.0.1"));
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &svc).await.unwrap();
    let spec = created.spec.clone().unwrap();
    let node_port = spec.ports.as_ref().unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&node_port));
    // A client that sends the Service without its allocated values keeps them.
    let mut replacement = svc.clone();
    replacement.metadata.resource_version = created.metadata.resource_version.clone();
    let replaced = services
        .replace("web", &PostParams::default(), &replacement)
        .await
        .unwrap();
    let rspec = replaced.spec.unwrap();
    assert_eq!(rspec.cluster_ip, spec.cluster_ip);
    assert_eq!(rspec.ports.unwrap()[0].node_port, Some(node_port));
    // Another Service asking for the same node port is refused like upstream.
    let mut clash = svc.clone();
    clash.metadata.name = Some("clash".into());
    clash.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(node_port);
    let err = services.create(&PostParams::default(), &clash).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a Status, got {err:?}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("provided port is already allocated"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn server_side_apply_merges_owns_fields_and_reports_conflicts() {
    let s = start().await;
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let manifest = |replicas: i64, tier: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ssa", "labels": {"app": "ssa", "tier": tier}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "ssa"}},
                     "template": {"metadata": {"labels": {"app": "ssa"}},
                                  "spec": {"containers": [{"name": "web", "image": "busybox"}]}}}
        })
    };
    let params = PatchParams::apply("ci");
    let created = deploys
        .patch("ssa", &params, &Patch::Apply(manifest(2, "web")))
        .await
        .unwrap();
    assert_eq!(created.spec.as_ref().unwrap().replicas, Some(2));
    let managed = created.metadata.managed_fields.unwrap();
    assert_eq!(managed[0].manager.as_deref(), Some("ci"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    // Another manager changes replicas with an ordinary patch.
    deploys
        .patch(
            "ssa",
            &PatchParams {
                field_manager: Some("scaler".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    // Re-applying replicas=2 now conflicts with that manager...
    let err = deploys
        .patch("ssa", &params, &Patch::Apply(manifest(2, "back")))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a Status, got {err:?}")
    };
    assert_eq!(status.code, 409);
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"scaler\" using apps/v1: .spec.replicas"
    );
    // ...unless forced; and a label dropped from the manifest is removed.
    let mut without_tier = manifest(2, "x");
    without_tier["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("tier");
    let forced = deploys
        .patch("ssa", &PatchParams::apply("ci").force(), &Patch::Apply(without_tier))
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(2));
    let labels = forced.metadata.labels.unwrap();
    assert_eq!(labels.get("tier"), None);
    assert_eq!(labels.get("app").map(String::as_str), Some("ssa"));
}

#[tokio::test]
async fn custom_resource_definitions_serve_validate_and_clean_up_their_objects() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
    let s = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "required": ["size"], "properties": {
                                       "size": {"type": "integer", "minimum": 1},
                                       "color": {"type": "string", "default": "red"}}},
                                   "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let c = crds.get("widgets.example.com").await.unwrap();
            let ok = c
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if ok {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the CRD becomes Established");
    assert!(
        established
            .metadata
            .finalizers
            .unwrap()
            .contains(&"customresourcecleanup.apiextensions.k8s.io".into())
    );

    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3, "unknown": true}
    }))
    .unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"size": 3, "color": "red"}),
        "defaulted and pruned"
    );
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 0}
    }))
    .unwrap();
    let err = widgets.create(&PostParams::default(), &bad).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a Status, got {err:?}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("spec.size in body should be greater than or equal to 1"),
        "{}",
        status.message
    );
    // The status subresource is separate from the main resource.
    widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(widgets.get("w1").await.unwrap().data["status"]["ready"], json!(true));

    // Deleting the CRD deletes its objects, then the CRD itself.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while crds.get_opt("widgets.example.com").await.unwrap().is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the CRD goes away");
    let gone = widgets.list(&ListParams::default()).await;
    assert!(gone.is_err(), "widgets are no longer served");
}
