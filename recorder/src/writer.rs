//! Writing a recording: events accumulate in memory and are written as one chunk when the chunk
//! reaches its size or age bound; each chunk is written to a temporary file, synced, then renamed,
//! so a chunk file that exists is whole.
//!
//! Meanwhile the open chunk's events are appended, as they are encoded, to a write-ahead log
//! (`open.wal`) whenever [`Writer::write_ahead`] runs (the gateway runs it every 200 ms while
//! events arrive). A process crash then loses at most what arrived since the last append; crash
//! recovery turns the log into a final chunk. The log is written, not synced: it survives the
//! process, not the machine (a chunk is synced when it closes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::event::Event;
use crate::format::{
    chunk_index, chunk_name, ChunkHeader, SEAL_FILE, WAL_FILE, WAL_HEADER, WAL_MAGIC,
};
use crate::seal::{Seal, SealStatus, SigningKey};
use crate::{Error, Result};

/// When a chunk closes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub chunk_raw_bytes: usize,
    pub chunk_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            chunk_raw_bytes: 1 << 20,
            chunk_age: Duration::from_secs(10),
        }
    }
}

/// A recording being written.
pub struct Writer {
    dir: PathBuf,
    session_id: String,
    limits: Limits,
    started_at_ms: u64,
    buf: Vec<u8>,
    buf_events: u32,
    first_t_us: u64,
    last_t_us: u64,
    opened: Instant,
    index: u64,
    prev: [u8; 32],
    total_events: u64,
    total_raw: u64,
    stored: u64,
    /// The write-ahead log of the open chunk, once something was appended to it.
    wal: Option<std::fs::File>,
    /// Bytes of `buf` already in the log.
    wal_done: usize,
}

