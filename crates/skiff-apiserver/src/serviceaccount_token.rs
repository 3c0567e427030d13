//! ServiceAccount tokens: the `serviceaccounts/token` subresource (`TokenRequest`,
//! `authentication.k8s.io/v1`) and bearer-token authentication with the tokens it
//! issues, with the semantics of upstream's bound service account tokens.
//!
//! Tokens are JWTs (JWS compact serialization, `ES256`) signed by the service-account
//! key the PKI keeps in the data directory ([`crate::pki::Pki::ensure_service_account_key`]).
//! Their claims name the issuer, the subject `system:serviceaccount:<ns>:<name>`,
//! the audiences, the validity window and, under `kubernetes.io`, the namespace,
//! the ServiceAccount (name and uid) and the object the token is bound to, if any.
//! A presented token is accepted only while its signature, issuer, audience and
//! validity window check out *and* the ServiceAccount (and bound object) still exist
//! with the uids recorded in it, so deleting either revokes the token.

use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use skiff_api::registry;

use crate::authn::UserInfo;
use crate::objects::Objects;
use crate::status::ApiError;

/// The issuer (`iss`) of the tokens, and the default audience (upstream's
/// `--service-account-issuer` as clusters commonly set it).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The lifetime of a token when the request names none (seconds).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a request may ask for (seconds).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime a request may ask for (seconds, 2^32).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The group of every ServiceAccount user.
pub const SERVICEACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// The prefix of ServiceAccount user names.
pub const USER_PREFIX: &str = "system:serviceaccount:";

/// Why a token cannot be issued or is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The signing key is not a PKCS#8 P-256 key.
    #[error("the service-account signing key is unusable: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing the token failed")]
    Sign,
    /// The token is not three base64url parts with a JSON header and payload.
    #[error("the token is malformed")]
    Malformed,
    /// The header names an algorithm other than `ES256`.
    #[error("unsupported token algorithm {0:?}")]
    Algorithm(String),
    /// The signature does not verify with the service-account key.
    #[error("the token signature is invalid")]
    Signature,
    /// `iss` is not [`ISSUER`].
    #[error("the token issuer {0:?} is not accepted")]
    Issuer(String),
    /// None of the audiences is the apiserver's.
    #[error("the token audiences {0:?} do not include the apiserver")]
    Audience(Vec<String>),
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// `{name, uid}` of an object a token refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: ObjectRef,
    /// The Pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The Secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The Node the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// The claims of a ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Namespace, ServiceAccount and bound object.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

impl Claims {
    /// Claims for ServiceAccount `sa` in `namespace`, valid from `now` for
    /// `expiration_seconds`.
    pub fn new(namespace: &str, sa: ObjectRef, audiences: Vec<String>, now: i64, expiration_seconds: i64) -> Self {
        Self {
            iss: ISSUER.into(),
            sub: format!("{USER_PREFIX}{namespace}:{}", sa.name),
            aud: audiences,
            exp: now + expiration_seconds,
            iat: now,
            nbf: now,
            kubernetes: KubernetesClaims {
                namespace: namespace.into(),
                serviceaccount: sa,
                pod: None,
                secret: None,
                node: None,
            },
        }
    }

    /// The user these claims authenticate: the ServiceAccount's user name with
    /// groups `system:serviceaccounts`, `system:serviceaccounts:<ns>` and
    /// `system:authenticated`.
    pub fn user(&self) -> UserInfo {
        let ns = &self.kubernetes.namespace;
        UserInfo::authenticated(
            format!("{USER_PREFIX}{ns}:{}", self.kubernetes.serviceaccount.name),
            [
                SERVICEACCOUNTS_GROUP.to_string(),
                format!("{SERVICEACCOUNTS_GROUP}:{ns}"),
            ],
        )
    }

    /// Checks issuer, audience (the apiserver's, [`ISSUER`]) and validity window at
    /// `now` (Unix seconds).
    pub fn check(&self, now: i64) -> Result<(), TokenError> {
        self.check_for(now, &[ISSUER]).map(|_| ())
    }

