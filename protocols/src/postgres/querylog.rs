//! The query log: decoded copies of the frames that matter, correlated into one record per
//! execution (Parse → Bind → Execute by statement and portal names, pipelined batches by Sync),
//! and the session's activity (a statement in flight is never idle).
//!
//! Responses arrive in the order requests were sent, so a queue of what each request expects
//! is enough: `1` answers a Parse, `2` a Bind, `3` a Close, `T`/`n` a Describe, `C`/`s`/`I` an
//! Execute, `V` a FunctionCall, `Z` a Sync or simple Query. After an error the server skips to
//! the next Sync; `Z` drops what it skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use pgwire::messages::extendedquery::{Bind, Close, Parse};
use pgwire::messages::response::{CommandComplete, ErrorResponse};
use pgwire::messages::simplequery::Query;
use wardengate_recorder::QueryRecord;

use super::wire::{cstr, decode};
use crate::session::{Busy, SessionShared};

/// Client message tags the log decodes (Query, Parse, Bind, Execute, Close, Describe, Sync,
/// FunctionCall, Terminate).
pub fn client_wants(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'E' | b'C' | b'D' | b'S' | b'F' | b'X'
    )
}

/// Server message tags the log decodes.
pub fn server_wants(tag: u8) -> bool {
    matches!(
        tag,
        b'C' | b'E' | b'Z' | b'S' | b'1' | b'2' | b'3' | b't' | b'T' | b'n' | b's' | b'I' | b'V'
    )
}

/// How parameters are kept.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    /// Bytes kept of each parameter and of each statement.
    pub max_bytes: usize,
    pub redact_params: bool,
}

enum Pending {
    Parse(String),
    Bind(String),
    /// Describe of a prepared statement (its name) or of a portal (`None`).
    Describe(Option<String>),
    Close,
    Execute(QueryRecord, Instant),
    Simple(QueryRecord, Instant),
    Function(QueryRecord, Instant),
    Sync,
}

pub struct QueryLog {
    shared: Arc<SessionShared>,
    capture: Capture,
    statements: HashMap<String, String>,
    /// Parameter type OIDs of prepared statements (from Parse, or the server's
    /// ParameterDescription), to show binary parameters as values.
    param_types: HashMap<String, Vec<u32>>,
    portals: HashMap<String, (String, Vec<Option<String>>, bool)>,
    pending: VecDeque<Pending>,
    /// Finished since the last ReadyForQuery, waiting for the transaction status.
    done: Vec<QueryRecord>,
    busy: Option<Busy>,
}

fn cut(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_string(), false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

/// Rows from a command tag: the last number (`INSERT 0 5` → 5, `SELECT 3` → 3).
fn rows_of(tag: &str) -> Option<u64> {
    tag.rsplit(' ').next().and_then(|n| n.parse().ok())
}

fn tx_name(status: u8) -> &'static str {
    match status {
        b'T' => "in transaction",
        b'E' => "failed transaction",
        _ => "idle",
    }
}

