//! `persistentVolumeClaim` volumes: the claim is resolved to its bound
//! PersistentVolume, whose `hostPath` or `local` directory becomes the volume
//! (`ROOT/pods/<uid>/volumes/<name>` is a symlink to it, which
//! [`crate::pod_spec::mounts`] resolves into the bind mount, honouring the
//! claim's `readOnly` and each mount's `subPath`).
//!
//! As upstream's volume manager, the pod's containers are not started until
//! every claim is bound and its volume set up: until then the pod stays
//! `ContainerCreating` with `FailedMount` events saying why. A `hostPath` volume
//! of type `DirectoryOrCreate` (what the local-path provisioner makes) is created
//! here, so a volume provisioned for this node works even when the provisioner
//! ran elsewhere.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::Api;

use crate::volumes::volume_dir;

/// Annotation of volumes made by the local-path provisioner.
const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";

/// The host directory of a bound volume, creating it for `DirectoryOrCreate`
/// host paths (mode 0777 for local-path volumes, as their provisioner does, else
/// 0755 as the hostPath plugin does). Errors name what is missing.
pub fn host_dir(pv: &PersistentVolume) -> Result<PathBuf, String> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let spec = pv
        .spec
        .as_ref()
        .ok_or_else(|| format!("PersistentVolume {name} has no spec"))?;
    if let Some(hp) = &spec.host_path {
        let path = PathBuf::from(&hp.path);
        match hp.type_.as_deref().unwrap_or_default() {
            "DirectoryOrCreate" if !path.exists() => {
                std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
                let local_path = pv
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANN_PROVISIONED_BY))
                    .is_some_and(|p| p == LOCAL_PATH_PROVISIONER);
                let mode = if local_path { 0o777 } else { 0o755 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            }
            "Directory" if !path.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    path.display()
                ));
            }
            _ => {}
        }
        return Ok(path);
    }
    if let Some(local) = &spec.local {
        let path = PathBuf::from(&local.path);
        if !path.exists() {
            return Err(format!("path \"{}\" does not exist", path.display()));
        }
        return Ok(path);
    }
    Err(format!(
        "PersistentVolume {name} is of a type this kubelet cannot mount (only hostPath and local are supported)"
    ))
}

/// Resolves claim `claim` of the pod's namespace to its volume's host directory
/// (upstream desired-state populator checks: the claim exists, is Bound to a
/// volume, and the volume's claimRef is this claim).
pub async fn resolve(client: &kube::Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(|e| format!("error processing PVC {ns}/{claim}: {e}"))?
        .ok_or_else(|| format!("error processing PVC {ns}/{claim}: persistentvolumeclaim \"{claim}\" not found"))?;
    let phase = pvc.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(format!(
            "error processing PVC {ns}/{claim}: PVC is not bound (phase {phase:?}, volumeName {volume:?})"
        ));
    }
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume)
        .await
        .map_err(|e| format!("failed to fetch PV {volume} from API server: {e}"))?
        .ok_or_else(|| {
            format!("failed to fetch PV {volume} from API server: persistentvolumes \"{volume}\" not found")
        })?;
    let bound_uid = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.clone());
    if bound_uid.is_none() || bound_uid != pvc.metadata.uid {
        return Err(format!(
            "found PV object {volume} but it has a ClaimRef that does not point to PVC {ns}/{claim}"
        ));
    }
    host_dir(&pv)
}

/// Points `link` at `target`, replacing a link to somewhere else.
fn link(target: &Path, link: &Path) -> Result<(), String> {
    if let Ok(current) = std::fs::read_link(link) {
        if current == target {
            return Ok(());
        }
        std::fs::remove_file(link).map_err(|e| format!("{}: {e}", link.display()))?;
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| format!("{}: {e}", link.display()))
}

/// Sets up every persistentVolumeClaim volume of the pod under `root_dir`.
/// Errors: the first claim that is not ready, as
/// `unmounted volumes=[<volume>]: <why>`.
pub async fn setup(client: &kube::Client, root_dir: &Path, uid: &str, pod: &Pod) -> Result<(), String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default() {
        let Some(src) = &v.persistent_volume_claim else {
            continue;
        };
        let dir = resolve(client, ns, &src.claim_name)
            .await
            .map_err(|e| format!("unmounted volumes=[{}]: {e}", v.name))?;
        link(&dir, &volume_dir(root_dir, uid, &v.name)).map_err(|e| format!("unmounted volumes=[{}]: {e}", v.name))?;
    }
    Ok(())
}

/// Whether the pod has persistentVolumeClaim volumes.
pub fn has_claims(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(|v| v.persistent_volume_claim.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(spec: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "v",
            "annotations": {ANN_PROVISIONED_BY: LOCAL_PATH_PROVISIONER}}, "spec": spec}))
        .unwrap()
    }

    #[test]
    fn host_paths_are_created_and_links_follow_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("storage/pvc-1");
        let made = host_dir(&pv(json!({"hostPath": {"path": dir, "type": "DirectoryOrCreate"}}))).unwrap();
        assert!(made.is_dir());
        assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o777, 0o777);
        let missing = tmp.path().join("nope");
        assert!(host_dir(&pv(json!({"local": {"path": missing}}))).is_err());
        assert!(host_dir(&pv(json!({"hostPath": {"path": missing, "type": "Directory"}}))).is_err());
        assert!(host_dir(&pv(json!({"nfs": {"server": "s", "path": "/"}}))).is_err());

        let l = tmp.path().join("pods/u/volumes/data");
        link(&made, &l).unwrap();
        link(&made, &l).unwrap();
        assert_eq!(
            std::fs::canonicalize(&l).unwrap(),
            std::fs::canonicalize(&made).unwrap()
        );
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        link(&other, &l).unwrap();
        assert_eq!(std::fs::read_link(&l).unwrap(), other);
    }
}
