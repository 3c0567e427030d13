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
use k8s_openapi::api::core::v1::{Container, Event, ObjectReference, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use skiff_api::events::{Aggregator, EventType, Recording, new_event};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cri::Cri;
use crate::pod_spec;
use crate::probes::{self, Outcome, ProbeState};
use crate::status::{self, ContainerView, RuntimeContainer, RuntimeState};
use crate::{Error, KubeletConfig};

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

    /// Ensures a ready sandbox; returns (id, pod IP, config).
    async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(String, String, cri::PodSandboxConfig), Error> {
        let mut sandboxes = self.sandboxes().await?;
        sandboxes.sort_by_key(|s| s.created_at);
        let ready = sandboxes
            .iter()
            .rev()
            .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            .cloned();
        let attempt = sandboxes
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        let (id, config) = match ready {
            Some(s) => {
                let a = s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
                (s.id, pod_spec::sandbox_config(&self.shared.cfg, &self.uid, pod, a))
            }
            None => {
                // A dead sandbox takes its containers with it: clean up and start over.
                for s in &sandboxes {
                    let _ = self
                        .shared
                        .cri
                        .runtime
                        .clone()
                        .stop_pod_sandbox(cri::StopPodSandboxRequest {
                            pod_sandbox_id: s.id.clone(),
                        })
                        .await;
                    let _ = self
                        .shared
                        .cri
                        .runtime
                        .clone()
                        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                            pod_sandbox_id: s.id.clone(),
                        })
                        .await;
                }
                let config = pod_spec::sandbox_config(&self.shared.cfg, &self.uid, pod, attempt);
                std::fs::create_dir_all(&config.log_directory)
                    .map_err(|e| Error::Io(format!("{}: {e}", config.log_directory)))?;
                let id = self
                    .shared
                    .cri
                    .runtime
                    .clone()
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(config.clone()),
                        runtime_handler: String::new(),
                    })
                    .await
                    .map_err(|s| Error::Cri(format!("RunPodSandbox: {}", s.message())))?
                    .into_inner()
                    .pod_sandbox_id;
                tracing::info!(pod = %pod.metadata.name.as_deref().unwrap_or_default(), sandbox = %id, "sandbox started");
                (id, config)
            }
        };
        let st = self
            .shared
            .cri
            .runtime
            .clone()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await?
            .into_inner();
        let ip = st.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
        Ok((id, ip, config))
    }

    async fn containers(&self, sandbox_id: &str) -> Result<HashMap<String, Vec<RuntimeContainer>>, Error> {
        let req = cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sandbox_id.to_string(),
                ..Default::default()
            }),
        };
        let list = self
            .shared
            .cri
            .runtime
            .clone()
            .list_containers(req)
            .await?
            .into_inner()
            .containers;
        let mut out: HashMap<String, Vec<RuntimeContainer>> = HashMap::new();
        for c in list {
            let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let st = self
                .shared
                .cri
                .runtime
                .clone()
                .container_status(cri::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await?
                .into_inner();
            if let Some(s) = st.status {
                out.entry(name).or_default().push(runtime_container(&s));
            }
        }
        for v in out.values_mut() {
            v.sort_by_key(|c| c.attempt);
        }
        Ok(out)
    }

    async fn ensure_image(&mut self, pod: &Pod, c: &Container, sandbox: &cri::PodSandboxConfig) -> Result<bool, ()> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into());
        let field = Some(format!("spec.containers{{{}}}", c.name));
        let present = self
            .shared
            .cri
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image.is_some())
            .unwrap_or(false);
        let st = self.containers.entry(c.name.clone()).or_default();
        if policy == "Never" {
            if present {
                return Ok(true);
            }
            st.waiting = Some((
                "ErrImageNeverPull".into(),
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            ));
            return Err(());
        }
        if present && policy == "IfNotPresent" {
            return Ok(true);
        }
        if st.pull_not_before.is_some_and(|t| Instant::now() < t) {
            st.waiting = Some(("ImagePullBackOff".into(), format!("Back-off pulling image \"{image}\"")));
            return Err(());
        }
        self.shared
            .event(
                pod,
                EventType::Normal,
                "Pulling",
                &format!("Pulling image \"{image}\""),
                field.clone(),
            )
            .await;
        let started = Instant::now();
        let r = self
            .shared
            .cri
            .images
            .clone()
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: Some(sandbox.clone()),
            })
            .await;
        let st = self.containers.entry(c.name.clone()).or_default();
        match r {
            Ok(_) => {
                st.pull_delay = None;
                st.pull_not_before = None;
                let msg = format!(
                    "Successfully pulled image \"{image}\" in {:.3}s",
                    started.elapsed().as_secs_f64()
                );
                self.shared.event(pod, EventType::Normal, "Pulled", &msg, field).await;
                Ok(true)
            }
            Err(s) => {
                let delay = st
                    .pull_delay
                    .map(|d| (d * 2).min(BACKOFF_MAX))
                    .unwrap_or(BACKOFF_INITIAL);
                st.pull_delay = Some(delay);
                st.pull_not_before = Some(Instant::now() + delay);
                let msg = format!("Failed to pull image \"{image}\": {}", s.message());
                st.waiting = Some(("ErrImagePull".into(), msg.clone()));
                self.shared.event(pod, EventType::Warning, "Failed", &msg, field).await;
                Err(())
            }
        }
    }

    /// Creates and starts attempt `attempt` of container `c`.
    async fn start_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sandbox_id: &str,
        sandbox: &cri::PodSandboxConfig,
        pod_ip: &str,
    ) {
        let field = Some(format!("spec.containers{{{}}}", c.name));
        if self.ensure_image(pod, c, sandbox).await.is_err() {
            return;
        }
        let env = match pod_spec::env(&self.shared.client, self.shared.node_ip, pod, c, pod_ip).await {
            Ok(e) => e,
            Err(msg) => {
                self.containers.entry(c.name.clone()).or_default().waiting =
                    Some(("CreateContainerConfigError".into(), msg.clone()));
                self.shared
                    .event(pod, EventType::Warning, "Failed", &format!("Error: {msg}"), field)
                    .await;
                return;
            }
        };
        let host_ip = self.shared.node_ip.to_string();
        if let Err(msg) =
            crate::volumes::materialize(&self.shared.client, &self.shared.cfg.root_dir, &self.uid, pod, &host_ip).await
        {
            self.containers.entry(c.name.clone()).or_default().waiting =
                Some(("CreateContainerConfigError".into(), msg.clone()));
            self.shared
                .event(
                    pod,
                    EventType::Warning,
                    "FailedMount",
                    &format!("MountVolume.SetUp failed: {msg}"),
                    field,
                )
                .await;
            return;
        }
        let mounts = match pod_spec::mounts(&self.shared.cfg.root_dir, &self.uid, pod, c) {
            Ok(m) => m,
            Err(msg) => {
                self.containers.entry(c.name.clone()).or_default().waiting =
                    Some(("CreateContainerConfigError".into(), msg.clone()));
                self.shared
                    .event(pod, EventType::Warning, "Failed", &format!("Error: {msg}"), field)
                    .await;
                return;
            }
        };
        let config = pod_spec::container_config(pod, c, &self.uid, attempt, &env, mounts);
        let created = self
            .shared
            .cri
            .runtime
            .clone()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(s) => {
                let msg = s.message().to_string();
                self.containers.entry(c.name.clone()).or_default().waiting =
                    Some(("CreateContainerError".into(), msg.clone()));
                self.shared
                    .event(pod, EventType::Warning, "Failed", &format!("Error: {msg}"), field)
                    .await;
                return;
            }
        };
        self.shared
            .event(
                pod,
                EventType::Normal,
                "Created",
                &format!("Created container {}", c.name),
                field.clone(),
            )
            .await;
        match self
            .shared
            .cri
            .runtime
            .clone()
            .start_container(cri::StartContainerRequest { container_id: id })
            .await
        {
            Ok(_) => {
                self.containers.entry(c.name.clone()).or_default().waiting = None;
                self.shared
                    .event(
                        pod,
                        EventType::Normal,
                        "Started",
                        &format!("Started container {}", c.name),
                        field,
                    )
                    .await;
            }
            Err(s) => {
                let msg = s.message().to_string();
                self.containers.entry(c.name.clone()).or_default().waiting =
                    Some(("RunContainerError".into(), msg.clone()));
                self.shared
                    .event(pod, EventType::Warning, "Failed", &format!("Error: {msg}"), field)
                    .await;
            }
        }
    }

    /// Decides about one container given its runtime history; returns its view.
    #[allow(clippy::too_many_arguments)]
    async fn sync_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        history: &[RuntimeContainer],
        restart_policy: &str,
        sandbox_id: &str,
        sandbox: &cri::PodSandboxConfig,
        pod_ip: &str,
    ) -> ContainerView {
        let current = history.last().cloned();
        let previous = history.len().checked_sub(2).and_then(|i| history.get(i)).cloned();
        let now = Instant::now();
        match &current {
            None => {
                self.containers.entry(c.name.clone()).or_default().waiting =
                    Some(("ContainerCreating".into(), String::new()));
                self.start_container(pod, c, 0, sandbox_id, sandbox, pod_ip).await;
            }
            Some(rc) if rc.state == RuntimeState::Created => {
                let _ = self
                    .shared
                    .cri
                    .runtime
                    .clone()
                    .start_container(cri::StartContainerRequest {
                        container_id: rc.id.clone(),
                    })
                    .await;
            }
            Some(rc) if rc.state == RuntimeState::Exited => {
                let restart = match restart_policy {
                    "Always" => true,
                    "OnFailure" => rc.exit_code != 0,
                    _ => false,
                };
                let st = self.containers.entry(c.name.clone()).or_default();
                st.readiness = None;
                if restart {
                    let ran = Duration::from_nanos((rc.finished_at - rc.started_at).max(0) as u64);
                    if ran >= BACKOFF_RESET {
                        st.restart_delay = None;
                        st.restart_not_before = None;
                    }
                    match st.restart_not_before {
                        None => {
                            // First exit seen: restart now, back off from the next one.
                            let delay = st
                                .restart_delay
                                .map(|d| (d * 2).min(BACKOFF_MAX))
                                .unwrap_or(BACKOFF_INITIAL);
                            st.restart_delay = Some(delay);
                            st.restart_not_before = Some(now + if rc.attempt == 0 { Duration::ZERO } else { delay });
                        }
                        Some(t) if now < t => {
                            let msg = format!(
                                "back-off {}s restarting failed container={} pod={}",
                                st.restart_delay.unwrap_or(BACKOFF_INITIAL).as_secs(),
                                c.name,
                                pod.metadata.name.as_deref().unwrap_or_default()
                            );
                            let first = st.waiting.as_ref().is_none_or(|(r, _)| r != "CrashLoopBackOff");
                            st.waiting = Some(("CrashLoopBackOff".into(), msg));
                            if first {
                                self.shared
                                    .event(
                                        pod,
                                        EventType::Warning,
                                        "BackOff",
                                        "Back-off restarting failed container",
                                        Some(format!("spec.containers{{{}}}", c.name)),
                                    )
                                    .await;
                            }
                        }
                        Some(_) => {
                            let st = self.containers.entry(c.name.clone()).or_default();
                            st.restart_not_before = None;
                            self.start_container(pod, c, rc.attempt + 1, sandbox_id, sandbox, pod_ip)
                                .await;
                        }
                    }
                    let st = self.containers.entry(c.name.clone()).or_default();
                    if st.waiting.is_none() && st.restart_not_before.is_some_and(|t| now < t) {
                        st.waiting = Some(("CrashLoopBackOff".into(), String::new()));
                    }
                } else {
                    st.waiting = None;
                }
            }
            Some(rc) if rc.state == RuntimeState::Running => {
                let st = self.containers.entry(c.name.clone()).or_default();
                st.waiting = None;
                st.restart_not_before = None;
                self.run_probes(pod, c, rc, pod_ip).await;
            }
            Some(_) => {}
        }
        // Re-read the runtime's view of this container after actions.
        let st = self.containers.entry(c.name.clone()).or_default();
        let running = current.as_ref().is_some_and(|rc| rc.state == RuntimeState::Running);
        let ready = running
            && st.readiness.as_ref().is_none_or(|p| p.ok)
            && (c.readiness_probe.is_none() || st.readiness.is_some());
        ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            current,
            previous,
            waiting: st.waiting.clone(),
            ready,
        }
    }

    async fn run_probes(&mut self, pod: &Pod, c: &Container, rc: &RuntimeContainer, pod_ip: &str) {
        let now = Instant::now();
        let started = Instant::now()
            - Duration::from_nanos((jiff::Timestamp::now().as_nanosecond() as i64 - rc.started_at).max(0) as u64);
        let st = self.containers.entry(c.name.clone()).or_default();
        if st.probed_id != rc.id {
            st.probed_id = rc.id.clone();
            st.readiness = c.readiness_probe.as_ref().map(|p| ProbeState::new(p, started, false));
            st.liveness = c.liveness_probe.as_ref().map(|p| ProbeState::new(p, started, true));
        }
        let field = Some(format!("spec.containers{{{}}}", c.name));
        if let (Some(p), true) = (&c.readiness_probe, st.readiness.as_ref().is_some_and(|s| s.due(now))) {
            let outcome = probes::run(p, c, pod_ip, &rc.id, &self.shared.cri).await;
            let st = self.containers.entry(c.name.clone()).or_default();
            if let Some(s) = st.readiness.as_mut() {
                s.record(p, &outcome, Instant::now());
            }
            if let Outcome::Failure(msg) = &outcome {
                self.shared
                    .event(
                        pod,
                        EventType::Warning,
                        "Unhealthy",
                        &format!("Readiness probe failed: {msg}"),
                        field.clone(),
                    )
                    .await;
            }
        }
        let st = self.containers.entry(c.name.clone()).or_default();
        if let (Some(p), true) = (&c.liveness_probe, st.liveness.as_ref().is_some_and(|s| s.due(now))) {
            let outcome = probes::run(p, c, pod_ip, &rc.id, &self.shared.cri).await;
            let st = self.containers.entry(c.name.clone()).or_default();
            let flipped = st
                .liveness
                .as_mut()
                .is_some_and(|s| s.record(p, &outcome, Instant::now()));
            if let Outcome::Failure(msg) = &outcome {
                self.shared
                    .event(
                        pod,
                        EventType::Warning,
                        "Unhealthy",
                        &format!("Liveness probe failed: {msg}"),
                        field.clone(),
                    )
                    .await;
            }
            if flipped && st.liveness.as_ref().is_some_and(|s| !s.ok) {
                self.shared
                    .event(
                        pod,
                        EventType::Normal,
                        "Killing",
                        &format!("Container {} failed liveness probe, will be restarted", c.name),
                        field,
                    )
                    .await;
                let grace = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30);
                let _ = self
                    .shared
                    .cri
                    .runtime
                    .clone()
                    .stop_container(cri::StopContainerRequest {
                        container_id: rc.id.clone(),
                        timeout: grace,
                    })
                    .await;
            }
        }
    }

    /// One sync of a live pod; returns the status to report.
    async fn sync(&mut self, pod: &Pod) -> Result<Value, Error> {
        let spec = pod.spec.clone().unwrap_or_default();
        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        if let Some((_, not_before)) = self.sandbox_backoff
            && Instant::now() < not_before
        {
            return Err(Error::Cri("waiting to retry creating the pod sandbox".into()));
        }
        let (sandbox_id, pod_ip, sandbox) = match self.ensure_sandbox(pod).await {
            Ok(x) => {
                self.sandbox_backoff = None;
                x
            }
            Err(e) => {
                let delay = self
                    .sandbox_backoff
                    .map(|(d, _)| (d * 2).min(BACKOFF_MAX))
                    .unwrap_or(Duration::from_secs(1));
                self.sandbox_backoff = Some((delay, Instant::now() + delay));
                self.shared
                    .event(
                        pod,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {e}"),
                        None,
                    )
                    .await;
                return Err(e);
            }
        };
        let history = self.containers(&sandbox_id).await?;
        // Init containers, in order, each to successful completion.
        let mut init_views = Vec::new();
        let mut init_done = true;
        let mut init_failed = false;
        for c in spec.init_containers.as_deref().unwrap_or_default() {
            let h = history.get(&c.name).cloned().unwrap_or_default();
            if !init_done {
                init_views.push(ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    waiting: Some(("PodInitializing".into(), String::new())),
                    ..Default::default()
                });
                continue;
            }
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let policy = if sidecar {
                "Always"
            } else if restart_policy == "Always" {
                "OnFailure"
            } else {
                restart_policy.as_str()
            };
            let v = self
                .sync_container(pod, c, &h, policy, &sandbox_id, &sandbox, &pod_ip)
                .await;
            let done = match &v.current {
                Some(rc) if sidecar => rc.state == RuntimeState::Running,
                Some(rc) => rc.state == RuntimeState::Exited && rc.exit_code == 0,
                None => false,
            };
            if !done {
                init_done = false;
                if policy == "Never"
                    && v.current
                        .as_ref()
                        .is_some_and(|rc| rc.state == RuntimeState::Exited && rc.exit_code != 0)
                {
                    init_failed = true;
                }
            }
            init_views.push(v);
        }
        let mut app_views = Vec::new();
        for c in &spec.containers {
            if !init_done {
                app_views.push(ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    waiting: Some(("PodInitializing".into(), String::new())),
                    ..Default::default()
                });
                continue;
            }
            let h = history.get(&c.name).cloned().unwrap_or_default();
            app_views.push(
                self.sync_container(pod, c, &h, &restart_policy, &sandbox_id, &sandbox, &pod_ip)
                    .await,
            );
        }
        Ok(self.status(pod, &pod_ip, init_done, init_failed, &init_views, &app_views))
    }

    fn status(
        &mut self,
        pod: &Pod,
        pod_ip: &str,
        init_done: bool,
        init_failed: bool,
        init: &[ContainerView],
        app: &[ContainerView],
    ) -> Value {
        let restart_policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let prev = serde_json::to_value(pod.status.clone().unwrap_or_default()).unwrap_or(json!({}));
        let now = skiff_api::events::now_string();
        let phase = if init_failed {
            "Failed"
        } else {
            status::phase(&restart_policy, init_done, app)
        };
        let all_ready = app.iter().all(|v| v.ready);
        let start_time = self
            .start_time
            .get_or_insert_with(|| {
                prev.get("startTime")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| now.clone())
            })
            .clone();
        let terminal = phase == "Succeeded" || phase == "Failed";
        let host_ip = self.shared.node_ip.to_string();
        let mut s = json!({
            "phase": phase,
            "conditions": [
                status::condition(Some(&prev), "PodReadyToStartContainers", !pod_ip.is_empty() || pod.spec.as_ref().and_then(|s| s.host_network) == Some(true), None, &now),
                status::condition(Some(&prev), "Initialized", init_done, Some("ContainersNotInitialized"), &now),
                status::condition(Some(&prev), "Ready", all_ready && !terminal, Some(if terminal { "PodCompleted" } else { "ContainersNotReady" }), &now),
                status::condition(Some(&prev), "ContainersReady", all_ready && !terminal, Some(if terminal { "PodCompleted" } else { "ContainersNotReady" }), &now),
                status::condition(Some(&prev), "PodScheduled", true, None, &now),
            ],
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "startTime": start_time,
            "containerStatuses": app.iter().map(status::container_status).collect::<Vec<_>>(),
            "qosClass": prev.get("qosClass").cloned().unwrap_or(json!("BestEffort")),
        });
        if !pod_ip.is_empty() {
            s["podIP"] = json!(pod_ip);
            s["podIPs"] = json!([{"ip": pod_ip}]);
        }
        if !init.is_empty() {
            s["initContainerStatuses"] = json!(init.iter().map(status::container_status).collect::<Vec<_>>());
        }
        s
    }

    async fn report(&mut self, pod: &Pod, status: Value) {
        let mut cmp = status.clone();
        // Heartbeat-free comparison: only write when something changed.
        if let Some(m) = cmp.as_object_mut() {
            m.remove("startTime");
        }
        if self.last_status.as_ref() == Some(&cmp) {
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &ns);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await
        {
            Ok(_) => self.last_status = Some(cmp),
            Err(e) => tracing::debug!(pod = %name, error = %e, "status update failed"),
        }
    }

    /// Stops every container and the sandbox of this pod.
    async fn kill(&mut self, pod: Option<&Pod>, grace: i64) {
        let Ok(sandboxes) = self.sandboxes().await else { return };
        for sb in &sandboxes {
            let req = cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sb.id.clone(),
                    ..Default::default()
                }),
            };
            let containers = self
                .shared
                .cri
                .runtime
                .clone()
                .list_containers(req)
                .await
                .map(|r| r.into_inner().containers)
                .unwrap_or_default();
            let mut stops = Vec::new();
            for c in containers
                .iter()
                .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            {
                let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                if let Some(p) = pod {
                    self.shared
                        .event(
                            p,
                            EventType::Normal,
                            "Killing",
                            &format!("Stopping container {name}"),
                            Some(format!("spec.containers{{{name}}}")),
                        )
                        .await;
                }
                let mut rt = self.shared.cri.runtime.clone();
                let id = c.id.clone();
                stops.push(async move {
                    rt.stop_container(cri::StopContainerRequest {
                        container_id: id,
                        timeout: grace,
                    })
                    .await
                });
            }
            futures::future::join_all(stops).await;
            let _ = self
                .shared
                .cri
                .runtime
                .clone()
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await;
            let _ = self
                .shared
                .cri
                .runtime
                .clone()
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await;
        }
        let _ = std::fs::remove_dir_all(self.shared.cfg.root_dir.join("pods").join(&self.uid));
    }

    async fn run(mut self, notify: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            let Some(pod) = self.pod() else {
                // Gone from the API (force-deleted): tear down quickly.
                self.kill(None, 2).await;
                return;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                    .unwrap_or(30);
                self.kill(Some(&pod), grace).await;
                let name = pod.metadata.name.clone().unwrap_or_default();
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(self.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match Api::<Pod>::namespaced(self.shared.client.clone(), &ns)
                    .delete(&name, &dp)
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => {
                        tracing::warn!(pod = %name, error = %e, "deleting pod failed; retrying");
                        tokio::time::sleep(SYNC_INTERVAL).await;
                        continue;
                    }
                }
                tracing::info!(pod = %format!("{ns}/{name}"), "pod terminated and removed");
                return;
            }
            let terminal = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if !terminal && self.volumes_refreshed.is_none_or(|t| t.elapsed() >= VOLUME_REFRESH) {
                self.volumes_refreshed = Some(Instant::now());
                let host_ip = self.shared.node_ip.to_string();
                if let Err(e) = crate::volumes::materialize(
                    &self.shared.client,
                    &self.shared.cfg.root_dir,
                    &self.uid,
                    &pod,
                    &host_ip,
                )
                .await
                {
                    tracing::debug!(error = %e, "refreshing volumes failed");
                }
            }
            if !terminal {
                match self.sync(&pod).await {
                    Ok(status) => self.report(&pod, status).await,
                    Err(e) => {
                        tracing::warn!(pod = %pod.metadata.name.as_deref().unwrap_or_default(), error = %e, "pod sync failed")
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = notify.notified() => {}
                _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            }
        }
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
