//! The Eviction API: `POST /api/v1/namespaces/{ns}/pods/{name}/eviction` with a
//! `policy/v1` (or `policy/v1beta1`) `Eviction` body, as upstream's
//! pkg/registry/core/pod/storage/eviction.go serves it.
//!
//! An eviction is a pod deletion that respects PodDisruptionBudgets:
//! - a pod that is Pending, Succeeded, Failed or already being deleted is deleted
//!   right away (it is not counted by any budget);
//! - otherwise the budgets of the pod's namespace whose (non-empty) selector
//!   matches the pod are consulted: none means the pod is deleted; more than one
//!   is a 500 (the subresource does not support it); with one, a pod that is not
//!   Ready is deleted without using the budget when the budget is already met
//!   (`currentHealthy >= desiredHealthy > 0`) or its `unhealthyPodEvictionPolicy`
//!   is `AlwaysAllow`; else the budget's `status.disruptionsAllowed` is
//!   decremented and the pod recorded in `status.disruptedPods` by a
//!   compare-and-swap write of the budget (conflicts are retried on the fresh
//!   budget). With no disruption allowed the answer is 429 TooManyRequests
//!   "Cannot evict pod as it would violate the pod's disruption budget." with a
//!   `DisruptionBudget` cause, which `kubectl drain` retries;
//! - the pod gets the `DisruptionTarget` condition (reason
//!   `EvictionByEvictionAPI`) and is then deleted with the Eviction's
//!   `deleteOptions` (grace period, preconditions, dry run). When the budget was
//!   not consulted because the pod is unready, the delete carries the pod's
//!   resourceVersion as a precondition so a pod that became Ready meanwhile is
//!   not deleted (429 instead).
//!
//! Success is a `Status` with `status: Success` and code 201.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_api::registry::{self, ResourceInfo};
use skiff_api::selector::LabelSelector;

use crate::App;
use crate::objects::{DeleteOptions, now_rfc3339};
use crate::rest::json_response;
use crate::status::{ApiError, success};

/// Most entries `status.disruptedPods` may hold before evictions covered by the
/// budget are refused (upstream `MaxDisruptedPodSize`).
pub const MAX_DISRUPTED_POD_SIZE: usize = 2000;

/// Attempts at deleting a pod that needs no budget, when the delete conflicts
/// (upstream `EvictionsRetry`: 20 steps 500 ms apart).
const RETRY_STEPS: usize = 20;
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// The message of every 429 the Eviction API answers.
pub const VIOLATES_BUDGET: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn pods() -> &'static ResourceInfo {
    registry::lookup("", "v1", "pods").expect("pods are served")
}

fn budgets() -> &'static ResourceInfo {
    registry::lookup("policy", "v1", "poddisruptionbudgets").expect("poddisruptionbudgets are served")
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn phase(pod: &Value) -> &str {
    str_at(pod, "/status/phase").unwrap_or_default()
}

fn is_deleting(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// Pods whose eviction needs no budget: Pending, Succeeded, Failed or already
/// being deleted (upstream `canIgnorePDB`).
pub fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending") || is_deleting(pod)
}

/// Whether deleting a pod without a budget check must still be guarded by its
/// resourceVersion (upstream `shouldEnforceResourceVersion`): not for terminal
/// or already deleting pods.
fn should_enforce_resource_version(pod: &Value) -> bool {
    !(matches!(phase(pod), "Succeeded" | "Failed") || is_deleting(pod))
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Whether a budget's selector matches the pod's labels. A missing or empty
/// selector matches nothing here (unlike in the disruption controller), and an
/// invalid one matches nothing, as upstream's `getPodDisruptionBudgets`.
pub fn budget_selects(budget: &Value, pod: &Value) -> bool {
    let Some(sel) = budget.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        return false;
    };
    let Ok(sel) = LabelSelector::from_label_selector_json(sel) else {
        return false;
    };
    if sel.is_empty() {
        return false;
    }
    let labels: BTreeMap<String, String> = pod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    sel.matches(&labels)
}

/// The 429 answered while a budget's status is not current yet (or when a delete
/// guarded by the pod's resourceVersion lost a race), with a 10 s Retry-After.
fn still_processing(budget: &str) -> ApiError {
    ApiError::too_many_requests(
        VIOLATES_BUDGET,
        10,
        json!({"type": "DisruptionBudget",
               "message": format!("The disruption budget {budget} is still being processed by the server.")}),
    )
}

fn forbidden_budget(name: &str, why: &str) -> ApiError {
    ApiError::forbidden(format!("poddisruptionbudget.policy \"{name}\" is forbidden: {why}"))
}

