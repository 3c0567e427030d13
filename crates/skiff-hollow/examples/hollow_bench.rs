//! The `bench/hollow` driver: a fresh `skiff server --disable-agent` on its own port
//! and data dir, N hollow nodes in one `skiff hollow` process, M pods through
//! Deployments. Prints one JSON line and a human summary.
//!
//! Measured:
//! - baseline (same run, same server, before the hollow nodes): one client
//!   registering N nodes the plain way, one request at a time (create the Node with
//!   its status, create its Lease), then removing them;
//! - time from starting `skiff hollow` until all N nodes are Ready (watched), then an
//!   idle window (nodes only, no pods): the server's CPU use and resident memory;
//! - pods: time from creating the Deployments until all M pods are scheduled and
//!   until all are Running and Ready, as rates, plus the p50/p99 of each pod's
//!   first-seen-to-Ready time as this driver's watch observes it;
//! - steady state: after the pods run, a quiet window in which only heartbeats flow:
//!   the hollow process's CPU use, and whether every node stayed Ready;
//! - resident memory (current and peak) of the hollow process per node, and of the
//!   server, with its growth from the idle window to the end per pod.
//!
//! Usage: `hollow_bench --skiff PATH [--nodes 1000] [--pods 10000] [--per-deployment 1000]
//! [--idle-seconds 20] [--steady-seconds 30] [--max-in-flight 64]`.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::{client, cpu_seconds, node_ready, percentile, round, rss_kib};

struct Args {
    skiff: PathBuf,
    nodes: u32,
    pods: u32,
    per_deployment: u32,
    steady_seconds: u64,
    idle_seconds: u64,
    max_in_flight: u32,
}

