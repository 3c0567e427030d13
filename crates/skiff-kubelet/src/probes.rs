//! Container probes (readiness, liveness): httpGet, tcpSocket and exec (through CRI
//! `ExecSync`), with upstream timing and thresholds
//! (initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold,
//! failureThreshold).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cri::Cri;

/// Result of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Success,
    /// The check failed, with the reason for the `Unhealthy` event.
    Failure(String),
}

/// Probe bookkeeping for one container instance.
#[derive(Debug, Clone)]
pub struct ProbeState {
    /// Current result (readiness: ready; liveness: healthy).
    pub ok: bool,
    successes: i32,
    failures: i32,
    next: Instant,
}

impl ProbeState {
    /// State for a container that started at `started` (readiness starts not-ready,
    /// liveness starts healthy).
    pub fn new(probe: &Probe, started: Instant, initially_ok: bool) -> Self {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Self {
            ok: initially_ok,
            successes: 0,
            failures: 0,
            next: started + delay,
        }
    }

    /// Whether the probe is due.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Records an outcome; returns true when `ok` flipped.
    pub fn record(&mut self, probe: &Probe, outcome: &Outcome, now: Instant) -> bool {
        self.next = now + Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let before = self.ok;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                    self.ok = true;
                }
            }
            Outcome::Failure(_) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                    self.ok = false;
                }
            }
        }
        before != self.ok
    }
}

fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs a probe against a container with pod IP `pod_ip`.
pub async fn run(probe: &Probe, container: &Container, pod_ip: &str, container_id: &str, cri: &Cri) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(h) = &probe.http_get {
        let Some(port) = resolve_port(&h.port, container) else {
            return Outcome::Failure(format!("invalid port {:?}", h.port));
        };
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let url = format!("{scheme}://{host}:{port}{path}");
        if scheme != "http" {
            return Outcome::Failure(format!("probe scheme {scheme} is not supported yet"));
        }
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let mut req = http::Request::get(&url).header("User-Agent", "kube-probe/1.33");
        for hdr in h.http_headers.as_deref().unwrap_or_default() {
            req = req.header(hdr.name.as_str(), hdr.value.as_str());
        }
        let Ok(req) = req.body(http_body_util::Empty::new()) else {
            return Outcome::Failure(format!("invalid probe request for {url}"));
        };
        return match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => Outcome::Failure(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Ok(Err(e)) => Outcome::Failure(format!("Get \"{url}\": {e}")),
            Ok(Ok(resp)) if (200..400).contains(&resp.status().as_u16()) => Outcome::Success,
            Ok(Ok(resp)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {}", resp.status().as_u16())),
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let Some(port) = resolve_port(&t.port, container) else {
            return Outcome::Failure(format!("invalid port {:?}", t.port));
        };
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(e) = &probe.exec {
        let req = k8s_cri::v1::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: e.command.clone().unwrap_or_default(),
            timeout: timeout.as_secs() as i64,
        };
        return match cri.runtime.clone().exec_sync(req).await {
            Ok(r) => {
                let r = r.into_inner();
                if r.exit_code == 0 {
                    Outcome::Success
                } else {
                    Outcome::Failure(format!(
                        "command {:?} exited with {}: {}",
                        e.command.clone().unwrap_or_default(),
                        r.exit_code,
                        String::from_utf8_lossy(&r.stderr).trim()
                    ))
                }
            }
            Err(s) => Outcome::Failure(s.message().to_string()),
        };
    }
    Outcome::Failure("probe has no handler (grpc probes are not supported yet)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flip_state() {
        let probe = Probe {
            failure_threshold: Some(2),
            success_threshold: Some(1),
            period_seconds: Some(1),
            ..Default::default()
        };
        let now = Instant::now();
        let mut s = ProbeState::new(&probe, now, false);
        assert!(s.due(now));
        assert!(s.record(&probe, &Outcome::Success, now));
        assert!(s.ok);
        assert!(!s.due(now));
        assert!(!s.record(&probe, &Outcome::Failure("x".into()), now));
        assert!(s.ok, "one failure is below the threshold");
        assert!(s.record(&probe, &Outcome::Failure("x".into()), now));
        assert!(!s.ok);
    }
}
