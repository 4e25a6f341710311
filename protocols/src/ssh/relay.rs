//! The channel relay: one task per direction per channel, bytes moved as `Bytes` without copies.
//!
//! `up` carries what the client sent on a channel to the matching target channel; `down` does the
//! reverse and also carries the target's `exit-status`, `exit-signal`, EOF and close. Both write
//! through russh `ChannelWriteHalf`s, which wait for the peer's SSH window, so a slow reader on
//! either side back-presses the other side.
//!
//! Why each pump keeps a byte-bounded queue ([`SLACK_BYTES`]) instead of awaiting each write:
//! russh refills a peer's window as soon as data *arrives*, so its only back-pressure is to stop
//! reading the connection when a channel's inbound queue is full — and a stopped session loop no
//! longer reads the peer's WINDOW_ADJUST either. With both directions saturated (`cat` echoing a
//! bulk upload) the client loop would wait for the target window while the target loop waits for
//! the client window: a deadlock, seen in `scripts/bench`. A pump that keeps draining its inbound
//! queue while a write waits lets its session loop read on until it reaches the peer's next window
//! adjustment, which is never more than one window (2 MiB) of data away. The slack is twice that;
//! when it is full the pump stops reading and russh's back-pressure applies as before.
//!
//! Channel *requests* (pty-req, exec, ...) are not relayed here: they need replies, which the front
//! handler awaits from the target before answering the client (see `front.rs`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::{
    client, server, Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig,
};

use super::back::TargetLeg;
use super::brake::{Brake, OpenChannels};
use super::resume::{Attach, ClientSide, ResumeState};
use crate::session::{SessionShared, Tap};
use wardengate_recorder::EventKind;

/// Per pump, the most data held while its destination's window is closed (see module docs).
pub(crate) const SLACK_BYTES: usize = 4 << 20;

/// What a pump forwards, in order.
enum Item {
    Data(Bytes),
    Ext(u32, Bytes),
    Eof,
    ExitStatus(u32),
    ExitSignal {
        signal: Sig,
        core: bool,
        msg: String,
        lang: String,
    },
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Data(b) | Item::Ext(_, b) => b.len(),
            _ => 0,
        }
    }
}

/// How a pump treats one message from its source channel.
enum Flow {
    Forward(Item),
    Close,
    Skip,
}

/// How both directions treat data, extended data, EOF and close; `count` sees each data size.
/// Anything else comes back for the caller to decide.
fn flow(msg: ChannelMsg, count: impl Fn(usize)) -> Result<Flow, ChannelMsg> {
    match msg {
        ChannelMsg::Data { data } => {
            count(data.len());
            Ok(Flow::Forward(Item::Data(data)))
        }
        ChannelMsg::ExtendedData { data, ext } => {
            count(data.len());
            Ok(Flow::Forward(Item::Ext(ext, data)))
        }
        ChannelMsg::Eof => Ok(Flow::Forward(Item::Eof)),
        ChannelMsg::Close => Ok(Flow::Close),
        other => Err(other),
    }
}

type Write = Pin<Box<dyn Future<Output = (bool, usize)> + Send>>;

/// The recording of an item, if it is recorded: data as input or output, exits as markers.
fn event_of(item: &Item, channel: u32, input: bool) -> Option<EventKind> {
    Some(match item {
        Item::Data(data) | Item::Ext(_, data) if input => EventKind::Input {
            channel,
            data: data.clone(),
        },
        Item::Data(data) => EventKind::Output {
            channel,
            data: data.clone(),
            stderr: false,
        },
        Item::Ext(_, data) => EventKind::Output {
            channel,
            data: data.clone(),
            stderr: true,
        },
        Item::ExitStatus(s) => EventKind::Marker {
            kind: "exit-status".into(),
            detail: s.to_string(),
        },
        Item::ExitSignal {
            signal, core, msg, ..
        } => EventKind::Marker {
            kind: "exit-signal".into(),
            detail: format!(
                "{signal:?}{}{}",
                if *core { " (core dumped)" } else { "" },
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            ),
        },
        Item::Eof => return None,
    })
}

/// Where a pump records what it forwards.
struct Recording {
    tap: Tap,
    channel: u32,
    input: bool,
}

/// How a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The source channel closed (a `close` message), everything was delivered.
    Closed,
    /// The source vanished without closing: its connection dropped.
    Gone,
    /// The destination or the recording failed.
    Failed,
}