    /// [`Claims::check`] for a caller accepting any of `audiences`; returns the
    /// token's audiences that are among them (what a TokenReview reports).
    pub fn check_for(&self, now: i64, audiences: &[&str]) -> Result<Vec<String>, TokenError> {
        if self.iss != ISSUER {
            return Err(TokenError::Issuer(self.iss.clone()));
        }
        let matched: Vec<String> = self
            .aud
            .iter()
            .filter(|a| audiences.contains(&a.as_str()))
            .cloned()
            .collect();
        if matched.is_empty() {
            return Err(TokenError::Audience(self.aud.clone()));
        }
        if now >= self.exp {
            return Err(TokenError::Expired);
        }
        if now < self.nbf {
            return Err(TokenError::NotYetValid);
        }
        Ok(matched)
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kid: String,
}

/// Signs and verifies tokens with the service-account key pair.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
    rng: SystemRandom,
}

impl TokenSigner {
    /// A signer from a PKCS#8 P-256 private key, PEM (what the PKI generates).
    pub fn from_pem(pem: &str) -> Result<Self, TokenError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), &rng)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let public = key.public_key().as_ref().to_vec();
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &public));
        Ok(Self { key, public, kid, rng })
    }

    /// The signed token (`header.payload.signature`) carrying `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
        };
        let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Sign)?;
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Sign)?;
        let signing_input = format!("{}.{}", enc(&header), enc(&payload));
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| TokenError::Sign)?;
        Ok(format!("{signing_input}.{}", enc(sig.as_ref())))
    }

    /// The claims of `token` if its signature verifies and [`Claims::check`] passes
    /// at `now`. Whether the referenced objects still exist is not checked here.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        self.verify_for(token, now, &[ISSUER]).map(|(c, _)| c)
    }

    /// [`TokenSigner::verify`] accepting any of `audiences` ([`Claims::check_for`]);
    /// also returns the matching audiences.
    pub fn verify_for(&self, token: &str, now: i64, audiences: &[&str]) -> Result<(Claims, Vec<String>), TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let dec = |v: &str| URL_SAFE_NO_PAD.decode(v).map_err(|_| TokenError::Malformed);
        let header: Header = serde_json::from_slice(&dec(h)?).map_err(|_| TokenError::Malformed)?;
        if header.alg != "ES256" {
            return Err(TokenError::Algorithm(header.alg));
        }
        let signing_input = &token[..h.len() + 1 + p.len()];
        ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(signing_input.as_bytes(), &dec(s)?)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&dec(p)?).map_err(|_| TokenError::Malformed)?;
        let matched = claims.check_for(now, audiences)?;
        Ok((claims, matched))
    }
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn uid_of(obj: &Value) -> String {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn resource(plural: &str) -> &'static registry::ResourceInfo {
    registry::lookup("", "v1", plural).expect("core resources are served")
}

/// 422 for a TokenRequest, as upstream words it (`TokenRequest.authentication.k8s.io
/// "" is invalid: <field>: Invalid value: <value>: <detail>`).
fn invalid(field: &str, value: &Value, detail: &str) -> ApiError {
    let message = format!("Invalid value: {value}: {detail}");
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("TokenRequest.authentication.k8s.io \"\" is invalid: {field}: {message}"),
        details: Some(
            json!({"name": "", "group": "authentication.k8s.io", "kind": "TokenRequest",
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}),
        ),
    }
}

