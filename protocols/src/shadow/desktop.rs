//! The live desktop of an RDP session, for observers in a browser.
//!
//! The relay hands every chunk of the target's stream (the `Bytes` it already made for the
//! recording, so no copy) to a [`DesktopFeed`]; a decoder thread of the session feeds it through
//! the same decoder the recordings replay with ([`wardengate_recorder::desktop::Desktop`]). The
//! relay never waits for it: when the decoder is more than [`FEED_CAP`] behind, the live view
//! stops (observers are told; the recording has everything) rather than the session slowing.
//!
//! Observers get pictures, not the RDP stream: at most [`DESKTOP_FRAME_INTERVAL`] apart, the
//! desktop shrunk [`scale`] times, cut into [`TILE`]-pixel tiles, and the tiles that changed since
//! the previous picture sent as PNG rectangles (one [`Frame::Desktop`] message; see [`encode`]).
//! A new or resynchronised observer gets the whole picture.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use wardengate_recorder::desktop::{rgb_png, Desktop};

use super::{lock, Frame, Framing, ShadowHub};

/// Target bytes the decoder may be behind before the live view gives up.
pub const FEED_CAP: usize = 16 << 20;
/// The largest desktop kept live for observers (4K UHD); larger ones are only recorded.
pub const MAX_LIVE_PIXELS: u64 = 3840 * 2160;
/// The shortest time between two pictures to observers (4 per second).
pub const DESKTOP_FRAME_INTERVAL: Duration = Duration::from_millis(250);
/// Tile side, in pixels of the shrunk picture.
pub const TILE: usize = 32;
/// First bytes of a [`Frame::Desktop`](super::Frame::Desktop) message.
pub const MAGIC: &[u8; 4] = b"WGD1";

/// How many times a desktop is shrunk on each side for observers: so that it is at most 960
/// pixels wide (1024 to 1920 wide are shrunk by 2: 1280×800 is watched at 640×400; 4K by 4).
pub fn scale(width: u16) -> u16 {
    width.div_ceil(960).max(1)
}

/// The decoder's side, shared with the hub's frame producer.
pub(super) struct LiveDesktop {
    pub(super) desktop: Mutex<Desktop>,
    /// Why the live view stopped, once it has.
    pub(super) stopped: Mutex<Option<String>>,
}

/// The relay's handle: hands the target's stream to the decoder thread without waiting.
pub struct DesktopFeed {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    over: AtomicBool,
}

impl DesktopFeed {
    /// The next chunk of the target → client stream. Never blocks.
    pub fn push(&self, data: &Bytes) {
        if self.over.load(Ordering::Relaxed) || data.is_empty() {
            return;
        }
        let behind = self.queued.fetch_add(data.len(), Ordering::AcqRel) + data.len();
        if behind > FEED_CAP {
            self.over.store(true, Ordering::Relaxed);
            let _ = self.tx.send(Bytes::new()); // the decoder reads this as "stop"
            return;
        }
        if self.tx.send(data.clone()).is_err() {
            self.over.store(true, Ordering::Relaxed);
        }
    }
}

impl ShadowHub {
    /// Whether this session's desktop is decoded for observers ([`ShadowHub::desktop`]).
    pub fn has_desktop(&self) -> bool {
        lock(&self.live).is_some()
    }

    /// Make this session's hub show a desktop, decoded from what the returned feed is given.
    /// The decoder thread ends when the feed is dropped.
    pub fn desktop(self: &Arc<Self>) -> std::io::Result<DesktopFeed> {
        let live = Arc::new(LiveDesktop {
            desktop: Mutex::new(Desktop::new()),
            stopped: Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let hub = Arc::downgrade(self);
        let (l, q) = (live.clone(), queued.clone());
        std::thread::Builder::new()
            .name("rdp-desktop".into())
            .spawn(move || decode(rx, l, q, hub))?;
        *lock(&self.live) = Some(live);
        Ok(DesktopFeed {
            tx,
            queued,
            over: AtomicBool::new(false),
        })
    }
}

fn decode(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    live: Arc<LiveDesktop>,
    queued: Arc<AtomicUsize>,
    hub: Weak<ShadowHub>,
) {
    let stop = |why: String| {
        let why = format!(
            "[shadow] the live view stopped for the rest of this session: {why} (the recording \
             has everything)"
        );
        *lock(&live.stopped) = Some(why.clone());
        if let Some(h) = hub.upgrade() {
            h.notice(why);
        }
    };
    while let Some(data) = rx.blocking_recv() {
        if data.is_empty() {
            stop(format!(
                "decoding fell more than {} MiB behind the session",
                FEED_CAP >> 20
            ));
            return;
        }
        queued.fetch_sub(data.len(), Ordering::AcqRel);
        let fed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut d = lock(&live.desktop);
            let before = d.version;
            d.feed(&data);
            let big = d
                .size()
                .is_some_and(|(w, h)| u64::from(w) * u64::from(h) > MAX_LIVE_PIXELS);
            if big {
                // Its frame buffer is given back now, not at the end of the session.
                *d = Desktop::new();
            }
            (d.version != before, big)
        }));
        let changed = match fed {
            Ok((_, true)) => {
                stop("the desktop is larger than 3840×2160".into());
                return;
            }
            Ok((changed, false)) => changed,
            Err(_) => {
                stop("the desktop decoder failed on the target's stream".into());
                return;
            }
        };
        if changed {
            if let Some(h) = hub.upgrade() {
                if h.count() > 0 {
                    h.dirty.notify_one();
                }
            }
        }
    }
}

