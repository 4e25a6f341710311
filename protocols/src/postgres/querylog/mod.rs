//! The query log: decoded copies of the frames that matter, correlated into one record per
//! execution (Parse → Bind → Execute by statement and portal names, pipelined batches by Sync),
//! and the session's activity (a statement in flight is never idle).
//!
//! Responses arrive in the order requests were sent, so a queue of what each request expects
//! is enough: `1` answers a Parse, `2` a Bind, `3` a Close, `T`/`n` a Describe, `C`/`s`/`I` an
//! Execute, `V` a FunctionCall, `Z` a Sync or simple Query. Prepared statements and portals
//! take effect when the server confirms them (`1`, `2`, `3`), never when the client asks: a
//! Parse the server skipped or refused cannot change what a later Execute is logged as. After
//! an error the server skips to the next Sync; `Z` drops what it skipped, and requests the
//! client sends meanwhile are not queued at all. Syncs sent during COPY FROM STDIN are ignored
//! by the server, and here too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use wardengate_recorder::QueryRecord;

mod decode;

use super::wire::{error_fields, Rd};
use crate::session::{now_ms, Busy, SessionShared};
use decode::{binary_value, cut, parse_bind, parse_parse, rows_of, tx_name};

/// Requests queued without an answer before the session is refused as unauditable.
pub const MAX_PENDING: usize = 100_000;

/// Client message tags the log decodes (Query, Parse, Bind, Execute, Close, Describe, Sync,
/// FunctionCall, CopyDone, CopyFail).
pub fn client_wants(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'E' | b'C' | b'D' | b'S' | b'F' | b'X' | b'c' | b'f'
    )
}

/// Server message tags the log decodes.
pub fn server_wants(tag: u8) -> bool {
    matches!(
        tag,
        b'C' | b'E'
            | b'Z'
            | b'S'
            | b'1'
            | b'2'
            | b'3'
            | b't'
            | b'T'
            | b'n'
            | b's'
            | b'I'
            | b'V'
            | b'G'
    )
}

/// How parameters are kept.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    /// Bytes kept of each parameter and of each statement.
    pub max_bytes: usize,
    pub redact_params: bool,
}

#[derive(Clone)]
struct Prepared {
    text: Arc<str>,
    types: Arc<[u32]>,
    truncated: bool,
    /// Judged on the whole text at Parse (the text kept may be cut before the telling part).
    alert: Option<String>,
}

#[derive(Clone)]
struct Portal {
    statement: String,
    params: Arc<[Option<String>]>,
    truncated: bool,
}

enum Pending {
    Parse(String, Prepared),
    Bind(String, Portal),
    /// Describe of a prepared statement (its name) or of a portal (`None`).
    Describe(Option<String>),
    Close(u8, String),
    Execute {
        portal: String,
        started_ms: u64,
        at: Instant,
    },
    Simple(QueryRecord, Instant),
    Function(QueryRecord, Instant),
    Sync,
}

pub struct QueryLog {
    shared: Arc<SessionShared>,
    capture: Capture,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    pending: VecDeque<(u64, Pending)>,
    seq: u64,
    /// The server is skipping extended-protocol requests until the client's next Sync.
    skipping: bool,
    /// COPY FROM STDIN started by the Execute with this sequence number is running.
    copy_in: Option<u64>,
    /// Finished since the last ReadyForQuery, waiting for the transaction status.
    done: Vec<QueryRecord>,
    /// Complete, not yet handed to the recording (see [`QueryLog::server_held`]).
    ready: Vec<QueryRecord>,
    busy: Option<Busy>,
}

impl QueryLog {
    pub fn new(shared: Arc<SessionShared>, capture: Capture) -> QueryLog {
        QueryLog {
            shared,
            capture,
            statements: HashMap::new(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            seq: 0,
            skipping: false,
            copy_in: None,
            done: Vec::new(),
            ready: Vec::new(),
            busy: None,
        }
    }

    /// [`server`](Self::server), keeping completed records here until the relay takes them
    /// with [`take_ready`](Self::take_ready): the relay forwards first and records after, and a
    /// session that ends in between still finds them in [`unfinished`](Self::unfinished).
    pub fn server_held(&mut self, tag: u8, body: &[u8]) {
        let out = self.server(tag, body);
        self.ready.extend(out);
    }

    /// Completed records waiting for the recording.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub fn take_ready(&mut self) -> Vec<QueryRecord> {
        std::mem::take(&mut self.ready)
    }

    fn record(&self, kind: &str, statement: &str, truncated: bool, started_ms: u64) -> QueryRecord {
        let alert = wardengate_recorder::alert_for(statement);
        self.record_with(kind, statement, truncated, started_ms, alert)
    }

