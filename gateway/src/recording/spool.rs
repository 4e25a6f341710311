//! Recordings in object storage: the local recording directory becomes a spool. Chunks are
//! written there as always (whole files, renamed into place), and an uploader copies each one
//! to the bucket once it is closed, in order, then the seal last. A recording whose seal is in
//! the bucket leaves only its `seal.json` behind (and an `.uploaded` mark), so lists and
//! summaries stay local and cheap; reading it fetches the chunks back.
//!
//! An object-store outage only makes the spool grow: nothing is dropped, uploads resume where
//! they stopped. When the spool holds more than `spool_max_mb`, sessions that require recording
//! are refused (`Recordings::start`), with the reason.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use tokio::sync::Notify;
use wardengate_protocols::session::now_ms;
use wardengate_recorder::bucket::{recording_file, Bucket};
use wardengate_recorder::{Seal, SigningKey};

/// Marks a spool directory whose recording is whole in the bucket.
pub const UPLOADED: &str = ".uploaded";
const SEAL: &str = "seal.json";

pub struct Spool {
    pub bucket: Bucket,
    dir: PathBuf,
    max: u64,
    used: AtomicU64,
    wake: Notify,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Files of unfinished recordings already in the bucket.
    uploaded: HashMap<String, HashSet<String>>,
    /// The last upload error, while uploads fail.
    error: Option<String>,
}

/// One recording in the spool, as a pass finds it.
struct Pending {
    session: String,
    /// Chunk files (in order) and `recording.json`, with their sizes.
    files: Vec<(String, u64)>,
    sealed: bool,
}

impl Spool {
    pub fn new(bucket: Bucket, dir: PathBuf, max_bytes: u64) -> Spool {
        Spool {
            bucket,
            dir,
            max: max_bytes,
            used: AtomicU64::new(0),
            wake: Notify::new(),
            state: Mutex::new(State::default()),
        }
    }

    /// A chunk or a seal was written: upload now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Until a chunk or a seal is written (the uploader's wait).
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Bytes waiting in the spool (as of the last pass).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Refuse a new recording while the spool is full.
    pub fn check_room(&self) -> Result<()> {
        let used = self.used();
        if used < self.max {
            return Ok(());
        }
        let why = self
            .state
            .lock()
            .ok()
            .and_then(|s| s.error.clone())
            .map(|e| format!("; last upload error: {e}"))
            .unwrap_or_default();
        Err(anyhow!(
            "the recording spool is full ({} MiB waiting for {}, spool_max_mb = {}){why}",
            used >> 20,
            self.bucket.url(),
            self.max >> 20
        ))
    }

