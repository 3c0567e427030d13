//! Translation of a Pod spec into CRI configurations: the sandbox config, the
//! container config (command/args with `$(VAR)` expansion, environment, mounts,
//! resources, security context), following the upstream kubelet's
//! `kuberuntime_sandbox.go` / `kuberuntime_container.go`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;

use crate::KubeletConfig;
use crate::pods::{LABEL_CONTAINER, LABEL_NAME, LABEL_NAMESPACE, LABEL_UID};

/// Expands `$(VAR)` references (upstream `expansion.Expand`): `$$` escapes, unknown
/// references stay as written.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&format!("$({name})")),
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `fieldRef` path for this pod (`None` for unsupported paths).
pub fn field_ref(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref().and_then(|l| l.get(key).cloned()).unwrap_or_default()
    };
    let key_of = |p: &str| {
        p.split_once("['")
            .and_then(|(_, k)| k.strip_suffix("']"))
            .map(String::from)
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        p if p.starts_with("metadata.labels[") => from_map(&m.labels, &key_of(p)?),
        p if p.starts_with("metadata.annotations[") => from_map(&m.annotations, &key_of(p)?),
        _ => return None,
    })
}

/// `ROOT/pods/<namespace>_<name>_<uid>`: where the runtime writes the pod's logs.
pub fn pod_log_dir(root_dir: &Path, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    root_dir.join("pods").join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    ))
}

/// Linux namespaces of the pod's sandbox and containers: the node's network, PID
/// and IPC namespaces for `hostNetwork`/`hostPID`/`hostIPC`, otherwise the pod's
/// (PID per container, as upstream without `shareProcessNamespace`).
fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    let spec = pod.spec.as_ref();
    let host = |flag: Option<bool>, otherwise: cri::NamespaceMode| {
        if flag == Some(true) {
            cri::NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    cri::NamespaceOption {
        network: host(spec.and_then(|s| s.host_network), cri::NamespaceMode::Pod),
        pid: host(spec.and_then(|s| s.host_pid), cri::NamespaceMode::Container),
        ipc: host(spec.and_then(|s| s.host_ipc), cri::NamespaceMode::Pod),
        ..Default::default()
    }
}

/// The CRI sandbox config of a pod: metadata, hostname, log directory, DNS (from
/// `dnsPolicy`), host ports, labels and Linux namespaces.
pub fn sandbox_config(cfg: &KubeletConfig, uid: &str, pod: &Pod, attempt: u32) -> cri::PodSandboxConfig {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = m.labels.clone().unwrap_or_default().into_iter().collect();
    labels.insert(LABEL_UID.into(), uid.to_string());
    labels.insert(LABEL_NAME.into(), m.name.clone().unwrap_or_default());
    labels.insert(LABEL_NAMESPACE.into(), m.namespace.clone().unwrap_or_default());
    let host_network = spec.host_network == Some(true);
    let ns = m.namespace.clone().unwrap_or_default();
    let domain = &cfg.cluster_domain;
    let dns = match spec.dns_policy.as_deref() {
        Some("Default") => None,
        Some("ClusterFirstWithHostNet") | Some("ClusterFirst") | None
            if !host_network || spec.dns_policy.as_deref() == Some("ClusterFirstWithHostNet") =>
        {
            Some(cri::DnsConfig {
                servers: cfg.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                searches: vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.clone()],
                options: vec!["ndots:5".into()],
            })
        }
        Some("None") => spec.dns_config.as_ref().map(|c| cri::DnsConfig {
            servers: c.nameservers.clone().unwrap_or_default(),
            searches: c.searches.clone().unwrap_or_default(),
            options: c
                .options
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|o| match &o.value {
                    Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                    None => o.name.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        _ => None,
    };
    let mut port_mappings = Vec::new();
    for c in &spec.containers {
        for p in c.ports.as_deref().unwrap_or_default() {
            if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                let protocol = match p.protocol.as_deref() {
                    Some("UDP") => cri::Protocol::Udp,
                    Some("SCTP") => cri::Protocol::Sctp,
                    _ => cri::Protocol::Tcp,
                };
                port_mappings.push(cri::PortMapping {
                    protocol: protocol as i32,
                    container_port: p.container_port,
                    host_port: hp,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: uid.to_string(),
            namespace: ns.clone(),
            attempt,
        }),
        hostname: if host_network {
            String::new()
        } else {
            spec.hostname
                .clone()
                .unwrap_or_else(|| m.name.clone().unwrap_or_default())
        },
        log_directory: pod_log_dir(&cfg.root_dir, pod).display().to_string(),
        dns_config: dns,
        port_mappings,
        labels,
        annotations: m.annotations.clone().unwrap_or_default().into_iter().collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container environment: the Service variables ([`crate::service_env`]), then
/// `envFrom`, then `env` (values with `$(VAR)` expansion, fieldRef, configMapKeyRef,
/// secretKeyRef), later sources overriding earlier ones as upstream. `Err` is a
/// CreateContainerConfigError message.
pub async fn env(
    client: &kube::Client,
    node_ip: IpAddr,
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
) -> Result<BTreeMap<String, String>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = crate::service_env::for_pod(client, pod).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for from in c.env_from.as_deref().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match cms.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(cm) => env.extend(
                    cm.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v)),
                ),
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(s) => env.extend(
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned())),
                ),
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.as_deref().unwrap_or_default() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path, pod_ip, &node_ip.to_string())
                    .ok_or_else(|| format!("unsupported fieldRef {}", f.field_path))?
            } else if let Some(r) = &from.config_map_key_ref {
                match cms
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned()))
                {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match secrets
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|s| s.data.and_then(|d| d.get(&r.key).cloned()))
                {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)),
                }
            } else {
                return Err(format!("env {}: resourceFieldRef is not supported yet", e.name));
            }
        } else {
            String::new()
        };
        env.insert(e.name.clone(), value);
    }
    Ok(env)
}

