//! Defences before authentication that every protocol shares:
//!
//! - [`checks`]: a bounded pool of password checks. An argon2 check takes 19 MiB and tens of
//!   milliseconds by design, so parallel wrong passwords were a way to exhaust the gateway's
//!   memory without logging in. Checks run on a fixed pool of threads (one per core by default),
//!   each reusing its own argon2 memory ([`crate::passwords::Verifier`]), so at most that many run
//!   at once and the memory they take is fixed; an attempt that cannot get a check within
//!   `password_queue_timeout` is refused. Unknown users and users without a password are checked
//!   against a dummy hash of the same cost, so the answer takes the same time whoever asks.
//! - [`throttle`]: failed logins counted per source (IPv4 address, IPv6 /64 and /48), per
//!   (user, source) and per user. Past `failures_before_backoff`, a source (or a user from that
//!   source) waits 1 s, 2 s, 4 s … up to `backoff_max` between attempts; attempts meanwhile are
//!   refused without a check, in the same words and after the same delay as a wrong password. A
//!   user under attack from many sources (`user_failures_before_backoff`) is closed only to the
//!   sources that failed for them: the real user, on an address of their own, still gets in. The
//!   audit gets one `auth.throttled` event when a burst starts and one `auth.throttle_ended` with
//!   its totals, not one per attempt.
//! - [`cancel`]: PostgreSQL CancelRequests rate-limited per source and summarised.

pub mod cancel;
pub mod checks;
pub mod throttle;

pub use cancel::{CancelFlood, CancelGuard};
pub use checks::{PasswordChecker, Refusal};
pub use throttle::{Throttle, ThrottleEvent};
