//! Leader election over a `coordination.k8s.io/v1` Lease, with the semantics of
//! upstream client-go's `tools/leaderelection` package (the `LeaseLock` resource
//! lock), so that several `skiff server` processes sharing one datastore run one
//! controller manager and one scheduler between them.
//!
//! - Every candidate has an identity `<hostname>_<uuid>` ([`default_identity`]).
//! - A candidate takes the lease when it does not exist, when its holder is empty
//!   (released), when it is already ours, or when it has *expired*: the lease's
//!   record has not changed for `leaseDurationSeconds` as measured on the local
//!   monotonic clock from the moment this candidate first observed that record.
//!   Like client-go, the `renewTime` written by another machine is never compared
//!   with the local wall clock, so clock skew between servers does not matter.
//! - Writes are optimistic: a create fails when someone else created first, an
//!   update carries the observed `resourceVersion` and fails on conflict; either
//!   way the attempt counts as "not acquired" and is retried.
//! - `leaseTransitions` is incremented whenever the holder changes;
//!   `acquireTime` is set when a candidate takes the lease and kept on renewal;
//!   `renewTime` is written on every successful attempt. Both are `MicroTime`.
//! - The leader renews every `retryPeriod`; when no renewal has succeeded for
//!   `renewDeadline` it has lost the lease (it also gives up at once when a read
//!   shows another holder, which upstream notices only at the deadline): the work's [`CancellationToken`] is
//!   cancelled, the elector waits for the work to return and campaigns again.
//!   (Upstream components exit at that point and are restarted by their
//!   supervisor; inside one binary, stopping the loops and campaigning again is
//!   the equivalent that does not take the apiserver and kubelet down with it.)
//! - When the caller's shutdown token is cancelled, the work is cancelled, and
//!   with [`Config::release_on_cancel`] (client-go's `ReleaseOnCancel`) the lease
//!   is released — holder cleared, `leaseDurationSeconds` 1 — so that another
//!   candidate takes over at its next attempt instead of waiting for expiry.
//!
//! The decision itself ([`decide`]) and the record written for it
//! ([`desired_spec`], [`released_spec`]) are pure functions, unit-tested below;
//! [`LeaderElector`] adds the API calls and timers.
#![deny(missing_docs)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Upstream's default `--leader-elect-lease-duration` (15 s).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Upstream's default `--leader-elect-renew-deadline` (10 s).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Upstream's default `--leader-elect-retry-period` (2 s).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// client-go's `JitterFactor`: a candidate that is not leading waits between
/// `retryPeriod` and `retryPeriod * (1 + 1.2)` between attempts.
pub const JITTER_FACTOR: f64 = 1.2;
/// The namespace of the control-plane leases (`kube-system`).
pub const LEASE_NAMESPACE: &str = "kube-system";

/// An invalid election configuration (the checks of client-go's
/// `NewLeaderElector`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `leaseDuration` must be longer than `renewDeadline`, or a leader could
    /// still be renewing after others consider the lease expired.
    #[error("lease duration ({lease:?}) must be greater than the renew deadline ({renew:?})")]
    LeaseNotLongerThanRenew {
        /// The configured lease duration.
        lease: Duration,
        /// The configured renew deadline.
        renew: Duration,
    },
    /// `renewDeadline` must be longer than `retryPeriod * 1.2`, so that at least
    /// one retry fits in the deadline.
    #[error("renew deadline ({renew:?}) must be greater than retry period * {JITTER_FACTOR} ({retry:?})")]
    RenewNotLongerThanRetry {
        /// The configured renew deadline.
        renew: Duration,
        /// The configured retry period.
        retry: Duration,
    },
    /// The lease duration is written as whole seconds and must be at least 1 s.
    #[error("lease duration must be at least one second, got {0:?}")]
    LeaseTooShort(Duration),
    /// The identity, namespace and name must be non-empty.
    #[error("leader election {0} must not be empty")]
    Empty(&'static str),
}

