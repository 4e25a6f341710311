//! The session supervisor every protocol shares: while the relay runs, it watches the policy's
//! idle and lifespan deadlines ([`Timers`]), the operator's control channel and gateway shutdown,
//! and decides how and when the session ends.
//!
//! A protocol supplies a [`Front`] (how to show the person a text, how to end the client leg in
//! its own terms) and its relay as a future that ends when a connection does. The supervisor
//! audits (through `notify`) and records (a marker) what it does, so every protocol warns, ends
//! and explains itself the same way; only the wire form differs.

use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;
use wardengate_policy::Admitted;

use crate::session::{Control, Outcome, SessionLink};
use crate::timers::{human, Due, Timers};

/// What a text shown to the person is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// An idle or lifespan warning.
    Warning,
    /// A notice from the gateway (a handoff offered, declined or expired).
    Notice,
    /// An observer attached or detached (policy `shadow = "visible"`).
    Banner,
}

/// What counts as input for the idle deadline, in the words the warnings use.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    /// "input": the session closed after 5m without *input*.
    pub noun: &'static str,
    /// "unless you type something": it will be closed in 30s *unless you type something*.
    pub unless: &'static str,
}

/// The protocol's side of the supervisor: the client leg, in the protocol's own terms.
pub trait Front: Send {
    /// What counts as input, for the idle texts.
    const INPUT: Input;
    /// Whether a session of this protocol can change hands ([`Control::Handoff`]); when it
    /// cannot, a handoff is ignored (the gateway refuses to offer one).
    const HANDS_OFF: bool = false;
    /// Show `text` to the person; never waits on a slow client.
    fn say(&mut self, text: &str, kind: Say) -> impl Future<Output = ()> + Send;
    /// The gateway ends the session (a deadline, an operator, a rule, shutdown): tell the
    /// client why (`text`), in the protocol's terms, and close its leg (or ask the relay to).
    fn end(&mut self, outcome: &Outcome, text: &str) -> impl Future<Output = ()> + Send;
}

/// How the supervised phase ended.
#[derive(Debug)]
pub enum Ended<X> {
    /// The relay ended by itself (a connection closed or failed), with what it said.
    Relay(X),
    /// The gateway ended the session, and the client was told why.
    Gateway(Outcome),
    /// The session changes hands (only for a [`Front::HANDS_OFF`] protocol).
    Handoff(Control),
}

/// What the supervisor needs of the session.
pub struct Supervisor<'a> {
    pub link: &'a mut SessionLink,
    pub admitted: &'a Admitted,
    pub shutdown: &'a CancellationToken,
    /// Audits what happened (`session.idle_warning`, ...) with the text shown.
    pub notify: &'a (dyn Fn(&'static str, String) + Send + Sync),
}

impl<'a> Supervisor<'a> {
    pub fn new(
        link: &'a mut SessionLink,
        admitted: &'a Admitted,
        shutdown: &'a CancellationToken,
        notify: &'a (dyn Fn(&'static str, String) + Send + Sync),
    ) -> Supervisor<'a> {
        Supervisor {
            link,
            admitted,
            shutdown,
            notify,
        }
    }

    /// Supervise until the relay ends or the gateway ends the session.
    pub async fn run<F, R>(self, front: &mut F, mut relay: Pin<&mut R>) -> Ended<R::Output>
    where
        F: Front,
        R: Future,
    {
        let Supervisor {
            link,
            admitted,
            shutdown,
            notify,
        } = self;
        let mut timers = Timers::new(admitted.settings(), link.shared.started_ms);
        loop {
            let wait = match timers.poll(&link.shared) {
                Due::Wait(d) => d,
                due => {
                    let Some(d) = describe(&due, admitted, F::INPUT) else {
                        continue;
                    };
                    notify(d.kind, d.text.clone());
                    marker(link, d.kind.trim_start_matches("session."), d.text.clone()).await;
                    match d.ends {
                        None => front.say(&d.text, Say::Warning).await,
                        Some(reason) => {
                            let outcome = Outcome::Policy {
                                reason,
                                message: d.text.clone(),
                            };
                            front.end(&outcome, &d.text).await;
                            return Ended::Gateway(outcome);
                        }
                    }
                    continue;
                }
            };
            tokio::select! {
                out = relay.as_mut() => return Ended::Relay(out),
                ctl = link.control.recv() => match ctl {
                    Some(Control::Terminate { by, reason }) => {
                        marker(link, "terminated", format!("by {by}: {reason}")).await;
                        let text = format!("wardengate: session terminated by {by}: {reason}");
                        let outcome = Outcome::Terminated { by, reason };
                        front.end(&outcome, &text).await;
                        return Ended::Gateway(outcome);
                    }
                    Some(Control::End { reason, message }) => {
                        marker(link, reason, message.clone()).await;
                        front.end(&Outcome::Policy { reason, message: message.clone() }, &message).await;
                        return Ended::Gateway(Outcome::Policy { reason, message });
                    }
                    Some(Control::Shadow { marker: kind, detail, banner }) => {
                        marker(link, kind, detail).await;
                        if let Some(text) = banner {
                            front.say(&text, Say::Banner).await;
                        }
                    }
                    Some(Control::Notice(text)) => front.say(&text, Say::Notice).await,
                    Some(ctl @ Control::Handoff { .. }) if F::HANDS_OFF => return Ended::Handoff(ctl),
                    Some(Control::Handoff { .. }) | None => {}
                },
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {
                    front.end(&Outcome::Shutdown, SHUTDOWN).await;
                    return Ended::Gateway(Outcome::Shutdown);
                }
            }
        }
    }
}

