//! Session recordings on the gateway side: the recording key, one recorder task per session fed
//! by the relay's [`Tap`], crash recovery at start, and lookups for the API.
//!
//! The recorder task owns the session's [`Writer`]. Events are buffered in memory; a chunk that
//! fills up (or ages out) is compressed and written on the blocking pool while the task waits, so
//! a slow disk fills the tap's bounded queue and back-presses the session instead of dropping
//! anything. A write error ends the session (`Control::Terminate` by `wardengate`): with
//! `recording = "required"` a session never runs unrecorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use tokio::sync::{mpsc, watch};
use wardengate_protocols::session::{now_ms, Control, Tap};
use wardengate_recorder::{Event, Limits, Seal, SigningKey, VerifyingKey, Writer};

pub mod spool;
pub use spool::Spool;

/// Events queued between the relay and the recorder task before the relay waits.
const TAP_QUEUE: usize = 256;

pub struct Recordings {
    pub dir: PathBuf,
    key: Arc<SigningKey>,
    limits: Limits,
    record_input: bool,
    /// How often new events are appended to the open chunk's write-ahead log: the most a crash
    /// of the gateway process can lose.
    write_ahead: std::time::Duration,
    /// Recorder tasks, so shutdown can wait for every recording to be sealed.
    tasks: tokio_util::task::TaskTracker,
    /// With `[recording] store`: `dir` is a spool, uploaded to the bucket.
    pub spool: Option<Arc<Spool>>,
}

/// A recording to read: its directory here, or a private copy fetched from the bucket (removed
/// when this is dropped).
pub struct RecordingCopy {
    pub path: PathBuf,
    _fetched: Option<tempfile::TempDir>,
}

/// The state of one session's recording, as the registry tracks it.
pub type SealWatch = watch::Receiver<Option<std::result::Result<Seal, String>>>;

pub fn load_or_create_key(path: &Path) -> Result<SigningKey> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read recording key {}", path.display()))?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow!("{}: a recording key is 64 hex characters", path.display()))?;
        return Ok(SigningKey::from_bytes(&seed));
    }
    let key = wardengate_recorder::generate_key()?;
    crate::util::write_private(
        path,
        format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
    )?;
    tracing::info!(file = %path.display(), "generated the recording signing key");
    Ok(key)
}

impl Recordings {
    pub fn open(
        dir: PathBuf,
        key_file: &Path,
        limits: Limits,
        record_input: bool,
        write_ahead: std::time::Duration,
        spool: Option<Arc<Spool>>,
    ) -> Result<Recordings> {
        let key = load_or_create_key(key_file)?;
        Ok(Recordings {
            dir,
            key: Arc::new(key),
            limits,
            record_input,
            write_ahead,
            tasks: tokio_util::task::TaskTracker::new(),
            spool,
        })
    }

