//! Resource quantities (`resource.Quantity`): `100m`, `0.5`, `2`, `128Mi`, `1G`, `1e3`.
//!
//! Parsed to integers in the unit the consumers need: milli-units for CPU and other
//! decimal resources, plain units (bytes) for memory and storage. Rounds up, as the
//! upstream `Quantity.MilliValue()`/`Value()` do.

/// A quantity that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

fn split(s: &str) -> (&str, &str) {
    let idx = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    s.split_at(idx)
}

/// Parses a quantity into milli-units (e.g. `"100m"` -> 100, `"2"` -> 2000, `"1Ki"` -> 1_024_000).
pub fn parse_milli(s: &str) -> Result<i128, QuantityError> {
    let s = s.trim();
    let err = || QuantityError(s.to_string());
    let (num, suffix) = split(s);
    if num.is_empty() {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| err())?;
            10f64.powi(exp)
        }
        _ => return Err(err()),
    };
    Ok((value * mult * 1000.0).ceil() as i128)
}

/// Parses a quantity into whole units, rounding up (e.g. `"128Mi"` -> 134217728).
pub fn parse_value(s: &str) -> Result<i128, QuantityError> {
    let m = parse_milli(s)?;
    Ok((m + 999).div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory() {
        assert_eq!(parse_milli("100m").unwrap(), 100);
        assert_eq!(parse_milli("0.5").unwrap(), 500);
        assert_eq!(parse_milli("2").unwrap(), 2000);
        assert_eq!(parse_value("128Mi").unwrap(), 128 * 1024 * 1024);
        assert_eq!(parse_value("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_value("1e3").unwrap(), 1000);
        assert_eq!(parse_value("1500m").unwrap(), 2);
        assert!(parse_milli("abc").is_err());
        assert!(parse_milli("1Xi").is_err());
    }
}
