//! VolumeBinding (upstream pkg/scheduler/framework/plugins/volumebinding): places
//! pods that use PersistentVolumeClaims where their volumes can be.
//!
//! Filter, per node ([`check`]):
//! - a claim that does not exist or is being deleted fits nowhere
//!   (`persistentvolumeclaim "<name>" not found` / `... is being deleted`);
//! - an unbound claim of a class that binds immediately (or of no class) fits
//!   nowhere: `pod has unbound immediate PersistentVolumeClaims` (upstream
//!   reports this from PreFilter; here it is each node's reason, so the message
//!   reads `0/1 nodes are available: 1 pod has unbound immediate ...`);
//! - a bound claim fits only nodes its volume's node affinity admits
//!   (`node(s) had volume node affinity conflict`);
//! - an unbound `WaitForFirstConsumer` claim fits a node with an Available
//!   volume that satisfies it there, or, if its class has a provisioner, any node
//!   (or only the node already in its `volume.kubernetes.io/selected-node`);
//!   otherwise `node(s) didn't find available persistent volumes to bind`.
//!
//! PreBind ([`Volumes::pre_bind`], run by the binder before the pod's binding):
//! for each unbound `WaitForFirstConsumer` claim, either pre-binds the matching
//! static volume to it (`spec.claimRef`) or writes the chosen node into the
//! claim's `volume.kubernetes.io/selected-node` so the provisioner creates a
//! volume there; then waits (up to upstream's 600 s bind timeout) until the PV
//! controller has bound every claim.
//!
//! Claims, volumes and classes come from watches ([`Volumes::start`]); their
//! changes move unschedulable pods back to the active queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::reflect::reflect;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::framework::{Code, FilterPlugin, NodeInfo, PodInfo, Status};
use crate::plugins::node_affinity::term_matches;

/// Registry name.
pub const NAME: &str = "VolumeBinding";
/// A bound volume's node affinity excludes the node.
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// No volume for an unbound delayed claim on the node, and none can be provisioned.
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// An unbound claim that binds immediately.
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// A claim names a volume that does not exist.
pub const ERR_PV_NOT_EXIST: &str = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// The annotation that tells the provisioner where to create the volume.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// How long PreBind waits for the claims to be bound (upstream `bindTimeoutSeconds`).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// Read access to claims, volumes and classes (the watch caches, or a fixture).
pub trait VolumeLister: Send + Sync {
    /// A claim by namespace and name.
    fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    /// A volume by name.
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    /// Every volume.
    fn volumes(&self) -> Vec<Arc<PersistentVolume>>;
    /// A StorageClass by name.
    fn class(&self, name: &str) -> Option<Arc<StorageClass>>;
}

/// Names of the claims a pod uses: its persistentVolumeClaim volumes and the
/// claims of its generic ephemeral volumes (`<pod>-<volume>`).
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(c.claim_name.clone()),
            (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
            _ => None,
        })
        .collect()
}

fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    pvc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
        .map(String::as_str)
        .or_else(|| pvc.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()))
        .unwrap_or_default()
}

fn volume_class(pv: &PersistentVolume) -> &str {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
        .map(String::as_str)
        .or_else(|| pv.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()))
        .unwrap_or_default()
}

fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i128 {
    q.and_then(|q| skiff_api::quantity::parse_value(&q.0).ok()).unwrap_or(0)
}

fn volume_name(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.spec.as_ref()?.volume_name.as_deref().filter(|v| !v.is_empty())
}

fn selected_node(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.metadata
        .annotations
        .as_ref()?
        .get(ANN_SELECTED_NODE)
        .map(String::as_str)
}

/// Whether the volume's required node affinity admits the node (no affinity
/// admits every node; terms are ORed).
pub fn volume_fits_node(pv: &PersistentVolume, node: &Node) -> bool {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    required
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, &labels, name))
}

fn claim_ref_matches(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| {
        r.name == pvc.metadata.name
            && r.namespace == pvc.metadata.namespace
            && r.uid
                .as_deref()
                .is_none_or(|u| u.is_empty() || Some(u) == pvc.metadata.uid.as_deref())
    })
}

