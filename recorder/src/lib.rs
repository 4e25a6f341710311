//! The session event model the relays emit.
//!
//! Issue 3 turns this crate into the tamper-evident recording format (chunked zstd, sha256 chain,
//! signed seal, reader, verifier, player, exporters). Today it owns only the event vocabulary, so the
//! protocol relays and the gateway already agree on what a tap carries.
#![forbid(unsafe_code)]

use bytes::Bytes;

/// One thing that happened in a session, as a relay sees it.
#[derive(Debug, Clone)]
pub enum Event {
    /// Bytes from the user towards the target. `meaningful` is false for traffic that must not reset
    /// the idle clock.
    Input {
        channel: u32,
        data: Bytes,
        meaningful: bool,
    },
    /// Bytes from the target towards the user (`stderr` for SSH extended data).
    Output {
        channel: u32,
        data: Bytes,
        stderr: bool,
    },
    /// Terminal size change.
    Resize { channel: u32, cols: u32, rows: u32 },
    /// A lifecycle or control marker (`exec`, `exit-status`, `terminated`, ...).
    Marker { kind: String, detail: String },
}
