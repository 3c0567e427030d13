//! Bootstrap data: the cluster-wide signers that several `skiff server` processes sharing
//! one etcd cluster must agree on, kept in etcd encrypted with the cluster token.
//!
//! k3s does the same with its "bootstrap data": the first server of a control plane on an
//! external datastore generates the CA and the service-account key
//! ([`ClusterSigners`], the only non-leaf files under `DIR/tls`), encrypts them with a key
//! derived from the token and writes them under [`BOOTSTRAP_KEY`], outside the
//! `/registry/` prefix the apiserver serves. Every other server reads and decrypts them
//! and writes them into its own `DIR/tls` before the PKI loads, so that the leaf
//! certificates it issues itself (its serving certificate with its own SANs, its
//! component and admin client certificates) chain to the same CA, and ServiceAccount
//! tokens minted through any server verify on every other.
//!
//! The record is created with a create-if-absent transaction (etcd
//! `If(create_revision == 0)`, [`skiff_store::Store::create`]), so servers starting at
//! the same time agree on one CA: the losers adopt the winner's record.
//!
//! Encryption: the key is PBKDF2-HMAC-SHA256 of the token with a random 16-byte salt
//! ([`PBKDF2_ITERATIONS`] rounds, OWASP's recommendation for that PRF); the cipher is
//! AES-256-GCM with a random 96-bit nonce, authenticating the record's key name and
//! format version as associated data. A wrong token fails authentication
//! ([`BootstrapError::WrongToken`]) before anything on disk is touched.

use std::io::Write;
use std::num::NonZeroU32;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use skiff_apiserver::pki::{CLUSTER_SIGNER_FILES, ClusterSigners, PkiError, read_local_signers};
use skiff_store::Store;

/// The etcd key of the encrypted bootstrap data (outside `/registry/`, so the apiserver
/// never serves it).
pub const BOOTSTRAP_KEY: &str = "/skiff/bootstrap";

/// PBKDF2-HMAC-SHA256 rounds for new records (OWASP's 2023 recommendation); the count
/// is stored in the record, so older records keep decrypting if it changes.
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// The most rounds a record may ask for (a bound on the work a tampered record causes).
const MAX_ITERATIONS: u32 = 10_000_000;
/// The record format version.
const VERSION: u64 = 1;
const KDF: &str = "pbkdf2-hmac-sha256";
const CIPHER: &str = "aes-256-gcm";
const SALT_LEN: usize = 16;
/// Random bytes in a generated token (hex-encoded: 48 characters).
const TOKEN_BYTES: usize = 24;

