//! Resumable sessions (`reconnect.mode = "resume"`).
//!
//! In a resume-mode session every session channel is relayed through an [`Attach`]: the target
//! side stays fixed, the client side can be swapped. When the client's connection drops while a
//! pty channel is open, the up pump leaves the target channel open, the down pump keeps reading the
//! target (recording it and feeding the gateway's terminal state, discarding what no client can
//! see), and the session waits in `paused`. A new connection by the same actor to the same target
//! claims the detached channel, receives a repaint of the screen from the terminal state, and the
//! relay carries on: same session, same target shell, same recording.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use russh::{client, server, ChannelId, ChannelWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wardengate_policy::Admitted;

use super::back::LegState;
use super::brake::{Brake, OpenChannels};
use crate::session::{SessionShared, Tap};
use crate::shadow::{Frame, ShadowHub, Term};

/// Where the down pump delivers to, while a client is attached (shared as one `Arc`, so a
/// delivered item costs one reference count).
pub(crate) struct ClientSide {
    pub tx: ChannelWriteHalf<server::Msg>,
    pub handle: server::Handle,
    pub cid: ChannelId,
    pub open: OpenChannels,
}

/// The swappable half of an [`Attach`], under one lock so that "process this output" and "who
/// gets it" are decided together.
struct Side {
    client: Option<Arc<ClientSide>>,
    /// The terminal as the user sees it (pty channels only), kept by the shadow hub.
    term: Option<Arc<Term>>,
    /// A re-attached client is being sent its repaint: output must wait behind it.
    repainting: bool,
}

/// One relayed session channel whose client side can be detached and re-attached.
pub(crate) struct Attach {
    pub target_tx: Arc<ChannelWriteHalf<client::Msg>>,
    /// The channel number events are recorded under (the first client channel's).
    pub rec_channel: u32,
    side: Mutex<Side>,
    /// Held while a repaint is written; output that reaches the new client waits for it.
    gate: tokio::sync::Mutex<()>,
    /// Taken by a re-attaching connection.
    claimed: AtomicBool,
    /// The target closed the channel.
    pub done: AtomicBool,
    /// Shared by the channel's two pumps (a re-attached up pump takes the old one's place).
    pub brake: Arc<Brake>,
}