impl QueryLog {
    pub fn new(shared: Arc<SessionShared>, capture: Capture) -> QueryLog {
        QueryLog {
            shared,
            capture,
            statements: HashMap::new(),
            param_types: HashMap::new(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            done: Vec::new(),
            busy: None,
        }
    }

    fn record(&self, kind: &str, statement: &str, truncated: bool) -> QueryRecord {
        let (statement, cut_now) = cut(statement, self.capture.max_bytes);
        QueryRecord {
            kind: kind.into(),
            statement,
            started_ms: crate::session::now_ms(),
            truncated: truncated || cut_now,
            ..Default::default()
        }
    }

    fn params(&self, bind: &Bind) -> (Vec<Option<String>>, bool) {
        let mut truncated = false;
        let formats = &bind.parameter_format_codes;
        let types = self
            .param_types
            .get(bind.statement_name.as_deref().unwrap_or_default());
        let p = bind
            .parameters
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let v = v.as_ref()?;
                if self.capture.redact_params {
                    return Some("<redacted>".to_string());
                }
                let binary = match formats.len() {
                    0 => false,
                    1 => formats[0] == 1,
                    _ => formats.get(i) == Some(&1),
                };
                let max = self.capture.max_bytes;
                let oid = types.and_then(|t| t.get(i)).copied().unwrap_or(0);
                let text = match binary {
                    false => String::from_utf8_lossy(v).into_owned(),
                    true => match binary_value(oid, v) {
                        Some(t) => t,
                        None => {
                            let n = v.len().min(max / 2);
                            truncated |= n < v.len();
                            return Some(format!("\\x{}", hex_lower(&v[..n])));
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

    /// A frame from the client (`body` may be cut short of `full`).
    pub fn client(&mut self, tag: u8, body: &[u8], full: usize) {
        let whole = body.len() == full;
        let query_message = matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'F');
        match tag {
            b'Q' => {
                let text = decode::<Query>(tag, body)
                    .map(|q| q.query)
                    .unwrap_or_else(|| {
                        String::from_utf8_lossy(body.split(|c| *c == 0).next().unwrap_or_default())
                            .into_owned()
                    });
                let r = self.record("simple", &text, !whole);
                self.pending.push_back(Pending::Simple(r, Instant::now()));
            }
            b'P' => {
                let (name, text) = match decode::<Parse>(tag, body) {
                    Some(p) => {
                        let name = p.name.unwrap_or_default();
                        self.param_types.insert(name.clone(), p.type_oids);
                        (name, p.query)
                    }
                    None => {
                        let (name, rest) = cstr(body);
                        (name, cstr(rest).0)
                    }
                };
                let (text, _) = cut(&text, self.capture.max_bytes);
                self.statements.insert(name.clone(), text.clone());
                self.pending.push_back(Pending::Parse(text));
            }
            b'B' => {
                let (portal, stmt, params, truncated) = match decode::<Bind>(tag, body) {
                    Some(b) => {
                        let (p, t) = self.params(&b);
                        (
                            b.portal_name.unwrap_or_default(),
                            b.statement_name.unwrap_or_default(),
                            p,
                            t,
                        )
                    }
                    None => {
                        let (portal, rest) = cstr(body);
                        (portal, cstr(rest).0, Vec::new(), true)
                    }
                };
                let text = self.statements.get(&stmt).cloned().unwrap_or_default();
                self.portals.insert(portal, (stmt, params, truncated));
                self.pending.push_back(Pending::Bind(text));
            }
            b'E' => {
                let portal = cstr(body).0;
                let (stmt, params, truncated) =
                    self.portals.get(&portal).cloned().unwrap_or_default();
                let text = self.statements.get(&stmt).cloned().unwrap_or_default();
                let mut r = self.record("extended", &text, truncated);
                r.statement_name = Some(stmt);
                r.portal = Some(portal);
                r.params = params;
                self.pending.push_back(Pending::Execute(r, Instant::now()));
            }
            b'F' => {
                let oid = body
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                let r = self.record("function", &format!("function call (oid {oid})"), false);
                self.pending.push_back(Pending::Function(r, Instant::now()));
                self.pending.push_back(Pending::Sync);
            }
            b'D' => {
                let statement = (body.first() == Some(&b'S')).then(|| cstr(&body[1..]).0);
                self.pending.push_back(Pending::Describe(statement));
            }
            b'C' => {
                if let Some(c) = decode::<Close>(tag, body) {
                    let name = c.name.unwrap_or_default();
                    if c.target_type == b'S' {
                        self.statements.remove(&name);
                    } else {
                        self.portals.remove(&name);
                    }
                }
                self.pending.push_back(Pending::Close);
            }
            b'S' => self.pending.push_back(Pending::Sync),
            _ => {}
        }
        if query_message {
            self.shared.note_activity();
            if self.busy.is_none() {
                self.busy = Some(self.shared.busy());
                self.shared.set_activity("active");
            }
        }
    }

    fn finish(&mut self, mut r: QueryRecord, started: Instant) {
        r.duration_us = started.elapsed().as_micros() as u64;
        self.done.push(r);
    }

    /// A frame from the server; returns the records completed by a ReadyForQuery.
    pub fn server(&mut self, tag: u8, body: &[u8]) -> Vec<QueryRecord> {
        match tag {
            b'1' | b'2' | b'3' | b'T' | b'n' => {
                let expected = match self.pending.front() {
                    Some(Pending::Parse(_)) => tag == b'1',
                    Some(Pending::Bind(_)) => tag == b'2',
                    Some(Pending::Close) => tag == b'3',
                    Some(Pending::Describe(_)) => tag == b'T' || tag == b'n',
                    _ => false,
                };
                if expected {
                    self.pending.pop_front();
                }
            }
            b't' => {
                // ParameterDescription answers a Describe of a statement: keep its types.
                if let Some(Pending::Describe(Some(name))) = self.pending.front() {
                    let n = body
                        .get(..2)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]))
                        .unwrap_or(0) as usize;
                    let oids = body[2.min(body.len())..]
                        .chunks_exact(4)
                        .take(n)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    self.param_types.insert(name.clone(), oids);
                }
            }
            b'C' | b's' | b'I' | b'V' => {
                let tag_text = match tag {
                    b'C' => decode::<CommandComplete>(tag, body)
                        .map(|c| c.tag)
                        .unwrap_or_default(),
                    b's' => "suspended".into(),
                    b'I' => "EMPTY".into(),
                    _ => "function result".into(),
                };
                match self.pending.front_mut() {
                    Some(Pending::Simple(r, _)) => {
                        r.rows = rows_of(&tag_text)
                            .map(|n| n + r.rows.unwrap_or(0))
                            .or(r.rows);
                        r.tag = Some(match r.tag.take() {
                            Some(t) => format!("{t}; {tag_text}"),
                            None => tag_text,
                        });
                    }
                    Some(Pending::Execute(..)) | Some(Pending::Function(..)) => {
                        if let Some(Pending::Execute(mut r, t) | Pending::Function(mut r, t)) =
                            self.pending.pop_front()
                        {
                            r.rows = rows_of(&tag_text);
                            r.tag = Some(tag_text);
                            self.finish(r, t);
                        }
                    }
                    _ => {}
                }
            }
            b'E' => {
                let e = decode::<ErrorResponse>(tag, body);
                let field = |k: u8| {
                    e.as_ref().and_then(|e| {
                        e.fields
                            .iter()
                            .find(|(c, _)| *c == k)
                            .map(|(_, v)| v.clone())
                    })
                };
                let (code, msg) = (field(b'C'), field(b'M'));
                let failed = match self.pending.front_mut() {
                    Some(Pending::Simple(r, _)) => {
                        r.sqlstate = code.clone();
                        r.error = msg.clone();
                        None
                    }
                    Some(Pending::Sync) | None => None,
                    Some(_) => self.pending.pop_front(),
                };
                let failed = match failed {
                    Some(Pending::Execute(r, t) | Pending::Function(r, t)) => Some((r, t)),
                    Some(Pending::Parse(text) | Pending::Bind(text)) => {
                        Some((self.record("extended", &text, false), Instant::now()))
                    }
                    _ => None,
                };
                if let Some((mut r, t)) = failed {
                    r.sqlstate = code;
                    r.error = msg;
                    self.finish(r, t);
                }
            }
            b'Z' => {
                let status = tx_name(body.first().copied().unwrap_or(b'I'));
                // Up to and including what this ReadyForQuery answers; anything before it was
                // skipped by the server after an error.
                while let Some(p) = self.pending.pop_front() {
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
}

/// A binary parameter of a common type as text (`41`, `true`, a UUID); `None` for the rest.
fn binary_value(oid: u32, v: &[u8]) -> Option<String> {
    Some(match (oid, v.len()) {
        (16, 1) => (v[0] != 0).to_string(),
        (21, 2) => i16::from_be_bytes(v.try_into().ok()?).to_string(),
        (23 | 26, 4) => i32::from_be_bytes(v.try_into().ok()?).to_string(),
        (20, 8) => i64::from_be_bytes(v.try_into().ok()?).to_string(),
        (700, 4) => f32::from_be_bytes(v.try_into().ok()?).to_string(),
        (701, 8) => f64::from_be_bytes(v.try_into().ok()?).to_string(),
        (25 | 1043 | 1042 | 19, _) => String::from_utf8(v.to_vec()).ok()?,
        (2950, 16) => {
            let h = hex_lower(v);
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }
        _ => return None,
    })
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstrs(parts: &[&str]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.bytes().chain([0])).collect()
    }

    fn log() -> QueryLog {
        QueryLog::new(
            Arc::new(SessionShared::new("s".into())),
            Capture {
                max_bytes: 16,
                redact_params: false,
            },
        )
    }

    fn bind(portal: &str, stmt: &str, params: &[&[u8]], binary: bool) -> Vec<u8> {
        let mut b = cstrs(&[portal, stmt]);
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&(binary as u16).to_be_bytes());
        b.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            b.extend_from_slice(&(p.len() as u32).to_be_bytes());
            b.extend_from_slice(p);
        }
        b.extend_from_slice(&0u16.to_be_bytes());
        b
    }

    fn c(l: &mut QueryLog, tag: u8, body: &[u8]) {
        l.client(tag, body, body.len());
    }

    #[test]
    fn simple_query_with_two_statements() {
        let mut l = log();
        c(
            &mut l,
            b'Q',
            &cstrs(&["insert into t values (1); select 1"]),
        );
        assert!(l.in_flight());
        assert!(l.server(b'C', &cstrs(&["INSERT 0 1"])).is_empty());
        l.server(b'C', &cstrs(&["SELECT 1"]));
        let out = l.server(b'Z', b"I");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tag.as_deref(), Some("INSERT 0 1; SELECT 1"));
        assert_eq!(out[0].rows, Some(2));
        assert!(out[0].truncated, "statement longer than 16 bytes is cut");
        assert_eq!(out[0].statement, "insert into t va");
        assert!(!l.in_flight());
    }

    #[test]
    fn pipelined_extended_batches_with_an_error() {
        let mut l = log();
        c(
            &mut l,
            b'P',
            &[cstrs(&["s1", "select $1"]), vec![0, 0]].concat(),
        );
        c(&mut l, b'B', &bind("", "s1", &[b"42"], false));
        c(&mut l, b'E', &[cstrs(&[""]), vec![0; 4]].concat());
        c(&mut l, b'S', &[]);
        c(&mut l, b'B', &bind("p2", "s1", &[&[1, 2]], true));
        c(&mut l, b'E', &[cstrs(&["p2"]), vec![0; 4]].concat());
        c(&mut l, b'S', &[]);
        l.server(b'1', &[]);
        l.server(b'2', &[]);
        l.server(b'C', &cstrs(&["SELECT 1"]));
        let first = l.server(b'Z', b"T");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].statement, "select $1");
        assert_eq!(first[0].statement_name.as_deref(), Some("s1"));
        assert_eq!(first[0].params, vec![Some("42".to_string())]);
        assert_eq!(first[0].tx_status.as_deref(), Some("in transaction"));
        assert!(l.in_flight(), "the second batch is still running");
        let mut e = vec![b'S'];
        e.extend(cstrs(&["ERROR"]));
        e.push(b'C');
        e.extend(cstrs(&["22P02"]));
        e.push(b'M');
        e.extend(cstrs(&["bad input"]));
        e.push(0);
        l.server(b'E', &e);
        let second = l.server(b'Z', b"E");
        assert_eq!(second.len(), 1, "the bind failed: one record");
        assert_eq!(second[0].sqlstate.as_deref(), Some("22P02"));
        assert_eq!(second[0].tx_status.as_deref(), Some("failed transaction"));
        assert!(!l.in_flight());
        assert_eq!(l.shared.activity(), Some("idle in transaction (aborted)"));
    }

    #[test]
    fn binary_parameters_of_described_statements_read_as_values() {
        let mut l = log();
        c(
            &mut l,
            b'P',
            &[cstrs(&["s1", "select $1, $2"]), vec![0, 0]].concat(),
        );
        c(&mut l, b'D', &[vec![b'S'], cstrs(&["s1"])].concat());
        c(&mut l, b'S', &[]);
        l.server(b'1', &[]);
        l.server(b't', &[0, 2, 0, 0, 0, 23, 0, 0, 0, 25]);
        l.server(b'n', &[]);
        l.server(b'Z', b"I");
        let mut b = cstrs(&["", "s1"]);
        b.extend_from_slice(&[
            0, 1, 0, 1, 0, 2, 0, 0, 0, 4, 0, 0, 0, 41, 0, 0, 0, 2, b'h', b'i', 0, 0,
        ]);
        c(&mut l, b'B', &b);
        assert_eq!(
            l.portals[""].1,
            vec![Some("41".to_string()), Some("hi".to_string())]
        );
    }

    #[test]
    fn parameters_binary_redacted_and_cut() {
        let mut l = log();
        c(&mut l, b'P', &[cstrs(&["", "x"]), vec![0, 0]].concat());
        c(
            &mut l,
            b'B',
            &bind("", "", &[&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6]], true),
        );
        c(&mut l, b'E', &[cstrs(&[""]), vec![0; 4]].concat());
        c(&mut l, b'S', &[]);
        for t in [b'1', b'2'] {
            l.server(t, &[]);
        }
        l.server(b'C', &cstrs(&["SELECT 0"]));
        let r = l.server(b'Z', b"I");
        assert_eq!(r[0].params, vec![Some("\\xdeadbeef01020304".to_string())]);
        assert!(r[0].truncated);
        let mut l = QueryLog::new(
            Arc::new(SessionShared::new("s".into())),
            Capture {
                max_bytes: 16,
                redact_params: true,
            },
        );
        c(&mut l, b'B', &bind("", "", &[b"secret"], false));
        assert_eq!(l.portals[""].1, vec![Some("<redacted>".to_string())]);
    }
}
