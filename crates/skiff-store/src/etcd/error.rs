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

/// Which failures a request may be retried after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads: any failure that means "unavailable" (nothing changes by asking again).
    Read,
    /// Writes: only failures where etcd certainly did not receive or apply the
    /// request (no connection could be made; etcd refused it for lack of a leader),
    /// so a retried create never answers "already exists" for its own first attempt.
    Write,
}

/// Whether `e` says the request never reached a member that could apply it.
fn not_sent(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        etcd_client::Error::TransportError(t) => format!("{t:?}"),
        _ => return false,
    };
    [
        "connect error",
        "error trying to connect",
        "Connection refused",
        "no leader",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// Runs one etcd request with the store's request timeout, retrying failures that
/// `retry` allows (another member may answer, or an election may finish) until the
/// timeout. Past `limit` the result is [`Error::Unavailable`] naming `endpoints` and
/// the last failure.
pub(super) async fn bounded<T, F>(
    limit: Duration,
    endpoints: &str,
    retry: Retry,
    mut request: impl FnMut() -> F,
) -> Result<T, Failure>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = None;
    loop {
        let failure = match tokio::time::timeout_at(deadline, request()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => {
                let again = not_sent(&e);
                match classify(e, endpoints) {
                    Failure::Other(Error::Unavailable { reason, .. }) if again || retry == Retry::Read => reason,
                    f => return Err(f),
                }
            }
            Err(_) => String::new(),
        };
        if !failure.is_empty() {
            last = Some(failure);
        }
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            let waited = format!("no answer within {}s", limit.as_secs_f32());
            return Err(Failure::Other(Error::Unavailable {
                endpoints: endpoints.to_string(),
                reason: last.map_or(waited.clone(), |l| format!("{waited}; last error: {l}")),
            }));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Pause between attempts of a retried request.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Other(e) => e,
            Failure::Compacted => Error::Backend("etcd: required revision has been compacted".into()),
            Failure::FutureRevision => Error::Backend("etcd: required revision is a future revision".into()),
        }
    }
}
