//! Object storage semantics on top of the revisioned store: how the apiserver's
//! generic registry (k8s.io/apiserver/pkg/registry/generic/registry/store.go) turns
//! create/update/delete requests into store writes.
//!
//! Objects are stored as JSON without `metadata.resourceVersion`; on read the key's
//! `mod_revision` becomes the resourceVersion. Updates are compare-and-swap on that
//! revision; unconditional updates and patches retry on conflict.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use skiff_api::registry::{self, ResourceInfo};
use skiff_api::{defaults, validation};
use skiff_store::{KeyValue, Store};

use crate::service_alloc::{self, InUse, ServiceNetwork};
use crate::status::ApiError;

/// `metav1.Time` rendering of now (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Decodes a stored value and stamps its resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("corrupt object at {}: {e}", kv.key)))?;
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    Ok(v)
}

fn encode(v: &Value) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&v).expect("JSON values always serialize")
}

/// How a request wants unknown fields handled (`fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop them and return a `Warning` header per field (the server default).
    Warn,
    /// Reject the request with 400 BadRequest.
    Strict,
}

/// Options common to writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// `dryRun=All`: run every step but do not persist.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
}

/// The outcome of a write: the object as stored (or as it would be, for dry runs)
/// and warnings for the `Warning` response header.
pub struct Written {
    /// The object, with its new resourceVersion.
    pub object: Value,
    /// Warning texts.
    pub warnings: Vec<String>,
}

/// Object-level access to the store.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
    services: Arc<ServiceAllocator>,
    watch_lines: Arc<crate::watch::SharedLines>,
}

/// The Service address ranges and the lock that serializes allocations from them.
struct ServiceAllocator {
    network: ServiceNetwork,
    lock: tokio::sync::Mutex<()>,
}

fn meta(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"].as_object_mut().expect("metadata is an object")
}

fn is_deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

fn finalizers_empty(v: &Value) -> bool {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
}

