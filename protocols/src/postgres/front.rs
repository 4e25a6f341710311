//! The client leg up to an authenticated user: SSLRequest, PostgreSQL 17 direct TLS (the first
//! byte is a TLS handshake), GSSENCRequest (refused), CancelRequest, the StartupMessage, and the
//! gateway's own authentication of the user (SCRAM-SHA-256; a cleartext password only inside
//! TLS).

use std::collections::BTreeMap;

use bytes::BytesMut;
use pgwire::messages::startup::{Authentication, NegotiateProtocolVersion, Startup};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::scram::{Exchange, Verifier, MECHANISM};
use super::wire::{encode, error, Conn, Rd};
use super::{PgBroker, PgSettings};
use crate::session::ClientInfo;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
/// Largest startup packet accepted (PostgreSQL's own limit).
const MAX_STARTUP: usize = 10_000;
/// Longest cancel key protocol 3.2 allows.
const MAX_CANCEL_KEY: usize = 256;

/// What the client asked for.
pub enum Opening {
    Session {
        conn: Conn,
        params: BTreeMap<String, String>,
        /// The protocol's minor version spoken with this client: 0, or 2 (3.2, whose cancel
        /// keys are 32 bytes instead of 4).
        minor: u16,
    },
    Cancel {
        pid: i32,
        /// The key the client got: 4 bytes (protocol 3.0) or up to 256 (3.2).
        secret: Vec<u8>,
    },
}

/// A failure before authentication: a message for the log, and whether the client should be
/// told (an ErrorResponse was already written when it should).
pub type Early = String;

async fn read_exact(conn: &mut Conn, buf: &mut [u8]) -> Result<(), Early> {
    conn.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|e| format!("connection closed during startup: {e}"))
}

async fn fatal(conn: &mut Conn, code: &str, message: &str, hint: Option<&str>) {
    let _ = conn
        .write_all(&error("FATAL", code, message, None, hint))
        .await;
    let _ = conn.shutdown().await;
}

