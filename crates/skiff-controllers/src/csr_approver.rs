//! CSR approver (upstream pkg/controller/certificates/approver, "csrapproving"):
//! auto-approves kubelet client certificate requests whose requester is authorized.
//!
//! A pending request for signer [`KUBELET_CLIENT_SIGNER`] that is a valid node client
//! request ([`node_client_request`]: CN `system:node:<name>`, O exactly
//! `system:nodes`, no subject alternative names, usages `client auth` and
//! `digital signature`, optionally `key encipherment`) is checked with a
//! SubjectAccessReview for its requester (`spec.username`, `spec.groups`): `create`
//! on `certificatesigningrequests/selfnodeclient` when the CN is the requester itself
//! (a node renewing its certificate), else on `certificatesigningrequests/nodeclient`
//! (a bootstrap token). If allowed, an `Approved` condition with reason
//! `AutoApproved` is added through the `/approval` subresource; otherwise the request
//! is left pending for an administrator (`kubectl certificate approve|deny`), as
//! upstream does.
//!
//! Skiff also approves a node's request for its own kubelet serving certificate
//! (signer [`KUBELET_SERVING_SIGNER`], [`node_serving_request`]) when the requester
//! is that node (`system:node:<name>` in `system:nodes`), so that the apiserver can
//! verify a joined node's kubelet (logs, exec) against the cluster CA. Upstream
//! leaves these for an administrator or an external approver (k3s, like Skiff,
//! issues them without one); the node can only name itself.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::FromDer;

use crate::Error;

/// The signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The user name prefix of nodes.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group of nodes.
pub const NODES_GROUP: &str = "system:nodes";

/// Why a request is not a node client certificate request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `spec.request` is not a PEM certification request.
    #[error("the request is not a PEM certificate request: {0}")]
    Parse(String),
    /// The subject's organization is not exactly `system:nodes`.
    #[error("subject organization must be exactly [\"system:nodes\"], got {0:?}")]
    Organization(Vec<String>),
    /// The subject's common name does not start with `system:node:`.
    #[error("subject common name must start with \"system:node:\", got {0:?}")]
    CommonName(String),
    /// The request names DNS, email, IP or URI subject alternative names.
    #[error("a node client certificate may not have subject alternative names")]
    SubjectAltNames,
    /// A serving request names no DNS or IP subject alternative name, or an email
    /// or URI one.
    #[error("a kubelet serving certificate needs DNS or IP subject alternative names and no others")]
    ServingNames,
    /// The usages are not those of a client certificate.
    #[error(
        "usages must include \"client auth\" and \"digital signature\" and may add only \"key encipherment\", got {0:?}"
    )]
    Usages(Vec<String>),
}

/// The subject and SAN presence of a PEM certification request (signature checked).
pub struct ParsedRequest {
    /// Subject common name.
    pub common_name: String,
    /// Subject organizations.
    pub organizations: Vec<String>,
    /// Whether any subject alternative name is requested.
    pub has_sans: bool,
    /// Whether every requested subject alternative name is a DNS name or an IP address.
    pub only_dns_and_ip_sans: bool,
}

/// Parses a PEM `CERTIFICATE REQUEST`, verifying its self-signature.
pub fn parse_request(pem: &[u8]) -> Result<ParsedRequest, RequestError> {
    let err = |e: &dyn std::fmt::Display| RequestError::Parse(e.to_string());
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| err(&e))?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents).map_err(|e| err(&e))?;
    csr.verify_signature().map_err(|e| err(&e))?;
    let subject = &csr.certification_request_info.subject;
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(String::from)
        .collect();
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let names: Vec<&GeneralName> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            ParsedExtension::SubjectAlternativeName(s) => Some(s.general_names.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    Ok(ParsedRequest {
        common_name,
        organizations,
        has_sans: !names.is_empty(),
        only_dns_and_ip_sans: names
            .iter()
            .all(|n| matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_))),
    })
}

/// Checks that `request` (PEM) with `usages` is a node client certificate request
/// (upstream `ValidateKubeletClientCSR`) and returns its node user name
/// (`system:node:<name>`).
pub fn node_client_request(request: &[u8], usages: &[String]) -> Result<String, RequestError> {
    let r = parse_request(request)?;
    if r.organizations != [NODES_GROUP] {
        return Err(RequestError::Organization(r.organizations));
    }
    if !r.common_name.starts_with(NODE_USER_PREFIX) || r.common_name.len() == NODE_USER_PREFIX.len() {
        return Err(RequestError::CommonName(r.common_name));
    }
    if r.has_sans {
        return Err(RequestError::SubjectAltNames);
    }
    let has = |u: &str| usages.iter().any(|x| x == u);
    let allowed = ["client auth", "digital signature", "key encipherment"];
    if !has("client auth") || !has("digital signature") || usages.iter().any(|u| !allowed.contains(&u.as_str())) {
        return Err(RequestError::Usages(usages.to_vec()));
    }
    Ok(r.common_name)
}