/// Everything but `metadata` and `status`: a change here bumps `metadata.generation`.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Upstream `SimpleNameGenerator`: the prefix plus five random characters.
pub fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| NAME_CHARS[rng.random_range(0..NAME_CHARS.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// The pod's QoS class (upstream `GetPodQOS`).
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r));
            let q = req.and_then(|q| q.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

impl Objects {
    /// Wraps a store; Services get addresses from the default ranges.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_service_network(store, ServiceNetwork::default())
    }

    /// Wraps a store; Services get ClusterIPs and node ports from `network`.
    pub fn with_service_network(store: Arc<dyn Store>, network: ServiceNetwork) -> Self {
        Self {
            store,
            services: Arc::new(ServiceAllocator {
                network,
                lock: tokio::sync::Mutex::new(()),
            }),
            watch_lines: Arc::default(),
        }
    }

    /// The encoded watch event lines shared by this apiserver's watches.
    pub fn watch_lines(&self) -> Arc<crate::watch::SharedLines> {
        self.watch_lines.clone()
    }

    /// The Service address ranges.
    pub fn service_network(&self) -> &ServiceNetwork {
        &self.services.network
    }

    /// Takes the Service allocation lock; hold it from [`Objects::services_in_use`]
    /// until the Service is written so two writes never take the same address.
    pub async fn lock_service_allocations(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.services.lock.lock().await
    }

    /// ClusterIPs and node ports of every Service except `ns/name`.
    pub async fn services_in_use(&self, ns: Option<&str>, name: &str) -> Result<InUse, ApiError> {
        let res = registry::lookup("", "v1", "services").expect("services are served");
        let list = self.store.list(&res.key_prefix(), Default::default()).await?;
        let mut in_use = InUse::default();
        for kv in &list.items {
            let Ok(v) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let same = v.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && v.pointer("/metadata/namespace").and_then(Value::as_str) == ns;
            if !same {
                in_use.add(&v);
            }
        }
        Ok(in_use)
    }

    /// Allocates (or keeps, on update from `old`) the ClusterIP and node ports of
    /// `svc`; 422 Invalid with upstream's field errors when a requested value is
    /// taken or out of range.
    pub fn allocate_service(&self, svc: &mut Value, old: Option<&Value>, in_use: &InUse) -> Result<(), ApiError> {
        let res = registry::lookup("", "v1", "services").expect("services are served");
        service_alloc::allocate(&self.services.network, svc, old, in_use).map_err(|errs| {
            let name = svc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ApiError::invalid(res, name, &errs)
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one object; 404 NotFound when absent.
    pub async fn get(&self, res: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        match self.store.get(&res.key(ns, name)).await? {
            Some(kv) => decode(&kv),
            None => Err(ApiError::not_found(res, name)),
        }
    }

    /// Decodes, defaults and validates `obj` as `res`; returns the normalized object
    /// and warnings.
    fn normalize(
        &self,
        res: &ResourceInfo,
        mut obj: Value,
        fv: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let mut decoded = validation::decode(res.group, res.kind, &obj).map_err(ApiError::bad_request)?;
        // Custom resources: the CRD version's structural schema defaults, prunes and
        // validates (upstream's apiextensions-apiserver).
        if registry::is_custom(res)
            && let Some(schema) = skiff_api::crd::version_info(res.group, res.version, res.kind).and_then(|v| v.schema)
        {
            let processed = skiff_api::crd::process(&schema, &mut obj);
            if !processed.errors.is_empty() {
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return Err(ApiError::invalid(res, name, &processed.errors));
            }
            decoded.unknown_fields = processed.unknown_fields;
        }
        let mut warnings = Vec::new();
        if !decoded.unknown_fields.is_empty() {
            match fv {
                FieldValidation::Strict => {
                    let list: Vec<String> = decoded
                        .unknown_fields
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        res.kind,
                        res.version,
                        res.kind,
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(decoded.unknown_fields.iter().map(|f| format!("unknown field \"{f}\"")));
                }
                FieldValidation::Ignore => {}
            }
        }
        if let Some(typed) = decoded.object {
            obj = typed;
        }
        defaults::apply(res.group, res.kind, &mut obj);
        Ok((obj, warnings))
    }

    fn check_valid(res: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
        let errs = validation::validate(res.group, res.kind, obj);
        if errs.is_empty() {
            Ok(())
        } else {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Err(ApiError::invalid(res, name, &errs))
        }
    }

    async fn check_namespace(&self, ns: &str) -> Result<(), ApiError> {
        let nsres = registry::lookup("", "v1", "namespaces").expect("namespaces are served");
        let n = self.get(nsres, None, ns).await?;
        if is_deleting(&n) {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Creates an object (POST). `ns` is the namespace from the path.
    pub async fn create(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        opts: WriteOptions,
    ) -> Result<Written, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request was not a JSON object"));
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && av != res.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                res.api_version()
            )));
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && k != res.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        {
            let m = meta(&mut obj);
            if res.namespaced {
                let ns = ns.ok_or_else(|| ApiError::bad_request("a namespace is required for this resource"))?;
                match m.get("namespace").and_then(Value::as_str) {
                    Some(given) if !given.is_empty() && given != ns => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                    _ => {
                        m.insert("namespace".into(), json!(ns));
                    }
                }
            } else {
                m.remove("namespace");
            }
            if m.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
                && let Some(prefix) = m.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty())
            {
                let name = generate_name(prefix);
                m.insert("name".into(), json!(name));
            }
            for k in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                m.remove(k);
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        }
        let (mut obj, warnings) = self.normalize(res, obj, opts.field_validation)?;
        // Held until the Service is written, so no other write takes its addresses.
        let mut _service_guard = None;
        if obj.get("spec").is_some() {
            meta(&mut obj).insert("generation".into(), json!(1));
        }
        match (res.group, res.kind) {
            ("", "Pod") => {
                // Admission runs after the namespace is known to accept content,
                // as upstream orders NamespaceLifecycle before ServiceAccount.
                let ns = ns.unwrap_or_default();
                self.check_namespace(ns).await?;
                crate::limit_ranger::default_pod(self, ns, &mut obj).await?;
                crate::serviceaccount_admission::admit(self, ns, &mut obj).await?;
                crate::priority::admit_pod(self, &mut obj).await?;
                defaults::default_tolerations(&mut obj);
                defaults::service_account(&mut obj);
                let qos = qos_class(&obj);
                obj["status"] = json!({"phase": "Pending", "qosClass": qos});
            }
            ("apps", "Deployment" | "ReplicaSet") => {
                obj["status"] = json!({});
            }
            ("scheduling.k8s.io", "PriorityClass") => crate::priority::validate_class(self, &obj, None).await?,
            ("", "PersistentVolumeClaim" | "PersistentVolume") | ("storage.k8s.io", "StorageClass") => {
                crate::storage_admission::admit(self, res.kind, &mut obj).await?;
            }
            ("", "Service") => {
                _service_guard = Some(self.lock_service_allocations().await);
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let in_use = self.services_in_use(ns, &name).await?;
                self.allocate_service(&mut obj, None, &in_use)?;
            }
            _ => {}
        }
        Self::check_valid(res, &obj)?;
        if res.namespaced {
            let ns = ns.unwrap_or_default();
            self.check_namespace(ns).await?;
            // Validating admission: LimitRanger, then ResourceQuota (which charges).
            crate::limit_ranger::validate(self, res, ns, &obj).await?;
            crate::resource_quota::admit(self, res, ns, None, &obj, opts.dry_run).await?;
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if opts.dry_run {
            return Ok(Written { object: obj, warnings });
        }
        match self.store.create(&res.key(ns, &name), encode(&obj)).await {
            Ok(kv) => Ok(Written {
                object: decode(&kv)?,
                warnings,
            }),
            Err(skiff_store::Error::AlreadyExists(_)) => Err(ApiError::already_exists(res, &name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Read-modify-write with compare-and-swap. `precondition` is the resourceVersion
    /// the client sent (a mismatch is 409 Conflict); without one, conflicts are retried.
    /// `f` maps the current object to the desired one; returning an identical object
    /// skips the write unless the store reports the stored value stale
    /// ([`skiff_store::Store::is_stale`]). An object being deleted whose finalizers
    /// are all gone is removed from the store.
    pub async fn mutate<F>(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
        dry_run: bool,
        mut f: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(&Value) -> Result<Value, ApiError>,
    {
        let key = res.key(ns, name);
        let mut admitted = false;
        for _ in 0..64 {
            let Some(kv) = self.store.get(&key).await? else {
                return Err(ApiError::not_found(res, name));
            };
            if let Some(p) = precondition
                && p != kv.mod_revision
            {
                return Err(ApiError::conflict(
                    res,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let current = decode(&kv)?;
            let mut next = f(&current)?;
            meta(&mut next).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            // An unchanged object is not written, unless its stored form is stale
            // (e.g. encrypted with a key that is no longer the first): upstream's
            // GuaranteedUpdate rewrites those, which is how rotations re-encrypt.
            if !admitted {
                crate::resource_quota::admit_update(self, res, ns, &current, &next, dry_run).await?;
                if res.kind == "PriorityClass" {
                    crate::priority::validate_class(self, &next, Some(&current)).await?;
                }
                admitted = true;
            }
            if (next == current && !self.store.is_stale(&key, kv.mod_revision)) || dry_run {
                return Ok(next);
            }
            let result = if is_deleting(&next) && finalizers_empty(&next) && !awaits_kubelet(res, &next) {
                self.store.delete(&key, Some(kv.mod_revision)).await.map(|kv| {
                    let mut gone = next.clone();
                    meta(&mut gone).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    gone
                })
            } else {
                self.store
                    .update(&key, kv.mod_revision, encode(&next))
                    .await
                    .and_then(|kv| decode(&kv).map_err(|e| skiff_store::Error::Backend(e.message)))
            };
            match result {
                Ok(v) => return Ok(v),
                Err(skiff_store::Error::Conflict { .. }) if precondition.is_none() => continue,
                Err(skiff_store::Error::Conflict { .. }) => {
                    return Err(ApiError::conflict(
                        res,
                        name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                Err(skiff_store::Error::NotFound(_)) => return Err(ApiError::not_found(res, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(res, name, "too many concurrent updates"))
    }

    /// Turns a client's full object (PUT body or patch result) into the object to
    /// store: system metadata is carried over from `old`, `status` (or everything but
    /// status, for the `status` subresource) is preserved, defaults and validation
    /// run, and `metadata.generation` is bumped when the spec changed.
    pub fn prepare_update(
        &self,
        res: &ResourceInfo,
        subresource: Option<&str>,
        old: &Value,
        new: Value,
        fv: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the body of the request was not a JSON object"));
        }
        let name = old
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(n) = new.pointer("/metadata/name").and_then(Value::as_str)
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let mut next = if matches!(subresource, Some("status" | "approval")) {
            let mut o = old.clone();
            o["status"] = new.get("status").cloned().unwrap_or(json!({}));
            o
        } else {
            let mut n = new;
            if res.has_status_subresource {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        };
        next["apiVersion"] = json!(res.api_version());
        next["kind"] = json!(res.kind);
        {
            let om = old.get("metadata").cloned().unwrap_or(json!({}));
            let m = meta(&mut next);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(k) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
        }
        let (mut next, warnings) = self.normalize(res, next, fv)?;
        if res.group == "certificates.k8s.io" {
            crate::csr::prepare_update(res, subresource, old, &mut next)?;
        }
        if spec_part(&next) != spec_part(old) {
            if is_deleting(old) && res.kind != "Namespace" && subresource.is_none() && res.kind == "Pod" {
                return Err(ApiError::invalid(res, name, &[validation::FieldError {
                    reason: "FieldValueForbidden",
                    field: "spec".into(),
                    message: "Forbidden: pod updates may not change fields other than metadata and status while terminating".into(),
                }]));
            }
            let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            meta(&mut next).insert("generation".into(), json!(g + 1));
        }
        Self::check_valid(res, &next)?;
        let errs = validation::validate_update(res.group, res.kind, old, &next);
        if !errs.is_empty() {
            return Err(ApiError::invalid(res, name, &errs));
        }
        Ok((next, warnings))
    }

    /// Deletes an object per `DeleteOptions` (graceful deletion for pods on a node,
    /// finalizers, propagation policy). Returns the object as of the delete.
    pub async fn delete(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let key = res.key(ns, name);
        for _ in 0..64 {
            let Some(kv) = self.store.get(&key).await? else {
                return Err(ApiError::not_found(res, name));
            };
            let cur = decode(&kv)?;
            if let Some(uid) = &opts.precondition_uid {
                let have = cur.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
                if uid != have {
                    return Err(ApiError::conflict(
                        res,
                        name,
                        &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_rv
                && *rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            let mut next = cur.clone();
            if res.kind == "Namespace" {
                if is_deleting(&cur) {
                    return Ok(cur);
                }
                meta(&mut next).insert("deletionTimestamp".into(), json!(now_rfc3339()));
                meta(&mut next).insert("deletionGracePeriodSeconds".into(), json!(0));
                next["status"]["phase"] = json!("Terminating");
            } else {
                let grace = self.grace_period(res, &cur, opts);
                let mut finalizers: Vec<Value> = cur
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                match opts.propagation.as_deref() {
                    Some("Foreground") => add_unique(&mut finalizers, "foregroundDeletion"),
                    Some("Orphan") => add_unique(&mut finalizers, "orphan"),
                    _ if opts.orphan_dependents == Some(true) => add_unique(&mut finalizers, "orphan"),
                    _ => {}
                }
                if is_deleting(&cur) {
                    // Already being deleted: only a shorter grace period changes anything.
                    let cur_grace = cur
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if grace >= cur_grace || (grace > 0 && !finalizers_empty(&cur)) {
                        return Ok(cur);
                    }
                }
                if grace == 0 && finalizers.is_empty() {
                    if opts.dry_run {
                        return Ok(cur);
                    }
                    match self.store.delete(&key, Some(kv.mod_revision)).await {
                        Ok(_) => return Ok(cur),
                        Err(skiff_store::Error::Conflict { .. }) => continue,
                        Err(skiff_store::Error::NotFound(_)) => return Err(ApiError::not_found(res, name)),
                        Err(e) => return Err(e.into()),
                    }
                }
                let when = Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or_else(|_| Timestamp::now());
                let m = meta(&mut next);
                if !is_deleting(&cur)
                    || grace < m.get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0)
                {
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(when.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                }
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), Value::Array(finalizers));
                }
            }
            if opts.dry_run {
                return Ok(next);
            }
            match self.store.update(&key, kv.mod_revision, encode(&next)).await {
                Ok(kv) => return decode(&kv),
                Err(skiff_store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(res, name, "too many concurrent updates"))
    }

    /// Upstream pod grace: the request's `gracePeriodSeconds`, else the pod's
    /// `terminationGracePeriodSeconds`; 0 for pods not on a node or already terminal.
    fn grace_period(&self, res: &ResourceInfo, obj: &Value, opts: &DeleteOptions) -> i64 {
        if res.kind != "Pod" {
            return 0;
        }
        let unscheduled = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
        if unscheduled || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        opts.grace_period_seconds
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }
}

/// Whether a deleting object must stay until the kubelet confirms its containers
/// are gone (a bound pod with a non-zero grace period).
fn awaits_kubelet(res: &ResourceInfo, obj: &Value) -> bool {
    res.kind == "Pod"
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0
        && obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
}

fn add_unique(list: &mut Vec<Value>, f: &str) {
    if !list.iter().any(|v| v.as_str() == Some(f)) {
        list.push(json!(f));
    }
}

/// `DeleteOptions`, from the request body and/or query.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: `Orphan`, `Background` or `Foreground`.
    pub propagation: Option<String>,
    /// Deprecated `orphanDependents`.
    pub orphan_dependents: Option<bool>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"spec": {"containers": [{"name": "a"}]}})),
            "BestEffort"
        );
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn generated_names_have_prefix_and_suffix() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9);
    }
}