/// Serves `POST .../namespaces/{ns}/serviceaccounts/{name}/token`: issues a token
/// for the ServiceAccount (404 if it does not exist) and answers 201 with the
/// `TokenRequest`, its spec defaulted and `status.token`/`status.expirationTimestamp` set.
pub async fn create(
    objects: &Objects,
    signer: &TokenSigner,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut req: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?
    };
    if !req.is_object() {
        return Err(ApiError::bad_request("the request body must be a TokenRequest object"));
    }
    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<String> = match spec.get("audiences") {
        Some(Value::Array(a)) if !a.is_empty() => a.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => vec![ISSUER.to_string()],
    };
    let sa = objects.get(resource("serviceaccounts"), Some(ns), name).await?;
    let now = now_unix();
    let mut claims = Claims::new(
        ns,
        ObjectRef {
            name: name.into(),
            uid: uid_of(&sa),
        },
        audiences.clone(),
        now,
        expiration,
    );
    let bound = spec.get("boundObjectRef").filter(|b| !b.is_null()).cloned();
    if let Some(b) = &bound {
        let field = |f: &str| b.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
        let (kind, bname, want_uid, api_version) = (field("kind"), field("name"), field("uid"), field("apiVersion"));
        if !matches!(api_version.as_str(), "" | "v1") {
            return Err(invalid(
                "spec.boundObjectRef.apiVersion",
                &json!(api_version),
                "must be v1",
            ));
        }
        let (res, bns) = match kind.as_str() {
            "Pod" => (resource("pods"), Some(ns)),
            "Secret" => (resource("secrets"), Some(ns)),
            "Node" => (resource("nodes"), None),
            _ => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    &json!(kind),
                    "must be one of Pod, Secret, Node",
                ));
            }
        };
        let obj = objects.get(res, bns, &bname).await?;
        let uid = uid_of(&obj);
        if !want_uid.is_empty() && want_uid != uid {
            return Err(ApiError::conflict(
                res,
                &bname,
                &format!("the UID in the bound object reference ({want_uid}) does not match the UID in record ({uid})"),
            ));
        }
        let r = Some(ObjectRef { name: bname, uid });
        match kind.as_str() {
            "Pod" => claims.kubernetes.pod = r,
            "Secret" => claims.kubernetes.secret = r,
            _ => claims.kubernetes.node = r,
        }
    }
    let token = signer.sign(&claims).map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = jiff::Timestamp::from_second(claims.exp)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    let meta = req
        .get("metadata")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    req["metadata"] = meta;
    req["metadata"]["name"] = json!(name);
    req["metadata"]["namespace"] = json!(ns);
    req["metadata"]["creationTimestamp"] = json!(crate::objects::now_rfc3339());
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    if bound.is_none() {
        spec["boundObjectRef"] = Value::Null;
    }
    req["spec"] = spec;
    req["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(crate::rest::json_response(StatusCode::CREATED, &req, &[]))
}

/// Why a presented token does not authenticate anyone.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The token itself is not acceptable.
    #[error("invalid bearer token, {0}")]
    Token(#[from] TokenError),
    /// An object the token names (ServiceAccount, bound Pod, Secret or Node) is
    /// gone or was replaced by one with another uid.
    #[error("invalid bearer token, service account token has been invalidated")]
    Invalidated,
    /// Looking the objects up failed.
    #[error("looking up the token's objects: {0}")]
    Lookup(String),
}

/// Authenticates a bearer token: the user of a valid token whose ServiceAccount
/// (and bound object) still exist with the recorded uids; 401 `Unauthorized` otherwise.
pub async fn authenticate(objects: &Objects, signer: &TokenSigner, token: &str) -> Result<UserInfo, ApiError> {
    match review(objects, signer, token, &[ISSUER]).await {
        Ok((claims, _)) => Ok(claims.user()),
        Err(Rejection::Lookup(e)) => Err(ApiError::internal(e)),
        Err(e) => {
            tracing::debug!(error = %e, "rejecting bearer token");
            Err(ApiError::unauthorized())
        }
    }
}

