//! Volumes whose content comes from the API: configMap, secret, downwardAPI and
//! projected (of those three and serviceAccountToken). Their files are written
//! under `ROOT/pods/<uid>/volumes/<name>/` with the requested modes by the
//! [`crate::atomic_writer`] (readers never see a partial update), bind-mounted into
//! the containers, and rewritten periodically so updates to the source objects and
//! refreshed tokens reach running pods (upstream: within the kubelet sync period,
//! about a minute).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::api::Api;

use crate::pod_spec;
use crate::token::{self, TokenKey, TokenManager};

/// Files of one volume: relative path -> (content, mode).
pub type Files = crate::atomic_writer::Payload;

/// Directory of a volume of pod `uid`.
pub fn volume_dir(root_dir: &Path, uid: &str, name: &str) -> PathBuf {
    root_dir.join("pods").join(uid).join("volumes").join(name)
}

/// Whether the volume's content comes from the API (and so is written by this module).
pub fn is_api_backed(v: &Volume) -> bool {
    v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some()
}

/// Selects keys per `items` (all keys when empty), applying `defaultMode`/`mode`.
/// A missing key named in `items` is an error unless the source is optional.
pub fn select(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Files, String> {
    let mode = default_mode.unwrap_or(0o644) as u32;
    let mut out = Files::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), (v.clone(), mode));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        out.insert(
                            item.path.clone(),
                            (v.clone(), item.mode.map(|m| m as u32).unwrap_or(mode)),
                        );
                    }
                    None if optional => {}
                    None => return Err(format!("configmap/secret key {:?} not found", item.key)),
                }
            }
        }
    }
    Ok(out)
}

async fn config_map_data(
    api: &Api<ConfigMap>,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(cm) => {
            let mut d: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            d.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            Ok(Some(d))
        }
        None if optional => Ok(None),
        None => Err(format!("configmap \"{name}\" not found")),
    }
}

async fn secret_data(
    api: &Api<Secret>,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(s) => Ok(Some(
            s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
        )),
        None if optional => Ok(None),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

fn downward(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    host_ip: &str,
) -> Result<Files, String> {
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
    let mut out = Files::new();
    for item in items {
        let value = match &item.field_ref {
            Some(f) => match f.field_path.as_str() {
                "metadata.labels" | "metadata.annotations" => {
                    let map = if f.field_path == "metadata.labels" {
                        &pod.metadata.labels
                    } else {
                        &pod.metadata.annotations
                    };
                    map.clone()
                        .unwrap_or_default()
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{v}\"\n"))
                        .collect::<String>()
                }
                path => pod_spec::field_ref(pod, path, &pod_ip, host_ip)
                    .ok_or_else(|| format!("unsupported fieldRef {path}"))?,
            },
            None => {
                return Err(format!(
                    "downwardAPI item {}: resourceFieldRef is not supported yet",
                    item.path
                ));
            }
        };
        out.insert(
            item.path.clone(),
            (value.into_bytes(), item.mode.or(default_mode).unwrap_or(0o644) as u32),
        );
    }
    Ok(out)
}