/// Why the bootstrap data cannot be set up or joined.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Bootstrap data exists, and no token was given or found in `DATA_DIR/token`.
    #[error(
        "this etcd cluster already holds a skiff control plane's bootstrap data ({BOOTSTRAP_KEY}): to join it, pass the cluster token with --token or --token-file (the first server wrote it to DATA_DIR/token)"
    )]
    TokenRequired,
    /// The token does not decrypt the bootstrap data; nothing was changed.
    #[error(
        "the token ({from}) does not decrypt this etcd cluster's bootstrap data ({BOOTSTRAP_KEY}): pass the cluster's token with --token or --token-file (the first server wrote it to DATA_DIR/token); nothing was changed"
    )]
    WrongToken {
        /// Where the token came from (`--token`, a file).
        from: String,
    },
    /// Another server created the bootstrap data at the same moment with a token this
    /// server generated itself.
    #[error(
        "another server created this etcd cluster's bootstrap data ({BOOTSTRAP_KEY}) at the same time: start this one with that server's token (--token or --token-file; it is in its DATA_DIR/token)"
    )]
    LostRace,
    /// A signer file in this data dir differs from the cluster's: the data dir belongs
    /// to another cluster.
    #[error(
        "{} differs from the cluster's {file} in etcd ({BOOTSTRAP_KEY}): this data dir was set up for another cluster. Move {} aside (or use a fresh --data-dir) to join this one, or point --datastore-endpoint at the datastore that data dir belongs to",
        path.display(), dir.display()
    )]
    LocalMismatch {
        /// The file that differs.
        path: PathBuf,
        /// Its name in the bootstrap data.
        file: &'static str,
        /// The TLS directory holding it.
        dir: PathBuf,
    },
    /// The record in etcd is not bootstrap data this version understands.
    #[error("the bootstrap data in etcd ({BOOTSTRAP_KEY}) is malformed: {0}")]
    Malformed(String),
    /// An empty token was given.
    #[error("the cluster token ({0}) is empty")]
    EmptyToken(String),
    /// The datastore failed.
    #[error("reading or writing the bootstrap data in etcd ({BOOTSTRAP_KEY})")]
    Store(#[from] skiff_store::Error),
    /// Generating, reading or writing the signers failed.
    #[error("cluster signers")]
    Pki(#[from] PkiError),
    /// Reading or writing the token file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The cluster token and where it came from (for error messages).
#[derive(Clone)]
pub struct Token {
    /// The secret.
    pub value: String,
    /// Where it came from: `--token`, `--token-file PATH`, `PATH` (the data dir's file).
    pub source: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// A token from `source`, trimmed; errors with [`BootstrapError::EmptyToken`] when
    /// nothing is left.
    pub fn new(value: &str, source: impl Into<String>) -> Result<Self, BootstrapError> {
        let source = source.into();
        let value = value.trim();
        if value.is_empty() {
            return Err(BootstrapError::EmptyToken(source));
        }
        Ok(Self {
            value: value.to_string(),
            source,
        })
    }

    /// Reads a token file (`--token-file`, `DATA_DIR/token`).
    pub fn from_file(path: &Path, source: impl Into<String>) -> Result<Self, BootstrapError> {
        let text = std::fs::read_to_string(path).map_err(|source| BootstrapError::Io {
            path: path.into(),
            source,
        })?;
        Self::new(&text, source)
    }
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This server created the bootstrap data (it is the cluster's first); with
    /// `generated_token`, it also made up the token and wrote it to `DATA_DIR/token`.
    Created {
        /// Whether the token was generated here.
        generated_token: bool,
    },
    /// The bootstrap data existed; its signers are now in this server's `DIR/tls`.
    Joined,
}

fn random(n: usize) -> Result<Vec<u8>, BootstrapError> {
    let mut buf = vec![0u8; n];
    SystemRandom::new().fill(&mut buf).map_err(|_| BootstrapError::Random)?;
    Ok(buf)
}

/// A new random token: 24 bytes from the system RNG, hex (48 characters).
pub fn generate_token() -> Result<String, BootstrapError> {
    Ok(random(TOKEN_BYTES)?.iter().map(|b| format!("{b:02x}")).collect())
}

fn aad() -> String {
    format!("skiff bootstrap v{VERSION} {BOOTSTRAP_KEY}")
}

fn derive_key(token: &str, salt: &[u8], iterations: NonZeroU32) -> LessSafeKey {
    let mut key = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        token.as_bytes(),
        &mut key,
    );
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte AES-256 key"))
}

/// Encrypts `signers` with a key derived from `token` into the record stored under
/// [`BOOTSTRAP_KEY`] (JSON: format version, KDF name, rounds and salt, cipher, nonce,
/// ciphertext; binary fields base64).
pub fn seal(signers: &ClusterSigners, token: &str, iterations: u32) -> Result<Vec<u8>, BootstrapError> {
    let rounds = NonZeroU32::new(iterations).ok_or_else(|| BootstrapError::Malformed("zero KDF rounds".into()))?;
    let salt = random(SALT_LEN)?;
    let nonce_bytes = random(NONCE_LEN)?;
    let plain: serde_json::Map<String, Value> = signers
        .files()
        .into_iter()
        .map(|(name, pem)| (name.to_string(), Value::String(pem.to_string())))
        .collect();
    let mut data = serde_json::to_vec(&plain).expect("JSON of strings");
    let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes).expect("NONCE_LEN bytes");
    derive_key(token, &salt, rounds)
        .seal_in_place_append_tag(nonce, Aad::from(aad()), &mut data)
        .map_err(|_| BootstrapError::Malformed("encryption failed".into()))?;
    let record = json!({
        "version": VERSION,
        "kdf": {"name": KDF, "iterations": iterations, "salt": B64.encode(&salt)},
        "cipher": CIPHER,
        "nonce": B64.encode(&nonce_bytes),
        "ciphertext": B64.encode(&data),
    });
    Ok(serde_json::to_vec(&record).expect("JSON"))
}

/// Decrypts a record written by [`seal`]. Errors: [`BootstrapError::WrongToken`] when
/// authentication fails (a wrong token, or a tampered record),
/// [`BootstrapError::Malformed`] when the record is not one this version reads.
pub fn open(record: &[u8], token: &Token) -> Result<ClusterSigners, BootstrapError> {
    let bad = |what: &str| BootstrapError::Malformed(what.to_string());
    let v: Value = serde_json::from_slice(record).map_err(|e| bad(&format!("not JSON: {e}")))?;
    if v["version"].as_u64() != Some(VERSION) {
        return Err(bad(&format!(
            "format version {} (this skiff reads {VERSION})",
            v["version"]
        )));
    }
    if v["kdf"]["name"].as_str() != Some(KDF) || v["cipher"].as_str() != Some(CIPHER) {
        return Err(bad("unknown key derivation or cipher"));
    }
    let iterations = v["kdf"]["iterations"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= MAX_ITERATIONS)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| bad("KDF rounds out of range"))?;
    let field = |name: &str, v: &Value| -> Result<Vec<u8>, BootstrapError> {
        v.as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| bad(&format!("{name} is not base64")))
    };
    let salt = field("salt", &v["kdf"]["salt"])?;
    let nonce = Nonce::try_assume_unique_for_key(&field("nonce", &v["nonce"])?).map_err(|_| bad("nonce length"))?;
    let mut data = field("ciphertext", &v["ciphertext"])?;
    let plain = derive_key(&token.value, &salt, iterations)
        .open_in_place(nonce, Aad::from(aad()), &mut data)
        .map_err(|_| BootstrapError::WrongToken {
            from: token.source.clone(),
        })?;
    let files: serde_json::Map<String, Value> =
        serde_json::from_slice(plain).map_err(|e| bad(&format!("decrypted data is not JSON: {e}")))?;
    let signers = ClusterSigners::from_files(|name| files.get(name).and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| bad(&format!("it lacks one of {CLUSTER_SIGNER_FILES:?}")))?;
    signers.validate()?;
    Ok(signers)
}

