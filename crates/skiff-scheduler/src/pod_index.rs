//! An index of placed pods by namespace + label and by controller, kept by the
//! [`crate::cache::Cache`], so PreFilter/PreScore of pods with pod affinity or
//! topology spread constraints visit only the pods a selector can match instead
//! of every pod in the cluster.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use skiff_api::selector::{LabelSelector as Selector, Operator};

use crate::affinity_terms::{pod_labels, pod_namespace};
use crate::framework::NodeInfo;

/// uid -> node name.
type Postings = HashMap<String, String>;

/// Placed pods by `(namespace, label key, label value)` and by the uid of their
/// controller (`ownerReferences[controller=true]`).
#[derive(Debug, Clone, Default)]
pub struct PodIndex {
    by_label: HashMap<(String, String, String), Postings>,
    by_owner: HashMap<String, Postings>,
}

/// The uid of the pod's controller, if any.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

impl PodIndex {
    /// An index of the pods on `nodes` (for tests and one-off snapshots).
    pub fn of_nodes(nodes: &[&NodeInfo]) -> Self {
        let mut index = Self::default();
        for n in nodes {
            for (uid, p) in &n.pods {
                index.add(n.name(), uid, &p.pod);
            }
        }
        index
    }

    /// Records `pod` (uid `uid`) on `node`.
    pub fn add(&mut self, node: &str, uid: &str, pod: &Pod) {
        let ns = pod_namespace(pod);
        for (k, v) in pod_labels(pod) {
            self.by_label
                .entry((ns.to_string(), k.clone(), v.clone()))
                .or_default()
                .insert(uid.to_string(), node.to_string());
        }
        if let Some(owner) = controller_uid(pod) {
            self.by_owner
                .entry(owner.to_string())
                .or_default()
                .insert(uid.to_string(), node.to_string());
        }
    }

    /// Forgets `pod` (as it was recorded).
    pub fn remove(&mut self, uid: &str, pod: &Pod) {
        let ns = pod_namespace(pod);
        for (k, v) in pod_labels(pod) {
            let key = (ns.to_string(), k.clone(), v.clone());
            if let Some(p) = self.by_label.get_mut(&key) {
                p.remove(uid);
                if p.is_empty() {
                    self.by_label.remove(&key);
                }
            }
        }
        if let Some(owner) = controller_uid(pod)
            && let Some(p) = self.by_owner.get_mut(owner)
        {
            p.remove(uid);
            if p.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    fn label(&self, ns: &str, key: &str, value: &str) -> Option<&Postings> {
        self.by_label.get(&(ns.to_string(), key.to_string(), value.to_string()))
    }

    /// `(uid, node)` of every pod in `ns` that could match `sel`: the pods having
    /// one of the values of the selector's most selective `In` requirement. The
    /// caller still checks the whole selector. `None` when the selector has no
    /// `In` requirement (the caller must look at every pod).
    pub fn candidates<'s>(&'s self, ns: &str, sel: &Selector) -> Option<Vec<(&'s str, &'s str)>> {
        let best = sel
            .requirements
            .iter()
            .filter_map(|r| match &r.op {
                Operator::In(values) => {
                    let lists: Vec<&Postings> = values.iter().filter_map(|v| self.label(ns, &r.key, v)).collect();
                    Some((lists.iter().map(|l| l.len()).sum::<usize>(), lists))
                }
                _ => None,
            })
            .min_by_key(|(n, _)| *n)?;
        Some(
            best.1
                .into_iter()
                .flat_map(|l| l.iter().map(|(u, n)| (u.as_str(), n.as_str())))
                .collect(),
        )
    }

    /// `(uid, node)` of every pod whose controller has uid `owner`.
    pub fn owned_by<'s>(&'s self, owner: &str) -> Vec<(&'s str, &'s str)> {
        self.by_owner
            .get(owner)
            .into_iter()
            .flat_map(|l| l.iter().map(|(u, n)| (u.as_str(), n.as_str())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn candidates_come_from_the_most_selective_equality() {
        let pod = |name: &str, ns: &str, labels: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns, "labels": labels,
                "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1",
                                     "controller": true}]}}))
            .unwrap()
        };
        let mut index = PodIndex::default();
        index.add("n1", "a", &pod("a", "default", json!({"app": "web", "tier": "front"})));
        index.add("n2", "b", &pod("b", "default", json!({"app": "web", "tier": "back"})));
        index.add("n3", "c", &pod("c", "other", json!({"app": "web", "tier": "front"})));
        let sel = skiff_api::selector::LabelSelector::parse("app=web,tier in (front),x notin (y)").unwrap();
        assert_eq!(index.candidates("default", &sel).unwrap(), vec![("a", "n1")]);
        let exists = skiff_api::selector::LabelSelector::parse("app").unwrap();
        assert_eq!(index.candidates("default", &exists), None);
        assert_eq!(index.owned_by("rs-1").len(), 3);
        index.remove("a", &pod("a", "default", json!({"app": "web", "tier": "front"})));
        assert_eq!(index.candidates("default", &sel).unwrap(), vec![]);
        assert!(
            !index
                .by_label
                .contains_key(&("default".into(), "tier".into(), "front".into()))
        );
    }
}
