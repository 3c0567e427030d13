//! Integration tests of authentication and RBAC authorization: a real apiserver,
//! clients with certificates for different users (and none), driven through `kube`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use skiff_apiserver::pki::Pki;
use tokio_util::sync::CancellationToken;

struct TestServer {
    pki: Pki,
    url: String,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&dir.path().join("tls")).unwrap();
    let serving = pki
        .ensure_cert(
            "server",
            "kube-apiserver",
            &[],
            &["127.0.0.1".into(), "localhost".into()],
        )
        .unwrap();
    let admin = pki
        .ensure_cert("admin", "system:admin", &["system:masters"], &[])
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store: Arc<dyn skiff_store::Store> =
        Arc::new(skiff_store::EmbeddedStore::open(&dir.path().join("db")).unwrap());
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = skiff_apiserver::Config {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        advertise: format!("127.0.0.1:{port}"),
        serving_cert_pem: serving.cert_pem.clone(),
        serving_key_pem: serving.key_pem.clone(),
        client_ca_pem: pki.ca_pem.clone(),
        kubelet_client_cert_pem: admin.cert_pem.clone(),
        kubelet_client_key_pem: admin.key_pem.clone(),
        service_network: Default::default(),
        service_account_key_pem: pki.ensure_service_account_key().unwrap(),
        metrics: Default::default(),
    };
    tokio::spawn(skiff_apiserver::run(config, store, shutdown.clone(), tx));
    rx.await.unwrap();
    TestServer {
        pki,
        url: format!("https://127.0.0.1:{port}"),
        dir,
        shutdown,
    }
}

