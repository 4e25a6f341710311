//! The session contract between a protocol relay and the gateway.
//!
//! The gateway creates a [`SessionLink`] when it admits a session: the relay keeps the link's
//! [`SessionShared`] (a few atomics the data path updates without locks: last meaningful input, byte
//! counts) and listens on its control receiver for operator actions ([`Control`]). When the session
//! ends, the relay reports an [`Outcome`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

pub use crate::clock::now_ms;
pub use crate::denial::{Denial, StepUp};
pub use crate::tap::Tap;

/// Who is connecting.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub addr: std::net::SocketAddr,
    /// The client's software: its SSH identification string (`SSH-2.0-OpenSSH_9.2p1 ...`), or a
    /// PostgreSQL client's `application_name`.
    pub version: String,
}

/// The login a user typed, naming who they are and where they go: `user:target[:account]`, or
/// the same with `#` (`alice#billing-ro.prod#reporting`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub target: String,
    pub account: Option<String>,
    /// The session this login continues after a step-up wait (security key, approval): the id
    /// the gateway gave in [`crate::denial::StepUp::session`], so the wait and the session that
    /// follows are one record. `None` from the wire.
    pub waiting: Option<String>,
}

/// Longest login the gateway reads (`user:target:account`); a longer one cannot log in, and is
/// cut where it is audited.
pub const MAX_LOGIN: usize = 256;

impl Login {
    /// Split `user<sep>target[<sep>account]` (`sep` is `:` or `#`); `None` when a part is missing
    /// or the whole is longer than [`MAX_LOGIN`].
    pub fn split(s: &str) -> Option<Login> {
        if s.len() > MAX_LOGIN {
            return None;
        }
        let mut parts = s.splitn(3, [':', '#']);
        let user = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        let account = parts.next().map(str::to_string);
        if user.is_empty() || target.is_empty() || account.as_deref() == Some("") {
            return None;
        }
        Some(Login {
            user: user.to_string(),
            target: target.to_string(),
            account,
            waiting: None,
        })
    }
}

/// What a password check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Wrong password, unknown user, or a user without a password: the client is never told which.
    Wrong,
    /// Not checked: too many recent failures from this source (or for this user from it), or
    /// every password check was busy. Refused like a wrong password; the gateway audits the
    /// burst, so the protocol does not audit the attempt.
    Refused,
}

/// What every protocol gateway asks of the gateway: users, passwords, the audit log, the
/// lifecycle.
pub trait Lifecycle: Send + Sync + 'static {
    /// The user's credentials, or `None` for an unknown user.
    fn user(&self, name: &str) -> Option<UserAuth>;
    /// Check `user`'s password (argon2, slow by design) as an attempt from `client`, throttled and
    /// bounded by the gateway. An unknown user, a user without a password, or `usable = false`
    /// (the login cannot succeed whatever the password, e.g. it names no target) is checked
    /// against a dummy hash of the same cost, so every answer takes the same time.
    fn check_password(
        &self,
        user: &str,
        password: &str,
        client: &ClientInfo,
        usable: bool,
    ) -> impl std::future::Future<Output = Verdict> + Send;
    /// Before a credential check the protocol makes itself (SCRAM, NTLM): may `user` try from
    /// `client` now? `false` when throttled: refuse as for a wrong credential.
    fn attempt_allowed(&self, user: &str, client: &ClientInfo) -> bool;
    /// The result of such a check, counted for throttling.
    fn attempt_result(&self, user: &str, client: &ClientInfo, ok: bool);
    /// An allowed attempt that ended without a result (the client left mid-exchange).
    fn attempt_abandoned(&self, user: &str, client: &ClientInfo);
    /// Record a refused authentication or admission (audit), with the message shown to the user.
    fn refused(&self, login: &str, client: &ClientInfo, kind: &str, message: &str);
    /// The target leg is up: the session is active.
    fn opened(&self, session: &str);
    /// Something happened in a live session that the audit log must show (`session.idle_warning`,
    /// `session.lifespan_warning`).
    fn notice(&self, session: &str, kind: &str, detail: serde_json::Value);
    /// The session is over.
    fn ended(&self, session: &str, outcome: Outcome);
}

