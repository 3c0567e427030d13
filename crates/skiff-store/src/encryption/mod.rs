//! Encryption at rest: upstream's `EncryptionConfiguration` applied to stored values.
//!
//! `skiff server --encryption-provider-config FILE` loads the file
//! ([`EncryptionConfig::from_file`]) and wraps the store in an [`EncryptedStore`],
//! which encrypts the values of the configured resources (e.g. `secrets`) before
//! they reach the engine and decrypts them on every read. Stored values have
//! upstream's format, `k8s:enc:<provider>:v1:<key name>:<payload>`, with providers
//! `aesgcm`, `aescbc`, `secretbox` and `identity` (plain). The first provider of a
//! resource encrypts; every listed provider (and every key of it) decrypts, so keys
//! rotate as upstream documents
//! (<https://kubernetes.io/docs/tasks/administer-cluster/encrypt-data/>).
//!
//! Modules: `config` parses and validates the file, `provider` holds the ciphers
//! and the stored layout, `transformer` the per-resource provider list, `resources`
//! maps storage keys to group-resources, `store` is the [`crate::Store`] wrapper.

mod config;
mod provider;
mod resources;
mod store;
mod transformer;

pub use config::{API_VERSION, ConfigError, EncryptionConfig, FieldError, KIND};
pub use provider::{ENCRYPTED_PREFIX, TransformError};
pub use resources::{GroupResource, ResourceKeys};
pub use store::EncryptedStore;
