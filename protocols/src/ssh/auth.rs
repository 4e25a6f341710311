//! Authentication of the client leg: public key, password, and keyboard-interactive (a password
//! prompt). Part of [`Front`](super::front::Front), split out for reading.
//!
//! Before authentication the client learns nothing about who exists: an unknown user, a
//! malformed login, a user without a password, a wrong password and a throttled source all get
//! the same password prompt, the same dummy-or-real argon2 check (the gateway's bounded pool),
//! the same `auth_rejection_time` delay and the same text, [`ACCESS_DENIED`]. What really
//! happened goes to the audit (`auth.failed` with the reason) only.
//! A denial after authentication (unknown target, no permission) is accepted and explained on
//! every channel instead (see `front.rs`), so that BatchMode clients see it too.

use russh::keys::PublicKey;
use russh::server::{self, Auth};
use russh::{MethodKind, MethodSet};

use super::back;
use super::front::{AdmittedSession, AuthOutcome, Front, Kbd, Started, MAX_PASSWORD_TRIES};
use super::{Login, SshBroker, SshTarget};
pub use crate::session::MAX_LOGIN;
use crate::session::{Denial, Plan, Verdict};

/// The one text every refusal before authentication shows, whatever the reason.
pub const ACCESS_DENIED: &str = "wardengate: access denied. Log in as USER:TARGET[:ACCOUNT] \
    (USER#TARGET for scp, sftp and rsync) with your own key or password, e.g. \
    ssh alice:web-01.prod@gateway. An administrator can find the reason in the audit log.";

/// How long past a step-up's own wait the connection may take to finish authenticating.
const STEP_UP_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// Keys remembered per connection for the audit's "offered" list.
const MAX_OFFERED_KEYS: usize = 16;

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(address: &str) -> String {
    address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_string()
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

/// Resolves when the client closes its connection (polled: russh reads nothing while an
/// authentication answer is pending).
async fn client_gone(socket: std::net::TcpStream) {
    if socket.set_nonblocking(true).is_err() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        match socket.peek(&mut [0u8; 1]) {
            Ok(0) => return,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return,
            _ => {}
        }
    }
}

impl<B: SshBroker> Front<B> {
    /// Parse the login once per distinct username (a client may change it between attempts).
    pub(super) fn note_login(&mut self, user: &str) {
        if self.raw_login == user {
            return;
        }
        self.raw_login = user.to_string();
        self.refusal = None;
        self.refusal_audited = false;
        self.kbd = Kbd::Idle;
        self.password_failures = 0;
        self.step_up = None;
        self.offered_keys.clear();
        self.login = Login::parse(user).ok();
    }

    pub(super) fn user(&self) -> String {
        self.login
            .as_ref()
            .map(|l| l.user.clone())
            .unwrap_or_default()
    }

    /// Why this login cannot succeed whatever the credential, for the audit.
    fn why_not(&self) -> Option<(&'static str, String)> {
        let Some(login) = &self.login else {
            if self.raw_login.len() > MAX_LOGIN {
                return Some(("bad_login", format!("login longer than {MAX_LOGIN} bytes")));
            }
            return Some((
                "bad_login",
                Login::parse(&self.raw_login).err().unwrap_or_default(),
            ));
        };
        if self.broker.user(&login.user).is_none() {
            return Some(("unknown_user", format!("unknown user '{}'", login.user)));
        }
        None
    }

    /// The name failures are counted under: the login's user, or the raw login when it parses
    /// to none.
    fn throttle_name(&self) -> String {
        match &self.login {
            Some(l) => l.user.clone(),
            None => self.raw_login.chars().take(MAX_LOGIN).collect(),
        }
    }

    /// Check a password (throttled, bounded; a dummy check when the login cannot succeed).
    async fn check(&mut self, password: &str) -> Verdict {
        let name = self.throttle_name();
        let usable = self.login.is_some();
        self.broker
            .check_password(&name, password, &self.client, usable)
            .await
    }

    /// A failed attempt: audited with its real reason, unless the throttle refused it (the
    /// gateway audits the burst instead).
    fn failed(&mut self, verdict: Verdict) {
        self.password_failures += 1;
        if verdict == Verdict::Refused {
            return;
        }
        let (kind, msg) = self
            .why_not()
            .unwrap_or_else(|| match self.broker.user(&self.user()) {
                Some(u) if !u.has_password => (
                    "no_password",
                    format!("user '{}' has no password (keys only)", self.user()),
                ),
                _ => (
                    "bad_password",
                    format!("wrong password for user '{}'", self.user()),
                ),
            });
        self.broker
            .refused(&self.raw_login, &self.client, kind, &msg);
        self.refusal_audited = true;
    }

