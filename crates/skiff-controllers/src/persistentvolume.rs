//! PersistentVolume controller (upstream pkg/controller/volume/persistentvolume,
//! pvcprotection and pvprotection) and the local-path dynamic provisioner
//! (the behaviour of rancher's local-path-provisioner, which k3s ships).
//!
//! Claims ([`sync_claim`]):
//! - A claim without `storageClassName` gets the default StorageClass
//!   (retroactive default class assignment, as upstream since 1.28); admission
//!   does the same on create.
//! - An unbound claim is bound to the smallest Available volume that satisfies it
//!   ([`find_best_match`]: class, access modes, volume mode, capacity, selector) or
//!   to the volume it names in `spec.volumeName`, or that names it in
//!   `spec.claimRef`. Binding sets `pv.spec.claimRef` (and
//!   `pv.kubernetes.io/bound-by-controller` when the controller chose the
//!   volume), the volume's phase `Bound`, the claim's `spec.volumeName` with
//!   `pv.kubernetes.io/bind-completed` and the claim's status (phase `Bound`,
//!   `accessModes`, `capacity`).
//! - Claims of a `WaitForFirstConsumer` class wait (event `WaitForFirstConsumer`)
//!   until the scheduler writes `volume.kubernetes.io/selected-node`; claims of a
//!   class with a provisioner get `volume.kubernetes.io/storage-provisioner` and
//!   wait for it (event `ExternalProvisioning`).
//! - A claim being deleted keeps its `kubernetes.io/pvc-protection` finalizer while
//!   a pod that is not finished uses it.
//!
//! Volumes ([`sync_volume`]): unclaimed volumes are `Available`; when the bound
//! claim is deleted the volume is `Released` and reclaimed per
//! `persistentVolumeReclaimPolicy` (`Retain`: kept; `Delete`: the provisioner that
//! made it removes its data and the object; `Recycle`: `Failed`, not supported).
//! A volume being deleted keeps its `kubernetes.io/pv-protection` finalizer while
//! it is `Bound`.
//!
//! Local-path provisioning ([`LocalPath`]): for a claim of a class whose
//! provisioner is [`LOCAL_PATH_PROVISIONER`], a directory
//! `<base>/pvc-<uid>_<namespace>_<name>` and a `hostPath` volume
//! (`DirectoryOrCreate`) named `pvc-<uid>`, pre-bound to the claim, with node
//! affinity to the selected node (for `Immediate` classes: the only node, or the
//! first Ready one by name). The directory is created here (the controller manager
//! runs on the server's node) and again by the kubelet on mount, which is what
//! makes a volume on another node usable; removal on reclaim happens here, so on
//! other nodes it is not yet done (see docs/storage.md).
//!
//! The matching and binding decisions are pure functions, unit-tested below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::common::{is_conflict, is_not_found, record};

const COMPONENT: &str = "persistentvolume-controller";
const PROVISIONER_COMPONENT: &str = "rancher.io/local-path_skiff";

/// Annotation on a claim whose binding the controller completed.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Annotation on a volume or claim whose binding the controller (not a user) chose.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Annotation naming the provisioner that created a volume.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Annotation naming the provisioner expected to provision a claim.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta spelling of [`ANN_STORAGE_PROVISIONER`], still written by upstream.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Annotation the scheduler writes on a `WaitForFirstConsumer` claim: the node chosen.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The deprecated annotation naming a claim's or volume's class.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// Annotation marking the default StorageClass.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// Finalizer keeping a claim while pods use it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Finalizer keeping a volume while it is bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// The provisioner name of the local-path provisioner (as k3s ships it).
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";
/// Name of the default StorageClass created at start.
pub const DEFAULT_CLASS_NAME: &str = "local-path";
/// The provisioner name of classes whose volumes are only created by hand.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// Upstream's resync period of claims and volumes (`--pvclaimbinder-sync-period`).
const RESYNC: Duration = Duration::from_secs(15);

/// The local-path provisioner's settings.
#[derive(Debug, Clone)]
pub struct LocalPath {
    /// Directory under which volumes are created (`--default-local-storage-path`).
    pub base: PathBuf,
}

// ---------------------------------------------------------------------------
// Pure helpers.
// ---------------------------------------------------------------------------

fn annotation<'a>(meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The class a claim asks for (upstream `GetPersistentVolumeClaimClass`): the
/// beta annotation, else `spec.storageClassName`; `None` when neither is set
/// (such a claim gets the default class), `Some("")` for "no class".
pub fn claim_class(pvc: &PersistentVolumeClaim) -> Option<&str> {
    annotation(&pvc.metadata, ANN_BETA_STORAGE_CLASS)
        .or_else(|| pvc.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()))
}

/// The class of a volume (upstream `GetPersistentVolumeClass`), `""` for none.
pub fn volume_class(pv: &PersistentVolume) -> &str {
    annotation(&pv.metadata, ANN_BETA_STORAGE_CLASS)
        .or_else(|| pv.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()))
        .unwrap_or_default()
}

fn storage(q: Option<&Quantity>) -> i128 {
    q.and_then(|q| skiff_api::quantity::parse_value(&q.0).ok()).unwrap_or(0)
}

/// The storage a claim requests, in bytes (0 when unset).
pub fn requested_bytes(pvc: &PersistentVolumeClaim) -> i128 {
    storage(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    )
}

/// A volume's storage capacity, in bytes (0 when unset).
pub fn capacity_bytes(pv: &PersistentVolume) -> i128 {
    storage(
        pv.spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    )
}

