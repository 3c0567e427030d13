//! Container-level sync of a pod worker: image pulls with backoff, container
//! creation and start, restarts per restartPolicy with CrashLoopBackOff, and probes.

use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_api::events::EventType;

use super::*;
use crate::pod_spec;
use crate::probes::{self, Outcome, ProbeState};
use crate::status::{ContainerView, RuntimeContainer, RuntimeState};

impl Worker {
    pub(super) async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
        sandbox: &cri::PodSandboxConfig,
    ) -> Result<bool, ()> {
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
    pub(super) async fn start_container(
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
        if let Err(msg) = crate::volumes::materialize(
            &self.shared.client,
            &self.shared.tokens,
            &self.shared.cfg.root_dir,
            &self.uid,
            pod,
            &host_ip,
        )
        .await
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
    pub(super) async fn sync_container(
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

    pub(super) async fn run_probes(&mut self, pod: &Pod, c: &Container, rc: &RuntimeContainer, pod_ip: &str) {
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
}
