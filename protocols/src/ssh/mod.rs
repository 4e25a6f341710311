//! The SSH gateway: an SSH server for users (russh server, [`front`]), an SSH client towards the
//! target (russh client, [`back`]) and the channel relay between them ([`relay`]).
//!
//! Users pick the target in the SSH username: `alice:web-01.prod`, or `alice:web-01.prod:deploy`
//! when the target has several accounts. The gateway authenticates `alice` (public key, password, or
//! keyboard-interactive password), asks the [`SshBroker`] for admission, and opens the target leg
//! with the account's secret from the vault; the user never sees that secret.
//!
//! Each client connection is one task ([`serve_connection`]) that supervises the two russh
//! sessions and the operator's control channel; each relayed channel has one task per direction.

mod auth;
pub use auth::ACCESS_DENIED;
mod back;
mod brake;
mod channels;
mod front;
pub mod kexinit;
mod relay;
mod resume;
mod supervise;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};
use russh::server;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

pub use crate::listener::PreAuth;
use crate::session::{Broker, Plan};
pub use crate::session::{ClientInfo, Login};
pub use back::TargetLeg;
pub use resume::ResumeTicket;

/// Where the SSH front listens and how it behaves.
#[derive(Debug, Clone)]
pub struct SshSettings {
    pub host_keys: Vec<PrivateKey>,
    /// Constant delay before an authentication rejection (russh's `auth_rejection_time`).
    pub auth_rejection_time: Duration,
    /// How long to wait for the target leg before giving up.
    pub connect_timeout: Duration,
    /// Server identification string shown to clients.
    pub server_id: String,
    /// Ciphers offered on both legs, in preference order.
    pub ciphers: Vec<String>,
}

/// A target account's secret, as the vault hands it over for one connection.
#[derive(Clone)]
pub enum Credential {
    Password(String),
    PrivateKey(Arc<PrivateKey>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Credential::Password(<redacted>)"),
            Credential::PrivateKey(_) => f.write_str("Credential::PrivateKey(<redacted>)"),
        }
    }
}

/// An SSH target account, ready to connect.
#[derive(Debug)]
pub struct SshTarget {
    pub name: String,
    /// `host:port`
    pub address: String,
    pub username: String,
    pub credential: Credential,
}

/// What admission decided for an authenticated user.
#[derive(Debug)]
pub enum Admission {
    /// A new session: open a target leg.
    New(Plan<SshTarget>),
    /// Re-attach a paused session of the same actor and target (`reconnect.mode = "resume"`).
    Resume(ResumeTicket),
}

impl Login {
    /// The SSH login: `user:target[:account]`, or `user#target[#account]` — the same with `#`,
    /// for `scp`, `sftp` and `rsync`, which read the first `:` as the host:path separator.
    pub fn parse(s: &str) -> Result<Login, String> {
        Login::split(s).ok_or_else(|| {
            format!(
                "wardengate: login '{s}' does not name a target; connect as USER:TARGET or \
                 USER:TARGET:ACCOUNT (USER#TARGET for scp, sftp and rsync), e.g. \
                 ssh alice:web-01.prod@gateway"
            )
        })
    }
}

