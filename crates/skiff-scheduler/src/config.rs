//! The scheduler's configuration file (`--scheduler-config`): a
//! `KubeSchedulerConfiguration` of `kubescheduler.config.k8s.io/v1`, as
//! kube-scheduler reads with `--config`.
//!
//! Understood: `percentageOfNodesToScore` (global and per profile), and `profiles`,
//! each with its `schedulerName`, `plugins` (enable or disable plugins per
//! extension point, or for all of them with `multiPoint`; `*` disables every default
//! plugin of a point; `weight` for scores) and `pluginConfig` (the
//! `NodeResourcesFitArgs` `scoringStrategy`). Decoding is strict as upstream's:
//! an unknown field, a plugin that is not registered, args for a plugin that takes
//! none here, or a value out of range is an error naming the field, e.g.
//! `profiles[0].plugins.score.enabled[1].name: Invalid value: "Foo": plugin is not registered`.
//!
//! Plugins that always run here and cannot be turned off (`PrioritySort`,
//! `DefaultBinder`, `VolumeBinding`, `DefaultPreemption`) may be named in `enabled`
//! lists (a no-op) but not disabled. Disabling only the filter point of a plugin
//! that also scores is refused; disabling its score point keeps it as a filter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::framework::{Plugin, PluginSpec, Profile, ProfileError, Registry};
use crate::plugins::node_resources_fit::{self, NodeResourcesFit, ScoringStrategy, StrategyType};

/// The only `apiVersion` accepted.
pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
/// Plugins that always run in this scheduler, outside the registry's profile.
const ALWAYS_ON: &[&str] = &["PrioritySort", "DefaultBinder", "VolumeBinding", "DefaultPreemption"];

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The document does not decode (syntax, types or unknown fields).
    #[error("decoding scheduler configuration: {0}")]
    Decode(String),
    /// A field has a value that is not allowed.
    #[error("{field}: Invalid value: {value}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `profiles[0].schedulerName`.
        field: String,
        /// The value, as JSON.
        value: String,
        /// Why it is not allowed.
        reason: String,
    },
    /// A profile could not be instantiated.
    #[error("{0}")]
    Profile(#[from] ProfileError),
}

