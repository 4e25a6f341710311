//! The PostgreSQL gateway: a PostgreSQL server for users ([`front`]), a PostgreSQL client towards
//! the target ([`back`]) and a frame relay between them ([`relay`]) whose decoded copies feed the
//! query log ([`querylog`]).
//!
//! Users pick the target in the user name: `alice#billing-ro.prod`, or
//! `alice#billing-ro.prod#reporting` for a target with several accounts (`:` works as well as
//! `#`). The gateway authenticates `alice` with her gateway credential (SCRAM-SHA-256; a
//! cleartext password only inside TLS), asks the [`PgBroker`] for admission, and starts up the
//! target session as the account with the vault's password; the user never sees it. From then on
//! frames are relayed as they are, so the extended protocol, COPY, NOTIFY, cancel and transaction
//! status all work as if the client were connected directly.

mod back;
mod front;
pub mod querylog;
mod relay;
pub mod scram;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgwire::messages::startup::{Authentication, BackendKeyData, SecretKey};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

pub use querylog::Capture;
pub use scram::Verifier;

use crate::error::TargetError;
use crate::listener::PreAuth;
use crate::session::{Broker, ClientInfo, Login, Outcome, Plan};
use front::{AuthResult, Opening};
use wire::encode;

/// How the PostgreSQL front behaves.
#[derive(Clone)]
pub struct PgSettings {
    /// TLS for clients (SSLRequest and direct TLS); `None` answers SSLRequest with `N`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Refuse clients that do not use TLS.
    pub require_tls: bool,
    /// Constant delay before an authentication failure is reported.
    pub auth_rejection_time: Duration,
    /// How long the target may take to connect and start up.
    pub connect_timeout: Duration,
    /// How long a client may take from connecting to being authenticated.
    pub auth_timeout: Duration,
    /// What the query log keeps of statements and parameters.
    pub capture: Capture,
}

/// How the target leg uses TLS.
#[derive(Debug, Clone)]
pub enum TargetTls {
    Disable,
    /// Encrypted, certificate not checked (libpq's `sslmode=require`).
    Require,
    /// Encrypted, certificate checked against these roots and the host name.
    VerifyFull(Arc<rustls::RootCertStore>),
}

impl TargetTls {
    pub fn name(&self) -> &'static str {
        match self {
            TargetTls::Disable => "disable",
            TargetTls::Require => "require",
            TargetTls::VerifyFull(_) => "verify-full",
        }
    }
}

/// A PostgreSQL target account, ready to connect.
pub struct PgTarget {
    pub name: String,
    /// `host:port`
    pub address: String,
    pub username: String,
    pub password: String,
    /// The database to use whatever the client asked for.
    pub database: Option<String>,
    pub tls: TargetTls,
    pub tls_server_name: Option<String>,
    /// How the target may authenticate the account: of `scram-sha-256`, `md5`, `password`,
    /// `trust`. Anything else the target asks for is refused before the secret leaves the
    /// gateway (libpq's `require_auth`).
    pub auth_methods: Vec<String>,
}

/// How to reach a target (for the session and its cancel requests), without its secret.
#[derive(Debug, Clone)]
pub struct Route {
    pub address: String,
    pub tls: TargetTls,
    pub tls_server_name: Option<String>,
}

impl PgTarget {
    pub fn route(&self) -> Route {
        Route {
            address: self.address.clone(),
            tls: self.tls.clone(),
            tls_server_name: self.tls_server_name.clone(),
        }
    }
}

/// The target authentication methods the gateway knows.
pub const AUTH_METHODS: &[&str] = &["scram-sha-256", "md5", "password", "trust"];

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .field("tls", &self.tls.name())
            .field("auth_methods", &self.auth_methods)
            .finish()
    }
}

/// The SQLSTATE a refusal of `kind` is sent with: 53300 (too_many_connections) for a
/// concurrency limit, 58000 (system_error) for what the gateway could not do, 28000
/// (invalid_authorization_specification) for the rest.
pub fn sqlstate(kind: &str) -> &'static str {
    match kind {
        "concurrency" => "53300",
        "credential_unavailable" | "recording_unavailable" | "internal" => "58000",
        _ => "28000",
    }
}

/// What the PostgreSQL front needs of the gateway beyond [`Broker`]: cancel requests.
pub trait PgBroker: Broker<Plan<PgTarget>> {
    /// A CancelRequest arrived from `peer`: may it be looked up? `false` drops it (PostgreSQL
    /// answers no cancel request, so the client learns nothing): each one may guess a key.
    fn cancel_allowed(&self, peer: std::net::IpAddr) -> bool;
    /// A CancelRequest named no live session (counted and summarised, never one log line each).
    fn cancel_unknown(&self, peer: std::net::IpAddr);
}

