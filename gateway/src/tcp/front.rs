//! The `[tcp]` listener: TLS, one JSON line from `wgctl proxy` (the authorization token and the
//! person's own API token), a one-line answer, then the client's bytes relayed to the host.
//!
//! Before the person is known, every refusal reads the same and takes the same time (what was
//! wrong goes to the audit). Once they are, a refusal says exactly why: the token was altered,
//! expired, is someone else's, its session has ended or has no connection left.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use wardengate_api as api;
use wardengate_protocols::listener::PreAuth;
use wardengate_protocols::tcp::{relay, Ended};

use super::{Refused, TcpLive};
use crate::broker::Gateway;

/// Longest first line read (two tokens and a little JSON).
const MAX_HELLO: usize = 16 * 1024;

/// How long every refusal of an unknown person takes, whatever was wrong.
const REFUSAL_DELAY: Duration = Duration::from_millis(500);

/// How long the client has to take the gateway's answer.
const REPLY_WITHIN: Duration = Duration::from_secs(10);

/// How long one store lookup of the check may take.
const STORE_WAIT: Duration = Duration::from_secs(5);

/// The answer when the checks could not finish in time.
const CHECK_LATE: &str =
    "wardengate: the gateway could not check the token in time; try again in a moment";

/// The one answer to a connection whose person is not known.
pub const NOT_AUTHORIZED: &str = "wardengate: not authorized: sign in with `wgctl login` (or set \
    WARDENGATE_TOKEN to your own API token) and use a token from `wgctl target authorize`";

/// Serve one connection of the `[tcp]` listener.
pub async fn serve(
    gw: Arc<Gateway>,
    acceptor: TlsAcceptor,
    connect_timeout: Duration,
    socket: TcpStream,
    peer: SocketAddr,
    mut slot: PreAuth,
) {
    let _ = socket.set_nodelay(true);
    let Some(Ok(mut tls)) = slot.within(acceptor.accept(socket)).await else {
        return;
    };
    let hello = match slot.within(read_line(&mut tls, MAX_HELLO)).await {
        Some(Some(line)) => line,
        _ => return,
    };
    let checked = match slot.within(check(&gw, &hello, peer)).await {
        Some(c) => c,
        // The store did not answer within the pre-authentication deadline.
        None => Err(("unavailable", CHECK_LATE.to_string())),
    };
    let (live, conn) = match checked {
        Ok(v) => v,
        Err(no) => {
            let _ = slot.within(reply(&mut tls, Err(no))).await;
            return;
        }
    };
    slot.authenticated();
    let connect = tokio::time::timeout(connect_timeout, TcpStream::connect(&live.host));
    let host = tokio::select! {
        biased;
        _ = live.stop.cancelled() => {
            live.uncount();
            let no = ("session_ending", format!("wardengate: session {} is ending", live.id));
            let _ = tokio::time::timeout(REPLY_WITHIN, reply(&mut tls, Err(no))).await;
            return;
        }
        h = connect => h,
    };
    let host = match host {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            refuse_connect(&gw, &live, conn, &mut tls, e.to_string()).await;
            return;
        }
        Err(_) => {
            let why = format!(
                "no answer within {}",
                wardengate_recorder::time::human(connect_timeout)
            );
            refuse_connect(&gw, &live, conn, &mut tls, why).await;
            return;
        }
    };
    let _ = host.set_nodelay(true);
    let answered = match live.stop.is_cancelled() {
        true => false,
        false => tokio::time::timeout(REPLY_WITHIN, reply(&mut tls, Ok(conn)))
            .await
            .is_ok_and(|r| r.is_ok()),
    };
    if !answered {
        live.closed();
        return;
    }
    let first = live.activate();
    gw.tcp_counted(&live, first);
    let tap = live.tap();
    let started = std::time::Instant::now();
    if let Some(t) = &tap {
        let d = json!({"connection": conn, "client": peer.to_string(), "host_id": live.host_id, "host": live.host});
        t.marker("connection", d.to_string()).await;
    }
    gw.audit(
        "tcp.connection",
        Some(&live.user),
        Some(&live.id),
        json!({"connection": conn, "client": peer.to_string(), "host": live.host}),
    );
    // `stop` is cut by the session's end and by the gateway's shutdown.
    let (ended, up, down) = relay(tls, host, conn, &live.shared, tap.as_ref(), &live.stop).await;
    let why = match &ended {
        Ended::Closed => "closed".to_string(),
        Ended::Stopped => "session_ended".to_string(),
        Ended::RecordingFailed => "recording_failed".to_string(),
        Ended::Error(e) => e.clone(),
    };
    let d = json!({"connection": conn, "bytes_from_client": up, "bytes_from_host": down,
                   "seconds": started.elapsed().as_secs_f64(), "end": why});
    if let Some(t) = &tap {
        t.marker("connection-end", d.to_string()).await;
    }
    drop(tap);
    gw.audit("tcp.connection_end", Some(&live.user), Some(&live.id), d);
    if ended == Ended::RecordingFailed {
        gw.registry.end(
            &live.id,
            "recording_failed",
            "the session recording could not be written".into(),
        );
    }
    live.closed();
}

