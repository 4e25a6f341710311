//! Authentication of the client leg: public key, password, and keyboard-interactive (a password
//! prompt, or a refusal message). Part of [`Front`](super::front::Front), split out for reading.
//!
//! A refusal the user must understand before authentication (unknown user, malformed login, wrong
//! password, no registered key) is shown through keyboard-interactive: OpenSSH prints the
//! `instruction` of an info request with no prompts, then the gateway ends the connection.
//! A denial after authentication (unknown target, no permission) is accepted and explained on
//! every channel instead (see `front.rs`), so that BatchMode clients see it too.

use russh::keys::PublicKey;
use russh::server::{self, Auth};
use russh::{MethodKind, MethodSet};

use super::back;
use super::front::{AdmittedSession, AuthOutcome, Front, Kbd, Started, MAX_PASSWORD_TRIES};
use super::{Login, SshBroker, TargetPlan};

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
    /// Parse the login once per distinct username (a client may change it between attempts).
    pub(super) fn note_login(&mut self, user: &str) {
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

    pub(super) fn user(&self) -> String {
        self.login
            .as_ref()
            .map(|l| l.user.clone())
            .unwrap_or_default()
    }

    pub(super) fn refuse(&mut self, kind: &str, msg: String) {
        self.broker
            .refused(&self.raw_login, &self.client, kind, &msg);
        self.refusal_audited = true;
        self.refusal = Some(msg);
    }

    pub(super) async fn admit(&mut self, method: &str) -> Auth {
        let Some(login) = self.login.clone() else {
            return reject(only_kbd());
        };
        match self.broker.admit(&login, method, &self.client).await {
            Ok(super::Admission::New(plan)) => {
                self.start(plan);
                Auth::Accept
            }
            Ok(super::Admission::Resume(ticket)) => {
                self.start_resumed(ticket);
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

    pub(super) fn start(&mut self, plan: TargetPlan) {
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
        let ending = tokio_util::sync::CancellationToken::new();
        let resume = super::resume::ResumeState::new(link.hub.clone());
        self.admitted = Some(AdmittedSession {
            shared: link.shared.clone(),
            leg: leg.clone(),
            allow_port_forwarding: admitted.allow_port_forwarding(),
            policy: admitted.policy().to_string(),
            tap: link.tap.clone(),
            ending: ending.clone(),
            resume: resume.clone(),
        });
        if let Some(tx) = self.started_tx.take() {
            let _ = tx.send(AuthOutcome::Admitted(Started {
                link,
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
        self.admitted = Some(AdmittedSession {
            shared: t.shared.clone(),
            leg: t.leg.clone(),
            allow_port_forwarding: t.admitted.allow_port_forwarding(),
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

    pub(super) fn key_registered(&self, key: &PublicKey) -> bool {
        self.broker
            .user(&self.user())
            .is_some_and(|u| u.keys.iter().any(|k| k.key_data() == key.key_data()))
    }

    pub(super) async fn on_auth_none(&mut self, user: &str) -> Result<Auth, russh::Error> {
        self.note_login(user);
        Ok(reject(all_methods()))
    }

    pub(super) async fn on_auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, russh::Error> {
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

    pub(super) async fn on_auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, russh::Error> {
        self.note_login(user);
        if self.refusal.is_some() || !self.key_registered(key.public_key) {
            return Ok(reject(all_methods()));
        }
        Ok(self.admit("publickey").await)
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

    pub(super) async fn on_auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, russh::Error> {
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