/// What to campaign for and how (client-go's `LeaderElectionConfig`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespace of the Lease, `kube-system` for the control plane.
    pub namespace: String,
    /// Name of the Lease, e.g. `kube-controller-manager` or `kube-scheduler`.
    pub name: String,
    /// This candidate's `holderIdentity`; unique per process.
    pub identity: String,
    /// How long a record must stay unchanged before others may take the lease;
    /// written as `leaseDurationSeconds` (whole seconds, rounded down).
    pub lease_duration: Duration,
    /// How long the leader keeps retrying a failing renewal before it gives up
    /// leadership.
    pub renew_deadline: Duration,
    /// Time between attempts (to acquire, or to renew while leading).
    pub retry_period: Duration,
    /// Release the lease when the shutdown token is cancelled (client-go's
    /// `ReleaseOnCancel`).
    pub release_on_cancel: bool,
}

impl Config {
    /// A configuration for the Lease `namespace/name` with the upstream default
    /// durations (15 s / 10 s / 2 s), a fresh [`default_identity`] and
    /// release on cancel, as the upstream control-plane components set it.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: default_identity(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            release_on_cancel: true,
        }
    }

    /// Checks the relations between the durations that client-go enforces.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.namespace.is_empty() {
            return Err(ConfigError::Empty("namespace"));
        }
        if self.name.is_empty() {
            return Err(ConfigError::Empty("lease name"));
        }
        if self.identity.is_empty() {
            return Err(ConfigError::Empty("identity"));
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(ConfigError::LeaseTooShort(self.lease_duration));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::LeaseNotLongerThanRenew {
                lease: self.lease_duration,
                renew: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64() <= self.retry_period.as_secs_f64() * JITTER_FACTOR {
            return Err(ConfigError::RenewNotLongerThanRetry {
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// `<hostname>_<uuid v4>`, the identity upstream components use (the uuid makes
/// two processes on one host distinct). The host name is `localhost` when the
/// system does not report one.
pub fn default_identity() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// What a candidate should do with the lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it, holding it with 0 transitions.
    Create,
    /// We hold it: write a new `renewTime`, keeping `acquireTime` and
    /// `leaseTransitions`.
    Renew,
    /// It is released or expired: take it over, `leaseTransitions` + 1.
    Acquire,
    /// Someone else holds a lease that has not expired.
    Wait {
        /// The current holder.
        holder: String,
        /// How long, at the earliest, until it may expire.
        expires_in: Duration,
    },
}

/// The pure acquire-or-renew decision of client-go's `tryAcquireOrRenew`.
///
/// `current` is the lease's spec as read (`None` when the lease does not exist);
/// `since_observed` is how long ago, on the local monotonic clock, this candidate
/// first saw the record in that exact state (zero when it just changed).
pub fn decide(current: Option<&LeaseSpec>, since_observed: Duration, identity: &str) -> Decision {
    let Some(spec) = current else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    if since_observed < duration {
        return Decision::Wait {
            holder: holder.to_string(),
            expires_in: duration - since_observed,
        };
    }
    Decision::Acquire
}

/// The spec a candidate writes for a [`Decision`] other than `Wait`; `now` is the
/// wall-clock time stored as `renewTime` (and `acquireTime` when taking the lease).
/// Returns `None` for `Wait`.
pub fn desired_spec(
    decision: &Decision,
    current: Option<&LeaseSpec>,
    identity: &str,
    lease_duration_seconds: i32,
    now: jiff::Timestamp,
) -> Option<LeaseSpec> {
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    let (acquire_time, lease_transitions) = match decision {
        Decision::Wait { .. } => return None,
        Decision::Create => (MicroTime(now), 0),
        Decision::Renew => (
            current.and_then(|s| s.acquire_time.clone()).unwrap_or(MicroTime(now)),
            transitions,
        ),
        Decision::Acquire => (MicroTime(now), transitions.saturating_add(1)),
    };
    Some(LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(lease_duration_seconds),
        acquire_time: Some(acquire_time),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(lease_transitions),
        ..LeaseSpec::default()
    })
}

/// The spec of a released lease (client-go's `release`): no holder, a lease
/// duration of 1 s, both times `now`, the transition count kept.
pub fn released_spec(current: Option<&LeaseSpec>, now: jiff::Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(current.and_then(|s| s.lease_transitions).unwrap_or(0)),
        ..LeaseSpec::default()
    }
}

/// The lease as last read or written, and when its record last changed.
struct Observed {
    lease: Lease,
    at: Instant,
}

/// The outcome of one acquire-or-renew attempt.
#[derive(Debug)]
enum Attempt {
    /// We hold the lease now.
    Held,
    /// Another candidate holds an unexpired lease.
    HeldBy(String),
    /// Another write won the race (409 on create or update); retried.
    Conflict,
}

/// How a period of leadership ended.
enum Ended<T> {
    /// The caller's shutdown token was cancelled.
    Shutdown,
    /// Renewal failed for longer than the renew deadline.
    Lost,
    /// The work returned on its own.
    WorkDone(T),
}

/// A candidate for one Lease: campaigns, runs the caller's work while it leads
/// and stops it when leadership ends (client-go's `LeaderElector`).
pub struct LeaderElector {
    api: Api<Lease>,
    config: Config,
    observed: Option<Observed>,
}

impl LeaderElector {
    /// A candidate using `client` (which needs `create` on leases and `get`,
    /// `update` on this one) for the lease in `config`.
    pub fn new(client: kube::Client, config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        })
    }

    /// This candidate's `holderIdentity`.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Whether the last lease read or written names this candidate as holder.
    pub fn is_leader(&self) -> bool {
        self.observed.as_ref().is_some_and(|o| {
            o.lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.config.identity.as_str())
        })
    }

    /// Campaigns until `shutdown` is cancelled. Each time this candidate becomes
    /// leader it calls `work` with a token that is cancelled when leadership is
    /// lost or on shutdown, and waits for the work's future to finish before
    /// campaigning again. If the work returns on its own, the lease is released
    /// (with `release_on_cancel`) and its result is returned; after shutdown
    /// the result is `Ok(())`.
    pub async fn run<F, Fut, E>(mut self, shutdown: CancellationToken, mut work: F) -> Result<(), E>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        loop {
            if !self.acquire(&shutdown).await {
                return Ok(());
            }
            tracing::info!(
                lease = %format!("{}/{}", self.config.namespace, self.config.name),
                identity = %self.config.identity,
                "became leader"
            );
            let leading = shutdown.child_token();
            let ended = {
                let work = work(leading.clone());
                tokio::pin!(work);
                let ended = tokio::select! {
                    r = &mut work => Ended::WorkDone(r),
                    lost = self.renew_loop(&shutdown) => if lost { Ended::Lost } else { Ended::Shutdown },
                };
                leading.cancel();
                if !matches!(ended, Ended::WorkDone(_)) {
                    // Wait for the loops to stop before anyone else may start theirs.
                    let _ = (&mut work).await;
                }
                ended
            };
            match ended {
                Ended::Lost => {
                    tracing::warn!(
                        lease = %format!("{}/{}", self.config.namespace, self.config.name),
                        identity = %self.config.identity,
                        "lost leadership; stopped the leader's work and campaigning again"
                    );
                }
                Ended::Shutdown => {
                    self.step_down().await;
                    return Ok(());
                }
                Ended::WorkDone(r) => {
                    self.step_down().await;
                    return r;
                }
            }
        }
    }

    /// Retries with jitter until the lease is ours (`true`) or `shutdown` is
    /// cancelled (`false`).
    async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        let mut last_holder: Option<String> = None;
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => return true,
                Ok(Attempt::Conflict) => {}
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_deref() != Some(holder.as_str()) {
                        tracing::info!(
                            lease = %format!("{}/{}", self.config.namespace, self.config.name),
                            identity = %self.config.identity,
                            %holder,
                            "lease is held by another candidate; waiting"
                        );
                        last_holder = Some(holder);
                    }
                }
                Err(e) => tracing::warn!(
                    lease = %format!("{}/{}", self.config.namespace, self.config.name),
                    error = %e,
                    "failed to acquire the lease; retrying"
                ),
            }
            let jitter = self.config.retry_period.mul_f64(JITTER_FACTOR * rand::random::<f64>());
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.config.retry_period + jitter) => {}
            }
        }
    }

    /// Renews every retry period while leading. Returns `true` when leadership
    /// was lost (no successful renewal within the renew deadline), `false` when
    /// `shutdown` was cancelled.
    async fn renew_loop(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
            let deadline = Instant::now() + self.config.renew_deadline;
            loop {
                let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew());
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    r = attempt => r,
                };
                match result {
                    Ok(Ok(Attempt::Held)) => break,
                    Ok(Ok(Attempt::HeldBy(holder))) => {
                        tracing::warn!(identity = %self.config.identity, %holder, "the lease is held by another candidate");
                        return true;
                    }
                    Ok(Ok(Attempt::Conflict)) => {
                        tracing::debug!("conflict renewing the lease; retrying")
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "failed to renew the lease; retrying"),
                    Err(_elapsed) => return true,
                }
                let next = Instant::now() + self.config.retry_period;
                if next >= deadline {
                    return true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep_until(next) => {}
                }
            }
        }
    }

    /// One attempt: read the lease, decide, write; `Err` when an API call failed.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = Instant::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: desired_spec(
                    &Decision::Create,
                    None,
                    &self.config.identity,
                    self.config.lease_duration_seconds(),
                    jiff::Timestamp::now(),
                ),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observed = Some(Observed {
                        lease: created,
                        at: now,
                    });
                    Ok(Attempt::Held)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        // The local observation time moves only when the record changes.
        let changed = self.observed.as_ref().is_none_or(|o| o.lease.spec != current.spec);
        if changed {
            self.observed = Some(Observed {
                lease: current.clone(),
                at: now,
            });
        }
        let since = self.observed.as_ref().map_or(Duration::ZERO, |o| now - o.at);
        let decision = decide(current.spec.as_ref(), since, &self.config.identity);
        let Some(spec) = desired_spec(
            &decision,
            current.spec.as_ref(),
            &self.config.identity,
            self.config.lease_duration_seconds(),
            jiff::Timestamp::now(),
        ) else {
            let Decision::Wait { holder, .. } = decision else {
                unreachable!("only Wait has no desired spec")
            };
            return Ok(Attempt::HeldBy(holder));
        };
        let mut lease = current;
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observed = Some(Observed {
                    lease: updated,
                    at: Instant::now(),
                });
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// After leading: release the lease if configured and still ours. The write
    /// uses the last observed lease; if that is stale (409) the lease is read
    /// again and released only if it still names this candidate. Each call is
    /// bounded by the renew deadline so that shutdown cannot hang on it.
    async fn step_down(&mut self) {
        if !self.config.release_on_cancel || !self.is_leader() {
            return;
        }
        let Some(observed) = self.observed.take() else {
            return;
        };
        let limit = self.config.renew_deadline;
        let params = PostParams::default();
        let mut lease = observed.lease;
        for _ in 0..2 {
            let mut released = lease.clone();
            released.spec = Some(released_spec(lease.spec.as_ref(), jiff::Timestamp::now()));
            let write = self.api.replace(&self.config.name, &params, &released);
            let err = match tokio::time::timeout(limit, write).await {
                Ok(Ok(_)) => {
                    tracing::info!(
                        lease = %format!("{}/{}", self.config.namespace, self.config.name),
                        identity = %self.config.identity,
                        "released the lease"
                    );
                    return;
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                    match tokio::time::timeout(limit, self.api.get_opt(&self.config.name)).await {
                        Ok(Ok(Some(fresh)))
                            if fresh.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                                == Some(self.config.identity.as_str()) =>
                        {
                            lease = fresh;
                            continue;
                        }
                        // Someone else holds it now, or it is gone: nothing to release.
                        Ok(Ok(_)) => return,
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".to_string(),
                    }
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            tracing::warn!(error = %err, "failed to release the lease; others take it when it expires");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, duration: i32, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(transitions),
            acquire_time: Some(MicroTime("2025-01-01T00:00:00Z".parse().unwrap())),
            renew_time: Some(MicroTime("2025-01-01T00:00:05Z".parse().unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let s = Duration::from_secs;
        let cases: Vec<(&str, Option<LeaseSpec>, Duration, Decision)> = vec![
            ("absent", None, s(0), Decision::Create),
            ("ours, fresh", Some(spec(Some("me"), 15, 3)), s(1), Decision::Renew),
            ("ours, expired", Some(spec(Some("me"), 15, 3)), s(60), Decision::Renew),
            (
                "released (empty holder)",
                Some(spec(Some(""), 1, 3)),
                s(0),
                Decision::Acquire,
            ),
            ("released (no holder)", Some(spec(None, 1, 3)), s(0), Decision::Acquire),
            (
                "other, just observed",
                Some(spec(Some("other"), 15, 3)),
                s(0),
                Decision::Wait {
                    holder: "other".into(),
                    expires_in: s(15),
                },
            ),
            (
                "other, observed 14 s ago",
                Some(spec(Some("other"), 15, 3)),
                s(14),
                Decision::Wait {
                    holder: "other".into(),
                    expires_in: s(1),
                },
            ),
            (
                "other, unchanged for the lease duration",
                Some(spec(Some("other"), 15, 3)),
                s(15),
                Decision::Acquire,
            ),
            (
                "other, unchanged for longer",
                Some(spec(Some("other"), 15, 3)),
                s(40),
                Decision::Acquire,
            ),
            (
                "other, no duration",
                Some(LeaseSpec {
                    holder_identity: Some("other".into()),
                    ..LeaseSpec::default()
                }),
                s(0),
                Decision::Acquire,
            ),
        ];
        for (name, current, since, want) in cases {
            assert_eq!(decide(current.as_ref(), since, "me"), want, "{name}");
        }
    }

    #[test]
    fn desired_specs() {
        let now: jiff::Timestamp = "2025-01-01T00:01:00.123456Z".parse().unwrap();
        let old = spec(Some("other"), 15, 3);
        let ours = spec(Some("me"), 15, 3);
        // (name, decision, current, holder, acquire time kept?, transitions)
        let cases: Vec<(&str, Decision, Option<&LeaseSpec>, bool, i32)> = vec![
            ("create", Decision::Create, None, false, 0),
            (
                "renew keeps acquireTime and transitions",
                Decision::Renew,
                Some(&ours),
                true,
                3,
            ),
            ("take over counts a transition", Decision::Acquire, Some(&old), false, 4),
        ];
        for (name, decision, current, keeps_acquire, transitions) in cases {
            let got = desired_spec(&decision, current, "me", 15, now).unwrap();
            assert_eq!(got.holder_identity.as_deref(), Some("me"), "{name}");
            assert_eq!(got.lease_duration_seconds, Some(15), "{name}");
            assert_eq!(got.renew_time, Some(MicroTime(now)), "{name}");
            assert_eq!(got.lease_transitions, Some(transitions), "{name}");
            let want_acquire = if keeps_acquire {
                ours.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            };
            assert_eq!(got.acquire_time, want_acquire, "{name}");
        }
        let wait = Decision::Wait {
            holder: "other".into(),
            expires_in: Duration::from_secs(1),
        };
        assert_eq!(desired_spec(&wait, Some(&old), "me", 15, now), None);
    }

    #[test]
    fn release() {
        let now: jiff::Timestamp = "2025-01-01T00:01:00Z".parse().unwrap();
        let got = released_spec(Some(&spec(Some("me"), 15, 7)), now);
        assert_eq!(got.holder_identity, None);
        assert_eq!(got.lease_duration_seconds, Some(1));
        assert_eq!(got.lease_transitions, Some(7));
        assert_eq!(got.renew_time, Some(MicroTime(now)));
        // A released lease is free for the next candidate at once.
        assert_eq!(decide(Some(&got), Duration::ZERO, "next"), Decision::Acquire);
    }

    #[test]
    fn config_validation() {
        let s = Duration::from_secs;
        let base = Config::new("kube-system", "kube-scheduler");
        assert_eq!(base.validate(), Ok(()));
        let with = |lease, renew, retry| Config {
            lease_duration: lease,
            renew_deadline: renew,
            retry_period: retry,
            ..base.clone()
        };
        assert!(matches!(
            with(s(10), s(10), s(2)).validate(),
            Err(ConfigError::LeaseNotLongerThanRenew { .. })
        ));
        assert!(matches!(
            with(s(15), s(2), s(2)).validate(),
            Err(ConfigError::RenewNotLongerThanRetry { .. })
        ));
        assert!(matches!(
            with(
                Duration::from_millis(500),
                Duration::from_millis(400),
                Duration::from_millis(100)
            )
            .validate(),
            Err(ConfigError::LeaseTooShort(_))
        ));
        let mut no_id = base.clone();
        no_id.identity.clear();
        assert_eq!(no_id.validate(), Err(ConfigError::Empty("identity")));
    }

    #[test]
    fn identity_shape() {
        let a = default_identity();
        let b = default_identity();
        assert_ne!(a, b);
        let (host, id) = a.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert!(uuid::Uuid::parse_str(id).is_ok());
    }
}