impl Attach {
    pub fn new(
        target_tx: Arc<ChannelWriteHalf<client::Msg>>,
        rec_channel: u32,
        client: Arc<ClientSide>,
        brake: Arc<Brake>,
    ) -> Arc<Attach> {
        Arc::new(Attach {
            target_tx,
            rec_channel,
            side: Mutex::new(Side {
                client: Some(client),
                term: None,
                repainting: false,
            }),
            gate: tokio::sync::Mutex::new(()),
            claimed: AtomicBool::new(true),
            done: AtomicBool::new(false),
            brake,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Side> {
        // Every update leaves the state usable, so a poisoned lock is taken over.
        self.side.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn client(&self) -> Option<Arc<ClientSide>> {
        self.lock().client.clone()
    }

    /// Target output (`None` for items that are not terminal data): fold it into the terminal
    /// state and say who should get it — in the same step, so a re-attach cannot fall between
    /// the two. `true`: wait for [`Attach::repainted`] before writing.
    pub fn deliver(&self, data: Option<&bytes::Bytes>) -> (Option<Arc<ClientSide>>, bool) {
        let s = self.lock();
        if let (Some(d), Some(t)) = (data, s.term.as_ref()) {
            t.feed(d);
        }
        (s.client.clone(), s.repainting)
    }

    /// Wait until a repaint in progress has been written.
    pub async fn repainted(&self) {
        let _g = self.gate.lock().await;
    }

    /// A re-attaching client takes over: it is sent the screen as it is now, before any output
    /// that follows.
    pub async fn attach(&self, side: Arc<ClientSide>) {
        let _g = self.gate.lock().await;
        let repaint = {
            let mut s = self.lock();
            s.repainting = true;
            s.client = Some(side.clone());
            s.term.as_ref().map(|t| t.snapshot())
        };
        if let Some(Frame::Screen { data, .. }) = repaint {
            let _ = side.tx.data_bytes(data).await;
        }
        self.lock().repainting = false;
    }

    /// The client side `cid` is gone (its connection dropped).
    pub fn detach(&self, cid: ChannelId) {
        let mut s = self.lock();
        if s.client.as_ref().is_some_and(|c| c.cid == cid) {
            s.client = None;
            self.claimed.store(false, Ordering::Release);
        }
    }

    /// A re-attaching client claimed this channel but will not use it.
    pub fn detach_claim(&self) {
        if self.client().is_none() {
            self.claimed.store(false, Ordering::Release);
        }
    }

    pub fn has_pty(&self) -> bool {
        self.lock().term.is_some()
    }

    /// The channel got a terminal of this size (its first one: from the session's hub).
    pub fn set_pty(&self, hub: &Arc<ShadowHub>, cols: u32, rows: u32) {
        let term = {
            let mut s = self.lock();
            match s.term.as_ref() {
                Some(t) => t.clone(),
                None => {
                    s.term = Some(hub.terminal(self.rec_channel, cols, rows));
                    return;
                }
            }
        };
        // Outside the side lock: a resize parses pending output, which must not hold up
        // delivery.
        term.resize(cols, rows);
    }

    /// The target closed the channel.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.lock().term.as_ref() {
            t.close();
        }
    }

    /// Detached with a terminal and the target still there: worth waiting for the user.
    pub fn resumable(&self) -> bool {
        let s = self.lock();
        !self.done.load(Ordering::Acquire) && s.term.is_some() && s.client.is_none()
    }

    fn claim(&self) -> bool {
        self.resumable()
            && self
                .claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// The swappable channels of one session (every session channel but port forwards): a client
/// can re-attach them (`reconnect.mode = "resume"`) or a new owner take them over (handoff).
pub(crate) struct ResumeState {
    channels: Mutex<Vec<Arc<Attach>>>,
    /// The session's shadow hub, which keeps the terminals.
    pub hub: Arc<ShadowHub>,
    /// Terminals re-attached so far (a takeover is complete once one is).
    reattached: std::sync::atomic::AtomicUsize,
}

impl ResumeState {
    pub fn new(hub: Arc<ShadowHub>) -> Arc<ResumeState> {
        Arc::new(ResumeState {
            channels: Mutex::new(Vec::new()),
            hub,
            reattached: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A paused terminal was taken over by a new connection.
    pub fn note_reattach(&self) {
        self.reattached.fetch_add(1, Ordering::SeqCst);
    }

    pub fn reattached(&self) -> usize {
        self.reattached.load(Ordering::SeqCst)
    }

    pub fn add(&self, a: Arc<Attach>) {
        if let Ok(mut c) = self.channels.lock() {
            c.retain(|x| !x.done.load(Ordering::Acquire));
            c.push(a);
        }
    }

    /// Any channel worth pausing for.
    pub fn resumable(&self) -> bool {
        self.channels
            .lock()
            .map(|c| c.iter().any(|a| a.resumable()))
            .unwrap_or(false)
    }

    /// The connection whose channels are `open` is gone: detach its channels now (their up pumps
    /// notice on their own, but the supervisor must not race them).
    pub fn detach_connection(&self, open: &OpenChannels) {
        if let Ok(c) = self.channels.lock() {
            for a in c.iter() {
                if let Some(side) = a.client() {
                    if Arc::ptr_eq(&side.open, open) && a.has_pty() {
                        a.detach(side.cid);
                    }
                }
            }
        }
    }

    /// Take a detached pty channel for a re-attaching client.
    pub fn claim(&self) -> Option<Arc<Attach>> {
        self.channels
            .lock()
            .ok()?
            .iter()
            .find(|a| a.claim())
            .cloned()
    }
}

pub(crate) type Running = Pin<Box<dyn Future<Output = Result<(), russh::Error>> + Send + Sync>>;

/// One client connection, as the session supervisor holds it.
pub(crate) struct ClientConn {
    pub handle: server::Handle,
    pub running: Running,
    pub open_channels: OpenChannels,
    /// Cancelled when this connection's part ends: its pending waits give up.
    pub ending: CancellationToken,
    pub client: super::ClientInfo,
}

/// Everything a re-attaching connection needs; the gateway keeps it while the session is paused
/// and hands it back from [`Broker::admit`](crate::session::Broker::admit).
#[derive(Clone)]
pub struct ResumeTicket {
    pub(crate) admitted: Admitted,
    pub(crate) shared: Arc<SessionShared>,
    pub(crate) leg: watch::Receiver<LegState>,
    pub(crate) tap: Option<Tap>,
    pub(crate) state: Arc<ResumeState>,
    pub(crate) attach: mpsc::Sender<ClientConn>,
    pub(crate) target: String,
}

impl ResumeTicket {
    pub fn session_id(&self) -> &str {
        &self.shared.id
    }
    pub fn admitted(&self) -> &Admitted {
        &self.admitted
    }
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl std::fmt::Debug for ResumeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeTicket")
            .field("session", &self.shared.id)
            .field("target", &self.target)
            .finish()
    }
}
