//! ReplicationController controller (upstream pkg/controller/replication): the
//! ReplicaSet controller's sync ([`crate::replicaset`]) over core/v1
//! ReplicationControllers. Upstream runs the ReplicaSet controller through an
//! adapter for this kind; here the same generic loop runs over
//! [`ReplicaOwner`] for `ReplicationController`.
//!
//! The differences from a ReplicaSet are the kind's own: the selector is a plain
//! label map (`spec.selector`, defaulted from the template's labels by the
//! apiserver), events come from `replication-controller`, and owner references
//! name `v1` `ReplicationController`. Status (replicas, fullyLabeledReplicas,
//! readyReplicas, availableReplicas, observedGeneration, the ReplicaFailure
//! condition) and `replicationcontrollers/scale` behave as for ReplicaSets.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use serde_json::{Value, json};
use skiff_api::selector::LabelSelector;
use tokio_util::sync::CancellationToken;

use crate::pod_cache::PodInformer;
use crate::replicaset::{self, ReplicaOwner};

impl ReplicaOwner for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn selector(&self) -> Result<LabelSelector, String> {
        let labels = self.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        LabelSelector::from_label_selector_json(&json!({ "matchLabels": labels })).map_err(|e| e.to_string())
    }

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }

    fn template(&self) -> Option<PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.clone())
    }

    fn status_json(&self) -> Value {
        serde_json::to_value(self.status.clone().unwrap_or_default()).unwrap_or_else(|_| json!({}))
    }
}

/// Runs the ReplicationController controller until `shutdown`, with a pod
/// informer of its own.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    replicaset::run_for::<ReplicationController>(client, shutdown).await
}

/// [`run`] reading pods from a shared [`PodInformer`] (the caller runs it).
pub async fn run_with_pods(client: kube::Client, pods: Arc<PodInformer>, shutdown: CancellationToken) {
    replicaset::run_for_with_pods::<ReplicationController>(client, pods, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_come_from_the_template_owned_by_the_controller() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"replicas": 2, "selector": {"app": "web"},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap();
        let p = replicaset::pod_from_template(&rc);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str(), owner.uid.as_str()),
            ("v1", "ReplicationController", "u1")
        );
        let sel = rc.selector().unwrap();
        assert!(sel.matches(&[("app".to_string(), "web".to_string())].into()));
        assert!(!sel.matches(&[("app".to_string(), "db".to_string())].into()));
        let empty: ReplicationController = serde_json::from_value(json!({"spec": {}})).unwrap();
        assert!(empty.selector().unwrap().is_empty());
        assert_eq!(empty.replicas(), 1);
    }
}
