//! The client leg: a russh server handler for one user connection.
//!
//! Authentication lives in `auth.rs` (same type, split for reading). After admission, channel
//! opens wait for the target leg and are mirrored on it; channel requests are forwarded and the
//! target's reply is awaited before answering the client, because russh remembers only the latest
//! `want_reply` flag per channel. A user who authenticated but was denied gets every channel
//! accepted and closed with the reason on stderr, so BatchMode clients see it too.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{client, Channel, ChannelId, ChannelOpenFailure, ChannelWriteHalf, Pty, Sig};
use tokio::sync::{oneshot, watch};

use super::back::{LegState, TargetLeg};
use super::brake::OpenChannels;
use super::resume::{Attach, ClientConn, ResumeState};
use super::{ClientInfo, Login, SshBroker, SshSettings};
use crate::session::{Busy, PtyInfo, SessionLink, SessionShared, Tap};
use wardengate_policy::Admitted;
use wardengate_recorder::EventKind;

/// A client-given host for the audit: at most 256 characters, no control characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(256).collect()
}

/// What the connection supervisor learns once authentication is over.
pub(crate) enum AuthOutcome {
    Admitted(Started),
    /// The user authenticated but may not open this session; the message explains why.
    Denied(String),
    /// The user re-attaches a paused session; its supervisor takes the connection over.
    Resumed(Resumed),
}

pub(crate) struct Resumed {
    pub attach: tokio::sync::mpsc::Sender<ClientConn>,
    pub open_channels: OpenChannels,
    pub ending: tokio_util::sync::CancellationToken,
    pub client: ClientInfo,
}

/// Handed to the connection supervisor once a session is admitted.
pub(crate) struct Started {
    pub link: SessionLink,
    /// Who logged in on this connection.
    pub actor: String,
    pub target: String,
    pub leg: watch::Receiver<LegState>,
    pub open_channels: OpenChannels,
    /// Cancelled by the supervisor when the session is ending: pending waits give up at once.
    pub ending: tokio_util::sync::CancellationToken,
    pub admitted: Admitted,
    /// The session's swappable channels (resume, handoff).
    pub resume: Arc<ResumeState>,
    pub client: ClientInfo,
}

pub(super) struct AdmittedSession {
    pub(super) shared: Arc<SessionShared>,
    pub(super) leg: watch::Receiver<LegState>,
    /// The admitting decision (port forwarding destinations).
    pub(super) admitted: Admitted,
    /// The target's host, as its address names it (`forward_to = ["target"]`).
    pub(super) target_host: String,
    pub(super) policy: String,
    pub(super) tap: Option<Tap>,
    pub(super) ending: tokio_util::sync::CancellationToken,
    pub(super) resume: Arc<ResumeState>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kbd {
    Idle,
    ShowingRefusal,
    AskingPassword,
    /// The prompt of a step-up (security key) was shown; the next answer waits for the proof.
    AwaitingKey,
}

pub(super) const MAX_PASSWORD_TRIES: u32 = 3;
const REQUEST_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A re-attaching connection's channel, bound to a paused one until its shell request.
pub(crate) struct Resuming {
    pub(super) channel: Channel<Msg>,
    pub(super) attach: Arc<Attach>,
    /// The terminal it asked for: applied to the paused shell, or to a new target channel if the
    /// client runs a command instead.
    pub(super) pty: Option<PtyRequest>,
}

/// A `pty-req` as the client sent it: term, cols, rows, pixel width and height, modes.
pub(super) type PtyRequest = (String, u32, u32, u32, u32, Vec<(Pty, u32)>);

pub(crate) struct Front<B: SshBroker> {
    pub(super) broker: Arc<B>,
    pub(super) client: ClientInfo,
    pub(super) raw_login: String,
    pub(super) login: Option<Login>,
    /// A message for the user; shown at the next keyboard-interactive round, then the connection
    /// is refused.
    pub(super) refusal: Option<String>,
    pub(super) refusal_audited: bool,
    pub(super) kbd: Kbd,
    pub(super) password_failures: u32,
    pub(super) offered_keys: Vec<String>,
    pub(super) connect_timeout: Duration,
    /// What the client offered in its KEXINIT (read as it passed, for the negotiated cipher).
    pub(super) client_offer: Arc<std::sync::OnceLock<super::kexinit::ClientOffer>>,
    /// How long every refused attempt takes (`ssh.auth_rejection_time`).
    pub(super) rejection_time: Duration,
    pub(super) ciphers: Vec<String>,
    pub(super) started_tx: Option<oneshot::Sender<AuthOutcome>>,
    pub(super) admitted: Option<AdmittedSession>,
    /// The user is authenticated but was denied: every channel gets this message and fails.
    pub(super) denied: Option<String>,
    pub(super) open_channels: OpenChannels,
    pub(super) channels: HashMap<ChannelId, (Arc<ChannelWriteHalf<client::Msg>>, Arc<TargetLeg>)>,
    /// Resumable channels (resume-mode sessions), for terminal size and state.
    pub(super) attaches: HashMap<ChannelId, Arc<Attach>>,
    /// Channels of a re-attaching connection bound to a paused channel, until the shell request.
    pub(super) resuming: HashMap<ChannelId, Resuming>,
    pub(super) ptys: HashSet<ChannelId>,
    /// Running non-pty commands: the session is not idle while they run.
    pub(super) busy: HashMap<ChannelId, Busy>,
    /// The first factor passed and the policy asks for a security key: shown at the next
    /// keyboard-interactive round, then waited for.
    pub(super) step_up: Option<(String, crate::session::StepUp)>,
    /// When the connection must be authenticated; a step-up moves it past the wait.
    pub(super) deadline: watch::Sender<tokio::time::Instant>,
    /// The client's socket, only to notice it close during a step-up wait; let go once
    /// authentication is over (it would keep the connection open after russh closes it).
    pub(super) peer_socket: Option<std::net::TcpStream>,
}

impl<B: SshBroker> Front<B> {
    pub(crate) fn new(
        broker: Arc<B>,
        settings: Arc<SshSettings>,
        peer: SocketAddr,
        started_tx: oneshot::Sender<AuthOutcome>,
        client_offer: Arc<std::sync::OnceLock<super::kexinit::ClientOffer>>,
        deadline: watch::Sender<tokio::time::Instant>,
        peer_socket: Option<std::net::TcpStream>,
    ) -> Self {
        Front {
            broker,
            client: ClientInfo {
                addr: peer,
                version: String::new(),
            },
            raw_login: String::new(),
            login: None,
            refusal: None,
            refusal_audited: false,
            kbd: Kbd::Idle,
            password_failures: 0,
            offered_keys: Vec::new(),
            connect_timeout: settings.connect_timeout,
            rejection_time: settings.auth_rejection_time,
            client_offer,
            ciphers: settings.ciphers.clone(),
            started_tx: Some(started_tx),
            admitted: None,
            denied: None,
            open_channels: OpenChannels::default(),
            channels: HashMap::new(),
            attaches: HashMap::new(),
            resuming: HashMap::new(),
            ptys: HashSet::new(),
            busy: HashMap::new(),
            step_up: None,
            deadline,
            peer_socket,
        }
    }