fn claim_modes(pvc: &PersistentVolumeClaim) -> Vec<String> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default()
}

fn volume_modes(pv: &PersistentVolume) -> Vec<String> {
    pv.spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default()
}

/// Whether the volume offers every access mode the claim asks for (upstream
/// `CheckAccessModes`).
pub fn access_modes_satisfied(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let offered = volume_modes(pv);
    claim_modes(pvc).iter().all(|m| offered.contains(m))
}

/// Whether the claim's and the volume's `volumeMode` (default `Filesystem`) agree.
pub fn volume_mode_matches(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let c = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    let v = pv
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    c == v
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

/// Whether `pv.spec.claimRef` names this claim (namespace and name, and its uid
/// when the reference has one; upstream `IsVolumeBoundToClaim`).
pub fn is_bound_to_claim(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = claim_ref(pv) else { return false };
    r.name == pvc.metadata.name
        && r.namespace == pvc.metadata.namespace
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == pvc.metadata.uid.as_deref())
}

fn phase_of_pv(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

fn phase_of_pvc(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

/// Whether the claim's label selector (if any) matches the volume's labels.
fn selector_matches(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let Some(sel) = pvc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return true;
    };
    let Ok(json) = serde_json::to_value(sel) else {
        return false;
    };
    match skiff_api::selector::LabelSelector::from_label_selector_json(&json) {
        Ok(s) => s.matches(&pv.metadata.labels.clone().unwrap_or_default()),
        Err(_) => false,
    }
}

/// The volume the controller binds `pvc` to (upstream `findMatchingVolume` with
/// no node, i.e. the controller's path): a volume pre-bound to the claim
/// (`claimRef`) wins if its size and volume mode fit; otherwise, unless
/// `delay_binding` (a `WaitForFirstConsumer` claim, which the scheduler binds),
/// the smallest `Available`, unclaimed, not deleted volume of the claim's class
/// whose capacity, access modes, volume mode and labels (the claim's selector)
/// satisfy it. `class` is the claim's effective class (`""` for none).
pub fn find_best_match<'a>(
    pvc: &PersistentVolumeClaim,
    class: &str,
    volumes: &'a [PersistentVolume],
    delay_binding: bool,
) -> Option<&'a PersistentVolume> {
    let want = requested_bytes(pvc);
    let mut best: Option<(&PersistentVolume, i128)> = None;
    for pv in volumes {
        let size = capacity_bytes(pv);
        if size < want || !volume_mode_matches(pvc, pv) || pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if is_bound_to_claim(pv, pvc) {
            return Some(pv);
        }
        if delay_binding
            || claim_ref(pv).is_some()
            || phase_of_pv(pv) != "Available"
            || !selector_matches(pvc, pv)
            || volume_class(pv) != class
            || !access_modes_satisfied(pvc, pv)
        {
            continue;
        }
        if best.is_none_or(|(_, s)| size < s) {
            best = Some((pv, size));
        }
    }
    best.map(|(pv, _)| pv)
}

/// Why a volume named in a claim's `spec.volumeName` cannot be bound to it
/// (upstream `checkVolumeSatisfyClaim`), in upstream's event wording.
pub fn check_volume_satisfies_claim(pv: &PersistentVolume, pvc: &PersistentVolumeClaim, class: &str) -> Option<String> {
    if capacity_bytes(pv) < requested_bytes(pvc) {
        return Some("requested PV is too small".into());
    }
    if volume_class(pv) != class {
        return Some("storageClassName does not match".into());
    }
    if !volume_mode_matches(pvc, pv) {
        return Some("incompatible volumeMode".into());
    }
    if !access_modes_satisfied(pvc, pv) {
        return Some("incompatible accessMode".into());
    }
    None
}

/// Whether the class is marked default (annotation value `"true"`).
pub fn is_default_class(sc: &StorageClass) -> bool {
    annotation(&sc.metadata, ANN_DEFAULT_CLASS) == Some("true")
}

/// The default class among `classes` (upstream `GetDefaultClass`): of several
/// marked default, the newest, then the first by name.
pub fn default_class(classes: &[StorageClass]) -> Option<&StorageClass> {
    classes.iter().filter(|c| is_default_class(c)).max_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ta.cmp(&tb).then_with(|| b.metadata.name.cmp(&a.metadata.name))
    })
}

/// Whether a class delays binding until a pod uses the claim.
pub fn is_wait_for_first_consumer(sc: &StorageClass) -> bool {
    sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

/// Whether `pod` mounts claim `claim` (of the pod's namespace) and is not finished;
/// such a pod keeps the claim's `kubernetes.io/pvc-protection` finalizer.
pub fn pod_uses_claim(pod: &Pod, claim: &str) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !finished && claims_of(pod).iter().any(|c| c == claim)
}

