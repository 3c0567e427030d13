//! Snapshots through the API: `GET /skiff/snapshot` (cluster admins only) returns a
//! snapshot that, restored into a new data dir, brings back every object of the
//! cluster with its resourceVersion.

mod support;

use std::collections::BTreeMap;

use http_body_util::BodyExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, verbs};
use serde_json::{Value, json};
use skiff_apiserver::pki::Pki;
use skiff_store::snapshot::Snapshot;

/// `GET /skiff/snapshot` as `client`: the status and the body.
async fn get_snapshot(client: &kube::Client) -> (u16, Vec<u8>) {
    let req = http::Request::get("/skiff/snapshot").body(Vec::new()).unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// Every object the API serves, by `resource/namespace/name`, from every listable
/// resource that discovery reports.
async fn every_object(client: &kube::Client) -> BTreeMap<String, Value> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut out = BTreeMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let list = api.list(&ListParams::default()).await.unwrap();
            for obj in list.items {
                let key = format!(
                    "{}.{}/{}/{}",
                    ar.plural,
                    ar.group,
                    obj.metadata.namespace.clone().unwrap_or_default(),
                    obj.metadata.name.clone().unwrap_or_default()
                );
                out.insert(key, serde_json::to_value(&obj).unwrap());
            }
        }
    }
    out
}

