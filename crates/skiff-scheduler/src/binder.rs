//! The scheduler's writes to the apiserver: the binding (`POST
//! pods/{name}/binding`, upstream DefaultBinder), the `PodScheduled=False`
//! condition of pods that fit nowhere, and `Scheduled` / `FailedScheduling` events
//! (repeats folded into one event with a growing count, as client-go's recorder).

use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Binding, Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_api::events::{Aggregator, EventType, Recording, new_event};

use crate::SCHEDULER_NAME;

/// Performs the scheduler's API writes.
pub struct Binder {
    client: kube::Client,
    events: Mutex<Aggregator>,
    volumes: Option<std::sync::Arc<crate::plugins::volume_binding::Volumes>>,
}

fn reference(p: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace.clone(),
        uid: p.metadata.uid.clone(),
        resource_version: p.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn names(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

impl Binder {
    /// A binder using `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            events: Mutex::new(Aggregator::default()),
            volumes: None,
        }
    }

    /// The client the writes go through.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Runs the VolumeBinding PreBind step before each binding.
    pub fn with_volumes(mut self, volumes: std::sync::Arc<crate::plugins::volume_binding::Volumes>) -> Self {
        self.volumes = Some(volumes);
        self
    }

    /// Binds `pod` to `node` and records `Scheduled`. The binding carries the pod's
    /// uid so it cannot land on a recreated pod of the same name.
    pub async fn bind(&self, pod: &Pod, node: &str) -> Result<(), kube::Error> {
        let (ns, name) = names(pod);
        if let Some(volumes) = &self.volumes
            && let Err(e) = volumes.pre_bind(pod, node).await
        {
            let message = format!("running PreBind plugin \"VolumeBinding\": {e}");
            return Err(kube::Error::Api(
                kube::core::Status::failure(&message, "InternalError")
                    .with_code(500)
                    .boxed(),
            ));
        }
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        Api::<Pod>::namespaced(self.client.clone(), &ns)
            .create_subresource::<Binding, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
            .await?;
        tracing::debug!(pod = %format!("{ns}/{name}"), %node, "bound");
        self.record(
            pod,
            EventType::Normal,
            "Scheduled",
            &format!("Successfully assigned {ns}/{name} to {node}"),
        )
        .await;
        Ok(())
    }

    /// Reports that no node fits: a `FailedScheduling` event and the pod's
    /// `PodScheduled=False` condition with reason `Unschedulable` (written only when
    /// it changes).
    pub async fn unschedulable(&self, pod: &Pod, message: &str) {
        let (ns, name) = names(pod);
        self.record(pod, EventType::Warning, "FailedScheduling", message).await;
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message)) {
            return;
        }
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": null, "lastTransitionTime": skiff_api::events::now_string(),
        }]}});
        if let Err(e) = Api::<Pod>::namespaced(self.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(error = %e, pod = %format!("{ns}/{name}"), "updating PodScheduled failed");
        }
    }

    /// Records an event about `pod`; failures are logged, never fatal.
    pub async fn record(&self, pod: &Pod, ty: EventType, reason: &str, message: &str) {
        let now = jiff::Timestamp::now();
        let event = new_event(&reference(pod), ty, reason, message, SCHEDULER_NAME, None, now);
        let recording = self.events.lock().expect("event aggregator").observe(event, now);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        match recording {
            Recording::Create(ev) => {
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::debug!(error = %e, "recording event failed");
                    let name = ev.metadata.name.clone().unwrap_or_default();
                    self.events.lock().expect("event aggregator").forget(&ns, &name);
                }
            }
            Recording::Bump {
                namespace,
                name,
                count,
                last,
            } => {
                let patch = json!({"count": count, "lastTimestamp": Time(last)});
                if let Err(e) = Api::<Event>::namespaced(self.client.clone(), &namespace)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    tracing::debug!(error = %e, "updating event failed");
                    self.events.lock().expect("event aggregator").forget(&namespace, &name);
                }
            }
        }
    }
}
