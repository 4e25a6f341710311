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

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
/// Largest startup packet accepted (PostgreSQL's own limit).
const MAX_STARTUP: usize = 10_000;

/// What the client asked for.
pub enum Opening {
    Session {
        conn: Conn,
        params: BTreeMap<String, String>,
    },
    Cancel {
        pid: i32,
        secret: i32,
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
            CANCEL_REQUEST if body.len() >= 12 => {
                let pid = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                let secret = i32::from_be_bytes([body[8], body[9], body[10], body[11]]);
                return Ok(Opening::Cancel { pid, secret });
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
                if startup.protocol_number_minor != 0 || !unsupported.is_empty() {
                    // Speak 3.0, which every PostgreSQL since 7.4 and every driver understands.
                    conn_write(
                        &mut conn,
                        &encode(&NegotiateProtocolVersion::new(0, unsupported)),
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
    /// The client went away (psql does this when it first learns a password is needed).
    Gone(Early),
}

/// Authenticate `user` at the gateway.
pub async fn authenticate<B: PgBroker>(
    broker: &B,
    conn: &mut Conn,
    user: &str,
    settings: &PgSettings,
) -> AuthResult {
    let known = broker.pg_user(user);
    let tls = conn.is_tls();
    let scram = match &known {
        Some(u) if u.scram.is_some() => u.scram.clone(),
        Some(u) if u.has_password && tls => None,
        Some(u) if u.has_password => {
            let msg = format!("wardengate: user \"{user}\" can log in to PostgreSQL targets only over TLS (no SCRAM verifier is configured, and a cleartext password is accepted only inside TLS)");
            fatal(conn, "28000", &msg, Some("connect with sslmode=require, or ask an administrator to add users.scram_sha_256 (`wardengate hash-password` prints it)")).await;
            return AuthResult::Refused("tls_required", msg);
        }
        Some(_) => {
            let msg =
                format!("wardengate: user \"{user}\" has no password; PostgreSQL targets need one");
            fatal(conn, "28000", &msg, None).await;
            return AuthResult::Refused("no_password", msg);
        }
        None => Some(Verifier::mock(user)),
    };
    let method = match (&scram, tls) {
        (Some(_), false) => "scram-sha-256",
        (Some(_), true) => "scram-sha-256 (tls)",
        (None, _) => "password (tls)",
    };
    let ok = match scram {
        Some(v) => match scram_exchange(conn, v).await {
            Ok(ok) => ok,
            Err(e) => return AuthResult::Gone(e),
        },
        None => {
            if let Err(e) = conn_write(conn, &encode(&Authentication::CleartextPassword)).await {
                return AuthResult::Gone(e);
            }
            let body = match read_password_message(conn).await {
                Ok(b) => b,
                Err(e) => return AuthResult::Gone(e),
            };
            match Rd(&body).cstr() {
                Some(p) => broker.verify_password(user, &p).await,
                None => false,
            }
        }
    };
    if ok && known.is_some() {
        return AuthResult::Ok(method);
    }
    tokio::time::sleep(settings.auth_rejection_time).await;
    let msg = format!("password authentication failed for user \"{user}\"");
    fatal(conn, "28P01", &msg, None).await;
    AuthResult::Refused(
        if known.is_some() {
            "bad_password"
        } else {
            "unknown_user"
        },
        msg,
    )
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
