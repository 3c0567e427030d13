//! ServiceAccount admission on pod creation and pod-bound tokens, through a real
//! apiserver: what `kubectl get pod -o yaml` shows after creating a pod, and which
//! pods are refused.

mod support;

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use support::{TestServer, create_default_service_account, start};

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn pod(name: &str, spec: Value) -> Pod {
    let mut s = json!({"containers": [{"name": "app", "image": "busybox"}]});
    s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": s})).unwrap()
}

async fn create(s: &TestServer, ns: &str, p: &Pod) -> Result<Value, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), ns);
    let created = pods.create(&PostParams::default(), p).await?;
    Ok(serde_json::to_value(created).unwrap())
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn pods_get_the_default_service_account_and_its_token_volume() {
    let s = start().await;
    let p = pod(
        "web",
        json!({"initContainers": [{"name": "setup", "image": "busybox"}],
               "containers": [{"name": "app", "image": "busybox"},
                              {"name": "own", "image": "busybox",
                               "volumeMounts": [{"name": "mine", "mountPath": MOUNT}]}],
               "volumes": [{"name": "mine", "emptyDir": {}}]}),
    );
    let got = create(&s, "default", &p).await.unwrap();
    assert_eq!(got["spec"]["serviceAccountName"], "default");
    assert_eq!(got["spec"]["serviceAccount"], "default");
    let volumes = got["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let name = volumes[1]["name"].as_str().unwrap().to_string();
    assert!(
        name.len() == "kube-api-access-".len() + 5 && name.starts_with("kube-api-access-"),
        "{name}"
    );
    assert_eq!(
        volumes[1]["projected"],
        json!({
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        })
    );
    let token_mount = json!([{"name": name, "readOnly": true, "mountPath": MOUNT}]);
    assert_eq!(got["spec"]["initContainers"][0]["volumeMounts"], token_mount);
    assert_eq!(got["spec"]["containers"][0]["volumeMounts"], token_mount);
    assert_eq!(
        got["spec"]["containers"][1]["volumeMounts"],
        json!([{"name": "mine", "mountPath": MOUNT}]),
        "a container mounting the path itself is left alone"
    );
}

#[tokio::test]
async fn automount_false_on_the_pod_or_the_service_account_mounts_nothing() {
    let s = start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    let quiet: ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false,
                                      "imagePullSecrets": [{"name": "regcred"}]}),
    )
    .unwrap();
    sas.create(&PostParams::default(), &quiet).await.unwrap();

    let off = create(
        &s,
        "default",
        &pod("off", json!({"automountServiceAccountToken": false})),
    )
    .await
    .unwrap();
    assert!(off["spec"].get("volumes").is_none(), "{off}");
    assert!(off["spec"]["containers"][0].get("volumeMounts").is_none());

    let by_sa = create(&s, "default", &pod("by-sa", json!({"serviceAccountName": "quiet"})))
        .await
        .unwrap();
    assert_eq!(by_sa["spec"]["serviceAccountName"], "quiet");
    assert!(by_sa["spec"].get("volumes").is_none(), "{by_sa}");
    assert_eq!(
        by_sa["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}]),
        "the ServiceAccount's pull secrets are copied"
    );

    // The pod's own setting wins over the ServiceAccount's.
    let pod_wins = create(
        &s,
        "default",
        &pod(
            "pod-wins",
            json!({"serviceAccountName": "quiet", "automountServiceAccountToken": true}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(pod_wins["spec"]["volumes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_pod_naming_a_missing_service_account_is_forbidden() {
    let s = start().await;
    let err = create(&s, "default", &pod("lost", json!({"serviceAccountName": "ghost"})))
        .await
        .unwrap_err();
    let (code, reason, message) = api_error(err);
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        r#"pods "lost" is forbidden: error looking up service account default/ghost: serviceaccount "ghost" not found"#
    );
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    assert!(pods.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn a_new_namespace_accepts_pods_once_its_default_service_account_appears() {
    let s = start().await;
    let nss: Api<Namespace> = Api::all(s.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "fresh"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    // The ServiceAccount controller lags behind the namespace a little.
    let client = s.client.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        create_default_service_account(&client, "fresh").await;
    });
    let got = create(&s, "fresh", &pod("early", json!({}))).await.unwrap();
    assert_eq!(got["spec"]["serviceAccountName"], "default");
    late.await.unwrap();
}

/// A client that authenticates with `token` against the test server.
async fn bearer(s: &TestServer, token: &str) -> kube::Client {
    let admin = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let cluster = admin.clusters[0].cluster.clone().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: sa\ncurrent-context: skiff\n",
        cluster.server.unwrap(),
        cluster.certificate_authority_data.unwrap()
    );
    let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn a_token_bound_to_a_pod_stops_working_when_the_pod_is_deleted() {
    let s = start().await;
    let p = create(&s, "default", &pod("holder", json!({}))).await.unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": [], "expirationSeconds": 3607,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "holder", "uid": uid}}}))
    .unwrap();
    let token = sas
        .create_token_request("default", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let as_sa = bearer(&s, &token).await;
    let (code, _, message) = api_error(
        Api::<Pod>::namespaced(as_sa.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "authenticated, not yet authorized");
    assert!(
        message.contains(r#"User "system:serviceaccount:default:default""#),
        "{message}"
    );

    // kubectl auth whoami's question, asked with the token.
    let me = Api::<SelfSubjectReview>::all(as_sa.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let info = me.status.unwrap().user_info.unwrap();
    assert_eq!(info.username.as_deref(), Some("system:serviceaccount:default:default"));
    assert_eq!(
        info.groups.unwrap(),
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );
    // A TokenReview (as a webhook authenticator would ask) names the pod.
    let reviews: Api<TokenReview> = Api::all(s.client.clone());
    let ask: TokenReview = serde_json::from_value(json!({"spec": {"token": token}})).unwrap();
    let review = serde_json::to_value(reviews.create(&PostParams::default(), &ask).await.unwrap()).unwrap();
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(
        review["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["holder"])
    );
    assert_eq!(
        review["status"]["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([uid])
    );
    assert_eq!(
        review["status"]["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    let empty: TokenReview = serde_json::from_value(json!({"spec": {}})).unwrap();
    let (code, _, message) = api_error(reviews.create(&PostParams::default(), &empty).await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (400, "token is required for TokenReview in authentication")
    );
    let other: TokenReview = serde_json::from_value(json!({"spec": {"token": token, "audiences": ["vault"]}})).unwrap();
    let review = reviews.create(&PostParams::default(), &other).await.unwrap();
    assert_eq!(
        review.status.unwrap().authenticated,
        None,
        "not issued for that audience"
    );

    Api::<Pod>::namespaced(s.client.clone(), "default")
        .delete("holder", &DeleteParams::default())
        .await
        .unwrap();
    let review = reviews
        .create(&PostParams::default(), &ask)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(review.authenticated, None);
    assert_eq!(
        review.error.as_deref(),
        Some("invalid bearer token, service account token has been invalidated")
    );
    let (code, reason, _) = api_error(
        Api::<Pod>::namespaced(as_sa, "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
}
