//! Authentication: who is making a request.
//!
//! Skiff authenticates clients by x509 certificates signed by the cluster CA, as
//! upstream's `--client-ca-file` authenticator does
//! (k8s.io/apiserver/pkg/authentication/request/x509): the user name is the subject's
//! Common Name and the groups are its Organization values. Every authenticated user
//! also belongs to `system:authenticated`. Requests without a client certificate are
//! the anonymous user `system:anonymous` in group `system:unauthenticated`
//! (upstream's `--anonymous-auth=true` default), and get only what authorization
//! grants that user (see [`crate::authz`]).
//!
//! Bearer tokens of the bootstrap token form `<id>.<secret>` are checked against the
//! Secret `kube-system/bootstrap-token-<id>` ([`bootstrap_token`], upstream's
//! `--enable-bootstrap-token-auth`); other bearer tokens are ServiceAccount tokens
//! ([`crate::serviceaccount_token`]).

use x509_parser::prelude::{FromDer, X509Certificate};

/// The user name of requests that carry no credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of requests that carry no credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The group every authenticated user belongs to.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The privileged group: always allowed everything (upstream's `system:masters`).
pub const MASTERS_GROUP: &str = "system:masters";

/// Authentication errors.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The verified client certificate could not be parsed as x509.
    #[error("the client certificate cannot be parsed: {0}")]
    Parse(String),
    /// The certificate's subject has no Common Name, so it names no user.
    #[error("the client certificate's subject has no common name")]
    NoCommonName,
}

/// The authenticated identity of a request (upstream's `user.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name, e.g. `system:admin` or `system:node:web-1`.
    pub name: String,
    /// The groups, including `system:authenticated` or `system:unauthenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The anonymous user (`system:anonymous` in `system:unauthenticated`).
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS_USER.into(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
        }
    }

    /// An authenticated user with the given groups; `system:authenticated` is added.
    pub fn authenticated(name: impl Into<String>, groups: impl IntoIterator<Item = String>) -> Self {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.into());
        }
        Self {
            name: name.into(),
            groups,
        }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The user from a client certificate (DER) that TLS has already verified against
    /// the cluster CA: CN is the name, each O a group.
    pub fn from_client_certificate(der: &[u8]) -> Result<Self, AuthnError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| AuthnError::Parse(e.to_string()))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
            .ok_or(AuthnError::NoCommonName)?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(String::from)
            .collect::<Vec<_>>();
        Ok(Self::authenticated(name, groups))
    }
}

/// Authenticates a bootstrap token (upstream's bootstrap token authenticator,
/// plugin/pkg/auth/authenticator/token/bootstrap): user `system:bootstrap:<id>` in
/// `system:bootstrappers` and the Secret's `auth-extra-groups` when the Secret
/// `kube-system/bootstrap-token-<id>` exists, matches, has not expired and allows
/// authentication ([`skiff_api::bootstrap_token::authenticate`]); 401 otherwise.
pub async fn bootstrap_token(
    objects: &crate::objects::Objects,
    token: &skiff_api::bootstrap_token::BootstrapToken,
) -> Result<UserInfo, crate::status::ApiError> {
    use skiff_api::bootstrap_token as bt;
    let res = skiff_api::registry::lookup("", "v1", "secrets").expect("secrets are served");
    let secret = match objects.get(res, Some(bt::NAMESPACE), &token.secret_name()).await {
        Ok(s) => s,
        Err(e) if e.code == 404 => {
            tracing::debug!(id = %token.id, "rejecting bootstrap token: no such token");
            return Err(crate::status::ApiError::unauthorized());
        }
        Err(e) => return Err(e),
    };
    match bt::authenticate(&secret, token, jiff::Timestamp::now()) {
        Ok(groups) => Ok(UserInfo::authenticated(token.user_name(), groups)),
        Err(e) => {
            tracing::debug!(id = %token.id, error = %e, "rejecting bootstrap token");
            Err(crate::status::ApiError::unauthorized())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn user_and_groups_come_from_the_certificate_subject() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::Pki::load_or_create(dir.path()).unwrap();
        let pair = pki
            .ensure_cert("kubelet", "system:node:web-1", &["system:nodes"], &[])
            .unwrap();
        let der = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
        let user = UserInfo::from_client_certificate(&der).unwrap();
        assert_eq!(user.name, "system:node:web-1");
        assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
        assert!(UserInfo::from_client_certificate(b"not a certificate").is_err());
        assert_eq!(UserInfo::anonymous().groups, ["system:unauthenticated"]);
    }
}
