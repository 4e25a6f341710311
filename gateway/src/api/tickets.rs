//! One-time links for the browser pages: a WebSocket cannot carry the operator's bearer token,
//! so the page spends a ticket that was issued to the operator for one session or recording.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::common::{internal, ApiError, Caller};

/// How long a shadow link can wait to be opened.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// The most links waiting at once (older ones are dropped first).
const MAX_TICKETS: usize = 1024;

/// What a link opens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Purpose {
    /// A live session, read-only.
    Shadow,
    /// A desktop recording, from `from_ms`, at `speed` times real time.
    Replay { speed: f64, from_ms: u64 },
}

struct Ticket {
    /// The session (shadow) or recording (replay).
    what: String,
    purpose: Purpose,
    caller: Caller,
    expires: Instant,
}

/// Shadow links not opened yet.
#[derive(Clone, Default)]
pub struct Tickets(Arc<Mutex<HashMap<String, Ticket>>>);

impl Tickets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticket>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn issue(
        &self,
        what: &str,
        purpose: Purpose,
        caller: &Caller,
    ) -> Result<String, ApiError> {
        let id = crate::util::new_token().map_err(internal)?;
        let now = Instant::now();
        crate::util::insert_expiring(
            &mut self.lock(),
            id.clone(),
            Ticket {
                what: what.to_string(),
                purpose,
                caller: caller.clone(),
                expires: now + TICKET_TTL,
            },
            MAX_TICKETS,
            |t| t.expires,
        );
        Ok(id)
    }

    /// Spend a ticket for `what` (a replay when `replay`); who it was issued to, and for what.
    pub(crate) fn spend(
        &self,
        ticket: &str,
        what: &str,
        replay: bool,
    ) -> Result<(Caller, Purpose), ApiError> {
        let spent = self.lock().remove(ticket);
        match spent {
            Some(t)
                if t.expires > Instant::now()
                    && t.what == what
                    && replay == matches!(t.purpose, Purpose::Replay { .. }) =>
            {
                Ok((t.caller, t.purpose))
            }
            _ => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                format!(
                    "this link was used already, has expired (links last {} s) or is for \
                     something else: ask for a new one with `wgctl {} {what} --browser`",
                    TICKET_TTL.as_secs(),
                    if replay {
                        "recording play"
                    } else {
                        "session shadow"
                    }
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Caller {
        Caller::all("carol")
    }

    /// A ticket to shadow `sess_a`, issued to carol.
    fn shadow_a(t: &Tickets) -> String {
        t.issue("sess_a", Purpose::Shadow, &admin())
            .expect("issued")
    }

    #[test]
    fn a_ticket_opens_one_thing_once() {
        let t = Tickets::default();
        let a = shadow_a(&t);
        // For another session, or as a replay: refused, and the ticket is gone.
        assert_eq!(
            t.spend(&a, "sess_b", false).err().map(|e| e.0),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert!(
            t.spend(&a, "sess_a", false).is_err(),
            "a refused ticket is spent"
        );
        let b = shadow_a(&t);
        assert!(
            t.spend(&b, "sess_a", true).is_err(),
            "a shadow ticket is not a replay's"
        );
        let c = shadow_a(&t);
        let (who, what) = t.spend(&c, "sess_a", false).expect("spent");
        assert_eq!((who.name.as_str(), what), ("carol", Purpose::Shadow));
        let err = t.spend(&c, "sess_a", false).expect_err("used already");
        assert!(
            err.1.contains("wgctl session shadow sess_a --browser"),
            "{}",
            err.1
        );
        let r = t
            .issue(
                "sess_a",
                Purpose::Replay {
                    speed: 4.0,
                    from_ms: 0,
                },
                &admin(),
            )
            .expect("issued");
        let (_, what) = t.spend(&r, "sess_a", true).expect("spent");
        assert_eq!(
            what,
            Purpose::Replay {
                speed: 4.0,
                from_ms: 0
            }
        );
    }

    #[test]
    fn an_expired_ticket_opens_nothing() {
        let t = Tickets::default();
        let a = shadow_a(&t);
        t.lock().get_mut(&a).expect("kept").expires = Instant::now();
        assert!(t.spend(&a, "sess_a", false).is_err());
    }
}