fn args() -> Args {
    let mut a = Args {
        skiff: PathBuf::from("target/release/skiff"),
        nodes: 1000,
        pods: 10_000,
        per_deployment: 1000,
        steady_seconds: 30,
        idle_seconds: 20,
        max_in_flight: 64,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        let num = || {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{}: expected a number, got {v:?}", argv[i]))
        };
        match argv[i].as_str() {
            "--skiff" => a.skiff = PathBuf::from(&v),
            "--nodes" => a.nodes = num() as u32,
            "--pods" => a.pods = num() as u32,
            "--per-deployment" => a.per_deployment = num() as u32,
            "--steady-seconds" => a.steady_seconds = num(),
            "--idle-seconds" => a.idle_seconds = num(),
            "--max-in-flight" => a.max_in_flight = num() as u32,
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    a
}

fn pod_ready(p: &Pod) -> bool {
    let Some(s) = p.status.as_ref() else { return false };
    s.phase.as_deref() == Some("Running")
        && s.conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True")
}

/// Registers `n` nodes one request at a time from one client, as a plain client would.
async fn baseline(client: &kube::Client, n: u32) -> f64 {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let cfg = skiff_hollow::HollowConfig {
        nodes: n,
        name_prefix: "baseline-".into(),
        labels: skiff_hollow::config::parse_labels("bench=baseline").unwrap(),
        taints: skiff_hollow::config::parse_taints("bench=baseline:NoSchedule").unwrap(),
        ..Default::default()
    };
    let t0 = Instant::now();
    for i in 0..n {
        let now = jiff::Timestamp::now();
        let now_s = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let node = nodes
            .create(
                &PostParams::default(),
                &skiff_hollow::node::node_object(&cfg, i, &now_s),
            )
            .await
            .expect("baseline node");
        let name = node.metadata.name.clone().unwrap();
        let uid = node.metadata.uid.clone().unwrap();
        leases
            .create(
                &PostParams::default(),
                &skiff_hollow::node::lease_object(&name, &uid, 40, None, now),
            )
            .await
            .expect("baseline lease");
    }
    let secs = t0.elapsed().as_secs_f64();
    let lp = ListParams::default().labels("bench=baseline");
    nodes
        .delete_collection(&DeleteParams::default(), &lp)
        .await
        .expect("delete baseline nodes");
    // Their Leases go with them (owner references); wait until the nodes are gone.
    loop {
        let left = nodes
            .list_metadata(&lp.clone().limit(1))
            .await
            .map(|l| l.items.len())
            .unwrap_or(1);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    secs
}

fn deployment(name: &str, replicas: u32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            },
        },
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = std::env::var("HOLLOW_BENCH_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.path().to_path_buf());
    let server = support::start_server(&a.skiff, dir.path(), &log_dir, &[]).await;
    let (port, kubeconfig) = (server.port, server.kubeconfig.clone());
    let client = client(&kubeconfig).await;
    eprintln!(
        "server ready on port {port}; baseline: registering {} nodes one request at a time",
        a.nodes
    );

    let baseline_secs = baseline(&client, a.nodes).await;
    eprintln!("baseline: {baseline_secs:.1} s; starting {} hollow nodes", a.nodes);

    // Hollow nodes, watched until all Ready.
    let nodes: Api<Node> = Api::all(client.clone());
    let t_hollow = Instant::now();
    let hollow = support::start_hollow(
        &a.skiff,
        &kubeconfig,
        &[
            "--nodes".into(),
            a.nodes.to_string(),
            "--max-in-flight".into(),
            a.max_in_flight.to_string(),
        ],
        &log_dir.join("hollow.log"),
    );
    let hollow_pid = hollow.pid();
    let server_pid = server.proc.pid();
    support::wait_nodes_ready(&client, "type=hollow", a.nodes as usize, Duration::from_secs(300)).await;
    let nodes_ready_secs = t_hollow.elapsed().as_secs_f64();
    eprintln!("{} hollow nodes Ready in {nodes_ready_secs:.1} s", a.nodes);
    // Idle: nodes only, heartbeats and the controllers' passes, no pods yet.
    let idle_cpu0 = cpu_seconds(server_pid);
    tokio::time::sleep(Duration::from_secs(a.idle_seconds)).await;
    let idle_server_cpu = (cpu_seconds(server_pid) - idle_cpu0) / a.idle_seconds.max(1) as f64;
    let (hollow_rss_nodes, _) = rss_kib(hollow_pid);
    let (server_rss_nodes, _) = rss_kib(server_pid);

    // Pods through Deployments.
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "bench"}})).unwrap(),
    )
    .await
    .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let mut pod_events = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    // Let the watch start before the pods exist.
    loop {
        match pod_events.next().await {
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(_) => {}
            None => panic!("pod watch ended"),
        }
    }
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "bench");
    let cpu_before = cpu_seconds(hollow_pid);
    let server_cpu_before = cpu_seconds(server_pid);
    let t_pods = Instant::now();
    let mut left = a.pods;
    let mut i = 0;
    while left > 0 {
        let n = left.min(a.per_deployment);
        deploys
            .create(&PostParams::default(), &deployment(&format!("d{i}"), n))
            .await
            .expect("deployment");
        left -= n;
        i += 1;
    }
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    let mut scheduled: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut startup = Vec::with_capacity(a.pods as usize);
    let mut all_scheduled_secs = None;
    let mut last_progress = Instant::now();
    while running.len() < a.pods as usize {
        let ev = match tokio::time::timeout(Duration::from_secs(120), pod_events.next()).await {
            Ok(Some(Ok(ev))) => ev,
            Ok(Some(Err(e))) => {
                eprintln!("pod watch: {e}");
                continue;
            }
            _ => panic!(
                "stalled: {} pods scheduled, {} Running of {} after {:.0} s",
                scheduled.len(),
                running.len(),
                a.pods,
                t_pods.elapsed().as_secs_f64()
            ),
        };
        let p = match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
            _ => continue,
        };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let now = Instant::now();
        let seen = *first_seen.entry(uid.clone()).or_insert(now);
        if p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
            && scheduled.insert(uid.clone())
            && scheduled.len() == a.pods as usize
        {
            all_scheduled_secs = Some(t_pods.elapsed().as_secs_f64());
        }
        if pod_ready(&p) && running.insert(uid) {
            startup.push((now - seen).as_secs_f64());
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            last_progress = Instant::now();
            eprintln!(
                "  {:.0} s: {} created, {} scheduled, {} Running",
                t_pods.elapsed().as_secs_f64(),
                first_seen.len(),
                scheduled.len(),
                running.len()
            );
        }
    }
    let pods_running_secs = t_pods.elapsed().as_secs_f64();
    let all_scheduled_secs = all_scheduled_secs.unwrap_or(pods_running_secs);
    let hollow_cpu_pods = cpu_seconds(hollow_pid) - cpu_before;
    let server_cpu_pods = cpu_seconds(server_pid) - server_cpu_before;
    drop(pod_events);
    startup.sort_by(|x, y| x.total_cmp(y));
    eprintln!("{} pods Running in {pods_running_secs:.1} s", a.pods);

    // Steady state: only heartbeats.
    let cpu0 = cpu_seconds(hollow_pid);
    let server_cpu0 = cpu_seconds(server_pid);
    tokio::time::sleep(Duration::from_secs(a.steady_seconds)).await;
    let steady_cpu = (cpu_seconds(hollow_pid) - cpu0) / a.steady_seconds as f64;
    let steady_server_cpu = (cpu_seconds(server_pid) - server_cpu0) / a.steady_seconds as f64;
    let list = nodes
        .list(&ListParams::default().labels("type=hollow"))
        .await
        .expect("list nodes");
    let not_ready = list.items.iter().filter(|n| !node_ready(n)).count();
    let (hollow_rss, hollow_hwm) = rss_kib(hollow_pid);
    let (server_rss, server_hwm) = rss_kib(server_pid);
    drop(hollow);
    drop(server);

    let out = json!({
        "bench": "hollow",
        "nodes": a.nodes,
        "pods": a.pods,
        "baseline_sequential_register_seconds": round(baseline_secs),
        "baseline_sequential_nodes_per_second": round(f64::from(a.nodes) / baseline_secs),
        "hollow_nodes_ready_seconds": round(nodes_ready_secs),
        "hollow_nodes_per_second": round(f64::from(a.nodes) / nodes_ready_secs),
        "pods_all_scheduled_seconds": round(all_scheduled_secs),
        "pods_scheduled_per_second": round(f64::from(a.pods) / all_scheduled_secs),
        "pods_all_running_seconds": round(pods_running_secs),
        "pods_running_per_second": round(f64::from(a.pods) / pods_running_secs),
        "pod_startup_p50_seconds": round(percentile(&startup, 0.5)),
        "pod_startup_p99_seconds": round(percentile(&startup, 0.99)),
        "hollow_cpu_seconds_during_pods": round(hollow_cpu_pods),
        "server_cpu_seconds_during_pods": round(server_cpu_pods),
        "steady_window_seconds": a.steady_seconds,
        "steady_hollow_cpu_cores": round(steady_cpu),
        "steady_server_cpu_cores": round(steady_server_cpu),
        "idle_window_seconds": a.idle_seconds,
        "idle_server_cpu_cores_nodes_only": round(idle_server_cpu),
        "nodes_not_ready_after_steady": not_ready,
        "hollow_rss_kib_nodes_only": hollow_rss_nodes,
        "hollow_rss_kib": hollow_rss,
        "hollow_peak_rss_kib": hollow_hwm,
        "hollow_rss_bytes_per_node": hollow_rss * 1024 / u64::from(a.nodes),
        "hollow_peak_rss_bytes_per_node": hollow_hwm * 1024 / u64::from(a.nodes),
        "server_rss_kib": server_rss,
        "server_peak_rss_kib": server_hwm,
        "server_rss_kib_nodes_only": server_rss_nodes,
        "server_rss_kib_per_pod": round(server_rss.saturating_sub(server_rss_nodes) as f64 / f64::from(a.pods.max(1))),
    });
    println!("{out}");
    println!(
        "{} hollow nodes Ready in {:.1} s ({:.0} nodes/s); baseline, one client registering sequentially: {:.1} s ({:.0} nodes/s)",
        a.nodes,
        nodes_ready_secs,
        f64::from(a.nodes) / nodes_ready_secs,
        baseline_secs,
        f64::from(a.nodes) / baseline_secs
    );
    println!(
        "{} pods: all scheduled in {:.1} s ({:.0}/s), all Running+Ready in {:.1} s ({:.0}/s); startup p50 {:.2} s, p99 {:.2} s",
        a.pods,
        all_scheduled_secs,
        f64::from(a.pods) / all_scheduled_secs,
        pods_running_secs,
        f64::from(a.pods) / pods_running_secs,
        percentile(&startup, 0.5),
        percentile(&startup, 0.99)
    );
    println!(
        "hollow process: RSS {:.1} MiB ({} B/node), peak {:.1} MiB; steady heartbeats {:.3} cores; {} nodes not Ready after {} s",
        hollow_rss as f64 / 1024.0,
        hollow_rss * 1024 / u64::from(a.nodes),
        hollow_hwm as f64 / 1024.0,
        steady_cpu,
        not_ready,
        a.steady_seconds
    );
    println!(
        "server: RSS {:.1} MiB ({:.1} MiB with nodes only, {:.1} KiB per pod), peak {:.1} MiB; {:.3} cores idle with nodes only, {:.3} cores steady with pods",
        server_rss as f64 / 1024.0,
        server_rss_nodes as f64 / 1024.0,
        server_rss.saturating_sub(server_rss_nodes) as f64 / f64::from(a.pods.max(1)),
        server_hwm as f64 / 1024.0,
        idle_server_cpu,
        steady_server_cpu
    );
}
