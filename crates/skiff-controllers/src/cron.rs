//! Standard 5-field cron schedules as CronJob `spec.schedule` accepts them
//! (upstream parses with robfig/cron's standard parser): `minute hour
//! day-of-month month day-of-week`, each field a comma-separated list of `*`, `?`,
//! `N`, `N-M`, optionally with `/step` (`N/step` means `N-max/step`); month and
//! weekday names (`jan`..`dec`, `sun`..`sat`, any case); the macros `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly`.
//!
//! As in cron, when both day-of-month and day-of-week are restricted a day matches
//! if either matches; when either is `*` (or `?`, or a `*/1`) both must match.
//! Next activation times are computed in a time zone (CronJob `spec.timeZone`, else
//! the controller's local zone); a wall-clock time skipped by a DST change fires at
//! the first valid instant after it.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A schedule that could not be parsed; the message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {schedule:?}: {reason}")]
pub struct ParseError {
    /// The schedule as given.
    pub schedule: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 6,
        names: &DAYS,
    },
];

fn value(f: &Field, s: &str) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = f.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + f.min);
    }
    let v: u32 = s.parse().map_err(|_| format!("{} {s:?} is not a number", f.name))?;
    if v < f.min || v > f.max {
        return Err(format!("{} {v} is outside {}-{}", f.name, f.min, f.max));
    }
    Ok(v)
}

/// Parses one field into a bit set (bit `v` for value `v`) and whether it is a
/// "star" (unrestricted) field.
fn field(f: &Field, text: &str) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("{} step {s:?} is not a number", f.name))?;
                if step == 0 {
                    return Err(format!("{} step must be positive", f.name));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi, is_star) = if range == "*" || range == "?" {
            (f.min, f.max, true)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(f, a)?, value(f, b)?, false)
        } else {
            let v = value(f, range)?;
            (v, if step.is_some() { f.max } else { v }, false)
        };
        if lo > hi {
            return Err(format!("{} range {range:?} is backwards", f.name));
        }
        let step = step.unwrap_or(1);
        star |= is_star && step == 1;
        bits |= (lo..=hi).step_by(step as usize).fold(0u64, |b, v| b | (1 << v));
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a 5-field schedule or macro.
    pub fn parse(schedule: &str) -> Result<Self, ParseError> {
        let err = |reason: String| ParseError {
            schedule: schedule.to_string(),
            reason,
        };
        let trimmed = schedule.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(err(
                "time zones in the schedule are not supported; use spec.timeZone".into()
            ));
        }
        let expanded = match trimmed {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            m if m.starts_with('@') => return Err(err(format!("unknown descriptor {m}"))),
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(err(format!("expected exactly 5 fields, found {}", parts.len())));
        }
        let mut out = [(0u64, false); 5];
        for (i, (f, text)) in FIELDS.iter().zip(&parts).enumerate() {
            out[i] = field(f, text).map_err(err)?;
        }
        Ok(Self {
            minutes: out[0].0,
            hours: out[1].0 as u32,
            days_of_month: out[2].0 as u32,
            months: out[3].0 as u16,
            days_of_week: out[4].0 as u8,
            dom_star: out[2].1,
            dow_star: out[4].1,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days_of_month & (1 << d.day()) != 0;
        let dow = self.days_of_week & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first activation strictly after `after`, in `tz`; `None` if there is
    /// none within five years (e.g. `0 0 30 2 *`), as upstream gives up.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let limit_year = start.year() + 5;
        let mut t = start.with().second(0).subsec_nanosecond(0).build().ok()?;
        t = t.checked_add(1.minute()).ok()?;
        while t.year() <= limit_year {
            if self.months & (1 << t.month()) == 0 {
                let first = t.date().first_of_month().checked_add(1.month()).ok()?;
                t = DateTime::from_parts(first, Time::midnight());
                continue;
            }
            if !self.day_matches(t.date()) {
                t = DateTime::from_parts(t.date().tomorrow().ok()?, Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let at = tz.to_ambiguous_timestamp(t).compatible().ok()?;
            if at > after {
                return Some(at);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_times_follow_cron() {
        let utc = TimeZone::UTC;
        let cases = [
            ("*/1 * * * *", "2026-03-01T10:00:30Z", "2026-03-01T10:01:00Z"),
            ("* * * * *", "2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z"),
            ("*/15 * * * *", "2026-03-01T10:07:00Z", "2026-03-01T10:15:00Z"),
            ("5/20 * * * *", "2026-03-01T10:26:00Z", "2026-03-01T10:45:00Z"),
            ("0 9-17/4 * * *", "2026-03-01T13:00:00Z", "2026-03-01T17:00:00Z"),
            ("30 2 * * mon-fri", "2026-03-06T03:00:00Z", "2026-03-09T02:30:00Z"),
            ("0 0 1,15 * *", "2026-03-02T00:00:00Z", "2026-03-15T00:00:00Z"),
            ("0 0 * FEB *", "2026-03-01T00:00:00Z", "2027-02-01T00:00:00Z"),
            // Both day fields restricted: either matches (the 13th or any Friday).
            ("0 0 13 * 5", "2026-03-01T00:00:00Z", "2026-03-06T00:00:00Z"),
            // Day-of-week is a star: both must match.
            ("0 0 13 * *", "2026-03-01T00:00:00Z", "2026-03-13T00:00:00Z"),
            ("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            ("@hourly", "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"),
            ("@daily", "2026-03-01T10:00:00Z", "2026-03-02T00:00:00Z"),
            ("@weekly", "2026-03-01T10:00:00Z", "2026-03-08T00:00:00Z"),
            ("@monthly", "2026-03-01T10:00:00Z", "2026-04-01T00:00:00Z"),
            ("@yearly", "2026-03-01T10:00:00Z", "2027-01-01T00:00:00Z"),
        ];
        for (schedule, after, want) in cases {
            let s = Schedule::parse(schedule).unwrap_or_else(|e| panic!("{schedule}: {e}"));
            assert_eq!(
                s.next_after(ts(after), &utc),
                Some(ts(want)),
                "{schedule} after {after}"
            );
        }
        assert_eq!(
            Schedule::parse("0 0 30 2 *")
                .unwrap()
                .next_after(ts("2026-01-01T00:00:00Z"), &utc),
            None
        );
    }

    #[test]
    fn time_zones_shift_and_dst_gaps_fire_late() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        // 09:00 EST is 14:00 UTC.
        assert_eq!(
            s.next_after(ts("2026-01-10T12:00:00Z"), &ny),
            Some(ts("2026-01-10T14:00:00Z"))
        );
        // 02:30 does not exist on 2026-03-08 in New York: it fires at 03:30 EDT.
        let gap = Schedule::parse("30 2 * * *").unwrap();
        assert_eq!(
            gap.next_after(ts("2026-03-08T05:00:00Z"), &ny),
            Some(ts("2026-03-08T07:30:00Z"))
        );
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        for bad in [
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "*/0 * * * *",
            "5-1 * * * *",
            "@every 5m",
            "TZ=UTC * * * * *",
            "x * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(Schedule::parse("0 0 ? * SUN").is_ok());
    }
}