/// A static volume for an unbound delayed claim on `node` (upstream
/// `findMatchingVolume` with a node): one pre-bound to the claim, else the
/// smallest Available unclaimed one of its class with enough capacity, the access
/// modes, the volume mode and the labels it asks for, that the node can reach and
/// that is not in `taken` (chosen for another claim of the same pod).
pub fn find_volume_on_node(
    pvc: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
    node: &Node,
    taken: &BTreeSet<String>,
) -> Option<Arc<PersistentVolume>> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let want = bytes(
        spec.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    );
    let modes = spec.access_modes.clone().unwrap_or_default();
    let mode = spec.volume_mode.as_deref().unwrap_or("Filesystem");
    let selector = spec
        .selector
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|s| skiff_api::selector::LabelSelector::from_label_selector_json(&s).ok());
    let class = claim_class(pvc);
    let mut best: Option<(Arc<PersistentVolume>, i128)> = None;
    for pv in volumes {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let vs = pv.spec.clone().unwrap_or_default();
        let size = bytes(vs.capacity.as_ref().and_then(|c| c.get("storage")));
        if size < want
            || vs.volume_mode.as_deref().unwrap_or("Filesystem") != mode
            || pv.metadata.deletion_timestamp.is_some()
            || taken.contains(&name)
            || !volume_fits_node(pv, node)
        {
            continue;
        }
        if claim_ref_matches(pv, pvc) {
            return Some(pv.clone());
        }
        let offered = vs.access_modes.clone().unwrap_or_default();
        let available = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available");
        if vs.claim_ref.is_some()
            || !available
            || volume_class(pv) != class
            || !modes.iter().all(|m| offered.contains(m))
            || selector
                .as_ref()
                .is_some_and(|s| !s.matches(&pv.metadata.labels.clone().unwrap_or_default()))
        {
            continue;
        }
        if best.as_ref().is_none_or(|(_, s)| size < *s) {
            best = Some((pv.clone(), size));
        }
    }
    best.map(|(pv, _)| pv)
}

/// What one claim needs on a node.
#[derive(Debug, Clone, PartialEq)]
enum Need {
    /// Bound already; nothing to do.
    Bound,
    /// Pre-bind this static volume.
    Volume(Arc<PersistentVolume>),
    /// Have the class's provisioner create one on the node.
    Provision(Arc<PersistentVolumeClaim>),
}

/// Decides, for the pod's claims on `node`, what each needs, or the status that
/// rules the node out (the Filter's logic, also PreBind's plan).
fn plan(pod: &Pod, node: &Node, lister: &dyn VolumeLister) -> Result<Vec<(Arc<PersistentVolumeClaim>, Need)>, Status> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    let mut taken = BTreeSet::new();
    let mut all_volumes: Option<Vec<Arc<PersistentVolume>>> = None;
    for name in claim_names(pod) {
        let unresolvable = |m: String| Status::new(Code::UnschedulableAndUnresolvable, m);
        let Some(pvc) = lister.claim(ns, &name) else {
            return Err(unresolvable(format!("persistentvolumeclaim \"{name}\" not found")));
        };
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(unresolvable(format!(
                "persistentvolumeclaim \"{name}\" is being deleted"
            )));
        }
        if let Some(vname) = volume_name(&pvc) {
            let Some(pv) = lister.volume(vname) else {
                return Err(unresolvable(ERR_PV_NOT_EXIST.into()));
            };
            if !volume_fits_node(&pv, node) {
                return Err(unresolvable(ERR_NODE_CONFLICT.into()));
            }
            out.push((pvc, Need::Bound));
            continue;
        }
        let class = claim_class(&pvc);
        let sc = Some(class).filter(|c| !c.is_empty()).and_then(|c| lister.class(c));
        let Some(sc) = sc.filter(|sc| sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")) else {
            return Err(unresolvable(ERR_UNBOUND_IMMEDIATE.into()));
        };
        if let Some(selected) = selected_node(&pvc) {
            // Being provisioned already; only that node will have the volume.
            if selected != node_name {
                return Err(Status::new(Code::UnschedulableAndUnresolvable, ERR_BIND_CONFLICT));
            }
            out.push((pvc.clone(), Need::Provision(pvc)));
            continue;
        }
        let volumes = all_volumes.get_or_insert_with(|| lister.volumes());
        if let Some(pv) = find_volume_on_node(&pvc, volumes, node, &taken) {
            taken.insert(pv.metadata.name.clone().unwrap_or_default());
            out.push((pvc, Need::Volume(pv)));
        } else if sc.provisioner != NO_PROVISIONER {
            out.push((pvc.clone(), Need::Provision(pvc)));
        } else {
            return Err(Status::new(Code::UnschedulableAndUnresolvable, ERR_BIND_CONFLICT));
        }
    }
    Ok(out)
}

/// The Filter's verdict for the pod on `node`.
pub fn check(pod: &Pod, node: &Node, lister: &dyn VolumeLister) -> Status {
    match plan(pod, node, lister) {
        Ok(_) => Status::success(),
        Err(s) => s,
    }
}

/// The plugin: the Filter over [`Volumes`].
pub struct VolumeBinding {
    volumes: Arc<Volumes>,
}