/// A user as the gateway knows them, for each protocol's own authentication.
#[derive(Debug, Clone, Default)]
pub struct UserAuth {
    /// SSH public keys.
    pub keys: Vec<russh::keys::PublicKey>,
    /// The user has an argon2 password (SSH password and keyboard-interactive, PostgreSQL
    /// cleartext inside TLS).
    pub has_password: bool,
    /// The same password as a SCRAM-SHA-256 verifier (PostgreSQL).
    pub scram: Option<crate::postgres::scram::Verifier>,
    /// The same password's NT hash (RDP's NLA).
    pub nt_hash: Option<[u8; 16]>,
}

/// An admitted session, ready for its protocol to open the target leg: what admitted it, its
/// link to the gateway, and the protocol's target (where, as whom, with the vault's secret).
#[derive(Debug)]
pub struct Plan<T> {
    pub admitted: wardengate_policy::Admitted,
    pub link: SessionLink,
    pub target: T,
}

/// The gateway's side of admission, the same for every protocol. `A`
/// is what admission hands the protocol: a [`Plan`] of its target, or for SSH an
/// [`Admission`](crate::ssh::Admission) that may also resume a paused session. Each protocol
/// adds what only it needs in a trait of its own ([`SshBroker`](crate::ssh::SshBroker),
/// [`PgBroker`](crate::postgres::PgBroker)).
pub trait Broker<A>: Lifecycle {
    /// Decide admission for a user authenticated by `method` (`publickey`, `scram-sha-256`,
    /// `nla`, ...): resolve, decide, count, read the vault; a refusal is a [`Denial`] that the
    /// protocol puts in its own wire form.
    fn admit(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> impl std::future::Future<Output = Result<A, Denial>> + Send;
}

/// A terminal as requested by the client (`pty-req`, then `window-change`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyInfo {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// The activities a session can report (PostgreSQL's `pg_stat_activity.state` names).
pub const ACTIVITIES: &[&str] = &[
    "idle",
    "active",
    "idle in transaction",
    "idle in transaction (aborted)",
];

/// Live per-session state shared by the relay (writer) and the registry/API (reader).
#[derive(Debug)]
pub struct SessionShared {
    pub id: String,
    pub started_ms: u64,
    /// Unix ms of the last meaningful input; 0 when there was none yet.
    last_input_ms: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    channels: AtomicU32,
    /// Running non-interactive commands (exec without a pty): the session is not idle meanwhile.
    busy: AtomicU32,
    pty: Mutex<Option<PtyInfo>>,
    client_version: std::sync::OnceLock<String>,
    /// The cipher (and MAC) each leg negotiated: `aes128-gcm@openssh.com`.
    client_crypto: std::sync::OnceLock<String>,
    target_crypto: std::sync::OnceLock<String>,
    /// What the session is doing, for protocols that know (PostgreSQL: `idle`, `active`,
    /// `idle in transaction`); an index into [`ACTIVITIES`], 0 for unknown.
    activity: std::sync::atomic::AtomicU8,
    /// Woken whenever a channel closes.
    pub channels_changed: tokio::sync::Notify,
    /// How long the relay takes to pass the target's data on ([`SessionShared::note_relayed`]).
    relay_latency: LatencyHistogram,
}

/// Buckets of [`LatencyHistogram`]: four per power of two of microseconds, up to 2^32 µs.
const LATENCY_BUCKETS: usize = 128;

/// A lock-free log-scale histogram of durations: bucket `i` counts samples of at least
/// 2^(i/4) µs and under 2^((i+1)/4) µs (bucket 0 also takes everything under 1 µs), so a
/// percentile is known within 19 %.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    max_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }
}