impl ShadowHub {
    /// Bring a desktop's picture up to date: the tiles that changed since the last picture
    /// (`None` when none did, or the size changed), and the whole picture when `whole` is asked
    /// for or an observer needs it (`None` before the desktop is on screen). The pixel work runs
    /// on the blocking pool, never on the runtime's threads.
    pub(super) async fn desktop_locked(
        &self,
        framing: &mut Framing,
        live: &Arc<LiveDesktop>,
        whole: bool,
    ) -> (Option<Frame>, Option<Frame>) {
        let needed = whole
            || lock(&self.slots)
                .iter()
                .any(|s| s.stats.resync.load(Ordering::Acquire));
        let prev = framing.picture.take();
        let live = live.clone();
        let work = tokio::task::spawn_blocking(move || {
            let now = live.picture(prev.as_ref().map(|p| p.version));
            // The first picture, or a new size: everyone gets the whole picture.
            let resized = match (&now, &prev) {
                (Some(n), Some(p)) => (n.width, n.height) != (p.width, p.height),
                (Some(_), None) => true,
                (None, _) => false,
            };
            let diff = match (&now, &prev) {
                (Some(n), Some(p)) if !resized => n.since(Some(p)).transpose(),
                _ => None,
            };
            let current = now.or(prev);
            let all = (needed || resized)
                .then(|| current.as_ref().map(Picture::whole))
                .flatten();
            (current, diff, all, resized)
        })
        .await;
        let Ok((current, diff, all, resized)) = work else {
            // The pixel work panicked: start again from a whole picture next time.
            return (None, None);
        };
        framing.picture = current;
        let diff = match diff {
            Some(Ok(data)) => Some(Frame::Desktop { whole: false, data }),
            Some(Err(e)) => {
                // Nobody got this change: the next diff would be against a picture nobody has.
                tracing::warn!("shadow: a desktop update could not be encoded: {e}");
                self.resync_all();
                None
            }
            None => None,
        };
        if resized {
            for slot in lock(&self.slots).iter() {
                slot.stats.resync.store(true, Ordering::Release);
            }
        }
        let all = match all {
            Some(Ok(data)) => Some(Frame::Desktop { whole: true, data }),
            Some(Err(e)) => {
                tracing::warn!("shadow: a desktop picture could not be encoded: {e}");
                None
            }
            None => None,
        };
        (diff, all)
    }
}

/// A desktop as viewers get it (shrunk RGB rows).
#[derive(Default)]
pub struct Picture {
    pub width: u16,
    pub height: u16,
    /// Of the full desktop, for the page's aspect and its "1024×768" label.
    pub source: (u16, u16),
    pub rgb: Vec<u8>,
    /// The desktop's [`Desktop::version`] it was taken at.
    pub version: u64,
}

/// The desktop now, shrunk for viewers; `None` before the target has announced it.
pub fn picture(d: &Desktop) -> Option<Picture> {
    let source = d.size()?;
    let (width, height, rgb) = d.rgb_scaled(scale(source.0))?;
    Some(Picture {
        width,
        height,
        source,
        rgb,
        version: d.version,
    })
}

impl Picture {
    /// The whole picture as one message.
    pub fn whole(&self) -> Result<Bytes, String> {
        let all = Rect {
            x: 0,
            y: 0,
            w: self.width,
            h: self.height,
        };
        encode(
            &self.rgb,
            self.width,
            self.height,
            self.source,
            &[all],
            true,
        )
    }

    /// What a viewer who has `before` needs to see this picture: the changed tiles, the whole
    /// picture when the size changed (or there was none), nothing when nothing changed.
    pub fn since(&self, before: Option<&Picture>) -> Result<Option<Bytes>, String> {
        match before {
            Some(b) if (b.width, b.height) == (self.width, self.height) => {
                let rects = changed(&b.rgb, &self.rgb, self.width, self.height);
                if rects.is_empty() {
                    return Ok(None);
                }
                encode(
                    &self.rgb,
                    self.width,
                    self.height,
                    self.source,
                    &rects,
                    false,
                )
                .map(Some)
            }
            _ => self.whole().map(Some),
        }
    }
}

