//! Mapping of etcd client failures onto [`crate::Error`].
//!
//! Connection failures, timeouts and a cluster without a leader are
//! [`Error::Unavailable`] (retryable, reported by `/readyz`); etcd's "required
//! revision has been compacted" and "is a future revision" answers are recognised by
//! their upstream messages (`mvcc.ErrCompacted`, `mvcc.ErrFutureRev`) so callers can
//! turn them into [`Error::Compacted`] and [`Error::FutureRevision`].

use std::future::Future;
use std::time::Duration;

use tonic::Code;

use crate::Error;

/// What an etcd failure means for the store.
#[derive(Debug)]
pub(super) enum Failure {
    /// `mvcc: required revision has been compacted`.
    Compacted,
    /// `mvcc: required revision is a future revision`.
    FutureRevision,
    /// Any other failure, already mapped.
    Other(Error),
}

/// Classifies an etcd client error; `endpoints` names the cluster in
/// [`Error::Unavailable`].
pub(super) fn classify(e: etcd_client::Error, endpoints: &str) -> Failure {
    let unavailable = |reason: String| {
        Failure::Other(Error::Unavailable {
            endpoints: endpoints.to_string(),
            reason,
        })
    };
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message();
            if msg.contains("required revision has been compacted") {
                return Failure::Compacted;
            }
            if msg.contains("required revision is a future revision") {
                return Failure::FutureRevision;
            }
            let lost_quorum = ["no leader", "timed out", "leader changed", "not capable"]
                .iter()
                .any(|m| msg.contains(m));
            if lost_quorum || matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled) {
                unavailable(describe_status(&s))
            } else {
                Failure::Other(Error::Backend(format!("etcd: {}", describe_status(&s))))
            }
        }
        etcd_client::Error::TransportError(t) => unavailable(format!("transport error: {t}")),
        etcd_client::Error::IoError(io) => unavailable(format!("i/o error: {io}")),
        other => Failure::Other(Error::Backend(format!("etcd: {other}"))),
    }
}

fn describe_status(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    }
}

/// Runs one etcd request with the store's request timeout: past `limit` the request is
/// abandoned and the result is [`Error::Unavailable`] naming `endpoints`.
pub(super) async fn bounded<T>(
    limit: Duration,
    endpoints: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(e, endpoints)),
        Err(_) => Err(Failure::Other(Error::Unavailable {
            endpoints: endpoints.to_string(),
            reason: format!("no answer within {}s", limit.as_secs_f32()),
        })),
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Other(e) => e,
            Failure::Compacted => Error::Backend("etcd: required revision has been compacted".into()),
            Failure::FutureRevision => Error::Backend("etcd: required revision is a future revision".into()),
        }
    }
}
