//! Apiservers on the etcd engine (a real single-member etcd from Debian's
//! `etcd-server`, on loopback): two apiservers sharing one etcd see each other's
//! writes (the HA control plane of `skiff server --disable-agent
//! --datastore-endpoint ...`), and with etcd down `/readyz` fails and requests fail
//! fast with a `500` Status naming the etcd endpoints instead of hanging (upstream
//! answers etcd failures with `InternalError`).

mod support;

#[path = "../../skiff-store/tests/support/etcd.rs"]
mod etcd_member;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_member::{Member, Ports};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use skiff_store::{EtcdConfig, EtcdStore, EtcdTls, Store};
use support::start_with_store;

static PORTS: Ports = Ports::new(23790, 23800);

async fn etcd_store(port: u16) -> Arc<dyn Store> {
    let mut cfg = EtcdConfig::parse(&format!("etcd://127.0.0.1:{port}"), EtcdTls::default()).unwrap();
    cfg.request_timeout = Duration::from_secs(3);
    let store = EtcdStore::connect(&cfg).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = store.health().await {
        assert!(Instant::now() < deadline, "etcd not ready: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Arc::new(store)
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"written-through": "a"},
    }))
    .unwrap()
}

async fn readyz(client: &kube::Client) -> Result<String, kube::Error> {
    client
        .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apiservers_share_one_etcd_and_report_it_on_readyz() {
    let mut member = tokio::task::spawn_blocking(|| Member::single(&PORTS)).await.unwrap();
    let port = member.spec.client_port;
    let a = start_with_store(tempfile::tempdir().unwrap(), etcd_store(port).await).await;
    let b = start_with_store(tempfile::tempdir().unwrap(), etcd_store(port).await).await;
    let on_a: Api<ConfigMap> = Api::namespaced(a.client.clone(), "default");
    let on_b: Api<ConfigMap> = Api::namespaced(b.client.clone(), "default");

    // A write through A is seen by a watch on B, at the same resourceVersion.
    let rv = on_b
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = on_b.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    let created = on_a
        .create(&PostParams::default(), &config_map("shared"))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), watch.try_next())
        .await
        .expect("no watch event on B")
        .unwrap()
        .unwrap();
    match event {
        WatchEvent::Added(cm) => {
            assert_eq!(cm.metadata.name.as_deref(), Some("shared"));
            assert_eq!(cm.metadata.resource_version, created.metadata.resource_version);
            assert_eq!(cm.data.unwrap()["written-through"], "a");
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    assert_eq!(on_b.get("shared").await.unwrap().metadata.uid, created.metadata.uid);
    assert_eq!(readyz(&a.client).await.unwrap(), "ok");

    // etcd down: /readyz fails and requests fail fast with a 5xx Status. (kube's
    // client retries some 5xx by default; this one shows what one request answers.)
    let kc = kube::config::Kubeconfig::read_from(&b.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.default_retry = false;
    let on_b: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default");
    tokio::task::block_in_place(|| member.kill());
    let not_ready = tokio::time::timeout(Duration::from_secs(30), readyz(&a.client))
        .await
        .expect("/readyz must answer while etcd is down");
    assert!(not_ready.is_err(), "/readyz answered {not_ready:?} with etcd down");
    let failed = tokio::time::timeout(Duration::from_secs(30), on_b.list(&ListParams::default()))
        .await
        .expect("a list must fail, not hang, while etcd is down");
    match failed {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 500, "{status:?}");
            assert!(status.message.contains(&format!("127.0.0.1:{port}")), "{status:?}");
        }
        other => panic!("expected a 500 Status, got {other:?}"),
    }

    // etcd back: ready again, and the data is still there.
    tokio::task::block_in_place(|| member.restart());
    let deadline = Instant::now() + Duration::from_secs(60);
    while readyz(&a.client).await.is_err() {
        assert!(Instant::now() < deadline, "/readyz still failing after etcd returned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(on_a.get("shared").await.unwrap().metadata.uid, created.metadata.uid);
}