fn invalid(field: impl Into<String>, value: impl serde::Serialize, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        value: serde_json::to_string(&value).unwrap_or_default(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    api_version: String,
    kind: String,
    #[serde(default)]
    percentage_of_nodes_to_score: Option<i64>,
    #[serde(default)]
    profiles: Vec<RawProfile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    scheduler_name: Option<String>,
    #[serde(default)]
    percentage_of_nodes_to_score: Option<i64>,
    #[serde(default)]
    plugins: BTreeMap<String, RawPluginSet>,
    #[serde(default)]
    plugin_config: Vec<RawPluginConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPluginSet {
    #[serde(default)]
    enabled: Vec<RawPlugin>,
    #[serde(default)]
    disabled: Vec<RawPlugin>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPlugin {
    name: String,
    #[serde(default)]
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPluginConfig {
    name: String,
    #[serde(default)]
    args: Value,
}

/// The extension points of upstream's `Plugins` type.
const POINTS: &[&str] = &[
    "multiPoint",
    "queueSort",
    "preEnqueue",
    "preFilter",
    "filter",
    "postFilter",
    "preScore",
    "score",
    "reserve",
    "permit",
    "preBind",
    "bind",
    "postBind",
];

/// One scheduling profile: the pods whose `spec.schedulerName` is
/// [`ProfileConfig::scheduler_name`] are scheduled with these plugins.
#[derive(Debug, Clone)]
pub struct ProfileConfig {
    /// The `schedulerName` the profile serves.
    pub scheduler_name: String,
    /// Enabled plugins in registry order, with score weights (0: filter only).
    pub plugins: Vec<PluginSpec>,
    /// `percentageOfNodesToScore`; `None` is adaptive.
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Registry with the constructors of plugins that have arguments replaced.
    registry: Registry,
}

impl ProfileConfig {
    /// The default profile: `default-scheduler` with the default plugins.
    pub fn default_profile() -> Self {
        Self {
            scheduler_name: crate::SCHEDULER_NAME.to_string(),
            plugins: crate::plugins::default_plugins(),
            percentage_of_nodes_to_score: None,
            registry: crate::plugins::registry(),
        }
    }

    /// Instantiates the profile's plugins.
    pub fn build(&self) -> Result<Profile, ProfileError> {
        let mut profile = Profile::new(&self.registry, &self.plugins)?;
        profile.percentage_of_nodes_to_score = self.percentage_of_nodes_to_score;
        Ok(profile)
    }
}

/// A whole configuration: one or more profiles with distinct scheduler names.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The profiles, in file order.
    pub profiles: Vec<ProfileConfig>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            profiles: vec![ProfileConfig::default_profile()],
        }
    }
}

impl SchedulerConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parses and validates a configuration (YAML or JSON), and builds every
    /// profile once so that a bad one fails here rather than at scheduling time.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Decode(e.to_string()))?;
        if raw.api_version != API_VERSION {
            return Err(invalid(
                "apiVersion",
                &raw.api_version,
                format!("must be {API_VERSION}"),
            ));
        }
        if raw.kind != "KubeSchedulerConfiguration" {
            return Err(invalid("kind", &raw.kind, "must be KubeSchedulerConfiguration"));
        }
        let global = percentage("percentageOfNodesToScore", raw.percentage_of_nodes_to_score)?;
        let raws = if raw.profiles.is_empty() {
            vec![RawProfile {
                scheduler_name: None,
                percentage_of_nodes_to_score: None,
                plugins: BTreeMap::new(),
                plugin_config: Vec::new(),
            }]
        } else {
            raw.profiles
        };
        let mut names = BTreeSet::new();
        let mut profiles = Vec::new();
        for (i, p) in raws.into_iter().enumerate() {
            let field = format!("profiles[{i}]");
            let profile = profile(&field, p, global)?;
            if !names.insert(profile.scheduler_name.clone()) {
                return Err(invalid(
                    format!("{field}.schedulerName"),
                    &profile.scheduler_name,
                    "duplicate",
                ));
            }
            profile.build()?;
            profiles.push(profile);
        }
        Ok(Self { profiles })
    }
}

fn percentage(field: &str, value: Option<i64>) -> Result<Option<u32>, ConfigError> {
    match value {
        None | Some(0) => Ok(None),
        Some(v @ 1..=100) => Ok(Some(v as u32)),
        Some(v) => Err(invalid(field, v, "not in valid range [0-100]")),
    }
}

/// What a registered plugin implements.
fn points(registry: &Registry, name: &str) -> Option<(bool, bool)> {
    registry.get(name).map(|make| match make() {
        Plugin::Filter(_) => (true, false),
        Plugin::Score(_) => (false, true),
        Plugin::Both(..) | Plugin::Cycle(..) => (true, true),
    })
}