/// Sets the `DisruptionAllowed` condition from `status.disruptionsAllowed` on a
/// budget's JSON status (upstream `UpdateDisruptionAllowedCondition`), keeping
/// the transition time when the condition's status does not change.
pub fn update_disruption_allowed_condition(status: &mut Value, now: &str) {
    let allowed = int_at(status, "/disruptionsAllowed") > 0;
    let (cond_status, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let observed = status.get("observedGeneration").cloned().unwrap_or(Value::Null);
    let mut conditions = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match conditions.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
        Some(c) => {
            if c["status"] != cond_status {
                c["status"] = json!(cond_status);
                c["lastTransitionTime"] = json!(now);
            }
            c["reason"] = json!(reason);
            c["message"] = json!("");
            c["observedGeneration"] = observed;
        }
        None => conditions.push(
            json!({"type": "DisruptionAllowed", "status": cond_status, "reason": reason,
            "message": "", "observedGeneration": observed, "lastTransitionTime": now}),
        ),
    }
    status["conditions"] = Value::Array(conditions);
}

/// Verifies the budget allows a disruption and returns it with one disruption
/// less and `pod` recorded in `disruptedPods` at `now` (upstream
/// `checkAndDecrement`).
///
/// # Errors
/// 429 when the status is older than the spec (`observedGeneration <
/// generation`) or no disruption is allowed; 403 when `disruptionsAllowed` is
/// negative or `disruptedPods` has more than [`MAX_DISRUPTED_POD_SIZE`] entries.
pub fn check_and_decrement(budget: &Value, pod: &str, now: &str) -> Result<Value, ApiError> {
    let name = str_at(budget, "/metadata/name").unwrap_or_default();
    if int_at(budget, "/status/observedGeneration") < int_at(budget, "/metadata/generation") {
        return Err(still_processing(name));
    }
    let allowed = int_at(budget, "/status/disruptionsAllowed");
    if allowed < 0 {
        return Err(forbidden_budget(name, "pdb disruptions allowed is negative"));
    }
    let disrupted = budget
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_POD_SIZE {
        return Err(forbidden_budget(
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(ApiError::too_many_requests(
            VIOLATES_BUDGET,
            0,
            json!({"type": "DisruptionBudget", "message": format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                int_at(budget, "/status/desiredHealthy"),
                int_at(budget, "/status/currentHealthy"),
            )}),
        ));
    }
    let mut next = budget.clone();
    next["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        update_disruption_allowed_condition(&mut next["status"], now);
    }
    if !next["status"]["disruptedPods"].is_object() {
        next["status"]["disruptedPods"] = json!({});
    }
    next["status"]["disruptedPods"][pod] = json!(now);
    Ok(next)
}

/// The options of the delete an eviction makes: the Eviction's `deleteOptions`
/// with the request's `dryRun` (upstream `propagateDryRun`).
fn delete_options(eviction: &Value, q: &HashMap<String, String>) -> Result<DeleteOptions, ApiError> {
    let given = eviction.get("deleteOptions").filter(|d| !d.is_null());
    let body = given.map(Value::to_string).unwrap_or_default();
    let mut opts = crate::rest::delete_options(&HashMap::new(), body.as_bytes())?;
    let query_dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let body_dry_run: Vec<&str> = given
        .and_then(|d| d.get("dryRun"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(d) = q.get("dryRun")
        && !body_dry_run.is_empty()
        && body_dry_run != [d.as_str()]
    {
        return Err(ApiError::internal(format!(
            "Non-matching dry-run options in request and content: [{d}] and [{}]",
            body_dry_run.join(" ")
        )));
    }
    opts.dry_run |= query_dry_run;
    Ok(opts)
}

fn pod_conflict(name: &str, why: String) -> ApiError {
    ApiError {
        code: 409,
        reason: "Conflict",
        message: format!("Operation cannot be fulfilled on Pod \"{name}\": {why}"),
        details: Some(json!({"name": name, "kind": "Pod"})),
    }
}

/// Adds the `DisruptionTarget` condition to the pod (unless dry-running), then
/// deletes it with `opts` (upstream `addConditionAndDeletePod`). A
/// resourceVersion precondition is checked against the pod before the condition
/// is added and moved to the version that write produced.
async fn add_condition_and_delete(app: &App, ns: &str, name: &str, opts: &DeleteOptions) -> Result<(), ApiError> {
    let mut opts = opts.clone();
    if !opts.dry_run {
        let updated = app
            .objects
            .mutate(pods(), Some(ns), name, None, false, |cur| {
                let uid = str_at(cur, "/metadata/uid").unwrap_or_default();
                if let Some(want) = opts.precondition_uid.as_deref().filter(|u| !u.is_empty())
                    && want != uid
                {
                    return Err(pod_conflict(
                        name,
                        format!("the UID in the precondition ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"),
                    ));
                }
                let rv = str_at(cur, "/metadata/resourceVersion").unwrap_or_default();
                if let Some(want) = opts.precondition_rv.as_deref().filter(|r| !r.is_empty())
                    && want != rv
                {
                    return Err(pod_conflict(
                        name,
                        format!("the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rv}). The object might have been modified"),
                    ));
                }
                let mut next = cur.clone();
                let mut conditions = cur
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let now = now_rfc3339();
                match conditions.iter_mut().find(|c| c["type"] == "DisruptionTarget") {
                    Some(c) => {
                        if c["status"] != "True" {
                            c["status"] = json!("True");
                            c["lastTransitionTime"] = json!(now);
                        }
                        c["reason"] = json!("EvictionByEvictionAPI");
                        c["message"] = json!("Eviction API: evicting");
                    }
                    None => conditions.push(json!({"type": "DisruptionTarget", "status": "True",
                        "lastProbeTime": null, "lastTransitionTime": now,
                        "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"})),
                }
                if !next["status"].is_object() {
                    next["status"] = json!({});
                }
                next["status"]["conditions"] = Value::Array(conditions);
                Ok(next)
            })
            .await?;
        if opts.precondition_rv.is_some() {
            opts.precondition_rv = str_at(&updated, "/metadata/resourceVersion").map(String::from);
        }
    }
    app.objects.delete(pods(), Some(ns), name, &opts).await.map(|_| ())
}

/// The budgets of the pod's namespace that select it.
async fn matching_budgets(app: &App, ns: &str, pod: &Value) -> Result<Vec<Value>, ApiError> {
    let prefix = budgets().namespace_prefix(Some(ns));
    let listed = app.objects.store().list(&prefix, Default::default()).await?;
    let mut out = Vec::new();
    for kv in &listed.items {
        let budget = crate::objects::decode(kv)?;
        if budget_selects(&budget, pod) {
            out.push(budget);
        }
    }
    Ok(out)
}

fn created() -> Response {
    json_response(StatusCode::CREATED, &success(201), &[])
}

/// Serves `POST pods/{name}/eviction`; see the module documentation.
///
/// # Errors
/// 400 for a body that is not an Eviction of `policy/v1` or `policy/v1beta1` or
/// names another pod; 404 when the pod does not exist; 429 when a budget forbids
/// the eviction; 500 when several budgets select the pod; the delete's own
/// errors (409 on failed preconditions).
pub async fn evict(
    app: &App,
    ns: &str,
    name: &str,
    body: &[u8],
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let eviction: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !eviction.is_object() {
        return Err(ApiError::bad_request("the body of the request was not a JSON object"));
    }
    if let Some(av) = eviction.get("apiVersion").and_then(Value::as_str)
        && !matches!(av, "policy/v1" | "policy/v1beta1")
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version (policy/v1)"
        )));
    }
    if let Some(kind) = eviction.get("kind").and_then(Value::as_str)
        && kind != "Eviction"
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind (Eviction)"
        )));
    }
    if str_at(&eviction, "/metadata/name").unwrap_or_default() != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let original = delete_options(&eviction, q)?;

    // Pods no budget counts are deleted right away; conflicts are retried unless
    // the client asked for a resourceVersion.
    let mut attempt = 0;
    let pod = loop {
        let pod = app.objects.get(pods(), Some(ns), name).await?;
        if !can_ignore_budget(&pod) {
            break pod;
        }
        let mut opts = original.clone();
        if should_enforce_resource_version(&pod) && original.precondition_rv.is_none() {
            opts.precondition_rv = str_at(&pod, "/metadata/resourceVersion").map(String::from);
        }
        match add_condition_and_delete(app, ns, name, &opts).await {
            Ok(()) => return Ok(created()),
            Err(e) if e.code == 409 && original.precondition_rv.is_none() && attempt + 1 < RETRY_STEPS => {
                attempt += 1;
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
            Err(e) => return Err(e),
        }
    };

    let matching = matching_budgets(app, ns, &pod).await?;
    if matching.len() > 1 {
        return Err(ApiError {
            code: 500,
            reason: "",
            message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                .into(),
            details: None,
        });
    }
    let mut guard_with_resource_version = false;
    let mut budget_name = String::new();
    if let Some(budget) = matching.first() {
        budget_name = str_at(budget, "/metadata/name").unwrap_or_default().to_string();
        let unhealthy_ok = !is_ready(&pod)
            && (str_at(budget, "/spec/unhealthyPodEvictionPolicy") == Some("AlwaysAllow")
                || (int_at(budget, "/status/currentHealthy") >= int_at(budget, "/status/desiredHealthy")
                    && int_at(budget, "/status/desiredHealthy") > 0));
        if unhealthy_ok {
            // An unready pod does not count towards currentHealthy: delete it
            // without using the budget, unless it turned Ready meanwhile.
            guard_with_resource_version = true;
        } else {
            let now = now_rfc3339();
            app.objects
                .mutate(budgets(), Some(ns), &budget_name, None, original.dry_run, |cur| {
                    check_and_decrement(cur, name, &now)
                })
                .await?;
        }
    }

    let mut opts = original.clone();
    if guard_with_resource_version {
        opts.precondition_rv = str_at(&pod, "/metadata/resourceVersion").map(String::from);
    }
    match add_condition_and_delete(app, ns, name, &opts).await {
        Ok(()) => Ok(created()),
        Err(e) if e.code == 409 && guard_with_resource_version && original.precondition_rv.is_none() => {
            Err(still_processing(&budget_name))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(status: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "generation": 1},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
               "status": status})
    }

    #[test]
    fn decrement_records_the_pod_and_flips_the_condition_at_zero() {
        let b = budget(
            json!({"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2,
            "desiredHealthy": 1, "conditions": [{"type": "DisruptionAllowed", "status": "True",
            "reason": "SufficientPods", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}),
        );
        let next = check_and_decrement(&b, "web-1", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(next["status"]["disruptionsAllowed"], 0);
        assert_eq!(next["status"]["disruptedPods"]["web-1"], "2026-01-01T00:00:00Z");
        let c = &next["status"]["conditions"][0];
        assert_eq!(
            (&c["status"], &c["reason"], &c["lastTransitionTime"]),
            (
                &json!("False"),
                &json!("InsufficientPods"),
                &json!("2026-01-01T00:00:00Z")
            )
        );
    }

    #[test]
    fn no_disruption_allowed_is_429_with_the_budget_cause() {
        let b = budget(
            json!({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1,
            "desiredHealthy": 1}),
        );
        let e = check_and_decrement(&b, "web-1", "2026-01-01T00:00:00Z").unwrap_err();
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        assert_eq!(e.message, VIOLATES_BUDGET);
        let s = e.to_status();
        assert_eq!(s["details"]["causes"][0]["type"], "DisruptionBudget");
        assert_eq!(
            s["details"]["causes"][0]["message"],
            "The disruption budget web needs 1 healthy pods and has 1 currently"
        );
        // A status older than the spec: 429 asking to retry later.
        let stale = budget(json!({"observedGeneration": 0, "disruptionsAllowed": 3}));
        let e = check_and_decrement(&stale, "web-1", "2026-01-01T00:00:00Z").unwrap_err();
        assert_eq!(e.code, 429);
        assert_eq!(e.to_status()["details"]["retryAfterSeconds"], 10);
        // Negative: forbidden.
        let neg = budget(json!({"observedGeneration": 1, "disruptionsAllowed": -1}));
        assert_eq!(check_and_decrement(&neg, "p", "t").unwrap_err().code, 403);
    }

    #[test]
    fn pending_terminal_and_deleting_pods_skip_budgets() {
        let p = |phase: &str, deleting: bool| {
            json!({"metadata": {"name": "p", "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z")},
                   "status": {"phase": phase}})
        };
        assert!(can_ignore_budget(&p("Pending", false)));
        assert!(can_ignore_budget(&p("Succeeded", false)));
        assert!(can_ignore_budget(&p("Running", true)));
        assert!(!can_ignore_budget(&p("Running", false)));
        assert!(!should_enforce_resource_version(&p("Failed", false)));
        assert!(should_enforce_resource_version(&p("Pending", false)));
    }

    #[test]
    fn empty_and_missing_selectors_match_no_pod() {
        let pod = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(budget_selects(&budget(json!({})), &pod));
        assert!(!budget_selects(&json!({"spec": {"selector": {}}}), &pod));
        assert!(!budget_selects(&json!({"spec": {}}), &pod));
        assert!(!budget_selects(
            &json!({"spec": {"selector": {"matchLabels": {"app": "db"}}}}),
            &pod
        ));
    }
}