/// Checks that `request` (PEM) with `usages` is a kubelet serving certificate
/// request (upstream `ValidateKubeletServingCSR`: O exactly `system:nodes`, CN
/// `system:node:<name>`, DNS or IP names only and at least one, usages `server auth`
/// and `digital signature`, optionally `key encipherment`) and returns its CN.
pub fn node_serving_request(request: &[u8], usages: &[String]) -> Result<String, RequestError> {
    let r = parse_request(request)?;
    if r.organizations != [NODES_GROUP] {
        return Err(RequestError::Organization(r.organizations));
    }
    if !r.common_name.starts_with(NODE_USER_PREFIX) || r.common_name.len() == NODE_USER_PREFIX.len() {
        return Err(RequestError::CommonName(r.common_name));
    }
    if !r.has_sans || !r.only_dns_and_ip_sans {
        return Err(RequestError::ServingNames);
    }
    let has = |u: &str| usages.iter().any(|x| x == u);
    let allowed = ["server auth", "digital signature", "key encipherment"];
    if !has("server auth") || !has("digital signature") || usages.iter().any(|u| !allowed.contains(&u.as_str())) {
        return Err(RequestError::Usages(usages.to_vec()));
    }
    Ok(r.common_name)
}

/// Whether `csr` is a node asking for its own kubelet serving certificate: signer
/// [`KUBELET_SERVING_SIGNER`], pending, a valid serving request whose CN is the
/// requester, who is in `system:nodes`.
pub fn own_serving_request(csr: &CertificateSigningRequest) -> bool {
    if csr.spec.signer_name != KUBELET_SERVING_SIGNER
        || has_condition(csr, "Approved")
        || has_condition(csr, "Denied")
        || csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some()
    {
        return false;
    }
    let in_nodes = csr.spec.groups.iter().flatten().any(|g| g == NODES_GROUP);
    let usages = csr.spec.usages.clone().unwrap_or_default();
    match node_serving_request(&csr.spec.request.0, &usages) {
        Ok(cn) => in_nodes && csr.spec.username.as_deref() == Some(cn.as_str()),
        Err(e) => {
            tracing::debug!(csr = ?csr.metadata.name, error = %e, "not a kubelet serving certificate request");
            false
        }
    }
}

/// Whether a condition of type `t` is present (upstream treats present as set).
pub fn has_condition(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t))
}

/// The subresource whose `create` permission the requester needs for `csr` to be
/// auto-approved: `Some("selfnodeclient")` or `Some("nodeclient")`; `None` when the
/// request is not for the approver (another signer, already decided or issued, or
/// not a valid node client request).
pub fn permission_needed(csr: &CertificateSigningRequest) -> Option<&'static str> {
    if csr.spec.signer_name != KUBELET_CLIENT_SIGNER
        || has_condition(csr, "Approved")
        || has_condition(csr, "Denied")
        || csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some()
    {
        return None;
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    match node_client_request(&csr.spec.request.0, &usages) {
        Ok(cn) if csr.spec.username.as_deref() == Some(cn.as_str()) => Some("selfnodeclient"),
        Ok(_) => Some("nodeclient"),
        Err(e) => {
            tracing::debug!(csr = ?csr.metadata.name, error = %e, "not a node client certificate request");
            None
        }
    }
}

