//! Parsing and validating upstream's `EncryptionConfiguration`.
//!
//! The file given to `--encryption-provider-config` (YAML or JSON):
//!
//! ```yaml
//! apiVersion: apiserver.config.k8s.io/v1
//! kind: EncryptionConfiguration
//! resources:
//!   - resources: [secrets, configmaps]
//!     providers:
//!       - aesgcm:
//!           keys:
//!             - name: key1
//!               secret: <base64 of 16, 24 or 32 random bytes>
//!       - identity: {}
//! ```
//!
//! Upstream: the v1 types of k8s.io/apiserver `pkg/apis/apiserver`
//! (`types_encryption.go`), their validation (`validation_encryption.go`, whose
//! messages and field paths the errors here repeat) and the construction of the
//! transformers (`pkg/server/options/encryptionconfig/config.go`, including its
//! rule that an earlier `*.group` or `*.*` entry may not mask a later resource).
//! Decoding is strict as upstream's: unknown fields are errors. `kms` providers
//! need an external plugin and are rejected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;

use super::provider::{Kind, Provider};
use super::resources::GroupResource;
use super::transformer::ResourceTransformer;

/// The `apiVersion` the configuration must have.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The `kind` the configuration must have.
pub const KIND: &str = "EncryptionConfiguration";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<RawResource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<RawProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    aesgcm: Option<RawKeys>,
    aescbc: Option<RawKeys>,
    secretbox: Option<RawKeys>,
    identity: Option<RawIdentity>,
    kms: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {}

/// One problem found by validation, at a field path such as
/// `resources[0].providers[1].aesgcm.keys[0].secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, as upstream's `field.Path` prints it.
    pub field: String,
    /// What is wrong, e.g. `Required value: at least one keys is required` or
    /// `Invalid value: "REDACTED": secret is not of the expected length, got 8,
    /// expected one of [16 24 32]`.
    pub detail: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

fn required(field: String, msg: impl std::fmt::Display) -> FieldError {
    FieldError {
        field,
        detail: format!("Required value: {msg}"),
    }
}

fn invalid(field: String, value: impl std::fmt::Debug, msg: impl std::fmt::Display) -> FieldError {
    FieldError {
        field,
        detail: format!("Invalid value: {value:?}: {msg}"),
    }
}

/// Errors of loading an `EncryptionConfiguration`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("error opening encryption provider configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("encryption provider configuration file {} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The contents of a file are not a valid configuration; wraps the reason.
    #[error("error while parsing encryption provider configuration file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<ConfigError>,
    },
    /// Not YAML or JSON of the configuration's shape (syntax errors, wrong types,
    /// unknown fields).
    #[error("strict decoding error: {0}")]
    Decode(String),
    /// `apiVersion` or `kind` is not `apiserver.config.k8s.io/v1`
    /// `EncryptionConfiguration`.
    #[error("got apiVersion {api_version:?} and kind {kind:?}, expected apiVersion {API_VERSION:?} and kind {KIND:?}")]
    WrongType {
        /// The `apiVersion` found.
        api_version: String,
        /// The `kind` found.
        kind: String,
    },
    /// Validation failed; every problem with its field path.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))]
    Invalid(Vec<FieldError>),
    /// A resource is listed after an entry for `*.<its group>` or `*.*`, which would
    /// always win (upstream refuses the configuration rather than ignore the entry).
    #[error("resource {resource:?} is masked by earlier rule {rule:?}")]
    Masked {
        /// The masked resource, e.g. `secrets`.
        resource: String,
        /// The earlier wildcard, e.g. `*.` or `*.*`.
        rule: String,
    },
}

/// A loaded `EncryptionConfiguration`: for each configured group-resource (or
/// wildcard), the providers that write and read its values.
pub struct EncryptionConfig {
    overrides: HashMap<GroupResource, Arc<ResourceTransformer>>,
}

impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.overrides.iter().map(|(gr, t)| (gr.to_string(), t)))
            .finish()
    }
}

