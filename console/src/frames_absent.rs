//! RDP recordings as pictures, in a wgctl built without RDP decoding (`--no-default-features`):
//! the same calls, each saying how to get a wgctl that has it.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use wardengate_recorder::Event;

const ABSENT: &str = "this wgctl was built without RDP decoding: png and frames exports need \
                      the `desktop` feature (cargo build -p wardengate-console, which has it by \
                      default); every other format works without it";

pub fn png_at(_: &[Event], _: Duration) -> Result<Vec<u8>> {
    bail!(ABSENT)
}

pub fn frames(_: &[Event], _: &Path, _: Duration) -> Result<usize> {
    bail!(ABSENT)
}