/// Percentiles of a [`LatencyHistogram`], in microseconds (each the upper edge of its bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LatencyHistogram {
    pub fn record(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = if us <= 1 {
            0
        } else {
            ((us as f64).log2() * 4.0) as usize
        };
        self.buckets[i.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// `None` before the first sample.
    pub fn summary(&self) -> Option<LatencySummary> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let samples: u64 = counts.iter().sum();
        if samples == 0 {
            return None;
        }
        let max_us = self.max_us.load(Ordering::Relaxed);
        let upper = |i: usize| (2f64.powf((i + 1) as f64 / 4.0).ceil() as u64).min(max_us);
        let at = |q: f64| {
            let rank = ((samples as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper(i);
                }
            }
            max_us
        };
        Some(LatencySummary {
            samples,
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us,
        })
    }
}

impl SessionShared {
    pub fn new(id: String) -> Self {
        SessionShared {
            id,
            started_ms: now_ms(),
            last_input_ms: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            channels: AtomicU32::new(0),
            busy: AtomicU32::new(0),
            pty: Mutex::new(None),
            client_version: std::sync::OnceLock::new(),
            client_crypto: std::sync::OnceLock::new(),
            target_crypto: std::sync::OnceLock::new(),
            activity: std::sync::atomic::AtomicU8::new(0),
            channels_changed: tokio::sync::Notify::new(),
            relay_latency: LatencyHistogram::default(),
        }
    }

    /// The relay passed a read of the target's data on to the client in `d` (from the read's
    /// end to the write's flush: the latency the gateway adds, TLS included).
    #[inline]
    pub fn note_relayed(&self, d: std::time::Duration) {
        self.relay_latency.record(d);
    }

    /// The relay's added latency so far; `None` when the protocol does not measure it or
    /// nothing was relayed yet.
    pub fn relay_latency(&self) -> Option<LatencySummary> {
        self.relay_latency.summary()
    }

    /// The client's software version (its SSH identification string, for SSH).
    pub fn set_client_version(&self, v: String) {
        let _ = self.client_version.set(v);
    }

    pub fn client_version(&self) -> Option<&str> {
        self.client_version.get().map(String::as_str)
    }

    /// What the client leg negotiated (set once).
    pub fn set_client_crypto(&self, v: String) {
        let _ = self.client_crypto.set(v);
    }

    /// What the target leg negotiated (set once).
    pub fn set_target_crypto(&self, v: String) {
        let _ = self.target_crypto.set(v);
    }

    /// (client leg, target leg), as far as known.
    pub fn crypto(&self) -> (Option<&str>, Option<&str>) {
        (
            self.client_crypto.get().map(String::as_str),
            self.target_crypto.get().map(String::as_str),
        )
    }

    /// Set what the session is doing (one of [`ACTIVITIES`]; anything else is ignored).
    pub fn set_activity(&self, activity: &str) {
        if let Some(i) = ACTIVITIES.iter().position(|a| *a == activity) {
            self.activity.store(i as u8 + 1, Ordering::Relaxed);
        }
    }

    pub fn activity(&self) -> Option<&'static str> {
        match self.activity.load(Ordering::Relaxed) {
            0 => None,
            i => ACTIVITIES.get(i as usize - 1).copied(),
        }
    }

    /// Client data that a human (or their tool) sent: resets the idle clock.
    #[inline]
    pub fn note_input(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.last_input_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Client data that is not by itself human input (PostgreSQL's Sync, CopyData): counted,
    /// does not reset the idle clock.
    #[inline]
    pub fn count_input(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Target output: counted, never resets the idle clock.
    #[inline]
    pub fn note_output(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A human action without data (re-attaching a paused session) resets the idle clock.
    pub fn note_activity(&self) {
        self.last_input_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Unix ms of the last meaningful input; "now" while a non-interactive command runs.
    pub fn last_input_ms(&self) -> Option<u64> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return Some(now_ms());
        }
        match self.last_input_ms.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v),
        }
    }

    /// Milliseconds without meaningful input, counted from the start when there was none.
    pub fn idle_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_input_ms().unwrap_or(self.started_ms))
    }

    /// A non-interactive command started running; the returned guard ends it (and counts its end
    /// as the last activity) when dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    pub fn channel_opened(&self) {
        self.channels.fetch_add(1, Ordering::Relaxed);
    }

    pub fn channel_closed(&self) {
        let _ = self
            .channels
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        self.channels_changed.notify_waiters();
    }

    pub fn channels(&self) -> u32 {
        self.channels.load(Ordering::Relaxed)
    }

    pub fn set_pty(&self, pty: PtyInfo) {
        if let Ok(mut p) = self.pty.lock() {
            *p = Some(pty);
        }
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        if let Ok(mut p) = self.pty.lock() {
            if let Some(p) = p.as_mut() {
                p.cols = cols;
                p.rows = rows;
            }
        }
    }

    pub fn pty(&self) -> Option<PtyInfo> {
        self.pty.lock().ok().and_then(|p| p.clone())
    }
}

