//! The chunk file layout (see FORMAT.md): a fixed little-endian header, then a zstd body.

use crate::{Error, Result};

pub const CHUNK_MAGIC: &[u8; 4] = b"WGRC";
pub const FORMAT_VERSION: u16 = 1;
/// Fixed part of the header, before the session id bytes.
const FIXED: usize = 4 + 2 + 2 + 8 + 8 + 8 + 4 + 8 + 8 + 32 + 2;

/// The header of one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    pub index: u64,
    pub first_t_us: u64,
    pub last_t_us: u64,
    pub events: u32,
    /// Length of the uncompressed body (the concatenated encoded events).
    pub raw_len: u64,
    /// Length of the zstd body that follows the header.
    pub body_len: u64,
    /// sha256 of the previous chunk file (all zeros for chunk 0).
    pub prev_sha256: [u8; 32],
    pub session_id: String,
}

impl ChunkHeader {
    pub fn encoded_len(&self) -> usize {
        FIXED + self.session_id.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(CHUNK_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.first_t_us.to_le_bytes());
        out.extend_from_slice(&self.last_t_us.to_le_bytes());
        out.extend_from_slice(&self.events.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.prev_sha256);
        out.extend_from_slice(&(self.session_id.len() as u16).to_le_bytes());
        out.extend_from_slice(self.session_id.as_bytes());
        out
    }

    /// Parse a header from the start of a chunk file.
    pub fn decode(b: &[u8]) -> Result<ChunkHeader> {
        let bad = |what: &str| Error::Format(format!("chunk header: {what}"));
        if b.len() < FIXED {
            return Err(bad("shorter than a header"));
        }
        if &b[0..4] != CHUNK_MAGIC {
            return Err(bad("not a Wardengate recording chunk (bad magic)"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let version = u16_at(4);
        if version != FORMAT_VERSION {
            return Err(bad(&format!(
                "format version {version} is not supported (this reader knows {FORMAT_VERSION})"
            )));
        }
        let header_len = u16_at(6) as usize;
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&b[52..84]);
        let sid_len = u16_at(84) as usize;
        if header_len != FIXED + sid_len {
            return Err(bad("inconsistent header length"));
        }
        let sid = b
            .get(FIXED..FIXED + sid_len)
            .ok_or_else(|| bad("truncated session id"))?;
        Ok(ChunkHeader {
            index: u64_at(8),
            first_t_us: u64_at(16),
            last_t_us: u64_at(24),
            events: u32_at(32),
            raw_len: u64_at(36),
            body_len: u64_at(44),
            prev_sha256: prev,
            session_id: String::from_utf8(sid.to_vec())
                .map_err(|_| bad("session id is not UTF-8"))?,
        })
    }
}

/// File name of chunk `index`.
pub(crate) fn chunk_name(index: u64) -> String {
    format!("{index:08}.chunk")
}

/// The index in a chunk file name, if it is one.
pub(crate) fn chunk_index(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".chunk")?;
    if stem.len() != 8 || !stem.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) const SEAL_FILE: &str = "seal.json";
pub(crate) const META_FILE: &str = "recording.json";
/// The write-ahead log of the open chunk (see FORMAT.md, "Write-ahead log").
pub(crate) const WAL_FILE: &str = "open.wal";
pub(crate) const WAL_MAGIC: &[u8; 4] = b"WGWL";
/// Magic, then the index of the chunk the log belongs to (u64 LE).
pub(crate) const WAL_HEADER: usize = 4 + 8;
