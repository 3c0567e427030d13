//! One sync of one Deployment (upstream `syncDeployment` and the strategy
//! functions it calls): finding or creating the new ReplicaSet, scaling for
//! resizes, RollingUpdate and Recreate, revision history clean-up, and writing
//! the status.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use serde_json::json;
use skiff_api::events::EventType;

use super::{
    COMPONENT, Ctx, DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS, REVISION, REVISION_HISTORY, annotation,
    copied_annotations, created, equal_ignoring_hash, find_new, is_rolling, max_surge, max_unavailable, revision_of,
    rs_available, rs_spec, rs_status_replicas, saturated, spec_replicas, status, template_hash,
};
use crate::Error;
use crate::common::{controller_of, owner_ref, record, reference, selector_string};
use crate::rollout::{self, RsCounts, ScaleInput};

/// One sync of one Deployment.
pub(super) struct Sync<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) d: &'a Deployment,
    pub(super) rss: Vec<ReplicaSet>,
    pub(super) status: DeploymentStatus,
    pub(super) now: jiff::Timestamp,
}

impl Sync<'_> {
    fn api(&self) -> Api<ReplicaSet> {
        Api::namespaced(
            self.ctx.client.clone(),
            self.d.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    async fn event(&self, ty: EventType, reason: &str, message: &str) {
        record(
            &self.ctx.client,
            reference("apps/v1", "Deployment", &self.d.metadata),
            ty,
            reason,
            message,
            COMPONENT,
        )
        .await;
    }

    /// Upstream `scaleReplicaSet`: sets `spec.replicas` and the desired/max
    /// annotations; returns whether the size changed.
    pub(super) async fn scale(&mut self, i: usize, size: i32) -> Result<bool, Error> {
        let want = spec_replicas(self.d);
        let max = want + max_surge(self.d);
        let rs = &self.rss[i];
        let old = rs_spec(rs);
        let annotations_ok = annotation(&rs.metadata, DESIRED_REPLICAS) == Some(want.to_string().as_str())
            && annotation(&rs.metadata, MAX_REPLICAS) == Some(max.to_string().as_str());
        if old == size && annotations_ok {
            return Ok(false);
        }
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: want.to_string(), MAX_REPLICAS: max.to_string()}},
            "spec": {"replicas": size},
        });
        self.rss[i] = self
            .api()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if old != size {
            let verb = if size > old { "up" } else { "down" };
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled {verb} replica set {name} from {old} to {size}"),
            )
            .await;
        }
        Ok(old != size)
    }

    /// Upstream `getNewReplicaSet`: finds the new ReplicaSet (syncing its revision
    /// and annotations) or, with `create`, creates it. Returns its index.
    pub(super) async fn new_rs(&mut self, create: bool) -> Result<Option<usize>, Error> {
        let existing = find_new(self.d, &self.rss);
        let max_old_revision = self
            .rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != existing)
            .map(|(_, rs)| revision_of(rs))
            .max()
            .unwrap_or(0);
        let new_revision = max_old_revision + 1;
        if let Some(i) = existing {
            self.sync_new_rs_metadata(i, new_revision).await?;
            let name = self.rss[i].metadata.name.clone().unwrap_or_default();
            if status::get(&self.status, status::PROGRESSING).is_none() {
                let msg = format!("Found new replica set \"{name}\"");
                status::set(
                    &mut self.status,
                    status::new_condition(status::PROGRESSING, "True", status::FOUND_NEW_RS, &msg, self.now),
                );
            }
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }
        let d = self.d;
        let spec = d.spec.clone().unwrap_or_default();
        let hash = template_hash(d)?;
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let want = spec_replicas(d);
        let replicas = if is_rolling(d) {
            let total: i32 = self.rss.iter().map(rs_spec).sum();
            rollout::new_rs_replicas(want, max_surge(d), total, 0)
        } else {
            want
        };
        let mut annotations = copied_annotations(d);
        annotations.insert(REVISION.into(), new_revision.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
        annotations.insert(MAX_REPLICAS.into(), (want + max_surge(d)).to_string());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: d.metadata.namespace.clone(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![owner_ref("apps/v1", "Deployment", &d.metadata)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        match self.api().create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    self.event(
                        EventType::Normal,
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {name} from 0 to {replicas}"),
                    )
                    .await;
                }
                let msg = format!("Created new replica set \"{name}\"");
                status::set(
                    &mut self.status,
                    status::new_condition(status::PROGRESSING, "True", status::NEW_RS_CREATED, &msg, self.now),
                );
                self.rss.push(created);
                self.sync_deployment_revision(new_revision).await?;
                Ok(Some(self.rss.len() - 1))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Same name, other template or owner: a hash collision. Bump the
                // collision count so the next sync hashes differently.
                let existing = self.api().get(&name).await?;
                let ours = controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignoring_hash(t, &spec.template));
                if ours && same {
                    self.rss.push(existing);
                    return Ok(Some(self.rss.len() - 1));
                }
                self.status.collision_count = Some(self.status.collision_count.unwrap_or(0) + 1);
                self.write_status().await?;
                Err(Error::Invalid(format!(
                    "hash collision for replica set {name}; retrying"
                )))
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set \"{name}\": {e}");
                status::set(
                    &mut self.status,
                    status::new_condition(status::PROGRESSING, "False", status::FAILED_RS_CREATE, &msg, self.now),
                );
                self.write_status().await?;
                Err(e.into())
            }
        }
    }

    /// Upstream `SetNewReplicaSetAnnotations` on an existing new ReplicaSet: the
    /// Deployment's annotations, the new revision (keeping the old one in the
    /// history), and `minReadySeconds`.
    async fn sync_new_rs_metadata(&mut self, i: usize, new_revision: i64) -> Result<(), Error> {
        let rs = &self.rss[i];
        let mut updates: BTreeMap<String, String> = copied_annotations(self.d)
            .into_iter()
            .filter(|(k, v)| annotation(&rs.metadata, k) != Some(v.as_str()))
            .collect();
        let current = revision_of(rs);
        if current < new_revision {
            updates.insert(REVISION.into(), new_revision.to_string());
            if current > 0 {
                let history = match annotation(&rs.metadata, REVISION_HISTORY) {
                    Some(h) if !h.is_empty() => format!("{h},{current}"),
                    _ => current.to_string(),
                };
                updates.insert(REVISION_HISTORY.into(), history);
            }
        }
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let min_ready_differs =
            rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != min_ready.unwrap_or(0);
        if !updates.is_empty() || min_ready_differs {
            let name = rs.metadata.name.clone().unwrap_or_default();
            let patch = json!({"metadata": {"annotations": updates}, "spec": {"minReadySeconds": min_ready}});
            self.rss[i] = self
                .api()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let revision = revision_of(&self.rss[i]);
        self.sync_deployment_revision(revision).await
    }

    /// Upstream `SetDeploymentRevision`: the Deployment carries its new ReplicaSet's revision.
    async fn sync_deployment_revision(&self, revision: i64) -> Result<(), Error> {
        if annotation(&self.d.metadata, REVISION) == Some(revision.to_string().as_str()) {
            return Ok(());
        }
        Api::<Deployment>::namespaced(
            self.ctx.client.clone(),
            self.d.metadata.namespace.as_deref().unwrap_or_default(),
        )
        .patch(
            self.d.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REVISION: revision.to_string()}}})),
        )
        .await?;
        Ok(())
    }

    fn old_indices(&self, new: Option<usize>) -> Vec<usize> {
        let mut old: Vec<usize> = (0..self.rss.len()).filter(|i| Some(*i) != new).collect();
        old.sort_by_key(|&i| (created(&self.rss[i]), self.rss[i].metadata.name.clone()));
        old
    }

    /// Upstream `scale`: resizes for a changed `spec.replicas` (or while paused).
    pub(super) async fn scale_for_resize(&mut self, new: Option<usize>) -> Result<(), Error> {
        let want = spec_replicas(self.d);
        let active: Vec<usize> = (0..self.rss.len()).filter(|&i| rs_spec(&self.rss[i]) > 0).collect();
        let active_or_latest = match active.len() {
            0 => new.or_else(|| self.old_indices(None).last().copied()),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = active_or_latest {
            self.scale(i, want).await?;
            return Ok(());
        }
        if let Some(n) = new
            && saturated(self.d, &self.rss[n])
        {
            for i in self.old_indices(Some(n)) {
                if rs_spec(&self.rss[i]) > 0 {
                    self.scale(i, 0).await?;
                }
            }
            return Ok(());
        }
        if is_rolling(self.d) {
            let current: i32 = active.iter().map(|&i| rs_spec(&self.rss[i])).sum();
            let adding = want + max_surge(self.d) > current;
            let mut order = active;
            order.sort_by_key(|&i| {
                let rs = &self.rss[i];
                let age = if adding { -created(rs) } else { created(rs) };
                (-rs_spec(rs), age)
            });
            let inputs: Vec<ScaleInput> = order
                .iter()
                .map(|&i| ScaleInput {
                    spec: rs_spec(&self.rss[i]),
                    max_replicas: annotation(&self.rss[i].metadata, MAX_REPLICAS).and_then(|v| v.parse().ok()),
                })
                .collect();
            let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let sizes = rollout::proportional_sizes(&inputs, want, max_surge(self.d), status_replicas);
            for (i, size) in order.into_iter().zip(sizes) {
                self.scale(i, size).await?;
            }
        }
        Ok(())
    }

    /// Upstream `rolloutRolling` (after the new ReplicaSet exists).
    pub(super) async fn rolling(&mut self, n: usize) -> Result<(), Error> {
        let d = self.d;
        let want = spec_replicas(d);
        let new_spec = rs_spec(&self.rss[n]);
        // reconcileNewReplicaSet
        let scaled_up = if new_spec > want {
            self.scale(n, want).await?
        } else if new_spec < want {
            let total: i32 = self.rss.iter().map(rs_spec).sum();
            let target = rollout::new_rs_replicas(want, max_surge(d), total, new_spec);
            self.scale(n, target).await?
        } else {
            false
        };
        if scaled_up {
            return Ok(());
        }
        // reconcileOldReplicaSets
        let old: Vec<usize> = self
            .old_indices(Some(n))
            .into_iter()
            .filter(|&i| rs_spec(&self.rss[i]) > 0)
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let all_pods: i32 = self.rss.iter().map(rs_spec).sum();
        let min_available = want - max_unavailable(d);
        let new_unavailable = rs_spec(&self.rss[n]) - rs_available(&self.rss[n]);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(());
        }
        let counts = |s: &Self| -> Vec<RsCounts> {
            old.iter()
                .map(|&i| RsCounts {
                    spec: rs_spec(&s.rss[i]),
                    available: rs_available(&s.rss[i]),
                })
                .collect()
        };
        for (&i, size) in old
            .iter()
            .zip(rollout::cleanup_unhealthy(&counts(self), max_scaled_down))
        {
            self.scale(i, size).await?;
        }
        let available: i32 = self.rss.iter().map(rs_available).sum();
        for (&i, size) in old
            .iter()
            .zip(rollout::scale_down_old(&counts(self), available, min_available))
        {
            self.scale(i, size).await?;
        }
        Ok(())
    }

    /// Upstream `oldPodsRunning`: old ReplicaSets still report pods, or pods they
    /// control have not finished (terminating pods count).
    async fn old_pods_running(&self, new: Option<usize>) -> Result<bool, Error> {
        let old = self.old_indices(new);
        if old.iter().any(|&i| rs_status_replicas(&self.rss[i]) > 0) {
            return Ok(true);
        }
        let uids: Vec<&str> = old
            .iter()
            .filter_map(|&i| self.rss[i].metadata.uid.as_deref())
            .collect();
        let selector = self
            .d
            .spec
            .as_ref()
            .map(|s| selector_string(&s.selector))
            .unwrap_or_default();
        let pods = Api::<Pod>::namespaced(
            self.ctx.client.clone(),
            self.d.metadata.namespace.as_deref().unwrap_or_default(),
        )
        .list(&ListParams::default().labels(&selector))
        .await?;
        Ok(pods.items.iter().any(|p| {
            controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str()))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        }))
    }

    /// Upstream `rolloutRecreate`. Returns the new ReplicaSet's index, once it exists.
    pub(super) async fn recreate(&mut self) -> Result<Option<usize>, Error> {
        let new = self.new_rs(false).await?;
        let mut scaled_down = false;
        for i in self.old_indices(new) {
            if rs_spec(&self.rss[i]) > 0 {
                scaled_down |= self.scale(i, 0).await?;
            }
        }
        if scaled_down || self.old_pods_running(new).await? {
            return Ok(new);
        }
        let n = match new {
            Some(n) => n,
            None => match self.new_rs(true).await? {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        self.scale(n, spec_replicas(self.d)).await?;
        Ok(Some(n))
    }

    /// Upstream `cleanupDeployment`: deletes the oldest old ReplicaSets beyond
    /// `revisionHistoryLimit`, skipping any that still have pods.
    pub(super) async fn cleanup(&self, new: Option<usize>) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut old: Vec<&ReplicaSet> = self
            .old_indices(new)
            .into_iter()
            .map(|i| &self.rss[i])
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = old.len() as i64 - limit.max(0) as i64;
        if excess <= 0 {
            return Ok(());
        }
        old.sort_by_key(|rs| (revision_of(rs), created(rs)));
        for rs in old.into_iter().take(excess as usize) {
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if rs_status_replicas(rs) != 0 || rs_spec(rs) != 0 || rs.metadata.generation.unwrap_or(0) > observed {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match self
                .api()
                .delete(rs.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Recomputes the status (counts, Available; with `rollout`, also Progressing
    /// and ReplicaFailure) and writes it if it changed.
    pub(super) async fn finish(&mut self, new: Option<usize>, rollout: bool) -> Result<Action, Error> {
        let all: Vec<&ReplicaSet> = self.rss.iter().collect();
        let new_rs = new.map(|i| &self.rss[i]);
        let mut s = status::calculate(self.d, &self.status, &all, new_rs, max_unavailable(self.d), self.now);
        if rollout {
            status::sync_rollout_conditions(self.d, &mut s, new_rs, &all, self.now);
        }
        self.status = s;
        self.write_status().await?;
        Ok(match status::requeue_after(self.d, &self.status, self.now) {
            Some(after) if rollout => Action::requeue(after),
            _ => Action::await_change(),
        })
    }

    async fn write_status(&self) -> Result<(), Error> {
        if !status::changed(self.d.status.as_ref(), &self.status) {
            return Ok(());
        }
        Api::<Deployment>::namespaced(
            self.ctx.client.clone(),
            self.d.metadata.namespace.as_deref().unwrap_or_default(),
        )
        .patch_status(
            self.d.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": self.status})),
        )
        .await?;
        Ok(())
    }
}