/// While held, the session counts as active (see [`SessionShared::busy`]).
#[derive(Debug)]
pub struct Busy(Arc<SessionShared>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.note_activity();
        let _ = self
            .0
            .busy
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
    }
}

/// Actions delivered to the relay that owns the session.
#[derive(Debug, Clone)]
pub enum Control {
    /// An operator ends the session.
    Terminate { by: String, reason: String },
    /// The gateway ends the session by rule (`concurrency` eviction); `message` is shown.
    End {
        reason: &'static str,
        message: String,
    },
    /// An observer attached or detached: record it, and show `banner` to the owner if set
    /// (policy `shadow = "visible"`).
    Shadow {
        marker: &'static str,
        detail: String,
        banner: Option<String>,
    },
    /// Tell the owner something in-band (a handoff was offered, declined or expired).
    Notice(String),
    /// The session changes hands: tell the current client, detach it, and wait up to `window`
    /// for the new owner's connection; from now on `admitted` governs the session.
    Handoff {
        from: String,
        to: String,
        reason: String,
        admitted: wardengate_policy::Admitted,
        window: std::time::Duration,
    },
}

/// What the gateway hands a relay for an admitted session.
#[derive(Debug)]
pub struct SessionLink {
    pub shared: Arc<SessionShared>,
    pub control: mpsc::Receiver<Control>,
    /// `None` when the session is not recorded (`recording = "off"`).
    pub tap: Option<Tap>,
    /// Where observers get the session live.
    pub hub: Arc<crate::shadow::ShadowHub>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client disconnected (the usual end: the shell exited, the user logged out).
    ClientExit,
    /// The target closed the connection under a live client.
    TargetClosed,
    /// An operator terminated the session.
    Terminated { by: String, reason: String },
    /// The target leg could not be opened (connect, host key, authentication).
    TargetFailed(crate::error::TargetError),
    /// The gateway is shutting down.
    Shutdown,
    /// A protocol error on either leg.
    Error(String),
    /// The client's connection dropped while channels were open (no clean exit), and the
    /// session was not resumed.
    ClientDropped(String),
    /// Ended by a policy rule: `idle`, `lifespan` or `concurrency`; `message` was shown.
    Policy {
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    /// Short machine-readable reason (`client_exit`, `terminated`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::ClientExit => "client_exit",
            Outcome::TargetClosed => "target_closed",
            Outcome::Terminated { .. } => "terminated",
            Outcome::TargetFailed(crate::error::TargetError::SecretRejected { .. }) => {
                "secret_rejected"
            }
            Outcome::TargetFailed(_) => "target_failed",
            Outcome::Shutdown => "gateway_shutdown",
            Outcome::Error(_) => "error",
            Outcome::ClientDropped(_) => "client_dropped",
            Outcome::Policy { reason, .. } => reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_percentiles_are_within_a_bucket() {
        let h = LatencyHistogram::default();
        assert_eq!(h.summary(), None);
        for _ in 0..990 {
            h.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(10));
        }
        let s = h.summary().expect("samples");
        assert_eq!((s.samples, s.max_us), (1000, 10_000));
        assert!((100..=119).contains(&s.p50_us), "{s:?}");
        assert!((100..=119).contains(&s.p99_us), "{s:?}");
        h.record(Duration::from_nanos(300));
        h.record(Duration::from_secs(100_000));
        let s = h.summary().expect("samples");
        assert_eq!(s.max_us, 100_000_000_000, "the largest is kept exactly");
    }
}
