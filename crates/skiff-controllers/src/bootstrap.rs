//! Bootstrap token controllers (upstream pkg/controller/bootstrap):
//!
//! - the token cleaner deletes bootstrap token Secrets
//!   (`kube-system/bootstrap-token-<id>`) once their `expiration` has passed;
//! - the bootstrap signer keeps one `jws-kubeconfig-<token-id>` key in the
//!   `kube-public/cluster-info` ConfigMap for every valid token with
//!   `usage-bootstrap-signing: "true"`: a detached JWS (RFC 7515, HS256, `kid` = token
//!   id, key = token secret) over the ConfigMap's `kubeconfig`, so that a joining node
//!   holding the token can tell the ConfigMap it fetched anonymously is genuine
//!   ([`verify_detached`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};
use skiff_api::bootstrap_token::{self as bt, BootstrapToken};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The namespace of cluster-info.
pub const CLUSTER_INFO_NAMESPACE: &str = "kube-public";
/// The name of the ConfigMap nodes discover the cluster from.
pub const CLUSTER_INFO: &str = "cluster-info";
/// Its key holding the kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// The prefix of its signature keys (`jws-kubeconfig-<token-id>`).
pub const JWS_KEY_PREFIX: &str = "jws-kubeconfig-";

fn hmac(secret: &str, data: &str) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, data.as_bytes())
}

/// The detached JWS of `content` signed with `token`: `<header>..<signature>`, the
/// compact serialization without its payload (what kubeadm stores and checks).
pub fn detached_jws(content: &str, token: &BootstrapToken) -> String {
    let header = B64URL.encode(json!({"alg": "HS256", "kid": token.id}).to_string());
    let payload = B64URL.encode(content);
    let sig = B64URL.encode(hmac(&token.secret, &format!("{header}.{payload}")).as_ref());
    format!("{header}..{sig}")
}

/// Whether `jws` (detached) is a valid HS256 signature of `content` by `token`, with
/// `kid` the token id.
pub fn verify_detached(jws: &str, content: &str, token: &BootstrapToken) -> bool {
    let mut parts = jws.split('.');
    let (Some(header), Some(""), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Some(h) = B64URL
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
    else {
        return false;
    };
    if h["alg"] != "HS256" || h["kid"] != token.id.as_str() {
        return false;
    }
    let Ok(sig) = B64URL.decode(sig) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.secret.as_bytes());
    let payload = B64URL.encode(content);
    ring::hmac::verify(&key, format!("{header}.{payload}").as_bytes(), &sig).is_ok()
}

fn secret_json(s: &Secret) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// The tokens of `secrets` that may sign cluster-info at `now`: bootstrap token
/// Secrets named after their id, unexpired, with `usage-bootstrap-signing: "true"`.
pub fn signing_tokens(secrets: &[Secret], now: jiff::Timestamp) -> Vec<BootstrapToken> {
    let mut out = Vec::new();
    for s in secrets {
        let v = secret_json(s);
        if s.type_.as_deref() != Some(bt::SECRET_TYPE) || bt::is_expired(&v, now) {
            continue;
        }
        let data = bt::secret_data(&v);
        if data.get(bt::USAGE_SIGNING_KEY).map(String::as_str) != Some("true") {
            continue;
        }
        let token = format!(
            "{}.{}",
            data.get(bt::TOKEN_ID_KEY).map(String::as_str).unwrap_or_default(),
            data.get(bt::TOKEN_SECRET_KEY).map(String::as_str).unwrap_or_default()
        );
        match BootstrapToken::parse(&token) {
            Ok(t) if s.metadata.name.as_deref() == Some(t.secret_name().as_str()) => out.push(t),
            _ => {}
        }
    }
    out
}

/// The data cluster-info should have: its kubeconfig and one signature per token
/// (other keys are kept; stale signatures dropped).
pub fn signed_data(
    current: &std::collections::BTreeMap<String, String>,
    tokens: &[BootstrapToken],
) -> std::collections::BTreeMap<String, String> {
    let content = current.get(KUBECONFIG_KEY).cloned().unwrap_or_default();
    let mut data: std::collections::BTreeMap<String, String> = current
        .iter()
        .filter(|(k, _)| !k.starts_with(JWS_KEY_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !content.is_empty() {
        for t in tokens {
            // Keep an existing valid signature byte for byte (no needless writes).
            let key = format!("{JWS_KEY_PREFIX}{}", t.id);
            let sig = current
                .get(&key)
                .filter(|s| verify_detached(s, &content, t))
                .cloned()
                .unwrap_or_else(|| detached_jws(&content, t));
            data.insert(key, sig);
        }
    }
    data
}

struct Ctx {
    client: kube::Client,
}

async fn sign_cluster_info(_cm: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), CLUSTER_INFO_NAMESPACE);
    let Some(cm) = cms.get_opt(CLUSTER_INFO).await? else {
        return Ok(Action::await_change());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), bt::NAMESPACE);
    let list = secrets.list(&Default::default()).await?;
    let now = jiff::Timestamp::now();
    let tokens = signing_tokens(&list.items, now);
    let current = cm.data.clone().unwrap_or_default();
    let want = signed_data(&current, &tokens);
    if want != current {
        // A JSON merge patch cannot remove map keys we don't name, so replace data.
        let mut next = cm.clone();
        next.data = Some(want);
        cms.replace(CLUSTER_INFO, &Default::default(), &next).await?;
        tracing::info!(tokens = tokens.len(), "signed {CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO}");
    }
    // Re-check when the next token expires (its signature must go).
    let next_expiry = list
        .items
        .iter()
        .filter_map(|s| bt::expiration(&bt::secret_data(&secret_json(s))).ok().flatten())
        .filter(|t| *t > now)
        .min();
    Ok(match next_expiry {
        Some(t) => Action::requeue(Duration::from_secs(
            u64::try_from((t - now).get_seconds()).unwrap_or(0) + 1,
        )),
        None => Action::await_change(),
    })
}

