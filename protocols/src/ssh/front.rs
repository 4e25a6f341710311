//! The client leg: a russh server handler for one user connection.
//!
//! Authentication: public key, password, or keyboard-interactive (a password prompt). A refusal
//! that the user must understand (unknown user, malformed login, unknown target, no permission,
//! wrong password) is shown through keyboard-interactive: OpenSSH prints the `instruction` of an
//! info request with no prompts on the user's terminal, then the gateway rejects the attempt with
//! no methods left, so the client stops instead of retrying.
//!
//! After admission, channel opens wait for the target leg and are mirrored on it; channel requests
//! are forwarded and the target's reply is awaited before answering the client, because russh
//! remembers only the latest `want_reply` flag per channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PublicKey;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{
    client, Channel, ChannelId, ChannelOpenFailure, ChannelWriteHalf, MethodKind, MethodSet, Pty,
    Sig,
};
use tokio::sync::{oneshot, watch};

use super::back::{self, LegState, TargetLeg};
use super::relay::{self, OpenChannels};
use super::{ClientInfo, Login, SshBroker, SshSettings, TargetPlan};
use crate::session::{PtyInfo, SessionLink, SessionShared};

/// What the connection supervisor learns once authentication is over.
pub(crate) enum AuthOutcome {
    Admitted(Started),
    /// The user authenticated but may not open this session; the message explains why.
    Denied(String),
}

/// Handed to the connection supervisor once a session is admitted.
pub(crate) struct Started {
    pub link: SessionLink,
    pub target: String,
    pub leg: watch::Receiver<LegState>,
    pub open_channels: OpenChannels,
}

struct Admitted {
    shared: Arc<SessionShared>,
    leg: watch::Receiver<LegState>,
    allow_port_forwarding: bool,
    policy: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Kbd {
    Idle,
    ShowingRefusal,
    AskingPassword,
}

const MAX_PASSWORD_TRIES: u32 = 3;
const REQUEST_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Front<B: SshBroker> {
    broker: Arc<B>,
    client: ClientInfo,
    raw_login: String,
    login: Option<Login>,
    /// A message for the user; shown at the next keyboard-interactive round, then the connection
    /// is refused.
    refusal: Option<String>,
    refusal_audited: bool,
    kbd: Kbd,
    password_failures: u32,
    offered_keys: Vec<String>,
    connect_timeout: Duration,
    ciphers: Vec<String>,
    started_tx: Option<oneshot::Sender<AuthOutcome>>,
    admitted: Option<Admitted>,
    /// The user is authenticated but was denied: every channel gets this message and fails.
    denied: Option<String>,
    open_channels: OpenChannels,
    channels: HashMap<ChannelId, (Arc<ChannelWriteHalf<client::Msg>>, Arc<TargetLeg>)>,
}

fn all_methods() -> MethodSet {
    let mut m = MethodSet::empty();
    m.push(MethodKind::PublicKey);
    m.push(MethodKind::KeyboardInteractive);
    m.push(MethodKind::Password);
    m
}

fn only_kbd() -> MethodSet {
    let mut m = MethodSet::empty();
    m.push(MethodKind::KeyboardInteractive);
    m
}

fn reject(methods: MethodSet) -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(methods),
        partial_success: false,
    }
}

