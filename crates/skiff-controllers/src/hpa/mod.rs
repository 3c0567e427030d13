//! The HorizontalPodAutoscaler controller (upstream pkg/controller/podautoscaler).
//!
//! Every sync period (15 s by default, `--horizontal-pod-autoscaler-sync-period`)
//! each `autoscaling/v2` HorizontalPodAutoscaler is reconciled:
//! 1. the target's `scale` subresource gives its replicas and pod selector
//!    (Deployment, ReplicaSet, StatefulSet, ReplicationController, or any
//!    resource discovery finds with a `scale` subresource);
//! 2. each `Resource` / `ContainerResource` metric (cpu or memory, `Utilization`
//!    of requests or `AverageValue`) is read from `metrics.k8s.io` through the
//!    apiserver and turned into a replica count by [`replicas`]; the highest wins;
//! 3. [`behavior`] stabilizes and rate-limits it and applies min/max;
//! 4. a changed count is written to the target's `scale`, with the event
//!    `SuccessfulRescale` ("New size: N; reason: ..."), and `status`
//!    (currentReplicas, desiredReplicas, currentMetrics, lastScaleTime,
//!    conditions AbleToScale, ScalingActive, ScalingLimited) is updated.
//!
//! `Pods`, `Object` and `External` metrics need a custom or external metrics API,
//! which Skiff does not serve: they are reported invalid (ScalingActive false) as
//! upstream does when those APIs are absent.

pub mod behavior;
pub mod replicas;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscaler, MetricSpec, MetricTarget};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

use behavior::{Behavior, History, Policy, PolicyType, Rules, SelectPolicy};
use replicas::{PodInfo, PodMetric, Target};

/// Upstream's default `--horizontal-pod-autoscaler-sync-period`.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(15);
const COMPONENT: &str = "horizontal-pod-autoscaler";

/// Runs the controller until `shutdown`, reconciling every HPA each `sync_period`.
pub async fn run(client: kube::Client, sync_period: Duration, shutdown: CancellationToken) {
    let mut histories: HashMap<String, History> = HashMap::new();
    let mut tick = tokio::time::interval(sync_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let hpas = match Api::<HorizontalPodAutoscaler>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                tracing::debug!(error = %e, "listing horizontal pod autoscalers");
                continue;
            }
        };
        let live: Vec<String> = hpas.iter().filter_map(|h| h.metadata.uid.clone()).collect();
        histories.retain(|k, _| live.contains(k));
        for hpa in hpas {
            let uid = hpa.metadata.uid.clone().unwrap_or_default();
            let history = histories.entry(uid).or_default();
            if let Err(e) = reconcile(&client, &hpa, history).await {
                tracing::debug!(
                    hpa = hpa.metadata.name.as_deref().unwrap_or_default(),
                    error = %e,
                    "reconciling horizontal pod autoscaler"
                );
            }
        }
    }
}

/// The REST resource of a scale target (`scaleTargetRef`).
async fn target_resource(client: &kube::Client, api_version: &str, kind: &str) -> Result<ApiResource, String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let builtin = match (group, kind) {
        ("apps", "Deployment") => Some("deployments"),
        ("apps", "ReplicaSet") => Some("replicasets"),
        ("apps", "StatefulSet") => Some("statefulsets"),
        ("", "ReplicationController") => Some("replicationcontrollers"),
        _ => None,
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    if let Some(plural) = builtin {
        return Ok(ApiResource::from_gvk_with_plural(&gvk, plural));
    }
    kube::discovery::pinned_kind(client, &gvk)
        .await
        .map(|(ar, _)| ar)
        .map_err(|e| format!("unable to find the scale subresource of {kind}.{group}: {e}"))
}

/// A condition entry, keeping `lastTransitionTime` of an unchanged status.
fn condition(old: &[Value], type_: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    json!({"type": type_, "status": status, "lastTransitionTime": since, "reason": reason, "message": message})
}

