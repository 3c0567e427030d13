//! The kubelet Summary API (`GET /stats/summary`, upstream
//! `k8s.io/kubelet/pkg/apis/stats/v1alpha1`): node cpu/memory from `/proc`, and per pod
//! and container cpu/memory from CRI `ListContainerStats`.
//!
//! A background [`Sampler`] takes a sample every [`SAMPLE_INTERVAL`]. CPU usage rates
//! (`usageNanoCores`) need two cumulative samples: each sample keeps the previous
//! cumulative `usageCoreNanoSeconds` per container (and for the node) and the rate is
//! their difference over the elapsed time, as cadvisor and the CRI stats provider do.
//! Pod-level cpu/memory is the sum of the pod's running containers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cri::Cri;
use crate::pods::{LABEL_CONTAINER, LABEL_NAME, LABEL_NAMESPACE, LABEL_UID};

/// How often the sampler collects stats (upstream's housekeeping interval is 10 s).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// The Summary API response (upstream `stats/v1alpha1.Summary`).
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Node-level stats.
    pub node: NodeStats,
    /// One entry per pod with running containers.
    pub pods: Vec<PodStats>,
}

/// Node-level stats (upstream `NodeStats`).
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// When the node booted (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Whole-node CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Whole-node memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// Identity of a pod (upstream `PodReference`).
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct PodReference {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
}

/// One pod (upstream `PodStats`).
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// The pod's running containers.
    pub containers: Vec<ContainerStats>,
    /// Sum over the containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Sum over the containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// One container (upstream `ContainerStats`).
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// Container name from the pod spec.
    pub name: String,
    /// CPU usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// CPU usage (upstream `CPUStats`).
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When the sample was taken (RFC 3339).
    pub time: String,
    /// Average usage since the previous sample, in billionths of a core; absent on
    /// the first sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative CPU time, nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory usage in bytes (upstream `MemoryStats`).
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When the sample was taken (RFC 3339).
    pub time: String,
    /// Memory available before hitting the limit (node: capacity minus working set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Total memory in use, including page cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Memory in use that cannot be easily reclaimed (usage minus inactive file pages);
    /// what `kubectl top` shows and what the HPA's memory metric is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous and swap cache memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
}

/// A cumulative CPU reading: `usage` nanoseconds of CPU time at `at` (nanoseconds
/// since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// Sample time, ns since the epoch.
    pub at: i64,
    /// Cumulative CPU time, ns.
    pub usage: u64,
}

/// The average CPU usage between two cumulative samples, in nano-cores; `None` when
/// time did not advance or the counter went backwards (a restarted container).
pub fn nano_cores(prev: CpuSample, cur: CpuSample) -> Option<u64> {
    let dt = cur.at.checked_sub(prev.at).filter(|d| *d > 0)? as u128;
    let du = cur.usage.checked_sub(prev.usage)? as u128;
    Some((du * 1_000_000_000 / dt) as u64)
}

/// Cumulative non-idle CPU time of the machine in nanoseconds, from the `cpu` line of
/// `/proc/stat` (user, nice, system, irq, softirq, steal; in `clock_ticks` per second).
pub fn parse_proc_stat(text: &str, clock_ticks: u64) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0usize, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum::<u64>();
    busy.checked_mul(1_000_000_000 / clock_ticks.max(1))
}

/// Node memory from `/proc/meminfo` as cadvisor computes it for the root cgroup:
/// usage = total - free, working set = usage - inactive file pages, available =
/// total - working set. `time` is stamped by the caller.
pub fn parse_meminfo(text: &str) -> Option<MemoryStats> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        let kb: u64 = line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    let total = field("MemTotal")?;
    let usage = total.saturating_sub(field("MemFree")?);
    let working_set = usage.saturating_sub(field("Inactive(file)").unwrap_or(0));
    Some(MemoryStats {
        time: String::new(),
        available_bytes: Some(total.saturating_sub(working_set)),
        usage_bytes: Some(usage),
        working_set_bytes: Some(working_set),
        rss_bytes: field("AnonPages"),
    })
}

fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(ns as i128)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// One container's reading as the runtime reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerReading {
    /// Runtime container id (the key for the previous sample).
    pub id: String,
    /// Pod the container belongs to.
    pub pod: PodReference,
    /// Container name.
    pub name: String,
    /// Cumulative CPU, if reported.
    pub cpu: Option<CpuSample>,
    /// Working set bytes and sample time (ns), if reported.
    pub memory: Option<(i64, u64)>,
}

/// Cumulative readings from the previous sample, keyed by container id (`""` is the
/// node).
#[derive(Debug, Default)]
pub struct Previous(HashMap<String, CpuSample>);

fn cpu_stats(prev: &Previous, key: &str, cur: CpuSample) -> CpuStats {
    CpuStats {
        time: rfc3339(cur.at),
        usage_nano_cores: prev.0.get(key).and_then(|p| nano_cores(*p, cur)),
        usage_core_nano_seconds: Some(cur.usage),
    }
}

/// Builds the pods part of a summary from container readings and the previous
/// cumulative samples, then replaces `prev` with this sample's readings. Pods are
/// ordered by namespace and name, containers by name.
pub fn pod_stats(readings: &[ContainerReading], prev: &mut Previous) -> Vec<PodStats> {
    let mut pods: Vec<PodStats> = Vec::new();
    let mut next = Previous::default();
    if let Some(node) = prev.0.get("") {
        next.0.insert(String::new(), *node);
    }
    for r in readings {
        let cpu = r.cpu.map(|c| cpu_stats(prev, &r.id, c));
        if let Some(c) = r.cpu {
            next.0.insert(r.id.clone(), c);
        }
        let memory = r.memory.map(|(at, ws)| MemoryStats {
            time: rfc3339(at),
            working_set_bytes: Some(ws),
            ..Default::default()
        });
        let c = ContainerStats {
            name: r.name.clone(),
            cpu,
            memory,
        };
        match pods.iter_mut().find(|p| p.pod_ref.uid == r.pod.uid) {
            Some(p) => p.containers.push(c),
            None => pods.push(PodStats {
                pod_ref: r.pod.clone(),
                containers: vec![c],
                ..Default::default()
            }),
        }
    }
    for p in &mut pods {
        p.containers.sort_by(|a, b| a.name.cmp(&b.name));
        let cpus: Vec<&CpuStats> = p.containers.iter().filter_map(|c| c.cpu.as_ref()).collect();
        if !cpus.is_empty() {
            let rate = if cpus.iter().all(|c| c.usage_nano_cores.is_some()) {
                Some(cpus.iter().filter_map(|c| c.usage_nano_cores).sum())
            } else {
                None
            };
            p.cpu = Some(CpuStats {
                time: cpus.iter().map(|c| c.time.clone()).max().unwrap_or_default(),
                usage_nano_cores: rate,
                usage_core_nano_seconds: Some(cpus.iter().filter_map(|c| c.usage_core_nano_seconds).sum()),
            });
        }
        let mems: Vec<&MemoryStats> = p.containers.iter().filter_map(|c| c.memory.as_ref()).collect();
        if !mems.is_empty() {
            p.memory = Some(MemoryStats {
                time: mems.iter().map(|m| m.time.clone()).max().unwrap_or_default(),
                working_set_bytes: Some(mems.iter().filter_map(|m| m.working_set_bytes).sum()),
                ..Default::default()
            });
        }
    }
    pods.sort_by(|a, b| (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name)));
    *prev = next;
    pods
}

/// Node stats from `/proc/stat` and `/proc/meminfo` text; updates the node's entry
/// in `prev`.
pub fn node_stats(node_name: &str, proc_stat: &str, meminfo: &str, at: i64, prev: &mut Previous) -> NodeStats {
    let ticks = clock_ticks();
    let cpu = parse_proc_stat(proc_stat, ticks).map(|usage| {
        let cur = CpuSample { at, usage };
        let s = cpu_stats(prev, "", cur);
        prev.0.insert(String::new(), cur);
        s
    });
    let memory = parse_meminfo(meminfo).map(|mut m| {
        m.time = rfc3339(at);
        m
    });
    NodeStats {
        node_name: node_name.to_string(),
        start_time: boot_time(proc_stat).map(|s| rfc3339(s * 1_000_000_000)),
        cpu,
        memory,
    }
}