/// Move items from `rx` to `write` in order, reading ahead up to [`SLACK_BYTES`] while a write
/// waits, recording each item before it is forwarded. Returns when the source closes (after
/// flushing), the destination fails, or the recording fails (nothing passes unrecorded).
async fn pump<F, Fut>(
    mut rx: ChannelReadHalf,
    mut classify: impl FnMut(ChannelMsg) -> Flow,
    recording: Option<Recording>,
    (brake, me): (Arc<Brake>, u8),
    write: F,
) -> Ended
where
    F: Fn(Item) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let mut queue: VecDeque<Item> = VecDeque::new();
    let mut queued = 0usize;
    let mut inflight: Option<Write> = None;
    let mut reading = true;
    let mut end = Ended::Closed;
    loop {
        if inflight.is_none() {
            match queue.pop_front() {
                Some(item) => {
                    let n = item.len();
                    let f = write(item);
                    inflight = Some(Box::pin(async move { (f.await, n) }));
                }
                None if !reading => return end,
                None => {}
            }
        }
        // Read on while under the slack; past it, stop only if the other direction is not
        // stopped already (see `Brake`).
        let may_read = if queued < SLACK_BYTES {
            brake.release(me);
            reading
        } else {
            reading && !brake.hold(me)
        };
        tokio::select! {
            biased;
            done = async {
                match inflight.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if inflight.is_some() => {
                inflight = None;
                let (ok, n) = done;
                queued -= n;
                if !ok {
                    return Ended::Failed;
                }
            }
            msg = rx.wait(), if may_read => match msg.map(&mut classify) {
                Some(Flow::Forward(item)) => {
                    if let Some(r) = &recording {
                        if let Some(ev) = event_of(&item, r.channel, r.input) {
                            if !r.tap.record(ev).await {
                                tracing::warn!("recording stopped; closing the channel");
                                return Ended::Failed;
                            }
                        }
                    }
                    queued += item.len();
                    queue.push_back(item);

                }
                Some(Flow::Skip) => {}
                Some(Flow::Close) => reading = false,
                None => {
                    reading = false;
                    end = Ended::Gone;
                }
            },
        }
    }
}

/// Wire a client channel to a target channel. Returns the target channel's write half, which the
/// front handler uses to forward channel requests, and, in a resumable session, the channel's
/// [`Attach`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    client_ch: Channel<server::Msg>,
    target_ch: Channel<client::Msg>,
    handle: server::Handle,
    shared: Arc<SessionShared>,
    open: OpenChannels,
    leg: Arc<TargetLeg>,
    tap: Option<Tap>,
    resume: Option<&ResumeState>,
) -> (Arc<ChannelWriteHalf<client::Msg>>, Option<Arc<Attach>>) {
    let cid = client_ch.id();
    let tid = target_ch.id();
    let (client_rx, client_tx) = client_ch.split();
    let (target_rx, target_tx) = target_ch.split();
    let target_tx = Arc::new(target_tx);
    shared.channel_opened();
    if let Ok(mut o) = open.lock() {
        o.insert(cid);
    }
    let side = Arc::new(ClientSide {
        tx: client_tx,
        handle,
        cid,
        open,
    });
    let brake = Arc::new(Brake::default());
    let attach = resume.map(|r| {
        let a = Attach::new(target_tx.clone(), cid.number(), side.clone(), brake.clone());
        r.add(a.clone());
        a
    });
    let rec = |input| {
        tap.clone().map(|tap| Recording {
            tap,
            channel: cid.number(),
            input,
        })
    };
    tokio::spawn(up(
        client_rx,
        target_tx.clone(),
        shared.clone(),
        rec(true),
        (brake.clone(), 1),
        attach.clone().map(|a| (a, cid)),
    ));
    let down_rec = rec(false);
    let down_attach = attach.clone();
    tokio::spawn(async move {
        down(
            target_rx,
            side.clone(),
            down_attach.clone(),
            &shared,
            down_rec,
            (brake, 2),
        )
        .await;
        leg.forget(tid);
        let side = match &down_attach {
            Some(a) => {
                a.finish();
                a.client()
            }
            None => Some(side),
        };
        if let Some(side) = side {
            // Forget the channel before closing it: a client that exits on the close must not
            // look like a dropped connection with channels open.
            if let Ok(mut o) = side.open.lock() {
                o.remove(&side.cid);
            }
            let _ = side.tx.close().await;
        }
        shared.channel_closed();
    });
    (target_tx, attach)
}

/// A re-attaching client's channel takes over the detached side of `attach`: it gets a repaint of
/// the screen, then the relay carries on.
pub(crate) async fn reattach(
    client_ch: Channel<server::Msg>,
    handle: server::Handle,
    open: OpenChannels,
    attach: Arc<Attach>,
    shared: Arc<SessionShared>,
    tap: Option<Tap>,
) {
    let cid = client_ch.id();
    let (client_rx, client_tx) = client_ch.split();
    if let Ok(mut o) = open.lock() {
        o.insert(cid);
    }
    attach
        .attach(Arc::new(ClientSide {
            tx: client_tx,
            handle,
            cid,
            open,
        }))
        .await;
    let rec = tap.map(|tap| Recording {
        tap,
        channel: attach.rec_channel,
        input: true,
    });
    tokio::spawn(up(
        client_rx,
        attach.target_tx.clone(),
        shared,
        rec,
        (attach.brake.clone(), 1),
        Some((attach, cid)),
    ));
}