    fn scan(dir: &Path) -> Vec<Pending> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let session = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if !wardengate_recorder::bucket::valid_session(&session)
                || !path.is_dir()
                || path.join(UPLOADED).exists()
            {
                continue;
            }
            let mut files = Vec::new();
            let mut sealed = false;
            for f in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name == SEAL {
                    sealed = true;
                } else if recording_file(&name) {
                    files.push((name, f.metadata().map(|m| m.len()).unwrap_or(0)));
                }
            }
            files.sort();
            out.push(Pending {
                session,
                files,
                sealed,
            });
        }
        out.sort_by(|a, b| a.session.cmp(&b.session));
        out
    }

    /// One pass over the spool: upload what is closed, in order, each recording's seal last;
    /// stop at the first failure (the rest waits for the next pass). Returns the files uploaded.
    pub async fn pass(&self) -> std::result::Result<usize, String> {
        let dir = self.dir.clone();
        let pending = tokio::task::spawn_blocking(move || Spool::scan(&dir))
            .await
            .map_err(|e| e.to_string())?;
        let mut used = 0u64;
        let mut failed: Option<String> = None;
        let mut n = 0;
        for p in pending {
            let size: u64 = p.files.iter().map(|f| f.1).sum();
            used += size;
            if failed.is_some() {
                continue;
            }
            match self.upload(&p).await {
                Ok((k, done)) => {
                    n += k;
                    if done {
                        used -= size;
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        self.used.store(used, Ordering::Relaxed);
        if let Ok(mut s) = self.state.lock() {
            s.error = failed.clone();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Upload one recording's new files; `true` once its seal is in the bucket.
    async fn upload(&self, p: &Pending) -> std::result::Result<(usize, bool), String> {
        let local = self.dir.join(&p.session);
        let mut n = 0;
        for (name, _) in &p.files {
            let done = self
                .state
                .lock()
                .map(|s| s.uploaded.get(&p.session).is_some_and(|u| u.contains(name)))
                .unwrap_or(false);
            if done {
                continue;
            }
            let bytes = tokio::fs::read(local.join(name))
                .await
                .map_err(|e| format!("{}: {e}", local.join(name).display()))?;
            self.bucket
                .put(&p.session, name, bytes)
                .await
                .map_err(|e| e.to_string())?;
            n += 1;
            if let Ok(mut s) = self.state.lock() {
                s.uploaded
                    .entry(p.session.clone())
                    .or_default()
                    .insert(name.clone());
            }
        }
        if !p.sealed {
            return Ok((n, false));
        }
        let seal = tokio::fs::read(local.join(SEAL))
            .await
            .map_err(|e| format!("{}: {e}", local.join(SEAL).display()))?;
        match self
            .bucket
            .get(&p.session, SEAL)
            .await
            .map_err(|e| e.to_string())?
        {
            // Already there: a retry after the seal went up, or a peer sealed it first (this
            // gateway was declared lost meanwhile); the bucket's seal stands, this copy is kept
            // aside for forensics.
            Some(theirs) if theirs != seal => {
                let aside = self.dir.join(format!(".superseded-{}", p.session));
                tracing::warn!(session = %p.session, kept = %aside.display(), "the bucket already holds another seal for this recording (a peer sealed it while this gateway was away); the local copy is kept aside");
                std::fs::rename(&local, &aside).map_err(|e| e.to_string())?;
                self.forget(&p.session);
                return Ok((n, true));
            }
            Some(_) => {}
            None => {
                self.bucket
                    .put(&p.session, SEAL, seal)
                    .await
                    .map_err(|e| e.to_string())?;
                n += 1;
            }
        }
        // Whole in the bucket: only the seal stays here.
        for (name, _) in &p.files {
            let _ = std::fs::remove_file(local.join(name));
        }
        std::fs::write(local.join(UPLOADED), b"").map_err(|e| e.to_string())?;
        self.forget(&p.session);
        Ok((n, true))
    }

    fn forget(&self, session: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.uploaded.remove(session);
        }
    }

    /// A private temporary copy of a recording from the bucket (`None`: not there).
    pub async fn fetch(&self, session: &str) -> Result<Option<tempfile::TempDir>> {
        let tmp = self.tempdir()?;
        let n = self
            .bucket
            .download(session, tmp.path())
            .await
            .with_context(|| format!("cannot read recording {session} from the object store"))?;
        Ok((n > 0).then_some(tmp))
    }

    fn tempdir(&self) -> Result<tempfile::TempDir> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(&self.dir)
            .with_context(|| format!("cannot create a directory in {}", self.dir.display()))
    }

    /// The seal of a recording in the bucket.
    pub async fn seal(&self, session: &str) -> Option<Seal> {
        let bytes = self.bucket.get(session, SEAL).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Seal, as `truncated`, the recording of a session whose gateway died: from the chunks
    /// already in the bucket (the longest whole, chained run from the first). Chunks after a
    /// gap are renamed `*.unsealed`, as crash recovery does on disk. `None` when the bucket has
    /// no such recording or it is sealed already.
    pub async fn seal_lost(&self, session: &str, key: &SigningKey) -> Result<Option<Seal>> {
        let names = self.bucket.names(session).await?;
        if names.is_empty() || names.iter().any(|n| n == SEAL) {
            return Ok(None);
        }
        let tmp = self.tempdir()?;
        self.bucket.download(session, tmp.path()).await?;
        let path = tmp.path().to_path_buf();
        let key = key.clone();
        let (seal, aside) = tokio::task::spawn_blocking(move || {
            let seal = wardengate_recorder::recover(&path, &key, now_ms())?;
            let aside: Vec<String> = std::fs::read_dir(&path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".chunk.unsealed"))
                .collect();
            anyhow::Ok((seal, aside))
        })
        .await??;
        let Some(seal) = seal else { return Ok(None) };
        for name in aside {
            let bytes = std::fs::read(tmp.path().join(&name))?;
            self.bucket.put(session, &name, bytes).await?;
            if let Some(orig) = name.strip_suffix(".unsealed") {
                self.bucket.delete(session, orig).await?;
            }
        }
        let text = std::fs::read(tmp.path().join(SEAL))?;
        self.bucket.put(session, SEAL, text).await?;
        Ok(Some(seal))
    }
}
