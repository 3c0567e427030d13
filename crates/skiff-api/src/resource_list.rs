//! Resource lists (upstream `v1.ResourceList` and the `quota` helpers over it):
//! quantities that keep the [`Format`] they were written in and print in
//! upstream's canonical form, and the arithmetic quota accounting needs.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};

use crate::quantity::{QuantityError, parse_milli};

/// How a quantity is written (upstream `resource.Format`): it is kept through
/// arithmetic so that sums print the way their inputs were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Powers of ten with SI suffixes (`500m`, `2`, `1k`, `1G`).
    DecimalSI,
    /// Powers of 1024 (`128Mi`, `1Gi`).
    BinarySI,
    /// Scientific notation (`1e3`).
    DecimalExponent,
}

/// A resource quantity at milli-unit precision with its [`Format`]. Sub-milli
/// values are rounded up to the next milli-unit, as `Quantity.MilliValue()` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    /// The amount in thousandths of the unit (cores, bytes, objects).
    pub milli: i128,
    /// How it prints.
    pub format: Format,
}

impl Quantity {
    /// A zero quantity (DecimalSI, prints `0`).
    pub const ZERO: Quantity = Quantity {
        milli: 0,
        format: Format::DecimalSI,
    };

    /// Parses `s` (`500m`, `1Gi`, `1e3`).
    ///
    /// Errors: [`QuantityError`] when `s` is not a quantity.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let milli = parse_milli(s)?;
        let t = s.trim();
        let format = if ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter().any(|b| t.ends_with(b)) {
            Format::BinarySI
        } else if t.trim_start_matches(['+', '-']).contains(['e', 'E']) {
            Format::DecimalExponent
        } else {
            Format::DecimalSI
        };
        Ok(Self { milli, format })
    }

    /// `n` whole units, DecimalSI.
    pub fn count(n: i128) -> Self {
        Self {
            milli: n * 1000,
            format: Format::DecimalSI,
        }
    }

    /// Adds `other`; a zero receiver takes `other`'s format (upstream `Quantity.Add`).
    pub fn add(&mut self, other: Quantity) {
        if self.milli == 0 {
            self.format = other.format;
        }
        self.milli += other.milli;
    }

    /// Subtracts `other`; a zero receiver takes `other`'s format.
    pub fn sub(&mut self, other: Quantity) {
        if self.milli == 0 {
            self.format = other.format;
        }
        self.milli -= other.milli;
    }

    /// The value in whole units, rounded up (`Quantity.Value()`).
    pub fn value(&self) -> i128 {
        (self.milli + 999).div_euclid(1000)
    }
}

impl fmt::Display for Quantity {
    /// The canonical form upstream's `Quantity.String()` prints: `1500m`, `1`, `2k`,
    /// `128Mi`; BinarySI values below 1024 or with a fractional part print DecimalSI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.milli;
        if m == 0 {
            return f.write_str("0");
        }
        let binary = self.format == Format::BinarySI && m % 1000 == 0 && m.abs() >= 1024 * 1000;
        if binary {
            let mut v = m / 1000;
            let mut k = 0;
            while k < 6 && v % 1024 == 0 {
                v /= 1024;
                k += 1;
            }
            return write!(f, "{v}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][k]);
        }
        let exponent = self.format == Format::DecimalExponent;
        if m % 1000 != 0 {
            return if exponent {
                write!(f, "{m}e-3")
            } else {
                write!(f, "{m}m")
            };
        }
        let mut v = m / 1000;
        let mut k = 0;
        while k < 6 && v % 1000 == 0 {
            v /= 1000;
            k += 1;
        }
        if exponent {
            if k == 0 {
                write!(f, "{v}")
            } else {
                write!(f, "{v}e{}", k * 3)
            }
        } else {
            write!(f, "{v}{}", ["", "k", "M", "G", "T", "P", "E"][k])
        }
    }
}

/// Resource name -> quantity, sorted by name (upstream `ResourceList`).
pub type ResourceList = BTreeMap<String, Quantity>;

/// Reads a JSON resource map (`{"cpu": "500m"}`); entries that are not
/// quantities are skipped (validation rejects them before they are stored).
pub fn parse_list(v: Option<&Value>) -> ResourceList {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), Quantity::parse(v.as_str()?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Renders a list as a JSON map of canonical quantity strings.
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(list.iter().map(|(k, q)| (k.clone(), json!(q.to_string()))).collect())
}

/// The union of `a` and `b`, summing names present in both (upstream `quota.Add`).
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, q) in b {
        out.entry(k.clone()).or_insert(Quantity::ZERO).add(*q);
    }
    out
}

/// `a - b` per name of `a`, floored at zero (upstream `SubtractWithNonNegativeResult`).
pub fn subtract_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    a.iter()
        .map(|(k, q)| {
            let mut q = *q;
            if let Some(o) = b.get(k) {
                q.sub(*o);
            }
            if q.milli < 0 {
                q.milli = 0;
            }
            (k.clone(), q)
        })
        .collect()
}

/// Only the entries of `list` whose names are in `names` (upstream `quota.Mask`).
pub fn mask<'a>(list: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    names
        .into_iter()
        .filter_map(|n| list.get(n).map(|q| (n.clone(), *q)))
        .collect()
}

/// Whether every quantity is zero.
pub fn is_zero(list: &ResourceList) -> bool {
    list.values().all(|q| q.milli == 0)
}

/// `name=quantity` pairs, sorted, comma-separated (upstream `prettyPrint`).
pub fn pretty_print(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, q)| format!("{k}={q}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn add_into(acc: &mut ResourceList, other: &ResourceList) {
    for (k, q) in other {
        acc.entry(k.clone()).or_insert(Quantity::ZERO).add(*q);
    }
}

pub(crate) fn max_into(acc: &mut ResourceList, other: &ResourceList) {
    for (k, q) in other {
        match acc.get(k) {
            Some(cur) if cur.milli >= q.milli => {}
            _ => {
                acc.insert(k.clone(), *q);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn quantities_print_canonically_and_keep_their_format_through_sums() {
        for (input, want) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1500m", "1500m"),
            ("2000", "2k"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("512Ki", "512Ki"),
            ("1G", "1G"),
            ("0", "0"),
            ("100Mi", "100Mi"),
        ] {
            assert_eq!(q(input).to_string(), want, "{input}");
        }
        let mut sum = Quantity::ZERO;
        sum.add(q("64Mi"));
        sum.add(q("64Mi"));
        assert_eq!(sum.to_string(), "128Mi");
        let mut cpu = Quantity::ZERO;
        cpu.add(q("500m"));
        cpu.add(q("500m"));
        assert_eq!(cpu.to_string(), "1");
    }
}