fn profile(field: &str, raw: RawProfile, global: Option<u32>) -> Result<ProfileConfig, ConfigError> {
    let scheduler_name = raw.scheduler_name.unwrap_or_else(|| crate::SCHEDULER_NAME.to_string());
    if scheduler_name.is_empty() {
        return Err(invalid(format!("{field}.schedulerName"), "", "Required value"));
    }
    let mut registry = crate::plugins::registry();
    // name -> (filter on, score weight or None when not scoring)
    let mut enabled: BTreeMap<&'static str, (bool, Option<i64>)> = BTreeMap::new();
    let mut order: Vec<&'static str> = Vec::new();
    for spec in crate::plugins::default_plugins() {
        let (f, s) = points(&registry, spec.name).unwrap_or((false, false));
        enabled.insert(spec.name, (f, s.then_some(spec.weight)));
        order.push(spec.name);
    }
    for (point, set) in &raw.plugins {
        let pfield = format!("{field}.plugins.{point}");
        if !POINTS.contains(&point.as_str()) {
            return Err(ConfigError::Decode(format!(
                "{field}.plugins: unknown field \"{point}\""
            )));
        }
        for (j, d) in set.disabled.iter().enumerate() {
            let dfield = format!("{pfield}.disabled[{j}].name");
            if d.name == "*" {
                for (name, state) in enabled.iter_mut() {
                    let (f, s) = points(&registry, name).unwrap_or((false, false));
                    disable(point, state, f, s, &dfield, name)?;
                }
                continue;
            }
            if ALWAYS_ON.contains(&d.name.as_str()) {
                return Err(invalid(dfield, &d.name, "cannot be disabled in this scheduler"));
            }
            let Some(name) = registry.name(&d.name) else {
                return Err(invalid(dfield, &d.name, "plugin is not registered"));
            };
            let (f, s) = points(&registry, name).unwrap_or((false, false));
            if let Some(state) = enabled.get_mut(name) {
                disable(point, state, f, s, &dfield, name)?;
            }
        }
        for (j, e) in set.enabled.iter().enumerate() {
            let efield = format!("{pfield}.enabled[{j}]");
            if ALWAYS_ON.contains(&e.name.as_str()) {
                continue;
            }
            let Some(name) = registry.name(&e.name) else {
                return Err(invalid(format!("{efield}.name"), &e.name, "plugin is not registered"));
            };
            if let Some(w) = e.weight
                && !(1..=100).contains(&w)
            {
                return Err(invalid(format!("{efield}.weight"), w, "must be between 1 and 100"));
            }
            let (f, s) = points(&registry, name).unwrap_or((false, false));
            let default_weight = crate::plugins::default_plugins()
                .into_iter()
                .find(|p| p.name == name)
                .map(|p| p.weight)
                .filter(|w| *w > 0)
                .unwrap_or(1);
            let weight = e.weight.unwrap_or(default_weight);
            let state = enabled.entry(name).or_insert_with(|| {
                order.push(name);
                (false, None)
            });
            match point.as_str() {
                "multiPoint" => *state = (f, s.then_some(weight)),
                "filter" | "preFilter" if f => state.0 = true,
                "score" | "preScore" if s => state.1 = Some(weight),
                _ => {
                    return Err(invalid(
                        format!("{efield}.name"),
                        name,
                        format!("plugin does not implement {point}"),
                    ));
                }
            }
        }
    }
    for (j, pc) in raw.plugin_config.iter().enumerate() {
        let cfield = format!("{field}.pluginConfig[{j}]");
        match pc.name.as_str() {
            node_resources_fit::NAME => {
                let strategy = scoring_strategy(&format!("{cfield}.args"), &pc.args)?;
                let plugin = NodeResourcesFit { strategy };
                registry.insert(node_resources_fit::NAME, move || {
                    Plugin::Both(Box::new(plugin.clone()), Box::new(plugin.clone()))
                });
            }
            other if registry.name(other).is_some() => {
                return Err(invalid(
                    format!("{cfield}.name"),
                    other,
                    "this plugin takes no args here",
                ));
            }
            other => return Err(invalid(format!("{cfield}.name"), other, "plugin is not registered")),
        }
    }
    let plugins = order
        .into_iter()
        .filter_map(|name| {
            let (f, s) = *enabled.get(name)?;
            (f || s.is_some()).then_some(PluginSpec {
                name,
                weight: s.unwrap_or(0),
            })
        })
        .collect();
    Ok(ProfileConfig {
        scheduler_name,
        plugins,
        percentage_of_nodes_to_score: match raw.percentage_of_nodes_to_score {
            Some(_) => percentage(
                &format!("{field}.percentageOfNodesToScore"),
                raw.percentage_of_nodes_to_score,
            )?,
            None => global,
        },
        registry,
    })
}

/// Turns off one extension point of a plugin (or all of them for `multiPoint`).
fn disable(
    point: &str,
    state: &mut (bool, Option<i64>),
    filters: bool,
    scores: bool,
    field: &str,
    name: &str,
) -> Result<(), ConfigError> {
    match point {
        "multiPoint" => *state = (false, None),
        "score" | "preScore" if scores => state.1 = None,
        "filter" | "preFilter" if filters && scores => {
            return Err(invalid(
                field,
                name,
                "disabling only the filter point of a plugin that also scores is not supported; disable it in multiPoint",
            ));
        }
        "filter" | "preFilter" if filters => state.0 = false,
        _ => {}
    }
    Ok(())
}