impl TestServer {
    /// A client authenticating as `cn` in groups `orgs`.
    async fn client(&self, file: &str, cn: &str, orgs: &[&str]) -> kube::Client {
        let pair = self.pki.ensure_cert(file, cn, orgs, &[]).unwrap();
        let path = self.dir.path().join(format!("{file}.kubeconfig"));
        self.pki.write_kubeconfig(&path, &self.url, cn, &pair).unwrap();
        let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    /// A client without a client certificate (anonymous).
    fn anonymous(&self) -> kube::Client {
        let mut cfg = kube::Config::new(self.url.parse().unwrap());
        let ca = CertificateDer::from_pem_slice(self.pki.ca_pem.as_bytes()).unwrap();
        cfg.root_cert = Some(vec![ca.to_vec()]);
        kube::Client::try_from(cfg).unwrap()
    }
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_limited_user_is_denied_until_a_role_binding_grants_access() {
    let server = start().await;
    let admin = server.client("admin", "system:admin", &["system:masters"]).await;
    let jane = server.client("jane", "jane", &["developers"]).await;

    let pods: Api<Pod> = Api::namespaced(jane.clone(), "default");
    let (code, reason, message) = api_error(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    let cms: Api<ConfigMap> = Api::namespaced(jane.clone(), "default");
    let (code, _, message) = api_error(cms.get("settings").await.unwrap_err());
    assert_eq!(code, 403);
    assert_eq!(
        message,
        r#"configmaps "settings" is forbidden: User "jane" cannot get resource "configmaps" in API group "" in the namespace "default""#
    );

    // The bootstrap `view` role, aggregated from system:aggregate-to-view, bound to
    // jane's group in one namespace.
    let view: ClusterRole = Api::all(admin.clone()).get("view").await.unwrap();
    assert!(view.aggregation_rule.is_some());
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "developers-view", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "developers"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    // The authorizer's cache follows the store by watch: poll briefly.
    let mut listed = None;
    for _ in 0..50 {
        match pods.list(&ListParams::default()).await {
            Ok(l) => {
                listed = Some(l);
                break;
            }
            Err(e) => {
                assert_eq!(api_error(e).0, 403);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(listed.is_some(), "the RoleBinding never took effect");
    // view does not allow writes, nor reads in other namespaces.
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    let (code, _, message) = api_error(pods.create(&PostParams::default(), &pod).await.unwrap_err());
    assert_eq!(code, 403);
    assert!(message.ends_with(r#"cannot create resource "pods" in API group "" in the namespace "default""#));
    let other: Api<Pod> = Api::namespaced(jane.clone(), "kube-system");
    assert_eq!(api_error(other.list(&ListParams::default()).await.unwrap_err()).0, 403);
    let all: Api<Pod> = Api::all(jane.clone());
    let (_, _, message) = api_error(all.list(&ListParams::default()).await.unwrap_err());
    assert!(message.ends_with(r#"cannot list resource "pods" in API group "" at the cluster scope"#));

    // SelfSubjectAccessReview (what `kubectl auth can-i` asks).
    let ssar = |verb: &str, ns: &str| -> SelfSubjectAccessReview {
        serde_json::from_value(json!({"spec": {"resourceAttributes":
            {"verb": verb, "resource": "pods", "namespace": ns}}}))
        .unwrap()
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(jane.clone());
    let can = |r: SelfSubjectAccessReview| r.status.is_some_and(|s| s.allowed);
    assert!(can(reviews
        .create(&PostParams::default(), &ssar("list", "default"))
        .await
        .unwrap()));
    assert!(!can(reviews
        .create(&PostParams::default(), &ssar("delete", "default"))
        .await
        .unwrap()));
}

#[tokio::test]
async fn masters_are_allowed_everything() {
    let server = start().await;
    let root = server.client("root", "someone", &["system:masters"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(root.clone(), "kube-system");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}, "data": {"a": "b"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    Api::<Pod>::all(root).list(&ListParams::default()).await.unwrap();
}

#[tokio::test]
async fn anonymous_can_read_version_but_not_list_pods() {
    let server = start().await;
    let anon = server.anonymous();
    let version = anon.apiserver_version().await.unwrap();
    assert!(!version.git_version.is_empty());
    let req = http::Request::get("/healthz").body(Vec::new()).unwrap();
    assert_eq!(anon.request_text(req).await.unwrap(), "ok");
    let (code, reason, message) = api_error(
        Api::<Pod>::namespaced(anon.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        r#"pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    let req = http::Request::get("/apis").body(Vec::new()).unwrap();
    let (code, _, message) = api_error(anon.request_text(req).await.unwrap_err());
    assert_eq!(code, 403);
    assert_eq!(message, r#"forbidden: User "system:anonymous" cannot get path "/apis""#);
}

/// The WebSocket form of `pods/exec` is a `GET`; as upstream requires since 1.31
/// (KEP-4006), it must also be allowed to `create` the subresource.
#[tokio::test]
async fn websocket_exec_needs_create_on_pods_exec() {
    let server = start().await;
    let admin = server.client("admin", "system:admin", &["system:masters"]).await;
    let bob = server.client("bob", "bob", &[]).await;
    let role = |verbs: &[&str]| -> Role {
        serde_json::from_value(json!({
            "metadata": {"name": "exec", "namespace": "default"},
            "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": verbs}],
        }))
        .unwrap()
    };
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    roles.create(&PostParams::default(), &role(&["get"])).await.unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "bob-exec", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exec"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    let exec = || {
        http::Request::get("/api/v1/namespaces/default/pods/missing/exec?command=ls&stdout=true")
            .body(Vec::new())
            .unwrap()
    };
    // Until the binding is visible the `get` itself is refused; then `create` is.
    let mut message = String::new();
    for _ in 0..50 {
        let (code, _, m) = api_error(bob.request_text(exec()).await.unwrap_err());
        assert_eq!(code, 403);
        message = m;
        if message.contains("cannot create") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        message.ends_with(r#"cannot create resource "pods/exec" in API group "" in the namespace "default""#),
        "{message}"
    );
    let mut both = role(&["get", "create"]);
    both.metadata.resource_version = roles.get("exec").await.unwrap().metadata.resource_version;
    roles.replace("exec", &PostParams::default(), &both).await.unwrap();
    // Authorized: the request now gets as far as looking the pod up.
    let mut code = 0;
    for _ in 0..50 {
        code = api_error(bob.request_text(exec()).await.unwrap_err()).0;
        if code != 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, 404);
}

impl TestServer {
    /// A client authenticating with bearer `token` (no client certificate), and the
    /// kubeconfig it was read from.
    async fn bearer(&self, file: &str, token: &str) -> kube::Client {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.pki.ca_pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: sa\ncurrent-context: skiff\n",
            self.url
        );
        let path = self.dir.path().join(format!("{file}.kubeconfig"));
        std::fs::write(&path, text).unwrap();
        let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }
}

/// Lists pods in `default` until the authorizer's cache has caught up with `ok`.
async fn wait_pods_list(pods: &Api<Pod>, ok: bool) -> Result<(), kube::Error> {
    let mut last = Ok(());
    for _ in 0..50 {
        last = pods.list(&ListParams::default()).await.map(|_| ());
        if last.is_ok() == ok {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

// kubectl runs as a blocking child process, so the server needs worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_authenticate_until_the_account_is_deleted() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::DeleteParams;

    let server = start().await;
    let admin = server.client("admin", "system:admin", &["system:masters"]).await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");

    // No such ServiceAccount: 404.
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let (code, _, _) = api_error(
        sas.create_token_request("build-bot", &PostParams::default(), &tr)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "build-bot"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();

    // Too short a lifetime: 422 with upstream's message.
    let short: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 60}})).unwrap();
    let (code, reason, message) = api_error(
        sas.create_token_request("build-bot", &PostParams::default(), &short)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.ends_with("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
        "{message}"
    );

    let issued = sas
        .create_token_request("build-bot", &PostParams::default(), &tr)
        .await
        .unwrap();
    assert_eq!(issued.spec.expiration_seconds, Some(3600));
    assert_eq!(issued.spec.audiences, ["https://kubernetes.default.svc.cluster.local"]);
    let status = issued.status.unwrap();
    let left = status.expiration_timestamp.0.as_second() - jiff::Timestamp::now().as_second();
    assert!((3590..=3600).contains(&left), "{left}");

    // The token authenticates as the ServiceAccount, which RBAC does not allow yet.
    let bot = server.bearer("bot", &status.token).await;
    let pods: Api<Pod> = Api::namespaced(bot.clone(), "default");
    let (code, _, message) = api_error(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403);
    assert_eq!(
        message,
        r#"pods is forbidden: User "system:serviceaccount:default:build-bot" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "build-bot-view", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "build-bot", "namespace": "default"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    wait_pods_list(&pods, true).await.unwrap();

    // kubectl create token, then the token it printed works as well.
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.dir.path().join("admin.kubeconfig"))
        .args(["create", "token", "build-bot", "--duration=20m"])
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let by_kubectl = server.bearer("bot-kubectl", token.trim()).await;
    Api::<Pod>::namespaced(by_kubectl.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();

    // Garbled and foreign tokens: 401.
    for bad in [format!("{}x", status.token), "garbage".to_string()] {
        let c = server.bearer("bad", &bad).await;
        let (code, reason, _) = api_error(
            Api::<Pod>::namespaced(c, "default")
                .list(&ListParams::default())
                .await
                .unwrap_err(),
        );
        assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    }

    // Deleting the ServiceAccount revokes its tokens; a new one of the same name
    // (another uid) does not revive them.
    sas.delete("build-bot", &DeleteParams::default()).await.unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let (code, _, _) = api_error(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 401);
}

#[tokio::test]
async fn metrics_are_served_to_admins_and_not_to_anonymous() {
    let server = start().await;
    let admin = server.client("admin", "system:admin", &["system:masters"]).await;
    let get = || http::Request::get("/metrics").body(Vec::new()).unwrap();
    let body = admin.request_text(get()).await.unwrap();
    // The text format ends with its terminator even when no metric is registered.
    assert!(body.ends_with("# EOF\n"), "{body:?}");
    let (code, reason, _) = api_error(server.anonymous().request_text(get()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
}

/// A CSR object for `cn` with `signer`.
fn csr_object(name: &str, cn: &str, signer: &str) -> serde_json::Value {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": name},
           "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem), "signerName": signer,
                    "usages": ["digital signature", "client auth"], "username": "forged"}})
}

#[tokio::test]
async fn bootstrap_tokens_authenticate_and_approving_needs_approve_on_the_signer() {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use k8s_openapi::api::core::v1::Secret;
    use skiff_api::bootstrap_token::{BootstrapToken, secret_manifest};
    let server = start().await;
    let admin = server.client("admin", "system:admin", &["system:masters"]).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kube-system");
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let s: Secret = serde_json::from_value(secret_manifest(&token, Some(later), None, &[])).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let expired = BootstrapToken::parse("expird.0123456789abcdef").unwrap();
    let earlier = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let s: Secret = serde_json::from_value(secret_manifest(&expired, Some(earlier), None, &[])).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();

    // The token creates a CSR; the requester is recorded from authentication.
    let boot = server.bearer("boot", &token.to_string()).await;
    let csrs: Api<CertificateSigningRequest> = Api::all(boot);
    let obj = csr_object(
        "node-csr-1",
        "system:node:n1",
        "kubernetes.io/kube-apiserver-client-kubelet",
    );
    let created = csrs
        .create(&PostParams::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap();
    assert_eq!(created.spec.username.as_deref(), Some("system:bootstrap:abcdef"));
    assert!(
        created
            .spec
            .groups
            .unwrap()
            .contains(&"system:bootstrappers".to_string())
    );
    // Expired and unknown tokens: 401.
    for t in [expired.to_string(), "zzzzzz.0123456789abcdef".to_string()] {
        let c = server.bearer("bad", &t).await;
        let err = Api::<CertificateSigningRequest>::all(c)
            .list(&ListParams::default())
            .await
            .unwrap_err();
        assert_eq!(api_error(err).0, 401, "{t}");
    }

    // A user allowed to update approvals but not to approve for the signer: 403.
    let cr: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "csr-approver"}, "rules": [
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests", "certificatesigningrequests/approval"],
         "verbs": ["get", "update", "patch"]}]}))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "csr-approver"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "csr-approver"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"}]});
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
    crbs.create(&PostParams::default(), &serde_json::from_value(crb).unwrap())
        .await
        .unwrap();
    let jane: Api<CertificateSigningRequest> = Api::all(server.client("jane", "jane", &[]).await);
    let approve = json!({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "Test"}]}});
    let patch = kube::api::Patch::Merge(&approve);
    let pp = kube::api::PatchParams::default();
    let mut last = None;
    for _ in 0..50 {
        match jane.patch_subresource("approval", "node-csr-1", &pp, &patch).await {
            Err(e) => {
                let (code, _, msg) = api_error(e);
                if code == 403 && msg.contains("not permitted to approve") {
                    last = Some(msg);
                    break;
                }
            }
            Ok(_) => panic!("approved without approve on the signer"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.is_some(), "jane was never refused by the signer check");
    // With `approve` on `kubernetes.io/*` signers, she may.
    let mut cr = Api::<ClusterRole>::all(admin.clone())
        .get("csr-approver")
        .await
        .unwrap();
    cr.rules.as_mut().unwrap().push(
        serde_json::from_value(json!({"apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
            "resourceNames": ["kubernetes.io/*"], "verbs": ["approve"]}))
        .unwrap(),
    );
    Api::<ClusterRole>::all(admin.clone())
        .replace("csr-approver", &PostParams::default(), &cr)
        .await
        .unwrap();
    let mut approved = None;
    for _ in 0..50 {
        if let Ok(c) = jane.patch_subresource("approval", "node-csr-1", &pp, &patch).await {
            approved = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = approved.expect("approval with approve on the signer");
    assert_eq!(c.status.unwrap().conditions.unwrap()[0].type_, "Approved");
}
