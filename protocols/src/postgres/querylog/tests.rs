//! The query log's correlation rules, message by message.
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

fn parse(name: &str, text: &str) -> Vec<u8> {
    [cstrs(&[name, text]), vec![0, 0]].concat()
}

fn exec(portal: &str) -> Vec<u8> {
    [cstrs(&[portal]), vec![0; 4]].concat()
}

fn error(code: &str) -> Vec<u8> {
    let mut e = vec![b'S'];
    e.extend(cstrs(&["ERROR"]));
    e.push(b'C');
    e.extend(cstrs(&[code]));
    e.push(b'M');
    e.extend(cstrs(&["bad"]));
    e.push(0);
    e
}

fn c(l: &mut QueryLog, tag: u8, body: &[u8]) {
    l.client(tag, body, body.len()).expect("accepted");
}

/// The client runs `sql` as the unnamed statement and portal: Parse, Bind, Execute, Sync.
fn unnamed(l: &mut QueryLog, sql: &str) {
    c(l, b'P', &parse("", sql));
    c(l, b'B', &bind("", "", &[], false));
    c(l, b'E', &exec(""));
    c(l, b'S', &[]);
}

fn srv(l: &mut QueryLog, tags: &[u8]) {
    for t in tags {
        assert!(l.server(*t, &[]).is_empty());
    }
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
    c(&mut l, b'P', &parse("s1", "select $1"));
    c(&mut l, b'B', &bind("", "s1", &[b"42"], false));
    c(&mut l, b'E', &exec(""));
    c(&mut l, b'S', &[]);
    c(&mut l, b'B', &bind("p2", "s1", &[&[1, 2]], true));
    c(&mut l, b'E', &exec("p2"));
    c(&mut l, b'S', &[]);
    srv(&mut l, b"12");
    l.server(b'C', &cstrs(&["SELECT 1"]));
    let first = l.server(b'Z', b"T");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].statement, "select $1");
    assert_eq!(first[0].statement_name.as_deref(), Some("s1"));
    assert_eq!(first[0].params, vec![Some("42".to_string())]);
    assert_eq!(first[0].tx_status.as_deref(), Some("in transaction"));
    assert!(l.in_flight(), "the second batch is still running");
    l.server(b'E', &error("22P02"));
    let second = l.server(b'Z', b"E");
    assert_eq!(second.len(), 1, "the bind failed: one record");
    assert_eq!(second[0].statement, "select $1");
    assert_eq!(second[0].sqlstate.as_deref(), Some("22P02"));
    assert_eq!(second[0].tx_status.as_deref(), Some("failed transaction"));
    assert!(!l.in_flight());
    assert_eq!(l.shared.activity(), Some("idle in transaction (aborted)"));
}

#[test]
fn statements_count_only_once_the_server_confirms_them() {
    let mut l = log();
    c(&mut l, b'P', &parse("s1", "select evil()"));
    c(&mut l, b'S', &[]);
    srv(&mut l, b"1");
    l.server(b'Z', b"I");
    // A failing Bind makes the server skip the re-Parse of s1 that follows it.
    c(&mut l, b'B', &bind("", "nosuch", &[], false));
    l.server(b'E', &error("26000"));
    c(&mut l, b'P', &parse("s1", "select 1"));
    c(&mut l, b'S', &[]);
    assert_eq!(l.server(b'Z', b"I").len(), 1, "the failed bind is recorded");
    c(&mut l, b'B', &bind("", "s1", &[], false));
    c(&mut l, b'E', &exec(""));
    c(&mut l, b'S', &[]);
    srv(&mut l, b"2");
    l.server(b'C', &cstrs(&["SELECT 1"]));
    let r = l.server(b'Z', b"I");
    assert_eq!(
        r[0].statement, "select evil()",
        "what the server ran, not what the client last sent"
    );
    // A refused Parse does not replace the statement either.
    c(&mut l, b'P', &parse("s1", "select 2"));
    c(&mut l, b'S', &[]);
    l.server(b'E', &error("42P05"));
    let r = l.server(b'Z', b"I");
    assert_eq!(
        (r[0].statement.as_str(), r[0].sqlstate.as_deref()),
        ("select 2", Some("42P05"))
    );
    assert_eq!(&*l.statements["s1"].text, "select evil()");
}

#[test]
fn copy_in_over_the_extended_protocol_ignores_its_syncs() {
    let mut l = log();
    unnamed(&mut l, "copy t from stdin");
    srv(&mut l, b"12G");
    c(&mut l, b'S', &[]);
    c(&mut l, b'c', &[]);
    c(&mut l, b'S', &[]);
    l.server(b'C', &cstrs(&["COPY 3"]));
    let r = l.server(b'Z', b"I");
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].statement.as_str(), r[0].tag.as_deref()),
        ("copy t from stdi", Some("COPY 3"))
    );
    assert!(!l.in_flight(), "back to idle: no stale Sync left");
    assert!(l.pending.is_empty());
}

#[test]
fn an_error_at_sync_and_the_end_of_a_session_are_recorded() {
    let mut l = log();
    unnamed(&mut l, "insert");
    srv(&mut l, b"12");
    l.server(b'C', &cstrs(&["INSERT 0 1"]));
    l.server(b'E', &error("40001"));
    let r = l.server(b'Z', b"I");
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].sqlstate.as_deref(), Some("40001"));
    c(&mut l, b'Q', &cstrs(&["select pg_sleep(5)"]));
    let r = l.unfinished("the session was terminated");
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].error.as_deref(),
        Some("no result: the session was terminated")
    );
    assert!(!l.in_flight());
}

#[test]
fn endless_pipelines_are_refused_and_hostile_frames_never_panic() {
    let mut l = log();
    let mut refused = None;
    for _ in 0..=MAX_PENDING {
        if let Err(e) = l.client(b'E', &exec(""), 5) {
            refused = Some(e);
            break;
        }
    }
    assert!(refused.expect("refused").contains("cannot audit"));
    let mut l = log();
    for body in [
        &b""[..],
        b"\0",
        b"\0\0\xff\xff",
        b"p\0s\0\0\x01\0\0\0\x05\0\0\0\x7fab",
    ] {
        for t in [b'Q', b'P', b'B', b'E', b'F', b'D', b'C'] {
            let _ = l.client(t, body, body.len());
        }
        for t in [b'1', b'2', b't', b'C', b'E', b'Z', b'G'] {
            l.server(t, body);
        }
    }
}

#[test]
fn binary_parameters_of_described_statements_read_as_values() {
    let mut l = log();
    c(&mut l, b'P', &parse("s1", "select $1, $2"));
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
    srv(&mut l, b"2");
    assert_eq!(
        &*l.portals[""].params,
        &[Some("41".to_string()), Some("hi".to_string())]
    );
}

#[test]
fn parameters_binary_redacted_and_cut() {
    let mut l = log();
    c(&mut l, b'P', &parse("", "x"));
    c(
        &mut l,
        b'B',
        &bind("", "", &[&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6]], true),
    );
    c(&mut l, b'E', &exec(""));
    c(&mut l, b'S', &[]);
    srv(&mut l, b"12");
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
    srv(&mut l, b"2");
    assert_eq!(&*l.portals[""].params, &[Some("<redacted>".to_string())]);
}