fn show(text: String, prompts: Vec<(std::borrow::Cow<'static, str>, bool)>) -> Auth {
    Auth::Partial {
        name: "".into(),
        instructions: format!("{text}\n").into(),
        prompts: prompts.into(),
    }
}

impl<B: SshBroker> Front<B> {
    pub(crate) fn new(
        broker: Arc<B>,
        settings: Arc<SshSettings>,
        peer: SocketAddr,
        started_tx: oneshot::Sender<AuthOutcome>,
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
            ciphers: settings.ciphers.clone(),
            started_tx: Some(started_tx),
            admitted: None,
            denied: None,
            open_channels: OpenChannels::default(),
            channels: HashMap::new(),
        }
    }

    /// Parse the login once per distinct username (a client may change it between attempts).
    fn note_login(&mut self, user: &str) {
        if self.raw_login == user && (self.login.is_some() || self.refusal.is_some()) {
            return;
        }
        self.raw_login = user.to_string();
        self.refusal = None;
        self.refusal_audited = false;
        self.kbd = Kbd::Idle;
        self.password_failures = 0;
        self.offered_keys.clear();
        match Login::parse(user) {
            Ok(l) => {
                self.login = Some(l);
                if self.broker.user(&self.user()).is_none() {
                    let msg = format!(
                        "wardengate: unknown user '{}'; ask a Wardengate administrator to add you",
                        self.user()
                    );
                    self.refuse("unknown_user", msg);
                }
            }
            Err(msg) => {
                self.login = None;
                self.refuse("bad_login", msg);
            }
        }
    }

    fn user(&self) -> String {
        self.login
            .as_ref()
            .map(|l| l.user.clone())
            .unwrap_or_default()
    }

    fn refuse(&mut self, kind: &str, msg: String) {
        self.broker
            .refused(&self.raw_login, &self.client, kind, &msg);
        self.refusal_audited = true;
        self.refusal = Some(msg);
    }

    async fn admit(&mut self, method: &str) -> Auth {
        let Some(login) = self.login.clone() else {
            return reject(only_kbd());
        };
        match self.broker.admit(&login, method, &self.client).await {
            Ok(plan) => {
                self.start(plan);
                Auth::Accept
            }
            Err(msg) => {
                // The user proved who they are, so they may learn why they cannot go on: accept
                // the authentication and explain on every channel they open (works in BatchMode
                // too, where keyboard-interactive messages are never shown). The broker audited
                // the denial (session.denied).
                self.refusal_audited = true;
                self.denied = Some(msg.clone());
                if let Some(tx) = self.started_tx.take() {
                    let _ = tx.send(AuthOutcome::Denied(msg));
                }
                Auth::Accept
            }
        }
    }

    fn start(&mut self, plan: TargetPlan) {
        let TargetPlan {
            admitted,
            link,
            target,
            address,
            username,
            credential,
        } = plan;
        let leg = back::spawn_connect(
            self.broker.clone(),
            back::LegSpec {
                session: link.shared.id.clone(),
                target: target.clone(),
                address,
                username,
                credential,
                timeout: self.connect_timeout,
                ciphers: self.ciphers.clone(),
            },
        );
        self.admitted = Some(Admitted {
            shared: link.shared.clone(),
            leg: leg.clone(),
            allow_port_forwarding: admitted.allow_port_forwarding(),
            policy: admitted.policy().to_string(),
        });
        if let Some(tx) = self.started_tx.take() {
            let _ = tx.send(AuthOutcome::Admitted(Started {
                link,
                target,
                leg,
                open_channels: self.open_channels.clone(),
            }));
        }
    }

    fn key_registered(&self, key: &PublicKey) -> bool {
        self.broker
            .user(&self.user())
            .is_some_and(|u| u.keys.iter().any(|k| k.key_data() == key.key_data()))
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
            Ok(()) => match tokio::time::timeout(REQUEST_REPLY_TIMEOUT, reply).await {
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
            },
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

    async fn open_target_channel(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
        direct: Option<(String, u32, String, u32)>,
    ) {
        if let Some(msg) = self.denied.clone() {
            if direct.is_some() {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: msg,
                    })
                    .await;
            } else {
                reply.accept().await;
                tokio::spawn(relay::refuse_channel(channel, msg));
            }
            return;
        }
        let Some(adm) = self.admitted.as_ref() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        let mut leg_watch = adm.leg.clone();
        let shared = adm.shared.clone();
        let leg = match back::ready(&mut leg_watch).await {
            Ok(leg) => leg,
            Err(msg) => {
                let reason = format!("wardengate: {msg}");
                reply
                    .reject(ChannelOpenFailure::Other { code: 2, reason })
                    .await;
                return;
            }
        };
        let opened = match &direct {
            None => leg.handle.channel_open_session().await,
            Some((host, port, orig, orig_port)) => {
                leg.handle
                    .channel_open_direct_tcpip(host.clone(), *port, orig.clone(), *orig_port)
                    .await
            }
        };
        match opened {
            Ok(target_ch) => {
                let cid = channel.id();
                reply.accept().await;
                let open = if direct.is_none() {
                    self.open_channels.clone()
                } else {
                    OpenChannels::default()
                };
                let w = relay::spawn(
                    channel,
                    target_ch,
                    session.handle(),
                    shared,
                    open,
                    leg.clone(),
                );
                self.channels.insert(cid, (w, leg));
            }
            Err(e) => {
                let reason = if leg.closed.is_cancelled() {
                    "wardengate: the session is closing".to_string()
                } else {
                    format!("wardengate: the target refused the channel: {e}")
                };
                reply
                    .reject(ChannelOpenFailure::Other { code: 2, reason })
                    .await;
            }
        }
    }
}

