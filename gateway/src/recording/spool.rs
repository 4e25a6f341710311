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
    /// Held by a pass: the uploader's and the last one at shutdown never overlap.
    passing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Files of unfinished recordings already in the bucket.
    uploaded: HashMap<String, HashSet<String>>,
    /// Recordings this process started: the others (found in the spool at start) are checked
    /// against the bucket before anything of them is uploaded.
    ours: HashSet<String>,
    /// Recordings found at start whose bucket side was checked (no seal there).
    checked: HashSet<String>,
    /// The last upload error, while uploads fail (logged and audited, not shown to users).
    error: Option<String>,
}

/// One recording in the spool, as a pass finds it.
struct Pending {
    session: String,
    /// Chunk files (in order) and `recording.json`, with their sizes.
    files: Vec<(String, u64)>,
    /// The chunk count of its local seal, once sealed.
    sealed: Option<u64>,
}

/// Why a recording's upload stopped.
enum Stop {
    /// The object store failed: the pass stops, everything waits for the next one.
    Store(String),
    /// Something about this recording here (a file gone or unreadable): it is skipped, the
    /// others go on.
    Local(String),
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
            passing: tokio::sync::Mutex::new(()),
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

    /// A recording this process starts (uploaded without asking the bucket first).
    pub fn started(&self, session: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.ours.insert(session.to_string());
        }
    }

    /// Bytes not yet in the bucket (as of the last pass).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Refuse a new recording while the spool is full. The reason names the bound, not the
    /// object store's error (that is in the log and the audit).
    pub fn check_room(&self) -> Result<()> {
        let used = self.used();
        if used < self.max {
            return Ok(());
        }
        Err(anyhow!(
            "the recording spool is full ({} MiB waiting for the object store, spool_max_mb = {})",
            used >> 20,
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
            if !wardengate_recorder::bucket::valid_session(&session) || !path.is_dir() {
                continue;
            }
            if path.join(UPLOADED).exists() {
                // Whole in the bucket; chunks left here by a stop between the mark and their
                // removal go now.
                for f in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if recording_file(&name) && name != SEAL {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
                continue;
            }
            // The seal first: every chunk it counts was renamed into place before it was
            // written, so the listing that follows holds them all.
            let sealed = match std::fs::read(path.join(SEAL)) {
                Ok(b) => match serde_json::from_slice::<Seal>(&b) {
                    Ok(s) => Some(s.chunks),
                    Err(e) => {
                        tracing::warn!(session = %session, "its seal.json does not parse ({e}); it is not uploaded");
                        continue;
                    }
                },
                Err(_) => None,
            };
            let mut files = Vec::new();
            for f in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if recording_file(&name) && name != SEAL {
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

    /// One pass over the spool: upload what is closed, in order, each recording's seal last.
    /// An object-store failure stops the pass (the rest waits for the next one); a recording
    /// with a local problem is skipped. Passes never overlap. Returns the files uploaded.
    pub async fn pass(&self) -> std::result::Result<usize, String> {
        let _one = self.passing.lock().await;
        let dir = self.dir.clone();
        let pending = tokio::task::spawn_blocking(move || Spool::scan(&dir))
            .await
            .map_err(|e| e.to_string())?;
        // What waits: every file not in the bucket yet (less each upload, as it happens).
        self.used.store(self.waiting(&pending), Ordering::Relaxed);
        let mut failed: Option<String> = None;
        let mut n = 0;
        for p in &pending {
            if failed.is_some() {
                break;
            }
            match self.upload(p).await {
                Ok(k) => n += k,
                Err(Stop::Store(e)) => failed = Some(e),
                Err(Stop::Local(e)) => {
                    tracing::warn!(session = %p.session, "a recording in the spool is skipped: {e}")
                }
            }
        }
        // Recordings gone from the spool (removed because they held nothing) are forgotten.
        if let Ok(mut st) = self.state.lock() {
            let here: HashSet<&str> = pending.iter().map(|p| p.session.as_str()).collect();
            st.uploaded.retain(|k, _| here.contains(k.as_str()));
            st.checked.retain(|k| here.contains(k.as_str()));
            st.ours.retain(|k| here.contains(k.as_str()));
        }
        self.used.store(self.waiting(&pending), Ordering::Relaxed);
        if let Ok(mut s) = self.state.lock() {
            s.error = failed.clone();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Bytes of `pending` not in the bucket: finished or set-aside recordings count nothing.
    fn waiting(&self, pending: &[Pending]) -> u64 {
        let Ok(st) = self.state.lock() else {
            return 0;
        };
        pending
            .iter()
            .filter(|p| {
                let dir = self.dir.join(&p.session);
                dir.is_dir() && !dir.join(UPLOADED).exists()
            })
            .flat_map(|p| {
                let up = st.uploaded.get(&p.session);
                p.files
                    .iter()
                    .filter(move |f| !up.is_some_and(|u| u.contains(&f.0)))
                    .map(|f| f.1)
            })
            .sum()
    }

    fn is_uploaded(&self, session: &str, name: &str) -> bool {
        self.state
            .lock()
            .map(|s| s.uploaded.get(session).is_some_and(|u| u.contains(name)))
            .unwrap_or(false)
    }

    /// Upload one recording's new files, and its seal once every chunk it counts is up.
    async fn upload(&self, p: &Pending) -> std::result::Result<usize, Stop> {
        let local = self.dir.join(&p.session);
        // An object too large to be ours is this recording's problem, not the store's.
        let store = |e: wardengate_recorder::Error| match e {
            wardengate_recorder::Error::Oversize(m) => Stop::Local(m),
            e => Stop::Store(e.to_string()),
        };
        // A recording this process did not start (it was in the spool at start): a peer may
        // have sealed it from the bucket while this gateway was away. Then the bucket's seal
        // stands and nothing more of it is uploaded.
        let (ours, checked) = self
            .state
            .lock()
            .map(|s| (s.ours.contains(&p.session), s.checked.contains(&p.session)))
            .unwrap_or((false, false));
        if !ours && !checked {
            if let Some(theirs) = self.bucket.get(&p.session, SEAL).await.map_err(store)? {
                if std::fs::read(local.join(SEAL)).ok().as_ref() == Some(&theirs) {
                    // Sealed and uploaded before this gateway stopped: only the mark is missing.
                    return self.finish(p, &local).map(|()| 0);
                }
                return self.set_aside(p, &local, &theirs).await.map(|()| 0);
            }
            if let Ok(mut s) = self.state.lock() {
                s.checked.insert(p.session.clone());
            }
        }
        // `recording.json` goes up with the first chunk: a session that never recorded
        // anything (its directory is removed) leaves nothing in the bucket.
        let has_chunk = p.files.iter().any(|f| f.0.ends_with(".chunk"));
        let mut n = 0;
        for (name, _) in &p.files {
            if self.is_uploaded(&p.session, name) || (!has_chunk && p.sealed.is_none()) {
                continue;
            }
            let bytes = match tokio::fs::read(local.join(name)).await {
                Ok(b) => b,
                Err(e) => return Err(Stop::Local(format!("{}: {e}", local.join(name).display()))),
            };
            let size = bytes.len() as u64;
            self.bucket
                .put(&p.session, name, bytes)
                .await
                .map_err(store)?;
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(size))
                });
            n += 1;
            if let Ok(mut s) = self.state.lock() {
                s.uploaded
                    .entry(p.session.clone())
                    .or_default()
                    .insert(name.clone());
            }
        }
        let Some(chunks) = p.sealed else {
            return Ok(n);
        };
        // Every chunk the seal counts must be up before the seal (a listing can miss a chunk
        // renamed a moment before the seal was written: the next pass has it).
        if !(0..chunks).all(|i| self.is_uploaded(&p.session, &format!("{i:08}.chunk"))) {
            return Ok(n);
        }
        let seal = std::fs::read(local.join(SEAL))
            .map_err(|e| Stop::Local(format!("{}: {e}", local.join(SEAL).display())))?;
        match self.bucket.get(&p.session, SEAL).await.map_err(store)? {
            // Another seal is there: a peer sealed it while this gateway was declared lost.
            Some(theirs) if theirs != seal => {
                return self.set_aside(p, &local, &theirs).await.map(|()| n)
            }
            Some(_) => {}
            None => {
                self.bucket
                    .put(&p.session, SEAL, seal)
                    .await
                    .map_err(store)?;
                n += 1;
            }
        }
        self.finish(p, &local).map(|()| n)
    }

    /// The recording is whole in the bucket: the mark first (readers then fetch from the
    /// bucket), then the local chunks go; only the seal stays here.
    fn finish(&self, p: &Pending, local: &Path) -> std::result::Result<(), Stop> {
        std::fs::write(local.join(UPLOADED), b"")
            .map_err(|e| Stop::Local(format!("{}: {e}", local.join(UPLOADED).display())))?;
        for (name, _) in &p.files {
            let _ = std::fs::remove_file(local.join(name));
        }
        self.forget(&p.session);
        Ok(())
    }

    /// The bucket holds another seal for this recording (a peer sealed it from the bucket while
    /// this gateway was away): the bucket's stands, this copy is kept aside for forensics, and
    /// chunks this gateway uploaded past the peer's seal are renamed `*.unsealed` in the bucket
    /// (as crash recovery does), so the sealed recording verifies.
    async fn set_aside(
        &self,
        p: &Pending,
        local: &Path,
        theirs: &[u8],
    ) -> std::result::Result<(), Stop> {
        let store = |e: wardengate_recorder::Error| Stop::Store(e.to_string());
        if let Ok(seal) = serde_json::from_slice::<Seal>(theirs) {
            for name in self.bucket.names(&p.session).await.map_err(store)? {
                let past = name
                    .strip_suffix(".chunk")
                    .and_then(|i| i.parse::<u64>().ok())
                    .is_some_and(|i| i >= seal.chunks);
                if past {
                    if let Some(bytes) = self.bucket.get(&p.session, &name).await.map_err(store)? {
                        let aside = format!("{name}.unsealed");
                        self.bucket
                            .put(&p.session, &aside, bytes)
                            .await
                            .map_err(store)?;
                    }
                    self.bucket.delete(&p.session, &name).await.map_err(store)?;
                }
            }
        }
        let aside = self
            .dir
            .join(format!(".superseded-{}-{}", p.session, now_ms()));
        tracing::warn!(session = %p.session, kept = %aside.display(), "the bucket already holds another seal for this recording (a peer sealed it while this gateway was away); the local copy is kept aside");
        std::fs::rename(local, &aside)
            .map_err(|e| Stop::Local(format!("{}: {e}", aside.display())))?;
        self.forget(&p.session);
        Ok(())
    }

    pub fn forget(&self, session: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.uploaded.remove(session);
            s.ours.remove(session);
            s.checked.remove(session);
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
