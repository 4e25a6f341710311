//! The relay: one task polling two pumps that move bytes socket to socket as they arrive (one
//! reusable buffer each way, never re-encoded, never held back), a frame scanner on each
//! direction feeding decoded copies to the query log, and a supervisor for timers, operator
//! control and the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wardengate_policy::Admitted;
use wardengate_recorder::EventKind;

use super::querylog::{self, QueryLog};
use super::wire::{self, Conn, Scanner};
use crate::error::{Leg, LegError};
use crate::session::{Outcome, SessionLink, Tap};
use crate::shadow::ShadowHub;
use crate::supervisor::{Ended, Front, Input, Say, Supervisor};

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

const BUF: usize = 64 * 1024;
/// Query records handed to the recorder at once...
const FLUSH_BATCH: usize = 256;
/// ...or this long after the first of them completed.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

fn split(conn: Conn) -> (Reader, Writer) {
    match conn {
        Conn::Plain(tcp) => {
            let (r, w) = tcp.into_split();
            (Box::new(r), Box::new(w))
        }
        other => {
            let (r, w) = tokio::io::split(other);
            (Box::new(r), Box::new(w))
        }
    }
}

/// Why a direction stopped.
#[derive(Debug)]
enum End {
    /// The client closed its side (after a Terminate message when `clean`).
    Client,
    Target,
    /// A message of the gateway's own ended the session (FATAL written).
    Injected,
    Protocol(String),
    Io(LegError),
    /// The recording could not take the session's records.
    Recording,
}

/// Messages the gateway writes to the client between the target's frames.
#[derive(Debug)]
enum Inject {
    Notice(BytesMut),
    /// Written, then the client connection is closed.
    Fatal(BytesMut),
}

/// Client → target.
async fn up(
    mut rd: Reader,
    mut wr: Writer,
    log: Arc<Mutex<QueryLog>>,
    cap: usize,
    terminated: Arc<AtomicBool>,
    shared: Arc<crate::session::SessionShared>,
) -> End {
    let mut buf = vec![0u8; BUF];
    let mut scanner = Scanner::new(cap);
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => return End::Client,
            Ok(n) => n,
            Err(e) => return End::Io(LegError::client(e)),
        };
        let chunk = &buf[..n];
        let mut refused = None;
        let scanned = {
            let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
            scanner.feed(chunk, querylog::client_wants, |tag, body, full| {
                if tag == b'X' {
                    terminated.store(true, Ordering::Relaxed);
                }
                if let Err(e) = l.client(tag, body, full) {
                    refused.get_or_insert(e);
                }
            })
        };
        if let Some(e) = scanned.err().or(refused) {
            return End::Protocol(e);
        }
        shared.count_input(n);
        if let Err(e) = wire::send(&mut wr, &[chunk]).await {
            tracing::debug!("target connection: {e}");
            return End::Target;
        }
    }
}

