//! The event model and its binary encoding (one event = one length-prefixed record).

use bytes::Bytes;

use crate::{Error, Result};

/// One thing that happened in a session, at `t_us` microseconds after the recording started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub t_us: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes from the user towards the target (keystrokes, uploaded data).
    Input { channel: u32, data: Bytes },
    /// Bytes from the target towards the user; `stderr` for SSH extended data.
    Output {
        channel: u32,
        data: Bytes,
        stderr: bool,
    },
    /// Terminal size.
    Resize { channel: u32, cols: u32, rows: u32 },
    /// A lifecycle or control marker: `exec`, `exit-status`, `subsystem`, `terminated`, `idle`,
    /// `resumed`, ... with free-form UTF-8 detail.
    Marker { kind: String, detail: String },
    /// A database statement execution (PostgreSQL sessions), stored as JSON.
    Query(Box<crate::QueryRecord>),
    /// Bytes of a brokered TCP connection (`protocol = "tcp"`): `conn` numbers the session's
    /// connections from 1; `from_client` says which way they went.
    Stream {
        conn: u32,
        from_client: bool,
        data: Bytes,
    },
}

const T_INPUT: u8 = 1;
const T_OUTPUT: u8 = 2;
const T_RESIZE: u8 = 3;
const T_MARKER: u8 = 4;
const T_QUERY: u8 = 5;
const T_STREAM: u8 = 6;

/// Largest event accepted when reading (guards allocations against corrupt lengths).
pub(crate) const MAX_EVENT_LEN: usize = 16 << 20;

impl Event {
    /// Encoded size in bytes, including the length prefix.
    pub fn encoded_len(&self) -> usize {
        4 + 1
            + 8
            + match &self.kind {
                EventKind::Input { data, .. } => 4 + data.len(),
                EventKind::Output { data, .. } => 4 + 1 + data.len(),
                EventKind::Resize { .. } => 12,
                EventKind::Marker { kind, detail } => 2 + kind.len() + detail.len(),
                EventKind::Query(q) => query_json(q).len(),
                EventKind::Stream { data, .. } => 4 + 1 + data.len(),
            }
    }

    /// Append the encoding: `u32 len | u8 type | u64 t_us | fields` (little-endian; `len`
    /// counts everything after itself).
    pub fn encode(&self, out: &mut Vec<u8>) {
        // A query record is serialised once, for its length and its bytes.
        let query = match &self.kind {
            EventKind::Query(q) => Some(query_json(q)),
            _ => None,
        };
        let len = match &query {
            Some(q) => (1 + 8 + q.len()) as u32,
            None => (self.encoded_len() - 4) as u32,
        };
        out.extend_from_slice(&len.to_le_bytes());
        let ty = match self.kind {
            EventKind::Input { .. } => T_INPUT,
            EventKind::Output { .. } => T_OUTPUT,
            EventKind::Resize { .. } => T_RESIZE,
            EventKind::Marker { .. } => T_MARKER,
            EventKind::Query(_) => T_QUERY,
            EventKind::Stream { .. } => T_STREAM,
        };
        out.push(ty);
        out.extend_from_slice(&self.t_us.to_le_bytes());
        match &self.kind {
            EventKind::Input { channel, data } => {
                out.extend_from_slice(&channel.to_le_bytes());
                out.extend_from_slice(data);
            }
            EventKind::Output {
                channel,
                data,
                stderr,
            } => {
                out.extend_from_slice(&channel.to_le_bytes());
                out.push(u8::from(*stderr));
                out.extend_from_slice(data);
            }
            EventKind::Resize {
                channel,
                cols,
                rows,
            } => {
                out.extend_from_slice(&channel.to_le_bytes());
                out.extend_from_slice(&cols.to_le_bytes());
                out.extend_from_slice(&rows.to_le_bytes());
            }
            EventKind::Marker { kind, detail } => {
                // Marker kinds are short names; longer ones are cut (never fails).
                let k = &kind.as_bytes()[..kind.len().min(u16::MAX as usize)];
                out.extend_from_slice(&(k.len() as u16).to_le_bytes());
                out.extend_from_slice(k);
                out.extend_from_slice(detail.as_bytes());
            }
            EventKind::Query(_) => out.extend_from_slice(query.as_deref().unwrap_or_default()),
            EventKind::Stream {
                conn,
                from_client,
                data,
            } => {
                out.extend_from_slice(&conn.to_le_bytes());
                out.push(u8::from(*from_client));
                out.extend_from_slice(data);
            }
        }
    }