/// `NodeResourcesFitArgs.scoringStrategy`.
fn scoring_strategy(field: &str, args: &Value) -> Result<ScoringStrategy, ConfigError> {
    let mut strategy = ScoringStrategy::default();
    if let Some(obj) = args.as_object() {
        for key in obj.keys() {
            if ![
                "scoringStrategy",
                "ignoredResources",
                "ignoredResourceGroups",
                "apiVersion",
                "kind",
            ]
            .contains(&key.as_str())
            {
                return Err(ConfigError::Decode(format!("{field}: unknown field \"{key}\"")));
            }
        }
    }
    let Some(s) = args.get("scoringStrategy") else {
        return Ok(strategy);
    };
    let sfield = format!("{field}.scoringStrategy");
    if let Some(resources) = s.get("resources").and_then(Value::as_array) {
        strategy.resources = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                return Err(invalid(format!("{sfield}.resources[{i}].name"), name, "Required value"));
            }
            let weight = r.get("weight").and_then(Value::as_i64).unwrap_or(1);
            if !(1..=100).contains(&weight) {
                return Err(invalid(
                    format!("{sfield}.resources[{i}].weight"),
                    weight,
                    "resource weight of name not in valid range [1, 100]",
                ));
            }
            strategy.resources.push((name.to_string(), weight));
        }
    }
    strategy.kind = match s.get("type").and_then(Value::as_str).unwrap_or("LeastAllocated") {
        "LeastAllocated" => StrategyType::LeastAllocated,
        "MostAllocated" => StrategyType::MostAllocated,
        "RequestedToCapacityRatio" => {
            let pfield = format!("{sfield}.requestedToCapacityRatio.shape");
            let shape = s
                .pointer("/requestedToCapacityRatio/shape")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(&pfield, Value::Null, "at least one point must be specified"))?;
            let mut points = Vec::new();
            for (i, p) in shape.iter().enumerate() {
                let u = p.get("utilization").and_then(Value::as_i64).unwrap_or(0);
                let sc = p.get("score").and_then(Value::as_i64).unwrap_or(0);
                if !(0..=100).contains(&u) {
                    return Err(invalid(
                        format!("{pfield}[{i}].utilization"),
                        u,
                        "not in valid range [0, 100]",
                    ));
                }
                if !(0..=10).contains(&sc) {
                    return Err(invalid(
                        format!("{pfield}[{i}].score"),
                        sc,
                        "not in valid range [0, 10]",
                    ));
                }
                if points.last().is_some_and(|&(last, _)| last >= u) {
                    return Err(invalid(
                        format!("{pfield}[{i}].utilization"),
                        u,
                        "utilization values must be sorted in increasing order",
                    ));
                }
                points.push((u, sc));
            }
            if points.is_empty() {
                return Err(invalid(pfield, Value::Null, "at least one point must be specified"));
            }
            StrategyType::RequestedToCapacityRatio(points)
        }
        other => {
            return Err(invalid(
                format!("{sfield}.type"),
                other,
                "supported values: \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\"",
            ));
        }
    };
    Ok(strategy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &ProfileConfig) -> Vec<(&'static str, i64)> {
        p.plugins.iter().map(|s| (s.name, s.weight)).collect()
    }

    #[test]
    fn an_empty_configuration_is_the_default_profile() {
        let c =
            SchedulerConfig::parse("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n")
                .unwrap();
        assert_eq!(c.profiles.len(), 1);
        assert_eq!(c.profiles[0].scheduler_name, "default-scheduler");
        assert_eq!(
            names(&c.profiles[0]),
            names(&ProfileConfig::default_profile()),
            "same plugins and weights as the built-in default"
        );
        assert_eq!(c.profiles[0].percentage_of_nodes_to_score, None);
    }

    #[test]
    fn profiles_enable_disable_and_reweigh_plugins() {
        let c = SchedulerConfig::parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
- schedulerName: default-scheduler
- schedulerName: no-scoring
  percentageOfNodesToScore: 100
  plugins:
    score:
      disabled:
      - name: "*"
- schedulerName: bin-packing
  plugins:
    multiPoint:
      disabled:
      - name: NodeResourcesBalancedAllocation
    score:
      enabled:
      - name: NodeResourcesFit
        weight: 5
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 2
        - name: memory
          weight: 1
"#,
        )
        .unwrap();
        assert_eq!(c.profiles.len(), 3);
        assert_eq!(c.profiles[0].percentage_of_nodes_to_score, Some(30));
        let no_scoring = &c.profiles[1];
        assert_eq!(no_scoring.percentage_of_nodes_to_score, Some(100));
        assert!(
            no_scoring.plugins.iter().all(|p| p.weight == 0),
            "{:?}",
            names(no_scoring)
        );
        assert!(
            no_scoring.plugins.iter().any(|p| p.name == "NodeResourcesFit"),
            "still a filter"
        );
        assert!(
            !no_scoring
                .plugins
                .iter()
                .any(|p| p.name == "NodeResourcesBalancedAllocation")
        );
        let packing = &c.profiles[2];
        assert!(
            packing
                .plugins
                .iter()
                .any(|p| p.name == "NodeResourcesFit" && p.weight == 5)
        );
        assert!(
            !packing
                .plugins
                .iter()
                .any(|p| p.name == "NodeResourcesBalancedAllocation")
        );
        packing.build().unwrap();
    }

    #[test]
    fn percentage_100_scores_every_node() {
        let c = SchedulerConfig::parse(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\npercentageOfNodesToScore: 100\n",
        )
        .unwrap();
        let p = c.profiles[0].build().unwrap();
        assert_eq!(
            crate::framework::num_feasible_nodes_to_find(5000, p.percentage_of_nodes_to_score),
            5000
        );
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let head = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";
        let err = |body: &str| {
            SchedulerConfig::parse(&format!("{head}{body}"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(
                "profiles:\n- plugins:\n    score:\n      enabled:\n      - name: TaintToleration\n      - name: Foo\n"
            ),
            r#"profiles[0].plugins.score.enabled[1].name: Invalid value: "Foo": plugin is not registered"#
        );
        assert_eq!(
            err("percentageOfNodesToScore: 120\n"),
            "percentageOfNodesToScore: Invalid value: 120: not in valid range [0-100]"
        );
        assert!(
            err("profiles:\n- schedulerName: a\n- schedulerName: a\n")
                .contains("profiles[1].schedulerName: Invalid value: \"a\": duplicate")
        );
        assert!(
            err("parallelism: 16\n").contains("unknown field `parallelism`"),
            "{}",
            err("parallelism: 16\n")
        );
        assert!(err("profiles:\n- plugins:\n    bogus: {}\n").contains("unknown field \"bogus\""));
        assert!(
            err("profiles:\n- plugins:\n    bind:\n      disabled:\n      - name: DefaultBinder\n")
                .contains("cannot be disabled")
        );
        assert!(
            err("profiles:\n- plugins:\n    filter:\n      disabled:\n      - name: NodeResourcesFit\n")
                .contains("disable it in multiPoint")
        );
        assert_eq!(
            err(
                "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: Random\n"
            ),
            r#"profiles[0].pluginConfig[0].args.scoringStrategy.type: Invalid value: "Random": supported values: "LeastAllocated", "MostAllocated", "RequestedToCapacityRatio""#
        );
        assert!(
            err("profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: RequestedToCapacityRatio\n        requestedToCapacityRatio:\n          shape:\n          - {utilization: 50, score: 5}\n          - {utilization: 40, score: 7}\n")
                .contains("shape[1].utilization: Invalid value: 40: utilization values must be sorted in increasing order")
        );
        assert!(
            SchedulerConfig::parse("apiVersion: v1\nkind: KubeSchedulerConfiguration\n")
                .unwrap_err()
                .to_string()
                .starts_with("apiVersion: Invalid value")
        );
        assert!(matches!(
            SchedulerConfig::load(Path::new("/nonexistent/x.yaml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