/// Read startup packets until a StartupMessage or a CancelRequest, negotiating encryption.
pub async fn negotiate(tcp: TcpStream, settings: &PgSettings) -> Result<Opening, Early> {
    let mut first = [0u8; 1];
    let n = tcp
        .peek(&mut first)
        .await
        .map_err(|e| format!("cannot read from the client: {e}"))?;
    if n == 0 {
        return Err("the client closed the connection before sending anything".into());
    }
    let mut conn = if first[0] == 0x16 {
        // PostgreSQL 17 direct TLS (`sslnegotiation=direct`): TLS from the first byte.
        let Some(acceptor) = &settings.tls else {
            return Err("a direct TLS connection arrived, but TLS is not configured".into());
        };
        let tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        // As PostgreSQL 17: direct TLS must negotiate ALPN `postgresql` (rustls already refuses
        // any other protocol), so a TLS client of some other service cannot be mistaken for us.
        if tls.get_ref().1.alpn_protocol() != Some(b"postgresql") {
            let mut conn = Conn::TlsServer(Box::new(tls));
            let msg = "received direct TLS connection request without ALPN protocol negotiation extension";
            fatal(&mut conn, "08P01", msg, None).await;
            return Err(msg.into());
        }
        Conn::TlsServer(Box::new(tls))
    } else {
        Conn::Plain(tcp)
    };
    let mut negotiated_encryption = conn.is_tls();
    let mut gss_declined = false;
    loop {
        let mut len = [0u8; 4];
        read_exact(&mut conn, &mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if !(8..=MAX_STARTUP).contains(&len) {
            fatal(
                &mut conn,
                "08P01",
                &format!("invalid length of startup packet: {len}"),
                None,
            )
            .await;
            return Err(format!("invalid startup packet length {len}"));
        }
        let mut body = vec![0u8; len - 4];
        read_exact(&mut conn, &mut body).await?;
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST if negotiated_encryption => {
                fatal(
                    &mut conn,
                    "08P01",
                    "encryption was already negotiated",
                    None,
                )
                .await;
                return Err("a second encryption request".into());
            }
            SSL_REQUEST => {
                negotiated_encryption = true;
                match (&settings.tls, conn) {
                    (Some(acceptor), Conn::Plain(mut tcp)) => {
                        tcp.write_all(b"S")
                            .await
                            .map_err(|e| format!("cannot answer SSLRequest: {e}"))?;
                        let tls = acceptor
                            .accept(tcp)
                            .await
                            .map_err(|e| format!("TLS handshake failed: {e}"))?;
                        conn = Conn::TlsServer(Box::new(tls));
                    }
                    (_, c) => {
                        conn = c;
                        conn_write(&mut conn, b"N").await?;
                    }
                }
            }
            GSSENC_REQUEST if !gss_declined => {
                // GSSAPI encryption is not offered; libpq then tries TLS or plain, as configured.
                gss_declined = true;
                conn_write(&mut conn, b"N").await?;
            }
            GSSENC_REQUEST => {
                fatal(
                    &mut conn,
                    "08P01",
                    "GSSAPI encryption was already declined",
                    None,
                )
                .await;
                return Err("a second GSSENCRequest".into());
            }
            CANCEL_REQUEST if (12..=8 + MAX_CANCEL_KEY).contains(&body.len()) => {
                let pid = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                return Ok(Opening::Cancel {
                    pid,
                    secret: body[8..].to_vec(),
                });
            }
            _ if body[0..2] == [0, 3] => {
                let mut packet = BytesMut::with_capacity(len);
                packet.extend_from_slice(&(len as u32).to_be_bytes());
                packet.extend_from_slice(&body);
                let startup = match Startup::decode(
                    &mut packet,
                    &DecodeContext::new(ProtocolVersion::PROTOCOL3_0),
                ) {
                    Ok(Some(s)) => s,
                    _ => {
                        fatal(&mut conn, "08P01", "invalid startup packet layout: expected name/value pairs ending in a NUL", None).await;
                        return Err("malformed startup packet".into());
                    }
                };
                let unsupported: Vec<String> = startup
                    .parameters
                    .keys()
                    .filter(|k| k.starts_with("_pq_."))
                    .cloned()
                    .collect();
                // 3.0, which every PostgreSQL since 7.4 and every driver understands, or 3.2
                // (PostgreSQL 18), which differs only in its longer cancel keys: the gateway makes
                // the client's key itself, so it can give a 3.2 client a 32-byte one whatever the
                // target speaks.
                let minor = match startup.protocol_number_minor {
                    m if m >= 2 => 2,
                    _ => 0,
                };
                if startup.protocol_number_minor != minor || !unsupported.is_empty() {
                    conn_write(
                        &mut conn,
                        &encode(&NegotiateProtocolVersion::new(minor.into(), unsupported)),
                    )
                    .await?;
                }
                if settings.require_tls && !conn.is_tls() {
                    fatal(
                        &mut conn,
                        "28000",
                        "wardengate accepts PostgreSQL connections only over TLS",
                        Some("connect with sslmode=require"),
                    )
                    .await;
                    return Err("a plaintext connection was refused (postgres.require_tls)".into());
                }
                return Ok(Opening::Session {
                    conn,
                    params: startup.parameters,
                    minor,
                });
            }
            _ => {
                let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
                fatal(
                    &mut conn,
                    "0A000",
                    &format!(
                        "unsupported frontend protocol {major}.{minor}: wardengate speaks 3.0"
                    ),
                    None,
                )
                .await;
                return Err(format!("unsupported protocol {major}.{minor}"));
            }
        }
    }
}

async fn conn_write(conn: &mut Conn, b: &[u8]) -> Result<(), Early> {
    super::wire::send(conn, &[b])
        .await
        .map_err(|e| format!("cannot write to the client: {e}"))
}