    /// Decode every event of a chunk body.
    pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (ev, rest) = Self::decode_one(buf)?;
            out.push(ev);
            buf = rest;
        }
        Ok(out)
    }

    /// The longest prefix of `buf` made of whole, well-formed events (a write-ahead log cut by a
    /// crash): (its length in bytes, the number of events, the first and last event times).
    pub(crate) fn whole_prefix(mut buf: &[u8]) -> (usize, u32, u64, u64) {
        let total = buf.len();
        let (mut n, mut first, mut last) = (0u32, 0u64, 0u64);
        while !buf.is_empty() {
            let Ok((ev, rest)) = Self::decode_one(buf) else {
                break;
            };
            if n == 0 {
                first = ev.t_us;
            }
            last = last.max(ev.t_us);
            n += 1;
            buf = rest;
        }
        (total - buf.len(), n, first, last)
    }

    fn decode_one(buf: &[u8]) -> Result<(Event, &[u8])> {
        let bad = |what: &str| Error::Format(format!("malformed event: {what}"));
        let len =
            u32::from_le_bytes(take::<4>(buf).ok_or_else(|| bad("truncated length"))?) as usize;
        if !(9..=MAX_EVENT_LEN).contains(&len) {
            return Err(bad("impossible length"));
        }
        let body = buf.get(4..4 + len).ok_or_else(|| bad("truncated body"))?;
        let rest = &buf[4 + len..];
        let ty = body[0];
        let t_us = u64::from_le_bytes(take::<8>(&body[1..]).ok_or_else(|| bad("no time"))?);
        let f = &body[9..];
        let u32_at = |i: usize| take::<4>(f.get(i..).unwrap_or_default()).map(u32::from_le_bytes);
        let kind = match ty {
            T_INPUT => EventKind::Input {
                channel: u32_at(0).ok_or_else(|| bad("input channel"))?,
                data: Bytes::copy_from_slice(f.get(4..).ok_or_else(|| bad("input data"))?),
            },
            T_OUTPUT => EventKind::Output {
                channel: u32_at(0).ok_or_else(|| bad("output channel"))?,
                stderr: *f.get(4).ok_or_else(|| bad("output flag"))? != 0,
                data: Bytes::copy_from_slice(f.get(5..).ok_or_else(|| bad("output data"))?),
            },
            T_RESIZE => EventKind::Resize {
                channel: u32_at(0).ok_or_else(|| bad("resize channel"))?,
                cols: u32_at(4).ok_or_else(|| bad("resize cols"))?,
                rows: u32_at(8).ok_or_else(|| bad("resize rows"))?,
            },
            T_MARKER => {
                let klen = take::<2>(f)
                    .map(u16::from_le_bytes)
                    .ok_or_else(|| bad("marker kind length"))? as usize;
                let kind = f.get(2..2 + klen).ok_or_else(|| bad("marker kind"))?;
                let detail = &f[2 + klen..];
                EventKind::Marker {
                    kind: String::from_utf8_lossy(kind).into_owned(),
                    detail: String::from_utf8_lossy(detail).into_owned(),
                }
            }
            T_QUERY => EventKind::Query(Box::new(
                serde_json::from_slice(f).map_err(|e| bad(&format!("query record: {e}")))?,
            )),
            T_STREAM => EventKind::Stream {
                conn: u32_at(0).ok_or_else(|| bad("stream connection"))?,
                from_client: *f.get(4).ok_or_else(|| bad("stream direction"))? != 0,
                data: Bytes::copy_from_slice(f.get(5..).ok_or_else(|| bad("stream data"))?),
            },
            other => return Err(bad(&format!("unknown type {other}"))),
        };
        Ok((Event { t_us, kind }, rest))
    }
}

fn query_json(q: &crate::QueryRecord) -> Vec<u8> {
    // Serialising a struct of strings and numbers cannot fail.
    serde_json::to_vec(q).unwrap_or_default()
}

fn take<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.get(..N).and_then(|s| s.try_into().ok())
}
