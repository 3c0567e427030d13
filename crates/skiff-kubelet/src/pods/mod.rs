//! Pod workers: one task per pod bound to this node drives the pod toward its spec
//! through CRI (sandbox, image pulls, init containers in order, app containers,
//! restarts with backoff, probes) and reports its status; on deletion it stops the
//! containers within the grace period and removes the pod object.
//!
//! The runtime is the source of truth: each sync lists the pod's sandbox and
//! containers by the pod UID label, so a restarted kubelet adopts running containers
//! instead of creating new ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use skiff_api::events::{Aggregator, EventType, Recording, new_event};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cri::Cri;
use crate::probes::ProbeState;
use crate::status::{RuntimeContainer, RuntimeState};
use crate::{Error, KubeletConfig};

mod containers;
mod sync;

pub(crate) const LABEL_UID: &str = "io.kubernetes.pod.uid";
pub(crate) const LABEL_NAME: &str = "io.kubernetes.pod.name";
pub(crate) const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub(crate) const LABEL_CONTAINER: &str = "io.kubernetes.container.name";
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long resets its restart backoff (upstream: 10 minutes).
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often API-backed volume files are rewritten from their sources.
const VOLUME_REFRESH: Duration = Duration::from_secs(30);

/// Shared by all workers.
pub struct Shared {
    pub(crate) client: kube::Client,
    pub(crate) cri: Cri,
    pub(crate) cfg: KubeletConfig,
    pub(crate) node_ip: IpAddr,
    pub(crate) store: Store<Pod>,
    pub(crate) events: std::sync::Mutex<Aggregator>,
    /// ServiceAccount tokens of projected volumes.
    pub(crate) tokens: crate::token::TokenManager,
}

impl Shared {
    async fn event(&self, pod: &Pod, ty: EventType, reason: &str, message: &str, field: Option<String>) {
        let r = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            field_path: field,
            ..Default::default()
        };
        let now = jiff::Timestamp::now();
        let ev: Event = new_event(&r, ty, reason, message, "kubelet", Some(&self.cfg.node_name), now);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api = Api::<Event>::namespaced(self.client.clone(), &ns);
        let recording = self.events.lock().expect("event aggregator lock").observe(ev, now);
        match recording {
            Recording::Create(ev) => {
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::debug!(error = %e, "recording event failed");
                    let name = ev.metadata.name.clone().unwrap_or_default();
                    self.events.lock().expect("event aggregator lock").forget(&ns, &name);
                }
            }
            Recording::Bump { name, count, last, .. } => {
                let patch = json!({"count": count, "lastTimestamp": last.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()});
                if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    tracing::debug!(error = %e, "updating event failed");
                }
            }
        }
    }
}

/// Per-container kubelet state that the runtime does not hold.
#[derive(Default)]
struct ContainerState {
    waiting: Option<(String, String)>,
    restart_delay: Option<Duration>,
    restart_not_before: Option<Instant>,
    pull_delay: Option<Duration>,
    pull_not_before: Option<Instant>,
    /// Probe states for the current container id.
    probed_id: String,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
}

struct Worker {
    shared: Arc<Shared>,
    uid: String,
    /// Backoff after a failed RunPodSandbox: (current delay, not before).
    sandbox_backoff: Option<(Duration, Instant)>,
    /// When configMap/secret/downwardAPI volume files were last refreshed.
    volumes_refreshed: Option<Instant>,
    /// Whether the pod's persistentVolumeClaim volumes are set up.
    claims_ready: bool,
    containers: HashMap<String, ContainerState>,
    last_status: Option<Value>,
    start_time: Option<String>,
}

fn label_filter(uid: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL_UID.to_string(), uid.to_string())])
}

fn runtime_container(c: &cri::ContainerStatus) -> RuntimeContainer {
    let state = match cri::ContainerState::try_from(c.state) {
        Ok(cri::ContainerState::ContainerRunning) => RuntimeState::Running,
        Ok(cri::ContainerState::ContainerExited) => RuntimeState::Exited,
        Ok(cri::ContainerState::ContainerCreated) => RuntimeState::Created,
        _ => RuntimeState::Unknown,
    };
    RuntimeContainer {
        id: c.id.clone(),
        attempt: c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
        state,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        reason: c.reason.clone(),
        message: c.message.clone(),
        image: c.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
        image_ref: c.image_ref.clone(),
    }
}