fn boot_time(proc_stat: &str) -> Option<i64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `USER_HZ`, the unit of `/proc/stat`: fixed at 100 by the Linux user-space ABI on
/// every architecture Skiff runs on.
fn clock_ticks() -> u64 {
    100
}

/// Reads container stats from the runtime: running containers only, labelled by the
/// kubelet with their pod's identity.
async fn container_readings(cri: &Cri) -> Result<Vec<ContainerReading>, crate::Error> {
    use k8s_cri::v1::{
        ContainerFilter, ContainerState, ContainerStateValue, ListContainerStatsRequest, ListContainersRequest,
    };
    let running = cri
        .runtime
        .clone()
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    let stats = cri
        .runtime
        .clone()
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await?
        .into_inner()
        .stats;
    let mut out = Vec::new();
    for s in stats {
        let Some(attrs) = s.attributes else { continue };
        let Some(c) = running.iter().find(|c| c.id == attrs.id) else {
            continue;
        };
        let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let uid = label(LABEL_UID);
        if uid.is_empty() {
            continue;
        }
        out.push(ContainerReading {
            id: attrs.id.clone(),
            pod: PodReference {
                name: label(LABEL_NAME),
                namespace: label(LABEL_NAMESPACE),
                uid,
            },
            name: label(LABEL_CONTAINER),
            cpu: s.cpu.as_ref().and_then(|cpu| {
                Some(CpuSample {
                    at: cpu.timestamp,
                    usage: cpu.usage_core_nano_seconds.as_ref()?.value,
                })
            }),
            memory: s
                .memory
                .as_ref()
                .and_then(|m| Some((m.timestamp, m.working_set_bytes.as_ref()?.value))),
        });
    }
    Ok(out)
}

/// Collects a [`Summary`] every [`SAMPLE_INTERVAL`] and hands out the latest one.
#[derive(Clone, Default)]
pub struct Sampler {
    latest: Arc<Mutex<Option<Summary>>>,
}

