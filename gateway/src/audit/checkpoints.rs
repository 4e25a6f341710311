//! When the audit chain head is signed, and the file of checkpoints beside the recordings.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use wardengate_recorder::audit::Checkpoint;

/// When to sign the chain head, and where the checkpoints go besides the store.
pub struct Checkpoints {
    every: u64,
    since: AtomicU64,
    /// The newest signed event.
    signed: AtomicI64,
    file: PathBuf,
    /// Woken when `every` events were appended since the last checkpoint.
    pub due: tokio::sync::Notify,
}

/// The checkpoints written to `file` (one JSON line each); lines that do not parse are skipped.
pub fn read_file(file: &std::path::Path) -> Vec<Checkpoint> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Checkpoints from the store and from the file beside the recordings, each once: deleting
/// the newest events and their checkpoint rows from the store does not hide them, since the
/// file (on other storage, ideally append-only) still holds the checkpoint that covered them.
pub fn merged(store: Vec<Checkpoint>, file: Vec<Checkpoint>) -> Vec<Checkpoint> {
    let mut all = store;
    for c in file {
        if !all.contains(&c) {
            all.push(c);
        }
    }
    all.sort_by_key(|c| c.seq);
    all
}

impl Checkpoints {
    /// `signed`: the newest event an existing checkpoint covers.
    pub fn new(every: u64, file: PathBuf, signed: i64) -> Checkpoints {
        Checkpoints {
            every: every.max(1),
            since: AtomicU64::new(0),
            signed: AtomicI64::new(signed),
            file,
            due: tokio::sync::Notify::new(),
        }
    }

    /// Count one appended event; `true` when the chain head is due to be signed.
    pub fn counted(&self) -> bool {
        self.since.fetch_add(1, Ordering::Relaxed) + 1 >= self.every
    }

    /// Claim the signing of the head at `seq`; `false` when it is signed already.
    pub fn claim(&self, seq: i64) -> bool {
        if self.signed.fetch_max(seq, Ordering::Relaxed) >= seq {
            return false;
        }
        self.since.store(0, Ordering::Relaxed);
        true
    }

    /// The checkpoints in the file.
    pub fn in_file(&self) -> Vec<Checkpoint> {
        read_file(&self.file)
    }

    /// Append a checkpoint to the file, one JSON line.
    pub fn append(&self, c: &Checkpoint) {
        let line = serde_json::to_string(c).unwrap_or_default();
        if let Some(dir) = self.file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            tracing::error!(file = %self.file.display(), "cannot write an audit checkpoint: {e}");
        }
    }
}
