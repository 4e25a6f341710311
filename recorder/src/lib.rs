//! Tamper-evident session recordings (format: `recorder/FORMAT.md`).
//!
//! A recording is a directory: numbered chunk files, each a small header plus a zstd body of
//! length-prefixed [`Event`]s, chained by sha256 (every header carries the previous chunk's
//! hash), and a seal written at close with the chunk count, byte count and final chain hash,
//! signed with the gateway's Ed25519 recording key. [`Writer`] produces it, [`read`] replays it,
//! [`verify`] checks it offline with only the public key, and [`recover`] seals what a crash left
//! behind as `truncated`.
//!
//! No I/O outside the recording directory, no network, no async: the gateway drives it from a
//! per-session task, tests drive it directly. The one exception is the `bucket` feature: copying
//! recordings to and from an S3-compatible bucket (async, for the gateway's uploader and wgctl).
#![forbid(unsafe_code)]

pub mod audit;
#[cfg(feature = "bucket")]
pub mod bucket;
#[cfg(feature = "desktop")]
pub mod desktop;
mod event;
mod export;
mod format;
mod query;
mod reader;
mod seal;
/// Durations for people (`15m`, `2h 30m`) and offsets (`00:01:02`): kept in the wire-types
/// crate, which renders them too.
pub use wardengate_api::time;
mod writer;

pub use event::{Event, EventKind};
pub use export::{
    asciicast, escape, event_json, is_stream, is_stream_events, stream_line, stream_transcript,
    term_dim, text,
};
pub use format::{ChunkHeader, CHUNK_MAGIC, FORMAT_VERSION};
pub use query::{alert_for, csv_row, QueryRecord, CSV_HEADER};
pub use reader::{read, verify, Problem, Recording, VerifyReport};
pub use seal::{
    generate_key, parse_public_key, public_key_hex, Seal, SealStatus, SigningKey, VerifyingKey,
};
pub use writer::{recover, Limits, Writer};

/// Errors of the recorder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Format(String),
    /// An object in the bucket larger than any recording file can be.
    #[error("{0}")]
    Oversize(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