/// Writes `token` to `path` (mode 0600, write-then-rename), unless it already holds it.
fn write_token_file(path: &Path, token: &str) -> Result<(), BootstrapError> {
    if std::fs::read_to_string(path).is_ok_and(|t| t.trim() == token) {
        return Ok(());
    }
    let io = |source| BootstrapError::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(format!("{token}\n").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// [`open`] off the async runtime (the key derivation takes a while by design).
async fn decrypt(record: Vec<u8>, token: &Token) -> Result<ClusterSigners, BootstrapError> {
    let token = token.clone();
    tokio::task::spawn_blocking(move || open(&record, &token))
        .await
        .expect("decrypting the bootstrap data panicked")
}

/// [`seal`] off the async runtime.
async fn encrypt(signers: &ClusterSigners, token: &Token, iterations: u32) -> Result<Vec<u8>, BootstrapError> {
    let (signers, token) = (signers.clone(), token.value.clone());
    tokio::task::spawn_blocking(move || seal(&signers, &token, iterations))
        .await
        .expect("encrypting the bootstrap data panicked")
}

/// Adopts the cluster's signers from `record`: decrypts it with `token`, refuses when a
/// signer file already in `tls_dir` differs, then writes the signers (and the token to
/// `token_file`). Nothing is written unless every check passes.
async fn join(record: Vec<u8>, token: &Token, tls_dir: &Path, token_file: &Path) -> Result<(), BootstrapError> {
    let signers = decrypt(record, token).await?;
    let cluster = signers.files();
    for (name, local) in read_local_signers(tls_dir)? {
        let (_, theirs) = cluster.iter().find(|(n, _)| *n == name).expect("a signer file");
        if local != *theirs {
            return Err(BootstrapError::LocalMismatch {
                path: tls_dir.join(name),
                file: name,
                dir: tls_dir.into(),
            });
        }
    }
    signers.write_to(tls_dir)?;
    write_token_file(token_file, &token.value)
}

/// Makes `DATA_DIR/tls` hold the cluster's signers, creating the bootstrap data in
/// `store` if this is the cluster's first server.
///
/// The token is `given` (from `--token`/`--token-file`), else `DATA_DIR/token` if it
/// exists. With bootstrap data in the store, the signers are decrypted with the token
/// and written into `DATA_DIR/tls` ([`BootstrapError::TokenRequired`] without a token,
/// [`BootstrapError::WrongToken`] with a wrong one, [`BootstrapError::LocalMismatch`]
/// if the data dir already has different signers). Without it, the signers already in
/// `DATA_DIR/tls` (a data dir from before the control plane had several servers) or new
/// ones are stored, encrypted with the token, or with a new random one written to
/// `DATA_DIR/token` (mode 0600).
pub async fn reconcile(
    store: &dyn Store,
    data_dir: &Path,
    given: Option<Token>,
    iterations: u32,
) -> Result<Outcome, BootstrapError> {
    let tls_dir = data_dir.join("tls");
    let token_file = data_dir.join("token");
    let token = match given {
        Some(t) => Some(t),
        None if token_file.exists() => Some(Token::from_file(&token_file, token_file.display().to_string())?),
        None => None,
    };
    if let Some(existing) = store.get(BOOTSTRAP_KEY).await? {
        let token = token.ok_or(BootstrapError::TokenRequired)?;
        join(existing.value, &token, &tls_dir, &token_file).await?;
        return Ok(Outcome::Joined);
    }

    // The first server: its own signers if the data dir has them, new ones otherwise.
    let local: std::collections::BTreeMap<&str, String> = read_local_signers(&tls_dir)?.into_iter().collect();
    let fresh = ClusterSigners::generate()?;
    let (ca_cert_pem, ca_key_pem) = match (local.get("ca.crt"), local.get("ca.key")) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        // As the PKI does, an incomplete CA pair is replaced.
        _ => (fresh.ca_cert_pem, fresh.ca_key_pem),
    };
    let signers = ClusterSigners {
        ca_cert_pem,
        ca_key_pem,
        service_account_key_pem: local
            .get("service-account.key")
            .cloned()
            .unwrap_or(fresh.service_account_key_pem),
    };
    signers.validate()?;
    let (token, generated_token) = match token {
        Some(t) => (t, false),
        None => (Token::new(&generate_token()?, token_file.display().to_string())?, true),
    };
    // The token is on disk before the record exists, so a create that timed out after
    // etcd applied it can be retried with the same token.
    write_token_file(&token_file, &token.value)?;
    let record = encrypt(&signers, &token, iterations).await?;
    match store.create(BOOTSTRAP_KEY, record).await {
        Ok(_) => {
            signers.write_to(&tls_dir)?;
            Ok(Outcome::Created { generated_token })
        }
        Err(skiff_store::Error::AlreadyExists(_)) => {
            // Another server won the race (or an earlier attempt of ours did).
            let existing = store
                .get(BOOTSTRAP_KEY)
                .await?
                .ok_or_else(|| BootstrapError::Malformed("it vanished while being read".into()))?;
            match join(existing.value, &token, &tls_dir, &token_file).await {
                Err(BootstrapError::WrongToken { .. }) if generated_token => {
                    let _ = std::fs::remove_file(&token_file);
                    Err(BootstrapError::LostRace)
                }
                Err(e) => Err(e),
                Ok(()) => Ok(Outcome::Joined),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Few rounds keep unit tests fast; the format stores the count.
    const ROUNDS: u32 = 1_000;

    fn token(v: &str) -> Token {
        Token::new(v, "--token").unwrap()
    }

    #[test]
    fn records_decrypt_only_with_their_token() {
        let signers = ClusterSigners::generate().unwrap();
        let record = seal(&signers, "s3cret", ROUNDS).unwrap();
        let text = String::from_utf8(record.clone()).unwrap();
        assert!(!text.contains("PRIVATE KEY") && !text.contains("CERTIFICATE"), "{text}");
        assert_eq!(open(&record, &token("s3cret")).unwrap(), signers);
        assert!(matches!(
            open(&record, &token("wrong")),
            Err(BootstrapError::WrongToken { .. })
        ));
        // Two seals of the same data differ (fresh salt and nonce).
        assert_ne!(record, seal(&signers, "s3cret", ROUNDS).unwrap());
        // A tampered ciphertext fails authentication.
        let mut v: Value = serde_json::from_slice(&record).unwrap();
        let mut ct = B64.decode(v["ciphertext"].as_str().unwrap()).unwrap();
        ct[0] ^= 1;
        v["ciphertext"] = B64.encode(&ct).into();
        assert!(matches!(
            open(&serde_json::to_vec(&v).unwrap(), &token("s3cret")),
            Err(BootstrapError::WrongToken { .. })
        ));
        assert!(matches!(
            open(b"{}", &token("s3cret")),
            Err(BootstrapError::Malformed(_))
        ));
        assert!(matches!(
            Token::new(" \n", "--token"),
            Err(BootstrapError::EmptyToken(_))
        ));
        assert_eq!(generate_token().unwrap().len(), 48);
    }

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::EmbeddedStore::open(&dir.path().join("db")).unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn servers_agree_on_one_set_of_signers() {
        let (_db, store) = store();
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        // First server without a token: one is generated and kept in DATA_DIR/token.
        let first = reconcile(&*store, a.path(), None, ROUNDS).await.unwrap();
        assert_eq!(first, Outcome::Created { generated_token: true });
        let tok = std::fs::read_to_string(a.path().join("token")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.path().join("token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Its restart finds its token file and its own signers.
        assert_eq!(
            reconcile(&*store, a.path(), None, ROUNDS).await.unwrap(),
            Outcome::Joined
        );

        // Another server without a token is told to pass one; with a wrong one it is
        // refused and nothing is written.
        let err = reconcile(&*store, b.path(), None, ROUNDS).await.unwrap_err();
        assert!(matches!(err, BootstrapError::TokenRequired), "{err}");
        assert!(err.to_string().contains("--token"), "{err}");
        let err = reconcile(&*store, b.path(), Some(token("nope")), ROUNDS)
            .await
            .unwrap_err();
        assert!(matches!(err, BootstrapError::WrongToken { .. }), "{err}");
        assert!(std::fs::read_dir(b.path()).unwrap().next().is_none());

        // With the token, it gets the same signers.
        let joined = reconcile(&*store, b.path(), Some(token(&tok)), ROUNDS).await.unwrap();
        assert_eq!(joined, Outcome::Joined);
        for f in CLUSTER_SIGNER_FILES {
            assert_eq!(
                std::fs::read(a.path().join("tls").join(f)).unwrap(),
                std::fs::read(b.path().join("tls").join(f)).unwrap(),
                "{f}"
            );
        }

        // A data dir with its own CA is refused, untouched.
        ClusterSigners::generate()
            .unwrap()
            .write_to(&c.path().join("tls"))
            .unwrap();
        let before = std::fs::read(c.path().join("tls/ca.crt")).unwrap();
        let err = reconcile(&*store, c.path(), Some(token(&tok)), ROUNDS)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BootstrapError::LocalMismatch { file: "ca.crt", .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(c.path().join("tls/ca.crt")).unwrap(), before);
    }

    #[tokio::test]
    async fn the_first_server_keeps_the_signers_its_data_dir_already_has() {
        let (_db, store) = store();
        let a = tempfile::tempdir().unwrap();
        let own = ClusterSigners::generate().unwrap();
        own.write_to(&a.path().join("tls")).unwrap();
        let out = reconcile(&*store, a.path(), Some(token("t")), ROUNDS).await.unwrap();
        assert_eq!(out, Outcome::Created { generated_token: false });
        let record = store.get(BOOTSTRAP_KEY).await.unwrap().unwrap();
        assert_eq!(open(&record.value, &token("t")).unwrap(), own);
    }

    /// A store whose first `get` of the bootstrap key answers "absent" although it
    /// exists: what a server sees when another creates the record between its read and
    /// its create.
    struct Racing {
        inner: Arc<dyn Store>,
        hidden: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Store for Racing {
        async fn get(&self, key: &str) -> skiff_store::Result<Option<skiff_store::KeyValue>> {
            if !self.hidden.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Ok(None);
            }
            self.inner.get(key).await
        }
        async fn list(
            &self,
            prefix: &str,
            opts: skiff_store::ListOptions,
        ) -> skiff_store::Result<skiff_store::ListResult> {
            self.inner.list(prefix, opts).await
        }
        async fn create(&self, key: &str, value: Vec<u8>) -> skiff_store::Result<skiff_store::KeyValue> {
            self.inner.create(key, value).await
        }
        async fn update(
            &self,
            key: &str,
            expected: skiff_store::Revision,
            value: Vec<u8>,
        ) -> skiff_store::Result<skiff_store::KeyValue> {
            self.inner.update(key, expected, value).await
        }
        async fn delete(
            &self,
            key: &str,
            expected: Option<skiff_store::Revision>,
        ) -> skiff_store::Result<skiff_store::KeyValue> {
            self.inner.delete(key, expected).await
        }
        async fn watch(
            &self,
            prefix: &str,
            after: skiff_store::Revision,
        ) -> skiff_store::Result<skiff_store::WatchStream> {
            self.inner.watch(prefix, after).await
        }
        async fn current_revision(&self) -> skiff_store::Result<skiff_store::Revision> {
            self.inner.current_revision().await
        }
        async fn compact(&self, revision: skiff_store::Revision) -> skiff_store::Result<()> {
            self.inner.compact(revision).await
        }
    }

    #[tokio::test]
    async fn a_server_that_loses_the_creation_race_adopts_the_winners_signers() {
        let (_db, store) = store();
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        reconcile(&*store, a.path(), Some(token("shared")), ROUNDS)
            .await
            .unwrap();
        let racing = |inner: &Arc<dyn Store>| Racing {
            inner: inner.clone(),
            hidden: false.into(),
        };
        // Same token: the loser's create fails, and it adopts the winner's CA.
        let out = reconcile(&racing(&store), b.path(), Some(token("shared")), ROUNDS)
            .await
            .unwrap();
        assert_eq!(out, Outcome::Joined);
        assert_eq!(
            std::fs::read(a.path().join("tls/ca.crt")).unwrap(),
            std::fs::read(b.path().join("tls/ca.crt")).unwrap()
        );
        // A generated token cannot be the winner's: a clear error, and no token file
        // or signers are left behind.
        let err = reconcile(&racing(&store), c.path(), None, ROUNDS).await.unwrap_err();
        assert!(matches!(err, BootstrapError::LostRace), "{err}");
        assert!(!c.path().join("token").exists());
        assert!(!c.path().join("tls").exists());
    }
}
