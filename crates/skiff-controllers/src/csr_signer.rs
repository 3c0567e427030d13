//! CSR signer (upstream pkg/controller/certificates/signer, kube-controller-manager's
//! `--cluster-signing-cert-file`/`--cluster-signing-key-file`): issues certificates
//! from the cluster CA for approved requests of the signers
//! [`KUBELET_CLIENT_SIGNER`](crate::csr_approver::KUBELET_CLIENT_SIGNER),
//! [`KUBE_APISERVER_CLIENT_SIGNER`] and
//! [`KUBELET_SERVING_SIGNER`](crate::csr_approver::KUBELET_SERVING_SIGNER) (server auth,
//! with the request's DNS and IP names).
//!
//! A request that is `Approved`, not `Denied` or `Failed`, and has no certificate yet
//! is checked against its signer's rules ([`check`]); a valid one gets
//! `status.certificate` (PEM), valid from five minutes ago (clock skew, as upstream
//! backdates) until `spec.expirationSeconds` from now (at least 600 s) capped at
//! [`ClusterSigning::max_duration`] and the CA's own expiry; an invalid one gets a
//! `Failed` condition with reason `SignerValidationFailure`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::csr_approver::{
    KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER, has_condition, node_client_request, node_serving_request,
    parse_request,
};

/// The signer of client certificates for the apiserver.
pub const KUBE_APISERVER_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The shortest lifetime a request may ask for (`spec.expirationSeconds`), seconds.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// How far back certificates' validity starts, for clock skew between machines.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The CA the signer issues from (upstream `--cluster-signing-*`).
#[derive(Clone)]
pub struct ClusterSigning {
    /// The CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The CA private key, PEM (PKCS#8).
    pub ca_key_pem: String,
    /// The longest lifetime of an issued certificate (upstream
    /// `--cluster-signing-duration`, default one year).
    pub max_duration: Duration,
}

impl std::fmt::Debug for ClusterSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSigning")
            .field("max_duration", &self.max_duration)
            .finish_non_exhaustive()
    }
}

