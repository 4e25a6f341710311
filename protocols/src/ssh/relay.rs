//! The channel relay: one task per direction per channel, bytes moved as `Bytes` without copies.
//!
//! `up` reads what the client sent on a channel and writes it to the matching target channel;
//! `down` does the reverse and also carries the target's `exit-status`, `exit-signal`, EOF and
//! close. Both writers are russh `ChannelWriteHalf`s, which wait for the peer's SSH window, so a
//! slow reader on either side back-pressures the other side instead of growing a buffer.
//!
//! Channel *requests* (pty-req, exec, ...) are not relayed here: they need replies, which the front
//! handler awaits from the target before answering the client (see `front.rs`).
//!
//! Known limit: russh stops reading a connection while a channel's inbound queue is full, so when
//! both directions of one connection saturate at once the two session loops could wait on each
//! other. The queues are sized (256 messages) so that this needs several megabytes in flight in
//! both directions on the same connection at the same instant.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::{client, server, Channel, ChannelId, ChannelMsg};

use super::back::TargetLeg;
use crate::session::SessionShared;

/// Session channels currently open towards the client (for goodbye messages).
pub(crate) type OpenChannels = Arc<Mutex<HashSet<ChannelId>>>;

/// Wire a client channel to a target channel. Returns the target channel's write half, which the
/// front handler uses to forward channel requests.
pub(crate) fn spawn(
    client_ch: Channel<server::Msg>,
    target_ch: Channel<client::Msg>,
    handle: server::Handle,
    shared: Arc<SessionShared>,
    open: OpenChannels,
    leg: Arc<TargetLeg>,
) -> Arc<russh::ChannelWriteHalf<client::Msg>> {
    let cid = client_ch.id();
    let tid = target_ch.id();
    let (client_rx, client_tx) = client_ch.split();
    let (target_rx, target_tx) = target_ch.split();
    let target_tx = Arc::new(target_tx);
    shared.channel_opened();
    if let Ok(mut o) = open.lock() {
        o.insert(cid);
    }
    tokio::spawn(up(client_rx, target_tx.clone(), shared.clone()));
    tokio::spawn(async move {
        down(target_rx, client_tx, &handle, cid, &shared).await;
        shared.channel_closed();
        leg.forget(tid);
        if let Ok(mut o) = open.lock() {
            o.remove(&cid);
        }
    });
    target_tx
}

async fn up(
    mut rx: russh::ChannelReadHalf,
    tx: Arc<russh::ChannelWriteHalf<client::Msg>>,
    shared: Arc<SessionShared>,
) {
    while let Some(msg) = rx.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                shared.note_input(data.len());
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                shared.note_input(data.len());
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::Close => break,
            // Requests are forwarded by the front handler, which needs their replies.
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
}

async fn down(
    mut rx: russh::ChannelReadHalf,
    tx: russh::ChannelWriteHalf<server::Msg>,
    handle: &server::Handle,
    cid: ChannelId,
    shared: &SessionShared,
) {
    while let Some(msg) = rx.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                shared.note_output(data.len());
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                shared.note_output(data.len());
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::ExitStatus { exit_status } => tx.exit_status(exit_status).await,
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => handle
                .exit_signal_request(cid, signal_name, core_dumped, error_message, lang_tag)
                .await
                .map_err(|_| russh::Error::SendError),
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
}

/// Tell the user why their session ends (on every open session channel's stderr, and in the SSH
/// disconnect message, which OpenSSH prints), then disconnect.
pub(crate) async fn say_and_disconnect(handle: &server::Handle, open: &OpenChannels, text: &str) {
    let ids: Vec<ChannelId> = open
        .lock()
        .map(|o| o.iter().copied().collect())
        .unwrap_or_default();
    let line = format!("\r\n{text}\r\n");
    for id in ids {
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            handle.extended_data(id, 1, bytes::Bytes::from(line.clone().into_bytes())),
        )
        .await;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        handle.disconnect(russh::Disconnect::ByApplication, text.to_string(), String::new()),
    )
    .await;
}

/// A channel opened by a user who was denied: say why on stderr, exit 1, close.
pub(crate) async fn refuse_channel(channel: Channel<server::Msg>, msg: String) {
    let (_rx, tx) = channel.split();
    let _ = tx.extended_data_bytes(1, bytes::Bytes::from(format!("{msg}\r\n"))).await;
    let _ = tx.exit_status(1).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}
