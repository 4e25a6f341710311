//! The shadow hub: read-only observers of a live session, and the terminal state the gateway keeps
//! for them (and for repainting a resumed or handed-off terminal).
//!
//! The data path pays almost nothing for it: a pty channel's output is appended to its
//! [`Term`]'s pending queue (a reference count and a short lock), and nothing else happens until
//! someone needs the screen. The terminal emulator (`vt100`, about 30 MB/s) runs only then: for an
//! observer's next frame, an attach snapshot, or a repaint. When more than [`PENDING_CAP`] bytes
//! pile up unparsed (a flood of output with nobody watching), the oldest are dropped: the screen
//! after a flood is made by its last screenfuls, so it is rebuilt from the tail. The terminal
//! modes set in the dropped part (alternate screen, cursor keys, keypad, bracketed paste, mouse,
//! scroll region) are kept and replayed first, so a full-screen application still repaints right.
//! (The recording has every byte.)
//!
//! Observers get frames, not bytes: at most one every [`FRAME_INTERVAL`], each the difference
//! between the screen at the previous frame and now. Their bandwidth depends on how fast the
//! screen changes, not on how fast the session writes, so fifty observers of a bulk `cat` cost
//! fifty small diffs per frame. Each observer has a short queue; when it is full (a stalled
//! observer), frames are not queued for it and it is marked for resync: once it drains, it gets a
//! fresh full screen instead of the diffs it missed. Nothing an observer does can make the session
//! wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::clock::now_ms;

pub mod desktop;
mod term;
use desktop::{LiveDesktop, Picture};
pub use term::Term;
#[cfg(test)]
use term::{keep_modes, MODES_CAP};

/// Unparsed output kept per terminal; older bytes are dropped (see the module docs).
pub const PENDING_CAP: usize = 256 << 10;
/// The shortest time between two frames to observers (30 per second).
pub const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// Frames queued per observer before it is marked for resync.
pub const OBSERVER_QUEUE: usize = 32;
/// Query-log lines and notices kept for the snapshot a new observer gets.
const RECENT_LINES: usize = 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the state usable, so a poisoned lock is taken over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What an observer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The whole screen: clear the terminal, then write `data` (also sent after a resync).
    Screen { data: Bytes, cols: u16, rows: u16 },
    /// What changed on the screen since the previous frame, as terminal output.
    Output(Bytes),
    /// A line of a session without a terminal (a PostgreSQL query log entry).
    Line(String),
    /// A desktop session's picture, or what changed in it: PNG rectangles in the layout of
    /// [`desktop::encode`]. `whole` when it is the entire picture (first, or after a resync).
    Desktop { whole: bool, data: Bytes },
    /// Something the observer should know (another observer came, the owner changed).
    Notice(String),
    /// The session is over.
    End(String),
}

/// One attached observer, as the hub sees it.
struct Slot {
    id: u64,
    info: ObserverInfo,
    tx: mpsc::Sender<Frame>,
    stats: Arc<Stats>,
}

/// Shared by the hub and the observer's stream (which must not hold the sender).
#[derive(Default)]
struct Stats {
    /// Frames were dropped: the next frame it gets is a full screen.
    resync: AtomicBool,
    resyncs: AtomicU64,
}

/// Who is watching, for `session show` and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObserverInfo {
    pub name: String,
    /// `visible` or `covert`.
    pub banner: String,
    pub since_ms: u64,
}

/// The screen the frame producer last sent, and which terminal it was.
#[derive(Default)]
struct Framing {
    last: Option<(u32, vt100::Screen)>,
    /// A desktop session's last picture.
    picture: Option<Picture>,
}

