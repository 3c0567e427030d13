//! Pod-level sync of a pod worker: the sandbox, the runtime's view of the
//! containers, init-then-app ordering, the reported status, and termination.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use skiff_api::events::EventType;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::pod_spec;
use crate::status::{self, ContainerView, RuntimeContainer, RuntimeState};

impl Worker {
    /// Ensures a ready sandbox; returns (id, pod IP, config).
    pub(super) async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(String, String, cri::PodSandboxConfig), Error> {
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
                    self.shared.cri.remove_sandbox(&s.id).await;
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

    pub(super) async fn containers(&self, sandbox_id: &str) -> Result<HashMap<String, Vec<RuntimeContainer>>, Error> {
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

    /// One sync of a live pod; returns the status to report.
    pub(super) async fn sync(&mut self, pod: &Pod) -> Result<Value, Error> {
        let spec = pod.spec.clone().unwrap_or_default();
        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        if let Some((_, not_before)) = self.sandbox_backoff
            && Instant::now() < not_before
        {
            return Err(Error::Cri("waiting to retry creating the pod sandbox".into()));
        }
        if !self.claims_ready && crate::claims::has_claims(pod) {
            match crate::claims::setup(&self.shared.client, &self.shared.cfg.root_dir, &self.uid, pod).await {
                Ok(()) => self.claims_ready = true,
                Err(msg) => {
                    self.shared
                        .event(
                            pod,
                            EventType::Warning,
                            "FailedMount",
                            &format!("Unable to attach or mount volumes: {msg}"),
                            None,
                        )
                        .await;
                    return Ok(self.waiting_for_volumes(pod));
                }
            }
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

    /// The status of a pod whose volumes are not ready: nothing started, every
    /// container waiting (`ContainerCreating`, or `PodInitializing` behind init
    /// containers).
    fn waiting_for_volumes(&mut self, pod: &Pod) -> Value {
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.unwrap_or_default();
        let view = |c: &k8s_openapi::api::core::v1::Container, reason: &str| ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            waiting: Some((reason.into(), String::new())),
            ..Default::default()
        };
        let app_reason = if inits.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let init_views: Vec<ContainerView> = inits.iter().map(|c| view(c, "PodInitializing")).collect();
        let app_views: Vec<ContainerView> = spec.containers.iter().map(|c| view(c, app_reason)).collect();
        self.status(pod, "", inits.is_empty(), false, &init_views, &app_views)
    }

    pub(super) fn status(
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

    pub(super) async fn report(&mut self, pod: &Pod, status: Value) {
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
    pub(super) async fn kill(&mut self, pod: Option<&Pod>, grace: i64) {
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
            self.shared.cri.remove_sandbox(&sb.id).await;
        }
        let _ = std::fs::remove_dir_all(self.shared.cfg.root_dir.join("pods").join(&self.uid));
        self.shared.tokens.forget_pod(&self.uid);
    }

    pub(super) async fn run(mut self, notify: Arc<Notify>, shutdown: CancellationToken) {
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
                    &self.shared.tokens,
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
