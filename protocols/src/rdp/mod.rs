//! RDP: the gateway terminates the client's connection up to the end of CredSSP (NLA), so the
//! person authenticates to the gateway and never learns the target account's password; it opens
//! the target with the vault's credentials (CredSSP as the client), then relays the two plaintext
//! TLS streams.
//!
//! The target is chosen by the NLA user name `USER:TARGET[:ACCOUNT]` (`alice:win-dc01.prod`).
//! Both legs select plain HYBRID (CredSSP without the early authorization result), so the
//! `serverSelectedProtocol` the client writes in its MCS Connect Initial is what the target
//! selected too, and the stream needs no rewriting.

pub mod banner;
pub mod farewell;
pub mod input;
pub mod nego;
pub mod offer;
pub mod refuse;
pub mod relay;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironrdp_pdu::nego::{FailureCode, SecurityProtocol};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use crate::error::TargetError;
use crate::listener::PreAuth;
use crate::session::MAX_LOGIN;
use crate::session::{Broker, ClientInfo, Login, Outcome, Plan};

/// How the RDP front behaves.
#[derive(Clone)]
pub struct RdpSettings {
    /// TLS towards clients.
    pub tls: tokio_rustls::TlsAcceptor,
    /// The public key of the certificate in `tls` (what CredSSP binds to).
    pub public_key: Vec<u8>,
    /// Constant delay before an authentication failure is reported.
    pub auth_rejection_time: Duration,
    /// How long the target may take to connect and authenticate.
    pub connect_timeout: Duration,
    /// How long a client may take from connecting to being authenticated.
    pub auth_timeout: Duration,
}

