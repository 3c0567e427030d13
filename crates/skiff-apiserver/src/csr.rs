//! CertificateSigningRequest strategies (certificates.k8s.io/v1), as upstream's
//! pkg/registry/certificates/certificates:
//!
//! - create: the requester's identity (`spec.username`, `spec.groups`, `spec.uid`,
//!   `spec.extra`) comes from authentication, never from the body; `status` is cleared;
//!   the request must be a PEM `CERTIFICATE REQUEST` that parses, `signerName` and
//!   `usages` are required, `expirationSeconds` is at least 600.
//! - update of the main resource: `spec` and `status` are kept (only metadata changes).
//! - `/approval`: only `status.conditions` changes; at most one of `Approved` and
//!   `Denied`, and neither may be removed or flipped once set.
//! - `/status`: `spec` and the `Approved`/`Denied` conditions are kept; a certificate
//!   may be set once, on an approved request.
//!
//! Errors are 422 `Invalid` naming the field.
//!
//! Approving or denying through `/approval` also needs the `approve` verb on the
//! `signers` resource of the request's signer (name `<signerName>` or
//! `<domain>/*`), as upstream's CertificateApproval admission plugin requires
//! ([`check_approver`]); 403 otherwise.

use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_api::validation::FieldError;

use crate::authn::UserInfo;
use crate::objects::now_rfc3339;
use crate::status::ApiError;

/// The condition types that approve or deny a request.
const DECISIONS: [&str; 2] = ["Approved", "Denied"];

fn invalid(field: &str, reason: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        reason,
        field: field.into(),
        message: message.into(),
    }
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .or_else(|| obj.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Whether `der` is a PKCS#10 certification request whose self-signature verifies.
fn parses_as_csr(pem: &[u8]) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err(format!(
            "PEM block type must be CERTIFICATE REQUEST, not {}",
            block.label
        ));
    }
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("does not parse: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("signature does not verify: {e}"))
}

/// Prepares a new CSR for storage (see the module docs). `obj` is the body.
pub fn prepare_create(res: &ResourceInfo, obj: &mut Value, user: &UserInfo) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body of the request was not a JSON object"));
    }
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    spec["username"] = json!(user.name);
    spec["groups"] = json!(user.groups);
    if let Some(m) = spec.as_object_mut() {
        m.remove("uid");
        m.remove("extra");
    }
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    match spec.get("request").and_then(Value::as_str) {
        None | Some("") => errs.push(invalid("spec.request", "FieldValueRequired", "Required value")),
        Some(b64) => match serde_json::from_value::<k8s_openapi::ByteString>(json!(b64)) {
            Err(_) => errs.push(invalid(
                "spec.request",
                "FieldValueInvalid",
                "Invalid value: not base64",
            )),
            Ok(bytes) => {
                if let Err(e) = parses_as_csr(&bytes.0) {
                    errs.push(invalid(
                        "spec.request",
                        "FieldValueInvalid",
                        format!("Invalid value: the certificate request {e}"),
                    ));
                }
            }
        },
    }
    match spec.get("signerName").and_then(Value::as_str) {
        None | Some("") => errs.push(invalid("spec.signerName", "FieldValueRequired", "Required value")),
        Some(s) if !s.contains('/') => errs.push(invalid(
            "spec.signerName",
            "FieldValueInvalid",
            format!(
                "Invalid value: {s:?}: must be a fully qualified domain and path of the form 'example.com/signer-name'"
            ),
        )),
        Some(_) => {}
    }
    if spec.get("usages").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        errs.push(invalid("spec.usages", "FieldValueRequired", "Required value"));
    }
    if let Some(secs) = spec.get("expirationSeconds").and_then(Value::as_i64)
        && secs < 600
    {
        errs.push(invalid(
            "spec.expirationSeconds",
            "FieldValueInvalid",
            format!("Invalid value: {secs}: may not specify a duration less than 600 seconds (10 minutes)"),
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, &name_of(obj), &errs))
    }
}

