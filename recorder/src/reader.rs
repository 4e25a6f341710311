//! Reading and verifying a recording directory, offline, with only the public key.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::event::Event;
use crate::format::{chunk_index, ChunkHeader, META_FILE, SEAL_FILE};
use crate::seal::{Seal, VerifyingKey};
use crate::{Error, Result};

/// A decoded recording.
#[derive(Debug, Clone)]
pub struct Recording {
    pub dir: PathBuf,
    pub seal: Option<Seal>,
    pub chunks: Vec<ChunkHeader>,
    pub events: Vec<Event>,
}

/// One thing wrong with a recording, said so an auditor can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NoSeal,
    SealUnreadable(String),
    /// The signature does not verify with the given key: another gateway's key, or a modified seal.
    BadSignature,
    SessionMismatch {
        index: u64,
        found: String,
    },
    ChunkMissing(u64),
    /// File `file_index` holds chunk `found` (files renamed or swapped).
    ChunkOutOfOrder {
        file_index: u64,
        found: u64,
    },
    /// A chunk beyond the sealed count.
    ChunkAppended(u64),
    /// Shorter than its header says.
    ChunkTruncated(u64),
    /// Bytes of the chunk differ from what was written (checksum, decode or chain failure).
    ChunkModified {
        index: u64,
        why: String,
    },
    /// The last chunk's hash differs from the seal's final hash.
    FinalHashMismatch,
    /// The seal's totals differ from the chunks.
    TotalsMismatch(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoSeal => write!(f, "no seal: the recording was never closed (run recovery to seal it as truncated)"),
            Problem::SealUnreadable(e) => write!(f, "seal.json is unreadable: {e}"),
            Problem::BadSignature => write!(f, "the seal's signature does not verify with this key (wrong key, or the seal was modified)"),
            Problem::SessionMismatch { index, found } => write!(f, "chunk {index} belongs to another session ({found})"),
            Problem::ChunkMissing(i) => write!(f, "chunk {i} is missing"),
            Problem::ChunkOutOfOrder { file_index, found } => write!(f, "chunk file {file_index:08}.chunk holds chunk {found}: chunks were reordered"),
            Problem::ChunkAppended(i) => write!(f, "chunk {i} was appended after the seal"),
            Problem::ChunkTruncated(i) => write!(f, "chunk {i} is truncated"),
            Problem::ChunkModified { index, why } => write!(f, "chunk {index} was modified: {why}"),
            Problem::FinalHashMismatch => write!(f, "the last chunk's hash differs from the seal: the last chunk was modified or replaced"),
            Problem::TotalsMismatch(what) => write!(f, "the seal's totals differ from the chunks: {what}"),
        }
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub seal: Option<Seal>,
    pub problems: Vec<Problem>,
    pub chunks_ok: u64,
    pub events: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn list_chunks(dir: &Path) -> Result<BTreeMap<u64, PathBuf>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        if let Some(i) = chunk_index(&e.file_name().to_string_lossy()) {
            files.insert(i, e.path());
        }
    }
    Ok(files)
}

