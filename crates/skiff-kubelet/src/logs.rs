//! CRI container log files (`<RFC3339Nano> <stdout|stderr> <F|P> <message>` per line,
//! `P` marking a partial line continued by the next record), as the kubelet reads them
//! for `kubectl logs`.

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Timestamp as written (RFC 3339 with nanoseconds).
    pub timestamp: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Whether this record ends a line (`F`) rather than continuing (`P`).
    pub full: bool,
    /// The message bytes of this record.
    pub message: &'a str,
}

/// Parses one line of a CRI log file.
pub fn parse_line(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let timestamp = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let message = parts.next().unwrap_or("");
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    Some(Record {
        timestamp,
        stream,
        full: !tag.starts_with('P'),
        message,
    })
}

/// Renders records as `kubectl logs` shows them: messages joined into lines,
/// optionally prefixed with the timestamp of the line's first record.
pub fn render(text: &str, timestamps: bool) -> String {
    let mut out = String::new();
    let mut line_start = true;
    for line in text.lines() {
        let Some(r) = parse_line(line) else { continue };
        if timestamps && line_start {
            out.push_str(r.timestamp);
            out.push(' ');
        }
        out.push_str(r.message);
        line_start = r.full;
        if r.full {
            out.push('\n');
        }
    }
    out
}

/// The last `n` lines of rendered output.
pub fn tail(rendered: &str, n: usize) -> String {
    let lines: Vec<&str> = rendered.split_inclusive('\n').collect();
    lines[lines.len().saturating_sub(n)..].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_partial_records_and_tails() {
        let text = "2026-01-01T00:00:00.1Z stdout P hel\n2026-01-01T00:00:00.2Z stdout F lo\n2026-01-01T00:00:01Z stderr F oops\n";
        assert_eq!(render(text, false), "hello\noops\n");
        assert_eq!(
            render(text, true),
            "2026-01-01T00:00:00.1Z hello\n2026-01-01T00:00:01Z oops\n"
        );
        assert_eq!(tail(&render(text, false), 1), "oops\n");
        assert_eq!(parse_line("garbage"), None);
    }
}