    /// [`record`](Self::record) with the alert already judged (a prepared statement's).
    fn record_with(
        &self,
        kind: &str,
        statement: &str,
        truncated: bool,
        started_ms: u64,
        alert: Option<String>,
    ) -> QueryRecord {
        let (statement, cut_now) = cut(statement, self.capture.max_bytes);
        QueryRecord {
            kind: kind.into(),
            alert,
            statement,
            started_ms,
            truncated: truncated || cut_now,
            ..Default::default()
        }
    }

    fn params(
        &self,
        statement: &str,
        formats: &[u16],
        values: &[Option<&[u8]>],
    ) -> (Vec<Option<String>>, bool) {
        let mut truncated = false;
        let types = self.statements.get(statement).map(|p| p.types.clone());
        let max = self.capture.max_bytes;
        let p = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let v = (*v)?;
                if self.capture.redact_params {
                    return Some("<redacted>".to_string());
                }
                let binary = match formats.len() {
                    0 => false,
                    1 => formats[0] == 1,
                    _ => formats.get(i) == Some(&1),
                };
                let oid = types.as_ref().and_then(|t| t.get(i)).copied().unwrap_or(0);
                let text = match binary {
                    false => String::from_utf8_lossy(v).into_owned(),
                    true => match binary_value(oid, v) {
                        Some(t) => t,
                        None => {
                            let n = v.len().min(max / 2);
                            truncated |= n < v.len();
                            return Some(format!("\\x{}", hex::encode(&v[..n])));
                        }
                    },
                };
                let (s, c) = cut(&text, max);
                truncated |= c;
                Some(s)
            })
            .collect();
        (p, truncated)
    }

    fn push(&mut self, p: Pending) -> Result<(), String> {
        if self.pending.len() >= MAX_PENDING {
            return Err(format!(
                "more than {MAX_PENDING} requests sent without waiting for a response; the gateway cannot audit them"
            ));
        }
        self.seq += 1;
        self.pending.push_back((self.seq, p));
        Ok(())
    }

    /// A frame from the client (`body` may be cut short of `full`). `Err` ends the session.
    pub fn client(&mut self, tag: u8, body: &[u8], full: usize) -> Result<(), String> {
        let whole = body.len() == full;
        let query_message = matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'F');
        if query_message {
            self.shared.note_activity();
            if self.busy.is_none() {
                self.busy = Some(self.shared.busy());
                self.shared.set_activity("active");
            }
        }
        // The server discards extended-protocol requests until Sync after an error.
        if self.skipping && matches!(tag, b'P' | b'B' | b'E' | b'D' | b'C') {
            return Ok(());
        }
        match tag {
            b'Q' => {
                let text = Rd(body)
                    .cstr()
                    .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
                let r = self.record("simple", &text, !whole, now_ms());
                self.push(Pending::Simple(r, Instant::now()))?;
            }
            b'P' => {
                let (name, text, types) = match parse_parse(body).filter(|_| whole) {
                    Some(p) => p,
                    None => {
                        let mut r = Rd(body);
                        let name = r.cstr().unwrap_or_default();
                        let text = r
                            .cstr()
                            .unwrap_or_else(|| String::from_utf8_lossy(r.0).into_owned());
                        (name, text, Vec::new())
                    }
                };
                let alert = wardengate_recorder::alert_for(&text);
                let (text, cut_now) = cut(&text, self.capture.max_bytes);
                let prepared = Prepared {
                    text: text.into(),
                    types: types.into(),
                    truncated: cut_now || !whole,
                    alert,
                };
                self.push(Pending::Parse(name, prepared))?;
            }
            b'B' => {
                let portal = match parse_bind(body).filter(|_| whole) {
                    Some((portal, statement, formats, values)) => {
                        let (params, truncated) = self.params(&statement, &formats, &values);
                        (
                            portal,
                            Portal {
                                statement,
                                params: params.into(),
                                truncated,
                            },
                        )
                    }
                    None => {
                        let mut r = Rd(body);
                        let portal = r.cstr().unwrap_or_default();
                        let statement = r.cstr().unwrap_or_default();
                        (
                            portal,
                            Portal {
                                statement,
                                params: Arc::from(Vec::new()),
                                truncated: true,
                            },
                        )
                    }
                };
                self.push(Pending::Bind(portal.0, portal.1))?;
            }
            b'E' => {
                let portal = Rd(body).cstr().unwrap_or_default();
                self.push(Pending::Execute {
                    portal,
                    started_ms: now_ms(),
                    at: Instant::now(),
                })?;
            }
            b'F' => {
                let oid = Rd(body).i32().unwrap_or(0) as u32;
                let r = self.record(
                    "function",
                    &format!("function call (oid {oid})"),
                    false,
                    now_ms(),
                );
                self.push(Pending::Function(r, Instant::now()))?;
                self.push(Pending::Sync)?;
            }
            b'D' => {
                let mut r = Rd(body);
                let statement = (r.u8() == Some(b'S')).then(|| r.cstr().unwrap_or_default());
                self.push(Pending::Describe(statement))?;
            }
            b'C' => {
                let mut r = Rd(body);
                let kind = r.u8().unwrap_or(b'P');
                self.push(Pending::Close(kind, r.cstr().unwrap_or_default()))?;
            }
            b'S' => {
                self.skipping = false;
                // Ignored by the server during COPY FROM STDIN.
                if self.copy_in.is_none() {
                    self.push(Pending::Sync)?;
                }
            }
            b'c' | b'f' => {
                // COPY FROM STDIN is over: Syncs sent since its Execute were ignored.
                if let Some(from) = self.copy_in.take() {
                    self.pending
                        .retain(|(seq, p)| !(matches!(p, Pending::Sync) && *seq > from));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, mut r: QueryRecord, started: Instant) {
        r.duration_us = started.elapsed().as_micros() as u64;
        self.done.push(r);
    }

    /// The record of an Execute of `portal`, as the server knows the portal now.
    fn execute_record(&self, portal: &str, started_ms: u64) -> QueryRecord {
        let p = self.portals.get(portal);
        let statement = p.map(|p| p.statement.clone()).unwrap_or_default();
        let prepared = self.statements.get(&statement);
        let text = prepared
            .map(|s| s.text.clone())
            .unwrap_or_else(|| Arc::from(""));
        let truncated = p.is_some_and(|p| p.truncated) || prepared.is_some_and(|s| s.truncated);
        let alert = prepared.and_then(|s| s.alert.clone());
        let mut r = self.record_with("extended", &text, truncated, started_ms, alert);
        r.statement_name = Some(statement);
        r.portal = Some(portal.to_string());
        r.params = p.map(|p| p.params.to_vec()).unwrap_or_default();
        r
    }

    /// A frame from the server; returns the records completed by a ReadyForQuery.
    pub fn server(&mut self, tag: u8, body: &[u8]) -> Vec<QueryRecord> {
        match tag {
            b'1' | b'2' | b'3' | b'T' | b'n' => {
                let expected = match self.pending.front() {
                    Some((_, Pending::Parse(..))) => tag == b'1',
                    Some((_, Pending::Bind(..))) => tag == b'2',
                    Some((_, Pending::Close(..))) => tag == b'3',
                    Some((_, Pending::Describe(_))) => tag == b'T' || tag == b'n',
                    _ => false,
                };
                if expected {
                    match self.pending.pop_front().map(|p| p.1) {
                        Some(Pending::Parse(name, prepared)) => {
                            self.statements.insert(name, prepared);
                        }
                        Some(Pending::Bind(name, portal)) => {
                            self.portals.insert(name, portal);
                        }
                        Some(Pending::Close(b'S', name)) => {
                            self.statements.remove(&name);
                        }
                        Some(Pending::Close(_, name)) => {
                            self.portals.remove(&name);
                        }
                        _ => {}
                    }
                }
            }
            b't' => {
                // ParameterDescription answers a Describe of a statement: keep its types.
                if let Some((_, Pending::Describe(Some(name)))) = self.pending.front() {
                    let mut r = Rd(body);
                    let n = r.u16().unwrap_or(0) as usize;
                    let oids: Option<Vec<u32>> =
                        (0..n).map(|_| r.i32().map(|t| t as u32)).collect();
                    if let (Some(oids), Some(p)) = (oids, self.statements.get_mut(name)) {
                        p.types = oids.into();
                    }
                }
            }
            b'G' => {
                if let Some((seq, Pending::Execute { .. })) = self.pending.front() {
                    self.copy_in = Some(*seq);
                }
            }
            b'C' | b's' | b'I' | b'V' => {
                let tag_text = match tag {
                    b'C' => Rd(body).cstr().unwrap_or_default(),
                    b's' => "suspended".into(),
                    b'I' => "EMPTY".into(),
                    _ => "function result".into(),
                };
                match self.pending.front_mut() {
                    Some((_, Pending::Simple(r, _))) => {
                        r.rows = rows_of(&tag_text)
                            .map(|n| n + r.rows.unwrap_or(0))
                            .or(r.rows);
                        r.tag = Some(match r.tag.take() {
                            Some(t) => format!("{t}; {tag_text}"),
                            None => tag_text,
                        });
                    }
                    Some((_, Pending::Execute { .. } | Pending::Function(..))) => {
                        let (mut r, at) = match self.pending.pop_front().map(|p| p.1) {
                            Some(Pending::Execute {
                                portal,
                                started_ms,
                                at,
                            }) => (self.execute_record(&portal, started_ms), at),
                            Some(Pending::Function(r, at)) => (r, at),
                            _ => return Vec::new(),
                        };
                        r.rows = rows_of(&tag_text);
                        r.tag = Some(tag_text);
                        self.finish(r, at);
                    }
                    _ => {}
                }
            }
            b'E' => {
                let f = error_fields(body);
                let field = |k: u8| f.iter().find(|(c, _)| *c == k).map(|(_, v)| v.clone());
                let (code, msg) = (field(b'C'), field(b'M'));
                let failed = match self.pending.front_mut() {
                    Some((_, Pending::Simple(r, _))) => {
                        r.sqlstate = code;
                        r.error = msg;
                        return Vec::new();
                    }
                    // At Sync itself: the implicit commit of the batch failed.
                    Some((_, Pending::Sync)) => Some((
                        self.record(
                            "extended",
                            "(Sync: end of the implicit transaction)",
                            false,
                            now_ms(),
                        ),
                        Instant::now(),
                    )),
                    None => None,
                    Some(_) => match self.pending.pop_front().map(|p| p.1) {
                        Some(Pending::Execute {
                            portal,
                            started_ms,
                            at,
                        }) => Some((self.execute_record(&portal, started_ms), at)),
                        Some(Pending::Function(r, at)) => Some((r, at)),
                        Some(Pending::Parse(_, p)) => Some((
                            self.record_with(
                                "extended",
                                &p.text,
                                p.truncated,
                                now_ms(),
                                p.alert.clone(),
                            ),
                            Instant::now(),
                        )),
                        Some(Pending::Bind(_, b)) => {
                            let prepared = self.statements.get(&b.statement);
                            let text = prepared
                                .map(|s| s.text.clone())
                                .unwrap_or_else(|| Arc::from(""));
                            let alert = prepared.and_then(|s| s.alert.clone());
                            let mut r =
                                self.record_with("extended", &text, b.truncated, now_ms(), alert);
                            r.statement_name = Some(b.statement);
                            r.params = b.params.to_vec();
                            Some((r, Instant::now()))
                        }
                        _ => None,
                    },
                };
                // Extended protocol: the server now skips to the next Sync; requests the client
                // sends before that Sync are never run.
                if !self
                    .pending
                    .iter()
                    .any(|(_, p)| matches!(p, Pending::Sync | Pending::Simple(..)))
                {
                    self.skipping = true;
                }
                if let Some((mut r, t)) = failed {
                    r.sqlstate = code;
                    r.error = msg;
                    self.finish(r, t);
                }
            }
            b'Z' => {
                let status = tx_name(body.first().copied().unwrap_or(b'I'));
                self.copy_in = None;
                // Up to and including what this ReadyForQuery answers; anything before it was
                // skipped by the server after an error.
                while let Some((_, p)) = self.pending.pop_front() {
                    match p {
                        Pending::Simple(r, t) => {
                            self.finish(r, t);
                            break;
                        }
                        Pending::Sync => break,
                        _ => {}
                    }
                }
                if self.pending.is_empty() {
                    // Idle from this ReadyForQuery on.
                    self.busy = None;
                    self.shared.set_activity(match status {
                        "in transaction" => "idle in transaction",
                        "failed transaction" => "idle in transaction (aborted)",
                        _ => "idle",
                    });
                }
                let mut out = std::mem::take(&mut self.done);
                for r in &mut out {
                    r.tx_status = Some(status.to_string());
                }
                return out;
            }
            _ => {}
        }
        Vec::new()
    }

    /// A statement is running (a query message was sent and its ReadyForQuery has not come).
    pub fn in_flight(&self) -> bool {
        self.busy.is_some()
    }

    /// The session ended: what finished without its ReadyForQuery, and what was still running,
    /// with `why` as its error.
    pub fn unfinished(&mut self, why: &str) -> Vec<QueryRecord> {
        let mut out = std::mem::take(&mut self.ready);
        out.append(&mut self.done);
        for (_, p) in std::mem::take(&mut self.pending) {
            let (mut r, at) = match p {
                Pending::Execute {
                    portal,
                    started_ms,
                    at,
                } => (self.execute_record(&portal, started_ms), at),
                Pending::Simple(r, at) | Pending::Function(r, at) => (r, at),
                _ => continue,
            };
            r.duration_us = at.elapsed().as_micros() as u64;
            if r.sqlstate.is_none() {
                r.error = Some(format!("no result: {why}"));
            }
            out.push(r);
        }
        self.busy = None;
        out
    }
}

#[cfg(test)]
mod tests;