fn sync_dir(dir: &Path) {
    // Make the rename durable; not every filesystem allows syncing a directory, so best effort.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Writer {
    /// Start a recording in `dir`, which must not hold one already. Fails if the directory
    /// cannot be created or written, so a session that requires recording can be refused.
    pub fn create(
        dir: &Path,
        session_id: &str,
        started_at_ms: u64,
        limits: Limits,
    ) -> Result<Writer> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let has_chunks = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
            .any(|e| chunk_index(&e.file_name().to_string_lossy()).is_some());
        if has_chunks || dir.join(SEAL_FILE).exists() {
            return Err(Error::Format(format!(
                "{} already holds a recording",
                dir.display()
            )));
        }
        // Written first, which also proves the directory is writable now rather than at the
        // first chunk. Unsigned: it only helps listing and crash recovery.
        let meta = dir.join(crate::format::META_FILE);
        let text = serde_json::json!({ "session_id": session_id, "started_at_ms": started_at_ms });
        std::fs::write(&meta, text.to_string()).map_err(|e| Error::io(&meta, e))?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            session_id: session_id.to_string(),
            limits,
            started_at_ms,
            buf: Vec::new(),
            buf_events: 0,
            first_t_us: 0,
            last_t_us: 0,
            opened: Instant::now(),
            index: 0,
            prev: [0u8; 32],
            total_events: 0,
            total_raw: 0,
            stored: 0,
            wal: None,
            wal_done: 0,
        })
    }

    /// Whether events arrived since the last [`write_ahead`](Self::write_ahead).
    pub fn wal_pending(&self) -> bool {
        self.buf.len() > self.wal_done
    }

    /// Append the open chunk's new events to its write-ahead log (written, not synced: a
    /// process crash keeps them, crash recovery makes them the last chunk).
    pub fn write_ahead(&mut self) -> Result<()> {
        if !self.wal_pending() {
            return Ok(());
        }
        let path = self.dir.join(WAL_FILE);
        if self.wal.is_none() {
            let mut f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut head = Vec::with_capacity(WAL_HEADER);
            head.extend_from_slice(WAL_MAGIC);
            head.extend_from_slice(&self.index.to_le_bytes());
            f.write_all(&head).map_err(|e| Error::io(&path, e))?;
            self.wal = Some(f);
        }
        if let Some(f) = self.wal.as_mut() {
            f.write_all(&self.buf[self.wal_done..])
                .map_err(|e| Error::io(&path, e))?;
        }
        self.wal_done = self.buf.len();
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Add an event to the open chunk without writing; `true` when the chunk is full and
    /// [`flush`](Self::flush) should run (the gateway runs it on its blocking pool).
    pub fn push_buffered(&mut self, ev: &Event) -> bool {
        if self.buf_events == 0 {
            self.first_t_us = ev.t_us;
            self.opened = Instant::now();
        }
        self.last_t_us = self.last_t_us.max(ev.t_us);
        ev.encode(&mut self.buf);
        self.buf_events += 1;
        self.total_events += 1;
        self.buf.len() >= self.limits.chunk_raw_bytes
    }

    /// Add an event; writes a chunk when the size bound is reached.
    pub fn push(&mut self, ev: &Event) -> Result<()> {
        if self.push_buffered(ev) {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether the open chunk has reached its age bound.
    pub fn due(&self) -> bool {
        self.buf_events > 0 && self.opened.elapsed() >= self.limits.chunk_age
    }

    /// How long until the open chunk reaches its age bound (`None` when it is empty).
    pub fn due_in(&self) -> Option<Duration> {
        (self.buf_events > 0).then(|| self.limits.chunk_age.saturating_sub(self.opened.elapsed()))
    }

    /// Write the open chunk, if it has events.
    pub fn flush(&mut self) -> Result<()> {
        if self.buf_events == 0 {
            return Ok(());
        }
        let written = write_chunk(
            &self.dir,
            &ChunkHeader {
                index: self.index,
                first_t_us: self.first_t_us,
                last_t_us: self.last_t_us,
                events: self.buf_events,
                raw_len: self.buf.len() as u64,
                body_len: 0,
                prev_sha256: self.prev,
                session_id: self.session_id.clone(),
            },
            &self.buf,
        )?;
        self.prev = written.sha256;
        self.total_raw += self.buf.len() as u64;
        self.stored += written.stored;
        self.index += 1;
        self.buf.clear();
        self.buf_events = 0;
        // The chunk is whole on disk: its log is done with.
        if self.wal.take().is_some() {
            let path = self.dir.join(WAL_FILE);
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        self.wal_done = 0;
        Ok(())
    }

    /// Write the last chunk and the signed seal.
    pub fn seal(mut self, key: &SigningKey, ended_at_ms: u64) -> Result<Seal> {
        self.flush()?;
        let mut seal = Seal {
            format: crate::format::FORMAT_VERSION,
            session_id: self.session_id.clone(),
            status: SealStatus::Complete,
            chunks: self.index,
            events: self.total_events,
            raw_bytes: self.total_raw,
            final_sha256: if self.index == 0 {
                String::new()
            } else {
                hex::encode(self.prev)
            },
            started_at_ms: self.started_at_ms,
            ended_at_ms,
            duration_us: self.last_t_us,
            public_key: String::new(),
            signature: String::new(),
        };
        write_seal(&self.dir, &mut seal, key)?;
        Ok(seal)
    }

    /// Events recorded so far.
    pub fn events(&self) -> u64 {
        self.total_events
    }

    /// Remove a recording that holds no event (a session refused or failed before it opened):
    /// an empty sealed recording would only suggest that something was recorded.
    pub fn discard(self) -> Result<()> {
        if self.total_events > 0 {
            return Err(Error::Format(format!(
                "{} holds {} events; it is sealed, not discarded",
                self.dir.display(),
                self.total_events
            )));
        }
        std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))
    }

    /// Bytes written to disk so far (headers + compressed bodies).
    pub fn stored_bytes(&self) -> u64 {
        self.stored
    }
}

/// A chunk on disk: its hash and its size.
struct Written {
    sha256: [u8; 32],
    stored: u64,
}

/// Write chunk `header.index` with body `raw` (compressed here; `header.body_len` is set):
/// to a temporary file, synced, then renamed.
fn write_chunk(dir: &Path, header: &ChunkHeader, raw: &[u8]) -> Result<Written> {
    let body = zstd_compress(raw)?;
    let header = ChunkHeader {
        body_len: body.len() as u64,
        ..header.clone()
    };
    let head = header.encode();
    let mut h = Sha256::new();
    h.update(&head);
    h.update(&body);
    let final_path = dir.join(chunk_name(header.index));
    let tmp = dir.join(format!("{}.tmp", chunk_name(header.index)));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&head).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&body).map_err(|e| Error::io(&tmp, e))?;
        f.sync_data().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &final_path).map_err(|e| Error::io(&final_path, e))?;
    sync_dir(dir);
    Ok(Written {
        sha256: h.finalize().into(),
        stored: (head.len() + body.len()) as u64,
    })
}

/// zstd level 3. Measured with `scripts/bench record` on 2 cores: level 3 stores 0.118 bytes per
/// terminal byte at 0.81 of unrecorded throughput; level 1 gave 0.165 at 0.84, over the 0.15 size
/// goal, so the smaller recordings win.
const ZSTD_LEVEL: i32 = 3;

