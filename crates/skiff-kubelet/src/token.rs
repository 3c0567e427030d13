//! The kubelet's ServiceAccount token manager (upstream `pkg/kubelet/token`): it
//! obtains the tokens of `serviceAccountToken` volume projections through the
//! `serviceaccounts/token` subresource (TokenRequest), bound to the pod, caches
//! them, and fetches a new one once 80 % of a token's lifetime (minus a few
//! seconds of jitter) has passed or it is 24 hours old, so the token file in the
//! pod is always valid.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

/// The lifetime a projection asks for when it names none (seconds; the API's
/// default for `serviceAccountToken.expirationSeconds`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// A token this old is replaced whatever its lifetime (upstream `maxTTL`).
pub const MAX_TTL: SignedDuration = SignedDuration::from_hours(24);
/// The largest random head start a refresh gets (upstream `maxJitter`).
pub const MAX_JITTER: SignedDuration = SignedDuration::from_secs(10);

/// Why a token could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The TokenRequest was refused or failed.
    #[error("requesting a token for service account {namespace}/{name}: {source}")]
    Request {
        /// The ServiceAccount's namespace.
        namespace: String,
        /// The ServiceAccount.
        name: String,
        /// The API failure.
        #[source]
        source: kube::Error,
    },
    /// The answer carried no token.
    #[error("the TokenRequest for service account {0} returned no token")]
    Empty(String),
}

/// What a token is requested for: the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The ServiceAccount's namespace (the pod's).
    pub namespace: String,
    /// The ServiceAccount.
    pub service_account: String,
    /// Requested audiences; empty means the apiserver's own.
    pub audiences: Vec<String>,
    /// Requested lifetime (seconds).
    pub expiration_seconds: i64,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// That pod's uid.
    pub pod_uid: String,
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    expires: Timestamp,
    lifetime: SignedDuration,
    jitter: SignedDuration,
}

/// Whether a token valid until `expires`, issued `lifetime` before that, should be
/// replaced at `now`: when it is older than [`MAX_TTL`], or less than 20 % of its
/// lifetime (plus `jitter`) remains (upstream `requiresRefresh`).
pub fn requires_refresh(now: Timestamp, expires: Timestamp, lifetime: SignedDuration, jitter: SignedDuration) -> bool {
    let issued = expires - lifetime;
    if now > issued + MAX_TTL {
        return true;
    }
    let fifth = SignedDuration::from_secs(lifetime.as_secs() / 5);
    now > expires - fifth - jitter
}

/// Caches pod-bound ServiceAccount tokens per [`TokenKey`].
pub struct TokenManager {
    client: kube::Client,
    cache: Mutex<HashMap<TokenKey, Cached>>,
}

impl TokenManager {
    /// A manager requesting tokens with `client` (the kubelet's node identity, which
    /// RBAC's `system:node` role allows to create `serviceaccounts/token`).
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The token for `key`: the cached one while it does not [`requires_refresh`],
    /// else a fresh one from a TokenRequest whose `boundObjectRef` is the pod. If a
    /// refresh fails while the cached token is still valid, the cached one is used.
    pub async fn token(&self, key: &TokenKey) -> Result<String, TokenError> {
        let now = Timestamp::now();
        let cached = self.cache.lock().expect("token cache lock").get(key).cloned();
        if let Some(c) = &cached
            && !requires_refresh(now, c.expires, c.lifetime, c.jitter)
        {
            return Ok(c.token.clone());
        }
        match self.request(key).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                self.cache.lock().expect("token cache lock").insert(key.clone(), fresh);
                Ok(token)
            }
            Err(e) => match cached {
                Some(c) if now < c.expires => {
                    tracing::warn!(error = %e, "refreshing a service account token failed; using the cached one");
                    Ok(c.token)
                }
                _ => Err(e),
            },
        }
    }

    async fn request(&self, key: &TokenKey) -> Result<Cached, TokenError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &key.namespace);
        let tr = TokenRequest {
            spec: TokenRequestSpec {
                audiences: key.audiences.clone(),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(key.pod_name.clone()),
                    uid: Some(key.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let answer = api
            .create_token_request(&key.service_account, &PostParams::default(), &tr)
            .await
            .map_err(|source| TokenError::Request {
                namespace: key.namespace.clone(),
                name: key.service_account.clone(),
                source,
            })?;
        let status = answer
            .status
            .filter(|s| !s.token.is_empty())
            .ok_or_else(|| TokenError::Empty(format!("{}/{}", key.namespace, key.service_account)))?;
        let seconds = answer.spec.expiration_seconds.unwrap_or(key.expiration_seconds);
        // A little randomness spreads refreshes of many pods apart.
        let jitter = SignedDuration::from_millis(
            i64::from(Timestamp::now().subsec_nanosecond()) % MAX_JITTER.as_millis() as i64,
        );
        Ok(Cached {
            token: status.token,
            expires: status.expiration_timestamp.0,
            lifetime: SignedDuration::from_secs(seconds),
            jitter,
        })
    }

    /// Drops the tokens bound to the pod with `uid` (upstream
    /// `DeleteServiceAccountToken`), once the pod is gone.
    pub fn forget_pod(&self, uid: &str) {
        self.cache
            .lock()
            .expect("token cache lock")
            .retain(|k, _| k.pod_uid != uid);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.cache.lock().expect("token cache lock").len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_after_eighty_percent_of_the_lifetime_or_a_day() {
        let lifetime = SignedDuration::from_secs(3600);
        let issued: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let expires = issued + lifetime;
        let no_jitter = SignedDuration::ZERO;
        let at = |secs: i64| issued + SignedDuration::from_secs(secs);
        assert!(!requires_refresh(at(0), expires, lifetime, no_jitter));
        assert!(!requires_refresh(at(2880), expires, lifetime, no_jitter));
        assert!(requires_refresh(at(2881), expires, lifetime, no_jitter));
        assert!(requires_refresh(at(2871), expires, lifetime, MAX_JITTER));
        // A long-lived token is replaced after a day.
        let week = SignedDuration::from_hours(24 * 7);
        assert!(!requires_refresh(at(86_400), issued + week, week, no_jitter));
        assert!(requires_refresh(at(86_401), issued + week, week, no_jitter));
    }
}