/// The host did not take the connection: tell the client, give the connection back.
async fn refuse_connect<S: AsyncWrite + Unpin>(
    gw: &Gateway,
    live: &TcpLive,
    conn: u32,
    tls: &mut S,
    why: String,
) {
    let msg = format!(
        "wardengate: cannot connect to host {} ({}) of target {}: {why}",
        live.host_id, live.host, live.target
    );
    gw.audit(
        "tcp.connect_failed",
        Some(&live.user),
        Some(&live.id),
        json!({"connection": conn, "host": live.host, "error": why}),
    );
    let _ = tokio::time::timeout(REFUSAL_DELAY, reply(tls, Err(("connect_failed", msg)))).await;
    live.uncount();
}

/// Who is asking, with which token: the live session, the connection's number, and whether it
/// is the session's first; or the answer to give.
async fn check(gw: &Gateway, hello: &[u8], peer: SocketAddr) -> Result<(Arc<TcpLive>, u32), No> {
    let ip = peer.ip();
    let refuse = |reason: &str, detail: serde_json::Value| {
        gw.audit(
            "tcp.refused",
            None,
            None,
            json!({"client": peer.to_string(), "reason": reason, "detail": detail}),
        );
    };
    let hello: Option<api::TcpHello> = serde_json::from_slice(hello).ok();
    // A token that proved itself lately is not a guess: it skips the throttle's count of
    // attempts in flight (a proxy opens many connections at once), and is checked all the same.
    let digest = hello
        .as_ref()
        .map(|h| crate::identity::digest(h.token.trim()));
    let vouched = digest.is_some_and(|d| gw.tcp.vouched(&d));
    let person_of =
        |d: [u8; 32]| async move { tokio::time::timeout(STORE_WAIT, gw.person_of(&d)).await };
    let (person, throttled) = match digest {
        Some(d) if vouched => (person_of(d).await, false),
        Some(d) if gw.api_throttle.allow("", ip) => (person_of(d).await, true),
        _ => (Ok(None), false),
    };
    let Ok(person) = person else {
        // The store is slow or away: nobody's failure.
        if throttled {
            gw.api_throttle.abandon("", ip);
        }
        return Err(("unavailable", CHECK_LATE.into()));
    };
    let (Some(hello), Some(person), Some(digest)) = (hello, person, digest) else {
        if let Some(d) = digest {
            gw.tcp.forget(&d);
        }
        if throttled {
            let events = gw.api_throttle.record("", ip, false);
            gw.audit_throttle("api", events);
        }
        refuse("not_authenticated", json!({}));
        tokio::time::sleep(REFUSAL_DELAY).await;
        return Err(("not_authorized", NOT_AUTHORIZED.into()));
    };
    if throttled {
        gw.api_throttle.record("", ip, true);
    }
    gw.tcp.vouch(digest);
    let refused = |reason: &'static str, msg: String, session: Option<&str>| -> No {
        gw.audit(
            "tcp.refused",
            Some(&person),
            session,
            json!({"client": peer.to_string(), "reason": reason, "message": msg}),
        );
        (reason, msg)
    };
    let Some(front) = gw.tcp.front.get() else {
        return Err(refused(
            "no_listener",
            "wardengate: TCP is not configured".into(),
            None,
        ));
    };
    let claims = front
        .key
        .verify(&hello.authz, wardengate_protocols::session::now_ms())
        .map_err(|bad| {
            let kind = match bad {
                super::token::Bad::Malformed => "malformed_token",
                super::token::Bad::Forged => "forged_token",
                super::token::Bad::Expired(_) => "expired_token",
            };
            refused(kind, format!("wardengate: {bad}"), None)
        })?;
    if claims.user != person {
        let msg = format!(
            "wardengate: this authorization token was issued to another user, not {person}; \
             authorize your own session with `wgctl target authorize {}`",
            claims.target
        );
        return Err(refused("foreign_token", msg, Some(&claims.sid)));
    }
    let Some(live) = gw.tcp.get(&claims.sid) else {
        let how = match tokio::time::timeout(STORE_WAIT, gw.store.session_get(&claims.sid)).await {
            Ok(Ok(Some(r))) => format!(
                "has ended ({})",
                r.end_reason.unwrap_or_else(|| r.state.to_string())
            ),
            _ => "is not running on this gateway".into(),
        };
        let msg = format!(
            "wardengate: session {} {how}; authorize again with `wgctl target authorize {}`",
            claims.sid, claims.target
        );
        return Err(refused("session_ended", msg, Some(&claims.sid)));
    };
    match live.open() {
        Ok(n) => Ok((live, n)),
        Err(Refused::Limit(n)) => {
            let msg = format!(
                "wardengate: session {} reached its connection limit ({n}): every connection it \
                 allows has been made; authorize a new session for more",
                live.id
            );
            Err(refused("connection_limit", msg, Some(&live.id)))
        }
        Err(Refused::Ending) => {
            let msg = format!("wardengate: session {} is ending", live.id);
            Err(refused("session_ending", msg, Some(&live.id)))
        }
    }
}

