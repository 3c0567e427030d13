//! Leader election against a real in-process apiserver: two candidates for one
//! Lease, exactly one leads; when the leader stops, the other takes over and the
//! Lease records it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use skiff_controllers::leader_election::{Config, LeaderElector};
use support::{ControlPlane, eventually};
use tokio_util::sync::CancellationToken;

const LEASE: &str = "test-election";

fn config(identity: &str) -> Config {
    Config {
        identity: identity.to_string(),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        ..Config::new("kube-system", LEASE)
    }
}

/// Work that counts itself in `leaders` while it runs.
fn spawn_candidate(
    cp: &ControlPlane,
    config: Config,
    leaders: Arc<AtomicUsize>,
    leading_as: Arc<std::sync::Mutex<Vec<String>>>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), std::convert::Infallible>> {
    let elector = LeaderElector::new(cp.client.clone(), config).expect("valid config");
    let id = elector.identity().to_string();
    tokio::spawn(elector.run(shutdown, move |leading| {
        let (leaders, leading_as, id) = (leaders.clone(), leading_as.clone(), id.clone());
        async move {
            leaders.fetch_add(1, Ordering::SeqCst);
            leading_as.lock().unwrap().push(id);
            leading.cancelled().await;
            leaders.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }))
}

async fn lease(cp: &ControlPlane) -> Option<Lease> {
    Api::<Lease>::namespaced(cp.client.clone(), "kube-system")
        .get_opt(LEASE)
        .await
        .expect("get lease")
}

fn holder(l: &Lease) -> Option<String> {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

fn transitions(l: &Lease) -> i32 {
    l.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0)
}

#[tokio::test]
async fn one_leader_and_handover_on_release() {
    let cp = ControlPlane::start().await;
    let leaders = Arc::new(AtomicUsize::new(0));
    let leading_as = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = spawn_candidate(
        &cp,
        config("node-a_1"),
        leaders.clone(),
        leading_as.clone(),
        stop_a.clone(),
    );
    let b = spawn_candidate(
        &cp,
        config("node-b_2"),
        leaders.clone(),
        leading_as.clone(),
        stop_b.clone(),
    );

    let first = eventually("a leader", Duration::from_secs(20), || async {
        let l = lease(&cp).await?;
        holder(&l).filter(|_| leaders.load(Ordering::SeqCst) == 1)
    })
    .await;
    // Several lease durations later there is still exactly one leader, the same.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(leaders.load(Ordering::SeqCst), 1, "exactly one candidate leads");
    }
    let l = lease(&cp).await.expect("lease");
    assert_eq!(holder(&l).as_deref(), Some(first.as_str()));
    assert_eq!(transitions(&l), 0);
    assert_eq!(leading_as.lock().unwrap().clone(), vec![first.clone()]);

    // Stop the leader: it releases the lease and the other one takes over.
    let (stop_leader, leader_task, other) = if first == "node-a_1" {
        (stop_a, a, "node-b_2")
    } else {
        (stop_b, b, "node-a_1")
    };
    stop_leader.cancel();
    leader_task.await.expect("join").expect("leader stops cleanly");
    let l = eventually("the other candidate to lead", Duration::from_secs(10), || async {
        let l = lease(&cp).await?;
        (holder(&l).as_deref() == Some(other)).then_some(l)
    })
    .await;
    assert_eq!(transitions(&l), 1, "one change of holder");
    let spec = l.spec.as_ref().expect("spec");
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
    eventually("the other candidate's work to run", Duration::from_secs(5), || async {
        (leaders.load(Ordering::SeqCst) == 1 && leading_as.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(leading_as.lock().unwrap().clone(), vec![first, other.to_string()]);
}

#[tokio::test]
async fn leader_loses_the_lease_and_campaigns_again() {
    let cp = ControlPlane::start().await;
    let leaders = Arc::new(AtomicUsize::new(0));
    let leading_as = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let task = spawn_candidate(
        &cp,
        config("node-a_1"),
        leaders.clone(),
        leading_as.clone(),
        stop.clone(),
    );
    eventually("the candidate to lead", Duration::from_secs(20), || async {
        (leaders.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    // Someone else writes itself into the lease with a long duration, as a
    // candidate that judged the lease expired would: the leader's work stops.
    let api = Api::<Lease>::namespaced(cp.client.clone(), "kube-system");
    let mut l = api.get(LEASE).await.expect("lease");
    let spec = l.spec.as_mut().expect("spec");
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(4);
    spec.lease_transitions = Some(1);
    api.replace(LEASE, &PostParams::default(), &l).await.expect("take over");
    eventually("leadership to be lost", Duration::from_secs(10), || async {
        (leaders.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;

    // The intruder never renews: once its lease expires the candidate leads again.
    let l = eventually("the candidate to lead again", Duration::from_secs(20), || async {
        let l = lease(&cp).await?;
        (holder(&l).as_deref() == Some("node-a_1") && leaders.load(Ordering::SeqCst) == 1).then_some(l)
    })
    .await;
    assert_eq!(transitions(&l), 2);
    assert_eq!(leading_as.lock().unwrap().len(), 2);

    stop.cancel();
    task.await.expect("join").expect("stops cleanly");
    let l = lease(&cp).await.expect("lease");
    assert_eq!(holder(&l), None, "released on shutdown");
    assert_eq!(l.spec.as_ref().and_then(|s| s.lease_duration_seconds), Some(1));
}