/// A rectangle of a picture, in its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
}

impl LiveDesktop {
    /// The desktop now, shrunk; `None` before the target has announced it, or when it has not
    /// changed since `version`.
    pub(super) fn picture(&self, version: Option<u64>) -> Option<Picture> {
        let d = lock(&self.desktop);
        if version == Some(d.version) {
            return None;
        }
        picture(&d)
    }
}

/// The tiles of `now` that differ from `before` (same size), merged into runs along each row of
/// tiles.
pub fn changed(before: &[u8], now: &[u8], width: u16, height: u16) -> Vec<Rect> {
    let (w, h) = (usize::from(width), usize::from(height));
    let mut out = Vec::new();
    for ty in (0..h).step_by(TILE) {
        let th = TILE.min(h - ty);
        let mut run: Option<Rect> = None;
        for tx in (0..w).step_by(TILE) {
            let tw = TILE.min(w - tx);
            let dirty = (ty..ty + th).any(|y| {
                let at = (y * w + tx) * 3;
                before[at..at + tw * 3] != now[at..at + tw * 3]
            });
            if dirty {
                match &mut run {
                    Some(r) => r.w += tw as u16,
                    None => {
                        run = Some(Rect {
                            x: tx as u16,
                            y: ty as u16,
                            w: tw as u16,
                            h: th as u16,
                        })
                    }
                }
            } else if let Some(r) = run.take() {
                out.push(r);
            }
        }
        if let Some(r) = run.take() {
            out.push(r);
        }
    }
    out
}

