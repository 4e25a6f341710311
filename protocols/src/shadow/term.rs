//! The terminal of one pty channel, as the shadow hub keeps it: output queued unparsed until
//! someone looks, and the `vt100` emulator (see the hub's module docs for why).

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};

use bytes::Bytes;

use super::{lock, Frame, ShadowHub, PENDING_CAP};

/// Unparsed output of one terminal.
#[derive(Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    /// Small writes (keystroke echoes) gathered into one chunk, after `chunks`.
    small: Vec<u8>,
    bytes: usize,
    /// Mode-setting sequences of dropped output, replayed before the rest.
    modes: Vec<u8>,
}

/// Writes shorter than this are copied into [`Pending::small`] rather than queued one by one.
const SMALL_WRITE: usize = 512;
/// The most mode-setting bytes kept from dropped output.
pub(super) const MODES_CAP: usize = 4096;

/// Append the terminal-mode sequences in `data` to `modes`: DEC private modes (`ESC [ ? … h/l`),
/// the scroll region (`ESC [ … r`) and the keypad mode (`ESC =`, `ESC >`).
pub(super) fn keep_modes(data: &[u8], modes: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(off) = data[i..].iter().position(|&b| b == 0x1b) {
        let start = i + off;
        i = start + 1;
        match data.get(start + 1) {
            Some(b'=') | Some(b'>') => modes.extend_from_slice(&data[start..start + 2]),
            Some(b'[') => {
                let private = data.get(start + 2) == Some(&b'?');
                let params = start + 2 + usize::from(private);
                let end = data[params..]
                    .iter()
                    .position(|b| !(b.is_ascii_digit() || *b == b';'))
                    .map(|n| params + n);
                if let Some(end) = end {
                    let fin = data[end];
                    if (private && (fin == b'h' || fin == b'l')) || (!private && fin == b'r') {
                        modes.extend_from_slice(&data[start..=end]);
                        i = end + 1;
                    }
                }
            }
            _ => {}
        }
    }
    if modes.len() > MODES_CAP {
        let cut = modes.len() - MODES_CAP / 2;
        // Cut at a sequence start so no half sequence is replayed.
        let at = modes[cut..]
            .iter()
            .position(|&b| b == 0x1b)
            .map_or(modes.len(), |n| cut + n);
        modes.drain(..at);
    }
}

/// The terminal of one pty channel: output waiting to be parsed, and the emulator.
pub struct Term {
    pending: Mutex<Pending>,
    parser: Mutex<vt100::Parser>,
    /// The channel number it belongs to (recording numbering).
    pub channel: u32,
    closed: AtomicBool,
    hub: Weak<ShadowHub>,
}

impl Term {
    pub(super) fn new(
        channel: u32,
        rows: NonZeroU16,
        cols: NonZeroU16,
        hub: Weak<ShadowHub>,
    ) -> Term {
        Term {
            pending: Mutex::new(Pending::default()),
            parser: Mutex::new(vt100::Parser::new(rows, cols, 0)),
            channel,
            closed: AtomicBool::new(false),
            hub,
        }
    }

    /// Output waiting to be parsed (tests).
    #[cfg(test)]
    pub(super) fn pending_bytes(&self) -> usize {
        lock(&self.pending).bytes
    }

    /// The channel has closed.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Target output on this terminal. Cheap: the bytes are parsed only when someone looks.
    #[inline]
    pub fn feed(&self, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        {
            let mut p = lock(&self.pending);
            p.bytes += data.len();
            if data.len() < SMALL_WRITE {
                p.small.extend_from_slice(data);
                if p.small.len() >= 8 * SMALL_WRITE {
                    let b = Bytes::from(std::mem::take(&mut p.small));
                    p.chunks.push_back(b);
                }
            } else {
                if !p.small.is_empty() {
                    let b = Bytes::from(std::mem::take(&mut p.small));
                    p.chunks.push_back(b);
                }
                p.chunks.push_back(data.clone());
            }
            while p.bytes > PENDING_CAP {
                let Some(old) = p.chunks.pop_front() else {
                    break;
                };
                p.bytes -= old.len();
                keep_modes(&old, &mut p.modes);
            }
        }
        if let Some(hub) = self.hub.upgrade() {
            if hub.watching.load(Ordering::SeqCst) > 0 {
                hub.dirty.notify_one();
            }
        }
    }

    /// Bring the emulator up to date and run `f` on it.
    pub(super) fn with_screen<R>(&self, f: impl FnOnce(&mut vt100::Parser) -> R) -> R {
        let mut parser = lock(&self.parser);
        let taken = std::mem::take(&mut *lock(&self.pending));
        parser.process(&taken.modes);
        for c in &taken.chunks {
            parser.process(c);
        }
        parser.process(&taken.small);
        f(&mut parser)
    }

    /// The screen as terminal output that repaints it from a cleared terminal.
    pub fn snapshot(&self) -> Frame {
        self.with_screen(|p| {
            let s = p.screen();
            let (rows, cols) = s.size();
            let mut out = b"\x1b[H\x1b[2J".to_vec();
            out.extend_from_slice(s.state_formatted().as_bytes());
            Frame::Screen {
                data: Bytes::from(out),
                cols: cols.get(),
                rows: rows.get(),
            }
        })
    }

    /// The terminal got a new size.
    pub fn resize(&self, cols: u32, rows: u32) {
        use wardengate_recorder::term_dim;
        let (rows, cols) = (term_dim(rows.min(1000), 24), term_dim(cols.min(1000), 80));
        self.with_screen(|p| p.screen_mut().set_size(rows, cols));
        if let Some(hub) = self.hub.upgrade() {
            hub.resync_all();
        }
    }

    /// The channel closed: observers move to the session's next terminal, if any.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(hub) = self.hub.upgrade() {
            hub.resync_all();
        }
    }

    /// The screen's text (tests, diagnostics).
    pub fn contents(&self) -> String {
        self.with_screen(|p| p.screen().contents())
    }
}
