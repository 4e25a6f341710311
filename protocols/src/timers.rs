//! Idle and lifespan deadlines, from the admitting policy, for any protocol's supervisor.
//!
//! Idle is measured from the last meaningful input ([`SessionShared::last_input_ms`]). At the idle
//! timeout the user is warned once; if no input arrives within the grace window, the session ends
//! with reason `idle`. Input during the grace clears the warning. The lifespan is absolute: a
//! warning `lifespan_warning` before the end, then reason `lifespan`.
//!
//! [`Timers::poll`] is pure (the caller passes the time), so the rules are unit-tested without
//! sleeping; the supervisor sleeps for the returned [`Due::Wait`] and polls again. Input only ever
//! moves deadlines later, so sleeping until the computed deadline never misses one.

use std::time::Duration;

use wardengate_policy::Policy;

use crate::session::SessionShared;

/// What the supervisor should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing before this long from now.
    Wait(Duration),
    /// Warn the user: the session closes after `grace` without input.
    IdleWarning { idle: Duration, grace: Duration },
    /// Close the session: reason `idle`.
    Idle { idle: Duration },
    /// Warn the user: the session reaches its maximum lifespan in `left`.
    LifespanWarning { left: Duration, max: Duration },
    /// Close the session: reason `lifespan`.
    Lifespan { max: Duration },
}

#[derive(Debug, Clone)]
pub struct Timers {
    idle_timeout: u64,
    idle_grace: u64,
    lifespan: Option<u64>,
    lifespan_warning: u64,
    started_ms: u64,
    idle_warned_at: Option<u64>,
    lifespan_warned: bool,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Timers {
    pub fn new(policy: &Policy, started_ms: u64) -> Timers {
        Timers {
            idle_timeout: ms(policy.idle_timeout.get()).max(1),
            idle_grace: ms(policy.idle_grace.get()),
            lifespan: (!policy.max_lifespan.is_zero()).then(|| ms(policy.max_lifespan.get())),
            lifespan_warning: ms(policy.lifespan_warning.get()),
            started_ms,
            idle_warned_at: None,
            lifespan_warned: false,
        }
    }

    /// The idle warning is outstanding (shown, no input since).
    pub fn idle_warned(&self) -> bool {
        self.idle_warned_at.is_some()
    }

    /// Decide what is due at `now` given the last input (`None`: none since the start).
    pub fn poll_at(&mut self, last_input_ms: Option<u64>, now: u64) -> Due {
        let d = Duration::from_millis;
        let mut next = u64::MAX;
        if let Some(max) = self.lifespan {
            let end = self.started_ms + max;
            if now >= end {
                return Due::Lifespan { max: d(max) };
            }
            let warn_at = end.saturating_sub(self.lifespan_warning);
            if !self.lifespan_warned && now >= warn_at {
                self.lifespan_warned = true;
                return Due::LifespanWarning {
                    left: d(end - now),
                    max: d(max),
                };
            }
            next = next.min(if self.lifespan_warned { end } else { warn_at });
        }
        let last = last_input_ms.unwrap_or(self.started_ms);
        if let Some(warned) = self.idle_warned_at {
            if last > warned {
                self.idle_warned_at = None;
            } else if now >= warned + self.idle_grace {
                return Due::Idle {
                    idle: d(now.saturating_sub(last)),
                };
            } else {
                next = next.min(warned + self.idle_grace);
            }
        }
        if self.idle_warned_at.is_none() {
            let due = last + self.idle_timeout;
            if now >= due {
                self.idle_warned_at = Some(now);
                return Due::IdleWarning {
                    idle: d(now.saturating_sub(last)),
                    grace: d(self.idle_grace),
                };
            }
            next = next.min(due);
        }
        Due::Wait(d(next.saturating_sub(now).max(5)))
    }

    pub fn poll(&mut self, shared: &SessionShared) -> Due {
        self.poll_at(shared.last_input_ms(), crate::session::now_ms())
    }
}

pub use wardengate_recorder::time::human;

#[cfg(test)]
mod tests {
    use super::*;
    use wardengate_policy::Dur;

    fn policy(idle: u64, grace: u64, life: u64, warn: u64) -> Policy {
        let mut p = Policy::named("t");
        p.idle_timeout = Dur(Duration::from_millis(idle));
        p.idle_grace = Dur(Duration::from_millis(grace));
        p.max_lifespan = Dur(Duration::from_millis(life));
        p.lifespan_warning = Dur(Duration::from_millis(warn));
        p
    }

    #[test]
    fn idle_warns_then_closes_unless_input_arrives() {
        let mut t = Timers::new(&policy(1000, 500, 0, 0), 0);
        assert_eq!(t.poll_at(None, 100), Due::Wait(Duration::from_millis(900)));
        assert!(matches!(t.poll_at(None, 1000), Due::IdleWarning { .. }));
        assert_eq!(t.poll_at(None, 1200), Due::Wait(Duration::from_millis(300)));
        assert!(matches!(t.poll_at(None, 1500), Due::Idle { .. }));
        // Input during the grace clears the warning and restarts the clock.
        let mut t = Timers::new(&policy(1000, 500, 0, 0), 0);
        assert!(matches!(t.poll_at(None, 1000), Due::IdleWarning { .. }));
        assert_eq!(
            t.poll_at(Some(1300), 1500),
            Due::Wait(Duration::from_millis(800))
        );
        assert!(!t.idle_warned());
        assert!(matches!(
            t.poll_at(Some(1300), 2300),
            Due::IdleWarning { .. }
        ));
    }

    #[test]
    fn lifespan_warns_once_then_ends() {
        let mut t = Timers::new(&policy(60_000, 1000, 10_000, 3000), 0);
        assert_eq!(
            t.poll_at(Some(6000), 6000),
            Due::Wait(Duration::from_millis(1000))
        );
        assert_eq!(
            t.poll_at(Some(7000), 7000),
            Due::LifespanWarning {
                left: Duration::from_millis(3000),
                max: Duration::from_secs(10)
            }
        );
        assert_eq!(
            t.poll_at(Some(7000), 7001),
            Due::Wait(Duration::from_millis(2999))
        );
        assert!(matches!(
            t.poll_at(Some(9999), 10_000),
            Due::Lifespan { .. }
        ));
    }
}
