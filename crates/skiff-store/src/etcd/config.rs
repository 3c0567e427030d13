//! Connection settings of the etcd engine: endpoints, TLS files and timeouts.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

/// Client TLS to etcd, as PEM files (upstream kube-apiserver's `--etcd-cafile`,
/// `--etcd-certfile`, `--etcd-keyfile`; k3s's `--datastore-cafile` and friends).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA bundle that signed the etcd members' serving certificates (`None`: the
    /// system's roots are not consulted, so a CA is needed for `https` endpoints).
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented to etcd (with `key_file`), for
    /// `--client-cert-auth` clusters.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl EtcdTls {
    /// Whether any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// How to reach an etcd v3 cluster.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Member URLs, `http://host:port` or `https://host:port` (see [`EtcdConfig::parse`]).
    pub endpoints: Vec<String>,
    /// TLS settings; with any set, `etcd://` endpoints use `https`.
    pub tls: EtcdTls,
    /// Upper bound of one request (reads, writes, a watch's creation); past it the
    /// request fails with [`Error::Unavailable`]. Default 5 s.
    pub request_timeout: Duration,
    /// Upper bound of establishing a connection to one member. Default 2 s.
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    /// Parses `--datastore-endpoint`: comma-separated URLs with scheme `etcd://`
    /// (plain, or TLS when `tls` has any file set), `http://` or `https://`, e.g.
    /// `etcd://127.0.0.1:2379,etcd://127.0.0.1:22379`. Timeouts get their defaults.
    ///
    /// Errors: [`Error::Backend`] naming the bad entry for an empty list, another
    /// scheme, a missing host, or `https` without a CA file.
    pub fn parse(spec: &str, tls: EtcdTls) -> Result<Self> {
        let mut endpoints = Vec::new();
        for raw in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (scheme, rest) = raw
                .split_once("://")
                .ok_or_else(|| Error::Backend(format!("datastore endpoint {raw:?}: expected etcd://host:port")))?;
            let scheme = match scheme {
                "etcd" if tls.is_set() => "https",
                "etcd" | "http" => "http",
                "https" => "https",
                other => {
                    return Err(Error::Backend(format!(
                        "datastore endpoint {raw:?}: unsupported scheme {other:?} (use etcd://, http:// or https://)"
                    )));
                }
            };
            let host = rest.trim_end_matches('/');
            if host.is_empty() || host.contains('/') {
                return Err(Error::Backend(format!(
                    "datastore endpoint {raw:?}: expected scheme://host:port"
                )));
            }
            if scheme == "https" && tls.ca_file.is_none() {
                return Err(Error::Backend(format!(
                    "datastore endpoint {raw:?} uses TLS: --datastore-cafile is required"
                )));
            }
            endpoints.push(format!("{scheme}://{host}"));
        }
        if endpoints.is_empty() {
            return Err(Error::Backend(format!(
                "datastore endpoint {spec:?}: no endpoint given"
            )));
        }
        Ok(Self {
            endpoints,
            tls,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_map_to_urls() {
        let c = EtcdConfig::parse("etcd://127.0.0.1:2379, http://a:1", EtcdTls::default()).unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379", "http://a:1"]);
        let tls = EtcdTls {
            ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        let c = EtcdConfig::parse("etcd://h:2379", tls).unwrap();
        assert_eq!(c.endpoints, ["https://h:2379"]);
    }

    #[test]
    fn bad_endpoints_are_named() {
        for bad in ["", "127.0.0.1:2379", "mysql://h:1", "etcd://", "https://h:1"] {
            let e = EtcdConfig::parse(bad, EtcdTls::default()).unwrap_err().to_string();
            assert!(e.contains("datastore endpoint"), "{bad}: {e}");
        }
    }
}
