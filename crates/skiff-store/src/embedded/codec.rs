//! On-disk encoding of the `current` and `log` table values.
//!
//! Fixed little-endian layout, no external format crate:
//! - a key-value record is `create_revision: i64`, `mod_revision: i64`, `len: u32`,
//!   `value: [u8; len]` (the key itself is the table key, or stored beside it);
//! - an event record is `kind: u8` (0 created, 1 updated, 2 deleted), `key_len: u32`,
//!   `key`, the key-value record after the change, `has_prev: u8` and, if 1, the
//!   key-value record before the change.

use super::backend;
use crate::{Error, Event, EventKind, KeyValue, Result};

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("values are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Backend("corrupt record: truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }
}

fn put_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    put_bytes(out, &kv.value);
}

fn read_kv(r: &mut Reader<'_>, key: &str) -> Result<KeyValue> {
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let value = r.bytes()?.to_vec();
    Ok(KeyValue {
        key: key.to_string(),
        value,
        create_revision,
        mod_revision,
    })
}

/// Encodes a `current` table value (the key is the table key).
pub(super) fn encode_current(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + kv.value.len());
    put_kv(&mut out, kv);
    out
}

/// Decodes a `current` table value stored under `key`.
pub(super) fn decode_current(key: &str, raw: &[u8]) -> Result<KeyValue> {
    read_kv(&mut Reader(raw), key)
}

/// Encodes a `log` table value.
pub(super) fn encode_event(ev: &Event) -> Vec<u8> {
    let prev_len = ev.prev.as_ref().map_or(0, |p| p.value.len());
    let mut out = Vec::with_capacity(48 + ev.kv.key.len() + ev.kv.value.len() + prev_len);
    out.push(match ev.kind {
        EventKind::Created => 0,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    });
    put_bytes(&mut out, ev.kv.key.as_bytes());
    put_kv(&mut out, &ev.kv);
    match &ev.prev {
        Some(p) => {
            out.push(1);
            put_kv(&mut out, p);
        }
        None => out.push(0),
    }
    out
}

/// The key of an encoded `log` value, without decoding the values.
pub(super) fn event_key(raw: &[u8]) -> Result<&str> {
    let mut r = Reader(raw);
    r.u8()?;
    std::str::from_utf8(r.bytes()?).map_err(backend)
}

/// Decodes a `log` table value.
pub(super) fn decode_event(raw: &[u8]) -> Result<Event> {
    let mut r = Reader(raw);
    let kind = match r.u8()? {
        0 => EventKind::Created,
        1 => EventKind::Updated,
        2 => EventKind::Deleted,
        k => return Err(Error::Backend(format!("corrupt record: event kind {k}"))),
    };
    let key = std::str::from_utf8(r.bytes()?).map_err(backend)?.to_string();
    let kv = read_kv(&mut r, &key)?;
    let prev = if r.u8()? == 1 {
        Some(read_kv(&mut r, &key)?)
    } else {
        None
    };
    Ok(Event { kind, kv, prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &[u8], c: i64, m: i64) -> KeyValue {
        KeyValue {
            key: "/registry/pods/ns/a".into(),
            value: value.to_vec(),
            create_revision: c,
            mod_revision: m,
        }
    }

    #[test]
    fn events_round_trip() {
        for ev in [
            Event {
                kind: EventKind::Created,
                kv: kv(b"{}", 1, 1),
                prev: None,
            },
            Event {
                kind: EventKind::Updated,
                kv: kv(b"new", 1, 5),
                prev: Some(kv(b"old", 1, 1)),
            },
            Event {
                kind: EventKind::Deleted,
                kv: kv(b"", 1, 7),
                prev: Some(kv(b"", 1, 5)),
            },
        ] {
            let raw = encode_event(&ev);
            assert_eq!(decode_event(&raw).unwrap(), ev);
            assert_eq!(event_key(&raw).unwrap(), ev.kv.key);
        }
        let c = kv(b"v", 3, 4);
        assert_eq!(decode_current(&c.key, &encode_current(&c)).unwrap(), c);
    }

    #[test]
    fn truncated_records_are_errors() {
        let raw = encode_event(&Event {
            kind: EventKind::Updated,
            kv: kv(b"new", 1, 5),
            prev: Some(kv(b"old", 1, 1)),
        });
        for n in 0..raw.len() {
            assert!(decode_event(&raw[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        assert!(decode_event(&[9, 0, 0, 0, 0]).is_err());
    }
}