/// One message for observers: the rectangles `rects` of the picture `rgb` (`width`×`height`,
/// of a `source`-sized desktop) as PNGs. Layout, little-endian: `WGD1`, flags (1 = the whole
/// picture), 0, width, height, source width, source height (u16 each), rectangle count (u16);
/// then per rectangle x, y, w, h (u16), the PNG's length (u32) and the PNG.
pub fn encode(
    rgb: &[u8],
    width: u16,
    height: u16,
    source: (u16, u16),
    rects: &[Rect],
    whole: bool,
) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(16 + rects.len() * 1024);
    out.put_slice(MAGIC);
    out.put_u8(u8::from(whole));
    out.put_u8(0);
    for v in [width, height, source.0, source.1] {
        out.put_u16_le(v);
    }
    let count = u16::try_from(rects.len()).map_err(|_| "too many rectangles".to_string())?;
    out.put_u16_le(count);
    let w = usize::from(width);
    let mut sub = Vec::new();
    for r in rects {
        sub.clear();
        for y in usize::from(r.y)..usize::from(r.y + r.h) {
            let at = (y * w + usize::from(r.x)) * 3;
            sub.extend_from_slice(&rgb[at..at + usize::from(r.w) * 3]);
        }
        let png = rgb_png(r.w, r.h, &sub).map_err(|e| format!("PNG: {e}"))?;
        for v in [r.x, r.y, r.w, r.h] {
            out.put_u16_le(v);
        }
        out.put_u32_le(png.len() as u32);
        out.put_slice(&png);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::{Frame, ObserverInfo};

    const SHADOW: &[u8] = include_bytes!("../../../fixtures/rdp/freerdp-shadow-logo-1024x768.bin");

    /// A message's header (width, height, source) and its rectangles, decoded to RGB.
    type Decoded = ((u16, u16), (u16, u16), bool, Vec<(Rect, Vec<u8>)>);

    fn decode_message(m: &[u8]) -> Decoded {
        assert_eq!(&m[..4], MAGIC);
        let u16_at = |at: usize| u16::from_le_bytes([m[at], m[at + 1]]);
        let (size, source) = ((u16_at(6), u16_at(8)), (u16_at(10), u16_at(12)));
        let mut at = 16;
        let mut rects = Vec::new();
        for _ in 0..u16_at(14) {
            let r = Rect {
                x: u16_at(at),
                y: u16_at(at + 2),
                w: u16_at(at + 4),
                h: u16_at(at + 6),
            };
            let len = u32::from_le_bytes([m[at + 8], m[at + 9], m[at + 10], m[at + 11]]) as usize;
            let png = &m[at + 12..at + 12 + len];
            let mut reader = png::Decoder::new(std::io::Cursor::new(png))
                .read_info()
                .expect("PNG header");
            let mut buf = vec![0; reader.output_buffer_size().expect("size")];
            let info = reader.next_frame(&mut buf).expect("PNG data");
            assert_eq!((info.width, info.height), (u32::from(r.w), u32::from(r.h)));
            buf.truncate(info.buffer_size());
            rects.push((r, buf));
            at += 12 + len;
        }
        assert_eq!(at, m.len(), "nothing after the last rectangle");
        (size, source, m[4] == 1, rects)
    }

    #[test]
    fn desktops_are_shrunk_to_at_most_960_wide() {
        let shown = |w: u16| w / scale(w);
        assert_eq!(
            [800, 1024, 1280, 1920, 2560, 3840].map(scale),
            [1, 2, 2, 2, 3, 4]
        );
        assert!([640, 1024, 1366, 1920, 2560, 3840, 8192]
            .iter()
            .all(|&w| shown(w) <= 960));
    }

    #[test]
    fn changed_tiles_are_merged_along_rows() {
        let (w, h) = (100u16, 70u16);
        let before = vec![0u8; 100 * 70 * 3];
        let mut now = before.clone();
        for (x, y) in [(33, 1), (70, 2), (99, 69)] {
            now[(y * 100 + x) * 3 + 1] = 9;
        }
        let rects = changed(&before, &now, w, h);
        assert_eq!(
            rects,
            vec![
                Rect {
                    x: 32,
                    y: 0,
                    w: 64,
                    h: 32
                },
                Rect {
                    x: 96,
                    y: 64,
                    w: 4,
                    h: 6
                },
            ]
        );
        assert!(changed(&now, &now, w, h).is_empty());
    }

    #[test]
    fn a_message_carries_the_rectangles_it_names() {
        let (w, h) = (64u16, 40u16);
        let rgb: Vec<u8> = (0..64 * 40 * 3).map(|i| (i % 251) as u8).collect();
        let rects = [
            Rect {
                x: 8,
                y: 4,
                w: 20,
                h: 10,
            },
            Rect {
                x: 32,
                y: 32,
                w: 32,
                h: 8,
            },
        ];
        let m = encode(&rgb, w, h, (128, 80), &rects, false).expect("encode");
        let (size, source, whole, got) = decode_message(&m);
        assert_eq!((size, source, whole), ((64, 40), (128, 80), false));
        assert_eq!(got.len(), 2);
        for (r, pixels) in got {
            let mut want = Vec::new();
            for y in r.y..r.y + r.h {
                let at = (usize::from(y) * 64 + usize::from(r.x)) * 3;
                want.extend_from_slice(&rgb[at..at + usize::from(r.w) * 3]);
            }
            assert_eq!(pixels, want, "{r:?}");
        }
    }

    fn red(rgb: &[u8]) -> usize {
        rgb.chunks_exact(3)
            .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
            .count()
    }

    async fn desktop_frame(o: &mut crate::shadow::Observer) -> (bool, Bytes) {
        loop {
            let f = tokio::time::timeout(Duration::from_secs(10), o.next())
                .await
                .expect("a frame in time")
                .expect("stream open");
            if let Frame::Desktop { whole, data } = f {
                return (whole, data);
            }
        }
    }

    #[tokio::test]
    async fn observers_see_the_live_desktop_shrunk() {
        let hub = ShadowHub::new();
        let feed = hub.desktop().expect("decoder thread");
        let info = |name: &str| ObserverInfo {
            name: name.into(),
            banner: "covert".into(),
            since_ms: 0,
        };
        // Attached before the desktop exists: told so, then given the whole picture.
        let mut early = hub.attach(info("early")).await.expect("attach");
        match early.next().await {
            Some(Frame::Notice(n)) => assert!(n.contains("not on screen yet"), "{n}"),
            other => panic!("expected a notice first, got {other:?}"),
        }
        for piece in SHADOW.chunks(1500) {
            feed.push(&Bytes::copy_from_slice(piece));
        }
        let (whole, data) = desktop_frame(&mut early).await;
        assert!(whole, "the first picture is whole");
        let (size, source, _, rects) = decode_message(&data);
        assert_eq!((size, source), ((512, 384), (1024, 768)));
        assert_eq!(rects.len(), 1);
        let mut full = Desktop::new();
        full.feed(SHADOW);
        let (_, _, want) = full.rgb_scaled(2).expect("desktop");
        // The early observer may have seen a partly drawn desktop: wait for the last picture.
        let mut seen = rects[0].1.clone();
        while seen != want {
            let (_, data) = desktop_frame(&mut early).await;
            for (r, px) in decode_message(&data).3 {
                for row in 0..usize::from(r.h) {
                    let at = ((usize::from(r.y) + row) * 512 + usize::from(r.x)) * 3;
                    let n = usize::from(r.w) * 3;
                    seen[at..at + n].copy_from_slice(&px[row * n..(row + 1) * n]);
                }
            }
        }
        assert!(red(&seen) > 20_000, "the red logo is there");
        // A later observer gets exactly the desktop as it stands, at once.
        let mut late = hub.attach(info("late")).await.expect("attach");
        let (whole, data) = desktop_frame(&mut late).await;
        assert!(whole);
        assert_eq!(decode_message(&data).3[0].1, want);
        drop(feed);
    }
}
