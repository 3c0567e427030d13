//! Service environment variables (upstream `pkg/kubelet/envvars` and the kubelet's
//! `getServiceEnvVarMap`): every container learns the address of the
//! `default/kubernetes` Service (`KUBERNETES_SERVICE_HOST`/`_PORT`, what in-cluster
//! clients use to find the apiserver) and, unless the pod sets
//! `enableServiceLinks: false`, of every Service with a ClusterIP in its namespace,
//! in the Docker-links style.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

/// Services of the `default` namespace whose variables every pod gets (upstream's
/// "master services").
pub const MASTER_SERVICES: &[&str] = &["kubernetes"];

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// The variables of `services` (upstream `FromServices`), in order: for each
/// Service with a ClusterIP, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (first
/// port), `<NAME>_SERVICE_PORT_<PORTNAME>` per named port, then `<NAME>_PORT`
/// (`tcp://ip:port` of the first port) and per port `<NAME>_PORT_<port>_<PROTO>`
/// with its `_PROTO`, `_PORT` and `_ADDR`. Names are upper-cased with `-` as `_`.
pub fn from_services(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let Some(ip) = cluster_ip(svc) else { continue };
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let prefix = env_name(svc.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{prefix}_SERVICE_PORT_{}", env_name(n)), p.port.to_string()));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("TCP");
            let host_port = if ip.contains(':') {
                format!("[{ip}]:{}", p.port)
            } else {
                format!("{ip}:{}", p.port)
            };
            let url = format!("{}://{host_port}", proto.to_lowercase());
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((format!("{port_prefix}_PROTO"), proto.to_lowercase()));
            out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
            out.push((format!("{port_prefix}_ADDR"), ip.to_string()));
            out.push((port_prefix, url));
        }
    }
    out
}

/// The Service variables of `pod`: the [`MASTER_SERVICES`] of `default`, and the
/// Services of the pod's namespace when `enableServiceLinks` is not false (a
/// namespace Service overrides a master one of the same name). Errors are API
/// failures, as text for the pod's CreateContainerConfigError.
pub async fn for_pod(client: &kube::Client, pod: &Pod) -> Result<BTreeMap<String, String>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
    let mut chosen: BTreeMap<String, Service> = BTreeMap::new();
    let defaults: Api<Service> = Api::namespaced(client.clone(), "default");
    for name in MASTER_SERVICES {
        if let Some(svc) = defaults.get_opt(name).await.map_err(|e| e.to_string())? {
            chosen.insert((*name).to_string(), svc);
        }
    }
    if links {
        let local: Api<Service> = Api::namespaced(client.clone(), &ns);
        for svc in local
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
        {
            if cluster_ip(&svc).is_some() {
                chosen.insert(svc.metadata.name.clone().unwrap_or_default(), svc);
            }
        }
    }
    let services: Vec<Service> = chosen.into_values().collect();
    Ok(from_services(&services).into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_follow_the_docker_links_style() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "my-db"},
            "spec": {"clusterIP": "10.43.0.9", "ports": [
                {"port": 5432, "name": "pg"},
                {"port": 53, "protocol": "UDP"}
            ]}
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "peers"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}
        }))
        .unwrap();
        let env: BTreeMap<String, String> = from_services(&[svc, headless]).into_iter().collect();
        let want = [
            ("MY_DB_SERVICE_HOST", "10.43.0.9"),
            ("MY_DB_SERVICE_PORT", "5432"),
            ("MY_DB_SERVICE_PORT_PG", "5432"),
            ("MY_DB_PORT", "tcp://10.43.0.9:5432"),
            ("MY_DB_PORT_5432_TCP", "tcp://10.43.0.9:5432"),
            ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
            ("MY_DB_PORT_5432_TCP_PORT", "5432"),
            ("MY_DB_PORT_5432_TCP_ADDR", "10.43.0.9"),
            ("MY_DB_PORT_53_UDP", "udp://10.43.0.9:53"),
            ("MY_DB_PORT_53_UDP_PROTO", "udp"),
            ("MY_DB_PORT_53_UDP_PORT", "53"),
            ("MY_DB_PORT_53_UDP_ADDR", "10.43.0.9"),
        ];
        let want: BTreeMap<String, String> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(env, want);
    }
}