async fn clean_token(secret: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if secret.type_.as_deref() != Some(bt::SECRET_TYPE) {
        return Ok(Action::await_change());
    }
    let v = secret_json(&secret);
    let now = jiff::Timestamp::now();
    if bt::is_expired(&v, now) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), bt::NAMESPACE);
        let dp = DeleteParams {
            preconditions: secret.metadata.uid.clone().map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::info!(secret = %name, "deleted expired bootstrap token"),
            Err(e) if crate::common::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    Ok(match bt::expiration(&bt::secret_data(&v)).ok().flatten() {
        Some(t) => Action::requeue(Duration::from_secs(
            u64::try_from((t - now).get_seconds()).unwrap_or(0) + 1,
        )),
        None => Action::await_change(),
    })
}

fn error_policy<K>(_o: Arc<K>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "bootstrap token controller failed");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the token cleaner and the bootstrap signer until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx { client: client.clone() });
    let stop = shutdown.clone();
    let cleaner = Controller::new(
        Api::<Secret>::namespaced(client.clone(), bt::NAMESPACE),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(async move { stop.cancelled().await })
    .run(clean_token, error_policy, ctx.clone())
    .for_each(|_| async {});
    let info = watcher::Config::default().fields(&format!("metadata.name={CLUSTER_INFO}"));
    let signer = Controller::new(
        Api::<ConfigMap>::namespaced(client.clone(), CLUSTER_INFO_NAMESPACE),
        info,
    )
    .watches(
        Api::<Secret>::namespaced(client, bt::NAMESPACE),
        watcher::Config::default(),
        |s| {
            (s.type_.as_deref() == Some(bt::SECRET_TYPE))
                .then(|| ObjectRef::<ConfigMap>::new(CLUSTER_INFO).within(CLUSTER_INFO_NAMESPACE))
        },
    )
    .graceful_shutdown_on(async move { shutdown.cancelled().await })
    .run(sign_cluster_info, error_policy, ctx)
    .for_each(|_| async {});
    tokio::join!(cleaner, signer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> BootstrapToken {
        BootstrapToken::parse("abcdef.0123456789abcdef").unwrap()
    }

    fn secret(token: &BootstrapToken, expires: Option<&str>) -> Secret {
        let v = bt::secret_manifest(token, expires.map(|e| e.parse().unwrap()), None, &[]);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn detached_signatures_verify_only_with_the_signing_token() {
        let t = token();
        let jws = detached_jws("kubeconfig contents", &t);
        assert!(jws.contains(".."));
        assert!(verify_detached(&jws, "kubeconfig contents", &t));
        assert!(!verify_detached(&jws, "tampered contents", &t));
        let other = BootstrapToken::parse("abcdef.aaaaaaaaaaaaaaaa").unwrap();
        assert!(!verify_detached(&jws, "kubeconfig contents", &other));
        let other_id = BootstrapToken::parse("zzzzzz.0123456789abcdef").unwrap();
        assert!(!verify_detached(&jws, "kubeconfig contents", &other_id));
        assert!(!verify_detached("garbage", "kubeconfig contents", &t));
    }

    #[test]
    fn cluster_info_carries_one_signature_per_valid_signing_token() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let live = token();
        let old = BootstrapToken::parse("oldold.0123456789abcdef").unwrap();
        let secrets = vec![
            secret(&live, Some("2026-01-02T00:00:00Z")),
            secret(&old, Some("2025-12-31T00:00:00Z")),
        ];
        let tokens = signing_tokens(&secrets, now);
        assert_eq!(tokens, vec![live.clone()]);
        let current = std::collections::BTreeMap::from([
            (KUBECONFIG_KEY.to_string(), "cfg".to_string()),
            (format!("{JWS_KEY_PREFIX}oldold"), "stale".to_string()),
        ]);
        let data = signed_data(&current, &tokens);
        assert_eq!(data.len(), 2);
        assert!(verify_detached(&data["jws-kubeconfig-abcdef"], "cfg", &live));
        assert_eq!(signed_data(&data, &tokens), data);
    }
}