impl ClusterSigning {
    /// A signer of `ca_cert_pem`/`ca_key_pem` issuing certificates of at most a year.
    pub fn new(ca_cert_pem: String, ca_key_pem: String) -> Self {
        Self {
            ca_cert_pem,
            ca_key_pem,
            max_duration: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Why a request cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request breaks its signer's rules (the CSR gets a `Failed` condition).
    #[error("{0}")]
    Invalid(String),
    /// The CA or the request could not be used by the certificate library.
    #[error("signing failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Whether this signer handles `signer_name`.
pub fn handles(signer_name: &str) -> bool {
    [
        KUBELET_CLIENT_SIGNER,
        KUBE_APISERVER_CLIENT_SIGNER,
        KUBELET_SERVING_SIGNER,
    ]
    .contains(&signer_name)
}

/// Checks a request against its signer's rules: kubelet client requests must be node
/// client requests ([`node_client_request`]); apiserver client requests must have a
/// subject and use only `client auth`, `digital signature` and `key encipherment`,
/// including `client auth` (upstream's `kube-apiserver-client` signer rules).
pub fn check(csr: &CertificateSigningRequest) -> Result<(), SignError> {
    let usages = csr.spec.usages.clone().unwrap_or_default();
    match csr.spec.signer_name.as_str() {
        KUBELET_CLIENT_SIGNER => node_client_request(&csr.spec.request.0, &usages)
            .map(|_| ())
            .map_err(|e| SignError::Invalid(e.to_string())),
        KUBELET_SERVING_SIGNER => node_serving_request(&csr.spec.request.0, &usages)
            .map(|_| ())
            .map_err(|e| SignError::Invalid(e.to_string())),
        KUBE_APISERVER_CLIENT_SIGNER => {
            let r = parse_request(&csr.spec.request.0).map_err(|e| SignError::Invalid(e.to_string()))?;
            if r.common_name.is_empty() {
                return Err(SignError::Invalid("subject common name is required".into()));
            }
            let allowed = ["client auth", "digital signature", "key encipherment"];
            if !usages.iter().any(|u| u == "client auth") || usages.iter().any(|u| !allowed.contains(&u.as_str())) {
                return Err(SignError::Invalid(format!(
                    "usages must include \"client auth\" and may add only \"digital signature\" and \"key encipherment\", got {usages:?}"
                )));
            }
            Ok(())
        }
        other => Err(SignError::Invalid(format!("signer {other:?} is not handled here"))),
    }
}

/// Issues the certificate for `csr` (already checked with [`check`]) at `now`: PEM.
pub fn sign(
    csr: &CertificateSigningRequest,
    signing: &ClusterSigning,
    now: jiff::Timestamp,
) -> Result<String, SignError> {
    let pem = std::str::from_utf8(&csr.spec.request.0).map_err(|_| SignError::Invalid("request is not PEM".into()))?;
    let mut req = rcgen::CertificateSigningRequestParams::from_pem(pem)?;
    let ca_key = rcgen::KeyPair::from_pem(&signing.ca_key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&signing.ca_cert_pem, ca_key)?;
    let requested = csr
        .spec
        .expiration_seconds
        .map(|s| i64::from(s).max(MIN_EXPIRATION_SECONDS) as u64)
        .map(Duration::from_secs)
        .unwrap_or(signing.max_duration);
    let lifetime = requested.min(signing.max_duration);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs = u64::try_from(now.as_second()).unwrap_or(0);
    let mut end = secs + lifetime.as_secs();
    if let Some(ca_end) = ca_not_after(&signing.ca_cert_pem) {
        end = end.min(ca_end);
    }
    let p = &mut req.params;
    p.not_before = epoch + (Duration::from_secs(secs) - BACKDATE);
    p.not_after = epoch + Duration::from_secs(end);
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    if csr
        .spec
        .usages
        .as_ref()
        .is_some_and(|u| u.iter().any(|u| u == "key encipherment"))
    {
        p.key_usages.push(rcgen::KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = if csr.spec.signer_name == KUBELET_SERVING_SIGNER {
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]
    } else {
        // Client certificates carry no names beyond their subject.
        p.subject_alt_names.clear();
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
    };
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(random_serial());
    Ok(req.signed_by(&issuer)?.pem())
}

fn random_serial() -> rcgen::SerialNumber {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).expect("system RNG");
    b[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&b)
}

/// The CA certificate's notAfter, seconds since the Unix epoch.
fn ca_not_after(ca_pem: &str) -> Option<u64> {
    let (_, block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
}

struct Ctx {
    client: kube::Client,
    signing: ClusterSigning,
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !handles(&csr.spec.signer_name)
        || !has_condition(&csr, "Approved")
        || has_condition(&csr, "Denied")
        || has_condition(&csr, "Failed")
        || csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some()
    {
        return Ok(Action::await_change());
    }
    let name = csr.metadata.name.clone().unwrap_or_default();
    let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
    let patch = match check(&csr).and_then(|()| sign(&csr, &ctx.signing, jiff::Timestamp::now())) {
        Ok(pem) => {
            tracing::info!(csr = %name, signer = %csr.spec.signer_name, "issued certificate");
            json!({"status": {"certificate": k8s_openapi::ByteString(pem.into_bytes())}})
        }
        Err(SignError::Invalid(msg)) => {
            tracing::info!(csr = %name, error = %msg, "refusing to sign");
            let mut conditions = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
            conditions.push(CertificateSigningRequestCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("SignerValidationFailure".into()),
                message: Some(msg),
                last_update_time: Some(now.clone()),
                last_transition_time: Some(now),
            });
            json!({"status": {"conditions": conditions}})
        }
        Err(e) => return Err(Error::Invalid(format!("CSR {name}: {e}"))),
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_csr: Arc<CertificateSigningRequest>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "CSR signing failed");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the signer until `shutdown`.
pub async fn run(client: kube::Client, signing: ClusterSigning, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        signing,
    });
    Controller::new(
        Api::<CertificateSigningRequest>::all(client),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(async move { shutdown.cancelled().await })
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr_approver::tests::{csr, request};
    use x509_parser::prelude::FromDer;

    fn ca() -> ClusterSigning {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "skiff-ca");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        ClusterSigning::new(cert.pem(), key.serialize_pem())
    }

    const CLIENT: &[&str] = &["digital signature", "client auth"];

    #[test]
    fn approved_node_requests_are_signed_by_the_ca_for_the_requested_time() {
        let signing = ca();
        let mut c = csr(
            KUBELET_CLIENT_SIGNER,
            "system:bootstrap:abcdef",
            request("system:node:n1", &["system:nodes"], &[]),
            CLIENT,
        );
        c.spec.expiration_seconds = Some(3600);
        check(&c).unwrap();
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let pem = sign(&c, &signing, now).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&block.contents).unwrap();
        let subject = cert.subject();
        assert_eq!(
            subject.iter_common_name().next().unwrap().as_str().unwrap(),
            "system:node:n1"
        );
        assert_eq!(
            subject.iter_organization().next().unwrap().as_str().unwrap(),
            "system:nodes"
        );
        let v = cert.validity();
        assert_eq!(v.not_before.timestamp(), now.as_second() - 300);
        assert_eq!(v.not_after.timestamp(), now.as_second() + 3600);
        assert!(!cert.is_ca());
        // It chains to the CA.
        let (_, ca_block) = x509_parser::pem::parse_x509_pem(signing.ca_cert_pem.as_bytes()).unwrap();
        let (_, ca_cert) = x509_parser::certificate::X509Certificate::from_der(&ca_block.contents).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        // Too short a request is raised to 600 s; none means the signer's maximum.
        c.spec.expiration_seconds = Some(60);
        let short = sign(&c, &signing, now).unwrap();
        let (_, b) = x509_parser::pem::parse_x509_pem(short.as_bytes()).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&b.contents).unwrap();
        assert_eq!(cert.validity().not_after.timestamp(), now.as_second() + 600);
        c.spec.expiration_seconds = None;
        let long = sign(&c, &signing, now).unwrap();
        let (_, b) = x509_parser::pem::parse_x509_pem(long.as_bytes()).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&b.contents).unwrap();
        assert_eq!(cert.validity().not_after.timestamp(), now.as_second() + 365 * 24 * 3600);
    }

    #[test]
    fn requests_breaking_the_signer_rules_fail() {
        let node_as_admin = csr(
            KUBELET_CLIENT_SIGNER,
            "u",
            request("system:admin", &["system:masters"], &[]),
            CLIENT,
        );
        assert!(matches!(check(&node_as_admin), Err(SignError::Invalid(_))));
        let client = csr(
            KUBE_APISERVER_CLIENT_SIGNER,
            "u",
            request("jane", &["dev"], &[]),
            CLIENT,
        );
        check(&client).unwrap();
        let server = csr(
            KUBE_APISERVER_CLIENT_SIGNER,
            "u",
            request("jane", &[], &[]),
            &["server auth"],
        );
        assert!(matches!(check(&server), Err(SignError::Invalid(_))));
        let other = csr("example.com/mine", "u", request("jane", &[], &[]), CLIENT);
        assert!(!handles(&other.spec.signer_name));
        let serving = csr(
            KUBELET_SERVING_SIGNER,
            "system:node:n1",
            request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.5"]),
            &["digital signature", "server auth"],
        );
        check(&serving).unwrap();
        let pem = sign(&serving, &ca(), jiff::Timestamp::now()).unwrap();
        let (_, b) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&b.contents).unwrap();
        let names = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .len();
        assert_eq!(names, 2);
        assert!(cert.extended_key_usage().unwrap().unwrap().value.server_auth);
    }
}