/// Cancel keys handed to clients: the real backend PID with a secret of the gateway's own (4
/// bytes for protocol 3.0 clients, 32 for 3.2), mapped to the target and its real secret.
#[derive(Default)]
pub struct Cancels(Mutex<HashMap<(i32, Vec<u8>), CancelTarget>>);

/// Where a cancel key leads: (session id, the target, the backend's real secret).
type CancelTarget = (String, Arc<Route>, i32);

impl Cancels {
    fn insert(&self, pid: i32, secret: &[u8], session: &str, route: Arc<Route>, real: i32) {
        if let Ok(mut m) = self.0.lock() {
            m.insert((pid, secret.to_vec()), (session.to_string(), route, real));
        }
    }
    fn remove(&self, pid: i32, secret: &[u8]) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&(pid, secret.to_vec()));
        }
    }
    fn get(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        self.0.lock().ok()?.get(&(pid, secret.to_vec())).cloned()
    }
}

/// A new cancel secret of `len` random bytes.
fn random_secret(len: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; len];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

/// The example in every "which target?" error.
const LOGIN_HINT: &str = "connect as USER#TARGET or USER#TARGET#ACCOUNT, e.g. psql \"host=gateway user=alice#billing-ro.prod dbname=billing\"";

/// Serve one client connection to its end.
pub async fn serve_connection<B: PgBroker>(
    broker: Arc<B>,
    settings: Arc<PgSettings>,
    cancels: Arc<Cancels>,
    socket: TcpStream,
    peer: SocketAddr,
    mut slot: PreAuth,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    let opening = tokio::select! {
        o = slot.within(front::negotiate(socket, &settings)) => o.unwrap_or_else(|| Err(format!("no startup within {:?}", slot.timeout()))),
        _ = shutdown.cancelled() => return,
    };
    let (mut conn, params, minor) = match opening {
        Ok(Opening::Session {
            conn,
            params,
            minor,
        }) => (conn, params, minor),
        Ok(Opening::Cancel { pid, secret }) => {
            if !broker.cancel_allowed(peer.ip()) {
                return;
            }
            match cancels.get(pid, &secret) {
                Some((session, route, real)) => {
                    broker.notice(
                        &session,
                        "session.cancel_requested",
                        serde_json::json!({"client": peer.to_string()}),
                    );
                    if let Err(e) = back::cancel(&route, pid, real).await {
                        tracing::warn!(%session, "cannot forward a cancel request: {e}");
                    }
                }
                None => broker.cancel_unknown(peer.ip()),
            }
            return;
        }
        Err(e) => {
            info!(%peer, "postgres connection ended before startup: {e}");
            return;
        }
    };
    let Some(login_text) = params.get("user").cloned() else {
        let msg = format!("wardengate: no user name in the startup packet; {LOGIN_HINT}");
        front::refuse(&mut conn, "28000", &msg, None).await;
        return;
    };
    let client = ClientInfo {
        addr: peer,
        version: params.get("application_name").cloned().unwrap_or_default(),
    };
    if params
        .get("replication")
        .is_some_and(|r| !matches!(r.as_str(), "false" | "off" | "no" | "0"))
    {
        let msg = "wardengate: replication connections are not supported; connect for queries (without replication=...)";
        broker.refused(&login_text, &client, "replication", msg);
        front::refuse(&mut conn, "0A000", msg, None).await;
        return;
    }
    let Some(login) = Login::split(&login_text) else {
        let msg =
            format!("wardengate: user name \"{login_text}\" does not name a target; {LOGIN_HINT}");
        broker.refused(&login_text, &client, "bad_login", &msg);
        front::refuse(&mut conn, "28000", &msg, None).await;
        return;
    };
    let authenticated = slot
        .within(front::authenticate(
            &*broker,
            &mut conn,
            &login.user,
            &client,
            &settings,
        ))
        .await;
    let Some(authenticated) = authenticated else {
        // Stalled inside SCRAM (or never answering the password request).
        info!(%peer, "not authenticated within {:?}; closed", slot.timeout());
        front::refuse(
            &mut conn,
            "08006",
            "wardengate: authentication timeout",
            None,
        )
        .await;
        return;
    };
    slot.authenticated();
    let method = match authenticated {
        AuthResult::Ok(m) => m,
        AuthResult::Refused(kind, msg) => {
            broker.refused(&login_text, &client, kind, &msg);
            return;
        }
        AuthResult::Throttled => return,
        AuthResult::Gone(e) => {
            tracing::debug!(%peer, "client left during authentication: {e}");
            return;
        }
    };
    let plan = match broker.admit(&login, method, &client).await {
        Ok(p) => p,
        Err(d) => {
            // As a JSON object with sorted keys (a `Value`'s order), as clients have parsed it.
            let detail = d
                .limit
                .as_ref()
                .and_then(|l| serde_json::to_value(l).ok())
                .map(|v| v.to_string());
            front::refuse(&mut conn, sqlstate(d.kind), &d.message, detail.as_deref()).await;
            return;
        }
    };
    let sid = plan.link.shared.id.clone();
    let span = tracing::info_span!("session", id = %sid, protocol = "postgres", actor = %login.user, target = %plan.target.name);
    run_session(
        broker,
        settings,
        cancels,
        (conn, params, minor),
        plan,
        shutdown,
    )
    .instrument(span)
    .await;
}