async fn up(
    rx: ChannelReadHalf,
    tx: Arc<ChannelWriteHalf<client::Msg>>,
    shared: Arc<SessionShared>,
    recording: Option<Recording>,
    brake: (Arc<Brake>, u8),
    attach: Option<(Arc<Attach>, ChannelId)>,
) {
    // Requests are not relayed here: the front handler forwards them, it needs their replies.
    let classify = |msg| flow(msg, |n| shared.note_input(n)).unwrap_or(Flow::Skip);
    let w = tx.clone();
    let end = pump(rx, classify, recording, brake, move |item| {
        let w = w.clone();
        async move {
            match item {
                Item::Data(b) => w.data_bytes(b).await.is_ok(),
                Item::Ext(e, b) => w.extended_data_bytes(e, b).await.is_ok(),
                Item::Eof => w.eof().await.is_ok(),
                // Exit reports only flow from the target.
                Item::ExitStatus(_) | Item::ExitSignal { .. } => true,
            }
        }
    })
    .await;
    if let Some((a, cid)) = attach {
        if end == Ended::Gone && a.has_pty() {
            // The client's connection dropped: the target's terminal waits for a re-attach.
            a.detach(cid);
            return;
        }
    }
    let _ = tx.close().await;
}

async fn down(
    rx: ChannelReadHalf,
    fixed: Arc<ClientSide>,
    attach: Option<Arc<Attach>>,
    shared: &SessionShared,
    recording: Option<Recording>,
    brake: (Arc<Brake>, u8),
) {
    let classify = |msg| match flow(msg, |n| shared.note_output(n)) {
        Ok(f) => f,
        Err(ChannelMsg::ExitStatus { exit_status }) => Flow::Forward(Item::ExitStatus(exit_status)),
        Err(ChannelMsg::ExitSignal {
            signal_name,
            core_dumped,
            error_message,
            lang_tag,
        }) => Flow::Forward(Item::ExitSignal {
            signal: signal_name,
            core: core_dumped,
            msg: error_message,
            lang: lang_tag,
        }),
        Err(_) => Flow::Skip,
    };
    pump(rx, classify, recording, brake, move |item| {
        let (side, wait) = match &attach {
            Some(a) => {
                let data = match &item {
                    Item::Data(b) | Item::Ext(_, b) => Some(b),
                    _ => None,
                };
                a.deliver(data)
            }
            None => (Some(fixed.clone()), false),
        };
        let gate = attach.clone().filter(|_| wait);
        let resumable = attach.is_some();
        async move {
            // Detached: the output is recorded and in the terminal state; no one to show it to.
            let Some(side) = side else {
                return true;
            };
            let (w, cid) = (&side.tx, side.cid);
            if let Some(a) = gate {
                a.repainted().await;
            }
            let ok = match item {
                Item::Data(b) => w.data_bytes(b).await.is_ok(),
                Item::Ext(e, b) => w.extended_data_bytes(e, b).await.is_ok(),
                Item::Eof => w.eof().await.is_ok(),
                Item::ExitStatus(s) => w.exit_status(s).await.is_ok(),
                Item::ExitSignal {
                    signal,
                    core,
                    msg,
                    lang,
                } => side
                    .handle
                    .exit_signal_request(cid, signal, core, msg, lang)
                    .await
                    .is_ok(),
            };
            // A resumable channel outlives its client: it ends when the target closes it.
            ok || resumable
        }
    })
    .await;
}

/// Show `text` on every open session channel's stderr (a pty shows it on the terminal).
pub(crate) async fn say(handle: &server::Handle, open: &OpenChannels, text: &str) {
    let ids: Vec<ChannelId> = open
        .lock()
        .map(|o| o.iter().copied().collect())
        .unwrap_or_default();
    let line = format!("\r\n{text}\r\n");
    for id in ids {
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            handle.extended_data(id, 1, Bytes::from(line.clone().into_bytes())),
        )
        .await;
    }
}

/// Tell the user why their session ends (on every open session channel's stderr, and in the SSH
/// disconnect message, which OpenSSH prints), then disconnect.
pub(crate) async fn say_and_disconnect(handle: &server::Handle, open: &OpenChannels, text: &str) {
    say(handle, open, text).await;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        handle.disconnect(
            russh::Disconnect::ByApplication,
            text.to_string(),
            String::new(),
        ),
    )
    .await;
}

/// A channel opened by a user who was denied: say why on stderr, exit 1, close.
pub(crate) async fn refuse_channel(channel: Channel<server::Msg>, msg: String) {
    let (_rx, tx) = channel.split();
    let _ = tx
        .extended_data_bytes(1, bytes::Bytes::from(format!("{msg}\r\n")))
        .await;
    let _ = tx.exit_status(1).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}