/// Names of the claims a pod mounts (persistentVolumeClaim volumes and the claims
/// of ephemeral volumes, `<pod>-<volume>`).
pub fn claims_of(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral.as_ref().map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// The directory name of a local-path volume, as rancher's provisioner names it:
/// `pvc-<uid>_<namespace>_<name>`.
pub fn local_path_dir_name(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "{}_{}_{}",
        volume_name_for(pvc),
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The name of the volume provisioned for a claim: `pvc-<claim uid>`, as upstream.
pub fn volume_name_for(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default())
}

/// The volume the local-path provisioner creates for `pvc` of class `sc` on
/// `node`, its data in `path`: a `hostPath` (`DirectoryOrCreate`) volume with the
/// claim's access modes and volume mode, the requested capacity, the class's
/// reclaim policy (default `Delete`) and mount options, node affinity to
/// `kubernetes.io/hostname=<node>`, pre-bound to the claim (with its uid).
pub fn local_path_volume(pvc: &PersistentVolumeClaim, sc: &StorageClass, node: &str, path: &Path) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()
        .unwrap_or_else(|| Quantity("0".into()));
    serde_json::from_value(json!({
        "metadata": {
            "name": volume_name_for(pvc),
            "annotations": {
                ANN_PROVISIONED_BY: LOCAL_PATH_PROVISIONER,
                "local.path.provisioner/selected-node": node,
            },
        },
        "spec": {
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "capacity": {"storage": request},
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": pvc.metadata.namespace, "name": pvc.metadata.name,
                "uid": pvc.metadata.uid, "resourceVersion": pvc.metadata.resource_version,
            },
            "hostPath": {"path": path.display().to_string(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "persistentVolumeReclaimPolicy": sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": sc.metadata.name,
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "mountOptions": sc.mount_options,
        },
    }))
    .expect("a well-formed PersistentVolume")
}

/// The StorageClass created at start when absent: `local-path`, the default,
/// provisioner [`LOCAL_PATH_PROVISIONER`], `WaitForFirstConsumer`, reclaim
/// `Delete` (what k3s ships).
pub fn default_storage_class() -> StorageClass {
    serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": DEFAULT_CLASS_NAME, "annotations": {ANN_DEFAULT_CLASS: "true"}},
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .expect("a well-formed StorageClass")
}

/// What binding changes on the volume: `claimRef` to the claim (with its uid)
/// and, when the controller chose the volume, `bound-by-controller` (upstream
/// `GetBindVolumeToClaim`). `None` when the volume already says so.
pub fn bind_volume_to_claim(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Option<PersistentVolume> {
    let complete = claim_ref(pv).is_some_and(|r| r.uid.is_some() && is_bound_to_claim(pv, pvc));
    if complete {
        return None;
    }
    let chosen_by_controller = !is_bound_to_claim(pv, pvc);
    let mut out = pv.clone();
    let spec = out.spec.get_or_insert_with(Default::default);
    spec.claim_ref = Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: pvc.metadata.namespace.clone(),
        name: pvc.metadata.name.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        ..Default::default()
    });
    if chosen_by_controller {
        out.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    Some(out)
}

/// What binding changes on the claim: `spec.volumeName`, `bind-completed` and,
/// when the claim did not name the volume, `bound-by-controller` (upstream
/// `bindClaimToVolume`). `None` when nothing changes.
pub fn bind_claim_to_volume(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> Option<PersistentVolumeClaim> {
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let named = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv_name.as_str());
    let completed = annotation(&pvc.metadata, ANN_BIND_COMPLETED).is_some();
    if named && completed {
        return None;
    }
    let mut out = pvc.clone();
    let anns = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if !named {
        anns.insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    anns.insert(ANN_BIND_COMPLETED.into(), "yes".into());
    out.spec.get_or_insert_with(Default::default).volume_name = Some(pv_name);
    Some(out)
}

/// The status of a claim bound to `pv`: phase `Bound`, the volume's access modes
/// and capacity.
pub fn bound_claim_status(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> PersistentVolumeClaimStatus {
    let mut status = pvc.status.clone().unwrap_or_default();
    status.phase = Some("Bound".into());
    status.access_modes = pv.spec.as_ref().and_then(|s| s.access_modes.clone());
    status.capacity = pv.spec.as_ref().and_then(|s| s.capacity.clone());
    status
}

// ---------------------------------------------------------------------------
// The controller.
// ---------------------------------------------------------------------------

struct Ctx {
    client: kube::Client,
    local_path: Option<LocalPath>,
}

impl Ctx {
    async fn claim_event(&self, pvc: &PersistentVolumeClaim, ty: EventType, reason: &str, message: &str) {
        self.claim_event_from(pvc, ty, reason, message, COMPONENT).await;
    }

    async fn claim_event_from(
        &self,
        pvc: &PersistentVolumeClaim,
        ty: EventType,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        let r = crate::common::reference("v1", "PersistentVolumeClaim", &pvc.metadata);
        record(&self.client, r, ty, reason, message, component).await;
    }

    async fn volume_event(&self, pv: &PersistentVolume, ty: EventType, reason: &str, message: &str) {
        let r = crate::common::reference("v1", "PersistentVolume", &pv.metadata);
        record(&self.client, r, ty, reason, message, COMPONENT).await;
    }

    async fn class(&self, name: &str) -> Result<Option<StorageClass>, Error> {
        Ok(Api::<StorageClass>::all(self.client.clone()).get_opt(name).await?)
    }
}

fn claims_api(client: &kube::Client, pvc: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
    Api::namespaced(client.clone(), pvc.metadata.namespace.as_deref().unwrap_or_default())
}

async fn remove_finalizer<K>(
    api: &Api<K>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    f: &str,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let rest: Vec<String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|x| x.as_str() != f)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}});
    match api
        .patch(
            meta.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Syncs one claim (upstream `syncClaim` plus the pvc-protection controller and
/// the local-path provisioner's claim handling).
async fn sync_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api = claims_api(&ctx.client, &pvc);
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    if pvc.metadata.deletion_timestamp.is_some() {
        if !pvc.metadata.finalizers.iter().flatten().any(|f| f == PVC_PROTECTION) {
            return Ok(Action::await_change());
        }
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await?;
        if pods.items.iter().any(|p| pod_uses_claim(p, &name)) {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        remove_finalizer(&api, &pvc.metadata, PVC_PROTECTION).await?;
        return Ok(Action::await_change());
    }
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    // Retroactive default class assignment.
    if claim_class(&pvc).is_none() && volume_name.is_none() {
        let classes = Api::<StorageClass>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?;
        if let Some(sc) = default_class(&classes.items) {
            let patch = json!({"metadata": {"resourceVersion": pvc.metadata.resource_version},
                "spec": {"storageClassName": sc.metadata.name}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
            return Ok(Action::await_change());
        }
    }
    sync_binding(pvc, &ctx, volume_name).await
}

/// The binding part of [`sync_claim`], with the claim's class settled.
async fn sync_binding(
    pvc: Arc<PersistentVolumeClaim>,
    ctx: &Ctx,
    volume_name: Option<String>,
) -> Result<Action, Error> {
    let class = claim_class(&pvc).unwrap_or_default().to_string();
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if let Some(vname) = volume_name {
        // Bound, or pre-bound by the user to a named volume.
        let Some(pv) = volumes.get_opt(&vname).await? else {
            if phase_of_pvc(&pvc) == "Bound" {
                set_claim_phase(ctx, &pvc, "Lost").await?;
                ctx.claim_event(
                    &pvc,
                    EventType::Warning,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                )
                .await;
            } else {
                set_claim_phase(ctx, &pvc, "Pending").await?;
            }
            return Ok(Action::requeue(RESYNC));
        };
        if claim_ref(&pv).is_none() || is_bound_to_claim(&pv, &pvc) {
            if claim_ref(&pv).is_none()
                && let Some(why) = check_volume_satisfies_claim(&pv, &pvc, &class)
            {
                ctx.claim_event(
                    &pvc,
                    EventType::Warning,
                    "VolumeMismatch",
                    &format!("Cannot bind to requested volume \"{vname}\": {why}"),
                )
                .await;
                set_claim_phase(ctx, &pvc, "Pending").await?;
                return Ok(Action::requeue(RESYNC));
            }
            bind(ctx, &pv, &pvc).await?;
            return Ok(Action::requeue(RESYNC));
        }
        // The volume belongs to another claim.
        if phase_of_pvc(&pvc) == "Bound" {
            set_claim_phase(ctx, &pvc, "Lost").await?;
            ctx.claim_event(
                &pvc,
                EventType::Warning,
                "ClaimMisbound",
                "Two claims are bound to the same volume, this one is bound incorrectly",
            )
            .await;
        } else {
            ctx.claim_event(
                &pvc,
                EventType::Warning,
                "FailedBinding",
                &format!("volume \"{vname}\" already bound to a different claim."),
            )
            .await;
            set_claim_phase(ctx, &pvc, "Pending").await?;
        }
        return Ok(Action::requeue(RESYNC));
    }

    let sc = if class.is_empty() {
        None
    } else {
        ctx.class(&class).await?
    };
    let delay = sc.as_ref().is_some_and(is_wait_for_first_consumer);
    let selected = annotation(&pvc.metadata, ANN_SELECTED_NODE).map(str::to_string);
    let all = volumes.list(&ListParams::default()).await?.items;
    if let Some(pv) = find_best_match(&pvc, &class, &all, delay) {
        bind(ctx, pv, &pvc).await?;
        return Ok(Action::requeue(RESYNC));
    }
    if phase_of_pvc(&pvc) != "Pending" {
        set_claim_phase(ctx, &pvc, "Pending").await?;
    }
    if delay && selected.is_none() {
        ctx.claim_event(
            &pvc,
            EventType::Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        )
        .await;
        return Ok(Action::requeue(RESYNC));
    }
    if class.is_empty() {
        ctx.claim_event(
            &pvc,
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )
        .await;
        return Ok(Action::requeue(RESYNC));
    }
    let Some(sc) = sc else {
        ctx.claim_event(
            &pvc,
            EventType::Warning,
            "ProvisioningFailed",
            &format!("storageclass.storage.k8s.io \"{class}\" not found"),
        )
        .await;
        return Ok(Action::requeue(RESYNC));
    };
    if sc.provisioner == NO_PROVISIONER {
        ctx.claim_event(
            &pvc,
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )
        .await;
        return Ok(Action::requeue(RESYNC));
    }
    // External provisioning: announce the provisioner on the claim.
    if annotation(&pvc.metadata, ANN_STORAGE_PROVISIONER) != Some(sc.provisioner.as_str()) {
        let patch = json!({"metadata": {"annotations": {
            ANN_STORAGE_PROVISIONER: sc.provisioner, ANN_BETA_STORAGE_PROVISIONER: sc.provisioner}}});
        claims_api(&ctx.client, &pvc)
            .patch(
                pvc.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        return Ok(Action::await_change());
    }
    ctx.claim_event(
        &pvc,
        EventType::Normal,
        "ExternalProvisioning",
        &format!(
            "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
            sc.provisioner
        ),
    )
    .await;
    if sc.provisioner == LOCAL_PATH_PROVISIONER
        && let Some(lp) = &ctx.local_path
    {
        provision(ctx, lp, &pvc, &sc, selected.as_deref()).await?;
    }
    Ok(Action::requeue(RESYNC))
}

async fn set_claim_phase(ctx: &Ctx, pvc: &PersistentVolumeClaim, phase: &str) -> Result<(), Error> {
    if phase_of_pvc(pvc) == phase {
        return Ok(());
    }
    let mut next = pvc.clone();
    next.status.get_or_insert_with(Default::default).phase = Some(phase.into());
    claims_api(&ctx.client, pvc)
        .replace_status(
            pvc.metadata.name.as_deref().unwrap_or_default(),
            &PostParams::default(),
            &next,
        )
        .await?;
    Ok(())
}

async fn set_volume_phase(ctx: &Ctx, pv: &PersistentVolume, phase: &str, message: Option<&str>) -> Result<(), Error> {
    if phase_of_pv(pv) == phase && pv.status.as_ref().and_then(|s| s.message.as_deref()) == message {
        return Ok(());
    }
    let mut next = pv.clone();
    next.status = Some(PersistentVolumeStatus {
        phase: Some(phase.into()),
        message: message.map(str::to_string),
        last_phase_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        )),
        ..Default::default()
    });
    Api::<PersistentVolume>::all(ctx.client.clone())
        .replace_status(
            pv.metadata.name.as_deref().unwrap_or_default(),
            &PostParams::default(),
            &next,
        )
        .await?;
    Ok(())
}

/// Binds volume and claim (upstream `bind`): the volume's claimRef, its phase,
/// the claim's volumeName and annotations, the claim's status. Each write is a
/// compare-and-swap on the object read, so two claims never take one volume.
async fn bind(ctx: &Ctx, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<(), Error> {
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let pv = match bind_volume_to_claim(pv, pvc) {
        Some(next) => volumes.replace(&pv_name, &PostParams::default(), &next).await?,
        None => pv.clone(),
    };
    if phase_of_pv(&pv) != "Bound" {
        set_volume_phase(ctx, &pv, "Bound", None).await?;
    }
    let claims = claims_api(&ctx.client, pvc);
    let claim_name = pvc.metadata.name.clone().unwrap_or_default();
    let pvc = match bind_claim_to_volume(pvc, &pv) {
        Some(next) => claims.replace(&claim_name, &PostParams::default(), &next).await?,
        None => pvc.clone(),
    };
    let status = bound_claim_status(&pvc, &pv);
    if pvc.status.as_ref() != Some(&status) {
        let mut next = pvc.clone();
        next.status = Some(status);
        claims
            .replace_status(&claim_name, &PostParams::default(), &next)
            .await?;
    }
    tracing::debug!(claim = %format!("{}/{claim_name}", pvc.metadata.namespace.as_deref().unwrap_or_default()), volume = %pv_name, "bound");
    Ok(())
}

/// The local-path provisioner for one claim: picks the node, creates the
/// directory and the volume (idempotent: an existing `pvc-<uid>` is left alone).
async fn provision(
    ctx: &Ctx,
    lp: &LocalPath,
    pvc: &PersistentVolumeClaim,
    sc: &StorageClass,
    selected: Option<&str>,
) -> Result<(), Error> {
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if volumes.get_opt(&volume_name_for(pvc)).await?.is_some() {
        return Ok(());
    }
    if pvc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some() {
        ctx.claim_event_from(
            pvc,
            EventType::Warning,
            "ProvisioningFailed",
            "failed to provision volume with StorageClass \"local-path\": claim.Spec.Selector is not supported",
            PROVISIONER_COMPONENT,
        )
        .await;
        return Ok(());
    }
    let node = match selected {
        Some(n) => n.to_string(),
        None => {
            let nodes = Api::<Node>::all(ctx.client.clone())
                .list(&ListParams::default())
                .await?
                .items;
            match immediate_node(&nodes) {
                Some(n) => n,
                None => {
                    ctx.claim_event_from(
                        pvc,
                        EventType::Warning,
                        "ProvisioningFailed",
                        &format!(
                            "failed to provision volume with StorageClass \"{}\": configuration error, no node was specified",
                            sc.metadata.name.as_deref().unwrap_or_default()
                        ),
                        PROVISIONER_COMPONENT,
                    )
                    .await;
                    return Ok(());
                }
            }
        }
    };
    let key = format!(
        "{}/{}",
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default()
    );
    ctx.claim_event_from(
        pvc,
        EventType::Normal,
        "Provisioning",
        &format!("External provisioner is provisioning volume for claim \"{key}\""),
        PROVISIONER_COMPONENT,
    )
    .await;
    let path = lp.base.join(local_path_dir_name(pvc));
    if let Err(e) = create_volume_dir(&path) {
        ctx.claim_event_from(
            pvc,
            EventType::Warning,
            "ProvisioningFailed",
            &format!(
                "failed to provision volume with StorageClass \"{}\": creating {}: {e}",
                sc.metadata.name.as_deref().unwrap_or_default(),
                path.display()
            ),
            PROVISIONER_COMPONENT,
        )
        .await;
        return Ok(());
    }
    let pv = local_path_volume(pvc, sc, &node, &path);
    match volumes.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(claim = %key, volume = %volume_name_for(pvc), path = %path.display(), %node, "provisioned a local-path volume");
    ctx.claim_event_from(
        pvc,
        EventType::Normal,
        "ProvisioningSucceeded",
        &format!("Successfully provisioned volume {}", volume_name_for(pvc)),
        PROVISIONER_COMPONENT,
    )
    .await;
    Ok(())
}

/// The node an `Immediate` local-path claim is provisioned on: the only node, or
/// the first Ready node by name.
pub fn immediate_node(nodes: &[Node]) -> Option<String> {
    let ready = |n: &&Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    if nodes.len() == 1 {
        return nodes[0].metadata.name.clone();
    }
    let mut names: Vec<String> = nodes
        .iter()
        .filter(ready)
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Creates a volume directory, open to every container user (mode 0777, as
/// rancher's helper does).
fn create_volume_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
}

/// Syncs one volume (upstream `syncVolume`, reclaim, and the pv-protection
/// controller).
async fn sync_volume(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let name = pv.metadata.name.clone().unwrap_or_default();
    if pv.metadata.deletion_timestamp.is_some() {
        if pv.metadata.finalizers.iter().flatten().any(|f| f == PV_PROTECTION) && phase_of_pv(&pv) != "Bound" {
            remove_finalizer(&volumes, &pv.metadata, PV_PROTECTION).await?;
        }
        return Ok(Action::await_change());
    }
    let Some(r) = claim_ref(&pv).cloned() else {
        if phase_of_pv(&pv) != "Available" {
            set_volume_phase(&ctx, &pv, "Available", None).await?;
        }
        return Ok(Action::await_change());
    };
    let ns = r.namespace.clone().unwrap_or_default();
    let claim = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
        .get_opt(r.name.as_deref().unwrap_or_default())
        .await?;
    let uid = r.uid.clone().filter(|u| !u.is_empty());
    let Some(uid) = uid else {
        // Pre-bound by a user; the claim's sync binds it once the claim exists.
        if phase_of_pv(&pv) != "Available" {
            set_volume_phase(&ctx, &pv, "Available", None).await?;
        }
        return Ok(Action::requeue(RESYNC));
    };
    let claim = claim.filter(|c| c.metadata.uid.as_deref() == Some(uid.as_str()));
    let Some(claim) = claim else {
        // The claim is gone: release and reclaim.
        if !matches!(phase_of_pv(&pv), "Released" | "Failed") {
            set_volume_phase(&ctx, &pv, "Released", None).await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        if phase_of_pv(&pv) == "Released" {
            reclaim(&ctx, &pv).await?;
        }
        return Ok(Action::await_change());
    };
    let claimed = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default();
    let by_controller = annotation(&pv.metadata, ANN_BOUND_BY_CONTROLLER).is_some();
    if claimed == name && phase_of_pv(&pv) != "Bound" {
        set_volume_phase(&ctx, &pv, "Bound", None).await?;
    } else if !claimed.is_empty() && claimed != name && by_controller {
        // The claim went to another volume: undo a binding the controller made.
        let mut next = (*pv).clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.claim_ref = None;
        }
        if let Some(a) = next.metadata.annotations.as_mut() {
            a.remove(ANN_BOUND_BY_CONTROLLER);
        }
        let next = volumes.replace(&name, &PostParams::default(), &next).await?;
        set_volume_phase(&ctx, &next, "Available", None).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// Reclaims a Released volume per its policy.
async fn reclaim(ctx: &Ctx, pv: &PersistentVolume) -> Result<(), Error> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    match policy {
        "Delete" => {
            let provisioned_by = annotation(&pv.metadata, ANN_PROVISIONED_BY);
            match provisioned_by {
                Some(LOCAL_PATH_PROVISIONER) => {
                    let Some(lp) = &ctx.local_path else { return Ok(()) };
                    if let Some(path) = pv.spec.as_ref().and_then(|s| s.host_path.as_ref()).map(|h| &h.path) {
                        let path = Path::new(path);
                        // Only ever remove what this provisioner made.
                        if path.starts_with(&lp.base) && path != lp.base {
                            match std::fs::remove_dir_all(path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => {
                                    let msg =
                                        format!("failed to delete volume {name}: removing {}: {e}", path.display());
                                    ctx.volume_event(pv, EventType::Warning, "VolumeFailedDelete", &msg)
                                        .await;
                                    return Ok(());
                                }
                            }
                        }
                    }
                    match Api::<PersistentVolume>::all(ctx.client.clone())
                        .delete(&name, &Default::default())
                        .await
                    {
                        Ok(_) => tracing::info!(volume = %name, "deleted a released local-path volume"),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                // Another external provisioner deletes its own volumes.
                Some(_) => {}
                None => {
                    let msg = format!(
                        "error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"
                    );
                    ctx.volume_event(pv, EventType::Warning, "VolumeFailedDelete", &msg)
                        .await;
                    set_volume_phase(ctx, pv, "Failed", Some(&msg)).await?;
                }
            }
        }
        "Recycle" => {
            let msg = "Recycle is not supported: delete and recreate the volume instead";
            ctx.volume_event(pv, EventType::Warning, "VolumeFailedRecycle", msg)
                .await;
            set_volume_phase(ctx, pv, "Failed", Some(msg)).await?;
        }
        _ => {}
    }
    Ok(())
}

fn error_policy<K>(_o: Arc<K>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    match e {
        Error::Kube(k) if is_conflict(k) || is_not_found(k) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::warn!(error = %e, "persistent volume sync failed");
            Action::requeue(Duration::from_secs(2))
        }
    }
}

/// Creates the default StorageClass ([`default_storage_class`]) unless a class of
/// that name exists (a user's changes to it are kept).
pub async fn ensure_default_storage_class(client: &kube::Client) -> Result<(), Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    if api.get_opt(DEFAULT_CLASS_NAME).await?.is_some() {
        return Ok(());
    }
    match api.create(&PostParams::default(), &default_storage_class()).await {
        Ok(_) => {
            tracing::info!(class = DEFAULT_CLASS_NAME, "created the default StorageClass");
            Ok(())
        }
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs the claim and volume loops until `shutdown`; with `local_path`, also the
/// local-path provisioner (and the default StorageClass is created if absent).
pub async fn run(client: kube::Client, local_path: Option<LocalPath>, shutdown: CancellationToken) {
    if local_path.is_some() {
        loop {
            match ensure_default_storage_class(&client).await {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, "creating the default StorageClass failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        local_path,
    });
    let claims = {
        let token = shutdown.clone();
        Controller::new(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
            |pv| {
                pv.spec.and_then(|s| s.claim_ref).and_then(|r| {
                    Some(ObjectRef::<PersistentVolumeClaim>::new(r.name.as_deref()?).within(r.namespace.as_deref()?))
                })
            },
        )
        .watches(Api::<Pod>::all(client.clone()), watcher::Config::default(), |pod| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let done = pod.metadata.deletion_timestamp.is_some()
                || matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                );
            let claims = if done { claims_of(&pod) } else { Vec::new() };
            claims
                .into_iter()
                .map(move |c| ObjectRef::<PersistentVolumeClaim>::new(&c).within(&ns))
        })
        .graceful_shutdown_on(async move { token.cancelled().await })
        .run(sync_claim, error_policy, ctx.clone())
        .for_each(|_| async {})
    };
    let volumes = {
        let token = shutdown.clone();
        Controller::new(Api::<PersistentVolume>::all(client.clone()), watcher::Config::default())
            .watches(
                Api::<PersistentVolumeClaim>::all(client.clone()),
                watcher::Config::default(),
                |pvc| {
                    pvc.spec
                        .and_then(|s| s.volume_name)
                        .filter(|v| !v.is_empty())
                        .map(|v| ObjectRef::<PersistentVolume>::new(&v))
                },
            )
            .graceful_shutdown_on(async move { token.cancelled().await })
            .run(sync_volume, error_policy, ctx)
            .for_each(|_| async {})
    };
    tokio::join!(claims, volumes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name, "labels": {}},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                     "hostPath": {"path": format!("/mnt/{name}")}},
            "status": {"phase": "Available"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn pvc(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                     "resources": {"requests": {"storage": size}}},
            "status": {"phase": "Pending"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn name(v: Option<&PersistentVolume>) -> Option<&str> {
        v.and_then(|v| v.metadata.name.as_deref())
    }

    #[test]
    fn the_smallest_volume_that_fits_wins() {
        let vols = vec![
            pv("big", "10Gi", json!({})),
            pv("small", "1Gi", json!({})),
            pv("fits", "2Gi", json!({})),
            pv("tiny", "512Mi", json!({})),
        ];
        let claim = pvc("c", "1500Mi", json!({}));
        assert_eq!(name(find_best_match(&claim, "manual", &vols, false)), Some("fits"));
        let huge = pvc("c", "20Gi", json!({}));
        assert_eq!(name(find_best_match(&huge, "manual", &vols, false)), None);
    }

    #[test]
    fn class_access_modes_phase_and_selector_must_match() {
        let claim = pvc(
            "c",
            "1Gi",
            json!({"spec": {"accessModes": ["ReadWriteMany"], "selector": {"matchLabels": {"tier": "db"}}}}),
        );
        let vols = vec![
            pv(
                "other-class",
                "1Gi",
                json!({"spec": {"storageClassName": "fast", "accessModes": ["ReadWriteMany"]}, "metadata": {"labels": {"tier": "db"}}}),
            ),
            pv("rwo", "1Gi", json!({"metadata": {"labels": {"tier": "db"}}})),
            pv("unlabelled", "1Gi", json!({"spec": {"accessModes": ["ReadWriteMany"]}})),
            pv(
                "released",
                "1Gi",
                json!({"spec": {"accessModes": ["ReadWriteMany"]}, "metadata": {"labels": {"tier": "db"}}, "status": {"phase": "Released"}}),
            ),
            pv(
                "ok",
                "5Gi",
                json!({"spec": {"accessModes": ["ReadWriteOnce", "ReadWriteMany"]}, "metadata": {"labels": {"tier": "db"}}}),
            ),
        ];
        assert_eq!(name(find_best_match(&claim, "manual", &vols, false)), Some("ok"));
        let block = pvc("c", "1Gi", json!({"spec": {"volumeMode": "Block"}}));
        assert_eq!(
            name(find_best_match(&block, "manual", &[pv("fs", "1Gi", json!({}))], false)),
            None
        );
    }

    #[test]
    fn pre_bound_volumes_and_delayed_binding() {
        let claim = pvc("c", "1Gi", json!({}));
        let vols = vec![
            pv("free", "1Gi", json!({})),
            pv(
                "for-c",
                "3Gi",
                json!({"spec": {"claimRef": {"namespace": "default", "name": "c"}}}),
            ),
            pv(
                "for-d",
                "1Gi",
                json!({"spec": {"claimRef": {"namespace": "default", "name": "d"}}}),
            ),
        ];
        // A volume naming the claim wins over a smaller free one, even when
        // binding is delayed (the scheduler or a user chose it).
        assert_eq!(name(find_best_match(&claim, "manual", &vols, false)), Some("for-c"));
        assert_eq!(name(find_best_match(&claim, "manual", &vols, true)), Some("for-c"));
        // Delayed binding leaves free volumes to the scheduler.
        assert_eq!(name(find_best_match(&claim, "manual", &vols[..1], true)), None);
        // A claimRef with another uid is another claim's.
        let stale = pv(
            "stale",
            "1Gi",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "c", "uid": "old"}}}),
        );
        assert!(!is_bound_to_claim(&stale, &claim));
    }

    #[test]
    fn binding_sets_claim_ref_annotations_and_status() {
        let claim = pvc("c", "1Gi", json!({"metadata": {"resourceVersion": "7"}}));
        let vol = pv("v", "2Gi", json!({}));
        let bound = bind_volume_to_claim(&vol, &claim).unwrap();
        let r = bound.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
        assert_eq!((r.name.as_deref(), r.uid.as_deref()), (Some("c"), Some("uid-c")));
        assert_eq!(annotation(&bound.metadata, ANN_BOUND_BY_CONTROLLER), Some("yes"));
        assert!(bind_volume_to_claim(&bound, &claim).is_none());
        // A volume the user pre-bound is not marked as chosen by the controller.
        let user = pv(
            "u",
            "2Gi",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "c"}}}),
        );
        let bound_user = bind_volume_to_claim(&user, &claim).unwrap();
        assert_eq!(annotation(&bound_user.metadata, ANN_BOUND_BY_CONTROLLER), None);

        let c = bind_claim_to_volume(&claim, &bound).unwrap();
        assert_eq!(c.spec.as_ref().unwrap().volume_name.as_deref(), Some("v"));
        assert_eq!(annotation(&c.metadata, ANN_BIND_COMPLETED), Some("yes"));
        assert_eq!(annotation(&c.metadata, ANN_BOUND_BY_CONTROLLER), Some("yes"));
        assert!(bind_claim_to_volume(&c, &bound).is_none());
        let named = pvc("c", "1Gi", json!({"spec": {"volumeName": "v"}}));
        let c = bind_claim_to_volume(&named, &bound).unwrap();
        assert_eq!(annotation(&c.metadata, ANN_BOUND_BY_CONTROLLER), None);

        let s = bound_claim_status(&c, &bound);
        assert_eq!(s.phase.as_deref(), Some("Bound"));
        assert_eq!(s.capacity.unwrap()["storage"].0, "2Gi");
        assert_eq!(s.access_modes.unwrap(), vec!["ReadWriteOnce".to_string()]);
    }

    #[test]
    fn a_volume_named_by_the_claim_must_satisfy_it() {
        let claim = pvc("c", "5Gi", json!({}));
        assert_eq!(
            check_volume_satisfies_claim(&pv("v", "1Gi", json!({})), &claim, "manual").as_deref(),
            Some("requested PV is too small")
        );
        assert_eq!(
            check_volume_satisfies_claim(&pv("v", "5Gi", json!({})), &claim, "fast").as_deref(),
            Some("storageClassName does not match")
        );
        assert_eq!(
            check_volume_satisfies_claim(&pv("v", "5Gi", json!({})), &claim, "manual"),
            None
        );
    }

    #[test]
    fn the_newest_default_class_wins() {
        let sc = |name: &str, default: bool, created: &str| -> StorageClass {
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created,
                "annotations": {ANN_DEFAULT_CLASS: if default { "true" } else { "false" }}}, "provisioner": "p"}))
            .unwrap()
        };
        let classes = vec![
            sc("old", true, "2024-01-01T00:00:00Z"),
            sc("new", true, "2025-01-01T00:00:00Z"),
            sc("newest-but-not-default", false, "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes).unwrap().metadata.name.as_deref(), Some("new"));
        assert!(default_class(&classes[2..]).is_none());
        let d = default_storage_class();
        assert!(is_default_class(&d) && is_wait_for_first_consumer(&d));
        assert_eq!(d.provisioner, LOCAL_PATH_PROVISIONER);
    }

    #[test]
    fn local_path_volumes_are_pre_bound_host_paths_on_the_node() {
        let claim = pvc("data", "2Gi", json!({"spec": {"storageClassName": "local-path"}}));
        let sc = default_storage_class();
        assert_eq!(local_path_dir_name(&claim), "pvc-uid-data_default_data");
        let v = local_path_volume(&claim, &sc, "n1", Path::new("/var/lib/skiff/storage/x"));
        assert_eq!(v.metadata.name.as_deref(), Some("pvc-uid-data"));
        let spec = v.spec.as_ref().unwrap();
        assert_eq!(
            spec.host_path.as_ref().unwrap().type_.as_deref(),
            Some("DirectoryOrCreate")
        );
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
        assert!(is_bound_to_claim(&v, &claim));
        let term = &spec
            .node_affinity
            .as_ref()
            .unwrap()
            .required
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(
            term.match_expressions.as_ref().unwrap()[0].values.as_deref(),
            Some(&["n1".to_string()][..])
        );
        // The claim's own sync then binds it.
        assert_eq!(
            name(find_best_match(&claim, "local-path", std::slice::from_ref(&v), true)),
            Some("pvc-uid-data")
        );
    }

    #[test]
    fn finished_pods_do_not_hold_claims() {
        let pod = |phase: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                            {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]},
                "status": {"phase": phase}}))
            .unwrap()
        };
        assert!(pod_uses_claim(&pod("Running"), "data"));
        assert!(pod_uses_claim(&pod("Pending"), "p-e"));
        assert!(!pod_uses_claim(&pod("Succeeded"), "data"));
        assert!(!pod_uses_claim(&pod("Running"), "other"));
    }
}
