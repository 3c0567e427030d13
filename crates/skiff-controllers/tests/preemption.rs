//! Pod priority and preemption through a real in-process apiserver, controller
//! manager and scheduler: on a node full of low-priority pods, a high-priority pod
//! evicts the lowest-priority one (with the `Preempted` event), is nominated to the
//! node and ends up running there; a pod of the same priority as the others, or
//! one whose class says `preemptionPolicy: Never`, evicts nothing.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::{ControlPlane, eventually, fake_kubelet};

const WAIT: Duration = Duration::from_secs(40);

async fn create_class(client: &kube::Client, name: &str, value: i32, policy: &str) {
    let pc: PriorityClass = serde_json::from_value(json!({
        "metadata": {"name": name}, "value": value, "preemptionPolicy": policy,
    }))
    .unwrap();
    Api::<PriorityClass>::all(client.clone())
        .create(&PostParams::default(), &pc)
        .await
        .unwrap();
}

async fn create_pod(client: &kube::Client, name: &str, class: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"priorityClassName": class,
                 "containers": [{"name": "c", "image": "busybox",
                                 "resources": {"requests": {"cpu": "1"}}}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

async fn get(client: &kube::Client, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

fn running_on(p: &Pod) -> Option<&str> {
    let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    running.then(|| p.spec.as_ref()?.node_name.as_deref()).flatten()
}

async fn wait_running(client: &kube::Client, name: &str) -> Pod {
    eventually(&format!("{name} running on node a"), WAIT, || async {
        get(client, name).await.filter(|p| running_on(p) == Some("a"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_pod_preempts_the_lowest_priority_pod() {
    let cp = ControlPlane::start().await;
    let client = cp.client.clone();
    cp.add_node("a", "2", "8Gi", json!({})).await;
    cp.start_components();
    fake_kubelet(client.clone(), cp.shutdown.child_token());
    create_class(&client, "lowest", 1, "PreemptLowerPriority").await;
    create_class(&client, "low", 10, "PreemptLowerPriority").await;
    create_class(&client, "high", 1000, "PreemptLowerPriority").await;
    create_class(&client, "polite", 1000, "Never").await;

    // Node a (2 cpu) is full: one pod at priority 1, one at 10.
    create_pod(&client, "lowest-0", "lowest").await;
    wait_running(&client, "lowest-0").await;
    create_pod(&client, "low-0", "low").await;
    wait_running(&client, "low-0").await;

    // Equal (or lower) priority never preempts: lowest-1 stays pending, nothing is evicted.
    create_pod(&client, "lowest-1", "lowest").await;
    // A high-priority pod that must not preempt waits too.
    create_pod(&client, "polite", "polite").await;
    let message = eventually("polite to be reported unschedulable", WAIT, || async {
        let p = get(&client, "polite").await?;
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (c.status == "False").then_some(c.message.unwrap_or_default())
    })
    .await;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.."
    );
    let lowest1 = eventually("lowest-1 to be reported unschedulable", WAIT, || async {
        let p = get(&client, "lowest-1").await?;
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (c.status == "False").then_some(c.message.unwrap_or_default())
    })
    .await;
    assert_eq!(
        lowest1,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
         1 No preemption victims found for incoming pod.."
    );
    assert!(get(&client, "lowest-0").await.is_some(), "nothing was preempted yet");

    // Every version of the victim, to see the condition it was deleted with.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Pod>::new()));
    {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let seen = seen.clone();
        let cfg = watcher::Config::default().fields("metadata.name=lowest-0");
        let mut stream = watcher(Api::<Pod>::namespaced(client.clone(), "default"), cfg).boxed();
        let token = cp.shutdown.child_token();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    ev = stream.next() => match ev {
                        Some(Ok(watcher::Event::Apply(p) | watcher::Event::Delete(p) | watcher::Event::InitApply(p))) => {
                            seen.lock().unwrap().push(p)
                        }
                        Some(_) => {}
                        None => return,
                    },
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The high-priority pod evicts exactly the lowest-priority pod and runs on a.
    create_pod(&client, "vip", "high").await;
    let vip = wait_running(&client, "vip").await;
    assert_eq!(
        vip.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()),
        Some("a"),
        "the preemptor was nominated to the node it preempted on"
    );
    assert!(
        get(&client, "lowest-0").await.is_none(),
        "the lowest-priority pod is gone"
    );
    assert_eq!(get(&client, "low-0").await.as_ref().and_then(running_on), Some("a"));
    let condition = seen.lock().unwrap().iter().find_map(|p| {
        let cs = p.status.as_ref()?.conditions.as_ref()?;
        cs.iter().find(|c| c.type_ == "DisruptionTarget").cloned()
    });
    let condition = condition.expect("the victim got a DisruptionTarget condition");
    assert_eq!(
        (
            condition.status.as_str(),
            condition.reason.as_deref(),
            condition.message.as_deref()
        ),
        (
            "True",
            Some("PreemptionByScheduler"),
            Some("default-scheduler: preempting to accommodate a higher priority pod")
        )
    );
    let vip_uid = vip.metadata.uid.clone().unwrap();
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let preempted: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Preempted"))
        .map(|e| {
            (
                e.involved_object.name.as_deref().unwrap_or_default(),
                e.message.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        preempted,
        vec![("lowest-0", format!("Preempted by pod {vip_uid} on node a").as_str())]
    );
    // The others keep waiting: the node is full again.
    for name in ["lowest-1", "polite"] {
        let p = get(&client, name).await.unwrap();
        assert!(p.spec.unwrap().node_name.is_none(), "{name} is still pending");
    }
}