/// Bind mounts for the container's volumeMounts (emptyDir, hostPath, API-backed
/// and persistentVolumeClaim volumes).
pub fn mounts(root_dir: &Path, uid: &str, pod: &Pod, c: &Container) -> Result<Vec<cri::Mount>, String> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for vm in c.volume_mounts.as_deref().unwrap_or_default() {
        let v = volumes
            .iter()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| format!("volume {} not found", vm.name))?;
        let host_path = if v.empty_dir.is_some() {
            let dir = root_dir.join("pods").join(uid).join("volumes").join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            dir.display().to_string()
        } else if let Some(hp) = &v.host_path {
            if hp.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&hp.path).map_err(|e| e.to_string())?;
            }
            hp.path.clone()
        } else if crate::volumes::is_api_backed(v) {
            crate::volumes::volume_dir(root_dir, uid, &v.name).display().to_string()
        } else if v.persistent_volume_claim.is_some() {
            // Set up by crate::claims before the sandbox: a link to the volume.
            let link = crate::volumes::volume_dir(root_dir, uid, &v.name);
            std::fs::canonicalize(&link)
                .map_err(|e| format!("volume {}: {}: {e}", v.name, link.display()))?
                .display()
                .to_string()
        } else {
            return Err(format!(
                "volume {}: only emptyDir, hostPath, persistentVolumeClaim, configMap, secret, downwardAPI and projected volumes are supported yet",
                v.name
            ));
        };
        let host_path = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = PathBuf::from(&host_path).join(sub);
                let resolved = if crate::volumes::is_api_backed(v) {
                    // A file of the volume, reached through its `..data` link: the
                    // container gets the file itself, as upstream (no updates).
                    std::fs::canonicalize(&p).map_err(|e| format!("subPath {sub:?} of volume {}: {e}", v.name))?
                } else {
                    std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                    p
                };
                resolved.display().to_string()
            }
            None => host_path,
        };
        out.push(cri::Mount {
            container_path: vm.mount_path.clone(),
            host_path,
            readonly: vm.read_only == Some(true)
                || v.persistent_volume_claim.as_ref().and_then(|c| c.read_only) == Some(true)
                || v.config_map.is_some()
                || v.secret.is_some()
                || v.projected.is_some()
                || v.downward_api.is_some(),
            ..Default::default()
        });
    }
    Ok(out)
}