/// Upstream's CertificateApproval admission: `user` may change the decision on a
/// request for `signer_name` only with `approve` on `signers` named `signer_name`
/// or `<domain>/*`; 403 Forbidden otherwise.
pub fn check_approver(
    authorizer: &crate::authz::Authorizer,
    user: &UserInfo,
    signer_name: &str,
) -> Result<(), ApiError> {
    let domain = signer_name.split_once('/').map(|(d, _)| d).unwrap_or(signer_name);
    for name in [signer_name.to_string(), format!("{domain}/*")] {
        let attrs = crate::authz::Attributes {
            verb: "approve".into(),
            resource_request: true,
            api_group: "certificates.k8s.io".into(),
            api_version: "*".into(),
            resource: "signers".into(),
            name,
            ..Default::default()
        };
        if authorizer.authorize(user, &attrs) == crate::authz::Decision::Allow {
            return Ok(());
        }
    }
    Err(ApiError::forbidden(format!(
        "certificatesigningrequests.certificates.k8s.io is forbidden: user not permitted to approve requests with signerName {signer_name:?}"
    )))
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn ctype(c: &Value) -> &str {
    c.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Applies the update strategy of `subresource` (`None`, `status` or `approval`) to
/// `next`, the object the generic update built from `old` and the body, and
/// validates the result.
pub fn prepare_update(
    res: &ResourceInfo,
    subresource: Option<&str>,
    old: &Value,
    next: &mut Value,
) -> Result<(), ApiError> {
    let name = name_of(old);
    next["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    let old_status = old.get("status").cloned().unwrap_or(json!({}));
    match subresource {
        None => next["status"] = old_status,
        Some("approval") => {
            let mut status = old_status;
            status["conditions"] = json!(conditions(next));
            next["status"] = status;
        }
        Some(_) => {
            // `status`: the decisions stay as they were.
            let mut conds: Vec<Value> = conditions(next)
                .into_iter()
                .filter(|c| !DECISIONS.contains(&ctype(c)))
                .collect();
            conds.extend(conditions(old).into_iter().filter(|c| DECISIONS.contains(&ctype(c))));
            if !next.get("status").is_some_and(Value::is_object) {
                next["status"] = json!({});
            }
            next["status"]["conditions"] = json!(conds);
        }
    }
    let now = now_rfc3339();
    let mut conds = conditions(next);
    for c in &mut conds {
        if c.get("status").and_then(Value::as_str).is_none_or(str::is_empty) {
            c["status"] = json!("True");
        }
        for k in ["lastUpdateTime", "lastTransitionTime"] {
            if c.get(k).is_none_or(Value::is_null) {
                c[k] = json!(now);
            }
        }
    }
    if !conds.is_empty() {
        next["status"]["conditions"] = json!(conds);
    } else if let Some(s) = next.get_mut("status").and_then(Value::as_object_mut) {
        s.remove("conditions");
    }
    let mut errs = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        if ctype(c).is_empty() {
            errs.push(invalid(
                &format!("status.conditions[{i}].type"),
                "FieldValueRequired",
                "Required value",
            ));
        }
        let s = c.get("status").and_then(Value::as_str).unwrap_or_default();
        if !["True", "False", "Unknown"].contains(&s) {
            errs.push(invalid(
                &format!("status.conditions[{i}].status"),
                "FieldValueNotSupported",
                format!("Unsupported value: {s:?}: supported values: \"True\", \"False\", \"Unknown\""),
            ));
        }
    }
    let has = |conds: &[Value], t: &str| conds.iter().any(|c| ctype(c) == t);
    if has(&conds, "Approved") && has(&conds, "Denied") {
        errs.push(invalid(
            "status.conditions",
            "FieldValueInvalid",
            "Invalid value: Approved and Denied conditions are mutually exclusive",
        ));
    }
    let old_conds = conditions(old);
    for t in DECISIONS {
        if has(&old_conds, t) && !has(&conds, t) {
            errs.push(invalid(
                "status.conditions",
                "FieldValueForbidden",
                format!("Forbidden: updates may not remove a condition of type {t:?}"),
            ));
        }
    }
    let cert = |o: &Value| {
        o.pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (old_cert, new_cert) = (cert(old), cert(next));
    if !old_cert.is_empty() && old_cert != new_cert {
        errs.push(invalid(
            "status.certificate",
            "FieldValueForbidden",
            "Forbidden: updates may not modify existing certificate content",
        ));
    }
    if old_cert.is_empty() && !new_cert.is_empty() && !has(&conds, "Approved") {
        errs.push(invalid(
            "status.certificate",
            "FieldValueForbidden",
            "Forbidden: certificate issuance requires an Approved condition",
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, &name, &errs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res() -> &'static ResourceInfo {
        skiff_api::registry::lookup("certificates.k8s.io", "v1", "certificatesigningrequests").unwrap()
    }

    fn csr_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "system:node:n1");
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn body() -> Value {
        let req = serde_json::to_value(k8s_openapi::ByteString(csr_pem().into_bytes())).unwrap();
        json!({"metadata": {"name": "c1"}, "spec": {"request": req, "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
               "usages": ["client auth"], "username": "system:admin", "groups": ["system:masters"]},
               "status": {"certificate": "Zm9v"}})
    }

    #[test]
    fn create_takes_the_requester_from_authentication() {
        let user = UserInfo::authenticated("system:bootstrap:abcdef", ["system:bootstrappers".to_string()]);
        let mut obj = body();
        prepare_create(res(), &mut obj, &user).unwrap();
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(
            obj["spec"]["groups"],
            json!(["system:bootstrappers", "system:authenticated"])
        );
        assert!(obj.get("status").is_none());

        let mut bad = body();
        bad["spec"]["request"] = json!("bm90IGEgY3Ny");
        bad["spec"]["expirationSeconds"] = json!(60);
        bad["spec"]["usages"] = json!([]);
        let err = prepare_create(res(), &mut bad, &user).unwrap_err();
        assert_eq!(err.code, 422);
        for field in ["spec.request", "spec.expirationSeconds", "spec.usages"] {
            assert!(err.message.contains(field), "{field}: {}", err.message);
        }
    }

    #[test]
    fn approval_and_status_change_only_their_parts() {
        let user = UserInfo::authenticated("u", []);
        let mut old = body();
        prepare_create(res(), &mut old, &user).unwrap();
        // Approval: the spec cannot be changed through it; the condition is stamped.
        let mut next = old.clone();
        next["spec"]["username"] = json!("evil");
        next["status"] = json!({"conditions": [{"type": "Approved", "reason": "KubectlApprove"}]});
        prepare_update(res(), Some("approval"), &old, &mut next).unwrap();
        assert_eq!(next["spec"]["username"], "u");
        assert_eq!(next["status"]["conditions"][0]["status"], "True");
        assert!(next["status"]["conditions"][0]["lastUpdateTime"].is_string());
        let approved = next;
        // Status: the certificate is set; the decision cannot be dropped there.
        let mut issued = approved.clone();
        issued["status"] = json!({"certificate": "Y2VydA==", "conditions": []});
        prepare_update(res(), Some("status"), &approved, &mut issued).unwrap();
        assert_eq!(issued["status"]["conditions"][0]["type"], "Approved");
        assert_eq!(issued["status"]["certificate"], "Y2VydA==");
        // Once issued, the certificate is immutable.
        let mut changed = issued.clone();
        changed["status"]["certificate"] = json!("b3RoZXI=");
        assert_eq!(
            prepare_update(res(), Some("status"), &issued, &mut changed)
                .unwrap_err()
                .code,
            422
        );
        // Approved and Denied together, or removing a decision: refused.
        let mut both = approved.clone();
        both["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Denied"}));
        assert_eq!(
            prepare_update(res(), Some("approval"), &approved, &mut both)
                .unwrap_err()
                .code,
            422
        );
        let mut removed = approved.clone();
        removed["status"] = json!({"conditions": []});
        assert_eq!(
            prepare_update(res(), Some("approval"), &approved, &mut removed)
                .unwrap_err()
                .code,
            422
        );
        // A certificate on a request nobody approved: refused.
        let mut early = old.clone();
        early["status"] = json!({"certificate": "Y2VydA=="});
        assert_eq!(
            prepare_update(res(), Some("status"), &old, &mut early)
                .unwrap_err()
                .code,
            422
        );
    }
}