/// What every client is told when the gateway shuts down.
pub const SHUTDOWN: &str = "wardengate is shutting down; the session was closed";

/// Record a marker in the session's recording (if it is recorded).
pub async fn marker(link: &SessionLink, kind: &str, detail: String) {
    if let Some(tap) = &link.tap {
        tap.marker(kind, detail).await;
    }
}

/// A deadline, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The audit kind: `session.idle_warning`, `session.idle_timeout`, ...
    pub kind: &'static str,
    /// What the person is shown (and the audit and the recording keep).
    pub text: String,
    /// The session ends, for this reason (`idle`, `lifespan`).
    pub ends: Option<&'static str>,
}

/// The one wording of the idle and lifespan texts; `None` for [`Due::Wait`].
pub fn describe(due: &Due, admitted: &Admitted, input: Input) -> Option<Described> {
    let policy = admitted.policy();
    let (kind, text, ends) = match due {
        Due::Wait(_) => return None,
        Due::IdleWarning { idle, grace } => (
            "session.idle_warning",
            format!(
                "wardengate: this session has been idle for {}; it will be closed in {} {} (policy '{policy}')",
                human(*idle),
                human(*grace),
                input.unless
            ),
            None,
        ),
        Due::Idle { idle } => (
            "session.idle_timeout",
            format!(
                "wardengate: session closed after {} without {} (idle timeout {}, policy '{policy}')",
                human(*idle),
                input.noun,
                admitted.settings().idle_timeout
            ),
            Some("idle"),
        ),
        Due::LifespanWarning { left, max } => (
            "session.lifespan_warning",
            format!(
                "wardengate: this session reaches its maximum lifespan of {} in {} (policy '{policy}'); save your work",
                human(*max),
                human(*left)
            ),
            None,
        ),
        Due::Lifespan { max } => (
            "session.lifespan_reached",
            format!(
                "wardengate: session closed: it reached its maximum lifespan of {} (policy '{policy}')",
                human(*max)
            ),
            Some("lifespan"),
        ),
    };
    Some(Described { kind, text, ends })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SSH: Input = Input {
        noun: "input",
        unless: "unless you type something",
    };

    fn admitted() -> Admitted {
        let mut p = wardengate_policy::Policy::named("short-idle");
        p.users = vec!["alice".into()];
        let entry = wardengate_policy::Entry {
            policy: std::sync::Arc::new(p),
            source: wardengate_policy::Source {
                file: "t.toml".into(),
                line: 1,
            },
        };
        let req = wardengate_policy::Request {
            user: "alice",
            groups: &[],
            target: "web",
            target_tags: &[],
            protocol: "ssh",
            account: "root",
        };
        wardengate_policy::decide(&[entry], &req).expect("admitted")
    }

    #[test]
    fn one_wording_for_every_deadline() {
        let a = admitted();
        let s = Duration::from_secs;
        let d = describe(&Due::Wait(s(1)), &a, SSH);
        assert_eq!(d, None);
        let d = describe(
            &Due::IdleWarning {
                idle: s(120),
                grace: s(30),
            },
            &a,
            SSH,
        )
        .expect("a warning");
        assert_eq!(d.kind, "session.idle_warning");
        assert_eq!(d.ends, None);
        assert_eq!(
            d.text,
            "wardengate: this session has been idle for 2m; it will be closed in 30s unless you type something (policy 'short-idle')"
        );
        let d = describe(&Due::Idle { idle: s(150) }, &a, SSH).expect("an end");
        assert_eq!(d.ends, Some("idle"));
        assert!(
            d.text.contains("after 2m 30s without input (idle timeout"),
            "{}",
            d.text
        );
        let d = describe(&Due::Lifespan { max: s(8 * 3600) }, &a, SSH).expect("an end");
        assert_eq!(
            (d.kind, d.ends),
            ("session.lifespan_reached", Some("lifespan"))
        );
        assert!(
            d.text
                .contains("maximum lifespan of 8h (policy 'short-idle')"),
            "{}",
            d.text
        );
    }
}