/// One line, without its `\n`; `None` past `max` bytes or at the end of the stream.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S, max: usize) -> Option<Vec<u8>> {
    let mut line = Vec::with_capacity(512);
    loop {
        let b = s.read_u8().await.ok()?;
        if b == b'\n' {
            return Some(line);
        }
        if line.len() >= max {
            return None;
        }
        line.push(b);
    }
}

/// Why a connection is refused: a reason for programs (`api::TcpReply::reason`), a message for
/// people.
type No = (&'static str, String);

async fn reply<S: AsyncWrite + Unpin>(s: &mut S, answer: Result<u32, No>) -> std::io::Result<()> {
    let r = match answer {
        Ok(n) => api::TcpReply {
            ok: true,
            connection: Some(n),
            reason: None,
            error: None,
        },
        Err((reason, msg)) => api::TcpReply {
            ok: false,
            connection: None,
            reason: Some(reason.into()),
            error: Some(msg),
        },
    };
    let mut line = serde_json::to_vec(&r).unwrap_or_default();
    line.push(b'\n');
    s.write_all(&line).await?;
    s.flush().await
}

/// The `[tcp]` listener, bound, with its TLS and what tokens say about it.
pub struct Bound {
    pub listener: tokio::net::TcpListener,
    pub acceptor: TlsAcceptor,
    pub front: super::Front,
    pub section: crate::config::TcpSection,
}

/// Load (or generate) the listener's certificate and bind it.
pub async fn bind(
    cfg: &crate::config::Loaded,
    section: &crate::config::TcpSection,
    shutdown: CancellationToken,
) -> anyhow::Result<Bound> {
    use anyhow::Context;
    use sha2::{Digest, Sha256};
    let (config, chain) =
        crate::tls::server_config(cfg, &section.tls_cert_file, &section.tls_key_file, "tcp")?;
    let listener = tokio::net::TcpListener::bind(section.listen)
        .await
        .with_context(|| format!("cannot listen for TCP sessions on {}", section.listen))?;
    let bound = listener.local_addr()?;
    let cert_sha256 = chain
        .first()
        .map(|c| hex::encode(Sha256::digest(c.as_ref())))
        .unwrap_or_default();
    Ok(Bound {
        listener,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        front: super::Front {
            key: super::token::TokenKey::generate()?,
            endpoint: section.public(bound),
            cert_sha256,
            shutdown,
        },
        section: section.clone(),
    })
}
