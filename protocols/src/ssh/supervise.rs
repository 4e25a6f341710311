//! The session supervisor: one task per SSH session that watches the client connection, the
//! target leg, the operator's control channel, the policy's idle and lifespan deadlines and
//! gateway shutdown, and decides how and when the session ends.
//!
//! With `reconnect.mode = "resume"`, a client connection that drops while a pty channel is open
//! does not end the session: the supervisor waits (state `paused`) for a new connection of the same
//! actor to take over, for at most the policy's reconnect grace.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;
use wardengate_policy::Admitted;

use super::back::{self, LegState};
use super::brake::OpenChannels;
use super::front::Started;
use super::relay;
use super::resume::{ClientConn, ResumeState, ResumeTicket};
use super::SshBroker;
use crate::session::{Control, Outcome, SessionLink};
use crate::supervisor::{Ended, Front, Input, Say, Supervisor};
use crate::timers::human;

/// How the attached phase ended.
enum Next {
    /// The session is over; the client connection is still up and was told why.
    Done(Outcome),
    /// The client connection ended cleanly (or with an error, no channel open).
    Exit(Outcome),
    /// The client connection dropped with channels open.
    Dropped(String),
}

struct Session<B: SshBroker> {
    broker: Arc<B>,
    link: SessionLink,
    sid: String,
    target: String,
    leg: watch::Receiver<LegState>,
    admitted: Admitted,
    resume: Arc<ResumeState>,
    attach_tx: mpsc::Sender<ClientConn>,
    attach_rx: mpsc::Receiver<ClientConn>,
    shutdown: CancellationToken,
    /// Handed off and waiting for the new owner to take a terminal over: who, for how long,
    /// and the re-attach count when their connection came (the takeover is complete once a
    /// terminal is re-attached; a connection that only runs a command leaves it waiting).
    handoff: Option<(String, Duration, Option<usize>)>,
}

pub(crate) async fn supervise<B: SshBroker>(
    broker: Arc<B>,
    mut conn: ClientConn,
    started: Started,
    shutdown: CancellationToken,
) {
    let Started {
        link,
        target,
        leg,
        admitted,
        resume,
        ..
    } = started;
    let (attach_tx, attach_rx) = mpsc::channel(1);
    let mut s = Session {
        broker,
        sid: link.shared.id.clone(),
        link,
        target,
        leg,
        admitted,
        resume,
        attach_tx,
        attach_rx,
        shutdown,
        handoff: None,
    };
    tracing::debug!(session = %s.sid, "supervising");
    let outcome = loop {
        let next = s.attached(&mut conn).await;
        if let Some((_, _, Some(at))) = &s.handoff {
            if s.resume.reattached() > *at {
                s.handoff = None;
            }
        }
        let next = match next {
            // A re-attached connection that only ran a command leaves the paused shell paused.
            Next::Exit(Outcome::ClientExit) if s.may_pause() && s.resume.resumable() => {
                Next::Dropped("the client left; the paused shell still waits".into())
            }
            next => next,
        };
        match next {
            Next::Exit(o) => break o,
            Next::Done(o) => {
                finish_client(&mut conn).await;
                break o;
            }
            Next::Dropped(detail) => {
                conn.ending.cancel();
                s.resume.detach_connection(&conn.open_channels);
                match s.paused(detail).await {
                    Ok(next) => conn = next,
                    Err(o) => break o,
                }
            }
        }
    };
    back::close(&s.leg).await;
    info!(session = %s.sid, target = %s.target, reason = outcome.reason(), "session ended");
    if let Some(tap) = s.link.tap.take() {
        tap.marker("end", outcome.reason()).await;
    }
    s.broker.ended(&s.sid, outcome);
}

/// A session whose client connection ended before its supervisor started: end it the way the
/// supervisor would have.
pub(crate) async fn end_unsupervised<B: SshBroker>(
    broker: Arc<B>,
    started: Started,
    result: Result<(), russh::Error>,
) {
    let Started { mut link, leg, .. } = started;
    let failed = match &*leg.borrow() {
        LegState::Failed(e) => Some(e.clone()),
        _ => None,
    };
    let outcome = match (failed, result) {
        (Some(msg), _) => Outcome::TargetFailed(msg),
        (None, Ok(())) | (None, Err(russh::Error::Disconnect)) | (None, Err(russh::Error::HUP)) => {
            Outcome::ClientExit
        }
        (None, Err(e)) => Outcome::Error(format!("client connection: {e}")),
    };
    back::close(&leg).await;
    if let Some(tap) = link.tap.take() {
        tap.marker("end", outcome.reason()).await;
    }
    info!(session = %link.shared.id, reason = outcome.reason(), "session ended before supervision");
    broker.ended(&link.shared.id, outcome);
}