async fn run_session<B: PgBroker>(
    broker: Arc<B>,
    settings: Arc<PgSettings>,
    cancels: Arc<Cancels>,
    (mut conn, params, minor): (wire::Conn, BTreeMap<String, String>, u16),
    plan: Plan<PgTarget>,
    shutdown: CancellationToken,
) {
    let sid = plan.link.shared.id.clone();
    plan.link
        .shared
        .set_client_version(params.get("application_name").cloned().unwrap_or_default());
    let ready = tokio::select! {
        r = back::connect(&plan.target, &params, settings.connect_timeout) => r,
        _ = shutdown.cancelled() => Err("wardengate is shutting down".into()),
    };
    let ready = match ready {
        Ok(r) => r,
        Err(e) => {
            // Drivers branch on the SQLSTATE: the target's own where it gave one (28P01 for a
            // secret it rejected, 3D000, 53300, 57P03 ...), 08001 where it could not be reached.
            let code = match &e {
                TargetError::SecretRejected { .. } => "28P01",
                TargetError::Refused { code: Some(c), .. } => c.as_str(),
                _ => "08001",
            };
            let msg = format!("wardengate: {e}");
            front::refuse(&mut conn, code, &msg, None).await;
            broker.ended(&sid, Outcome::TargetFailed(e));
            return;
        }
    };
    // Protocol 3.2 clients get a 32-byte key: 2^256 to guess instead of 2^32.
    let secret = random_secret(if minor >= 2 { 32 } else { 4 });
    let key = match <[u8; 4]>::try_from(secret.as_slice()) {
        Ok(four) => SecretKey::I32(i32::from_be_bytes(four)),
        Err(_) => SecretKey::Bytes(secret.clone().into()),
    };
    let mut hello = encode(&Authentication::Ok);
    hello.extend_from_slice(&ready.preamble);
    hello.extend_from_slice(&encode(&BackendKeyData::new(ready.pid, key)));
    hello.extend_from_slice(&ready.ready);
    if let Err(e) = wire::send(&mut conn, &[&hello]).await {
        broker.ended(
            &sid,
            Outcome::ClientDropped(format!("the client left during startup: {e}")),
        );
        return;
    }
    let route = Arc::new(plan.target.route());
    cancels.insert(ready.pid, &secret, &sid, route.clone(), ready.secret);
    broker.opened(&sid);
    let database = plan
        .target
        .database
        .clone()
        .or_else(|| params.get("database").cloned())
        .unwrap_or_else(|| plan.target.username.clone());
    if let Some(tap) = &plan.link.tap {
        tap.marker(
            "startup",
            format!(
                "database={database} account={} backend_pid={} client_tls={}",
                plan.target.username,
                ready.pid,
                conn.is_tls()
            ),
        )
        .await;
    }
    plan.link.shared.set_activity("idle");
    let log = querylog::QueryLog::new(plan.link.shared.clone(), settings.capture);
    let live = relay::Live {
        link: plan.link,
        admitted: plan.admitted,
        log: Arc::new(Mutex::new(log)),
        capture_bytes: settings.capture.max_bytes.max(1024) * 4,
        cancel_key: (route, ready.pid, ready.secret),
    };
    let notify_broker = broker.clone();
    let notify_sid = sid.clone();
    let policy = live.admitted.policy().to_string();
    let outcome = relay::run(live, conn, ready.conn, shutdown, move |kind, text| {
        notify_broker.notice(
            &notify_sid,
            kind,
            serde_json::json!({"policy": policy, "message": text}),
        );
    })
    .await;
    cancels.remove(ready.pid, &secret);
    info!(reason = outcome.reason(), "postgres session ended");
    broker.ended(&sid, outcome);
}
