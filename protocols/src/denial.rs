//! The one refusal of admission every protocol maps to its wire form, and the second factor or
//! approval it may still wait for (`StepUp`).

/// Why admission refused a session, in the one vocabulary of every protocol. Each protocol gives
/// it its own wire form: SSH shows `message` on the channels the client opens, PostgreSQL sends
/// an ErrorResponse whose SQLSTATE follows `kind` (`postgres::sqlstate`) with the limit as its
/// detail, RDP refuses in its own terms (the audit has the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `unknown_user`, `unknown_target`, `unknown_account`, `no_permission`, `wrong_protocol`,
    /// `concurrency`, `credential_unavailable`, `recording_unavailable`, `internal`, ...
    pub kind: &'static str,
    /// What the person is shown (already audited as `session.denied`).
    pub message: String,
    /// The concurrency limit that refused: scope, limit, current and subject.
    pub limit: Option<wardengate_policy::LimitDenial>,
    /// Not refused yet: the policy asks for a second factor the person can give now (SSH shows
    /// the prompt and waits; nothing was recorded as denied).
    pub step_up: Option<Box<StepUp>>,
}

impl Denial {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Denial {
        Denial {
            kind,
            message: message.into(),
            limit: None,
            step_up: None,
        }
    }
}

/// A second factor asked for during admission: what to show, and the answer to wait for.
#[derive(Debug, Clone)]
pub struct StepUp {
    /// One line for the person (`Security key required by policy sre-prod: open <link> within
    /// 2m and touch your key`).
    pub prompt: String,
    /// `None` until the proof is made (`Ok`) or refused (`Err` with the reason shown).
    pub done: tokio::sync::watch::Receiver<Option<Result<(), String>>>,
    /// How long to wait for it.
    pub within: std::time::Duration,
    /// What the person is told when it does not come in time.
    pub late: String,
    /// The session id the wait belongs to: the login after it carries it back
    /// ([`crate::session::Login::waiting`]).
    pub session: Option<String>,
}

impl PartialEq for StepUp {
    fn eq(&self, other: &StepUp) -> bool {
        self.prompt == other.prompt && self.within == other.within
    }
}

impl Eq for StepUp {}

impl StepUp {
    /// Wait for the proof: `Err` with what to tell the person when it is refused or late.
    pub async fn wait(mut self) -> Result<(), String> {
        let within = self.within;
        let got = tokio::time::timeout(within, self.done.wait_for(Option::is_some)).await;
        match got {
            Ok(Ok(v)) => v.clone().unwrap_or(Err(String::new())),
            Ok(Err(_)) => Err("wardengate: the security-key check was withdrawn".into()),
            Err(_) => Err(self.late),
        }
    }
}
