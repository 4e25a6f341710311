//! The target leg: a russh client that connects to the target, verifies its host key through the
//! broker (pinned on first use), and authenticates with the secret from the vault.
//!
//! The leg is opened in the background as soon as a session is admitted, so the target handshake
//! overlaps with the client's own post-authentication round trips; channel opens wait on the
//! [`LegState`] watch. Replies to channel requests (`pty-req`, `exec`, ...) come back through
//! [`Back::channel_success`]/[`Back::channel_failure`] and are routed to the front handler that is
//! waiting for them, in request order (RFC 4254 §5.4 keeps replies ordered per channel).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use russh::ChannelId;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Credential, SshBroker};
use crate::error::TargetError;

/// Waiters for channel-request replies, per target channel, in request order.
pub(crate) type Pending = Arc<Mutex<HashMap<ChannelId, VecDeque<oneshot::Sender<bool>>>>>;

/// An authenticated connection to the target.
pub struct TargetLeg {
    pub(crate) handle: Handle<Back>,
    pub(crate) pending: Pending,
    /// Cancelled when the target connection ends for any reason.
    pub(crate) closed: CancellationToken,
    pub(crate) target: String,
    /// The target's `host:port`.
    pub(crate) address: String,
}

#[derive(Clone)]
pub(crate) enum LegState {
    Connecting,
    Ready(Arc<TargetLeg>),
    Failed(TargetError),
}

pub(crate) struct Back {
    check: Box<dyn HostKeyCheck>,
    pending: Pending,
    hostkey_error: Arc<Mutex<Option<String>>>,
    /// The session, told which cipher the target leg negotiated.
    shared: Arc<crate::session::SessionShared>,
    // Fires `closed` when russh drops the handler, i.e. when the client session task ends.
    _closed_on_drop: DropGuard,
}

/// Object-safe wrapper around [`SshBroker::check_host_key`] so [`Back`] need not be generic.
trait HostKeyCheck: Send + Sync {
    fn check<'a>(
        &'a self,
        key: &'a PublicKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
}

struct BrokerCheck<B> {
    broker: Arc<B>,
    target: String,
    address: String,
}

impl<B: SshBroker> HostKeyCheck for BrokerCheck<B> {
    fn check<'a>(
        &'a self,
        key: &'a PublicKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(self.broker.check_host_key(&self.target, &self.address, key))
    }
}

impl client::Handler for Back {
    type Error = russh::Error;

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        // The gateway sends; the client-to-server MAC is the one its packets carry.
        self.shared.set_target_crypto(super::kexinit::describe(
            names.cipher.as_ref(),
            Some(names.client_mac.as_ref()),
        ));
        Ok(())
    }

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => {
                PublicKey::from(cert.public_key().clone())
            }
        };
        match self.check.check(&key).await {
            Ok(()) => Ok(true),
            Err(msg) => {
                if let Ok(mut e) = self.hostkey_error.lock() {
                    *e = Some(msg);
                }
                Ok(false)
            }
        }
    }

    async fn channel_success(
        &mut self,
        channel: ChannelId,
        _: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, true);
        Ok(())
    }

    async fn channel_failure(
        &mut self,
        channel: ChannelId,
        _: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.reply(channel, false);
        Ok(())
    }
}

impl Back {
    fn reply(&self, channel: ChannelId, ok: bool) {
        let waiter = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(&channel).and_then(VecDeque::pop_front));
        if let Some(w) = waiter {
            let _ = w.send(ok);
        }
    }
}

/// What it takes to open one target leg.
pub(crate) struct LegSpec {
    pub session: String,
    pub target: String,
    pub address: String,
    pub username: String,
    pub credential: Credential,
    pub timeout: Duration,
    pub ciphers: Vec<String>,
    /// Where the negotiated cipher goes.
    pub shared: Arc<crate::session::SessionShared>,
}

/// Start opening the target leg; the returned watch moves to `Ready` or `Failed`.
pub(crate) fn spawn_connect<B: SshBroker>(
    broker: Arc<B>,
    spec: LegSpec,
) -> watch::Receiver<LegState> {
    let (tx, rx) = watch::channel(LegState::Connecting);
    tokio::spawn(async move {
        let LegSpec {
            session,
            target,
            address,
            username,
            credential,
            timeout,
            ciphers,
            shared,
        } = spec;
        let state = match tokio::time::timeout(
            timeout,
            connect(
                broker.clone(),
                &target,
                &address,
                &username,
                credential,
                &ciphers,
                shared,
            ),
        )
        .await
        {
            Ok(Ok(leg)) if tx.is_closed() => {
                // The session ended while its target leg was connecting: nobody will use it.
                let _ = leg
                    .handle
                    .disconnect(russh::Disconnect::ByApplication, "session ended", "")
                    .await;
                return;
            }
            Ok(Ok(leg)) => {
                broker.opened(&session);
                LegState::Ready(Arc::new(leg))
            }
            Ok(Err(msg)) => LegState::Failed(msg),
            Err(_) => LegState::Failed(TargetError::Failed(format!(
                "target {target} ({address}) did not complete the SSH handshake within {}s",
                timeout.as_secs()
            ))),
        };
        let _ = tx.send(state);
    });
    rx
}

