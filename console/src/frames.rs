//! RDP recordings as pictures: the desktop at one moment as a PNG, or a directory of frames.
//! Decoding happens here, on the auditor's machine, from the recorded target → client stream.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use wardengate_recorder::desktop::{desktop_at, Desktop};
use wardengate_recorder::{Event, EventKind};

/// `HH:MM:SS.mmm` of an offset into the session.
fn hms(us: u64) -> String {
    wardengate_recorder::time::clock(Duration::from_micros(us), true)
}

fn no_desktop(events: &[Event], at: u64) -> anyhow::Error {
    let mut d = Desktop::new();
    let first = events.iter().find_map(|e| {
        if let EventKind::Output { data, .. } = &e.kind {
            d.feed(data);
        }
        d.size().map(|_| e.t_us)
    });
    match first {
        None => anyhow!(
            "this recording holds no RDP desktop: png and frames export RDP sessions (for a terminal session use asciicast or text)"
        ),
        Some(first) => anyhow!(
            "the desktop was not on screen yet at {} (it appears at {})",
            hms(at),
            hms(first)
        ),
    }
}

fn warn_errors(d: &Desktop) {
    if d.errors > 0 {
        crate::output::note(&format!(
            "wgctl: {} update(s) could not be decoded and are missing from the picture; the first: {}",
            d.errors,
            d.first_error.as_deref().unwrap_or("?")
        ));
    }
}

fn png(d: &Desktop) -> Result<Vec<u8>> {
    d.png()
        .ok_or_else(|| anyhow!("no desktop"))?
        .context("cannot encode the frame as PNG")
}

/// The desktop as it was `at` into the session (the last frame if `at` is past the end).
pub fn png_at(events: &[Event], at: Duration) -> Result<Vec<u8>> {
    let at = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
    let d = desktop_at(events, at);
    if d.size().is_none() {
        return Err(no_desktop(events, at));
    }
    warn_errors(&d);
    png(&d)
}

/// One PNG every `every` of session time in which the desktop changed, named by the offset
/// (`00-01-30.000.png`), plus the last state. Returns how many were written.
pub fn frames(events: &[Event], dir: &Path, every: Duration) -> Result<usize> {
    let step = u64::try_from(every.as_micros()).unwrap_or(u64::MAX);
    if step == 0 {
        bail!("--every must be longer than 0");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut d = Desktop::new();
    let mut written = 0usize;
    let mut shown = None;
    let mut next = step;
    let mut write = |d: &Desktop, t: u64, written: &mut usize| -> Result<()> {
        if d.size().is_none() || shown == Some(d.version) {
            return Ok(());
        }
        shown = Some(d.version);
        let name = hms(t).replace(':', "-") + ".png";
        let path = dir.join(&name);
        std::fs::write(&path, png(d)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        *written += 1;
        Ok(())
    };
    for e in events {
        while e.t_us >= next {
            write(&d, next, &mut written)?;
            next = next.saturating_add(step);
        }
        if let EventKind::Output { data, .. } = &e.kind {
            d.feed(data);
        }
    }
    let end = events.last().map_or(0, |e| e.t_us);
    write(&d, end, &mut written)?;
    if written == 0 {
        return Err(no_desktop(events, u64::MAX));
    }
    warn_errors(&d);
    Ok(written)
}