/// What the SSH front needs of the gateway beyond [`Broker`]: host keys, pause and resume.
pub trait SshBroker: Broker<Admission> {
    /// Verify the target's host key (pin on first use); `Err` is the message shown to the user.
    fn check_host_key(
        &self,
        target: &str,
        address: &str,
        key: &PublicKey,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// The client dropped; the session waits in `paused` until `ticket` is claimed or the grace
    /// ends.
    fn paused(&self, session: &str, ticket: ResumeTicket);
    /// A paused session was re-attached by `client`.
    fn resumed(&self, session: &str, client: &ClientInfo);
}

/// The ciphers offered by default: AEAD only, AES-GCM. Every byte through the gateway is
/// decrypted and encrypted once per leg, so the cipher is the gateway's main CPU cost. The
/// client's preference decides what its leg uses (RFC 4253 §7.1), and OpenSSH lists
/// chacha20-poly1305 and the CTR ciphers before GCM: offered, they would be chosen. Measured
/// with `BENCH_ONLY=ciphers scripts/bench ssh` (BENCHMARKS.md): through the gateway, a stock
/// OpenSSH 9.2 client moved 74 MiB/s when CTR was on offer (it got aes128-ctr +
/// hmac-sha2-256-etm), 94-98 with AES-GCM, 80 with chacha20-poly1305. `ssh.ciphers` widens
/// the offer for clients without AES-GCM. The target leg (the gateway is the client there)
/// prefers this order and then anything else russh speaks.
pub const DEFAULT_CIPHERS: &[&str] = &["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"];

/// The cipher names russh implements, for validating configuration.
pub const SUPPORTED_CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

/// russh's algorithm preferences with `ciphers` (names from [`SUPPORTED_CIPHERS`]).
pub fn preferred(ciphers: &[String]) -> russh::Preferred {
    let names: Vec<russh::cipher::Name> = ciphers
        .iter()
        .filter_map(|c| {
            let all = [
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_GCM,
                russh::cipher::AES_128_GCM,
                russh::cipher::AES_256_CTR,
                russh::cipher::AES_192_CTR,
                russh::cipher::AES_128_CTR,
            ];
            all.into_iter().find(|n| n.as_ref() == c.as_str())
        })
        .collect();
    russh::Preferred {
        cipher: std::borrow::Cow::Owned(names),
        ..Default::default()
    }
}

pub fn server_config(settings: &SshSettings) -> server::Config {
    server::Config {
        preferred: preferred(&settings.ciphers),
        server_id: russh::SshId::Standard(std::borrow::Cow::Owned(settings.server_id.clone())),
        keys: settings.host_keys.clone(),
        auth_rejection_time: settings.auth_rejection_time,
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Idle is the policy's business, measured from meaningful input, not russh's.
        inactivity_timeout: None,
        keepalive_interval: None,
        nodelay: true,
        // Room for bursts so a relay pump rarely makes a session loop wait (see relay.rs).
        channel_buffer_size: 256,
        event_buffer_size: 64,
        max_auth_attempts: 20,
        ..Default::default()
    }
}

/// Serve one client connection to its end: authentication, admission, relay, terminate, shutdown.
pub async fn serve_connection<B: SshBroker>(
    broker: Arc<B>,
    config: Arc<server::Config>,
    settings: Arc<SshSettings>,
    socket: TcpStream,
    peer: SocketAddr,
    mut slot: PreAuth,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    // russh runs the connection in a task of its own: the deadline shuts the socket itself.
    let (socket, kill) = match crate::listener::with_kill_switch(socket) {
        Ok(s) => s,
        Err(e) => {
            info!(%peer, "cannot take the connection: {e}");
            return;
        }
    };
    let (socket, client_offer) = kexinit::Sniffer::new(socket);
    let (started_tx, mut started_rx) = tokio::sync::oneshot::channel();
    let (deadline_tx, mut deadline) = tokio::sync::watch::channel(slot.deadline());
    // A step-up wait watches the socket to notice a client that gave up (Ctrl-C).
    let peer_socket = kill.try_clone().ok();
    let front = front::Front::new(
        broker.clone(),
        settings.clone(),
        peer,
        started_tx,
        client_offer,
        deadline_tx,
        peer_socket,
    );
    let running = match slot.within(server::run_stream(config, socket, front)).await {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            info!(%peer, "ssh handshake failed: {e}");
            return;
        }
        None => {
            info!(%peer, "no SSH identification within {:?}; closed", slot.timeout());
            return;
        }
    };
    let handle = running.handle();
    let mut running: resume::Running = Box::pin(running);

