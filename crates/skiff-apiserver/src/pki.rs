//! The cluster's PKI: a self-signed CA generated at first start and the certificates
//! every component uses (apiserver serving cert, admin and component client certs,
//! kubelet serving cert), plus kubeconfig files pointing at the apiserver.
//!
//! Layout under `DIR/tls/` (k3s-like): `ca.crt`/`ca.key`, `server.crt`/`server.key`,
//! `<name>.crt`/`<name>.key` per client, `<name>.kubeconfig`, and
//! `service-account.key` (the ServiceAccount token signing key). Existing files are
//! reused on later starts, so clients keep working across restarts.
//!
//! Of these, only the signers are cluster-wide ([`ClusterSigners`]: the CA and the
//! service-account key); every other file is a leaf issued per server by the CA. Several
//! servers of one control plane must hold the same signers, so that a client certificate
//! or ServiceAccount token issued through one is accepted by every other (k3s shares
//! them through its datastore the same way).

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PKI errors.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file under the TLS directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a key or certificate failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// More than one organization (group) was asked for; rcgen's distinguished
    /// names hold one value per attribute type, so only one group can be issued.
    #[error("a certificate can carry at most one organization (group), got {0:?}")]
    TooManyOrganizations(Vec<String>),
    /// Signer files do not belong together (e.g. `ca.crt` is not the certificate of
    /// `ca.key`).
    #[error("inconsistent signers: {0}")]
    Mismatch(String),
}

const CA_CN: &str = "skiff-ca";

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.into(),
        source,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.into(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // Write-then-rename: readers (clients waiting for admin.kubeconfig) never see a
    // partial file, and a private key is never readable by others even briefly.
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_CN);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2100, 1, 1);
    p
}

/// The files under `DIR/tls` that are signers rather than leaf certificates, and so must
/// be the same on every server of a control plane: the CA certificate and key (which
/// issue and verify every client and serving certificate) and the service-account key
/// (which signs and verifies ServiceAccount tokens).
pub const CLUSTER_SIGNER_FILES: [&str; 3] = ["ca.crt", "ca.key", "service-account.key"];

/// The cluster-wide signers, PEM: what [`Pki::load_or_create`] and
/// [`Pki::ensure_service_account_key`] would otherwise generate per data dir.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSigners {
    /// `ca.crt`: the self-signed CA certificate.
    pub ca_cert_pem: String,
    /// `ca.key`: the CA's private key (PKCS#8).
    pub ca_key_pem: String,
    /// `service-account.key`: the ServiceAccount token signing key (PKCS#8 P-256).
    pub service_account_key_pem: String,
}

impl std::fmt::Debug for ClusterSigners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private keys.
        f.debug_struct("ClusterSigners").finish_non_exhaustive()
    }
}

impl ClusterSigners {
    /// New signers (a fresh CA and service-account key), in memory only.
    pub fn generate() -> Result<Self, PkiError> {
        let ca_key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&ca_key)?;
        Ok(Self {
            ca_cert_pem: cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            service_account_key_pem: KeyPair::generate()?.serialize_pem(),
        })
    }

    /// The signers as `(file name, PEM)` pairs, in [`CLUSTER_SIGNER_FILES`] order.
    pub fn files(&self) -> [(&'static str, &str); 3] {
        [
            (CLUSTER_SIGNER_FILES[0], &self.ca_cert_pem),
            (CLUSTER_SIGNER_FILES[1], &self.ca_key_pem),
            (CLUSTER_SIGNER_FILES[2], &self.service_account_key_pem),
        ]
    }

    /// Builds the signers from `file` (a lookup by file name); `None` when any of
    /// [`CLUSTER_SIGNER_FILES`] is missing.
    pub fn from_files(mut file: impl FnMut(&str) -> Option<String>) -> Option<Self> {
        Some(Self {
            ca_cert_pem: file(CLUSTER_SIGNER_FILES[0])?,
            ca_key_pem: file(CLUSTER_SIGNER_FILES[1])?,
            service_account_key_pem: file(CLUSTER_SIGNER_FILES[2])?,
        })
    }

    /// Checks that the keys parse and that `ca.crt` is the certificate of `ca.key`
    /// (errors: [`PkiError::Rcgen`], [`PkiError::Mismatch`]).
    pub fn validate(&self) -> Result<(), PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        KeyPair::from_pem(&self.service_account_key_pem)?;
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(self.ca_cert_pem.as_bytes())
            .map_err(|e| PkiError::Mismatch(format!("ca.crt is not a PEM certificate: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| PkiError::Mismatch(format!("ca.crt does not parse: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
            return Err(PkiError::Mismatch("ca.crt is not the certificate of ca.key".into()));
        }
        Ok(())
    }

    /// Writes every file into `dir` (private keys mode 0600).
    pub fn write_to(&self, dir: &Path) -> Result<(), PkiError> {
        for (name, pem) in self.files() {
            write(&dir.join(name), pem, name.ends_with(".key"))?;
        }
        Ok(())
    }
}

/// Whether the PEM certificate names every one of `sans` (DNS names, or IP addresses
/// written as text) among its subject alternative names. A certificate that does not
/// parse names nothing.
fn names_all(cert_pem: &str, sans: &[String]) -> bool {
    use rustls_pki_types::pem::PemObject;
    use x509_parser::extensions::GeneralName;
    if sans.is_empty() {
        return true;
    }
    let Ok(der) = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return false;
    };
    let names: Vec<String> = ext
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    sans.iter().all(|s| names.iter().any(|n| n == s))
}