impl EncryptionConfig {
    /// Reads and validates the configuration in `path` (YAML or JSON).
    ///
    /// Errors: [`ConfigError::Read`] or [`ConfigError::Empty`] for the file itself,
    /// otherwise [`ConfigError::File`] naming the file and wrapping what
    /// [`EncryptionConfig::parse`] reported.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let data = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if data.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::Empty {
                path: path.to_path_buf(),
            });
        }
        Self::parse(&data).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parses and validates a configuration (YAML, or JSON when it starts with `{`).
    ///
    /// Errors: [`ConfigError::Decode`] (syntax, types, unknown fields),
    /// [`ConfigError::WrongType`], [`ConfigError::Invalid`] with every validation
    /// problem (missing resources, providers or keys; keys that are not base64 or
    /// have the wrong length: 16, 24 or 32 bytes for `aesgcm` and `aescbc`, 32 for
    /// `secretbox`; more than one provider in one list element; resource names
    /// upstream refuses), [`ConfigError::Masked`].
    pub fn parse(data: &[u8]) -> Result<Self, ConfigError> {
        let first = data.iter().find(|b| !b.is_ascii_whitespace());
        let raw: RawConfig = if first == Some(&b'{') {
            serde_json::from_slice(data).map_err(|e| ConfigError::Decode(e.to_string()))?
        } else {
            serde_yaml_ng::from_slice(data).map_err(|e| ConfigError::Decode(e.to_string()))?
        };
        if raw.api_version != API_VERSION || raw.kind != KIND {
            return Err(ConfigError::WrongType {
                api_version: raw.api_version,
                kind: raw.kind,
            });
        }
        let errors = validate(&raw);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        build(raw)
    }

    /// The transformer of `gr`: its own entry, else its group's `*.<group>` entry,
    /// else `*.*` (upstream `transformerFromOverrides`); `None` means the resource is
    /// not encrypted (identity).
    pub(crate) fn transformer_for(&self, gr: &GroupResource) -> Option<&Arc<ResourceTransformer>> {
        if self.overrides.is_empty() {
            return None;
        }
        self.overrides
            .get(gr)
            .or_else(|| self.overrides.get(&GroupResource::new(gr.group.as_str(), "*")))
            .or_else(|| self.overrides.get(&GroupResource::new("*", "*")))
    }

    /// The configured resources and wildcards, in the configuration's spelling
    /// (`secrets`, `deployments.apps`, `*.`, `*.*`), sorted.
    pub fn resources(&self) -> Vec<String> {
        let mut v: Vec<String> = self.overrides.keys().map(|gr| gr.to_string()).collect();
        v.sort();
        v
    }
}

fn validate(raw: &RawConfig) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if raw.resources.is_empty() {
        errs.push(required("resources".into(), "at least one resources is required"));
        return errs;
    }
    for (i, entry) in raw.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        let p = format!("resources[{i}].providers");
        if entry.resources.is_empty() {
            errs.push(required(r.clone(), format!("at least one {r} is required")));
        }
        validate_overlap(&entry.resources, &r, &mut errs);
        validate_names(&entry.resources, &r, &mut errs);
        if entry.providers.is_empty() {
            errs.push(required(p.clone(), format!("at least one {p} is required")));
        }
        for (j, provider) in entry.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            let set = [
                provider.aesgcm.is_some(),
                provider.aescbc.is_some(),
                provider.secretbox.is_some(),
                provider.identity.is_some(),
                provider.kms.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if set == 0 {
                errs.push(invalid(
                    path,
                    "{}",
                    "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity",
                ));
                continue;
            }
            if set > 1 {
                errs.push(invalid(
                    path,
                    "{...}",
                    "more than one provider specified in a single element, should split into different list elements",
                ));
                continue;
            }
            if provider.kms.is_some() {
                errs.push(invalid(
                    format!("{path}.kms"),
                    "{...}",
                    "kms providers need an external KMS plugin and are not supported; use aesgcm, aescbc, secretbox or identity",
                ));
            }
            for (kind, keys) in [
                (Kind::AesGcm, &provider.aesgcm),
                (Kind::AesCbc, &provider.aescbc),
                (Kind::Secretbox, &provider.secretbox),
            ] {
                if let Some(keys) = keys {
                    validate_keys(&keys.keys, &format!("{path}.{}.keys", kind.name()), kind, &mut errs);
                }
            }
        }
    }
    errs
}

