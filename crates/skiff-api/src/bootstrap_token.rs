//! Bootstrap tokens: the short-lived bearer tokens a new node joins with.
//!
//! As upstream (<https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/>,
//! k8s.io/cluster-bootstrap): a token is `<id>.<secret>` with `id` matching `[a-z0-9]{6}`
//! and `secret` matching `[a-z0-9]{16}`. It is stored as a Secret of type
//! `bootstrap.kubernetes.io/token` named `bootstrap-token-<id>` in `kube-system`, whose
//! data holds `token-id`, `token-secret`, an optional `expiration` (RFC 3339), the usages
//! `usage-bootstrap-authentication` / `usage-bootstrap-signing` (`"true"` to enable) and
//! optional `auth-extra-groups` (comma-separated, each starting `system:bootstrappers:`).
//! A valid token authenticates as user `system:bootstrap:<id>` in group
//! `system:bootstrappers` plus the extra groups.
//!
//! Everything here is pure: the apiserver's authenticator, the token cleaner and
//! `skiff token` call it with the Secret they read and the current time.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The namespace of bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// The name prefix of bootstrap token Secrets (`bootstrap-token-<id>`).
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// The user name prefix of authenticated bootstrap tokens (`system:bootstrap:<id>`).
pub const USER_PREFIX: &str = "system:bootstrap:";
/// The group every authenticated bootstrap token is in.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// Data key: the token id.
pub const TOKEN_ID_KEY: &str = "token-id";
/// Data key: the token secret.
pub const TOKEN_SECRET_KEY: &str = "token-secret";
/// Data key: RFC 3339 expiry time.
pub const EXPIRATION_KEY: &str = "expiration";
/// Data key: a human description.
pub const DESCRIPTION_KEY: &str = "description";
/// Data key: `"true"` lets the token authenticate to the API.
pub const USAGE_AUTHENTICATION_KEY: &str = "usage-bootstrap-authentication";
/// Data key: `"true"` lets the token sign the `kube-public/cluster-info` ConfigMap.
pub const USAGE_SIGNING_KEY: &str = "usage-bootstrap-signing";
/// Data key: extra groups, comma-separated.
pub const EXTRA_GROUPS_KEY: &str = "auth-extra-groups";

/// A parsed bootstrap token `<id>.<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, `[a-z0-9]{6}`.
    pub id: String,
    /// The private part, `[a-z0-9]{16}`.
    pub secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret part.
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

/// Why a token or its Secret is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The string is not `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("a bootstrap token must be of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    Format,
    /// The Secret is not of type `bootstrap.kubernetes.io/token`.
    #[error("the secret is not of type {SECRET_TYPE}")]
    WrongType,
    /// The Secret's `token-id` or `token-secret` does not match the token.
    #[error("the token does not match its secret")]
    Mismatch,
    /// The token's `expiration` has passed.
    #[error("the token expired at {0}")]
    Expired(String),
    /// The `expiration` is not an RFC 3339 time.
    #[error("the token's expiration {0:?} is not an RFC 3339 time")]
    BadExpiration(String),
    /// `usage-bootstrap-authentication` is not `"true"`.
    #[error("the token may not be used for authentication")]
    NotForAuthentication,
    /// An `auth-extra-groups` entry does not start with `system:bootstrappers:`.
    #[error("extra group {0:?} does not start with {BOOTSTRAPPERS_GROUP}:")]
    BadExtraGroup(String),
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BootstrapToken {
    /// Parses `<id>.<secret>`; [`TokenError::Format`] otherwise.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let (id, secret) = token.split_once('.').ok_or(TokenError::Format)?;
        if !is_token_part(id, 6) || !is_token_part(secret, 16) {
            return Err(TokenError::Format);
        }
        Ok(Self {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// A token from 22 random bytes: each byte picks one of the 36 characters
    /// `[a-z0-9]` (the modulo bias of 256 % 36 is immaterial for a 16-character
    /// secret; upstream's generator uses the same alphabet).
    pub fn from_random(bytes: &[u8; 22]) -> Self {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let pick = |b: &[u8]| b.iter().map(|b| ALPHABET[*b as usize % 36] as char).collect::<String>();
        Self {
            id: pick(&bytes[..6]),
            secret: pick(&bytes[6..]),
        }
    }

    /// The name of this token's Secret, `bootstrap-token-<id>`.
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }

    /// The user this token authenticates as, `system:bootstrap:<id>`.
    pub fn user_name(&self) -> String {
        format!("{USER_PREFIX}{}", self.id)
    }
}

/// The decoded `data` (and `stringData`, which wins) of a Secret object.
pub fn secret_data(secret: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(data) = secret.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            if let Ok(b) = serde_json::from_value::<k8s_openapi::ByteString>(v.clone())
                && let Ok(s) = String::from_utf8(b.0)
            {
                out.insert(k.clone(), s);
            }
        }
    }
    if let Some(data) = secret.get("stringData").and_then(Value::as_object) {
        for (k, v) in data {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    out
}

/// The expiry of a token Secret's data: `None` when it has none, an error when it
/// is not RFC 3339.
pub fn expiration(data: &BTreeMap<String, String>) -> Result<Option<Timestamp>, TokenError> {
    match data.get(EXPIRATION_KEY).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|_| TokenError::BadExpiration(s.to_string())),
    }
}