impl VolumeBinding {
    /// A plugin reading `volumes`.
    pub fn new(volumes: Arc<Volumes>) -> Self {
        Self { volumes }
    }
}

impl FilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        if claim_names(&pod.pod).is_empty() {
            return Status::success();
        }
        let Some(n) = node.node.as_ref() else {
            return Status::new(Code::UnschedulableAndUnresolvable, "node not found");
        };
        check(&pod.pod, n, self.volumes.as_ref())
    }
}

/// Watch caches of claims, volumes and classes, and PreBind.
pub struct Volumes {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    changed: Arc<Notify>,
    client: kube::Client,
}

impl VolumeLister for Volumes {
    fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectRef::new(name).within(ns))
    }

    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.get(&ObjectRef::new(name))
    }

    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes.state()
    }

    fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.classes.get(&ObjectRef::new(name))
    }
}

impl Volumes {
    /// Starts watching claims, volumes and classes until `shutdown`.
    pub fn start(client: kube::Client, shutdown: CancellationToken) -> Arc<Self> {
        let changed = Arc::new(Notify::new());
        Arc::new(Self {
            claims: reflect(Api::all(client.clone()), Some(changed.clone()), shutdown.clone()),
            volumes: reflect(Api::all(client.clone()), Some(changed.clone()), shutdown.clone()),
            classes: reflect(Api::all(client.clone()), Some(changed.clone()), shutdown),
            changed,
            client,
        })
    }