/// The signer files present in `dir` (a subset of [`CLUSTER_SIGNER_FILES`]), as
/// `(file name, contents)`.
pub fn read_local_signers(dir: &Path) -> Result<Vec<(&'static str, String)>, PkiError> {
    let mut out = Vec::new();
    for name in CLUSTER_SIGNER_FILES {
        let path = dir.join(name);
        if path.exists() {
            out.push((name, read(&path)?));
        }
    }
    Ok(out)
}

/// The cluster CA, able to sign new certificates.
pub struct Pki {
    dir: PathBuf,
    ca_key: KeyPair,
    /// The CA certificate, PEM.
    pub ca_pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertPair {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Path of the certificate file.
    pub cert_path: PathBuf,
    /// Path of the key file.
    pub key_path: PathBuf,
}

impl Pki {
    /// Loads the CA from `dir`, generating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if crt.exists() && key.exists() {
            let ca_key = KeyPair::from_pem(&read(&key)?)?;
            return Ok(Self {
                dir: dir.into(),
                ca_key,
                ca_pem: read(&crt)?,
            });
        }
        let ca_key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&ca_key)?;
        write(&key, &ca_key.serialize_pem(), true)?;
        write(&crt, &cert.pem(), false)?;
        Ok(Self {
            dir: dir.into(),
            ca_key,
            ca_pem: cert.pem(),
        })
    }

    /// Returns the service-account signing key (PKCS#8 P-256, PEM) from
    /// `service-account.key`, generating it on first start; it signs and verifies
    /// ServiceAccount tokens ([`crate::serviceaccount_token`]).
    pub fn ensure_service_account_key(&self) -> Result<String, PkiError> {
        let path = self.dir.join("service-account.key");
        if path.exists() {
            return read(&path);
        }
        let pem = KeyPair::generate()?.serialize_pem();
        write(&path, &pem, true)?;
        Ok(pem)
    }

    /// Path of the CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Returns `<name>.crt`/`<name>.key`, issuing them if absent: a serving
    /// certificate when `sans` is non-empty, a client certificate for user
    /// `common_name` in `organizations` (groups, at most one:
    /// [`PkiError::TooManyOrganizations`]) otherwise. An existing serving
    /// certificate that does not name every one of `sans` (e.g. after a `--tls-san`
    /// was added) is issued again with the new list, as k3s does.
    pub fn ensure_cert(
        &self,
        name: &str,
        common_name: &str,
        organizations: &[&str],
        sans: &[String],
    ) -> Result<CertPair, PkiError> {
        let cert_path = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        if cert_path.exists() && key_path.exists() {
            let cert_pem = read(&cert_path)?;
            if names_all(&cert_pem, sans) {
                return Ok(CertPair {
                    cert_pem,
                    key_pem: read(&key_path)?,
                    cert_path,
                    key_path,
                });
            }
            tracing::info!(cert = %cert_path.display(), ?sans, "serving certificate lacks a subject alternative name: issuing it again");
        }
        if organizations.len() > 1 {
            return Err(PkiError::TooManyOrganizations(
                organizations.iter().map(|o| o.to_string()).collect(),
            ));
        }
        let mut p = CertificateParams::new(sans.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        for o in organizations {
            dn.push(DnType::OrganizationName, *o);
        }
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = if sans.is_empty() {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        };
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2100, 1, 1);
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let ca = ca_params();
        let issuer = Issuer::from_params(&ca, &self.ca_key);
        let cert = p.signed_by(&key, &issuer)?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_path,
            key_path,
        })
    }

    /// Writes a kubeconfig for `client` against `server` (e.g. `https://127.0.0.1:6443`).
    pub fn write_kubeconfig(&self, path: &Path, server: &str, user: &str, client: &CertPair) -> Result<(), PkiError> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: {user}\ncurrent-context: skiff\n",
            b64(&self.ca_pem),
            b64(&client.cert_pem),
            b64(&client.key_pem)
        );
        write(path, &text, true)
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn ca_and_certs_are_reused_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let a = pki
            .ensure_cert("admin", "system:admin", &["system:masters"], &[])
            .unwrap();
        let pki2 = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(pki.ca_pem, pki2.ca_pem);
        let b = pki2
            .ensure_cert("admin", "system:admin", &["system:masters"], &[])
            .unwrap();
        assert_eq!(a.cert_pem, b.cert_pem);
        let s = pki2
            .ensure_cert(
                "server",
                "kube-apiserver",
                &[],
                &["127.0.0.1".into(), "localhost".into()],
            )
            .unwrap();
        assert!(s.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // The same names (in any order, or fewer): the certificate is kept.
        let same = pki2
            .ensure_cert("server", "kube-apiserver", &[], &["localhost".into()])
            .unwrap();
        assert_eq!(same.cert_pem, s.cert_pem);
        // A new name (`--tls-san lb.example.com`, `--tls-san 10.0.0.100`): issued again, naming it.
        let wider: Vec<String> = vec!["127.0.0.1".into(), "lb.example.com".into(), "10.0.0.100".into()];
        assert!(!names_all(&s.cert_pem, &wider));
        let reissued = pki2.ensure_cert("server", "kube-apiserver", &[], &wider).unwrap();
        assert_ne!(reissued.cert_pem, s.cert_pem);
        assert!(names_all(&reissued.cert_pem, &wider));
        assert_eq!(std::fs::read_to_string(&reissued.cert_path).unwrap(), reissued.cert_pem);
        let sa = pki.ensure_service_account_key().unwrap();
        assert_eq!(sa, pki2.ensure_service_account_key().unwrap());
        // What the PKI generated in place is a consistent set of cluster signers.
        let local: std::collections::BTreeMap<_, _> = read_local_signers(dir.path()).unwrap().into_iter().collect();
        let signers = ClusterSigners::from_files(|f| local.get(f).cloned()).unwrap();
        signers.validate().unwrap();
        assert_eq!(signers.ca_cert_pem, pki.ca_pem);
    }

    #[test]
    fn shared_signers_issue_certificates_that_chain_to_one_ca() {
        let signers = ClusterSigners::generate().unwrap();
        signers.validate().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        signers.write_to(a.path()).unwrap();
        signers.write_to(b.path()).unwrap();
        let (pa, pb) = (
            Pki::load_or_create(a.path()).unwrap(),
            Pki::load_or_create(b.path()).unwrap(),
        );
        assert_eq!(pa.ca_pem, pb.ca_pem);
        assert_eq!(
            pa.ensure_service_account_key().unwrap(),
            pb.ensure_service_account_key().unwrap()
        );
        // A leaf issued in one dir verifies against the CA the other dir serves with.
        let leaf = pa
            .ensure_cert("admin", "system:admin", &["system:masters"], &[])
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(pb.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
        let leaf_der = rustls_pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        verifier
            .verify_client_cert(&leaf_der, &[], rustls_pki_types::UnixTime::now())
            .unwrap();
        // Mismatched files are refused.
        let other = ClusterSigners::generate().unwrap();
        let mixed = ClusterSigners {
            ca_key_pem: other.ca_key_pem,
            ..signers
        };
        assert!(matches!(mixed.validate(), Err(PkiError::Mismatch(_))));
    }
}
