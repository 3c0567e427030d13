//! `skiff token create|list|delete`: bootstrap tokens for `skiff agent`, as
//! `kubeadm token` manages them (Secrets `kube-system/bootstrap-token-<id>`, see
//! [`skiff_api::bootstrap_token`]), through the API with the admin kubeconfig.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use skiff_api::bootstrap_token::{self as bt, BootstrapToken};

/// `skiff token` and its subcommands.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    /// Kubeconfig of a cluster administrator (default: DATA_DIR/admin.kubeconfig).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The server's data directory, for its admin kubeconfig.
    #[arg(long, global = true, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a bootstrap token and print it (`<id>.<secret>`).
    Create {
        /// How long the token is valid, e.g. `24h`, `90m`, `2h30m`; `0` never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// A human description stored with the token.
        #[arg(long)]
        description: Option<String>,
        /// Extra groups the token authenticates with (each `system:bootstrappers:...`).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// List the bootstrap tokens.
    List,
    /// Delete a bootstrap token (`<id>` or `<id>.<secret>`).
    Delete {
        /// The token or its id.
        token: String,
    },
}

/// Parses a `--ttl`: a duration such as `24h`, `90m`, `1h30m`, `45s` (or jiff's
/// ISO 8601 form); `0` means no expiry (`None`). Negative durations are refused.
pub fn parse_ttl(ttl: &str) -> anyhow::Result<Option<jiff::SignedDuration>> {
    let t = ttl.trim();
    if t == "0" {
        return Ok(None);
    }
    let d: jiff::SignedDuration = t
        .parse()
        .with_context(|| format!("--ttl {t:?} is not a duration like 24h, 90m or 1h30m"))?;
    if d.is_negative() || d.is_zero() {
        bail!("--ttl {t:?} must be positive (0 for a token that never expires)");
    }
    Ok(Some(d))
}

fn random_token() -> anyhow::Result<BootstrapToken> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 22];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(BootstrapToken::from_random(&bytes))
}

/// Runs `skiff token ...`.
pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let path = args
        .kubeconfig
        .clone()
        .unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    let client = crate::node::client_from(&path).await.with_context(|| {
        format!(
            "an admin kubeconfig is needed (--kubeconfig or --data-dir); tried {}",
            path.display()
        )
    })?;
    let secrets: Api<Secret> = Api::namespaced(client, bt::NAMESPACE);
    match args.command {
        TokenCommand::Create {
            ttl,
            description,
            groups,
        } => {
            let ttl = parse_ttl(&ttl)?;
            for g in &groups {
                if !g.starts_with(&format!("{}:", bt::BOOTSTRAPPERS_GROUP)) {
                    bail!("--groups: {g:?} must start with {}:", bt::BOOTSTRAPPERS_GROUP);
                }
            }
            let token = random_token()?;
            let expires = match ttl {
                Some(d) => Some(jiff::Timestamp::now().checked_add(d).context("--ttl is too long")?),
                None => None,
            };
            let secret: Secret =
                serde_json::from_value(bt::secret_manifest(&token, expires, description.as_deref(), &groups))?;
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .context("creating the bootstrap token Secret")?;
            println!("{token}");
        }
        TokenCommand::List => {
            let list = secrets.list(&Default::default()).await.context("listing Secrets")?;
            let now = jiff::Timestamp::now();
            println!(
                "{:<24}{:<10}{:<22}{:<36}DESCRIPTION",
                "TOKEN", "TTL", "EXPIRES", "USAGES"
            );
            for s in list.items {
                if s.type_.as_deref() != Some(bt::SECRET_TYPE) {
                    continue;
                }
                let data = bt::secret_data(&serde_json::to_value(&s)?);
                let token = format!(
                    "{}.{}",
                    data.get(bt::TOKEN_ID_KEY).map(String::as_str).unwrap_or_default(),
                    data.get(bt::TOKEN_SECRET_KEY).map(String::as_str).unwrap_or_default()
                );
                let (ttl, expires) = match bt::expiration(&data) {
                    Ok(Some(t)) => {
                        let left = (t - now).get_seconds().max(0);
                        let ttl = if left >= 3600 {
                            format!("{}h", left / 3600)
                        } else {
                            format!("{}m", left / 60)
                        };
                        (ttl, t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    }
                    Ok(None) => ("<forever>".into(), "<never>".into()),
                    Err(_) => ("<invalid>".into(), "<invalid>".into()),
                };
                let usages: Vec<&str> = [
                    (bt::USAGE_AUTHENTICATION_KEY, "authentication"),
                    (bt::USAGE_SIGNING_KEY, "signing"),
                ]
                .into_iter()
                .filter(|(k, _)| data.get(*k).map(String::as_str) == Some("true"))
                .map(|(_, u)| u)
                .collect();
                println!(
                    "{:<24}{:<10}{:<22}{:<36}{}",
                    token,
                    ttl,
                    expires,
                    usages.join(","),
                    data.get(bt::DESCRIPTION_KEY).map(String::as_str).unwrap_or("<none>")
                );
            }
        }
        TokenCommand::Delete { token } => {
            let id = token.split('.').next().unwrap_or_default();
            let name = format!("{}{id}", bt::SECRET_PREFIX);
            secrets
                .delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting bootstrap token {id:?}"))?;
            println!("bootstrap token {id:?} deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_like_kubeadm_durations() {
        assert_eq!(parse_ttl("24h").unwrap(), Some(jiff::SignedDuration::from_hours(24)));
        assert_eq!(parse_ttl("90m").unwrap(), Some(jiff::SignedDuration::from_mins(90)));
        assert_eq!(parse_ttl("1h30m").unwrap(), Some(jiff::SignedDuration::from_mins(90)));
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert!(parse_ttl("-1h").is_err());
        assert!(parse_ttl("soon").is_err());
        let t = random_token().unwrap();
        assert_eq!(BootstrapToken::parse(&t.to_string()).unwrap(), t);
    }
}