/// A Windows (RDP) target account, ready to connect.
pub struct RdpTarget {
    pub name: String,
    /// `host:port`
    pub address: String,
    /// `user`, `DOMAIN\user` or `user@domain`.
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RdpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdpTarget")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The example in every "which target?" error.
pub const LOGIN_HINT: &str =
    "log in as USER:TARGET or USER:TARGET:ACCOUNT, e.g. xfreerdp /u:alice:win-dc01.prod";

/// Serve one client connection to its end.
pub async fn serve_connection<B: Broker<Plan<RdpTarget>>>(
    broker: Arc<B>,
    settings: Arc<RdpSettings>,
    socket: TcpStream,
    peer: SocketAddr,
    mut slot: PreAuth,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    let opening = tokio::select! {
        r = slot.within(open(&*broker, &settings, socket, peer)) => match r {
            Some(r) => r,
            None => Err(format!("not authenticated (NLA) within {:?}", slot.timeout())),
        },
        _ = shutdown.cancelled() => return,
    };
    slot.authenticated();
    let (client_tls, login, request) = match opening {
        Ok(o) => o,
        Err(e) => {
            info!(%peer, "RDP connection ended before authentication: {e}");
            return;
        }
    };
    let client = ClientInfo {
        addr: peer,
        version: "rdp".into(),
    };
    let plan = match broker.admit(&login, "nla", &client).await {
        Ok(p) => p,
        Err(r) => {
            // RDP carries no text: the reason is in the audit log (written by admission), and
            // the client is told "insufficient privileges" in RDP's own terms.
            info!(%peer, "RDP session refused: {}", r.message);
            let mut framed = ironrdp_tokio::TokioFramed::new(client_tls);
            let told =
                tokio::time::timeout(settings.auth_timeout, refuse::refuse(&mut framed, &request))
                    .await
                    .unwrap_or_else(|_| Err("the client did not go on with the connection".into()));
            match told {
                Ok(()) => {
                    let (mut tls, _) = framed.into_inner();
                    let _ = tls.shutdown().await;
                }
                Err(e) => info!(%peer, "the refused client could not be told why: {e}"),
            }
            return;
        }
    };
    let sid = plan.link.shared.id.clone();
    let span = tracing::info_span!("session", id = %sid, protocol = "rdp", actor = %login.user, target = %plan.target.name);
    run_session(broker, settings, client_tls, plan, shutdown)
        .instrument(span)
        .await;
}

type ClientTls = tokio_rustls::server::TlsStream<TcpStream>;

/// X.224 negotiation, TLS and NLA with the client; the authenticated login.
async fn open<B: Broker<Plan<RdpTarget>>>(
    broker: &B,
    settings: &RdpSettings,
    mut socket: TcpStream,
    peer: SocketAddr,
) -> Result<(ClientTls, Login, Vec<u8>), String> {
    let frame = nego::read_tpkt(&mut socket).await?;
    let req = nego::parse_request(&frame)?;
    let client = ClientInfo {
        addr: peer,
        version: "rdp".into(),
    };
    if !req.protocol.contains(SecurityProtocol::HYBRID) {
        let msg = "the client did not offer network level authentication (NLA/CredSSP), which the gateway requires";
        broker.refused(
            nego::cookie(&req).unwrap_or("?"),
            &client,
            "nla_required",
            msg,
        );
        let _ = socket
            .write_all(&nego::failure(FailureCode::HYBRID_REQUIRED_BY_SERVER)?)
            .await;
        return Err(msg.into());
    }
    socket
        .write_all(&nego::confirm(SecurityProtocol::HYBRID)?)
        .await
        .map_err(|e| format!("cannot answer the X.224 request: {e}"))?;
    let mut tls = settings
        .tls
        .accept(socket)
        .await
        .map_err(|e| format!("TLS with the client failed: {e}"))?;
    let mut name = String::new();
    let mut throttled = false;
    // The user whose attempt is in flight (allowed by the throttle, not yet judged).
    let mut attempting: Option<String> = None;
    let result = nego::accept_nla(&mut tls, settings.public_key.clone(), |n| {
        name = n.chars().take(MAX_LOGIN).collect();
        let login = Login::split(n)?;
        if attempting.as_deref() != Some(login.user.as_str()) {
            // A throttled source fails NTLM exactly as a wrong password does.
            if throttled || !broker.attempt_allowed(&login.user, &client) {
                throttled = true;
                return None;
            }
            attempting = Some(login.user.clone());
        }
        broker.user(&login.user).and_then(|u| u.nt_hash)
    })
    .await;
    match result {
        Ok(authenticated) => {
            let login = Login::split(&authenticated)
                .ok_or_else(|| format!("NLA user name '{authenticated}' names no target"))?;
            broker.attempt_result(&login.user, &client, true);
            Ok((tls, login, frame))
        }
        Err(nego::NlaFailure::Denied(_)) if throttled => {
            if let Some(u) = &attempting {
                broker.attempt_abandoned(u, &client);
            }
            tokio::time::sleep(settings.auth_rejection_time).await;
            Err(format!(
                "NLA refused for \"{name}\": too many failures lately"
            ))
        }
        Err(nego::NlaFailure::Denied(e)) => {
            if let Some(u) = &attempting {
                broker.attempt_result(u, &client, false);
            }
            tokio::time::sleep(settings.auth_rejection_time).await;
            let (kind, msg) = match Login::split(&name) {
                None => (
                    "bad_login",
                    format!("user name \"{name}\" does not name a target; {LOGIN_HINT}"),
                ),
                Some(_) => (
                    "bad_password",
                    format!("NLA failed for \"{name}\": wrong password, or no such user with an NT hash ({e})"),
                ),
            };
            broker.refused(&name, &client, kind, &msg);
            Err(msg)
        }
        Err(nego::NlaFailure::Broken(e)) => {
            if let Some(u) = &attempting {
                broker.attempt_abandoned(u, &client);
            }
            Err(e)
        }
    }
}

async fn run_session<B: Broker<Plan<RdpTarget>>>(
    broker: Arc<B>,
    settings: Arc<RdpSettings>,
    client: ClientTls,
    plan: Plan<RdpTarget>,
    shutdown: CancellationToken,
) {
    let sid = plan.link.shared.id.clone();
    let target = tokio::select! {
        r = tokio::time::timeout(settings.connect_timeout, connect(&plan.target)) => match r {
            Ok(r) => r,
            Err(_) => Err(TargetError::Failed(format!("target {} did not complete NLA within {}s", plan.target.address, settings.connect_timeout.as_secs()))),
        },
        _ = shutdown.cancelled() => Err(TargetError::Failed("wardengate is shutting down".into())),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            info!("RDP target failed: {e}");
            broker.ended(&sid, Outcome::TargetFailed(e));
            return;
        }
    };
    broker.opened(&sid);
    if let Some(tap) = &plan.link.tap {
        tap.marker(
            "startup",
            format!("protocol=rdp account={} security=nla", plan.target.username),
        )
        .await;
    }
    let notify_broker = broker.clone();
    let notify_sid = sid.clone();
    let policy = plan.admitted.policy().to_string();
    let outcome = relay::run(
        plan.link,
        plan.admitted,
        client,
        target,
        shutdown,
        move |kind, text| {
            notify_broker.notice(
                &notify_sid,
                kind,
                serde_json::json!({"policy": policy, "message": text}),
            );
        },
    )
    .await;
    info!(reason = outcome.reason(), ?outcome, "rdp session ended");
    broker.ended(&sid, outcome);
}

type TargetTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Connect the target: X.224 with the account as the cookie, TLS, CredSSP with the vault's
/// credentials.
async fn connect(target: &RdpTarget) -> Result<TargetTls, TargetError> {
    let address = target.address.as_str();
    let mut tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect to RDP target {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tcp.write_all(&nego::request(&target.username)?)
        .await
        .map_err(|e| format!("cannot write to RDP target {address}: {e}"))?;
    let frame = nego::read_tpkt(&mut tcp)
        .await
        .map_err(|e| format!("RDP target {address}: {e}"))?;
    let selected = nego::parse_confirm(&frame).map_err(|e| format!("{address}: {e}"))?;
    if selected != SecurityProtocol::HYBRID {
        return Err(TargetError::Failed(format!(
            "RDP target {address} selected {selected:?} instead of NLA (HYBRID)"
        )));
    }
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::NoVerify::ring()))
        .with_no_client_auth();
    let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
    let host = host.trim_matches(['[', ']']).to_string();
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("'{host}' is not a valid TLS server name: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS with RDP target {address} failed: {e}"))?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| format!("RDP target {address} sent no TLS certificate"))?;
    let key = nego::public_key(cert.as_ref())?;
    nego::connect_nla(&mut tls, key, &host, &target.username, &target.password)
        .await
        .map_err(|e| match e {
            TargetError::SecretRejected {
                account, detail, ..
            } => TargetError::SecretRejected {
                target: target.name.clone(),
                account,
                detail,
            },
            other => TargetError::Failed(format!("RDP target {address}: {other}")),
        })?;
    Ok(tls)
}
