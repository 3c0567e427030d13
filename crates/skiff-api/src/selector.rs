//! Label and field selectors as the apiserver accepts them in `labelSelector=` and
//! `fieldSelector=` query parameters.
//!
//! Grammar (k8s.io/apimachinery/pkg/labels): comma-separated requirements, each one of
//! `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`,
//! `key notin (v1,v2)`, `key>N`, `key<N`. Field selectors accept only `=`, `==`, `!=`.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector that failed to parse; the apiserver answers `400 BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

/// Operator of one requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `key in (values)` (also `key=value`, `key==value`).
    In(Vec<String>),
    /// `key notin (values)` (also `key!=value`). Matches when the key is absent.
    NotIn(Vec<String>),
    /// `key`: the key is present.
    Exists,
    /// `!key`: the key is absent.
    DoesNotExist,
    /// `key>N`: the value parses as an integer greater than N.
    Gt(i64),
    /// `key<N`: the value parses as an integer less than N.
    Lt(i64),
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key (or field path for field selectors).
    pub key: String,
    /// What the value must satisfy.
    pub op: Operator,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Operator::In(vs), Some(v)) => vs.iter().any(|x| x == v),
            (Operator::In(_), None) => false,
            (Operator::NotIn(vs), Some(v)) => !vs.iter().any(|x| x == v),
            (Operator::NotIn(_), None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
            (Operator::Gt(n), Some(v)) => v.parse::<i64>().map(|x| x > *n).unwrap_or(false),
            (Operator::Lt(n), Some(v)) => v.parse::<i64>().map(|x| x < *n).unwrap_or(false),
            (Operator::Gt(_) | Operator::Lt(_), None) => false,
        }
    }
}

/// A parsed label selector: all requirements must match. The empty selector matches
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements (ANDed).
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the query-parameter form.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Matches a label map.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
    }

    /// Matches the `metadata.labels` of a JSON object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }

    /// Builds a selector from a `metav1.LabelSelector` (matchLabels + matchExpressions)
    /// in JSON form. `None` (null selector) selects nothing; an empty one everything.
    pub fn from_label_selector_json(sel: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| SelectorError(format!("{k}: not a string")))?;
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Operator::In(vec![v.into()]),
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str) {
                    Some("In") => Operator::In(values),
                    Some("NotIn") => Operator::NotIn(values),
                    Some("Exists") => Operator::Exists,
                    Some("DoesNotExist") => Operator::DoesNotExist,
                    other => return Err(SelectorError(format!("{other:?} is not a valid operator"))),
                };
                requirements.push(Requirement { key, op });
            }
        }
        Ok(Self { requirements })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_values(s: &str) -> Result<Vec<String>, SelectorError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("expected a parenthesized value list, got {s:?}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn check_key(key: &str) -> Result<String, SelectorError> {
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return Err(SelectorError(format!("invalid label key {key:?}")));
    }
    Ok(key.to_string())
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement {
            key: check_key(key)?,
            op: Operator::DoesNotExist,
        });
    }
    // Set-based: `key in (...)` / `key notin (...)`.
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        if let Some(vals) = rest.strip_prefix("notin") {
            return Ok(Requirement {
                key: check_key(words[0])?,
                op: Operator::NotIn(parse_values(vals)?),
            });
        }
        if let Some(vals) = rest.strip_prefix("in") {
            return Ok(Requirement {
                key: check_key(words[0])?,
                op: Operator::In(parse_values(vals)?),
            });
        }
    }
    for (tok, mk) in [("!=", 0u8), ("==", 1), ("=", 1), (">", 2), ("<", 3)] {
        if let Some((k, v)) = part.split_once(tok) {
            let key = check_key(k)?;
            let v = v.trim().to_string();
            let op = match mk {
                0 => Operator::NotIn(vec![v]),
                1 => Operator::In(vec![v]),
                2 => Operator::Gt(
                    v.parse()
                        .map_err(|_| SelectorError(format!("{v:?} is not an integer")))?,
                ),
                _ => Operator::Lt(
                    v.parse()
                        .map_err(|_| SelectorError(format!("{v:?} is not an integer")))?,
                ),
            };
            return Ok(Requirement { key, op });
        }
    }
    Ok(Requirement {
        key: check_key(part)?,
        op: Operator::Exists,
    })
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, ANDed.
///
/// Paths are dotted JSON paths into the object (`metadata.name`, `spec.nodeName`,
/// `status.phase`, `involvedObject.uid`, ...). A missing field compares as `""`, as
/// upstream's field sets do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// `(path, value, negated)` triples.
    pub terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses the query-parameter form.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v, neg) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, v, false)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, false)
            } else {
                return Err(SelectorError(format!("invalid field selector: {part:?}")));
            };
            terms.push((k.trim().to_string(), v.trim().to_string(), neg));
        }
        Ok(Self { terms })
    }

    /// Whether there are no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value an exact `path=value` term requires, if any (used for index lookups
    /// such as `metadata.name`).
    pub fn exact(&self, path: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|(k, _, neg)| k == path && !neg)
            .map(|(_, v, _)| v.as_str())
    }

    /// Matches a JSON object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(path, want, neg)| {
            let got = field_value(obj, path);
            (got == *want) != *neg
        })
    }
}

/// Reads a dotted field path as a string (`""` when absent; numbers and booleans
/// are rendered as upstream's field sets render them).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equality_and_set_based() {
        let s = LabelSelector::parse("app=web,tier in (a, b),!legacy,env!=prod").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("env", "prod")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("env", "dev")])));
    }

    #[test]
    fn exists_notin_and_numbers() {
        let s = LabelSelector::parse("app,tier notin (x),n>3").unwrap();
        assert!(s.matches(&labels(&[("app", ""), ("n", "4")])));
        assert!(!s.matches(&labels(&[("app", ""), ("n", "3")])));
        assert!(!s.matches(&labels(&[("n", "9")])));
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("n>x").is_err());
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn from_label_selector_struct() {
        let s = LabelSelector::from_label_selector_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("spec.nodeName=n1").unwrap().matches_object(&pod));
        assert!(!FieldSelector::parse("spec.nodeName!=n1").unwrap().matches_object(&pod));
        assert!(
            FieldSelector::parse("spec.nodeName==n1,metadata.name=p")
                .unwrap()
                .matches_object(&pod)
        );
        let unbound = json!({"metadata": {"name": "q"}, "spec": {}});
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches_object(&unbound));
        assert!(FieldSelector::parse("nonsense").is_err());
        assert_eq!(
            FieldSelector::parse("metadata.name=p").unwrap().exact("metadata.name"),
            Some("p")
        );
    }
}