/// What one sync decided, written to `status`.
struct Outcome {
    conditions: Vec<(&'static str, bool, String, String)>,
    current_replicas: i32,
    desired_replicas: i32,
    current_metrics: Option<Vec<Value>>,
    scaled: bool,
}

impl Outcome {
    fn set(&mut self, type_: &'static str, status: bool, reason: &str, message: impl Into<String>) {
        self.conditions.retain(|c| c.0 != type_);
        self.conditions
            .push((type_, status, reason.to_string(), message.into()));
    }
}

async fn write_status(client: &kube::Client, hpa: &HorizontalPodAutoscaler, out: &Outcome) -> Result<(), kube::Error> {
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let name = hpa.metadata.name.clone().unwrap_or_default();
    let now = Timestamp::now().to_string();
    let old: Vec<Value> = hpa
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
        .unwrap_or_default();
    let conditions: Vec<Value> = out
        .conditions
        .iter()
        .map(|(t, s, r, m)| condition(&old, t, *s, r, m, &now))
        .collect();
    let last_scale = if out.scaled {
        Some(json!(now))
    } else {
        hpa.status
            .as_ref()
            .and_then(|s| s.last_scale_time.as_ref())
            .and_then(|t| serde_json::to_value(t).ok())
    };
    let mut status = json!({
        "observedGeneration": hpa.metadata.generation,
        "currentReplicas": out.current_replicas,
        "desiredReplicas": out.desired_replicas,
        "conditions": conditions,
        "lastScaleTime": last_scale,
    });
    if let Some(m) = &out.current_metrics {
        status["currentMetrics"] = json!(m);
    }
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
        .await?;
    Ok(())
}

async fn event(client: &kube::Client, hpa: &HorizontalPodAutoscaler, ty: EventType, reason: &str, message: &str) {
    let r = crate::common::reference("autoscaling/v2", "HorizontalPodAutoscaler", &hpa.metadata);
    crate::common::record(client, r, ty, reason, message, COMPONENT).await;
}

/// Reconciles one HPA. Failures to read the target or metrics are reported in its
/// status and events; an error is returned only when the API rejects a write.
pub async fn reconcile(
    client: &kube::Client,
    hpa: &HorizontalPodAutoscaler,
    history: &mut History,
) -> Result<(), kube::Error> {
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let prev_status = hpa.status.clone().unwrap_or_default();
    let mut out = Outcome {
        conditions: Vec::new(),
        current_replicas: prev_status.current_replicas.unwrap_or(0),
        desired_replicas: prev_status.desired_replicas,
        current_metrics: None,
        scaled: false,
    };
    let target = &spec.scale_target_ref;
    let api_version = target.api_version.clone().unwrap_or_default();
    let scale = match target_resource(client, &api_version, &target.kind).await {
        Ok(ar) => Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar)
            .get_scale(&target.name)
            .await
            .map(|s| (ar, s))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let (ar, scale) = match scale {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("the HPA controller was unable to get the target's current scale: {e}");
            out.set("AbleToScale", false, "FailedGetScale", msg);
            event(client, hpa, EventType::Warning, "FailedGetScale", &e).await;
            return write_status(client, hpa, &out).await;
        }
    };
    out.set(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    out.current_replicas = current;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let now = Timestamp::now();
    let behavior = spec.behavior.as_ref().map(|b| Behavior {
        scale_up: rules(
            b.scale_up.as_ref(),
            0,
            &[(PolicyType::Pods, 4, 15), (PolicyType::Percent, 100, 15)],
        ),
        scale_down: rules(b.scale_down.as_ref(), 300, &[(PolicyType::Percent, 100, 15)]),
    });
    let mut desired = 0;
    let mut reason = String::new();
    let rescale;
    if current == 0 && min != 0 {
        out.set(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        );
        rescale = false;
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
        rescale = desired != current;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
        rescale = desired != current;
    } else {
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let computed = compute_metrics(
            client,
            &ns,
            &spec.metrics.clone().unwrap_or_default(),
            current,
            &selector,
            now,
        )
        .await;
        out.current_metrics = Some(computed.statuses.clone());
        if let Some((reason, message)) = &computed.invalid {
            event(client, hpa, EventType::Warning, reason, message).await;
        }
        let Some((proposal, metric)) = computed.proposal else {
            let (r, m) = computed.invalid.clone().unwrap_or_default();
            out.set(
                "ScalingActive",
                false,
                &r,
                format!("the HPA was unable to compute the replica count: {m}"),
            );
            event(
                client,
                hpa,
                EventType::Warning,
                "FailedComputeMetricsReplicas",
                &format!(
                    "invalid metrics ({} invalid out of {}), first error is: {m}",
                    computed.invalid_count, computed.total
                ),
            )
            .await;
            return write_status(client, hpa, &out).await;
        };
        out.set(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {metric}"),
        );
        if proposal > current {
            reason = format!("{metric} above target");
        } else if proposal < current {
            reason = "All metrics below target".into();
        }
        let n = behavior::normalize(history, behavior.as_ref(), current, proposal, min, max, now);
        out.set("AbleToScale", n.able_to_scale.0, n.able_to_scale.1, n.able_to_scale.2);
        out.set(
            "ScalingLimited",
            n.scaling_limited.0,
            n.scaling_limited.1,
            n.scaling_limited.2,
        );
        desired = n.replicas;
        rescale = desired != current;
    }
    if rescale {
        let patched = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar)
            .patch_scale(
                &target.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": desired}})),
            )
            .await;
        match patched {
            Ok(_) => {
                out.set(
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                );
                event(
                    client,
                    hpa,
                    EventType::Normal,
                    "SuccessfulRescale",
                    &format!("New size: {desired}; reason: {reason}"),
                )
                .await;
                behavior::record_scale(history, behavior.as_ref(), current, desired, now);
                out.scaled = true;
                tracing::info!(
                    hpa = hpa.metadata.name.as_deref().unwrap_or_default(),
                    namespace = %ns, from = current, to = desired, %reason, "rescaled"
                );
            }
            Err(e) => {
                out.set(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                event(
                    client,
                    hpa,
                    EventType::Warning,
                    "FailedRescale",
                    &format!("New size: {desired}; reason: {reason}; error: {e}"),
                )
                .await;
                out.desired_replicas = desired;
                return write_status(client, hpa, &out).await;
            }
        }
    }
    out.desired_replicas = desired;
    write_status(client, hpa, &out).await
}

/// Scaling rules with the defaults filled in (the apiserver defaults them too).
fn rules(r: Option<&HPAScalingRules>, window: i32, policies: &[(PolicyType, i32, i32)]) -> Rules {
    let select_policy = match r.and_then(|r| r.select_policy.as_deref()) {
        Some("Min") => SelectPolicy::Min,
        Some("Disabled") => SelectPolicy::Disabled,
        _ => SelectPolicy::Max,
    };
    let given: Vec<Policy> = r
        .and_then(|r| r.policies.as_ref())
        .map(|ps| {
            ps.iter()
                .map(|p| Policy {
                    kind: if p.type_ == "Pods" {
                        PolicyType::Pods
                    } else {
                        PolicyType::Percent
                    },
                    value: p.value,
                    period_seconds: p.period_seconds,
                })
                .collect()
        })
        .unwrap_or_default();
    Rules {
        stabilization_window_seconds: r.and_then(|r| r.stabilization_window_seconds).unwrap_or(window),
        select_policy,
        policies: if given.is_empty() {
            policies
                .iter()
                .map(|(kind, value, period_seconds)| Policy {
                    kind: *kind,
                    value: *value,
                    period_seconds: *period_seconds,
                })
                .collect()
        } else {
            given
        },
    }
}

/// The metrics' combined result (upstream `computeReplicasForMetrics`).
struct Computed {
    /// Highest valid proposal and its metric's name; `None` when the metrics are
    /// unusable (all invalid, or some invalid and the rest would scale down).
    proposal: Option<(i32, String)>,
    statuses: Vec<Value>,
    /// The first invalid metric's condition reason and message.
    invalid: Option<(String, String)>,
    invalid_count: usize,
    total: usize,
}

fn milli_string(milli: i64) -> String {
    skiff_api::resource_list::Quantity {
        milli: milli.into(),
        format: skiff_api::resource_list::Format::DecimalSI,
    }
    .to_string()
}

fn parse_target(t: &MetricTarget) -> Result<Target, String> {
    match t.type_.as_str() {
        "Utilization" => t
            .average_utilization
            .map(Target::Utilization)
            .ok_or_else(|| "averageUtilization is required for an Utilization target".to_string()),
        "AverageValue" => t
            .average_value
            .as_ref()
            .and_then(|q| skiff_api::quantity::parse_milli(&q.0).ok())
            .map(|m| Target::AverageValue(m as i64))
            .ok_or_else(|| "averageValue is required for an AverageValue target".to_string()),
        other => Err(format!("invalid resource metric target type {other:?}")),
    }
}

/// Pods and their metrics for one selector, read once per sync.
struct Observed {
    pods: Vec<Pod>,
    metrics: Result<Vec<DynamicObject>, String>,
}

async fn observe(client: &kube::Client, ns: &str, selector: &str) -> Result<Observed, String> {
    let lp = ListParams::default().labels(selector);
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| format!("unable to get pods while calculating replica count: {e}"))?
        .items;
    let ar = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let metrics = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .list(&lp)
        .await
        .map(|l| l.items)
        .map_err(|e| e.to_string());
    Ok(Observed { pods, metrics })
}