/// A session's shadow hub.
pub struct ShadowHub {
    terms: Mutex<Vec<Arc<Term>>>,
    slots: Mutex<Vec<Arc<Slot>>>,
    framing: tokio::sync::Mutex<Framing>,
    recent: Mutex<VecDeque<String>>,
    watching: AtomicUsize,
    dirty: Notify,
    next_id: AtomicU64,
    ended: Mutex<Option<String>>,
    producer: AtomicBool,
    /// A desktop session's decoded desktop ([`ShadowHub::desktop`]).
    live: Mutex<Option<Arc<LiveDesktop>>>,
}

impl std::fmt::Debug for ShadowHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowHub")
            .field("observers", &self.watching.load(Ordering::Relaxed))
            .finish()
    }
}

impl ShadowHub {
    pub fn new() -> Arc<ShadowHub> {
        Arc::new(ShadowHub {
            terms: Mutex::new(Vec::new()),
            slots: Mutex::new(Vec::new()),
            framing: tokio::sync::Mutex::new(Framing::default()),
            recent: Mutex::new(VecDeque::new()),
            watching: AtomicUsize::new(0),
            dirty: Notify::new(),
            next_id: AtomicU64::new(1),
            ended: Mutex::new(None),
            producer: AtomicBool::new(false),
            live: Mutex::new(None),
        })
    }

    /// A pty channel's terminal (`cols`×`rows`).
    pub fn terminal(self: &Arc<Self>, channel: u32, cols: u32, rows: u32) -> Arc<Term> {
        use wardengate_recorder::term_dim;
        let (r, c) = (term_dim(rows.min(1000), 24), term_dim(cols.min(1000), 80));
        let t = Arc::new(Term::new(channel, r, c, Arc::downgrade(self)));
        let mut terms = lock(&self.terms);
        terms.retain(|t| !t.is_closed());
        terms.push(t.clone());
        drop(terms);
        self.resync_all();
        t
    }

    /// The terminal observers watch: the session's oldest open one.
    pub fn primary(&self) -> Option<Arc<Term>> {
        lock(&self.terms).iter().find(|t| !t.is_closed()).cloned()
    }

    /// How many observers are attached.
    pub fn count(&self) -> usize {
        self.watching.load(Ordering::SeqCst)
    }

    pub fn observers(&self) -> Vec<ObserverInfo> {
        lock(&self.slots).iter().map(|s| s.info.clone()).collect()
    }

    fn resync_all(&self) {
        for s in lock(&self.slots).iter() {
            s.stats.resync.store(true, Ordering::Release);
        }
        if self.count() > 0 {
            self.dirty.notify_one();
        }
    }

    /// A line for observers of a session without a terminal (a query log entry).
    pub fn line(&self, text: String) {
        {
            let mut r = lock(&self.recent);
            if r.len() == RECENT_LINES {
                r.pop_front();
            }
            r.push_back(text.clone());
        }
        self.broadcast(Frame::Line(text));
    }

    /// Tell every observer something (not kept for later observers).
    pub fn notice(&self, text: String) {
        self.broadcast(Frame::Notice(text));
    }

    fn broadcast(&self, frame: Frame) {
        for s in lock(&self.slots).iter() {
            if s.tx.try_send(frame.clone()).is_err() {
                s.stats.resync.store(true, Ordering::Release);
            }
        }
    }

    /// The session is over: observers get `reason` and their streams end.
    pub fn end(&self, reason: &str) {
        // Under the slots lock, so an attach either sees the end or is ended here.
        let slots: Vec<Arc<Slot>> = {
            let mut slots = lock(&self.slots);
            *lock(&self.ended) = Some(reason.to_string());
            slots.drain(..).collect()
        };
        self.watching.store(0, Ordering::SeqCst);
        for s in slots {
            // A full queue still gets the end: the stream closes when the sender goes.
            let _ = s.tx.try_send(Frame::End(reason.to_string()));
        }
        self.dirty.notify_one();
    }