/// Let the client leg deliver the goodbye first: its session loop may be inside a handler waiting
/// for a target reply (a terminate during setup). A target answers requests in milliseconds, so
/// after a short grace whatever still waits (a target leg slow to come up) is cancelled, then the
/// client leg gets the rest of its time to close.
async fn finish_client(conn: &mut ClientConn) {
    let done = tokio::time::timeout(Duration::from_millis(300), &mut conn.running)
        .await
        .is_ok();
    conn.ending.cancel();
    if !done {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut conn.running).await;
    }
}

/// The client leg, for the supervisor: texts go to the client's open channels (stderr of a
/// shell), the end is the text and a disconnect.
struct SshFront<'a> {
    handle: &'a russh::server::Handle,
    channels: &'a OpenChannels,
}

impl Front for SshFront<'_> {
    const INPUT: Input = Input {
        noun: "input",
        unless: "unless you type something",
    };
    const HANDS_OFF: bool = true;

    async fn say(&mut self, text: &str, _: Say) {
        relay::say(self.handle, self.channels, text).await;
    }

    async fn end(&mut self, _: &Outcome, text: &str) {
        relay::say_and_disconnect(self.handle, self.channels, text).await;
    }
}

impl<B: SshBroker> Session<B> {
    fn policy(&self) -> &str {
        self.admitted.policy()
    }

    /// A dropped client may come back: the policy says so, or the session waits for the
    /// owner it was handed to.
    fn may_pause(&self) -> bool {
        self.handoff.is_some()
            || self.admitted.settings().reconnect.mode == wardengate_policy::ReconnectMode::Resume
    }

    /// Controls that do not end the session while it is paused: shadow markers (no client to
    /// show a banner to).
    async fn side_control(&self, ctl: Control) {
        if let Control::Shadow { marker, detail, .. } = ctl {
            self.marker(marker, detail).await;
        }
    }

    /// The session changes hands: from now on the merged policy governs it, and a connection of
    /// the new owner may take it over.
    async fn hand_off(&mut self, ctl: Control) -> Option<String> {
        let Control::Handoff {
            from,
            to,
            reason,
            admitted,
            window,
        } = ctl
        else {
            return None;
        };
        self.marker("handoff", format!("{from} -> {to}: {reason}"))
            .await;
        info!(session = %self.sid, %from, %to, "session handed off");
        self.admitted = admitted;
        self.handoff = Some((to.clone(), window, None));
        Some(to)
    }
    async fn marker(&self, kind: &str, detail: String) {
        if let Some(tap) = &self.link.tap {
            tap.marker(kind, detail).await;
        }
    }

