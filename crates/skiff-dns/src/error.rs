//! Errors of the DNS component.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop [`crate::run`] or fail one of its steps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster domain (`--cluster-domain`) is not a valid DNS name.
    #[error("cluster domain {domain:?} is not a valid DNS name")]
    InvalidDomain {
        /// The domain as configured.
        domain: String,
        /// Why hickory rejected it.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// The UDP or TCP socket of the DNS server could not be bound (port 53 needs
    /// `CAP_NET_BIND_SERVICE`; another resolver may already hold the address).
    #[error("binding the DNS server to {protocol}/{addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The resolver configuration naming the upstream servers could not be read.
    #[error("reading upstream resolvers from {path}")]
    ResolvConf {
        /// The file that was read (normally `/etc/resolv.conf`).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A request to the apiserver failed (registration of the `kube-dns` Service,
    /// its EndpointSlice or Endpoints).
    #[error("{action}")]
    Kube {
        /// What was being done, e.g. `creating Service kube-system/kube-dns`.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The DNS server's sockets failed while serving.
    #[error("DNS server stopped")]
    Server(#[source] hickory_server::net::NetError),
}

/// `e` followed by each of its sources, joined by `: `, for log lines.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