    /// Detach every observer, telling them why (the session's policy now blocks shadowing).
    pub fn dismiss(&self, reason: &str) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).drain(..).collect();
        self.watching.store(0, Ordering::SeqCst);
        for s in slots {
            let _ = s.tx.try_send(Frame::End(reason.to_string()));
        }
    }

    /// Attach an observer. It first gets the screen as it is (or the recent query log), then
    /// live frames. `Err` when the session is over.
    pub async fn attach(self: &Arc<Self>, info: ObserverInfo) -> Result<Observer, String> {
        let (tx, rx) = mpsc::channel(OBSERVER_QUEUE);
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            info,
            tx,
            stats: Arc::default(),
        });
        // Under the framing lock no frame is produced, so the first diff this observer gets is
        // against the snapshot it got.
        {
            let mut framing = self.framing.lock().await;
            let live = lock(&self.live).clone();
            let first = match (live, self.primary()) {
                (Some(live), _) => {
                    let (diff, whole) = self.desktop_locked(&mut framing, &live, true).await;
                    self.send_frame(diff.as_ref(), whole.as_ref());
                    let mut first: Vec<Frame> = whole.into_iter().collect();
                    if first.is_empty() {
                        first.push(Frame::Notice(
                            "[shadow] the desktop is not on screen yet; it appears when the target draws it"
                                .into(),
                        ));
                    }
                    first.extend(lock(&live.stopped).clone().map(Frame::Notice));
                    first
                }
                (None, Some(t)) => {
                    // The others get what changed up to now; this one the screen at now.
                    let (diff, screen) = self.frame_locked(&mut framing, &t);
                    self.send_frame(diff.as_ref(), Some(&screen));
                    vec![screen]
                }
                (None, None) => lock(&self.recent)
                    .iter()
                    .cloned()
                    .map(Frame::Line)
                    .collect(),
            };
            let mut slots = lock(&self.slots);
            if let Some(reason) = lock(&self.ended).clone() {
                return Err(reason);
            }
            for f in first.into_iter().take(OBSERVER_QUEUE - 1) {
                let _ = slot.tx.try_send(f);
            }
            slots.push(slot.clone());
            self.watching.fetch_add(1, Ordering::SeqCst);
        }
        self.ensure_producer();
        Ok(Observer {
            rx,
            hub: self.clone(),
            id: slot.id,
            info: slot.info.clone(),
            stats: slot.stats.clone(),
        })
    }

    fn detach(&self, id: u64) {
        let mut slots = lock(&self.slots);
        let before = slots.len();
        slots.retain(|s| s.id != id);
        if slots.len() < before {
            self.watching.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Bring `t` up to date: the diff since the last frame (or `None` when nothing changed),
    /// and the full screen.
    fn frame_locked(&self, framing: &mut Framing, t: &Term) -> (Option<Frame>, Frame) {
        t.with_screen(|p| {
            let s = p.screen();
            // A diff stays right across dropped output: it takes the observers' screen (the last
            // frame's) to the parser's, however that was reached.
            let diff = match &framing.last {
                Some((ch, prev)) if *ch == t.channel && prev.size() == s.size() => {
                    let d = s.state_diff(prev);
                    (!d.is_empty()).then(|| Frame::Output(Bytes::from(d.into_bytes())))
                }
                // Another terminal or a new size: everyone gets the screen.
                _ => {
                    for slot in lock(&self.slots).iter() {
                        slot.stats.resync.store(true, Ordering::Release);
                    }
                    None
                }
            };
            let (rows, cols) = s.size();
            let mut out = b"\x1b[H\x1b[2J".to_vec();
            out.extend_from_slice(s.state_formatted().as_bytes());
            framing.last = Some((t.channel, s.clone()));
            (
                diff,
                Frame::Screen {
                    data: Bytes::from(out),
                    cols: cols.get(),
                    rows: rows.get(),
                },
            )
        })
    }

    /// Produce one frame for every observer.
    async fn produce(&self) {
        let live = lock(&self.live).clone();
        if let Some(live) = live {
            let mut framing = self.framing.lock().await;
            let (diff, whole) = self.desktop_locked(&mut framing, &live, false).await;
            self.send_frame(diff.as_ref(), whole.as_ref());
            return;
        }
        let Some(t) = self.primary() else {
            // No terminal: lines missed by a stalled observer are not replayed; it is told.
            for s in lock(&self.slots).iter() {
                if s.stats.resync.load(Ordering::Acquire) {
                    let note = "[shadow] this observer fell behind and skipped some lines; the recording has them all";
                    if s.tx.try_send(Frame::Notice(note.into())).is_ok() {
                        s.stats.resync.store(false, Ordering::Release);
                        s.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            return;
        };
        let mut framing = self.framing.lock().await;
        let (diff, screen) = self.frame_locked(&mut framing, &t);
        self.send_frame(diff.as_ref(), Some(&screen));
    }

    /// Send every observer the diff, or the full screen to those marked for resync (who wait
    /// for the next one when there is none).
    fn send_frame(&self, diff: Option<&Frame>, screen: Option<&Frame>) {
        for s in lock(&self.slots).iter() {
            let frame = if s.stats.resync.load(Ordering::Acquire) {
                match screen {
                    Some(f) => f.clone(),
                    None => continue,
                }
            } else {
                match diff {
                    Some(d) => d.clone(),
                    None => continue,
                }
            };
            let full = matches!(
                frame,
                Frame::Screen { .. } | Frame::Desktop { whole: true, .. }
            );
            match s.tx.try_send(frame) {
                Ok(()) if full => {
                    s.stats.resync.store(false, Ordering::Release);
                    s.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(()) => {}
                Err(_) => s.stats.resync.store(true, Ordering::Release),
            }
        }
    }

    /// The frame producer runs while anyone watches.
    fn ensure_producer(self: &Arc<Self>) {
        if self.producer.swap(true, Ordering::SeqCst) {
            self.dirty.notify_one();
            return;
        }
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(h) = hub.upgrade() else { return };
                if h.count() == 0 || lock(&h.ended).is_some() {
                    h.producer.store(false, Ordering::SeqCst);
                    // An observer that attached meanwhile restarts it.
                    if h.count() > 0 && lock(&h.ended).is_none() {
                        h.ensure_producer();
                    }
                    return;
                }
                // Wake up now and then too: a stalled observer that drained needs its resync.
                let _ = tokio::time::timeout(Duration::from_millis(500), h.dirty.notified()).await;
                h.produce().await;
                let interval = if lock(&h.live).is_some() {
                    desktop::DESKTOP_FRAME_INTERVAL
                } else {
                    FRAME_INTERVAL
                };
                drop(h);
                tokio::time::sleep(interval).await;
            }
        });
    }
}

/// An attached observer's stream; detaches when dropped.
pub struct Observer {
    rx: mpsc::Receiver<Frame>,
    hub: Arc<ShadowHub>,
    id: u64,
    info: ObserverInfo,
    stats: Arc<Stats>,
}

impl Observer {
    /// The next frame; `None` when the session is over (after its `End`) or the hub is gone.
    pub async fn next(&mut self) -> Option<Frame> {
        let f = self.rx.recv().await;
        if f.is_none() || self.stats.resync.load(Ordering::Acquire) {
            // Drained after a stall: ask for the fresh screen now rather than at the next output.
            self.hub.dirty.notify_one();
        }
        f
    }

    /// How many times this observer was resynchronised with a full screen after falling behind.
    pub fn resyncs(&self) -> u64 {
        self.stats.resyncs.load(Ordering::Relaxed)
    }

    pub fn info(&self) -> &ObserverInfo {
        &self.info
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.hub.detach(self.id);
    }
}

/// `HH:MM:SS` since `started_ms` (for "attached read-only at 00:14:22 of sess_…").
pub fn elapsed_hms(started_ms: u64) -> String {
    let ms = now_ms().saturating_sub(started_ms);
    wardengate_recorder::time::clock(std::time::Duration::from_secs(ms / 1000), false)
}

#[cfg(test)]
mod tests;