/// Target → client, with the gateway's own messages slipped in between frames.
async fn down(
    mut rd: Reader,
    mut wr: Writer,
    log: Arc<Mutex<QueryLog>>,
    (tap, hub): (Option<Tap>, Arc<ShadowHub>),
    mut inject: mpsc::Receiver<Inject>,
    shared: Arc<crate::session::SessionShared>,
    alerts: mpsc::UnboundedSender<String>,
) -> End {
    let mut buf = vec![0u8; BUF];
    let mut scanner = Scanner::new(64 * 1024);
    let mut held: Option<Inject> = None;
    let mut params = Vec::new();
    // Records go to the recorder in batches: at most FLUSH_AFTER after the first one waits, or
    // FLUSH_BATCH at once. Waking the recorder for every statement costs a thread wakeup per
    // round trip on a busy machine; until they are sent, records stay in the log, where the end
    // of the session finds them.
    let mut flush_at: Option<tokio::time::Instant> = None;
    let mut inject_open = true;
    loop {
        let waiting = flush_at;
        tokio::select! {
            // What the gateway has to say goes first: a FATAL queued as the session ends must
            // not lose to the target closing at the same moment.
            biased;
            m = inject.recv(), if held.is_none() && inject_open => {
                let Some(m) = m else {
                    inject_open = false;
                    continue;
                };
                if !scanner.at_boundary() {
                    held = Some(m);
                    continue;
                }
                let (Inject::Notice(b) | Inject::Fatal(b)) = &m;
                if let Err(e) = wire::send(&mut wr, &[b]).await {
                    return End::Io(LegError::client(e));
                }
                if matches!(m, Inject::Fatal(_)) {
                    let _ = wr.shutdown().await;
                    return End::Injected;
                }
            }
            r = rd.read(&mut buf) => {
                let n = match r {
                    Ok(n) if n > 0 => n,
                    // A reset is the target going away, as a close is (pg_terminate_backend can do
                    // either). It can come at once after the gateway ended the session itself (a
                    // client's protocol violation closes the target leg): the FATAL that says why
                    // still goes to the client.
                    other => {
                        if let Err(e) = other {
                            tracing::debug!("target connection: {e}");
                        }
                        let pending = held.take().or_else(|| inject.try_recv().ok());
                        if let (Some(Inject::Fatal(b)), true) = (pending, scanner.at_boundary()) {
                            let _ = wire::send(&mut wr, &[&b]).await;
                            let _ = wr.shutdown().await;
                            return End::Injected;
                        }
                        return End::Target;
                    }
                };
                let chunk = &buf[..n];
                let (boundary, ready) = {
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    let b = scanner.feed(chunk, querylog::server_wants, |tag, body, _| {
                        if tag == b'S' {
                            let (k, rest) = wire::cstr(body);
                            params.push(format!("{k}={}", wire::cstr(rest).0));
                        }
                        l.server_held(tag, body);
                    });
                    (b, l.ready_len())
                };
                let boundary = match boundary {
                    Ok(b) => b,
                    Err(e) => return End::Protocol(format!("target: {e}")),
                };
                shared.note_output(n);
                let (res, fatal) = match (held.take(), boundary) {
                    (Some(m), Some(b)) => {
                        let fatal = matches!(m, Inject::Fatal(_));
                        (write_split(&mut wr, chunk, b, &m).await, fatal)
                    }
                    (m, _) => {
                        held = m;
                        (wire::send(&mut wr, &[chunk]).await, false)
                    }
                };
                // Recorded once the client has the results (a wakeup of the recorder is not on
                // the round trip); until then the records wait in the log, where the end of the
                // session finds them if it comes first.
                if ready >= FLUSH_BATCH || fatal || !params.is_empty() {
                    flush_at = None;
                    if !record(&log, (&tap, &hub, &alerts), shared.started_ms, &mut params).await {
                        return End::Recording;
                    }
                } else if ready > 0 && flush_at.is_none() {
                    flush_at = Some(tokio::time::Instant::now() + FLUSH_AFTER);
                }
                if let Err(e) = res {
                    return End::Io(LegError::client(e));
                }
                if fatal {
                    let _ = wr.shutdown().await;
                    return End::Injected;
                }
            }
            _ = async { if let Some(t) = waiting { tokio::time::sleep_until(t).await } }, if waiting.is_some() => {
                flush_at = None;
                if !record(&log, (&tap, &hub, &alerts), shared.started_ms, &mut params).await {
                    return End::Recording;
                }
            }
        }
    }
}

/// The audit text of a record that carries an alert: `password change: ALTER ROLE ...`.
fn alert_text(r: &wardengate_recorder::QueryRecord) -> Option<String> {
    let alert = r.alert.as_deref()?;
    let text: String = r.statement.chars().take(200).collect();
    Some(format!("{alert}: {text}"))
}

