//! ControllerRevisions (apps/v1) for controllers that version their pod template
//! the way upstream's DaemonSet and StatefulSet controllers do
//! (pkg/controller/history): each distinct template is stored once as
//! `<owner>-<hash>` with a increasing `revision`, and the hash is the pods'
//! `controller-revision-hash` label.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Error;
use crate::common::{controller_of, is_conflict, is_not_found, owner_ref};
use crate::rollout::template_hash;

/// Label on pods (and revisions) with the revision hash of their template.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// The hash of a pod template as stored in a revision (FNV-1a over its JSON,
/// with the collision count, rendered with upstream's safe alphabet).
pub fn hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> Result<String, Error> {
    Ok(template_hash(&serde_json::to_string(template)?, collision_count))
}

/// The revision data for a template: upstream stores a strategic-merge patch
/// `{"spec": {"template": {..., "$patch": "replace"}}}`.
pub fn data(template: &PodTemplateSpec) -> Result<serde_json::Value, Error> {
    let mut t = serde_json::to_value(template)?;
    t["$patch"] = json!("replace");
    Ok(json!({"spec": {"template": t}}))
}

/// The revisions in `ns` controlled by `owner_uid`, oldest revision first.
pub async fn owned(client: &kube::Client, ns: &str, owner_uid: &str) -> Result<Vec<ControllerRevision>, Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let mut list: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| controller_of(&r.metadata).is_some_and(|o| o.uid == owner_uid))
        .collect();
    list.sort_by_key(|r| r.revision);
    Ok(list)
}

/// Makes the revision for `template` current: reuses the one with the same hash
/// (raising its `revision` above the others if it is an older one, i.e. a
/// rollback) or creates `<owner>-<hash>`. Returns the current revision.
pub async fn ensure(
    client: &kube::Client,
    owner_api_version: &str,
    owner_kind: &str,
    owner: &ObjectMeta,
    template: &PodTemplateSpec,
    existing: &[ControllerRevision],
) -> Result<ControllerRevision, Error> {
    let ns = owner.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let h = hash(template, None)?;
    let max = existing.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(r) = existing
        .iter()
        .find(|r| r.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH)) == Some(&h))
    {
        if r.revision == max {
            return Ok(r.clone());
        }
        let patch = json!({"revision": max + 1});
        return Ok(api
            .patch(
                r.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?);
    }
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH.to_string(), h.clone());
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{h}", owner.name.as_deref().unwrap_or_default())),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![owner_ref(owner_api_version, owner_kind, owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data(template)?)),
        revision: max + 1,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(cr) => Ok(cr),
        Err(e) if is_conflict(&e) => {
            // Ours from an earlier sync whose list we did not see yet.
            let got = api.get(cr.metadata.name.as_deref().unwrap_or_default()).await?;
            let ours = controller_of(&got.metadata).map(|o| &o.uid) == owner.uid.as_ref();
            if ours && got.data == cr.data {
                Ok(got)
            } else {
                Err(Error::HashCollision(cr.metadata.name.unwrap_or_default()))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the oldest revisions beyond `limit` that no live pod uses (`in_use`
/// hashes) and that are not `current` (upstream `truncateHistory`).
pub async fn truncate(
    client: &kube::Client,
    existing: &[ControllerRevision],
    current: &str,
    in_use: &[Arc<str>],
    limit: i32,
) -> Result<(), Error> {
    let removable: Vec<&ControllerRevision> = existing
        .iter()
        .filter(|r| {
            let h = r.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH));
            r.metadata.name.as_deref() != Some(current) && h.is_none_or(|h| !in_use.iter().any(|u| **u == **h))
        })
        .collect();
    let excess = removable.len().saturating_sub(limit.max(0) as usize);
    for r in removable.into_iter().take(excess) {
        let api: Api<ControllerRevision> =
            Api::namespaced(client.clone(), r.metadata.namespace.as_deref().unwrap_or_default());
        match api
            .delete(r.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_the_template_only() {
        let t = |image: &str| -> PodTemplateSpec {
            serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}))
            .unwrap()
        };
        assert_eq!(hash(&t("a:1"), None).unwrap(), hash(&t("a:1"), None).unwrap());
        assert_ne!(hash(&t("a:1"), None).unwrap(), hash(&t("a:2"), None).unwrap());
        assert_ne!(hash(&t("a:1"), None).unwrap(), hash(&t("a:1"), Some(1)).unwrap());
        let d = data(&t("a:1")).unwrap();
        assert_eq!(d["spec"]["template"]["$patch"], "replace");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "a:1");
    }
}