fn pod_info(p: &Pod, resource: &str, container: Option<&str>) -> PodInfo {
    let status = p.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            (
                c.status == "True",
                c.last_transition_time.as_ref().map(|t| t.0).unwrap_or_default(),
            )
        });
    let mut request: Result<i64, String> = Ok(0);
    for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
        if container.is_some_and(|n| n != c.name) {
            continue;
        }
        let q = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))
            .and_then(|q| skiff_api::quantity::parse_milli(&q.0).ok());
        request = match (request, q) {
            (Ok(sum), Some(v)) => Ok(sum + v as i64),
            (Ok(_), None) => Err(c.name.clone()),
            (e, _) => e,
        };
    }
    PodInfo {
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.unwrap_or_default(),
        deleting: p.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status.start_time.map(|t| t.0),
        request,
    }
}

/// Per-pod usage of `resource` (all containers, or `container`), milli-units.
fn pod_metrics(items: &[DynamicObject], resource: &str, container: Option<&str>) -> BTreeMap<String, PodMetric> {
    let mut out = BTreeMap::new();
    for m in items {
        let name = m.metadata.name.clone().unwrap_or_default();
        let timestamp = m.data["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or_default();
        let window = m.data["window"]
            .as_str()
            .and_then(|w| w.parse::<SignedDuration>().ok())
            .unwrap_or_default();
        let mut value = 0i64;
        let mut found = false;
        for c in m.data["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|n| c["name"] != n) {
                continue;
            }
            if let Some(v) = c["usage"][resource]
                .as_str()
                .and_then(|q| skiff_api::quantity::parse_milli(q).ok())
            {
                value += v as i64;
                found = true;
            }
        }
        if found {
            out.insert(
                name,
                PodMetric {
                    value,
                    timestamp,
                    window,
                },
            );
        }
    }
    out
}

