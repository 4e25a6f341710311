//! The target leg: connect (TLS when the target asks for it, verified against its CA when
//! configured), start up as the account with the vault's password (SCRAM-SHA-256, MD5 or
//! cleartext, as the target demands), and collect what the client must see before its first
//! query: ParameterStatus, BackendKeyData, ReadyForQuery.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message as Backend;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::wire::Conn;
use super::{PgTarget, Route, TargetTls};
use crate::error::TargetError;

/// A target session ready for the client's first query.
pub struct Ready {
    pub conn: Conn,
    /// ParameterStatus and NoticeResponse frames, as the target sent them.
    pub preamble: BytesMut,
    pub pid: i32,
    pub secret: i32,
    /// The ReadyForQuery frame.
    pub ready: Bytes,
}

/// Startup parameters the client chose that are passed to the target (never `user`, which is
/// the account's, nor `replication`, which is refused earlier).
fn passed(key: &str) -> bool {
    !matches!(key, "user" | "database" | "replication") && !key.starts_with("_pq_.")
}

async fn tls_connect(tcp: TcpStream, target: &Route) -> Result<Conn, String> {
    let mut tcp = tcp;
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req)
        .await
        .map_err(|e| format!("cannot write to target {}: {e}", target.address))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(|e| {
        format!(
            "target {} closed the connection during TLS negotiation: {e}",
            target.address
        )
    })?;
    if answer[0] != b'S' {
        return Err(format!(
            "target {} does not accept TLS, but the target is configured with tls = \"{}\"",
            target.address,
            target.tls.name()
        ));
    }
    let config = match &target.tls {
        TargetTls::VerifyFull(roots) => rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        _ => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::NoVerify::ring()))
            .with_no_client_auth(),
    };
    let host = target
        .address
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&target.address);
    let name = target
        .tls_server_name
        .clone()
        .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| format!("'{name}' is not a valid TLS server name: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS with target {} failed: {e}", target.address))?;
    Ok(Conn::TlsClient(Box::new(tls)))
}

/// Read one whole backend frame (tag, length, body) into `buf`'s tail and parse it.
async fn next(
    conn: &mut Conn,
    buf: &mut BytesMut,
    address: &str,
) -> Result<(Bytes, Backend), String> {
    let mut head = [0u8; 5];
    conn.read_exact(&mut head)
        .await
        .map_err(|e| format!("target {address} closed the connection during startup: {e}"))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=1 << 20).contains(&len) {
        return Err(format!(
            "target {address} sent an invalid startup message (length {len})"
        ));
    }
    buf.clear();
    buf.extend_from_slice(&head);
    buf.resize(len + 1, 0);
    conn.read_exact(&mut buf[5..])
        .await
        .map_err(|e| format!("target {address} closed the connection during startup: {e}"))?;
    let frame = buf.split().freeze();
    let msg = Backend::parse(&mut BytesMut::from(&frame[..]))
        .map_err(|e| format!("target {address} sent an unreadable message: {e}"))?
        .ok_or_else(|| format!("target {address} sent a truncated message"))?;
    Ok((frame, msg))
}

/// The SQLSTATE and message of an ErrorResponse.
fn error_fields(
    fields: &postgres_protocol::message::backend::ErrorResponseBody,
) -> (String, String) {
    use fallible_iterator::FallibleIterator;
    let mut f = fields.fields();
    let (mut code, mut msg) = (String::new(), String::new());
    while let Ok(Some(x)) = f.next() {
        match x.type_() {
            b'C' => code = String::from_utf8_lossy(x.value_bytes()).into_owned(),
            b'M' => msg = String::from_utf8_lossy(x.value_bytes()).into_owned(),
            _ => {}
        }
    }
    (code, msg)
}

/// Open the target leg for `target` with the client's startup `params`.
pub async fn connect(
    target: &PgTarget,
    params: &BTreeMap<String, String>,
    timeout: std::time::Duration,
) -> Result<Ready, TargetError> {
    tokio::time::timeout(timeout, connect_inner(target, params))
        .await
        .unwrap_or_else(|_| {
            Err(TargetError::Failed(format!(
                "target {} did not complete startup within {}s",
                target.address,
                timeout.as_secs()
            )))
        })
}