/// The CRI container config for attempt `attempt` of container `c`.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    uid: &str,
    attempt: u32,
    env: &BTreeMap<String, String>,
    mounts: Vec<cri::Mount>,
) -> cri::ContainerConfig {
    let res = c.resources.clone().unwrap_or_default();
    let milli = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
        m.as_ref()
            .and_then(|m| m.get(k))
            .and_then(|q| skiff_api::quantity::parse_milli(&q.0).ok())
    };
    let cpu_request = milli(&res.requests, "cpu")
        .or_else(|| milli(&res.limits, "cpu"))
        .unwrap_or(0);
    let cpu_limit = milli(&res.limits, "cpu").unwrap_or(0);
    let mem_limit = milli(&res.limits, "memory").map(|m| m / 1000).unwrap_or(0);
    let mut labels = HashMap::from([
        (LABEL_UID.to_string(), uid.to_string()),
        (LABEL_NAME.to_string(), pod.metadata.name.clone().unwrap_or_default()),
        (
            LABEL_NAMESPACE.to_string(),
            pod.metadata.namespace.clone().unwrap_or_default(),
        ),
        (LABEL_CONTAINER.to_string(), c.name.clone()),
    ]);
    labels.retain(|_, v| !v.is_empty());
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let run_as_user = sc.run_as_user.or(psc.run_as_user);
    let run_as_group = sc.run_as_group.or(psc.run_as_group);
    let caps = sc.capabilities.clone().unwrap_or_default();

    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c
            .command
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|s| expand(s, env))
            .collect(),
        args: c
            .args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|s| expand(s, env))
            .collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts,
        labels,
        annotations: HashMap::from([("io.kubernetes.container.restartCount".to_string(), attempt.to_string())]),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin == Some(true),
        tty: c.tty == Some(true),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_shares: if cpu_request > 0 {
                    (cpu_request * 1024 / 1000).max(2) as i64
                } else {
                    2
                },
                cpu_period: if cpu_limit > 0 { 100_000 } else { 0 },
                cpu_quota: if cpu_limit > 0 {
                    (cpu_limit * 100).max(1000) as i64
                } else {
                    0
                },
                memory_limit_in_bytes: mem_limit as i64,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                privileged: sc.privileged == Some(true),
                run_as_user: run_as_user.map(|u| cri::Int64Value { value: u }),
                run_as_group: run_as_group.map(|g| cri::Int64Value { value: g }),
                readonly_rootfs: sc.read_only_root_filesystem == Some(true),
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                capabilities: Some(cri::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    ..Default::default()
                }),
                namespace_options: Some(namespace_options(pod)),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dependent_variable_expansion() {
        let env = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }

    #[test]
    fn field_refs() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n", "labels": {"app": "web"}}, "spec": {"containers": [], "nodeName": "node1"}})).unwrap();
        assert_eq!(field_ref(&pod, "metadata.name", "", "").as_deref(), Some("p"));
        assert_eq!(
            field_ref(&pod, "metadata.labels['app']", "", "").as_deref(),
            Some("web")
        );
        assert_eq!(
            field_ref(&pod, "status.podIP", "10.42.0.2", "").as_deref(),
            Some("10.42.0.2")
        );
        assert_eq!(field_ref(&pod, "spec.nodeName", "", "").as_deref(), Some("node1"));
        assert_eq!(field_ref(&pod, "spec.bogus", "", ""), None);
    }

    #[test]
    fn container_config_maps_command_resources_and_labels() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c"], "args": ["echo $(GREETING)"],
                "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}]}}))
        .unwrap();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
        let cfg = container_config(&pod, c, "u1", 2, &env, vec![]);
        assert_eq!(cfg.args, vec!["echo hi"]);
        assert_eq!(cfg.metadata.as_ref().unwrap().attempt, 2);
        assert_eq!(cfg.log_path, "c/2.log");
        assert_eq!(cfg.labels.get(LABEL_UID).map(String::as_str), Some("u1"));
        let r = cfg.linux.unwrap().resources.unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period), (256, 50_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn host_namespaces_follow_the_pod_spec() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [], "hostNetwork": true}})).unwrap();
        let ns = namespace_options(&pod);
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, cri::NamespaceMode::Pod as i32);
        let ns = namespace_options(&Pod::default());
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
    }
}