/// Whether a token Secret has expired at `now` (the token cleaner deletes those). A
/// Secret with an unparsable expiration counts as expired, as upstream's cleaner does
/// not keep tokens it cannot judge.
pub fn is_expired(secret: &Value, now: Timestamp) -> bool {
    match expiration(&secret_data(secret)) {
        Ok(Some(t)) => t <= now,
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Constant-time string comparison (the secret must not leak through timing).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `token` against its Secret at `now` and returns the groups it
/// authenticates with: `system:bootstrappers` then the `auth-extra-groups`, as
/// upstream's bootstrap token authenticator
/// (plugin/pkg/auth/authenticator/token/bootstrap).
pub fn authenticate(secret: &Value, token: &BootstrapToken, now: Timestamp) -> Result<Vec<String>, TokenError> {
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return Err(TokenError::WrongType);
    }
    let data = secret_data(secret);
    let id = data.get(TOKEN_ID_KEY).map(String::as_str).unwrap_or_default();
    let sec = data.get(TOKEN_SECRET_KEY).map(String::as_str).unwrap_or_default();
    if id != token.id || !same(sec, &token.secret) {
        return Err(TokenError::Mismatch);
    }
    if let Some(t) = expiration(&data)?
        && t <= now
    {
        return Err(TokenError::Expired(t.to_string()));
    }
    if data.get(USAGE_AUTHENTICATION_KEY).map(String::as_str) != Some("true") {
        return Err(TokenError::NotForAuthentication);
    }
    let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
    for g in data
        .get(EXTRA_GROUPS_KEY)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if !g.starts_with(&format!("{BOOTSTRAPPERS_GROUP}:")) {
            return Err(TokenError::BadExtraGroup(g.into()));
        }
        if !groups.iter().any(|x| x == g) {
            groups.push(g.into());
        }
    }
    Ok(groups)
}

