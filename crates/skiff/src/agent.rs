//! `skiff agent`: a worker node that joins a cluster with a bootstrap token, the way
//! kubeadm's token discovery and the kubelet's TLS bootstrap do it.
//!
//! 1. Discovery: fetch `kube-public/cluster-info` anonymously (TLS unverified, as
//!    kubeadm does at this step), then trust it only if the `jws-kubeconfig-<id>`
//!    signature the bootstrap signer put there verifies with the token (HS256 keyed by
//!    the token secret: only holders of the token can make it), and, with
//!    `--ca-cert-hash sha256:<hex>`, if the CA's public key hashes to that value
//!    (kubeadm's pin: SHA-256 of the DER SubjectPublicKeyInfo).
//! 2. TLS bootstrap: generate an ECDSA P-256 key, create a CSR for
//!    `system:node:<name>` in `system:nodes` (signer
//!    `kubernetes.io/kube-apiserver-client-kubelet`) authenticated as
//!    `system:bootstrap:<id>`, wait until it is approved and issued, and write
//!    `DATA_DIR/kubelet.kubeconfig` (mode 0600).
//! 3. Get the kubelet's serving certificate the same way, as the node (signer
//!    `kubernetes.io/kubelet-serving`, for its name and address), so the apiserver
//!    can verify the kubelet for logs and exec.
//! 4. Run the node components with that identity ([`crate::node::spawn`]).
//!
//! A restart with a kubeconfig whose certificate is still valid skips 1 and 2, and
//! with a valid serving certificate skips 3.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use skiff_api::bootstrap_token::BootstrapToken;
use tokio_util::sync::CancellationToken;

use crate::node::{client_from, detect_node_ip, hostname, shutdown_signal};

/// Flags of `skiff agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The API server to join, `https://HOST:PORT`.
    #[arg(long)]
    server: String,
    /// Bootstrap token `<id>.<secret>` from `skiff token create`.
    #[arg(long, env = "SKIFF_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Pin of the cluster CA's public key, `sha256:<hex>` (printed by `skiff server`);
    /// without it the CA is trusted on the strength of the token's signature alone.
    #[arg(long)]
    ca_cert_hash: Option<String>,
    /// Directory holding the node's credentials and its kubelet state.
    #[arg(long, default_value = "/var/lib/skiff-agent")]
    data_dir: PathBuf,
    /// The node flags shared with `skiff server`.
    #[command(flatten)]
    node: crate::node::NodeArgs,
}