async fn authorized(client: &kube::Client, csr: &CertificateSigningRequest, sub: &str) -> Result<bool, Error> {
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            groups: csr.spec.groups.clone(),
            uid: csr.spec.uid.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(sub.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await?;
    Ok(out.status.is_some_and(|s| s.allowed))
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let message = if own_serving_request(&csr) {
        "Auto approving the kubelet serving certificate of the requesting node."
    } else {
        let Some(sub) = permission_needed(&csr) else {
            return Ok(Action::await_change());
        };
        if !authorized(&client, &csr, sub).await? {
            tracing::info!(csr = %name, user = ?csr.spec.username, permission = sub, "not auto-approving: the requester lacks the permission");
            return Ok(Action::await_change());
        }
        "Auto approving kubelet client certificate after SubjectAccessReview."
    };
    let mut conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    conditions.push(k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("AutoApproved".into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
    let patch = json!({"status": {"conditions": conditions}});
    Api::<CertificateSigningRequest>::all((*client).clone())
        .patch_subresource("approval", &name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(csr = %name, user = ?csr.spec.username, signer = %csr.spec.signer_name, "approved certificate request");
    Ok(Action::await_change())
}

fn error_policy(_csr: Arc<CertificateSigningRequest>, e: &Error, _ctx: Arc<kube::Client>) -> Action {
    tracing::warn!(error = %e, "CSR approval failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the approver until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    Controller::new(
        Api::<CertificateSigningRequest>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(async move { shutdown.cancelled().await })
    .run(reconcile, error_policy, Arc::new(client))
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{CertificateSigningRequestSpec, CertificateSigningRequestStatus};

    /// A PEM CSR with the given CN, O and DNS SANs.
    pub(crate) fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(rcgen::DnType::OrganizationName, *o);
        }
        p.serialize_request(&key).unwrap().pem().unwrap().into_bytes()
    }

    pub(crate) fn csr(signer: &str, user: &str, request: Vec<u8>, usages: &[&str]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: kube::api::ObjectMeta {
                name: Some("csr-1".into()),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(request),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                username: Some(user.into()),
                ..Default::default()
            },
            status: None,
        }
    }

    const CLIENT: &[&str] = &["digital signature", "client auth"];

    #[test]
    fn node_client_requests_need_nodeclient_or_selfnodeclient() {
        let good = request("system:node:n1", &["system:nodes"], &[]);
        let boot = csr(KUBELET_CLIENT_SIGNER, "system:bootstrap:abcdef", good.clone(), CLIENT);
        assert_eq!(permission_needed(&boot), Some("nodeclient"));
        let renew = csr(KUBELET_CLIENT_SIGNER, "system:node:n1", good.clone(), CLIENT);
        assert_eq!(permission_needed(&renew), Some("selfnodeclient"));
        let with_key_enc = csr(
            KUBELET_CLIENT_SIGNER,
            "system:node:n1",
            good.clone(),
            &["key encipherment", "digital signature", "client auth"],
        );
        assert_eq!(permission_needed(&with_key_enc), Some("selfnodeclient"));
        // Other signers, decided or issued requests: not for the approver.
        assert_eq!(
            permission_needed(&csr("kubernetes.io/kube-apiserver-client", "u", good.clone(), CLIENT)),
            None
        );
        let mut decided = boot.clone();
        decided.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![
                k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
                    type_: "Denied".into(),
                    status: "True".into(),
                    ..Default::default()
                },
            ]),
            certificate: None,
        });
        assert_eq!(permission_needed(&decided), None);
    }

    #[test]
    fn nodes_get_their_own_serving_certificates_approved() {
        let serving: &[&str] = &["digital signature", "server auth"];
        let own = |user: &str, groups: &[&str], req: Vec<u8>, usages: &[&str]| {
            let mut c = csr(KUBELET_SERVING_SIGNER, user, req, usages);
            c.spec.groups = Some(groups.iter().map(|g| g.to_string()).collect());
            own_serving_request(&c)
        };
        let req = || request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.5"]);
        assert!(own("system:node:n1", &["system:nodes"], req(), serving));
        // Another node's certificate, a non-node, no names, client usages: no.
        assert!(!own("system:node:n2", &["system:nodes"], req(), serving));
        assert!(!own("system:node:n1", &["system:authenticated"], req(), serving));
        let nameless = request("system:node:n1", &["system:nodes"], &[]);
        assert!(!own("system:node:n1", &["system:nodes"], nameless, serving));
        assert!(!own("system:node:n1", &["system:nodes"], req(), CLIENT));
    }

    #[test]
    fn requests_that_are_not_node_client_certificates_are_left_alone() {
        let cases: Vec<(Vec<u8>, &[&str])> = vec![
            (request("system:node:n1", &["system:masters"], &[]), CLIENT),
            (request("system:admin", &["system:nodes"], &[]), CLIENT),
            (request("system:node:", &["system:nodes"], &[]), CLIENT),
            (
                request("system:node:n1", &["system:nodes"], &["n1.example.com"]),
                CLIENT,
            ),
            (
                request("system:node:n1", &["system:nodes"], &[]),
                &["digital signature", "server auth"],
            ),
            (request("system:node:n1", &["system:nodes"], &[]), &["client auth"]),
            (b"not a request".to_vec(), CLIENT),
        ];
        for (req, usages) in cases {
            let c = csr(KUBELET_CLIENT_SIGNER, "system:bootstrap:abcdef", req, usages);
            assert_eq!(permission_needed(&c), None, "{usages:?}");
        }
        let err = node_client_request(&request("system:node:n1", &["system:masters"], &[]), &[]).unwrap_err();
        assert!(matches!(err, RequestError::Organization(_)));
    }
}