    /// Wait (up to `grace`) for every recorder task to seal its recording.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// The gateway's signing key (recording seals, audit checkpoints).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn path(&self, session: &str) -> PathBuf {
        self.dir.join(session)
    }

    /// Start recording `session`; the recorder task ends the session through `control` if a
    /// write fails. Fails at once when the recording cannot be created.
    /// `metadata_only`: `recording = "metadata"` (markers and sizes, no data).
    pub fn start(
        &self,
        session: &str,
        control: mpsc::Sender<Control>,
        metadata_only: bool,
    ) -> Result<(Tap, SealWatch)> {
        if let Some(spool) = &self.spool {
            spool.check_room()?;
            spool.started(session);
        }
        let dir = self.path(session);
        let writer = Writer::create(&dir, session, now_ms(), self.limits)
            .with_context(|| format!("cannot create recording {}", dir.display()))?;
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        let (seal_tx, seal_rx) = watch::channel(None);
        self.tasks.spawn(record(
            writer,
            self.write_ahead,
            rx,
            self.key.clone(),
            control,
            seal_tx,
            self.spool.clone(),
        ));
        let tap = Tap::new(tx, self.record_input);
        let tap = if metadata_only {
            tap.metadata_only()
        } else {
            tap
        };
        Ok((tap, seal_rx))
    }

    /// Seal every recording a crash left open, as `truncated`. Returns what was sealed.
    pub fn recover_all(&self) -> Vec<Seal> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut sealed = Vec::new();
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".fetch-") {
                // A copy fetched from the bucket by a request the last run did not finish.
                let _ = std::fs::remove_dir_all(e.path());
                continue;
            }
            if !wardengate_recorder::bucket::valid_session(&name) {
                continue;
            }
            match wardengate_recorder::recover(&e.path(), &self.key, now_ms()) {
                Ok(Some(seal)) => sealed.push(seal),
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(dir = %e.path().display(), "cannot recover recording: {err}")
                }
            }
        }
        sealed
    }

    /// The seal of a closed recording of this gateway (kept here after its upload).
    pub fn seal(&self, session: &str) -> Option<Seal> {
        let text = std::fs::read(self.path(session).join("seal.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The seal here, else in the bucket (another gateway's recording, or one a peer sealed).
    pub async fn seal_anywhere(&self, session: &str) -> Option<Seal> {
        match (self.seal(session), &self.spool) {
            (Some(s), _) => Some(s),
            (None, Some(spool)) => spool.seal(session).await,
            (None, None) => None,
        }
    }

    /// Whether there is a recording of `session`, here or in the bucket (a listing, nothing
    /// downloaded).
    pub async fn exists(&self, session: &str) -> Result<bool> {
        if self.path(session).is_dir() {
            return Ok(true);
        }
        match &self.spool {
            Some(spool) => Ok(!spool.bucket.names(session).await?.is_empty()),
            None => Ok(false),
        }
    }

    /// A recording to read: the directory here while its chunks are here (being written, or
    /// waiting for upload), else a copy from the bucket. `None`: no such recording.
    pub async fn open_copy(&self, session: &str) -> Result<Option<RecordingCopy>> {
        let dir = self.path(session);
        let here = dir.is_dir() && !dir.join(spool::UPLOADED).exists();
        match &self.spool {
            _ if here => Ok(Some(RecordingCopy {
                path: dir,
                _fetched: None,
            })),
            Some(spool) => Ok(spool.fetch(session).await?.map(|t| RecordingCopy {
                path: t.path().to_path_buf(),
                _fetched: Some(t),
            })),
            None => Ok(None),
        }
    }

    /// Every recording, newest first: the ones here (by the time their directory last changed)
    /// and, with a bucket, the cluster's others there (by their session's end).
    pub async fn list(&self, store: &dyn crate::store::Store) -> Vec<String> {
        let mut v = self.list_here();
        if let Some(spool) = &self.spool {
            match spool.bucket.sessions().await {
                Ok(remote) => {
                    let here: std::collections::HashSet<String> =
                        v.iter().map(|e| e.1.clone()).collect();
                    let others: Vec<String> =
                        remote.into_iter().filter(|id| !here.contains(id)).collect();
                    // Their sessions' times, in one query.
                    let times = store.session_times(&others).await.unwrap_or_default();
                    for id in others {
                        v.push((times.get(&id).copied().unwrap_or(0), id));
                    }
                    v.sort_by_key(|e| std::cmp::Reverse(e.0));
                }
                Err(e) => {
                    tracing::warn!("cannot list the recordings in the object store: {e}")
                }
            }
        }
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// This gateway's recording directories, newest first by modification time (ms).
    fn list_here(&self) -> Vec<(u64, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<(u64, String)> = entries
            .flatten()
            .filter(|e| {
                e.path().is_dir()
                    && wardengate_recorder::bucket::valid_session(&e.file_name().to_string_lossy())
            })
            .map(|e| {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                (t, e.file_name().to_string_lossy().into_owned())
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        v
    }
}

/// Write the open chunk (or, with `ahead`, only append its new events to the write-ahead log)
/// on the blocking pool; the writer comes back unless the task panicked.
async fn flush(
    mut writer: Writer,
    ahead: bool,
) -> (Option<Writer>, std::result::Result<(), String>) {
    match tokio::task::spawn_blocking(move || {
        let r = if ahead {
            writer.write_ahead()
        } else {
            writer.flush()
        };
        (writer, r.map_err(|e| e.to_string()))
    })
    .await
    {
        Ok((w, r)) => (Some(w), r),
        Err(e) => (None, Err(format!("recorder task failed: {e}"))),
    }
}

async fn record(
    writer: Writer,
    write_ahead: std::time::Duration,
    mut rx: mpsc::Receiver<Event>,
    key: Arc<SigningKey>,
    control: mpsc::Sender<Control>,
    sealed: watch::Sender<Option<std::result::Result<Seal, String>>>,
    spool: Option<Arc<Spool>>,
) {
    let wake = || {
        if let Some(s) = &spool {
            s.wake();
        }
    };
    let session = writer
        .dir()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Ok(writer) when the relay let go of the tap (the session is over), Err on a write failure.
    let mut current = writer;
    // When the events that arrived since the last append must be in the write-ahead log.
    let mut ahead_at: Option<tokio::time::Instant> = None;
    let outcome: std::result::Result<Writer, String> = loop {
        let due = current.due_in();
        let (flush_now, ahead) = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    if !write_ahead.is_zero() {
                        ahead_at.get_or_insert_with(|| tokio::time::Instant::now() + write_ahead);
                    }
                    (current.push_buffered(&ev), false)
                }
                None => break Ok(current),
            },
            _ = tokio::time::sleep(due.unwrap_or_default()), if due.is_some() => (true, false),
            _ = tokio::time::sleep_until(ahead_at.unwrap_or_else(tokio::time::Instant::now)), if ahead_at.is_some() => (false, true),
        };
        if flush_now || ahead {
            ahead_at = None;
            match flush(current, !flush_now).await {
                (Some(w), Ok(())) => {
                    current = w;
                    if flush_now {
                        wake();
                    }
                }
                (_, Err(e)) => break Err(e),
                (None, Ok(())) => break Err("recorder task failed".into()),
            }
        }
    };
    let writer = match outcome {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(session = %session, "recording failed: {e}");
            let _ = control
                .send(Control::Terminate {
                    by: "wardengate".into(),
                    reason: format!("the session recording could not be written ({e})"),
                })
                .await;
            let _ = sealed.send(Some(Err(e)));
            // Drain so the relay does not block on a full queue while the session ends.
            while rx.recv().await.is_some() {}
            return;
        }
    };
    if writer.events() == 0 {
        // The session never got as far as recording anything (refused or failed before it
        // opened): no recording at all, rather than an empty one.
        if let Some(s) = &spool {
            s.forget(&session);
        }
        let dir = writer.dir().to_path_buf();
        match tokio::task::spawn_blocking(move || writer.discard()).await {
            Ok(Ok(())) => {
                tracing::debug!(session = %session, "nothing recorded; no recording kept")
            }
            Ok(Err(e)) => {
                tracing::warn!(dir = %dir.display(), "cannot remove an empty recording: {e}")
            }
            Err(e) => tracing::warn!("recorder task failed: {e}"),
        }
        return;
    }
    let ended = now_ms();
    let result = tokio::task::spawn_blocking(move || writer.seal(&key, ended))
        .await
        .map_err(|e| format!("recorder task failed: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    match &result {
        Ok(seal) => {
            tracing::info!(session = %session, chunks = seal.chunks, bytes = seal.raw_bytes, "recording sealed")
        }
        Err(e) => tracing::error!(session = %session, "cannot seal recording: {e}"),
    }
    wake();
    let _ = sealed.send(Some(result));
}
