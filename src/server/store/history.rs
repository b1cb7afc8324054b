//! Binary encodings of stored records and history events.
//!
//! A record is `create_rev u64 | mod_rev u64 | value`. A history event is
//! `kind u8 | key_len u32 | key | value_len u32 | value | has_prev u8 | [prev record]`, all
//! little-endian. Decoding never panics: short or malformed input is an error.

use bytes::Bytes;

use super::{Event, EventKind, KeyValue, StoreError};

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt {what} in the database"))
}

/// Encodes a record (the value of a live key).
pub fn encode_record(create_rev: u64, mod_rev: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_rev.to_le_bytes());
    out.extend_from_slice(&mod_rev.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a record of `key`.
pub fn decode_record(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    let (create_revision, mod_revision, value) = split_record(raw)?;
    Ok(KeyValue { key: key.to_string(), value: Bytes::copy_from_slice(value), create_revision, mod_revision })
}

/// A stored record's create revision, mod revision and value.
pub fn split_record(raw: &[u8]) -> Result<(u64, u64, &[u8]), StoreError> {
    if raw.len() < 16 {
        return Err(corrupt("record"));
    }
    let create = u64::from_le_bytes(raw[0..8].try_into().map_err(|_| corrupt("record"))?);
    let modr = u64::from_le_bytes(raw[8..16].try_into().map_err(|_| corrupt("record"))?);
    Ok((create, modr, &raw[16..]))
}

struct Reader<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.raw.len()).ok_or_else(|| corrupt("history event"))?;
        let s = &self.raw[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| corrupt("history event"))?))
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| corrupt("history event"))?))
    }
}

/// Encodes an event for the history table.
pub fn encode_event(e: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + e.kv.value.len() + e.prev.as_ref().map(|p| p.value.len()).unwrap_or(0));
    out.push(match e.kind {
        EventKind::Created => 0,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    });
    out.extend_from_slice(&(e.kv.key.len() as u32).to_le_bytes());
    out.extend_from_slice(e.kv.key.as_bytes());
    out.extend_from_slice(&e.kv.create_revision.to_le_bytes());
    out.extend_from_slice(&(e.kv.value.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.kv.value);
    match &e.prev {
        Some(p) => {
            out.push(1);
            out.extend_from_slice(&p.create_revision.to_le_bytes());
            out.extend_from_slice(&p.mod_revision.to_le_bytes());
            out.extend_from_slice(&(p.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&p.value);
        }
        None => out.push(0),
    }
    out
}

/// Decodes a history event stored at `revision`.
pub fn decode_event(revision: u64, raw: &[u8]) -> Result<Event, StoreError> {
    let mut r = Reader { raw, pos: 0 };
    let kind = match r.u8()? {
        0 => EventKind::Created,
        1 => EventKind::Updated,
        2 => EventKind::Deleted,
        _ => return Err(corrupt("history event kind")),
    };
    let klen = r.u32()? as usize;
    let key = std::str::from_utf8(r.take(klen)?).map_err(|_| corrupt("history key"))?.to_string();
    let create = r.u64()?;
    let vlen = r.u32()? as usize;
    let value = Bytes::copy_from_slice(r.take(vlen)?);
    let prev = match r.u8()? {
        0 => None,
        _ => {
            let pc = r.u64()?;
            let pm = r.u64()?;
            let plen = r.u32()? as usize;
            let pv = Bytes::copy_from_slice(r.take(plen)?);
            Some(KeyValue { key: key.clone(), value: pv, create_revision: pc, mod_revision: pm })
        }
    };
    Ok(Event { kind, revision, kv: KeyValue { key, value, create_revision: create, mod_revision: revision }, prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_an_error() {
        let e = Event {
            kind: EventKind::Updated,
            revision: 9,
            kv: KeyValue { key: "/a/b".into(), value: Bytes::from_static(b"new"), create_revision: 3, mod_revision: 9 },
            prev: Some(KeyValue {
                key: "/a/b".into(),
                value: Bytes::from_static(b"old"),
                create_revision: 3,
                mod_revision: 5,
            }),
        };
        let raw = encode_event(&e);
        let d = decode_event(9, &raw).unwrap();
        assert_eq!(d.kv, e.kv);
        assert_eq!(d.prev, e.prev);
        assert!(decode_event(9, &raw[..raw.len() - 2]).is_err());
        assert!(decode_event(9, &[7]).is_err());
        assert!(decode_record("k", &[1, 2]).is_err());
    }
}