    /// Relay with a client attached until something ends that phase.
    async fn attached(&mut self, conn: &mut ClientConn) -> Next {
        loop {
            let broker = self.broker.clone();
            let sid = self.sid.clone();
            let policy = self.policy().to_string();
            let notify = move |kind: &'static str, text: String| {
                broker.notice(&sid, kind, json!({"policy": policy, "message": text}));
            };
            let ctl = {
                let (running, handle, channels) =
                    (&mut conn.running, &conn.handle, &conn.open_channels);
                let leg = &self.leg;
                let mut target_gone = self.leg.clone();
                let relay = async move {
                    tokio::select! {
                        r = running => {
                            // A client that gave up because the target leg failed (its channel open
                            // was refused) leaves a failed session, whichever wakeup came first.
                            if let LegState::Failed(msg) = &*leg.borrow() {
                                return Next::Exit(Outcome::TargetFailed(msg.clone()));
                            }
                            let dropped = channels.lock().map(|o| !o.is_empty()).unwrap_or(false);
                            match r {
                                Ok(()) | Err(russh::Error::Disconnect) | Err(russh::Error::HUP) if !dropped => Next::Exit(Outcome::ClientExit),
                                Err(e) if !dropped => Next::Exit(Outcome::Error(format!("client connection: {e}"))),
                                Ok(()) => Next::Dropped("the client connection closed with channels open".into()),
                                Err(e) => Next::Dropped(format!("the client connection was lost: {e}")),
                            }
                        }
                        failure = back::wait_failed(&mut target_gone) => {
                            let text = format!("wardengate: {failure}");
                            relay::say_and_disconnect(handle, channels, &text).await;
                            Next::Done(failure.outcome())
                        }
                    }
                };
                tokio::pin!(relay);
                let supervisor =
                    Supervisor::new(&mut self.link, &self.admitted, &self.shutdown, &notify);
                let mut front = SshFront { handle, channels };
                match supervisor.run(&mut front, relay).await {
                    Ended::Relay(next) => return next,
                    Ended::Gateway(outcome) => return Next::Done(outcome),
                    Ended::Handoff(ctl) => ctl,
                }
            };
            if let Some(to) = self.hand_off(ctl).await {
                // The old owner's terminals stay on the target for the new owner.
                self.resume.detach_connection(&conn.open_channels);
                let text = format!("wardengate: session handed off to {to}; this connection is detached (the session goes on under {to})");
                relay::say_and_disconnect(&conn.handle, &conn.open_channels, &text).await;
                finish_client(conn).await;
                return Next::Dropped(format!("handed off to {to}"));
            }
        }
    }

    fn ticket(&self) -> ResumeTicket {
        ResumeTicket {
            admitted: self.admitted.clone(),
            shared: self.link.shared.clone(),
            leg: self.leg.clone(),
            tap: self.link.tap.clone(),
            state: self.resume.clone(),
            attach: self.attach_tx.clone(),
            target: self.target.clone(),
        }
    }

    /// The client dropped: wait for a re-attach if the policy and the session allow it.
    async fn paused(&mut self, detail: String) -> Result<ClientConn, Outcome> {
        let settings = self.admitted.settings();
        if !self.may_pause() || !self.resume.resumable() {
            return Err(Outcome::ClientDropped(detail));
        }
        let grace = match &self.handoff {
            Some((_, window, _)) => *window,
            None => settings.reconnect.grace.get(),
        };
        self.marker("paused", detail.clone()).await;
        self.broker.paused(&self.sid, self.ticket());
        info!(session = %self.sid, "client dropped; session paused for {}", human(grace));
        let mut deadline = tokio::time::Instant::now() + grace;
        let mut target_gone = self.leg.clone();
        loop {
            let channels_changed = self.link.shared.channels_changed.notified();
            if self.link.shared.channels() == 0 {
                return Err(Outcome::TargetClosed);
            }
            tokio::select! {
                conn = self.attach_rx.recv() => {
                    let Some(conn) = conn else { continue };
                    self.link.shared.note_activity();
                    let reattached = self.resume.reattached();
                    match self.handoff.as_mut() {
                        Some((to, _, at)) => {
                            *at = Some(reattached);
                            let detail = format!("by {to} from {}", conn.client.addr);
                            self.marker("taken-over", detail).await;
                        }
                        None => self.marker("resumed", format!("from {}", conn.client.addr)).await,
                    }
                    self.broker.resumed(&self.sid, &conn.client);
                    return Ok(conn);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Outcome::ClientDropped(match &self.handoff {
                        Some((to, window, _)) => format!("{detail}; {to} did not take it over within {}", human(*window)),
                        None => format!("{detail}; not resumed within {}", human(grace)),
                    }));
                }
                ctl = self.link.control.recv() => match ctl {
                    Some(Control::Terminate { by, reason }) => {
                        self.marker("terminated", format!("by {by}: {reason}")).await;
                        return Err(Outcome::Terminated { by, reason });
                    }
                    Some(Control::End { reason, message }) => return Err(Outcome::Policy { reason, message }),
                    Some(ctl @ Control::Handoff { .. }) => {
                        // Paused and handed off: the new owner gets the whole window.
                        if let Some((_, window, _)) = self.hand_off(ctl).await.and(self.handoff.clone()) {
                            deadline = tokio::time::Instant::now() + window;
                            self.broker.paused(&self.sid, self.ticket());
                        }
                    }
                    Some(ctl) => self.side_control(ctl).await,
                    None => {}
                },
                failure = back::wait_failed(&mut target_gone) => {
                    return Err(failure.outcome());
                }
                _ = channels_changed => {}
                _ = self.shutdown.cancelled() => return Err(Outcome::Shutdown),
            }
        }
    }
}