impl Worker {
    fn pod(&self) -> Option<Arc<Pod>> {
        self.shared
            .store
            .state()
            .into_iter()
            .find(|p| p.metadata.uid.as_deref() == Some(self.uid.as_str()))
    }

    async fn sandboxes(&self) -> Result<Vec<cri::PodSandbox>, Error> {
        let req = cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: label_filter(&self.uid),
                ..Default::default()
            }),
        };
        Ok(self
            .shared
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(req)
            .await?
            .into_inner()
            .items)
    }
}

/// Watches the pods bound to this node and runs one worker per pod; removes sandboxes
/// of pods that no longer exist.
pub async fn run(
    client: kube::Client,
    cfg: KubeletConfig,
    node_ip: IpAddr,
    cri: Cri,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let (store, writer) = reflector::store::<Pod>();
    let api: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={}", cfg.node_name);
    let stream = watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let wake = Arc::new(Notify::new());
    {
        let wake = wake.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let mut stream = stream.boxed();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    item = stream.next() => match item {
                        Some(_) => wake.notify_one(),
                        None => return,
                    }
                }
            }
        });
    }
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = store.wait_until_ready() => r.map_err(|e| Error::Io(format!("pod cache: {e}")))?,
    }
    let shared = Arc::new(Shared {
        tokens: crate::token::TokenManager::new(client.clone()),
        client,
        cri,
        cfg,
        node_ip,
        store: store.clone(),
        events: std::sync::Mutex::new(Aggregator::default()),
    });
    let mut workers: HashMap<String, (tokio::task::JoinHandle<()>, Arc<Notify>)> = HashMap::new();
    let mut last_orphan_check = Instant::now() - Duration::from_secs(60);
    loop {
        let pods = store.state();
        for p in &pods {
            let Some(uid) = p.metadata.uid.clone() else { continue };
            match workers.get(&uid) {
                Some((_, n)) => n.notify_one(),
                None => {
                    let n = Arc::new(Notify::new());
                    let w = Worker {
                        shared: shared.clone(),
                        uid: uid.clone(),
                        sandbox_backoff: None,
                        volumes_refreshed: None,
                        claims_ready: false,
                        containers: HashMap::new(),
                        last_status: None,
                        start_time: None,
                    };
                    let handle = tokio::spawn(w.run(n.clone(), shutdown.clone()));
                    workers.insert(uid, (handle, n));
                }
            }
        }
        for (uid, (_, n)) in &workers {
            if !pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid.as_str())) {
                n.notify_one();
            }
        }
        workers.retain(|_, (h, _)| !h.is_finished());
        if last_orphan_check.elapsed() > Duration::from_secs(10) {
            last_orphan_check = Instant::now();
            cleanup_orphans(&shared, &pods, &workers).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Stops and removes sandboxes whose pod is neither in the API nor being handled.
async fn cleanup_orphans(
    shared: &Arc<Shared>,
    pods: &[Arc<Pod>],
    workers: &HashMap<String, (tokio::task::JoinHandle<()>, Arc<Notify>)>,
) {
    let Ok(list) = shared
        .cri
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
    else {
        return;
    };
    for sb in list.into_inner().items {
        let Some(uid) = sb.labels.get(LABEL_UID).cloned() else {
            continue;
        };
        if workers.contains_key(&uid) || pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid.as_str())) {
            continue;
        }
        tracing::info!(%uid, sandbox = %sb.id, "removing sandbox of a pod that no longer exists");
        let w = Worker {
            shared: shared.clone(),
            uid,
            sandbox_backoff: None,
            volumes_refreshed: None,
            claims_ready: false,
            containers: HashMap::new(),
            last_status: None,
            start_time: None,
        };
        w.clone_kill().await;
    }
}

impl Worker {
    async fn clone_kill(mut self) {
        self.kill(None, 2).await;
    }
}