    /// Resolves when a claim, volume or class changed since the last call (the
    /// cluster events after which unschedulable pods are retried).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// PreBind: pre-binds the chosen static volumes, asks for provisioning on
    /// `node`, and waits until every claim of the pod is bound. The error is the
    /// reason the binding cycle failed (the pod is retried).
    pub async fn pre_bind(&self, pod: &Pod, node: &str) -> Result<(), String> {
        if claim_names(pod).is_empty() {
            return Ok(());
        }
        let node_obj: Node = Api::<Node>::all(self.client.clone())
            .get(node)
            .await
            .map_err(|e| format!("getting node {node}: {e}"))?;
        let needs = plan(pod, &node_obj, self).map_err(|s| s.reasons.join(", "))?;
        for (pvc, need) in &needs {
            let ns = pvc.metadata.namespace.clone().unwrap_or_default();
            let name = pvc.metadata.name.clone().unwrap_or_default();
            match need {
                Need::Bound => {}
                Need::Volume(pv) => {
                    let mut next = (**pv).clone();
                    let chosen = !claim_ref_matches(pv, pvc);
                    next.spec.get_or_insert_with(Default::default).claim_ref = Some(ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("PersistentVolumeClaim".into()),
                        namespace: Some(ns.clone()),
                        name: Some(name.clone()),
                        uid: pvc.metadata.uid.clone(),
                        resource_version: pvc.metadata.resource_version.clone(),
                        ..Default::default()
                    });
                    if chosen {
                        next.metadata
                            .annotations
                            .get_or_insert_with(BTreeMap::new)
                            .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
                    }
                    let pv_name = pv.metadata.name.clone().unwrap_or_default();
                    Api::<PersistentVolume>::all(self.client.clone())
                        .replace(&pv_name, &PostParams::default(), &next)
                        .await
                        .map_err(|e| format!("binding volume {pv_name} to claim {ns}/{name}: {e}"))?;
                }
                Need::Provision(_) if selected_node(pvc) == Some(node) => {}
                Need::Provision(_) => {
                    let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
                    Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map_err(|e| format!("selecting node {node} for claim {ns}/{name}: {e}"))?;
                }
            }
        }
        let pending = || {
            needs
                .iter()
                .filter(|(pvc, _)| {
                    let ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
                    let name = pvc.metadata.name.as_deref().unwrap_or_default();
                    !self.claim(ns, name).is_some_and(|c| {
                        volume_name(&c).is_some() && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                    })
                })
                .count()
        };
        let deadline = tokio::time::Instant::now() + BIND_TIMEOUT;
        while pending() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err("binding volumes: timed out waiting for the condition".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fixture {
        claims: Vec<Arc<PersistentVolumeClaim>>,
        volumes: Vec<Arc<PersistentVolume>>,
        classes: Vec<Arc<StorageClass>>,
    }

    impl VolumeLister for Fixture {
        fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
            self.claims
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name) && c.metadata.namespace.as_deref() == Some(ns))
                .cloned()
        }
        fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
            self.volumes
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(name))
                .cloned()
        }
        fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
            self.volumes.clone()
        }
        fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
            self.classes
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(name))
                .cloned()
        }
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})).unwrap()
    }

    fn pod() -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
        )
        .unwrap()
    }

    fn claim(class: &str, extra: serde_json::Value) -> Arc<PersistentVolumeClaim> {
        let mut v = json!({"metadata": {"name": "data", "namespace": "default", "uid": "u1", "annotations": {}},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        if let Some(a) = extra.get("annotations") {
            v["metadata"]["annotations"] = a.clone();
        }
        if let Some(n) = extra.get("volumeName") {
            v["spec"]["volumeName"] = n.clone();
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn class(name: &str, mode: &str, provisioner: &str) -> Arc<StorageClass> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode}),
            )
            .unwrap(),
        )
    }

    fn local_pv(name: &str, on: &str, class: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "local": {"path": "/mnt/x"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [on]}]}]}}},
            "status": {"phase": "Available"}}))
            .unwrap(),
        )
    }

    fn reasons(s: Status) -> Vec<String> {
        s.reasons
    }

    #[test]
    fn pods_without_claims_or_with_missing_claims() {
        let f = Fixture::default();
        assert_eq!(
            reasons(check(&pod(), &node("a"), &f)),
            vec!["persistentvolumeclaim \"data\" not found"]
        );
        let no_claims: Pod =
            serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {"containers": []}})).unwrap();
        assert!(check(&no_claims, &node("a"), &f).is_success());
    }

    #[test]
    fn unbound_immediate_claims_are_unschedulable() {
        let f = Fixture {
            claims: vec![claim("fast", json!({}))],
            classes: vec![class("fast", "Immediate", "example.com/x")],
            ..Default::default()
        };
        let s = check(&pod(), &node("a"), &f);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec![ERR_UNBOUND_IMMEDIATE]);
        let none = Fixture {
            claims: vec![claim("", json!({}))],
            ..Default::default()
        };
        assert_eq!(reasons(check(&pod(), &node("a"), &none)), vec![ERR_UNBOUND_IMMEDIATE]);
    }

    #[test]
    fn bound_volumes_pin_the_pod_to_their_nodes() {
        let f = Fixture {
            claims: vec![claim("local", json!({"volumeName": "v"}))],
            volumes: vec![local_pv("v", "a", "local")],
            ..Default::default()
        };
        assert!(check(&pod(), &node("a"), &f).is_success());
        assert_eq!(reasons(check(&pod(), &node("b"), &f)), vec![ERR_NODE_CONFLICT]);
    }

    #[test]
    fn delayed_claims_use_static_volumes_or_provisioning() {
        let static_only = Fixture {
            claims: vec![claim("local", json!({}))],
            volumes: vec![local_pv("v", "a", "local")],
            classes: vec![class("local", "WaitForFirstConsumer", NO_PROVISIONER)],
        };
        match plan(&pod(), &node("a"), &static_only).unwrap()[0].1.clone() {
            Need::Volume(v) => assert_eq!(v.metadata.name.as_deref(), Some("v")),
            other => panic!("expected a static volume, got {other:?}"),
        }
        assert_eq!(
            reasons(check(&pod(), &node("b"), &static_only)),
            vec![ERR_BIND_CONFLICT]
        );

        let dynamic = Fixture {
            claims: vec![claim("local-path", json!({}))],
            classes: vec![class("local-path", "WaitForFirstConsumer", "rancher.io/local-path")],
            ..Default::default()
        };
        assert!(matches!(
            plan(&pod(), &node("b"), &dynamic).unwrap()[0].1,
            Need::Provision(_)
        ));
        // Once a node is selected, only that node fits.
        let selected = Fixture {
            claims: vec![claim("local-path", json!({"annotations": {ANN_SELECTED_NODE: "a"}}))],
            classes: dynamic.classes.clone(),
            ..Default::default()
        };
        assert!(check(&pod(), &node("a"), &selected).is_success());
        assert_eq!(reasons(check(&pod(), &node("b"), &selected)), vec![ERR_BIND_CONFLICT]);
    }

    #[test]
    fn two_claims_of_one_pod_do_not_share_a_volume() {
        let two: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "e", "persistentVolumeClaim": {"claimName": "data2"}}]}}),
        )
        .unwrap();
        let mut second = (*claim("local", json!({}))).clone();
        second.metadata.name = Some("data2".into());
        let f = Fixture {
            claims: vec![claim("local", json!({})), Arc::new(second)],
            volumes: vec![local_pv("v", "a", "local")],
            classes: vec![class("local", "WaitForFirstConsumer", NO_PROVISIONER)],
        };
        assert_eq!(reasons(check(&two, &node("a"), &f)), vec![ERR_BIND_CONFLICT]);
    }
}