    // Until a session is admitted there is nothing to supervise but the handshake itself.
    let started: front::Started = tokio::select! {
        r = &mut running => {
            // Admitted, but the client left before this task saw it (a target that fails at
            // once makes the client give up quickly): the session still has to end properly,
            // or it would stay open and keep its concurrency slot.
            let got = started_rx.try_recv();
            tracing::debug!(%peer, ok = got.is_ok(), "client connection ended before supervision");
            if let Ok(front::AuthOutcome::Admitted(s)) = got {
                supervise::end_unsupervised(broker, s, r).await;
            } else if let Err(e) = r {
                info!(%peer, "connection ended before admission: {e}");
            }
            return;
        }
        s = &mut started_rx => {
            slot.authenticated();
            // Past authentication the second handle must go: while it is open, the socket
            // would stay open after russh has closed its own.
            drop(kill);
            match s {
            Ok(front::AuthOutcome::Admitted(s)) => s,
            Ok(front::AuthOutcome::Resumed(r)) => {
                // The paused session's supervisor takes this connection over.
                let conn = resume::ClientConn { handle, running, open_channels: r.open_channels, ending: r.ending, client: r.client };
                if let Err(back) = r.attach.send(conn).await {
                    let conn = back.0;
                    relay::say_and_disconnect(&conn.handle, &conn.open_channels, "wardengate: the paused session ended before it could be resumed; connect again for a new session").await;
                }
                return;
            }
            Ok(front::AuthOutcome::Denied(msg)) => {
                // Channels opened meanwhile carry the message; a client that opens none
                // (`ssh -N`) gets it in the disconnect.
                tokio::select! {
                    _ = &mut running => {}
                    _ = tokio::time::sleep(Duration::from_secs(3)) => {
                        let _ = handle.disconnect(russh::Disconnect::ByApplication, msg, String::new()).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), &mut running).await;
                    }
                }
                return;
            }
            Err(_) => { let _ = (&mut running).await; return; }
        }}
        _ = until(&mut deadline) => {
            // Silent after the banner, stuck in key exchange, or never finishing authentication:
            // the whole pre-authentication phase has one deadline.
            info!(%peer, "not authenticated within {:?}; closed", slot.timeout());
            let _ = handle.disconnect(russh::Disconnect::ByApplication, "wardengate: authentication timeout".into(), String::new()).await;
            if tokio::time::timeout(Duration::from_secs(1), &mut running).await.is_err() {
                // Stuck before keys were exchanged, the disconnect cannot even be sent.
                let _ = kill.shutdown(std::net::Shutdown::Both);
            }
            return;
        }
        _ = shutdown.cancelled() => {
            let _ = handle.disconnect(russh::Disconnect::ByApplication, "wardengate is shutting down".into(), String::new()).await;
            return;
        }
    };
    let sid = started.link.shared.id.clone();
    let span = tracing::info_span!("session", id = %sid, protocol = "ssh", actor = %started.actor, target = %started.target);
    let conn = resume::ClientConn {
        handle,
        running,
        open_channels: started.open_channels.clone(),
        ending: started.ending.clone(),
        client: started.client.clone(),
    };
    supervise::supervise(broker, conn, started, shutdown)
        .instrument(span)
        .await;
}

/// Sleep until the deadline `rx` holds, following it when it moves (a step-up waiting for a
/// security key).
async fn until(rx: &mut tokio::sync::watch::Receiver<tokio::time::Instant>) {
    loop {
        let at = *rx.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep_until(at) => return,
            changed = rx.changed() => if changed.is_err() {
                tokio::time::sleep_until(at).await;
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Login;

    #[test]
    fn login_forms() {
        let l = Login::parse("alice:web-01.prod").expect("plain");
        assert_eq!(
            (l.user.as_str(), l.target.as_str(), l.account),
            ("alice", "web-01.prod", None)
        );
        let l = Login::parse("alice#web-01.prod#deploy").expect("hash form");
        assert_eq!(l.account.as_deref(), Some("deploy"));
        let l = Login::parse("alice:web-01.prod:deploy").expect("with account");
        assert_eq!(l.target, "web-01.prod");
        for bad in ["alice", "alice:", ":web", "alice:web:", ""] {
            let e = Login::parse(bad).expect_err(bad);
            assert!(e.contains("USER:TARGET"), "{e}");
        }
    }
}