/// Computes the files of an API-backed volume. A `serviceAccountToken` projection
/// yields a token for the pod's ServiceAccount bound to the pod, from `tokens`
/// (audience: the projection's, else the apiserver's; lifetime: its
/// `expirationSeconds`, default [`token::DEFAULT_EXPIRATION_SECONDS`]), as upstream's
/// projected volume plugin (`pkg/volume/projected`) does. Errors name the missing
/// object or the failed request.
pub async fn files(
    client: &kube::Client,
    tokens: &TokenManager,
    pod: &Pod,
    v: &Volume,
    host_ip: &str,
) -> Result<Files, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    if let Some(c) = &v.config_map {
        let optional = c.optional == Some(true);
        let data = config_map_data(&cms, &c.name, optional).await?.unwrap_or_default();
        return select(&data, c.items.as_deref(), c.default_mode, optional);
    }
    if let Some(s) = &v.secret {
        let optional = s.optional == Some(true);
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(&secrets, &name, optional).await?.unwrap_or_default();
        return select(&data, s.items.as_deref(), s.default_mode.or(Some(0o644)), optional);
    }
    if let Some(d) = &v.downward_api {
        return downward(pod, d.items.as_deref().unwrap_or_default(), d.default_mode, host_ip);
    }
    if let Some(p) = &v.projected {
        let mut out = Files::new();
        for src in p.sources.as_deref().unwrap_or_default() {
            if let Some(c) = &src.config_map {
                let optional = c.optional == Some(true);
                let data = config_map_data(&cms, &c.name, optional).await?.unwrap_or_default();
                out.extend(select(&data, c.items.as_deref(), p.default_mode, optional)?);
            } else if let Some(s) = &src.secret {
                let optional = s.optional == Some(true);
                let data = secret_data(&secrets, &s.name, optional).await?.unwrap_or_default();
                out.extend(select(&data, s.items.as_deref(), p.default_mode, optional)?);
            } else if let Some(d) = &src.downward_api {
                out.extend(downward(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    p.default_mode,
                    host_ip,
                )?);
            } else if let Some(t) = &src.service_account_token {
                let key = TokenKey {
                    namespace: ns.clone(),
                    service_account: pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| "default".into()),
                    audiences: t.audience.clone().filter(|a| !a.is_empty()).into_iter().collect(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(token::DEFAULT_EXPIRATION_SECONDS),
                    pod_name: pod.metadata.name.clone().unwrap_or_default(),
                    pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                };
                let jwt = tokens.token(&key).await.map_err(|e| e.to_string())?;
                let mode = p.default_mode.unwrap_or(0o644) as u32;
                out.insert(t.path.clone(), (jwt.into_bytes(), mode));
            } else {
                return Err(format!(
                    "volume {}: only configMap, secret, downwardAPI and serviceAccountToken projections are supported yet",
                    v.name
                ));
            }
        }
        return Ok(out);
    }
    Err(format!("volume {} is not backed by the API", v.name))
}

/// Makes `dir` hold exactly `files`, atomically ([`crate::atomic_writer::write`]):
/// files no longer part of the volume disappear, and a reader sees either the
/// previous or the new content of the whole volume.
pub fn write(dir: &Path, files: &Files) -> Result<(), String> {
    crate::atomic_writer::write(dir, files)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Materializes every API-backed volume of the pod.
pub async fn materialize(
    client: &kube::Client,
    tokens: &TokenManager,
    root_dir: &Path,
    uid: &str,
    pod: &Pod,
    host_ip: &str,
) -> Result<(), String> {
    for v in pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default() {
        if is_api_backed(v) {
            let f = files(client, tokens, pod, v, host_ip).await?;
            write(&volume_dir(root_dir, uid, &v.name), &f)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn items_modes_and_stale_files() {
        let data = BTreeMap::from([("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())]);
        let all = select(&data, None, Some(0o400), false).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["a"].1, 0o400);
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "sub/b.txt".into(),
            mode: Some(0o600),
        }];
        let some = select(&data, Some(&items), None, false).unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), vec!["sub/b.txt"]);
        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "z".into(),
            mode: None,
        }];
        assert!(select(&data, Some(&missing), None, false).is_err());
        assert!(select(&data, Some(&missing), None, true).unwrap().is_empty());

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &all).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"1");
        write(dir.path(), &some).unwrap();
        assert!(
            !dir.path().join("a").exists(),
            "keys no longer in the volume are removed"
        );
        assert_eq!(std::fs::read(dir.path().join("sub/b.txt")).unwrap(), b"2");
        let mode = std::fs::metadata(dir.path().join("sub/b.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write(dir.path(), &Files::from([("../x".to_string(), (vec![], 0o644))])).is_err());
    }
}
