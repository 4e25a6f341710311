//! The bounded pool of argon2 password checks (see the module above).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

/// A check to run: the stored hash (`None`: the dummy), the password, where to answer, and the
/// permit it holds until the check is done (even when the caller gave up waiting).
struct Job {
    phc: Option<String>,
    password: String,
    reply: oneshot::Sender<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Why no password check was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many recent failures from this source or for this user from it.
    Throttled,
    /// Every check was busy for `password_queue_timeout`.
    Saturated,
}

/// The bounded pool of argon2 checks.
pub struct PasswordChecker {
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl PasswordChecker {
    /// Start `threads` checking threads (0: one per core).
    pub fn start(threads: usize, queue_timeout: Duration) -> PasswordChecker {
        let n = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            threads
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        // The dummy hash has the cost of a real one (argon2's defaults, as `hash-password`
        // makes); computed once, by the first thread to need it.
        let dummy: Arc<std::sync::OnceLock<String>> = Arc::default();
        for i in 0..n {
            let rx = rx.clone();
            let dummy = dummy.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    // This thread's argon2 memory, reused by every check it makes.
                    let mut verifier = crate::passwords::Verifier::default();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if job.reply.is_closed() {
                            // The caller went away while it queued (its deadline passed).
                            continue;
                        }
                        let ok = match &job.phc {
                            Some(phc) => verifier.verify(phc, &job.password),
                            None => {
                                let phc = dummy.get_or_init(|| {
                                    crate::passwords::hash("wardengate dummy password")
                                        .unwrap_or_default()
                                });
                                let _ = verifier.verify(phc, &job.password);
                                false
                            }
                        };
                        let _ = job.reply.send(ok);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a password check thread: {e}");
            }
        }
        PasswordChecker {
            permits: Arc::new(Semaphore::new(n)),
            queue_timeout,
            jobs: tx,
        }
    }

    /// Check `password` against `phc` (`None`: the dummy, always false).
    pub async fn verify(&self, phc: Option<String>, password: &str) -> Result<bool, Refusal> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Refusal::Saturated)?
            .map_err(|_| Refusal::Saturated)?;
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                phc,
                password: password.to_string(),
                reply,
                _permit: permit,
            })
            .map_err(|_| Refusal::Saturated)?;
        Ok(answer.await.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_are_bounded_and_unknown_users_cost_the_same() {
        let phc = crate::passwords::hash("right").expect("hash");
        let c = Arc::new(PasswordChecker::start(1, Duration::from_secs(30)));
        assert_eq!(c.verify(Some(phc.clone()), "right").await, Ok(true));
        assert_eq!(c.verify(Some(phc.clone()), "wrong").await, Ok(false));
        assert_eq!(c.verify(None, "right").await, Ok(false));
        // One thread, a queue timeout shorter than a check: the second caller is refused.
        let busy = Arc::new(PasswordChecker::start(1, Duration::from_millis(1)));
        let (a, b) = tokio::join!(
            busy.verify(Some(phc.clone()), "x"),
            busy.verify(Some(phc), "y")
        );
        assert!(
            [a, b].contains(&Err(Refusal::Saturated)),
            "one of two concurrent checks waits past the queue timeout"
        );
    }
}