fn read_seal(dir: &Path) -> std::result::Result<Option<Seal>, String> {
    let path = dir.join(SEAL_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A chunk file checked on its own: header, length, body checksum, events.
struct Checked {
    header: ChunkHeader,
    sha256: [u8; 32],
    events: Vec<Event>,
}

enum ChunkError {
    Truncated,
    Modified(String),
}

fn check_chunk(path: &Path) -> std::result::Result<Checked, ChunkError> {
    let bytes =
        std::fs::read(path).map_err(|e| ChunkError::Modified(format!("unreadable: {e}")))?;
    let header = ChunkHeader::decode(&bytes).map_err(|e| ChunkError::Modified(e.to_string()))?;
    let start = header.encoded_len();
    let end = start as u64 + header.body_len;
    if (bytes.len() as u64) < end {
        return Err(ChunkError::Truncated);
    }
    if bytes.len() as u64 > end {
        return Err(ChunkError::Modified("bytes after the body".into()));
    }
    let mut raw = Vec::with_capacity(header.raw_len.min(64 << 20) as usize);
    // At most one byte more than the header says: a body that inflates past it is refused
    // below, without first filling memory.
    zstd::stream::Decoder::new(&bytes[start..])
        .and_then(|d| {
            d.take(header.raw_len.saturating_add(1))
                .read_to_end(&mut raw)
        })
        .map_err(|e| ChunkError::Modified(format!("body does not decompress ({e})")))?;
    if raw.len() as u64 != header.raw_len {
        return Err(ChunkError::Modified(
            "body length differs from its header".into(),
        ));
    }
    let events = Event::decode_all(&raw).map_err(|e| ChunkError::Modified(e.to_string()))?;
    if events.len() as u64 != header.events as u64 {
        return Err(ChunkError::Modified(
            "event count differs from its header".into(),
        ));
    }
    Ok(Checked {
        sha256: Sha256::digest(&bytes).into(),
        header,
        events,
    })
}

/// Verify everything about a recording: seal signature (when `key` is given), chunk order and
/// completeness, every chunk's bytes through the hash chain, and the seal's totals.
pub fn verify(dir: &Path, key: Option<&VerifyingKey>) -> Result<VerifyReport> {
    let files = list_chunks(dir)?;
    let mut problems = Vec::new();
    let seal = match read_seal(dir) {
        Ok(Some(s)) => {
            if let Some(k) = key {
                if s.verify_signature(k).is_err() {
                    problems.push(Problem::BadSignature);
                }
            }
            Some(s)
        }
        Ok(None) => {
            problems.push(Problem::NoSeal);
            None
        }
        Err(e) => {
            problems.push(Problem::SealUnreadable(e));
            None
        }
    };
    let expected = seal
        .as_ref()
        .map(|s| s.chunks)
        .unwrap_or_else(|| files.keys().next_back().map(|k| k + 1).unwrap_or(0));
    let mut prev = [0u8; 32];
    let mut chain_ok = true;
    let (mut chunks_ok, mut events, mut raw) = (0u64, 0u64, 0u64);
    for i in 0..expected {
        let Some(path) = files.get(&i) else {
            problems.push(Problem::ChunkMissing(i));
            chain_ok = false;
            continue;
        };
        match check_chunk(path) {
            Err(ChunkError::Truncated) => {
                problems.push(Problem::ChunkTruncated(i));
                chain_ok = false;
            }
            Err(ChunkError::Modified(why)) => {
                problems.push(Problem::ChunkModified { index: i, why });
                chain_ok = false;
            }
            Ok(c) => {
                if c.header.index != i {
                    problems.push(Problem::ChunkOutOfOrder {
                        file_index: i,
                        found: c.header.index,
                    });
                    chain_ok = false;
                } else if let Some(s) = &seal {
                    if c.header.session_id != s.session_id {
                        problems.push(Problem::SessionMismatch {
                            index: i,
                            found: c.header.session_id.clone(),
                        });
                    }
                }
                if chain_ok && c.header.prev_sha256 != prev {
                    // This chunk is intact, so the one before it changed after this was written.
                    problems.push(Problem::ChunkModified {
                        index: i.saturating_sub(1),
                        why: format!("its hash no longer matches the chain recorded in chunk {i}"),
                    });
                    chain_ok = false;
                }
                prev = c.sha256;
                chunks_ok += 1;
                events += c.events.len() as u64;
                raw += c.header.raw_len;
            }
        }
    }
    for &i in files.keys().filter(|&&i| i >= expected) {
        problems.push(Problem::ChunkAppended(i));
    }
    if let Some(s) = &seal {
        let final_hash = if expected == 0 {
            String::new()
        } else {
            hex::encode(prev)
        };
        if chain_ok && chunks_ok == expected && s.final_sha256 != final_hash {
            problems.push(Problem::FinalHashMismatch);
        }
        if chain_ok && chunks_ok == expected && (s.events != events || s.raw_bytes != raw) {
            problems.push(Problem::TotalsMismatch(format!(
                "seal says {} events / {} bytes, chunks hold {events} / {raw}",
                s.events, s.raw_bytes
            )));
        }
    }
    Ok(VerifyReport {
        seal,
        problems,
        chunks_ok,
        events,
    })
}

/// Read every event (no signature check; call [`verify`] for that). Stops at the first chunk that
/// cannot be read and reports it as an error.
pub fn read(dir: &Path) -> Result<Recording> {
    let files = list_chunks(dir)?;
    let seal =
        read_seal(dir).map_err(|e| Error::Format(format!("{}: seal.json: {e}", dir.display())))?;
    let mut chunks = Vec::new();
    let mut events = Vec::new();
    for (i, path) in &files {
        let c = check_chunk(path).map_err(|e| match e {
            ChunkError::Truncated => Error::Format(format!("chunk {i} is truncated")),
            ChunkError::Modified(why) => Error::Format(format!("chunk {i} is damaged: {why}")),
        })?;
        chunks.push(c.header);
        events.extend(c.events);
    }
    Ok(Recording {
        dir: dir.to_path_buf(),
        seal,
        chunks,
        events,
    })
}

/// What crash recovery keeps: the longest run of whole, chained chunks from chunk 0.
pub(crate) struct ValidPrefix {
    pub session_id: String,
    pub started_at_ms: Option<u64>,
    pub chunks: u64,
    pub events: u64,
    pub raw_bytes: u64,
    pub last_t_us: u64,
    pub final_sha256: Option<[u8; 32]>,
}

pub(crate) fn valid_prefix(dir: &Path) -> Result<ValidPrefix> {
    let files = list_chunks(dir)?;
    let meta: Option<serde_json::Value> = std::fs::read(dir.join(META_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut v = ValidPrefix {
        session_id: meta
            .as_ref()
            .and_then(|m| m["session_id"].as_str().map(str::to_string))
            .unwrap_or_default(),
        started_at_ms: meta.as_ref().and_then(|m| m["started_at_ms"].as_u64()),
        chunks: 0,
        events: 0,
        raw_bytes: 0,
        last_t_us: 0,
        final_sha256: None,
    };
    let mut prev = [0u8; 32];
    for i in 0.. {
        let Some(path) = files.get(&i) else { break };
        let Ok(c) = check_chunk(path) else { break };
        if c.header.index != i || c.header.prev_sha256 != prev {
            break;
        }
        if v.session_id.is_empty() {
            v.session_id = c.header.session_id.clone();
        }
        prev = c.sha256;
        v.chunks += 1;
        v.events += c.events.len() as u64;
        v.raw_bytes += c.header.raw_len;
        v.last_t_us = c.header.last_t_us;
        v.final_sha256 = Some(prev);
    }
    // Chunks after the first bad one cannot be trusted; move them aside so the sealed directory
    // verifies, but keep them for forensics.
    for (&i, path) in files.range(v.chunks..) {
        let aside = dir.join(format!("{i:08}.chunk.unsealed"));
        let _ = std::fs::rename(path, aside);
    }
    Ok(v)
}
