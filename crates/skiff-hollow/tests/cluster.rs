//! Hollow nodes against a real in-process control plane (apiserver with an embedded
//! store, scheduler, controller-manager), observed only through the API as a user
//! would: the nodes register Ready with their own podCIDRs and keep renewing their
//! Leases; a Deployment's pods are scheduled onto them (not onto a tainted one),
//! become Running and Ready with addresses from their node's podCIDR, and are removed
//! when deleted; a Job's pods complete; a pod beyond a node's capacity is rejected.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_apiserver::pki::Pki;
use skiff_hollow::cidr::Ipv4Cidr;
use skiff_hollow::{HollowConfig, Stats};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// A control plane on a free port with a temp data dir; stopped on drop.
struct ControlPlane {
    client: kube::Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl ControlPlane {
    async fn start() -> Self {
        Self::start_with(skiff_scheduler::config::SchedulerConfig::default()).await
    }

    /// A control plane whose scheduler runs the profiles of `scheduler`.
    async fn start_with(scheduler: skiff_scheduler::config::SchedulerConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let pki = Pki::load_or_create(&tls).expect("CA");
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let serving = pki.ensure_cert("server", "kube-apiserver", &[], &sans).expect("cert");
        let admin = pki
            .ensure_cert("admin", "system:admin", &["system:masters"], &[])
            .expect("admin cert");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let kubeconfig = dir.path().join("admin.kubeconfig");
        pki.write_kubeconfig(
            &kubeconfig,
            &format!("https://127.0.0.1:{port}"),
            "system:admin",
            &admin,
        )
        .expect("kubeconfig");
        let store: Arc<dyn skiff_store::Store> =
            Arc::new(skiff_store::EmbeddedStore::open(&dir.path().join("db")).expect("store"));
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let config = skiff_apiserver::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            advertise: format!("127.0.0.1:{port}"),
            serving_cert_pem: serving.cert_pem.clone(),
            serving_key_pem: serving.key_pem.clone(),
            client_ca_pem: pki.ca_pem.clone(),
            kubelet_client_cert_pem: admin.cert_pem.clone(),
            kubelet_client_key_pem: admin.key_pem.clone(),
            service_network: Default::default(),
            service_account_key_pem: pki.ensure_service_account_key().unwrap(),
            metrics: Default::default(),
        };
        tokio::spawn(skiff_apiserver::run(config, store, shutdown.clone(), ready_tx));
        ready_rx.await.expect("apiserver starts");
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        let client = kube::Client::try_from(cfg).expect("client");
        let (c, t) = (client.clone(), shutdown.clone());
        tokio::spawn(async move { skiff_controllers::run(c, t).await });
        let (c, t) = (client.clone(), shutdown.clone());
        tokio::spawn(async move { skiff_scheduler::run_with_config(c, t, scheduler).await });
        Self {
            client,
            shutdown,
            _dir: dir,
        }
    }

    /// Runs hollow nodes until the control plane stops.
    fn hollow(&self, cfg: HollowConfig) -> Arc<Stats> {
        let stats = Arc::new(Stats::default());
        let (c, s, t) = (self.client.clone(), stats.clone(), self.shutdown.child_token());
        tokio::spawn(async move { skiff_hollow::run(c, cfg, s, t).await.expect("hollow nodes run") });
        stats
    }
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition<'a>(conds: Option<&'a Vec<k8s_openapi::api::core::v1::PodCondition>>, t: &str) -> Option<&'a str> {
    conds?.iter().find(|c| c.type_ == t).map(|c| c.status.as_str())
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "initContainers": [{"name": "setup", "image": "busybox"}],
                    "containers": [{"name": "web", "image": "nginx",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                },
            },
        },
    }))
    .unwrap()
}

fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_run_a_deployment_like_real_nodes() {
    let cp = ControlPlane::start().await;
    // Three plain nodes renewing their leases every second, and one tainted node.
    let plain = cp.hollow(HollowConfig {
        nodes: 3,
        lease_duration_seconds: 4,
        capacity: skiff_hollow::Capacity {
            pods: 5,
            ..Default::default()
        },
        ..Default::default()
    });
    cp.hollow(HollowConfig {
        nodes: 1,
        first_index: 3,
        taints: skiff_hollow::config::parse_taints("dedicated=gpu:NoSchedule").unwrap(),
        ..Default::default()
    });
    let nodes: Api<Node> = Api::all(cp.client.clone());
    let all = eventually("4 Ready hollow nodes", || async {
        let list = nodes
            .list(&ListParams::default().labels("type=hollow"))
            .await
            .ok()?
            .items;
        (list.len() == 4 && list.iter().all(node_ready)).then_some(list)
    })
    .await;
    let cidrs: Vec<String> = all.iter().map(|n| n.spec.clone().unwrap().pod_cidr.unwrap()).collect();
    let mut unique = cidrs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "every node has a podCIDR of its own: {cidrs:?}");
    let n0 = nodes.get("hollow-0").await.unwrap();
    let labels = n0.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "hollow-0");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    let status = n0.status.clone().unwrap();
    assert_eq!(status.allocatable.as_ref().unwrap()["pods"].0, "5");
    assert_eq!(status.capacity.as_ref().unwrap()["cpu"].0, "4");
    assert!(status.addresses.unwrap().iter().any(|a| a.type_ == "InternalIP"));
    assert_eq!(status.node_info.unwrap().operating_system, "linux");

    // Leases are renewed: renewTime moves forward.
    let leases: Api<Lease> = Api::namespaced(cp.client.clone(), "kube-node-lease");
    let renew_time = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = eventually("lease of hollow-0", || async {
        leases.get_opt("hollow-0").await.ok().flatten().and_then(renew_time)
    })
    .await;
    let lease = leases.get("hollow-0").await.unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("hollow-0")
    );
    assert_eq!(lease.spec.as_ref().unwrap().lease_duration_seconds, Some(4));
    assert_eq!(
        lease.metadata.owner_references.unwrap()[0].uid,
        n0.metadata.uid.clone().unwrap()
    );
    eventually("a renewed lease", || async {
        let t = leases.get("hollow-0").await.ok().and_then(renew_time)?;
        (t > first).then_some(())
    })
    .await;

    // A Deployment lands on the untainted nodes, Running and Ready, IPs from the node's podCIDR.
    let deploys: Api<Deployment> = Api::namespaced(cp.client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("web", 6))
        .await
        .unwrap();
    let pods_api: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    let pods = eventually("6 Ready pods", || async {
        let pods = live(
            pods_api
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?
                .items,
        );
        let ready = pods.iter().filter(|p| {
            let s = p.status.as_ref();
            s.and_then(|s| s.phase.as_deref()) == Some("Running")
                && condition(s.and_then(|s| s.conditions.as_ref()), "Ready") == Some("True")
        });
        (pods.len() == 6 && ready.count() == 6).then_some(pods)
    })
    .await;
    let mut ips = Vec::new();
    for p in &pods {
        let node_name = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert_ne!(node_name, "hollow-3", "no pod on the tainted node");
        let node = all
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()))
            .unwrap();
        let cidr: Ipv4Cidr = node.spec.as_ref().unwrap().pod_cidr.as_ref().unwrap().parse().unwrap();
        let s = p.status.as_ref().unwrap();
        let ip = s.pod_ip.as_ref().unwrap();
        assert!(cidr.offset_of(ip.parse().unwrap()).is_some(), "{ip} is in {cidr}");
        let internal = node.status.as_ref().unwrap().addresses.as_ref().unwrap()[0]
            .address
            .clone();
        assert_eq!(s.host_ip.as_deref(), Some(internal.as_str()));
        for t in [
            "PodScheduled",
            "Initialized",
            "ContainersReady",
            "Ready",
            "PodReadyToStartContainers",
        ] {
            assert_eq!(condition(s.conditions.as_ref(), t), Some("True"), "{t}");
        }
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert!(c.ready);
        assert!(c.state.as_ref().unwrap().running.as_ref().unwrap().started_at.is_some());
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            init.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("Completed")
        );
        ips.push(ip.clone());
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "pod IPs are unique");
    eventually("the Deployment available", || async {
        let d = deploys.get("web").await.ok()?;
        (d.status?.available_replicas == Some(6)).then_some(())
    })
    .await;

    // A pod bound straight to a full node (5 pods at most) is rejected at admission.
    let filler: Pod = serde_json::from_value(json!({
        "metadata": {"name": "filler-{}"},
        "spec": {"nodeName": "hollow-0", "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let on_node0 = pods
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("hollow-0"))
        .count();
    for i in on_node0..6 {
        let mut p = filler.clone();
        p.metadata.name = Some(format!("filler-{i}"));
        pods_api.create(&PostParams::default(), &p).await.unwrap();
    }
    let rejected = eventually("a pod rejected with OutOfpods", || async {
        let list = pods_api.list(&ListParams::default()).await.ok()?.items;
        list.into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("OutOfpods"))
    })
    .await;
    assert_eq!(rejected.status.unwrap().phase.as_deref(), Some("Failed"));
    for i in on_node0..6 {
        pods_api
            .delete(&format!("filler-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }

    // Deleting the Deployment's pods (graceful) removes them; the ReplicaSet replaces them.
    let before: Vec<String> = pods.iter().map(|p| p.metadata.uid.clone().unwrap()).collect();
    pods_api
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=web"))
        .await
        .unwrap();
    eventually("the deleted pods gone and replaced", || async {
        let all = pods_api
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        let old = all.iter().any(|p| before.contains(p.metadata.uid.as_ref().unwrap()));
        let ready = all
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (!old && ready == 6).then_some(())
    })
    .await;
    // Deleting the Deployment removes every pod.
    deploys.delete("web", &DeleteParams::foreground()).await.unwrap();
    eventually("no pods left", || async {
        let list = pods_api.list(&ListParams::default()).await.ok()?.items;
        list.is_empty().then_some(())
    })
    .await;
    assert!(plain.pods_started.load(Ordering::Relaxed) >= 12);
    assert!(plain.pods_deleted.load(Ordering::Relaxed) >= 12);
    assert!(plain.lease_renewals.load(Ordering::Relaxed) > 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_pods_complete_on_hollow_nodes() {
    let cp = ControlPlane::start().await;
    cp.hollow(HollowConfig {
        nodes: 2,
        complete_after: Some(Duration::from_millis(500)),
        ..Default::default()
    });
    let jobs: Api<Job> = Api::namespaced(cp.client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "batch"},
        "spec": {"completions": 3, "parallelism": 2, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox"}]}}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    eventually("the Job complete", || async {
        let j = jobs.get("batch").await.ok()?;
        let done = j
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        done.then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=batch"))
        .await
        .unwrap();
    let succeeded: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .collect();
    assert!(succeeded.len() >= 3);
    let s = succeeded[0].status.as_ref().unwrap();
    let t = s.container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(t.exit_code, 0);
    assert_eq!(t.reason.as_deref(), Some("Completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_profiles_from_a_configuration_place_pods_their_own_way() {
    // A second profile packs pods onto the busiest node by cpu (MostAllocated),
    // without the balanced-allocation score.
    let config = skiff_scheduler::config::SchedulerConfig::parse(
        r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packing
  plugins:
    multiPoint:
      disabled:
      - name: NodeResourcesBalancedAllocation
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 1
"#,
    )
    .unwrap();
    let cp = ControlPlane::start_with(config).await;
    cp.hollow(HollowConfig {
        nodes: 2,
        ..Default::default()
    });
    let nodes: Api<Node> = Api::all(cp.client.clone());
    eventually("2 Ready hollow nodes", || async {
        let list = nodes
            .list(&ListParams::default().labels("type=hollow"))
            .await
            .ok()?
            .items;
        (list.len() == 2 && list.iter().all(node_ready)).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), "default");
    let pod = |name: &str, extra: serde_json::Value| -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "1"}}}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    // hollow-0 is half full.
    let mut seed = pod("seed", json!({"nodeName": "hollow-0"}));
    seed.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(json!({"requests": {"cpu": "2"}})).unwrap());
    pods.create(&PostParams::default(), &seed).await.unwrap();
    pods.create(
        &PostParams::default(),
        &pod("packed", json!({"schedulerName": "bin-packing"})),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("spread", json!({})))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("orphan", json!({"schedulerName": "nobody"})),
    )
    .await
    .unwrap();
    let node_of = |name: &'static str| {
        let pods = pods.clone();
        async move {
            eventually(&format!("{name} bound"), || async {
                pods.get(name).await.ok()?.spec?.node_name.filter(|n| !n.is_empty())
            })
            .await
        }
    };
    assert_eq!(node_of("packed").await, "hollow-0", "bin-packing fills the busy node");
    assert_eq!(node_of("spread").await, "hollow-1", "the default profile spreads");
    // No profile serves `nobody`: the pod is left for another scheduler.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let orphan = pods.get("orphan").await.unwrap();
    assert_eq!(orphan.spec.unwrap().node_name, None);
}