/// The kubeadm pin of a CA certificate (PEM): `sha256:` and the hex SHA-256 of its DER
/// SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca_pem: &str) -> anyhow::Result<String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).context("the CA is not PEM")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).context("the CA does not parse")?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    Ok(format!(
        "sha256:{}",
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// A kubeconfig (YAML) for `server`.
fn kubeconfig(server: &str, ca_pem: Option<&str>, user: &str) -> String {
    let cluster = match ca_pem {
        Some(ca) => format!("certificate-authority-data: {}", B64.encode(ca)),
        None => "insecure-skip-tls-verify: true".into(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    {cluster}\nusers:\n- name: node\n  user:\n{user}contexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: node\ncurrent-context: skiff\n"
    )
}

async fn client_of(yaml: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(yaml)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Checks a fetched cluster-info ConfigMap with `token` (and `pin`) and returns the
/// CA certificate (PEM) it publishes.
pub fn verify_cluster_info(cm: &ConfigMap, token: &BootstrapToken, pin: Option<&str>) -> anyhow::Result<String> {
    use skiff_controllers::bootstrap::{JWS_KEY_PREFIX, KUBECONFIG_KEY, verify_detached};
    let data = cm.data.clone().unwrap_or_default();
    let content = data.get(KUBECONFIG_KEY).context("cluster-info has no kubeconfig")?;
    let jws = data.get(&format!("{JWS_KEY_PREFIX}{}", token.id)).with_context(|| {
        format!(
            "cluster-info carries no signature for token id {:?}: the token does not exist, has expired or may not sign (usage-bootstrap-signing)",
            token.id
        )
    })?;
    if !verify_detached(jws, content, token) {
        bail!(
            "cluster-info's signature for token id {:?} does not verify with this token: wrong token secret, or the response was tampered with",
            token.id
        );
    }
    let kc = kube::config::Kubeconfig::from_yaml(content).context("cluster-info's kubeconfig does not parse")?;
    let ca_b64 = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .context("cluster-info's kubeconfig has no certificate-authority-data")?;
    let ca = String::from_utf8(
        B64.decode(ca_b64.trim())
            .context("certificate-authority-data is not base64")?,
    )
    .context("the CA is not PEM text")?;
    if let Some(pin) = pin {
        let actual = ca_cert_hash(&ca)?;
        if !actual.eq_ignore_ascii_case(pin.trim()) {
            bail!("the cluster CA's public key hash is {actual}, not the --ca-cert-hash {pin}; refusing to join");
        }
    }
    Ok(ca)
}

/// Whether `path` is a kubeconfig whose client certificate is valid for at least
/// another minute.
fn usable_kubeconfig(path: &Path) -> bool {
    let Ok(kc) = kube::config::Kubeconfig::read_from(path) else {
        return false;
    };
    let Some(cert) = kc
        .auth_infos
        .first()
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.client_certificate_data.clone())
    else {
        return false;
    };
    let Ok(pem) = B64.decode(cert.trim()) else { return false };
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&block.contents) else {
        return false;
    };
    cert.validity().not_after.timestamp() > jiff::Timestamp::now().as_second() + 60
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Discovery and TLS bootstrap (module docs, steps 1 and 2); writes
/// `DATA_DIR/ca.crt` and `DATA_DIR/kubelet.kubeconfig`.
async fn bootstrap(args: &AgentArgs, node_name: &str, kubeconfig_path: &Path) -> anyhow::Result<()> {
    let raw = args
        .token
        .as_deref()
        .context("no usable DATA_DIR/kubelet.kubeconfig: pass --token (from `skiff token create` on the server)")?;
    let token = BootstrapToken::parse(raw.trim()).context("--token")?;
    if args.ca_cert_hash.is_none() {
        eprintln!(
            "skiff agent: no --ca-cert-hash given: trusting the cluster CA because cluster-info is signed with the token"
        );
    }
    // 1. Discovery, retried while the signature is not there yet (the bootstrap
    // signer adds it shortly after the token is created).
    let anonymous = client_of(&kubeconfig(&args.server, None, "    {}\n")).await?;
    let info: Api<ConfigMap> = Api::namespaced(anonymous, "kube-public");
    let started = std::time::Instant::now();
    let ca = loop {
        let attempt = match info.get("cluster-info").await {
            Ok(cm) => verify_cluster_info(&cm, &token, args.ca_cert_hash.as_deref()),
            Err(e) => Err(anyhow::Error::from(e).context(format!("fetching cluster-info from {}", args.server))),
        };
        match attempt {
            Ok(ca) => break ca,
            Err(e) if started.elapsed() < Duration::from_secs(300) => {
                tracing::warn!(error = format!("{e:#}"), "cluster discovery failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.context("cluster discovery failed for 5 minutes")),
        }
    };
    tracing::info!(server = %args.server, "discovered the cluster CA");
    // 2. TLS bootstrap as system:bootstrap:<id>.
    let boot = client_of(&kubeconfig(&args.server, Some(&ca), &format!("    token: {}\n", token))).await?;
    let (cert, key) = request_certificate(
        boot,
        node_name,
        &[],
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        None,
    )
    .await?;
    write_private(&args.data_dir.join("ca.crt"), &ca)?;
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        B64.encode(&cert),
        B64.encode(key)
    );
    write_private(kubeconfig_path, &kubeconfig(&args.server, Some(&ca), &user))?;
    tracing::info!(kubeconfig = %kubeconfig_path.display(), "node client certificate issued");
    Ok(())
}

/// Creates a CSR for `system:node:<node_name>` in `system:nodes` with `sans` (DNS
/// names or IP addresses), `signer` and `usages` through `client`, and waits for its
/// certificate: `(certificate PEM, key PEM)`. Errors when the request is denied or
/// fails, or after `timeout` (none: wait for an administrator as long as it takes,
/// reminding every 30 s).
async fn request_certificate(
    client: kube::Client,
    node_name: &str,
    sans: &[String],
    signer: &str,
    usages: &[&str],
    timeout: Option<Duration>,
) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let mut params = rcgen::CertificateParams::new(sans.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node_name}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(request.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let created = csrs.create(&PostParams::default(), &csr).await.with_context(|| {
        format!("creating a certificate signing request for {signer} (is the token valid and unexpired?)")
    })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, %signer, "waiting for the certificate");
    let started = std::time::Instant::now();
    let mut waited = 0u64;
    loop {
        let c = csrs.get(&name).await.with_context(|| format!("reading CSR {name}"))?;
        let status = c.status.unwrap_or_default();
        if let Some(d) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
        {
            bail!(
                "CSR {name} was {}: {}",
                d.type_.to_lowercase(),
                d.message.clone().unwrap_or_default()
            );
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert = String::from_utf8(cert.0).context("the issued certificate is not PEM")?;
            return Ok((cert, key.serialize_pem()));
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            bail!("CSR {name} was not issued within {timeout:?}");
        }
        waited += 1;
        if waited.is_multiple_of(30) {
            eprintln!(
                "skiff agent: still waiting for CSR {name} to be approved and issued (kubectl certificate approve {name})"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether the PEM certificate in `path` is valid for at least another minute.
fn valid_cert_file(path: &Path) -> bool {
    let Ok(pem) = std::fs::read(path) else { return false };
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&block.contents) else {
        return false;
    };
    cert.validity().not_after.timestamp() > jiff::Timestamp::now().as_second() + 60
}

/// The kubelet's serving certificate and key files: `kubelet-serving.crt`/`.key`
/// issued by the cluster CA (signer `kubernetes.io/kubelet-serving`, requested as the
/// node, for its name and address), reused while valid. If the cluster does not
/// issue one within a minute the kubelet serves a self-signed certificate instead
/// (then the apiserver cannot reach it for logs and exec), with a warning.
async fn serving_cert(
    dir: &Path,
    kubeconfig: &Path,
    node_name: &str,
    node_ip: std::net::IpAddr,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (crt, key) = (dir.join("kubelet-serving.crt"), dir.join("kubelet-serving.key"));
    if valid_cert_file(&crt) && key.exists() {
        return Ok((crt, key));
    }
    let mut sans = vec![node_name.to_string(), node_ip.to_string()];
    let host = hostname();
    if !sans.contains(&host) {
        sans.push(host);
    }
    let client = client_from(kubeconfig).await?;
    let usages = ["digital signature", "server auth"];
    match request_certificate(
        client,
        node_name,
        &sans,
        "kubernetes.io/kubelet-serving",
        &usages,
        Some(Duration::from_secs(60)),
    )
    .await
    {
        Ok((cert_pem, key_pem)) => {
            write_private(&key, &key_pem)?;
            std::fs::write(&crt, cert_pem).with_context(|| format!("writing {}", crt.display()))?;
            Ok((crt, key))
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "no kubelet serving certificate from the cluster; serving a self-signed one (kubectl logs and exec will not reach this node)"
            );
            self_signed_serving_cert(dir, node_name, node_ip)
        }
    }
}

/// A self-signed serving certificate for the node's names (the kubelet's default
/// without `serverTLSBootstrap`), kept across restarts.
fn self_signed_serving_cert(
    dir: &Path,
    node_name: &str,
    node_ip: std::net::IpAddr,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (crt, key) = (
        dir.join("kubelet-serving-self-signed.crt"),
        dir.join("kubelet-serving-self-signed.key"),
    );
    if crt.exists() && key.exists() {
        return Ok((crt, key));
    }
    let k = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(vec![
        node_name.to_string(),
        node_ip.to_string(),
        "localhost".into(),
        "127.0.0.1".into(),
    ])?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node_name}@skiff"));
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let cert = p.self_signed(&k)?;
    write_private(&key, &k.serialize_pem())?;
    std::fs::write(&crt, cert.pem()).with_context(|| format!("writing {}", crt.display()))?;
    Ok((crt, key))
}

/// Runs `skiff agent` until SIGTERM/SIGINT.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    if !args.server.starts_with("https://") {
        bail!("--server must be an https:// URL, got {:?}", args.server);
    }
    let node_name = args.node.node_name.clone().unwrap_or_else(hostname);
    let node_ip = args
        .node
        .node_ip
        .or_else(detect_node_ip)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let kubeconfig_path = data_dir.join("kubelet.kubeconfig");
    if usable_kubeconfig(&kubeconfig_path) {
        tracing::info!(kubeconfig = %kubeconfig_path.display(), "using the existing node credentials");
    } else {
        bootstrap(&args, &node_name, &kubeconfig_path).await?;
    }
    let (serving_cert, serving_key) = serving_cert(data_dir, &kubeconfig_path, &node_name, node_ip).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let setup = crate::node::NodeSetup {
        node_name: node_name.clone(),
        node_ip,
        root_dir: data_dir.join("agent"),
        kubelet_client: client_from(&kubeconfig_path).await?,
        // The proxy uses the node's identity (system:node reads Services and
        // EndpointSlices).
        proxy_client: client_from(&kubeconfig_path).await?,
        serving_cert,
        serving_key,
        client_ca: data_dir.join("ca.crt"),
        control_plane: false,
    };
    crate::node::spawn(&mut tasks, &args.node, setup, &shutdown)?;
    eprintln!(
        "skiff agent is running: node {node_name} ({node_ip}) joined {}",
        args.server
    );
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        Some(r) = tasks.join_next() => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("a node component stopped unexpectedly"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("a node component panicked: {e}"),
        }),
    };
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_controllers::bootstrap::detached_jws;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn cluster_info_is_trusted_only_when_signed_with_the_token_and_pinned() {
        let ca = ca_pem();
        let content = skiff_apiserver::cluster_info::kubeconfig("https://10.0.0.1:6443", &ca);
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let cm = ConfigMap {
            data: Some(
                [
                    ("kubeconfig".to_string(), content.clone()),
                    ("jws-kubeconfig-abcdef".to_string(), detached_jws(&content, &token)),
                ]
                .into(),
            ),
            ..Default::default()
        };
        assert_eq!(verify_cluster_info(&cm, &token, None).unwrap(), ca);
        let pin = ca_cert_hash(&ca).unwrap();
        assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64);
        assert_eq!(verify_cluster_info(&cm, &token, Some(&pin)).unwrap(), ca);
        let other_pin = ca_cert_hash(&ca_pem()).unwrap();
        let err = verify_cluster_info(&cm, &token, Some(&other_pin)).unwrap_err();
        assert!(err.to_string().contains("refusing to join"), "{err}");
        let wrong = BootstrapToken::parse("abcdef.aaaaaaaaaaaaaaaa").unwrap();
        assert!(verify_cluster_info(&cm, &wrong, None).is_err());
        let unknown = BootstrapToken::parse("zzzzzz.0123456789abcdef").unwrap();
        let err = verify_cluster_info(&cm, &unknown, None).unwrap_err();
        assert!(err.to_string().contains("no signature"), "{err}");
    }
}