async fn compute_metrics(
    client: &kube::Client,
    ns: &str,
    specs: &[MetricSpec],
    current: i32,
    selector: &str,
    now: Timestamp,
) -> Computed {
    let mut c = Computed {
        proposal: None,
        statuses: Vec::new(),
        invalid: None,
        invalid_count: 0,
        total: specs.len(),
    };
    fn invalid(c: &mut Computed, reason: &str, message: String) {
        c.invalid_count += 1;
        if c.invalid.is_none() {
            c.invalid = Some((reason.to_string(), message));
        }
    }
    if selector.is_empty() {
        invalid(
            &mut c,
            "InvalidSelector",
            "selector is required on the target's scale status".into(),
        );
        c.invalid_count = c.total.max(1);
        return c;
    }
    let observed = observe(client, ns, selector).await;
    let mut best: Option<(i32, String)> = None;
    for spec in specs {
        let (resource, container, target) = match (spec.type_.as_str(), &spec.resource, &spec.container_resource) {
            ("Resource", Some(r), _) => (r.name.clone(), None, &r.target),
            ("ContainerResource", _, Some(r)) => (r.name.clone(), Some(r.container.clone()), &r.target),
            (other, _, _) => {
                let reason = match other {
                    "Pods" => "FailedGetPodsMetric",
                    "Object" => "FailedGetObjectMetric",
                    "External" => "FailedGetExternalMetric",
                    _ => "InvalidMetricSourceType",
                };
                invalid(
                    &mut c,
                    reason,
                    format!("unable to get metric of type {other}: no custom or external metrics API is served"),
                );
                continue;
            }
        };
        let failed_reason = if container.is_some() {
            "FailedGetContainerResourceMetric"
        } else {
            "FailedGetResourceMetric"
        };
        let target = match parse_target(target) {
            Ok(t) => t,
            Err(e) => {
                invalid(&mut c, failed_reason, e);
                continue;
            }
        };
        let what = if matches!(target, Target::Utilization(_)) {
            format!("failed to get {resource} utilization")
        } else {
            format!("failed to get {resource} usage")
        };
        let observed = match &observed {
            Ok(o) => o,
            Err(e) => {
                invalid(&mut c, failed_reason, format!("{what}: {e}"));
                continue;
            }
        };
        let items = match &observed.metrics {
            Ok(items) if !items.is_empty() => items,
            Ok(_) => {
                invalid(
                    &mut c,
                    failed_reason,
                    format!(
                        "{what}: unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
                    ),
                );
                continue;
            }
            Err(e) => {
                invalid(
                    &mut c,
                    failed_reason,
                    format!("{what}: unable to get metrics for resource {resource}: {e}"),
                );
                continue;
            }
        };
        let metrics = pod_metrics(items, &resource, container.as_deref());
        let pods: Vec<PodInfo> = observed
            .pods
            .iter()
            .map(|p| pod_info(p, &resource, container.as_deref()))
            .collect();
        match replicas::resource_replicas(current, target, &resource, &pods, &metrics, now) {
            Ok(rec) => {
                let mut current_value = json!({"averageValue": milli_string(rec.average_value)});
                if let Some(u) = rec.utilization {
                    current_value["averageUtilization"] = json!(u);
                }
                let (kind, key) = if container.is_some() {
                    ("ContainerResource", "containerResource")
                } else {
                    ("Resource", "resource")
                };
                let mut source = json!({"name": resource, "current": current_value});
                if let Some(cn) = &container {
                    source["container"] = json!(cn);
                }
                c.statuses.push(json!({"type": kind, key: source}));
                let name = match (target, &container) {
                    (Target::Utilization(_), None) => {
                        format!("{resource} resource utilization (percentage of request)")
                    }
                    (Target::Utilization(_), Some(cn)) => {
                        format!("{resource} container resource utilization (percentage of request) of container {cn}")
                    }
                    (Target::AverageValue(_), None) => format!("{resource} resource"),
                    (Target::AverageValue(_), Some(cn)) => format!("{resource} container resource of container {cn}"),
                };
                if best.as_ref().is_none_or(|(r, _)| rec.replicas > *r) {
                    best = Some((rec.replicas, name));
                }
            }
            Err(e) => invalid(&mut c, failed_reason, format!("{what}: {e}")),
        }
    }
    // Upstream: unusable when every metric is invalid, or some are and the valid
    // ones would scale down.
    let usable = match &best {
        None => false,
        Some((r, _)) => c.invalid_count == 0 || *r >= current,
    };
    if usable {
        c.proposal = best;
    } else if c.invalid.is_none() {
        c.invalid = Some(("InvalidMetricSourceType".into(), "no metrics are configured".into()));
    }
    c
}
