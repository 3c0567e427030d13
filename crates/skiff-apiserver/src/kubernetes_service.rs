//! The `default/kubernetes` Service through which pods reach the apiserver
//! (in-cluster clients use `KUBERNETES_SERVICE_HOST`/`https://kubernetes.default.svc`).
//!
//! As upstream's apiserver endpoint reconciler does, the apiserver makes sure at
//! start that the Service exists with the first address of the service range
//! and port `https` 443, and that its Endpoints and EndpointSlice point at the
//! advertised apiserver address.

use std::net::SocketAddr;

use serde_json::{Value, json};
use skiff_api::registry;

use crate::objects::{FieldValidation, Objects, WriteOptions};
use crate::status::ApiError;

const NAMESPACE: &str = "default";
const NAME: &str = "kubernetes";

fn options() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        field_validation: FieldValidation::Strict,
    }
}

/// Creates the Service if missing and points its Endpoints and EndpointSlice at
/// `advertise` (`ip:port`). A non-IP advertise address only skips the endpoints.
pub async fn reconcile(objects: &Objects, advertise: &str) -> Result<(), ApiError> {
    let services = registry::lookup("", "v1", "services").expect("services are served");
    match objects.get(services, Some(NAMESPACE), NAME).await {
        Ok(_) => {}
        Err(e) if e.code == 404 => {
            let ip = objects.service_network().kubernetes_service_ip().to_string();
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": NAME, "namespace": NAMESPACE,
                             "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": ip, "sessionAffinity": "None",
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
            });
            match objects.create(services, Some(NAMESPACE), svc, options()).await {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let Ok(addr) = advertise.parse::<SocketAddr>() else {
        tracing::warn!(
            advertise,
            "advertise address is not ip:port; default/kubernetes gets no endpoints"
        );
        return Ok(());
    };
    let ip = addr.ip().to_string();
    let port = addr.port();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
    });
    let address_type = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": NAME,
                                "endpointslice.kubernetes.io/managed-by": "skiff-apiserver"}},
        "addressType": address_type,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    });
    upsert(
        objects,
        registry::lookup("", "v1", "endpoints"),
        endpoints,
        &["subsets"],
    )
    .await?;
    upsert(
        objects,
        registry::lookup("discovery.k8s.io", "v1", "endpointslices"),
        slice,
        &["addressType", "endpoints", "ports"],
    )
    .await
}

/// Creates `desired`, or sets its `fields` on the existing object when they differ.
async fn upsert(
    objects: &Objects,
    res: Option<&'static registry::ResourceInfo>,
    desired: Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    let res = res.expect("resource is served");
    match objects.create(res, Some(NAMESPACE), desired.clone(), options()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => objects
            .mutate(res, Some(NAMESPACE), NAME, None, false, |cur| {
                let mut next = cur.clone();
                for f in fields {
                    next[*f] = desired[*f].clone();
                }
                Ok(next)
            })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}