async fn connect<B: SshBroker>(
    broker: Arc<B>,
    target: &str,
    address: &str,
    username: &str,
    credential: Credential,
    ciphers: &[String],
    shared: Arc<crate::session::SessionShared>,
) -> Result<TargetLeg, TargetError> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("target {target} ({address}) is unreachable: {e}"))?;
    let _ = tcp.set_nodelay(true);
    // Our preference first, then anything else russh speaks, so any target can be reached.
    let mut order = ciphers.to_vec();
    for c in super::SUPPORTED_CIPHERS {
        if !order.iter().any(|o| o == c) {
            order.push(c.to_string());
        }
    }
    let config = Arc::new(client::Config {
        preferred: super::preferred(&order),
        nodelay: true,
        channel_buffer_size: 256,
        inactivity_timeout: None,
        ..Default::default()
    });
    let pending: Pending = Arc::default();
    let hostkey_error = Arc::new(Mutex::new(None));
    let closed = CancellationToken::new();
    let back = Back {
        check: Box::new(BrokerCheck {
            broker,
            target: target.to_string(),
            address: address.to_string(),
        }),
        pending: pending.clone(),
        hostkey_error: hostkey_error.clone(),
        shared,
        _closed_on_drop: closed.clone().drop_guard(),
    };
    let mut handle = match client::connect_stream(config, tcp, back).await {
        Ok(h) => h,
        Err(e) => {
            let pinned = hostkey_error.lock().ok().and_then(|mut e| e.take());
            return Err(TargetError::Failed(pinned.unwrap_or_else(|| {
                format!("SSH handshake with target {target} ({address}) failed: {e}")
            })));
        }
    };
    let auth = match credential {
        Credential::Password(password) => handle.authenticate_password(username, password).await,
        Credential::PrivateKey(key) => {
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten();
            handle
                .authenticate_publickey(username, PrivateKeyWithHashAlg::new(key, hash))
                .await
        }
    }
    .map_err(|e| format!("authentication to target {target} failed: {e}"))?;
    if !auth.success() {
        return Err(TargetError::SecretRejected {
            target: target.to_string(),
            account: username.to_string(),
            detail: "SSH authentication failed".into(),
        });
    }
    Ok(TargetLeg {
        handle,
        pending,
        closed,
        target: target.to_string(),
        address: address.to_string(),
    })
}

/// Wait until the leg is ready (or failed).
pub(crate) async fn ready(
    w: &mut watch::Receiver<LegState>,
) -> Result<Arc<TargetLeg>, TargetError> {
    loop {
        match &*w.borrow_and_update() {
            LegState::Ready(leg) => return Ok(leg.clone()),
            LegState::Failed(e) => return Err(e.clone()),
            LegState::Connecting => {}
        }
        if w.changed().await.is_err() {
            return Err("the target connection attempt was abandoned".into());
        }
    }
}

/// How the target leg went away under a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Gone {
    /// It never opened.
    #[error("{0}")]
    Failed(TargetError),
    /// It was open and the target closed it.
    #[error("connection to target {0} lost")]
    Lost(String),
}

impl Gone {
    pub(crate) fn outcome(self) -> crate::session::Outcome {
        match self {
            Gone::Failed(e) => crate::session::Outcome::TargetFailed(e),
            Gone::Lost(_) => crate::session::Outcome::TargetClosed,
        }
    }
}

/// Resolves when the leg fails to open or, once open, when the target goes away.
pub(crate) async fn wait_failed(w: &mut watch::Receiver<LegState>) -> Gone {
    match ready(w).await {
        Err(e) => Gone::Failed(e),
        Ok(leg) => {
            leg.closed.cancelled().await;
            Gone::Lost(leg.target.clone())
        }
    }
}

/// Close the target leg if it is open (a leg still connecting closes itself once every receiver
/// is gone, see `spawn_connect`).
pub(crate) async fn close(w: &watch::Receiver<LegState>) {
    let state = w.borrow().clone();
    if let LegState::Ready(leg) = state {
        // Bounded: a wedged target session loop must not hold the supervisor (or shutdown).
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            leg.handle
                .disconnect(russh::Disconnect::ByApplication, "session ended", ""),
        )
        .await;
    }
}

impl TargetLeg {
    /// Register a waiter for the next reply on `channel`; call before sending the request.
    pub(crate) fn expect_reply(&self, channel: ChannelId) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.entry(channel).or_default().push_back(tx);
        }
        rx
    }

    pub(crate) fn forget(&self, channel: ChannelId) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&channel);
        }
    }
}