/// Read one authentication message (`p`) from the client.
async fn read_password_message(conn: &mut Conn) -> Result<Vec<u8>, Early> {
    let mut head = [0u8; 5];
    read_exact(conn, &mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if head[0] != b'p' || !(4..=MAX_STARTUP).contains(&len) {
        fatal(
            conn,
            "08P01",
            &format!(
                "expected a password message, got message type '{}'",
                head[0].escape_ascii()
            ),
            None,
        )
        .await;
        return Err("protocol violation during authentication".into());
    }
    let mut body = vec![0u8; len - 4];
    read_exact(conn, &mut body).await?;
    Ok(body)
}

/// How the user proved who they are, or why not.
pub enum AuthResult {
    Ok(&'static str),
    /// Told the client; audited by the caller with this kind and message.
    Refused(&'static str, String),
    /// Told the client like a wrong password; not audited (the gateway audits the burst).
    Throttled,
    /// The client went away (psql does this when it first learns a password is needed).
    Gone(Early),
}

/// The hint every password failure carries, whatever the reason (so it reveals nothing).
const PASSWORD_HINT: &str = "check the user name (USER#TARGET) and your gateway password; PostgreSQL logins need a SCRAM verifier for the user (users.scram_sha_256, printed by `wardengate hash-password`)";

/// Authenticate `user` at the gateway with SCRAM-SHA-256. Whatever goes wrong (unknown user, no
/// SCRAM verifier, wrong password, throttled), the client sees the same exchange, a salt that
/// does not tell known users from unknown ones, and the same `28P01` after the same delay; the
/// audit gets the reason. (Every user is asked for SCRAM, over TLS or not: asking some for a
/// cleartext password instead would tell who has no verifier.)
pub async fn authenticate<B: PgBroker>(
    broker: &B,
    conn: &mut Conn,
    user: &str,
    client: &ClientInfo,
    settings: &PgSettings,
) -> AuthResult {
    let known = broker.user(user);
    let allowed = broker.attempt_allowed(user, client);
    // Why the login cannot succeed whatever the password, for the audit.
    let cannot: Option<(&'static str, String)> = match &known {
        None => Some(("unknown_user", format!("unknown user \"{user}\""))),
        Some(u) if u.scram.is_none() => Some((
            "no_scram_verifier",
            format!("user \"{user}\" has no SCRAM verifier (users.scram_sha_256), which PostgreSQL logins need"),
        )),
        _ => None,
    };
    let verifier = match (known.as_ref().and_then(|u| u.scram.as_ref()), allowed) {
        (Some(v), true) => v.clone(),
        (Some(v), false) => v.decoy(),
        (None, _) => Verifier::mock(user),
    };
    let method = if conn.is_tls() {
        "scram-sha-256 (tls)"
    } else {
        "scram-sha-256"
    };
    let ok = match scram_exchange(conn, verifier).await {
        Ok(ok) => ok,
        Err(e) => {
            if allowed {
                broker.attempt_abandoned(user, client);
            }
            return AuthResult::Gone(e);
        }
    };
    if allowed {
        broker.attempt_result(user, client, ok && cannot.is_none());
    }
    if ok && allowed && cannot.is_none() {
        return AuthResult::Ok(method);
    }
    tokio::time::sleep(settings.auth_rejection_time).await;
    let msg = format!("password authentication failed for user \"{user}\"");
    let _ = conn
        .write_all(&error("FATAL", "28P01", &msg, None, Some(PASSWORD_HINT)))
        .await;
    let _ = conn.shutdown().await;
    if !allowed {
        return AuthResult::Throttled;
    }
    let (kind, why) = cannot.unwrap_or(("bad_password", msg));
    AuthResult::Refused(kind, why)
}

/// Run SCRAM-SHA-256; `Ok(false)` for a wrong password, `Err` when the client left.
async fn scram_exchange(conn: &mut Conn, v: Verifier) -> Result<bool, Early> {
    conn_write(
        conn,
        &encode(&Authentication::SASL(vec![MECHANISM.to_string()])),
    )
    .await?;
    let body = read_password_message(conn).await?;
    // SASLInitialResponse: mechanism, then the length-prefixed client-first-message.
    let mut r = Rd(&body);
    let (Some(mechanism), Some(len)) = (r.cstr(), r.i32()) else {
        return Ok(false);
    };
    let Some(data) = r.take(len.max(0) as usize) else {
        return Ok(false);
    };
    if mechanism != MECHANISM {
        return Ok(false);
    }
    let (ex, server_first) = match Exchange::start(v, data) {
        Ok(x) => x,
        Err(e) => {
            tracing::info!("SCRAM client-first rejected: {e}");
            return Ok(false);
        }
    };
    conn_write(
        conn,
        &encode(&Authentication::SASLContinue(
            server_first.into_bytes().into(),
        )),
    )
    .await?;
    // SASLResponse: the client-final-message is the whole body.
    let body = read_password_message(conn).await?;
    match ex.finish(&body) {
        Ok(server_final) => {
            conn_write(
                conn,
                &encode(&Authentication::SASLFinal(server_final.into_bytes().into())),
            )
            .await?;
            Ok(true)
        }
        Err(e) => {
            tracing::debug!("SCRAM proof rejected: {e}");
            Ok(false)
        }
    }
}

/// Tell the client it was refused (after authentication): FATAL with `code`.
pub async fn refuse(conn: &mut Conn, code: &str, message: &str, detail: Option<&str>) {
    let _ = conn
        .write_all(&error("FATAL", code, message, detail, None))
        .await;
    let _ = conn.shutdown().await;
}