    pub(super) async fn admit(&mut self, method: &str) -> Auth {
        let Some(login) = self.login.clone() else {
            return reject(only_kbd());
        };
        let admitted = self.broker.admit(&login, method, &self.client).await;
        if !matches!(
            &admitted,
            Err(Denial {
                step_up: Some(_),
                ..
            })
        ) {
            // Authentication is over whatever follows.
            self.peer_socket = None;
        }
        match admitted {
            Ok(super::Admission::New(plan)) => {
                self.start(plan);
                Auth::Accept
            }
            Ok(super::Admission::Resume(ticket)) => {
                self.start_resumed(ticket);
                Auth::Accept
            }
            Err(Denial {
                step_up: Some(step),
                ..
            }) => {
                // The first factor passed; the policy asks for a security key. Keyboard-
                // interactive shows where, and waits (the pre-authentication deadline moves past
                // the wait).
                let _ = self
                    .deadline
                    .send(tokio::time::Instant::now() + step.within + STEP_UP_SLACK);
                self.step_up = Some((format!("{method}+webauthn"), *step));
                self.kbd = Kbd::Idle;
                Auth::Reject {
                    proceed_with_methods: Some(only_kbd()),
                    partial_success: true,
                }
            }
            Err(denial) => {
                let msg = denial.message;
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

    pub(super) fn start(&mut self, plan: Plan<SshTarget>) {
        let Plan {
            admitted,
            link,
            target:
                SshTarget {
                    name: target,
                    address,
                    username,
                    credential,
                },
        } = plan;
        let target_address = address.clone();
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
                shared: link.shared.clone(),
            },
        );
        self.note_crypto(&link.shared);
        let ending = tokio_util::sync::CancellationToken::new();
        let resume = super::resume::ResumeState::new(link.hub.clone());
        self.admitted = Some(AdmittedSession {
            shared: link.shared.clone(),
            leg: leg.clone(),
            admitted: admitted.clone(),
            target_host: host_of(&target_address),
            policy: admitted.policy().to_string(),
            tap: link.tap.clone(),
            ending: ending.clone(),
            resume: resume.clone(),
        });
        if let Some(tx) = self.started_tx.take() {
            let _ = tx.send(AuthOutcome::Admitted(Started {
                link,
                actor: self
                    .login
                    .as_ref()
                    .map(|l| l.user.clone())
                    .unwrap_or_default(),
                target,
                leg,
                open_channels: self.open_channels.clone(),
                ending,
                admitted,
                resume,
                client: self.client.clone(),
            }));
        }
    }

    /// Re-attach a paused session: the target leg is up already.
    pub(super) fn start_resumed(&mut self, t: super::ResumeTicket) {
        let ending = tokio_util::sync::CancellationToken::new();
        self.note_crypto(&t.shared);
        let target_host = match &*t.leg.borrow() {
            back::LegState::Ready(leg) => host_of(&leg.address),
            _ => String::new(),
        };
        self.admitted = Some(AdmittedSession {
            shared: t.shared.clone(),
            leg: t.leg.clone(),
            admitted: t.admitted.clone(),
            target_host,
            policy: t.admitted.policy().to_string(),
            tap: t.tap.clone(),
            ending: ending.clone(),
            resume: t.state.clone(),
        });
        if let Some(tx) = self.started_tx.take() {
            let _ = tx.send(AuthOutcome::Resumed(super::front::Resumed {
                attach: t.attach,
                open_channels: self.open_channels.clone(),
                ending,
                client: self.client.clone(),
            }));
        }
    }

    /// Tell the session which cipher this client connection negotiated (from its KEXINIT).
    fn note_crypto(&self, shared: &crate::session::SessionShared) {
        let Some(offer) = self.client_offer.get() else {
            return;
        };
        let ciphers: Vec<&str> = self.ciphers.iter().map(String::as_str).collect();
        let macs: Vec<&str> = russh::Preferred::DEFAULT
            .mac
            .iter()
            .map(|m| m.as_ref())
            .collect();
        if let Some(c) = super::kexinit::negotiated(offer, &ciphers, &macs) {
            shared.set_client_crypto(c);
        }
    }

    pub(super) fn key_registered(&self, key: &PublicKey) -> bool {
        self.login.is_some()
            && self
                .broker
                .user(&self.user())
                .is_some_and(|u| u.keys.iter().any(|k| k.key_data() == key.key_data()))
    }

    pub(super) async fn on_auth_none(&mut self, user: &str) -> Result<Auth, russh::Error> {
        self.note_login(user);
        Ok(reject(all_methods()))
    }

    /// A key the client offers: accepted when it is the user's, so that the client signs with it.
    pub(super) fn on_key_offered(&mut self, user: &str, key: &PublicKey) -> Auth {
        self.note_login(user);
        if self.refusal.is_none() && self.key_registered(key) {
            return Auth::Accept;
        }
        let fp = key.fingerprint(Default::default()).to_string();
        if !self.offered_keys.contains(&fp) && self.offered_keys.len() < MAX_OFFERED_KEYS {
            self.offered_keys.push(fp);
        }
        // russh waits `auth_rejection_time` from the request before sending this, whoever asks.
        reject(all_methods())
    }

    /// The client proved it holds the key (russh verified the signature): admission.
    pub(super) async fn on_key_verified(&mut self, user: &str, key: &PublicKey) -> Auth {
        self.note_login(user);
        if self.refusal.is_some() || !self.key_registered(key) {
            return reject(all_methods());
        }
        self.admit("publickey").await
    }

    pub(super) async fn on_auth_password(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<Auth, russh::Error> {
        self.note_login(user);
        if self.refusal.is_some() {
            return Ok(reject(only_kbd()));
        }
        match self.check(password).await {
            Verdict::Ok => Ok(self.admit("password").await),
            v => {
                self.failed(v);
                // russh delays the rejection to `auth_rejection_time` after the request.
                Ok(reject(all_methods()))
            }
        }
    }

    pub(super) async fn on_auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, russh::Error> {
        let started = tokio::time::Instant::now();
        self.note_login(user);
        // The client's own name, made printable, in the prompt: the same for everyone.
        let name: String = self
            .throttle_name()
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let prompt = || vec![(format!("Password for {name}@wardengate: ").into(), false)];
        if let Some((method, step)) = self.step_up.take() {
            if self.kbd != Kbd::AwaitingKey {
                // Shown with no prompt: the client answers at once, and that answer waits.
                self.kbd = Kbd::AwaitingKey;
                let text = step.prompt.clone();
                self.step_up = Some((method, step));
                return Ok(show(text, vec![]));
            }
            let session = step.session.clone();
            let waited = match self.peer_socket.as_ref().and_then(|s| s.try_clone().ok()) {
                Some(socket) => tokio::select! {
                    r = step.wait() => r,
                    _ = client_gone(socket) => Err("wardengate: withdrawn: the client left".into()),
                },
                None => step.wait().await,
            };
            return Ok(match waited {
                Ok(()) => {
                    self.kbd = Kbd::Idle;
                    // The same session goes on: its id comes back with the login.
                    if let Some(l) = self.login.as_mut() {
                        l.waiting = session;
                    }
                    self.admit(&method).await
                }
                Err(why) => {
                    self.broker
                        .refused(&self.raw_login, &self.client, "mfa_failed", &why);
                    self.refusal_audited = true;
                    self.refusal = Some(why.clone());
                    self.kbd = Kbd::ShowingRefusal;
                    show(why, vec![])
                }
            });
        }
        if response.is_none() || self.kbd == Kbd::Idle {
            if let Some(msg) = self.refusal.clone() {
                self.kbd = Kbd::ShowingRefusal;
                return Ok(show(msg, vec![]));
            }
            // Everyone is asked for a password: known or not, with a password or not.
            self.kbd = Kbd::AskingPassword;
            return Ok(show(String::new(), prompt()));
        }
        match self.kbd {
            Kbd::AskingPassword => {
                let password = response
                    .and_then(|mut r| r.next())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let verdict = self.check(&password).await;
                if verdict == Verdict::Ok {
                    let auth = self.admit("keyboard-interactive").await;
                    if auth == Auth::Accept {
                        return Ok(auth);
                    }
                    if let Some((_, step)) = &self.step_up {
                        // The password was right; the security key is asked for in this round.
                        self.kbd = Kbd::AwaitingKey;
                        return Ok(show(step.prompt.clone(), vec![]));
                    }
                }
                self.failed(verdict);
                // russh delays rejections but not prompts: wait here the same time.
                tokio::time::sleep_until(started + self.rejection_time).await;
                if self.password_failures < MAX_PASSWORD_TRIES {
                    return Ok(show(
                        "wardengate: access denied, try again".into(),
                        prompt(),
                    ));
                }
                self.refusal = Some(ACCESS_DENIED.to_string());
                self.kbd = Kbd::ShowingRefusal;
                Ok(show(ACCESS_DENIED.to_string(), vec![]))
            }
            // The refusal was shown. OpenSSH treats an empty method list as "try anything", so
            // end the connection instead; the client prints "Connection closed".
            Kbd::ShowingRefusal | Kbd::Idle | Kbd::AwaitingKey => Err(russh::Error::Disconnect),
        }
    }
}

impl<B: SshBroker> Drop for Front<B> {
    fn drop(&mut self) {
        // A client that gave up after offering only unregistered keys never reached a point where
        // the failure was audited.
        if self.admitted.is_none() && !self.refusal_audited && !self.offered_keys.is_empty() {
            let (kind, why) = self
                .why_not()
                .unwrap_or(("bad_key", "no registered public key was offered".into()));
            let msg = format!("{why} (offered: {})", self.offered_keys.join(", "));
            self.broker
                .refused(&self.raw_login, &self.client, kind, &msg);
        }
    }
}