fn validate_keys(keys: &[RawKey], path: &str, kind: Kind, errs: &mut Vec<FieldError>) {
    if keys.is_empty() {
        errs.push(required(path.to_string(), "at least one keys is required"));
        return;
    }
    for (k, key) in keys.iter().enumerate() {
        let path = format!("{path}[{k}]");
        if key.name.is_empty() {
            errs.push(required(format!("{path}.name"), "name is a mandatory field for a key"));
        }
        if key.secret.is_empty() {
            errs.push(required(
                format!("{path}.secret"),
                "secret is a mandatory field for a key",
            ));
            continue;
        }
        match base64::engine::general_purpose::STANDARD.decode(&key.secret) {
            Err(_) => errs.push(invalid(
                format!("{path}.secret"),
                "REDACTED",
                "secrets must be base64 encoded",
            )),
            Ok(secret) if !kind.key_sizes().contains(&secret.len()) => errs.push(invalid(
                format!("{path}.secret"),
                "REDACTED",
                format!(
                    "secret is not of the expected length, got {}, expected one of [{}]",
                    secret.len(),
                    kind.key_sizes()
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            )),
            Ok(_) => {}
        }
    }
}

fn validate_overlap(resources: &[String], path: &str, errs: &mut Vec<FieldError>) {
    let parsed: Vec<GroupResource> = resources.iter().map(|r| GroupResource::parse(r)).collect();
    let (mut duplicate, mut overlap) = (false, false);
    for (i, a) in parsed.iter().enumerate() {
        for (j, b) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if a == b {
                duplicate = true;
                continue;
            }
            if (a.group == "*" && a.resource == "*") || (a.group == b.group && (a.resource == "*" || b.resource == "*"))
            {
                overlap = true;
            }
        }
    }
    if duplicate {
        errs.push(invalid(
            path.to_string(),
            resources,
            "the same resource cannot be specified multiple times",
        ));
    }
    if overlap {
        errs.push(invalid(
            path.to_string(),
            resources,
            "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
        ));
    }
}

fn validate_names(resources: &[String], path: &str, errs: &mut Vec<FieldError>) {
    for (j, res) in resources.iter().enumerate() {
        let field = format!("{path}[{j}]");
        let gr = GroupResource::parse(res);
        let msg = if res.to_lowercase() != *res {
            "resource name should not contain capital letters"
        } else if res == "*" {
            "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
        } else if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            "resources which do not have REST API/s cannot be encrypted"
        } else if gr.group == "events.k8s.io" {
            "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
        } else if gr.group == "extensions" {
            "'extensions' group has been removed and cannot be used for encryption"
        } else if gr.group == "*" && gr.resource != "*" {
            "encrypting the same resource across groups is not supported"
        } else {
            continue;
        };
        errs.push(invalid(field, res, msg));
    }
}