impl<B: SshBroker> Drop for Front<B> {
    fn drop(&mut self) {
        // A client that gave up after offering only unregistered keys never reached a point where
        // the failure was audited.
        if self.admitted.is_none() && !self.refusal_audited && !self.offered_keys.is_empty() {
            let msg = format!(
                "no registered public key was offered (offered: {})",
                self.offered_keys.join(", ")
            );
            self.broker
                .refused(&self.raw_login, &self.client, "bad_key", &msg);
        }
    }
}

impl<B: SshBroker> server::Handler for Front<B> {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.note_login(user);
        Ok(reject(all_methods()))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.note_login(user);
        if self.refusal.is_some() {
            return Ok(reject(only_kbd()));
        }
        if self.key_registered(offer.public_key) {
            return Ok(Auth::Accept);
        }
        let fp = offer.public_key.fingerprint(Default::default()).to_string();
        if !self.offered_keys.contains(&fp) {
            self.offered_keys.push(fp);
        }
        Ok(reject(all_methods()))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.note_login(user);
        if self.refusal.is_some() || !self.key_registered(key.public_key) {
            return Ok(reject(all_methods()));
        }
        Ok(self.admit("publickey").await)
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.note_login(user);
        if self.refusal.is_some() {
            return Ok(reject(only_kbd()));
        }
        let name = self.user();
        if self.broker.verify_password(&name, password).await {
            return Ok(self.admit("password").await);
        }
        self.password_failures += 1;
        let msg = format!("wardengate: wrong password for user '{name}'");
        self.broker
            .refused(&self.raw_login, &self.client, "bad_password", &msg);
        Ok(reject(all_methods()))
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.note_login(user);
        let name = self.user();
        let prompt = || vec![(format!("Password for {name}@wardengate: ").into(), false)];
        if response.is_none() || self.kbd == Kbd::Idle {
            if let Some(msg) = self.refusal.clone() {
                self.kbd = Kbd::ShowingRefusal;
                return Ok(show(msg, vec![]));
            }
            match self.broker.user(&name) {
                Some(u) if u.has_password => {
                    self.kbd = Kbd::AskingPassword;
                    return Ok(show(String::new(), prompt()));
                }
                _ => {
                    let offered = if self.offered_keys.is_empty() {
                        "none".to_string()
                    } else {
                        self.offered_keys.join(", ")
                    };
                    let msg = format!(
                        "wardengate: no public key registered for user '{name}' was offered \
                         (offered: {offered}) and the user has no password"
                    );
                    self.refuse("bad_key", msg.clone());
                    self.kbd = Kbd::ShowingRefusal;
                    return Ok(show(msg, vec![]));
                }
            }
        }
        match self.kbd {
            Kbd::AskingPassword => {
                let password = response
                    .and_then(|mut r| r.next())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if self.broker.verify_password(&name, &password).await {
                    let auth = self.admit("keyboard-interactive").await;
                    if auth == Auth::Accept {
                        return Ok(auth);
                    }
                    self.kbd = Kbd::ShowingRefusal;
                    return Ok(show(self.refusal.clone().unwrap_or_default(), vec![]));
                }
                self.password_failures += 1;
                let msg = format!("wardengate: wrong password for user '{name}'");
                self.broker
                    .refused(&self.raw_login, &self.client, "bad_password", &msg);
                if self.password_failures < MAX_PASSWORD_TRIES {
                    return Ok(show(format!("{msg}, try again"), prompt()));
                }
                self.refusal = Some(format!(
                    "wardengate: authentication failed for user '{name}': wrong password \
                     ({} attempts)",
                    self.password_failures
                ));
                self.kbd = Kbd::ShowingRefusal;
                Ok(show(self.refusal.clone().unwrap_or_default(), vec![]))
            }
            // The refusal was shown. OpenSSH treats an empty method list as "try anything", so
            // end the connection instead; the client prints "Connection closed".
            Kbd::ShowingRefusal | Kbd::Idle => Err(russh::Error::Disconnect),
        }
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
        if self.denied.is_none()
            && !self
                .admitted
                .as_ref()
                .is_some_and(|a| a.allow_port_forwarding)
        {
            let policy = self
                .admitted
                .as_ref()
                .map(|a| a.policy.as_str())
                .unwrap_or("-");
            let reason = format!("wardengate: port forwarding is not allowed by policy '{policy}'");
            reply
                .reject(ChannelOpenFailure::Other { code: 1, reason })
                .await;
            return Ok(());
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