/// The Secret object for `token` (what `kubeadm token create` writes): usages
/// authentication and signing, the given description, expiring at `expires` (none
/// for a token that never expires) and extra groups.
pub fn secret_manifest(
    token: &BootstrapToken,
    expires: Option<Timestamp>,
    description: Option<&str>,
    extra_groups: &[String],
) -> Value {
    let mut data = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        let b = serde_json::to_value(k8s_openapi::ByteString(v.as_bytes().to_vec())).expect("bytes serialize");
        data.insert(k.to_string(), b);
    };
    put(TOKEN_ID_KEY, &token.id);
    put(TOKEN_SECRET_KEY, &token.secret);
    put(USAGE_AUTHENTICATION_KEY, "true");
    put(USAGE_SIGNING_KEY, "true");
    if let Some(t) = expires {
        put(EXPIRATION_KEY, &t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        put(DESCRIPTION_KEY, d);
    }
    if !extra_groups.is_empty() {
        put(EXTRA_GROUPS_KEY, &extra_groups.join(","));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {"name": token.secret_name(), "namespace": NAMESPACE},
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn token() -> BootstrapToken {
        BootstrapToken::parse("abcdef.0123456789abcdef").unwrap()
    }

    #[test]
    fn tokens_parse_only_in_the_upstream_format() {
        let t = token();
        assert_eq!((t.id.as_str(), t.secret.as_str()), ("abcdef", "0123456789abcdef"));
        assert_eq!(t.to_string(), "abcdef.0123456789abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        assert_eq!(t.user_name(), "system:bootstrap:abcdef");
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcdeff",
            "abcdef:0123456789abcdef",
            "abcdef.0123456789abcde!",
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        ] {
            assert_eq!(BootstrapToken::parse(bad), Err(TokenError::Format), "{bad:?}");
        }
        let r = BootstrapToken::from_random(&[255; 22]);
        assert_eq!(BootstrapToken::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn valid_tokens_authenticate_with_their_groups() {
        let t = token();
        let expires = Some("2026-01-02T00:00:00Z".parse().unwrap());
        let s = secret_manifest(&t, expires, Some("join"), &["system:bootstrappers:workers".into()]);
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(
            authenticate(&s, &t, now()).unwrap(),
            ["system:bootstrappers", "system:bootstrappers:workers"]
        );
        assert_eq!(secret_data(&s)[EXPIRATION_KEY], "2026-01-02T00:00:00Z");
        // No expiration: valid forever.
        let forever = secret_manifest(&t, None, None, &[]);
        assert_eq!(authenticate(&forever, &t, now()).unwrap(), ["system:bootstrappers"]);
        assert!(!is_expired(&forever, now()));
        // stringData is read too (a Secret written by hand with kubectl).
        let by_hand = json!({"type": SECRET_TYPE, "stringData": {
            "token-id": "abcdef", "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true"}});
        assert!(authenticate(&by_hand, &t, now()).is_ok());
    }

    #[test]
    fn invalid_tokens_are_refused() {
        let t = token();
        let past = Some("2025-12-31T23:59:59Z".parse().unwrap());
        let expired = secret_manifest(&t, past, None, &[]);
        assert!(matches!(authenticate(&expired, &t, now()), Err(TokenError::Expired(_))));
        assert!(is_expired(&expired, now()));
        let other = BootstrapToken::parse("abcdef.aaaaaaaaaaaaaaaa").unwrap();
        let ok = secret_manifest(&t, None, None, &[]);
        assert_eq!(authenticate(&ok, &other, now()), Err(TokenError::Mismatch));
        let mut wrong_type = ok.clone();
        wrong_type["type"] = json!("Opaque");
        assert_eq!(authenticate(&wrong_type, &t, now()), Err(TokenError::WrongType));
        let mut no_auth = ok.clone();
        no_auth["data"]
            .as_object_mut()
            .unwrap()
            .remove(USAGE_AUTHENTICATION_KEY);
        assert_eq!(authenticate(&no_auth, &t, now()), Err(TokenError::NotForAuthentication));
        let bad_group = secret_manifest(&t, None, None, &["system:masters".into()]);
        assert_eq!(
            authenticate(&bad_group, &t, now()),
            Err(TokenError::BadExtraGroup("system:masters".into()))
        );
        let mut bad_time = ok.clone();
        bad_time["stringData"] = json!({"expiration": "tomorrow"});
        assert!(matches!(
            authenticate(&bad_time, &t, now()),
            Err(TokenError::BadExpiration(_))
        ));
        assert!(is_expired(&bad_time, now()));
    }
}