/// Hand the log's completed records (and ParameterStatus changes) to the recording; `false`
/// when the recording failed.
async fn record(
    log: &Mutex<QueryLog>,
    (tap, hub, alerts): (&Option<Tap>, &ShadowHub, &mpsc::UnboundedSender<String>),
    started_ms: u64,
    params: &mut Vec<String>,
) -> bool {
    let ready = log.lock().map(|mut l| l.take_ready()).unwrap_or_default();
    for a in ready.iter().filter_map(alert_text) {
        // The supervisor audits it (`session.alert`). Unbounded, so none is dropped: each one
        // is a statement the session sent, and the supervisor drains them as they come.
        let _ = alerts.send(a);
    }
    if hub.count() > 0 {
        // Observers get the log as `recording play` shows it (timed at the batch's flush).
        let t_us = crate::session::now_ms().saturating_sub(started_ms) * 1000;
        for r in &ready {
            hub.line(r.line(t_us));
        }
    }
    let Some(tap) = tap else {
        params.clear();
        return true;
    };
    for r in ready {
        if !tap.record(EventKind::Query(Box::new(r))).await {
            return false;
        }
    }
    for p in params.drain(..) {
        tap.marker("parameter", p).await;
    }
    true
}

async fn write_split(wr: &mut Writer, chunk: &[u8], at: usize, m: &Inject) -> std::io::Result<()> {
    let (Inject::Notice(b) | Inject::Fatal(b)) = m;
    match m {
        Inject::Notice(_) => wire::send(wr, &[&chunk[..at], b, &chunk[at..]]).await,
        Inject::Fatal(_) => wire::send(wr, &[&chunk[..at], b]).await,
    }
}

/// A live PostgreSQL session.
pub struct Live {
    pub link: SessionLink,
    pub admitted: Admitted,
    pub log: Arc<Mutex<QueryLog>>,
    pub capture_bytes: usize,
    /// The target and the real cancel key of its backend.
    pub cancel_key: (Arc<super::Route>, i32, i32),
}

/// The client leg, for the supervisor: texts go out as NOTICE/WARNING messages between the
/// target's frames, the end as a FATAL (as `pg_terminate_backend` sends it).
struct PgFront<'a> {
    inject: &'a mpsc::Sender<Inject>,
    log: &'a Mutex<QueryLog>,
    cancel_key: &'a (Arc<super::Route>, i32, i32),
    /// The statement still running upstream when the session ended: cancelled once the client
    /// has the FATAL, so the target's "canceling statement" error can never reach it first.
    cancel_after: Option<(Arc<super::Route>, i32, i32)>,
}

impl Front for PgFront<'_> {
    const INPUT: Input = Input {
        noun: "a statement",
        unless: "unless a statement runs",
    };

    async fn say(&mut self, text: &str, kind: Say) {
        // The pumps are futures of this task: never wait on this channel here (`try_send`), or
        // the down pump that empties it could not run. Four is far more than ever waits.
        let severity = if kind == Say::Warning {
            "WARNING"
        } else {
            "NOTICE"
        };
        let _ = self
            .inject
            .try_send(Inject::Notice(wire::notice(severity, "01000", text)));
    }

    async fn end(&mut self, outcome: &Outcome, text: &str) {
        // 57P05: idle_session_timeout, as PostgreSQL's own; 57P01: admin_shutdown.
        let code = match outcome {
            Outcome::Policy { reason: "idle", .. } => "57P05",
            _ => "57P01",
        };
        let in_flight = self.log.lock().map(|l| l.in_flight()).unwrap_or(true);
        let _ = self
            .inject
            .try_send(Inject::Fatal(wire::error("FATAL", code, text, None, None)));
        self.cancel_after = in_flight.then(|| self.cancel_key.clone());
    }
}