/// Checks `token` for a caller accepting `audiences`: its claims and the matching
/// audiences when the signature, issuer, audience and validity window check out and
/// the ServiceAccount and bound object still exist with the recorded uids
/// (upstream's legacy-claims validation for bound tokens).
pub async fn review(
    objects: &Objects,
    signer: &TokenSigner,
    token: &str,
    audiences: &[&str],
) -> Result<(Claims, Vec<String>), Rejection> {
    let (claims, matched) = signer.verify_for(token, now_unix(), audiences)?;
    let k = &claims.kubernetes;
    let ns = k.namespace.as_str();
    let mut refs = vec![(resource("serviceaccounts"), Some(ns), &k.serviceaccount)];
    if let Some(p) = &k.pod {
        refs.push((resource("pods"), Some(ns), p));
    }
    if let Some(s) = &k.secret {
        refs.push((resource("secrets"), Some(ns), s));
    }
    if let Some(n) = &k.node {
        refs.push((resource("nodes"), None, n));
    }
    for (res, ons, r) in refs {
        match objects.get(res, ons, &r.name).await {
            Ok(obj) if uid_of(&obj) == r.uid => {}
            Ok(_) | Err(ApiError { code: 404, .. }) => {
                tracing::debug!(kind = res.kind, name = %r.name, "bearer token refers to a deleted object");
                return Err(Rejection::Invalidated);
            }
            Err(e) => return Err(Rejection::Lookup(e.message)),
        }
    }
    Ok((claims, matched))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::Pki::load_or_create(dir.path()).unwrap();
        TokenSigner::from_pem(&pki.ensure_service_account_key().unwrap()).unwrap()
    }

    fn claims(now: i64) -> Claims {
        Claims::new(
            "default",
            ObjectRef {
                name: "build-bot".into(),
                uid: "u-1".into(),
            },
            vec![ISSUER.into()],
            now,
            600,
        )
    }

    #[test]
    fn claims_have_the_upstream_shape_and_user() {
        let c = claims(1000);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["sub"], "system:serviceaccount:default:build-bot");
        assert_eq!(
            (v["iat"].as_i64(), v["nbf"].as_i64(), v["exp"].as_i64()),
            (Some(1000), Some(1000), Some(1600))
        );
        assert_eq!(
            v["kubernetes.io"],
            json!({"namespace": "default", "serviceaccount": {"name": "build-bot", "uid": "u-1"}})
        );
        let u = c.user();
        assert_eq!(u.name, "system:serviceaccount:default:build-bot");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn tokens_verify_only_when_signed_valid_and_for_the_apiserver() {
        let s = signer();
        let now = 1_000_000;
        let mut c = claims(now);
        c.kubernetes.pod = Some(ObjectRef {
            name: "web".into(),
            uid: "p-1".into(),
        });
        let t = s.sign(&c).unwrap();
        assert_eq!(s.verify(&t, now + 10).unwrap(), c);
        assert_eq!(s.verify(&t, now + 600), Err(TokenError::Expired));
        assert_eq!(s.verify(&t, now - 1), Err(TokenError::NotYetValid));
        // Another key's signature, a tampered payload, garbage.
        assert_eq!(signer().verify(&t, now), Err(TokenError::Signature));
        let mut parts: Vec<&str> = t.split('.').collect();
        let other = s.sign(&claims(now + 5)).unwrap();
        parts[1] = other.split('.').nth(1).unwrap();
        assert_eq!(s.verify(&parts.join("."), now + 10), Err(TokenError::Signature));
        assert_eq!(s.verify("not-a-jwt", now), Err(TokenError::Malformed));
        let mut c2 = claims(now);
        c2.aud = vec!["vault".into()];
        assert!(matches!(
            s.verify(&s.sign(&c2).unwrap(), now),
            Err(TokenError::Audience(_))
        ));
        let mut c3 = claims(now);
        c3.iss = "https://elsewhere".into();
        assert!(matches!(
            s.verify(&s.sign(&c3).unwrap(), now),
            Err(TokenError::Issuer(_))
        ));
    }

    #[test]
    fn short_expirations_are_invalid_with_the_upstream_message() {
        let e = invalid(
            "spec.expirationSeconds",
            &json!(599),
            "may not specify a duration less than 10 minutes",
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        );
    }
}