    /// `fut`, unless the session starts ending first (then its receiver error).
    async fn or_ending(
        &self,
        fut: oneshot::Receiver<bool>,
    ) -> Result<bool, oneshot::error::RecvError> {
        let ending = self
            .admitted
            .as_ref()
            .map(|a| a.ending.clone())
            .unwrap_or_default();
        tokio::select! {
            r = fut => r,
            _ = ending.cancelled() => Ok(false),
        }
    }

    pub(super) fn tap(&self) -> Option<Tap> {
        self.admitted.as_ref().and_then(|a| a.tap.clone())
    }

    /// Record a marker; a failed recording is handled by the relay and the recorder task.
    async fn mark(&self, kind: &str, detail: String) {
        if let Some(tap) = self.tap() {
            tap.marker(kind, detail).await;
        }
    }

    async fn resize(&self, channel: ChannelId, cols: u32, rows: u32) {
        if let Some(tap) = self.tap() {
            tap.record(EventKind::Resize {
                channel: channel.number(),
                cols,
                rows,
            })
            .await;
        }
    }

    /// Forward a channel request to the target and answer the client with the target's reply.
    async fn forward<F, Fut>(
        &self,
        channel: ChannelId,
        session: &mut Session,
        send: F,
    ) -> Result<(), russh::Error>
    where
        F: FnOnce(Arc<ChannelWriteHalf<client::Msg>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), russh::Error>>,
    {
        if self.denied.is_some() {
            // Let the client proceed to read the refusal on stderr (`refuse_channel`).
            return session.channel_success(channel);
        }
        let Some((w, leg)) = self.channels.get(&channel).cloned() else {
            return session.channel_failure(channel);
        };
        let reply = leg.expect_reply(w.id());
        let ok = match send(w).await {
            Ok(()) => {
                match tokio::time::timeout(REQUEST_REPLY_TIMEOUT, self.or_ending(reply)).await {
                    Ok(Ok(true)) => true,
                    Ok(Ok(false)) => {
                        tracing::debug!(?channel, "the target refused a channel request");
                        false
                    }
                    Ok(Err(_)) => {
                        tracing::warn!(
                            ?channel,
                            "the target leg closed before replying to a channel request"
                        );
                        false
                    }
                    Err(_) => {
                        tracing::warn!(?channel, "the target did not reply to a channel request within {REQUEST_REPLY_TIMEOUT:?}");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    ?channel,
                    "cannot forward a channel request to the target: {e}"
                );
                false
            }
        };
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

impl<B: SshBroker> server::Handler for Front<B> {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.on_auth_none(user).await
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.on_key_offered(user, offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.on_key_verified(user, key.public_key).await)
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.on_auth_password(user, password).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.on_auth_keyboard_interactive(user, submethods, response)
            .await
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let version = String::from_utf8_lossy(session.remote_sshid())
            .trim()
            .to_string();
        self.client.version = version.clone();
        if let Some(adm) = &self.admitted {
            adm.shared.set_client_version(version);
            tracing::info!(session = %adm.shared.id, policy = %adm.policy, "client authenticated");
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.open_target_channel(channel, reply, session, None)
            .await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.denied.is_none() {
            let Some(adm) = self.admitted.as_ref() else {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: "wardengate: not admitted".into(),
                    })
                    .await;
                return Ok(());
            };
            // Where forwarding may go is the policy's `forward_to`; every request is audited.
            let dest = format!("{}:{port_to_connect}", printable(host_to_connect));
            let verdict = adm
                .admitted
                .forward(host_to_connect, port_to_connect, &adm.target_host);
            self.broker.notice(
                &adm.shared.id,
                "session.forward",
                serde_json::json!({
                    "destination": dest,
                    "originator": format!("{}:{originator_port}", printable(originator_address)),
                    "allowed": verdict.is_ok(),
                    "reason": verdict.as_ref().err(),
                    "policy": adm.policy,
                }),
            );
            if let Err(why) = verdict {
                if let Some(tap) = &adm.tap {
                    tap.marker("direct-tcpip-refused", format!("{dest}: {why}"))
                        .await;
                }
                let reason = format!("wardengate: {why}");
                reply
                    // Code 1 is "administratively prohibited"; OpenSSH prints the reason.
                    .reject(ChannelOpenFailure::Other { code: 1, reason })
                    .await;
                return Ok(());
            }
        }
        let direct = (
            host_to_connect.to_string(),
            port_to_connect,
            originator_address.to_string(),
            originator_port,
        );
        self.open_target_channel(channel, reply, session, Some(direct))
            .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.attaches.remove(&channel);
        self.resuming.remove(&channel);
        self.ptys.remove(&channel);
        self.busy.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(adm) = &self.admitted {
            adm.shared.set_pty(PtyInfo {
                term: term.to_string(),
                cols: col_width,
                rows: row_height,
            });
        }
        self.ptys.insert(channel);
        if let Some(r) = self.resuming.get_mut(&channel) {
            // Kept for the shell request (the paused terminal takes this size) or a command.
            r.pty = Some((
                term.to_string(),
                col_width,
                row_height,
                pix_width,
                pix_height,
                modes.to_vec(),
            ));
            return session.channel_success(channel);
        }
        if let (Some(a), Some(adm)) = (self.attaches.get(&channel), &self.admitted) {
            a.set_pty(&adm.resume.hub, col_width, row_height);
        }
        self.mark("pty", format!("{term} {col_width}x{row_height}"))
            .await;
        self.resize(channel, col_width, row_height).await;
        let term = term.to_string();
        let modes = modes.to_vec();
        self.forward(channel, session, |w| async move {
            w.request_pty(
                true, &term, col_width, row_height, pix_width, pix_height, &modes,
            )
            .await
        })
        .await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.resuming.contains_key(&channel) {
            return session.channel_success(channel);
        }
        let (name, value) = (name.to_string(), value.to_string());
        self.forward(channel, session, |w| async move {
            w.set_env(true, name, value).await
        })
        .await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(r) = self.resuming.remove(&channel) {
            return self.reattach(r, session).await;
        }
        self.mark("shell", String::new()).await;
        self.forward(
            channel,
            session,
            |w| async move { w.request_shell(true).await },
        )
        .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.unclaim(channel, session).await {
            return session.channel_failure(channel);
        }
        self.mark("exec", String::from_utf8_lossy(data).into_owned())
            .await;
        if !self.ptys.contains(&channel) {
            // A running command is activity, not idleness (it ends with the channel).
            if let Some(adm) = &self.admitted {
                self.busy.insert(channel, adm.shared.busy());
            }
        }
        let command = data.to_vec();
        self.forward(
            channel,
            session,
            |w| async move { w.exec(true, command).await },
        )
        .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.unclaim(channel, session).await {
            return session.channel_failure(channel);
        }
        self.mark("subsystem", name.to_string()).await;
        let name = name.to_string();
        self.forward(channel, session, |w| async move {
            w.request_subsystem(true, name).await
        })
        .await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(adm) = &self.admitted {
            adm.shared.resize(col_width, row_height);
        }
        if let (Some(a), Some(adm)) = (self.attaches.get(&channel), &self.admitted) {
            a.set_pty(&adm.resume.hub, col_width, row_height);
        }
        self.resize(channel, col_width, row_height).await;
        if let Some((w, _)) = self.channels.get(&channel) {
            let _ = w
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((w, _)) = self.channels.get(&channel) {
            let _ = w.signal(signal).await;
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _: bool,
        _: &str,
        _: &str,
        _: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}
