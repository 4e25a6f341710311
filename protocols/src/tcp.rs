//! Brokered TCP: the bytes of one connection relayed between the client (through `wgctl proxy`)
//! and the host, both ways, each piece tapped for the recording before it is passed on.
//!
//! Nothing here reads the bytes: a TCP target's protocol is the client's and the host's. Client
//! data is the session's input (it resets the idle clock); the host's is output.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use wardengate_recorder::EventKind;

use crate::session::{SessionShared, Tap};

/// Largest read passed on at once.
const READ: usize = 64 * 1024;

/// How a relayed connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Both sides closed (the usual end).
    Closed,
    /// The session ended under it (`stop`).
    Stopped,
    /// The recording could not keep up (the recorder is gone): the connection was cut.
    RecordingFailed,
    /// A read or write failed: which side, and why.
    Error(String),
}

/// Relay one connection until both sides have closed, `stop` fires, or the recorder fails.
/// Returns how it ended and the bytes each way (from the client, from the host).
pub async fn relay<C, H>(
    client: C,
    host: H,
    conn: u32,
    shared: &SessionShared,
    tap: Option<&Tap>,
    stop: &CancellationToken,
) -> (Ended, u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
    H: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut hr, mut hw) = tokio::io::split(host);
    let (n_up, n_down) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = pump(&mut cr, &mut hw, conn, true, shared, tap, &n_up);
    let down = pump(&mut hr, &mut cw, conn, false, shared, tap, &n_down);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (None, None);
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            // The session's end first: nothing more is passed on once it is cut.
            biased;
            _ = stop.cancelled() => return (Ended::Stopped, n(&n_up), n(&n_down)),
            r = &mut up, if up_done.is_none() => {
                if r.is_err() {
                    down_done.get_or_insert(Ok(()));
                }
                up_done = Some(r);
            }
            r = &mut down, if down_done.is_none() => {
                if r.is_err() {
                    up_done.get_or_insert(Ok(()));
                }
                down_done = Some(r);
            }
        }
        if let (Some(u), Some(d)) = (&up_done, &down_done) {
            let ended = match (u, d) {
                (Err(e), _) | (_, Err(e)) => e.clone(),
                _ => Ended::Closed,
            };
            return (ended, n(&n_up), n(&n_down));
        }
    }
}

/// One direction: read, tap, write; at the reader's end, shut the writer's side down (the
/// half-close goes through, as it would between the two directly).
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    conn: u32,
    from_client: bool,
    shared: &SessionShared,
    tap: Option<&Tap>,
    total: &AtomicU64,
) -> Result<(), Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let side = |what: &str, e: std::io::Error| {
        let who = if from_client { "client" } else { "host" };
        Ended::Error(format!("{what} the {who}: {e}"))
    };
    let mut buf = BytesMut::with_capacity(READ);
    loop {
        buf.reserve(READ);
        let n = from
            .read_buf(&mut buf)
            .await
            .map_err(|e| side("reading from", e))?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let data = buf.split().freeze();
        total.fetch_add(n as u64, Ordering::Relaxed);
        if from_client {
            shared.note_input(n);
        } else {
            shared.note_output(n);
        }
        if let Some(tap) = tap {
            let kind = EventKind::Stream {
                conn,
                from_client,
                data: data.clone(),
            };
            if !tap.record(kind).await {
                return Err(Ended::RecordingFailed);
            }
        }
        to.write_all(&data).await.map_err(|e| {
            let who = if from_client { "host" } else { "client" };
            Ended::Error(format!("writing to the {who}: {e}"))
        })?;
    }
}