fn build(raw: RawConfig) -> Result<EncryptionConfig, ConfigError> {
    let mut lists: HashMap<GroupResource, Vec<Arc<Provider>>> = HashMap::new();
    for entry in raw.resources {
        let mut providers = Vec::new();
        for p in entry.providers {
            let keyed = [
                (Kind::AesGcm, p.aesgcm),
                (Kind::AesCbc, p.aescbc),
                (Kind::Secretbox, p.secretbox),
            ]
            .into_iter()
            .find_map(|(kind, keys)| keys.map(|k| (kind, k)));
            let provider = match keyed {
                None => Provider::Identity,
                Some((kind, keys)) => {
                    let keys = keys
                        .keys
                        .into_iter()
                        .map(|k| {
                            let secret = base64::engine::general_purpose::STANDARD
                                .decode(&k.secret)
                                .unwrap_or_default();
                            (k.name, secret)
                        })
                        .collect();
                    // Validation has checked every key's encoding and length.
                    Provider::keyed(kind, keys)
                        .ok_or_else(|| ConfigError::Decode(format!("{} provider has no valid keys", kind.name())))?
                }
            };
            providers.push(Arc::new(provider));
        }
        for resource in &entry.resources {
            let gr = GroupResource::parse(resource);
            for rule in [GroupResource::new(gr.group.as_str(), "*"), GroupResource::new("*", "*")] {
                if rule != gr && lists.contains_key(&rule) {
                    return Err(ConfigError::Masked {
                        resource: gr.to_string(),
                        rule: rule.to_string(),
                    });
                }
            }
            lists.entry(gr).or_default().extend(providers.iter().cloned());
        }
    }
    Ok(EncryptionConfig {
        overrides: lists
            .into_iter()
            .map(|(gr, providers)| (gr, Arc::new(ResourceTransformer::new(providers))))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K16: &str = "AAECAwQFBgcICQoLDA0ODw==";

    fn err(yaml: &str) -> String {
        EncryptionConfig::parse(yaml.as_bytes()).unwrap_err().to_string()
    }

    fn with_providers(providers: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
        )
    }

    #[test]
    fn the_documented_example_parses() {
        let c = EncryptionConfig::parse(
            format!(
                "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
      - configmaps
      - deployments.apps
    providers:
      - aesgcm:
          keys:
            - name: key1
              secret: {K32}
            - name: key0
              secret: {K16}
      - aescbc:
          keys:
            - name: cbc
              secret: {K32}
      - secretbox:
          keys:
            - name: box
              secret: {K32}
      - identity: {{}}
  - resources: ['*.']
    providers:
      - identity: {{}}
"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.resources(), ["*.", "configmaps", "deployments.apps", "secrets"]);
        assert!(c.transformer_for(&GroupResource::new("", "secrets")).is_some());
        assert!(
            c.transformer_for(&GroupResource::new("", "pods")).is_some(),
            "*. covers pods"
        );
        assert!(c.transformer_for(&GroupResource::new("apps", "replicasets")).is_none());
    }

    #[test]
    fn json_is_accepted() {
        let c = EncryptionConfig::parse(
            format!(
                r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration",
                "resources":[{{"resources":["*.*"],"providers":[{{"secretbox":{{"keys":[{{"name":"k","secret":"{K32}"}}]}}}}]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(
            c.transformer_for(&GroupResource::new("example.com", "widgets"))
                .is_some()
        );
    }

    #[test]
    fn wildcards_resolve_most_specific_first() {
        let c = EncryptionConfig::parse(
            format!(
                "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers: [{{aesgcm: {{keys: [{{name: a, secret: {K32}}}]}}}}]
  - resources: ['*.apps']
    providers: [{{aescbc: {{keys: [{{name: b, secret: {K32}}}]}}}}]
  - resources: ['*.*']
    providers: [{{secretbox: {{keys: [{{name: c, secret: {K32}}}]}}}}]
"
            )
            .as_bytes(),
        )
        .unwrap();
        let first = |g: &str, r: &str| {
            let t = c.transformer_for(&GroupResource::new(g, r)).unwrap();
            String::from_utf8(t.transform_to_storage(b"x", "/k").unwrap()[..19].to_vec()).unwrap()
        };
        assert_eq!(first("", "secrets"), "k8s:enc:aesgcm:v1:a");
        assert_eq!(first("apps", "deployments"), "k8s:enc:aescbc:v1:b");
        assert_eq!(&first("", "configmaps")[..18], "k8s:enc:secretbox:");
    }

    #[test]
    fn key_lengths_are_checked_per_provider() {
        let e = err(&with_providers(
            "      - aesgcm:\n          keys:\n            - name: k\n              secret: AAECAwQFBgc=\n",
        ));
        assert_eq!(
            e,
            "resources[0].providers[0].aesgcm.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 8, expected one of [16 24 32]"
        );
        let e = err(&with_providers(&format!(
            "      - secretbox:\n          keys:\n            - name: k\n              secret: {K16}\n"
        )));
        assert!(
            e.contains("resources[0].providers[0].secretbox.keys[0].secret")
                && e.contains("got 16, expected one of [32]"),
            "{e}"
        );
        let e = err(&with_providers(
            "      - aescbc:\n          keys:\n            - name: k\n              secret: not-base64!\n",
        ));
        assert_eq!(
            e,
            "resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secrets must be base64 encoded"
        );
    }

    #[test]
    fn missing_parts_are_named() {
        let e = err(&with_providers("      - aesgcm:\n          keys: []\n"));
        assert_eq!(
            e,
            "resources[0].providers[0].aesgcm.keys: Required value: at least one keys is required"
        );
        let e = err(&with_providers(&format!(
            "      - aesgcm:\n          keys:\n            - secret: {K32}\n"
        )));
        assert_eq!(
            e,
            "resources[0].providers[0].aesgcm.keys[0].name: Required value: name is a mandatory field for a key"
        );
        let e = err(&with_providers("      - identity: {}\n        aesgcm: {keys: []}\n"));
        assert!(
            e.contains("more than one provider specified in a single element"),
            "{e}"
        );
        let e = err("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n");
        assert_eq!(e, "resources: Required value: at least one resources is required");
        let e = err(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n",
        );
        assert_eq!(
            e,
            "resources[0].providers: Required value: at least one resources[0].providers is required"
        );
        let e = err(&with_providers("      - kms: {name: x, endpoint: unix:///k.sock}\n"));
        assert!(e.starts_with("resources[0].providers[0].kms: Invalid value"), "{e}");
    }

    #[test]
    fn resource_names_follow_upstream_rules() {
        let cfg = |res: &str| {
            format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: {res}\n    providers: [{{identity: {{}}}}]\n"
            )
        };
        for (res, msg) in [
            ("[Secrets]", "should not contain capital letters"),
            ("['*']", "use '*.' to encrypt all the resources"),
            ("[events.events.k8s.io]", "Use 'events' instead"),
            ("[deployments.extensions]", "'extensions' group has been removed"),
            ("['secrets.*']", "across groups is not supported"),
            ("[serviceipallocations]", "do not have REST API"),
            ("[secrets, secrets]", "cannot be specified multiple times"),
            ("[secrets, '*.']", "overlapping resources"),
            ("['*.*', deployments.apps]", "overlapping resources"),
        ] {
            let e = err(&cfg(res));
            assert!(e.contains(msg) && e.starts_with("resources[0].resources"), "{res}: {e}");
        }
    }

    #[test]
    fn an_earlier_wildcard_may_not_mask_a_later_resource() {
        let e = err("apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: ['*.']
    providers: [{identity: {}}]
  - resources: [secrets]
    providers: [{identity: {}}]
");
        assert_eq!(e, "resource \"secrets\" is masked by earlier rule \"*.\"");
    }

    #[test]
    fn type_and_unknown_fields_are_checked() {
        let e = err("apiVersion: v1\nkind: ConfigMap\n");
        assert!(e.contains("expected apiVersion \"apiserver.config.k8s.io/v1\""), "{e}");
        let e = err(&with_providers(&format!(
            "      - aesgcm:\n          key:\n            - name: k\n              secret: {K32}\n"
        )));
        assert!(e.starts_with("strict decoding error") && e.contains("key"), "{e}");
    }

    #[test]
    fn files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = EncryptionConfig::from_file(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.yaml"), "{e}");
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "\n").unwrap();
        let e = EncryptionConfig::from_file(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.yaml") && e.contains("is empty"), "{e}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, with_providers("      - aesgcm: {keys: []}\n")).unwrap();
        let e = EncryptionConfig::from_file(&bad).unwrap_err().to_string();
        assert!(
            e.contains("bad.yaml") && e.contains("aesgcm.keys: Required value"),
            "{e}"
        );
    }
}