/// Relay until the session ends; the outcome is what the gateway records.
pub async fn run(
    live: Live,
    client: Conn,
    target: Conn,
    shutdown: CancellationToken,
    notify: impl Fn(&'static str, String) + Send + Sync,
) -> Outcome {
    let Live {
        mut link,
        admitted,
        log,
        capture_bytes,
        cancel_key,
    } = live;
    let (crd, cwr) = split(client);
    let (trd, twr) = split(target);
    let shared = link.shared.clone();
    let terminated = Arc::new(AtomicBool::new(false));
    let (inject_tx, inject_rx) = mpsc::channel(4);
    // Both directions run as futures of this one task, beside the supervisor (as
    // `copy_bidirectional` does): a round trip wakes one task, not two on two threads.
    let up = up(
        crd,
        twr,
        log.clone(),
        capture_bytes,
        terminated.clone(),
        shared.clone(),
    );
    let (alert_tx, mut alert_rx) = mpsc::unbounded_channel::<String>();
    let down = down(
        trd,
        cwr,
        log.clone(),
        (link.tap.clone(), link.hub.clone()),
        inject_rx,
        shared.clone(),
        alert_tx,
    );
    tokio::pin!(up, down);
    let mut down_done = false;
    let (outcome, cancel_after) = {
        let mut front = PgFront {
            inject: &inject_tx,
            log: &log,
            cancel_key: &cancel_key,
            cancel_after: None,
        };
        let relay = async {
            loop {
                tokio::select! {
                    r = &mut up => {
                        return match r {
                            End::Client if terminated.load(Ordering::Relaxed) => Outcome::ClientExit,
                            End::Client => Outcome::ClientDropped("the client closed the connection without a Terminate message".into()),
                            End::Protocol(e) => {
                                let msg = format!("wardengate: protocol violation: {e}");
                                let _ = inject_tx.try_send(Inject::Fatal(wire::error("FATAL", "08P01", &msg, None, None)));
                                Outcome::Error(format!("client {e}"))
                            }
                            End::Io(_) if terminated.load(Ordering::Relaxed) => Outcome::ClientExit,
                            End::Io(e) => Outcome::ClientDropped(e.to_string()),
                            End::Target | End::Injected => Outcome::TargetClosed,
                            End::Recording => Outcome::Error("the recording failed".into()),
                        };
                    }
                    r = &mut down => {
                        down_done = true;
                        return match r {
                            _ if terminated.load(Ordering::Relaxed) => Outcome::ClientExit,
                            End::Target => Outcome::TargetClosed,
                            End::Protocol(e) => Outcome::Error(e),
                            End::Io(e) if e.leg == Leg::Client => Outcome::ClientDropped(e.to_string()),
                            End::Io(e) => Outcome::Error(e.to_string()),
                            End::Recording => Outcome::Error("the recording failed".into()),
                            End::Client | End::Injected => Outcome::ClientExit,
                        };
                    }
                    // Alerts are audited as they come (`session.alert`).
                    Some(alert) = alert_rx.recv() => notify("session.alert", alert),
                }
            }
        };
        tokio::pin!(relay);
        let supervisor = Supervisor::new(&mut link, &admitted, &shutdown, &notify);
        let outcome = match supervisor.run(&mut front, relay).await {
            Ended::Relay(o) | Ended::Gateway(o) => o,
            // Never asked for: a PostgreSQL front does not hand off.
            Ended::Handoff(_) => Outcome::Error("a handoff reached a PostgreSQL session".into()),
        };
        (outcome, front.cancel_after)
    };
    // The FATAL (if any) goes out before both sides close; dropping the pumps closes them.
    if !down_done {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut down).await;
    }
    if let Some((route, pid, secret)) = cancel_after {
        if let Err(e) = super::back::cancel(&route, pid, secret).await {
            tracing::warn!("cannot cancel the running statement: {e}");
        }
    }
    // Statements that never got their ReadyForQuery are recorded too, with why.
    let why = match &outcome {
        Outcome::ClientExit => "the client disconnected".to_string(),
        Outcome::Terminated { by, reason } => {
            format!("the session was terminated by {by}: {reason}")
        }
        other => format!("the session ended ({})", other.reason()),
    };
    let unfinished = log
        .lock()
        .map(|mut l| l.unfinished(&why))
        .unwrap_or_default();
    // Alerts the supervisor had no turn to hear, and those of records never flushed.
    while let Ok(alert) = alert_rx.try_recv() {
        notify("session.alert", alert);
    }
    for a in unfinished.iter().filter_map(alert_text) {
        notify("session.alert", a);
    }
    if let Some(tap) = &link.tap {
        for r in unfinished {
            tap.record(EventKind::Query(Box::new(r))).await;
        }
    }
    link.control.close();
    outcome
}
