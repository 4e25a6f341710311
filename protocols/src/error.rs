//! Why a target leg could not be opened, typed, so the gateway can tell the cases apart without
//! reading messages: a secret the target no longer accepts (audited as `vault.secret_rejected`),
//! a refusal in the target's own terms (PostgreSQL: its SQLSTATE, passed to the client), or any
//! other failure (connect, TLS, handshake, host key, timeout).

/// A failure to open the target leg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target rejected the account's secret from the vault: it no longer matches, e.g. the
    /// password was changed on the target (by someone with the account's rights).
    #[error(
        "target {target} rejected the vault's secret for account '{account}' ({detail}): the \
         account's secret no longer matches the vault; an administrator must check the account \
         and update the secret (`wardengate vault set`)"
    )]
    SecretRejected {
        target: String,
        account: String,
        detail: String,
    },
    /// The target refused the session for a reason of its own (a database that does not exist,
    /// too many connections, starting up); `code` is PostgreSQL's SQLSTATE.
    #[error("target {target} refused the account {account}: {message}")]
    Refused {
        target: String,
        account: String,
        code: Option<String>,
        message: String,
    },
    /// Anything else: the target could not be reached or spoke wrongly.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for TargetError {
    fn from(s: String) -> Self {
        TargetError::Failed(s)
    }
}

impl From<&str> for TargetError {
    fn from(s: &str) -> Self {
        TargetError::Failed(s.to_string())
    }
}

/// Which leg of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The connection from the person's client to the gateway.
    Client,
    /// The connection from the gateway to the target.
    Target,
}

impl std::fmt::Display for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Leg::Client => "client connection",
            Leg::Target => "target connection",
        })
    }
}

/// A relay's read or write failed on one leg.
#[derive(Debug, thiserror::Error)]
#[error("{leg}: {source}")]
pub struct LegError {
    pub leg: Leg,
    #[source]
    pub source: std::io::Error,
}

impl LegError {
    pub fn client(source: std::io::Error) -> LegError {
        LegError {
            leg: Leg::Client,
            source,
        }
    }
    pub fn target(source: std::io::Error) -> LegError {
        LegError {
            leg: Leg::Target,
            source,
        }
    }
}
