//! The transformer of one resource: its providers in configuration order.
//!
//! Upstream: k8s.io/apiserver `pkg/storage/value/transformer.go`
//! (`prefixTransformers`): the first provider writes; a read tries every provider
//! whose prefix the value carries, in order, and a value read by any provider but
//! the first (or with any key but the provider's first) is *stale*: the apiserver
//! rewrites it on the next update even if the object did not change, which is how
//! `kubectl replace` moves every value to the new primary key during a rotation.

use std::sync::Arc;

use super::provider::{ENCRYPTED_PREFIX, Provider, TransformError};

/// The providers configured for one resource (from every entry that lists it, in
/// configuration order).
#[derive(Debug)]
pub(crate) struct ResourceTransformer {
    providers: Vec<Arc<Provider>>,
}

impl ResourceTransformer {
    /// `providers` must not be empty (the configuration requires at least one).
    pub(crate) fn new(providers: Vec<Arc<Provider>>) -> Self {
        debug_assert!(!providers.is_empty());
        Self { providers }
    }

    /// The stored form of `plain` under storage key `key`, written by the first
    /// provider.
    pub(crate) fn transform_to_storage(&self, plain: &[u8], key: &str) -> Result<Vec<u8>, TransformError> {
        self.providers[0].seal(plain, key.as_bytes())
    }

    /// Whether values are written as they are (the first provider is `identity`).
    pub(crate) fn writes_plain(&self) -> bool {
        self.providers[0].is_identity()
    }

    /// The plain form of the stored `data` of storage key `key`, and whether it is
    /// stale (not in the form the first provider and key would write).
    pub(crate) fn transform_from_storage(&self, data: &[u8], key: &str) -> Result<(Vec<u8>, bool), TransformError> {
        let mut errors = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            if !p.matches(data) {
                continue;
            }
            match p.open(data, key.as_bytes()) {
                Ok((plain, stale)) => return Ok((plain, stale || i != 0)),
                // Identity refuses encrypted data; a later provider may read it.
                Err(_) if p.is_identity() => continue,
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 if data.starts_with(ENCRYPTED_PREFIX) => {
                let rest = &data[ENCRYPTED_PREFIX.len()..];
                let end = rest.iter().position(|&b| b == b':').unwrap_or(rest.len().min(32));
                Err(TransformError::ProviderNotConfigured {
                    provider: String::from_utf8_lossy(&rest[..end]).into_owned(),
                })
            }
            0 => Err(TransformError::NotEncrypted),
            1 => Err(errors.remove(0)),
            _ => Err(TransformError::All(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::provider::Kind;
    use super::*;

    fn keyed(kind: Kind, name: &str, byte: u8) -> Arc<Provider> {
        Arc::new(Provider::keyed(kind, vec![(name.into(), vec![byte; 32])]).unwrap())
    }

    const KEY: &str = "/registry/secrets/default/db";

    #[test]
    fn the_first_provider_writes_and_every_provider_reads() {
        let gcm = keyed(Kind::AesGcm, "g", 1);
        let sb = keyed(Kind::Secretbox, "s", 2);
        let before = ResourceTransformer::new(vec![sb.clone()]);
        let old = before.transform_to_storage(b"v", KEY).unwrap();
        let after = ResourceTransformer::new(vec![gcm, sb, Arc::new(Provider::Identity)]);
        assert_eq!(after.transform_from_storage(&old, KEY).unwrap(), (b"v".to_vec(), true));
        let new = after.transform_to_storage(b"v", KEY).unwrap();
        assert!(new.starts_with(b"k8s:enc:aesgcm:v1:g:"));
        assert_eq!(after.transform_from_storage(&new, KEY).unwrap(), (b"v".to_vec(), false));
        assert_eq!(
            after.transform_from_storage(b"{}", KEY).unwrap(),
            (b"{}".to_vec(), true),
            "plain via identity"
        );
    }

    #[test]
    fn plain_values_need_an_identity_provider() {
        let t = ResourceTransformer::new(vec![keyed(Kind::AesCbc, "c", 1)]);
        let err = t.transform_from_storage(b"{\"kind\":\"Secret\"}", KEY).unwrap_err();
        assert!(matches!(err, TransformError::NotEncrypted), "{err}");
        assert!(err.to_string().starts_with("no matching prefix found"), "{err}");
    }

    #[test]
    fn identity_first_writes_plain_and_still_reads_encrypted_values() {
        let gcm = keyed(Kind::AesGcm, "g", 1);
        let sealed = ResourceTransformer::new(vec![gcm.clone()])
            .transform_to_storage(b"v", KEY)
            .unwrap();
        let t = ResourceTransformer::new(vec![Arc::new(Provider::Identity), gcm]);
        assert!(t.writes_plain());
        assert_eq!(t.transform_to_storage(b"v", KEY).unwrap(), b"v");
        assert_eq!(t.transform_from_storage(&sealed, KEY).unwrap(), (b"v".to_vec(), true));
    }

    #[test]
    fn a_provider_that_is_not_configured_is_named() {
        let sealed = ResourceTransformer::new(vec![keyed(Kind::Secretbox, "s", 1)])
            .transform_to_storage(b"v", KEY)
            .unwrap();
        let t = ResourceTransformer::new(vec![keyed(Kind::AesGcm, "g", 1), Arc::new(Provider::Identity)]);
        let err = t.transform_from_storage(&sealed, KEY).unwrap_err();
        assert!(
            matches!(&err, TransformError::ProviderNotConfigured { provider } if provider == "secretbox"),
            "{err}"
        );
    }

    #[test]
    fn two_entries_of_one_provider_are_both_tried() {
        // Rotation with two `aescbc` entries (upstream's example in transformer.go).
        let k1 = keyed(Kind::AesCbc, "1", 1);
        let k2 = keyed(Kind::AesCbc, "2", 2);
        let sealed = ResourceTransformer::new(vec![k1.clone()])
            .transform_to_storage(b"v", KEY)
            .unwrap();
        let t = ResourceTransformer::new(vec![k2, k1]);
        assert_eq!(t.transform_from_storage(&sealed, KEY).unwrap(), (b"v".to_vec(), true));
    }
}