async fn connect_inner(
    target: &PgTarget,
    params: &BTreeMap<String, String>,
) -> Result<Ready, TargetError> {
    let address = target.address.as_str();
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect to target {} ({address}): {e}", target.name))?;
    let _ = tcp.set_nodelay(true);
    let mut conn = match target.tls {
        TargetTls::Disable => Conn::Plain(tcp),
        _ => tls_connect(tcp, &target.route()).await?,
    };
    let database = target
        .database
        .clone()
        .or_else(|| params.get("database").cloned())
        .unwrap_or_else(|| target.username.clone());
    let mut startup: Vec<(&str, &str)> = vec![("user", &target.username), ("database", &database)];
    startup.extend(
        params
            .iter()
            .filter(|(k, _)| passed(k))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut out = BytesMut::new();
    frontend::startup_message(startup, &mut out)
        .map_err(|e| format!("cannot encode the startup message: {e}"))?;
    super::wire::send(&mut conn, &[&out])
        .await
        .map_err(|e| format!("cannot write to target {address}: {e}"))?;

    let password = target.password.as_bytes();
    let allowed = |method: &str| -> Result<(), String> {
        if target.auth_methods.iter().any(|m| m == method) {
            return Ok(());
        }
        Err(format!(
            "target {} asked to authenticate {} with {method}, which this target does not allow \
             (auth_methods = {:?}); the password was not sent. If the target really uses {method}, \
             add it to the target's auth_methods (and use tls = \"verify-full\")",
            target.name, target.username, target.auth_methods
        ))
    };
    let mut asked = false;
    let mut scram: Option<ScramSha256> = None;
    let mut scram_verified = false;
    let mut buf = BytesMut::with_capacity(1024);
    let mut preamble = BytesMut::new();
    let (mut pid, mut secret) = (0, 0);
    loop {
        let (frame, msg) = next(&mut conn, &mut buf, address).await?;
        out.clear();
        match msg {
            Backend::AuthenticationOk => {
                // A target that skips authentication, or stops SCRAM before proving it knows
                // the password, is not trusted with the session.
                if !asked {
                    allowed("trust")?;
                }
                if scram.is_some() && !scram_verified {
                    return Err(TargetError::Failed(format!(
                        "target {address} ended SCRAM authentication without proving its identity"
                    )));
                }
                continue;
            }
            Backend::AuthenticationCleartextPassword => {
                allowed("password")?;
                asked = true;
                if !conn.is_tls() {
                    tracing::warn!(target = %target.name, "the target asks for a cleartext password over an unencrypted connection");
                }
                frontend::password_message(password, &mut out).map_err(|e| e.to_string())?;
            }
            Backend::AuthenticationMd5Password(body) => {
                allowed("md5")?;
                asked = true;
                let hash = md5_hash(target.username.as_bytes(), password, body.salt());
                frontend::password_message(hash.as_bytes(), &mut out).map_err(|e| e.to_string())?;
            }
            Backend::AuthenticationSasl(body) => {
                allowed("scram-sha-256")?;
                asked = true;
                use fallible_iterator::FallibleIterator;
                let mut mechs = body.mechanisms();
                let mut found = false;
                while let Ok(Some(m)) = mechs.next() {
                    found |= m == "SCRAM-SHA-256";
                }
                if !found {
                    return Err(TargetError::Failed(format!("target {address} offers no SASL mechanism wardengate supports (SCRAM-SHA-256)")));
                }
                let s = ScramSha256::new(password, ChannelBinding::unsupported());
                frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                    .map_err(|e| e.to_string())?;
                scram = Some(s);
            }
            Backend::AuthenticationSaslContinue(body) => {
                let s = scram
                    .as_mut()
                    .ok_or("target sent SASLContinue without SASL")?;
                s.update(body.data())
                    .map_err(|e| format!("SCRAM with target {address}: {e}"))?;
                frontend::sasl_response(s.message(), &mut out).map_err(|e| e.to_string())?;
            }
            Backend::AuthenticationSaslFinal(body) => {
                let s = scram.as_mut().ok_or("target sent SASLFinal without SASL")?;
                s.finish(body.data()).map_err(|e| {
                    format!("target {address} failed SCRAM server verification: {e}")
                })?;
                scram_verified = true;
                continue;
            }
            Backend::ErrorResponse(body) => {
                let (code, message) = error_fields(&body);
                // 28P01 (invalid_password) after the gateway sent the vault's secret: the
                // account's password is no longer the one in the vault.
                if code == "28P01" {
                    return Err(TargetError::SecretRejected {
                        target: target.name.clone(),
                        account: target.username.clone(),
                        detail: format!("{message} (SQLSTATE {code})"),
                    });
                }
                return Err(TargetError::Refused {
                    target: target.name.clone(),
                    account: target.username.clone(),
                    message: format!("{message} (SQLSTATE {code})"),
                    code: (!code.is_empty()).then_some(code),
                });
            }
            Backend::ParameterStatus(_) | Backend::NoticeResponse(_) => {
                preamble.extend_from_slice(&frame);
                continue;
            }
            Backend::BackendKeyData(k) => {
                (pid, secret) = (k.process_id(), k.secret_key());
                continue;
            }
            Backend::ReadyForQuery(_) => {
                return Ok(Ready {
                    conn,
                    preamble,
                    pid,
                    secret,
                    ready: frame,
                });
            }
            _ => {
                return Err(TargetError::Failed(format!(
                    "target {address} sent an unexpected message (type '{}') during startup",
                    frame[0].escape_ascii()
                )));
            }
        }
        super::wire::send(&mut conn, &[&out])
            .await
            .map_err(|e| format!("cannot write to target {address}: {e}"))?;
    }
}

/// Forward a CancelRequest to the target with the real key (a connection of its own, as the
/// protocol requires; the target answers by closing it).
/// Over TLS when the session's target leg uses it, so the real key is never on the wire in
/// clear.
pub async fn cancel(route: &Route, pid: i32, secret: i32) -> Result<(), String> {
    let address = route.address.as_str();
    let five = std::time::Duration::from_secs(5);
    let send = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| format!("cannot connect to {address} to cancel: {e}"))?;
        let mut conn = match route.tls {
            TargetTls::Disable => Conn::Plain(tcp),
            _ => tls_connect(tcp, route).await?,
        };
        let mut out = BytesMut::new();
        frontend::cancel_request(pid, secret, &mut out);
        super::wire::send(&mut conn, &[&out])
            .await
            .map_err(|e| format!("cannot send the cancel request to {address}: {e}"))?;
        let mut sink = [0u8; 1];
        let _ = tokio::time::timeout(five, conn.read(&mut sink)).await;
        Ok(())
    };
    tokio::time::timeout(five * 2, send)
        .await
        .map_err(|_| format!("cancel request to {address} timed out"))?
}