fn zstd_compress(raw: &[u8]) -> Result<Vec<u8>> {
    let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(raw.len() / 4), ZSTD_LEVEL)
        .map_err(|e| Error::Format(format!("zstd: {e}")))?;
    // The frame checksum makes a flipped body byte fail decompression with a clear error.
    enc.include_checksum(true)
        .map_err(|e| Error::Format(format!("zstd: {e}")))?;
    enc.write_all(raw)
        .map_err(|e| Error::Format(format!("zstd: {e}")))?;
    enc.finish()
        .map_err(|e| Error::Format(format!("zstd: {e}")))
}

fn write_seal(dir: &Path, seal: &mut Seal, key: &SigningKey) -> Result<()> {
    seal.sign(key);
    let path = dir.join(SEAL_FILE);
    let tmp = dir.join("seal.json.tmp");
    let text = serde_json::to_vec_pretty(&seal).map_err(|e| Error::Format(format!("seal: {e}")))?;
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&text).map_err(|e| Error::io(&tmp, e))?;
        f.sync_data().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir);
    Ok(())
}

/// Seal a recording that a crash left without a seal: verify the chunks in order, keep every
/// whole chunk up to the first missing or damaged one, make the write-ahead log of the open chunk
/// the last chunk, and seal them as `truncated`. Returns `Ok(None)` when the recording is already
/// sealed, or held nothing (then it is removed).
pub fn recover(dir: &Path, key: &SigningKey, ended_at_ms: u64) -> Result<Option<Seal>> {
    if dir.join(SEAL_FILE).exists() {
        return Ok(None);
    }
    // Half-written chunks never made it past their temporary name.
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let mut good = crate::reader::valid_prefix(dir)?;
    if good.session_id.is_empty() {
        good.session_id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    recover_wal(dir, &mut good)?;
    if good.chunks == 0 && !has_unsealed(dir) {
        // Nothing was recorded before the crash: no recording, rather than an empty one.
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        return Ok(None);
    }
    let mut seal = Seal {
        format: crate::format::FORMAT_VERSION,
        session_id: good.session_id.clone(),
        status: SealStatus::Truncated,
        chunks: good.chunks,
        events: good.events,
        raw_bytes: good.raw_bytes,
        final_sha256: good.final_sha256.map(hex::encode).unwrap_or_default(),
        started_at_ms: good.started_at_ms.unwrap_or(ended_at_ms),
        ended_at_ms,
        duration_us: good.last_t_us,
        public_key: String::new(),
        signature: String::new(),
    };
    if seal.session_id.is_empty() {
        seal.session_id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    write_seal(dir, &mut seal, key)?;
    Ok(Some(seal))
}

/// Whether crash recovery moved damaged chunks or a log aside here (kept for forensics).
fn has_unsealed(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".unsealed"))
}

/// Turn the write-ahead log of the chunk that was open at the crash into that chunk: its whole
/// events, chained after the valid chunks. A log of a chunk that was written after all (the
/// crash came between the rename and the log's removal), or of nothing, is dropped; a log that
/// is not one, or belongs after a damaged chunk, is kept aside (`open.wal.unsealed`).
fn recover_wal(dir: &Path, good: &mut crate::reader::ValidPrefix) -> Result<()> {
    let path = dir.join(WAL_FILE);
    let log = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let index = log
        .get(4..WAL_HEADER)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    if log.get(..4) != Some(WAL_MAGIC.as_slice()) || index.is_some_and(|i| i > good.chunks) {
        // Not a log of ours, or of a chunk after a damaged one: kept aside for forensics, like
        // the chunks after the first bad one.
        let aside = dir.join(format!("{WAL_FILE}.unsealed"));
        std::fs::rename(&path, &aside).map_err(|e| Error::io(&aside, e))?;
        return Ok(());
    }
    if index == Some(good.chunks) {
        let body = &log[WAL_HEADER..];
        let (len, events, first, last) = crate::event::Event::whole_prefix(body);
        if events > 0 {
            let written = write_chunk(
                dir,
                &ChunkHeader {
                    index: good.chunks,
                    first_t_us: first,
                    last_t_us: last,
                    events,
                    raw_len: len as u64,
                    body_len: 0,
                    prev_sha256: good.final_sha256.unwrap_or([0u8; 32]),
                    session_id: good.session_id.clone(),
                },
                &body[..len],
            )?;
            good.chunks += 1;
            good.events += u64::from(events);
            good.raw_bytes += len as u64;
            good.last_t_us = good.last_t_us.max(last);
            good.final_sha256 = Some(written.sha256);
        }
    }
    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    Ok(())
}
