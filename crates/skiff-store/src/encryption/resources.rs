//! Which resource a storage key belongs to.
//!
//! An `EncryptionConfiguration` names group-resources (`secrets`,
//! `deployments.apps`, `widgets.example.com`), the store sees keys. Built-in
//! resources are stored under `/registry/<resource>/...` without their group (as
//! upstream does), so their groups come from the apiserver's resource table;
//! custom resources are stored under `/registry/<group>/<resource>/...` and name
//! their group themselves (a group always contains a dot, a built-in resource name
//! never does).

use std::collections::HashMap;

/// A group and resource, as upstream's `schema.GroupResource`. The core group is
/// `""`; `"*"` in either part is a wildcard of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupResource {
    /// API group, `""` for the core group.
    pub group: String,
    /// Plural resource name, e.g. `secrets`.
    pub resource: String,
}

impl GroupResource {
    /// A group-resource from its parts.
    pub fn new(group: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
        }
    }

    /// Parses the configuration's `resource.group` form (upstream
    /// `schema.ParseGroupResource`): everything after the first dot is the group, so
    /// `secrets` is core `secrets`, `deployments.apps` is `apps`/`deployments`, `*.`
    /// every core resource, `*.apps` every resource of `apps`, `*.*` everything.
    pub fn parse(s: &str) -> Self {
        match s.split_once('.') {
            Some((resource, group)) => Self::new(group, resource),
            None => Self::new("", s),
        }
    }
}

impl std::fmt::Display for GroupResource {
    /// The configuration's spelling: `secrets`, `deployments.apps`, `*.`, `*.*`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.group.as_str(), self.resource.as_str()) {
            ("", "*") => f.write_str("*."),
            ("", r) => f.write_str(r),
            (g, r) => write!(f, "{r}.{g}"),
        }
    }
}

/// Maps storage keys to the group-resource they hold.
///
/// Built from the apiserver's built-in resources as `(group, storage resource)`
/// pairs. When two groups share a storage resource (core `events` and
/// `events.k8s.io` `events`), the core group owns it, as upstream stores
/// `events.k8s.io` events as core events (and its configuration validation asks for
/// `events`, not `events.events.k8s.io`).
#[derive(Debug, Clone, Default)]
pub struct ResourceKeys {
    groups: HashMap<String, String>,
}

impl ResourceKeys {
    /// A table from `(group, storage resource)` pairs, e.g. `("apps", "deployments")`.
    /// Storage resources with a `/` (custom resources, stored as `group/plural`) are
    /// recognized from the key itself and need not be listed.
    pub fn new<'a>(resources: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut groups: HashMap<String, String> = HashMap::new();
        for (group, resource) in resources {
            if resource.contains('/') {
                continue;
            }
            match groups.get(resource) {
                Some(g) if g.is_empty() => {}
                Some(_) if !group.is_empty() => {}
                _ => {
                    groups.insert(resource.to_string(), group.to_string());
                }
            }
        }
        Self { groups }
    }

    /// The group-resource stored under `key`, or `None` for keys outside
    /// `/registry/`. `/registry/<r>/...` is the listed group of `<r>` (the core
    /// group when `<r>` is not listed); `/registry/<group.with.dots>/<r>/...` is a
    /// custom resource.
    pub fn resource_of(&self, key: &str) -> Option<GroupResource> {
        let rest = key.strip_prefix("/registry/")?;
        let (first, after) = rest.split_once('/').unwrap_or((rest, ""));
        if first.is_empty() {
            return None;
        }
        if first.contains('.') {
            let resource = after.split('/').next().unwrap_or_default();
            return Some(GroupResource::new(first, resource));
        }
        let group = self.groups.get(first).map(String::as_str).unwrap_or_default();
        Some(GroupResource::new(group, first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_follows_upstream() {
        assert_eq!(GroupResource::parse("secrets"), GroupResource::new("", "secrets"));
        assert_eq!(
            GroupResource::parse("deployments.apps"),
            GroupResource::new("apps", "deployments")
        );
        assert_eq!(GroupResource::parse("*."), GroupResource::new("", "*"));
        assert_eq!(GroupResource::parse("*.*"), GroupResource::new("*", "*"));
        assert_eq!(
            GroupResource::parse("widgets.example.com"),
            GroupResource::new("example.com", "widgets")
        );
        for s in ["secrets", "deployments.apps", "*.", "*.*", "*.apps"] {
            assert_eq!(GroupResource::parse(s).to_string(), s);
        }
    }

    #[test]
    fn keys_map_to_their_resources() {
        let keys = ResourceKeys::new([
            ("", "secrets"),
            ("apps", "deployments"),
            ("events.k8s.io", "events"),
            ("", "events"),
            ("example.com", "example.com/widgets"),
        ]);
        let of = |k: &str| keys.resource_of(k);
        assert_eq!(
            of("/registry/secrets/default/db"),
            Some(GroupResource::new("", "secrets"))
        );
        assert_eq!(
            of("/registry/deployments/default/web"),
            Some(GroupResource::new("apps", "deployments"))
        );
        assert_eq!(
            of("/registry/events/default/e1"),
            Some(GroupResource::new("", "events"))
        );
        assert_eq!(
            of("/registry/example.com/widgets/default/w"),
            Some(GroupResource::new("example.com", "widgets"))
        );
        assert_eq!(of("/registry/unlisted/x"), Some(GroupResource::new("", "unlisted")));
        assert_eq!(of("/other/secrets/x"), None);
    }
}