async fn create(api: Api<DynamicObject>, body: Value) {
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

fn dyn_api(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

#[tokio::test]
async fn a_cluster_round_trips_through_snapshot_and_restore() {
    let a = support::start().await;
    let c = &a.client;

    // A few hundred objects of several kinds, namespaced and cluster-scoped.
    for n in 0..6 {
        let ns = format!("team-{n}");
        create(
            dyn_api(c, "", "v1", "Namespace", "namespaces", None),
            json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"n": n.to_string()}}
            }),
        )
        .await;
        for i in 0..30 {
            create(
                dyn_api(c, "", "v1", "ConfigMap", "configmaps", Some(&ns)),
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")},
                    "data": {"index": i.to_string(), "blob": "x".repeat(i * 37)}
                }),
            )
            .await;
        }
        for i in 0..10 {
            create(
                dyn_api(c, "", "v1", "Secret", "secrets", Some(&ns)),
                json!({
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("s-{i}")},
                    "stringData": {"password": format!("pw-{n}-{i}")}
                }),
            )
            .await;
        }
        for i in 0..5 {
            create(
                dyn_api(c, "", "v1", "Service", "services", Some(&ns)),
                json!({
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")},
                    "spec": {"selector": {"app": "x"}, "ports": [{"port": 80 + i}]}
                }),
            )
            .await;
        }
        for i in 0..5 {
            create(
                dyn_api(c, "apps", "v1", "Deployment", "deployments", Some(&ns)),
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("web-{i}")},
                    "spec": {"replicas": i, "selector": {"matchLabels": {"app": "web"}},
                             "template": {"metadata": {"labels": {"app": "web"}},
                                          "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
                }),
            )
            .await;
        }
    }
    for i in 0..40 {
        create(
            dyn_api(
                c,
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                None,
            ),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": format!("reader-{i}")},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
            }),
        )
        .await;
    }
    // Updates and deletes, so objects carry different resourceVersions.
    let cms = dyn_api(c, "", "v1", "ConfigMap", "configmaps", Some("team-0"));
    for i in 0..10 {
        let mut cm = cms.get(&format!("cm-{i}")).await.unwrap();
        cm.data["data"]["index"] = json!(format!("updated-{i}"));
        cms.replace(&format!("cm-{i}"), &PostParams::default(), &cm)
            .await
            .unwrap();
    }
    for i in 20..30 {
        cms.delete(&format!("cm-{i}"), &Default::default()).await.unwrap();
    }

    // Only cluster admins may take a snapshot.
    let pki = Pki::load_or_create(&a._dir.path().join("tls")).unwrap();
    let user = pki.ensure_cert("jane", "jane", &["developers"], &[]).unwrap();
    let jane_kc = a._dir.path().join("jane.kubeconfig");
    let url = kube::config::Kubeconfig::read_from(&a.kubeconfig).unwrap().clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .server
        .clone()
        .unwrap();
    pki.write_kubeconfig(&jane_kc, &url, "jane", &user).unwrap();
    let jane = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&jane_kc).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let (status, body) = get_snapshot(&jane).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));

    let before = every_object(c).await;
    assert!(before.len() > 300, "only {} objects", before.len());
    let (status, raw) = get_snapshot(c).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
    let snap = Snapshot::decode(&raw).unwrap();
    // Changes after the snapshot are not in it.
    cms.delete("cm-0", &Default::default()).await.unwrap();
    drop(a);

    let dir = tempfile::tempdir().unwrap();
    skiff_store::EmbeddedStore::restore(&dir.path().join("db"), &snap).unwrap();
    let b = {
        let store = std::sync::Arc::new(skiff_store::EmbeddedStore::open(&dir.path().join("db")).unwrap());
        support::start_with_store(dir, store).await
    };
    let after = every_object(&b.client).await;

    // Every object is back, identical, resourceVersion included — except what the new
    // server itself rewrote at start-up (its own address in the `kubernetes`
    // Service's endpoints), which then carries a newer resourceVersion.
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the restored cluster has a different set of objects"
    );
    let mut rewritten = Vec::new();
    for (key, obj) in &before {
        let restored = &after[key];
        let rv: i64 = restored["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        if rv > snap.revision {
            rewritten.push(key.clone());
            continue;
        }
        assert_eq!(obj, restored, "{key} differs after restore");
    }
    eprintln!(
        "{} objects compared, {} rewritten by the restored server: {rewritten:?}",
        before.len(),
        rewritten.len()
    );
    // The restored server publishes its own address (the `kubernetes` Service's
    // endpoints) and CA (`kube-public/cluster-info`, for joining nodes).
    assert!(
        rewritten
            .iter()
            .all(|k| k.contains("/default/kubernetes") || k.ends_with("/kube-public/cluster-info")),
        "objects rewritten after restore: {rewritten:?}"
    );
    let cm0 = dyn_api(&b.client, "", "v1", "ConfigMap", "configmaps", Some("team-0"))
        .get("cm-0")
        .await
        .unwrap();
    assert_eq!(cm0.data["data"]["index"], "updated-0");

    // The restored cluster keeps working: a new write gets a newer resourceVersion.
    let created = dyn_api(&b.client, "", "v1", "ConfigMap", "configmaps", Some("team-1"))
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let rv: i64 = created.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv > snap.revision);
}

/// A full disk under the store: creates fail with a `507` `Status` saying to free
/// disk space, reads keep working, and creates work again once space is freed.
#[tokio::test]
async fn a_full_disk_fails_writes_with_507_and_keeps_reads() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().to_str().unwrap().to_string();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs", &m])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(m.clone());
    let filler = dir.path().join("filler");
    let server = {
        let store = std::sync::Arc::new(skiff_store::EmbeddedStore::open(&dir.path().join("db")).unwrap());
        support::start_with_store(dir, store).await
    };
    let cms = dyn_api(&server.client, "", "v1", "ConfigMap", "configmaps", Some("default"));
    let cm = |name: &str| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})).unwrap()
    };
    cms.create(&PostParams::default(), &cm("before")).await.unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
    }
    match cms.create(&PostParams::default(), &cm("during")).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 507, "{s:?}");
            assert!(s.message.contains("free disk space"), "{}", s.message);
        }
        other => panic!("expected a 507, got {other:?}"),
    }
    assert!(cms.get("before").await.is_ok());
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 1);
    std::fs::remove_file(&filler).unwrap();
    cms.create(&PostParams::default(), &cm("after")).await.unwrap();
    drop(server);
}