impl Sampler {
    /// The most recent summary; `None` before the first sample.
    pub fn latest(&self) -> Option<Summary> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Samples until `shutdown`. A failing runtime call keeps the node stats and
    /// drops the pods of that sample (logged).
    pub async fn run(self, node_name: String, cri: Cri, shutdown: CancellationToken) {
        let mut prev = Previous::default();
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let proc_stat = tokio::fs::read_to_string("/proc/stat").await.unwrap_or_default();
            let meminfo = tokio::fs::read_to_string("/proc/meminfo").await.unwrap_or_default();
            let node = node_stats(&node_name, &proc_stat, &meminfo, now_ns(), &mut prev);
            let pods = match container_readings(&cri).await {
                Ok(r) => pod_stats(&r, &mut prev),
                Err(e) => {
                    tracing::warn!(error = %e, "listing container stats");
                    Vec::new()
                }
            };
            *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(Summary { node, pods });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_usage_delta_over_time_delta() {
        let a = CpuSample {
            at: 1_000_000_000,
            usage: 5_000_000_000,
        };
        // 0.5 s of CPU in 2 s: a quarter core.
        let b = CpuSample {
            at: 3_000_000_000,
            usage: 5_500_000_000,
        };
        assert_eq!(nano_cores(a, b), Some(250_000_000));
        assert_eq!(nano_cores(a, a), None, "no time elapsed");
        assert_eq!(nano_cores(b, a), None, "time went backwards");
        let restarted = CpuSample {
            at: 4_000_000_000,
            usage: 10,
        };
        assert_eq!(nano_cores(b, restarted), None, "counter reset");
    }

    #[test]
    fn proc_stat_counts_busy_ticks() {
        let text = "cpu  100 20 30 5000 40 5 6 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nbtime 1700000000\n";
        // user+nice+system+irq+softirq+steal = 100+20+30+5+6+7 = 168 ticks at 100 Hz.
        assert_eq!(parse_proc_stat(text, 100), Some(1_680_000_000));
        assert_eq!(boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_proc_stat("intr 1 2\n", 100), None);
    }

    #[test]
    fn meminfo_gives_cadvisor_working_set() {
        let text = "MemTotal:        1000 kB\nMemFree:          200 kB\nMemAvailable:     600 kB\n\
                    Inactive(file):   300 kB\nAnonPages:        100 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.usage_bytes, Some(800 * 1024));
        assert_eq!(m.working_set_bytes, Some(500 * 1024));
        assert_eq!(m.available_bytes, Some(500 * 1024));
        assert_eq!(m.rss_bytes, Some(100 * 1024));
        assert!(parse_meminfo("MemFree: 1 kB\n").is_none());
    }

    fn reading(id: &str, pod: &str, name: &str, at: i64, usage: i64, ws: u64) -> ContainerReading {
        ContainerReading {
            id: id.into(),
            pod: PodReference {
                name: pod.into(),
                namespace: "default".into(),
                uid: format!("uid-{pod}"),
            },
            name: name.into(),
            cpu: Some(CpuSample {
                at,
                usage: usage as u64,
            }),
            memory: Some((at, ws)),
        }
    }

    #[test]
    fn pods_get_rates_from_the_second_sample_and_sum_containers() {
        let mut prev = Previous::default();
        let s1 = pod_stats(
            &[
                reading("c1", "web", "app", 0, 0, 10),
                reading("c2", "web", "side", 0, 0, 5),
            ],
            &mut prev,
        );
        assert_eq!(s1.len(), 1);
        assert_eq!(s1[0].containers[0].cpu.as_ref().unwrap().usage_nano_cores, None);
        assert_eq!(s1[0].cpu.as_ref().unwrap().usage_nano_cores, None);
        assert_eq!(s1[0].memory.as_ref().unwrap().working_set_bytes, Some(15));
        let sec = 1_000_000_000;
        let s2 = pod_stats(
            &[
                reading("c1", "web", "app", 10 * sec, 5 * sec, 20),
                reading("c2", "web", "side", 10 * sec, sec, 5),
                reading("c3", "db", "pg", 10 * sec, sec, 7),
            ],
            &mut prev,
        );
        assert_eq!(
            s2.iter().map(|p| p.pod_ref.name.as_str()).collect::<Vec<_>>(),
            ["db", "web"]
        );
        let web = &s2[1];
        assert_eq!(
            web.containers[0].cpu.as_ref().unwrap().usage_nano_cores,
            Some(500_000_000)
        );
        assert_eq!(
            web.containers[1].cpu.as_ref().unwrap().usage_nano_cores,
            Some(100_000_000)
        );
        assert_eq!(web.cpu.as_ref().unwrap().usage_nano_cores, Some(600_000_000));
        // A container seen for the first time has no rate yet, so neither has its pod.
        assert_eq!(s2[0].cpu.as_ref().unwrap().usage_nano_cores, None);
        let json = serde_json::to_value(&s2[1]).unwrap();
        assert_eq!(json["podRef"]["name"], "web");
        assert_eq!(json["containers"][0]["cpu"]["usageNanoCores"], 500_000_000);
        assert_eq!(json["containers"][0]["memory"]["workingSetBytes"], 20);
    }

    #[test]
    fn node_rate_needs_two_samples() {
        let mut prev = Previous::default();
        let mem = "MemTotal: 1000 kB\nMemFree: 500 kB\n";
        let n1 = node_stats("n1", "cpu  100 0 0 0 0 0 0 0\n", mem, 0, &mut prev);
        assert_eq!(n1.cpu.as_ref().unwrap().usage_nano_cores, None);
        let ticks = clock_ticks();
        let stat = format!("cpu  {} 0 0 0 0 0 0 0\n", 100 + ticks);
        // One second of CPU over two seconds.
        let n2 = node_stats("n1", &stat, mem, 2_000_000_000, &mut prev);
        assert_eq!(n2.cpu.unwrap().usage_nano_cores, Some(500_000_000));
        assert_eq!(n2.memory.unwrap().working_set_bytes, Some(500 * 1024));
    }
}
