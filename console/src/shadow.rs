//! `wgctl session shadow ID`: watch a live session read-only in this terminal.
//!
//! The stream (`GET /api/v1/sessions/{id}/shadow`) carries the session's screen, then what
//! changes on it; this command writes it to the terminal as it comes. The terminal is put in raw
//! mode so that keystrokes are not echoed and `Ctrl-]` then `q` can detach; nothing typed here
//! goes anywhere — the stream has no way back to the session.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use base64::Engine;
use wardengate_api as api;

use crate::client::{path_segment, Client};

/// The terminal in raw mode while alive; restored when dropped (and by [`finish`], which may
/// end the process from the key-reading thread).
struct RawMode;

impl RawMode {
    fn enter() -> Option<RawMode> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        crossterm::terminal::enable_raw_mode().ok().map(|_| RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// This terminal's size (cols, rows), if stdout is one.
fn own_size() -> Option<(u16, u16)> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    crossterm::terminal::size().ok().filter(|(c, _)| *c > 0)
}

/// Keystrokes are read and dropped; `Ctrl-]` then `q` asks to detach.
fn watch_keys(detach: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut armed = false;
        let mut b = [0u8; 64];
        while let Ok(n) = stdin.read(&mut b) {
            if n == 0 {
                return;
            }
            for &c in &b[..n] {
                if armed && (c == b'q' || c == b'Q') {
                    // The main thread may be blocked reading a quiet stream: leave from here.
                    detach.store(true, Ordering::Release);
                    std::process::exit(finish(None));
                }
                armed = c == 0x1d;
            }
        }
    });
}

/// Text from the session (a SQL statement, an error) made safe for this terminal: control
/// characters are shown as `\x1b`-style escapes, never interpreted (no OSC 52 clipboard writes,
/// no cursor games from a database user).
fn inert(text: &str) -> String {
    api::text::inert(text, usize::MAX).into_owned()
}

/// Leave the terminal usable, say why we stopped; the exit code.
fn finish(why: Option<&str>) -> i32 {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\x1b[0m\x1b[?25h\r\n");
    let _ = match why {
        Some(w) => out.write_all(format!("[shadow] {w}\r\n").as_bytes()),
        None => out.write_all(b"[shadow] detached\r\n"),
    };
    let _ = out.flush();
    // Raw mode is process-wide state: leave it here too, since the key thread may exit the
    // process without running destructors. Harmless when it was never entered.
    let _ = crossterm::terminal::disable_raw_mode();
    0
}

/// `--browser`: a one-time link to the gateway's shadow page.
pub fn browser(c: &Client, id: &str, json: bool) -> Result<()> {
    let link: api::ShadowLink = c.post(
        &format!("/api/v1/sessions/{}/shadow/browser", path_segment(id)),
        &serde_json::json!({}),
    )?;
    open_link(
        &format!("[shadow] watch {id} read-only in a browser"),
        &link,
        json,
    )
}

/// Print a one-time browser link for the operator to open (`-o json`: the link as JSON).
pub fn open_link(what: &str, link: &api::ShadowLink, json: bool) -> Result<()> {
    // Not handed to a browser command: a command line is readable by every local user, and
    // the ticket must reach only the operator's browser.
    if json {
        return crate::output::print_json(link);
    }
    crate::output::out(&format!(
        "{what} as {} (the link works once, within {} s):\n  {}\n",
        link.observer, link.expires_in_secs, link.url
    ))
}

pub fn run(c: &Client, id: &str) -> Result<()> {
    // (A token that may not see the session gets the shadow endpoint's own answer below.)
    let s = c.get::<api::Session>(&format!("/api/v1/sessions/{}", path_segment(id)), &[]);
    if s.is_ok_and(|s| s.protocol == api::Protocol::Rdp) {
        return Err(anyhow!(
            "session {id} is a desktop (RDP) session: watch it in a browser with \
             `wgctl session shadow {id} --browser`"
        ));
    }
    let resp = c.stream(&format!("/api/v1/sessions/{}/shadow", path_segment(id)))?;
    let mut lines = BufReader::new(resp).lines();
    let first = lines
        .next()
        .ok_or_else(|| anyhow!("the gateway closed the shadow stream at once"))?
        .map_err(|e| anyhow!("cannot read the shadow stream: {e}"))?;
    let hello: api::ShadowEvent = serde_json::from_str(&first)
        .map_err(|e| anyhow!("unexpected answer from the gateway: {e}"))?;
    let api::ShadowEvent::Attached {
        session,
        observer,
        banner,
        at,
        protocol,
        actor,
        target,
    } = hello
    else {
        return Err(anyhow!(
            "unexpected first line of the shadow stream: {first}"
        ));
    };
    let raw = RawMode::enter();
    let detach = Arc::new(AtomicBool::new(false));
    if raw.is_some() {
        watch_keys(detach.clone());
    }
    let mut out = std::io::stdout();
    let header = format!(
        "[shadow] attached read-only at {at} of {session} ({actor} on {target}, {protocol})\r\n\
         [shadow] observer: {observer}  banner={banner}\r\n\
         [shadow] detach with Ctrl-] q\r\n"
    );
    out.write_all(header.as_bytes())?;
    out.flush()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut first_screen = true;
    let mut why = "the stream ended".to_string();
    for l in lines {
        if detach.load(Ordering::Acquire) {
            break;
        }
        let l = l.map_err(|e| anyhow!("the shadow stream broke: {e}"))?;
        let ev: api::ShadowEvent = match serde_json::from_str(&l) {
            Ok(ev) => ev,
            Err(_) => continue,
        };
        match ev {
            api::ShadowEvent::Screen { data, cols, rows } => {
                if first_screen {
                    first_screen = false;
                    // Keep the header in the scrollback: the screen repaint clears the view.
                    let mut pre = String::new();
                    if let Some((c, r)) = own_size() {
                        if (c, r) != (cols, rows) {
                            pre.push_str(&format!("[shadow] the session's terminal is {cols}x{rows}; this one is {c}x{r} (resize it to match)\r\n"));
                        }
                        pre.push_str(&"\r\n".repeat(usize::from(r)));
                    }
                    out.write_all(pre.as_bytes())?;
                }
                out.write_all(&b64.decode(data.as_bytes()).unwrap_or_default())?;
            }
            api::ShadowEvent::Output { data } => {
                out.write_all(&b64.decode(data.as_bytes()).unwrap_or_default())?;
            }
            api::ShadowEvent::Line { text } => {
                out.write_all(format!("{}\r\n", inert(&text)).as_bytes())?;
            }
            api::ShadowEvent::Notice { text } => {
                out.write_all(format!("\r\n{}\r\n", inert(&text)).as_bytes())?;
            }
            api::ShadowEvent::End { reason } => {
                why = format!("session ended: {}", inert(&reason));
                break;
            }
            api::ShadowEvent::Attached { .. }
            | api::ShadowEvent::Desktop { .. }
            | api::ShadowEvent::Replay { .. }
            | api::ShadowEvent::Position { .. } => {}
        }
        out.flush()?;
    }
    drop(raw);
    finish(Some(&why));
    Ok(())
}
