//! Parsing of `Accept` headers into media ranges ordered by preference (RFC 9110
//! section 12.5.1), as upstream's content negotiation
//! (k8s.io/apimachinery/pkg/runtime/serializer negotiation, after goautoneg) orders
//! them: higher `q` first, concrete types before wildcards, then header order.

use std::cmp::Ordering;
use std::collections::HashMap;

/// One media range of an `Accept` header, e.g.
/// `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange<'a> {
    /// Type, e.g. `application` or `*`.
    pub kind: &'a str,
    /// Subtype, e.g. `json` or `*`.
    pub subtype: &'a str,
    /// Parameters other than `q`, keys lowercased, values unquoted.
    pub params: HashMap<String, &'a str>,
    /// Quality, `0.0..=1.0` (1 when absent).
    pub q: f32,
}

impl MediaRange<'_> {
    /// Whether this range is `type/subtype` (case-insensitively).
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Whether this range is `*/*` or `application/*`.
    pub fn is_wildcard(&self) -> bool {
        self.subtype == "*" && (self.kind == "*" || self.kind.eq_ignore_ascii_case("application"))
    }
}

fn parse_range(entry: &str) -> Option<MediaRange<'_>> {
    let mut parts = entry.split(';');
    let (kind, subtype) = parts.next()?.trim().split_once('/')?;
    let mut params = HashMap::new();
    let mut q = 1.0f32;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else { continue };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().trim_matches('"');
        if k == "q" {
            q = v.parse().ok()?;
        } else {
            params.insert(k, v);
        }
    }
    Some(MediaRange {
        kind: kind.trim(),
        subtype: subtype.trim(),
        params,
        q,
    })
}

/// The acceptable media ranges of `accept`, most preferred first; malformed
/// entries and `q=0` ranges are dropped.
pub fn ranges(accept: &str) -> Vec<MediaRange<'_>> {
    let mut out: Vec<(usize, MediaRange<'_>)> = accept
        .split(',')
        .filter_map(parse_range)
        .filter(|r| r.q > 0.0)
        .enumerate()
        .collect();
    out.sort_by(|(ia, a), (ib, b)| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(Ordering::Equal)
            .then((a.kind == "*").cmp(&(b.kind == "*")))
            .then((a.subtype == "*").cmp(&(b.subtype == "*")))
            .then(ia.cmp(ib))
    });
    out.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_q_then_specificity_then_position() {
        let r = ranges("*/*, text/plain;q=0.5, application/json;as=Table;v=v1, application/yaml;q=0, bad");
        let names: Vec<String> = r.iter().map(|r| format!("{}/{}", r.kind, r.subtype)).collect();
        assert_eq!(names, ["application/json", "*/*", "text/plain"]);
        assert_eq!(r[0].params["as"], "Table");
        assert!(r[1].is_wildcard());
        assert!(r[0].is("Application", "JSON"));
    }
}
