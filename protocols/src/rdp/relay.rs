//! The RDP relay: after both legs' CredSSP, the two plaintext TLS streams are moved socket to
//! socket as they arrive. The client's stream is cut into PDUs (ironrdp's `find_size`) only to
//! judge input for idle and to record it; the target's stream is recorded as it comes.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use wardengate_policy::{Admitted, ShadowMode};
use wardengate_recorder::EventKind;

use super::farewell::{farewell, Boundaries, Goodbye};
use super::input::InputFilter;
use super::offer::Offer;
use crate::error::{Leg, LegError};
use crate::session::{Outcome, SessionLink, SessionShared, Tap};
use crate::shadow::desktop::DesktopFeed;
use crate::supervisor::{Ended, Front, Input, Say, Supervisor};

const BUF: usize = 64 * 1024;
/// Largest client PDU kept whole for inspection (a TPKT frame's limit).
const MAX_PDU: usize = 0x1_0000;

#[derive(Debug)]
enum End {
    Client,
    Target,
    Io(LegError),
    /// The gateway ended the session and the client was told (or could not be).
    Farewell,
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    w.write_all(b).await?;
    // tokio-rustls may keep the tail of a write in its buffer (see postgres::wire::send).
    w.flush().await
}

/// Client → target. Until the client's Confirm Active, whole PDUs go on one by one, the offer
/// rewritten where the recording needs it ([`Offer`]); after that, bytes go on as read. Whole
/// PDUs are judged for idle and recorded.
async fn up<R, W>(mut rd: R, mut wr: W, tap: Option<Tap>, shared: Arc<SessionShared>) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    let mut pending = BytesMut::new();
    let mut filter = InputFilter::default();
    let mut offer = Offer::default();
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => return End::Client,
            Ok(n) => n,
            Err(e) => return End::Io(LegError::client(e)),
        };
        if !offer.pending() {
            if let Err(e) = send(&mut wr, &buf[..n]).await {
                return End::Io(LegError::target(e));
            }
        }
        pending.extend_from_slice(&buf[..n]);
        loop {
            let len = match ironrdp_pdu::find_size(&pending) {
                Ok(Some(info)) if info.length > 0 && info.length <= MAX_PDU => info.length,
                Ok(None) => break,
                // A PDU the gateway cannot frame: still relayed, judged as not input.
                _ => {
                    if offer.pending() {
                        offer.finish();
                        if let Err(e) = send(&mut wr, &pending).await {
                            return End::Io(LegError::target(e));
                        }
                    }
                    shared.count_input(pending.len());
                    let data = pending.split().freeze();
                    if let Some(t) = &tap {
                        t.record(EventKind::Input { channel: 0, data }).await;
                    }
                    break;
                }
            };
            if pending.len() < len {
                break;
            }
            let mut pdu = pending.split_to(len).freeze();
            if offer.pending() {
                if let Some(changed) = offer.rewrite(&pdu) {
                    pdu = Bytes::from(changed);
                }
                if let Err(e) = send(&mut wr, &pdu).await {
                    return End::Io(LegError::target(e));
                }
                if !offer.pending() {
                    // The rest was read but not forwarded yet.
                    if let Err(e) = send(&mut wr, &pending).await {
                        return End::Io(LegError::target(e));
                    }
                    if let (Some(t), false) = (&tap, offer.withdrawn.is_empty()) {
                        let detail = format!(
                            "withdrawn from the client's offer so that the session replays: {}",
                            offer.withdrawn.join(", ")
                        );
                        t.marker("rdp-offer", detail).await;
                    }
                }
            }
            if filter.meaningful(&pdu) {
                shared.note_input(pdu.len());
            } else {
                shared.count_input(pdu.len());
            }
            if let Some(t) = &tap {
                t.record(EventKind::Input {
                    channel: 0,
                    data: pdu,
                })
                .await;
            }
        }
    }
}

/// Target → client: forwarded and recorded as read, and handed to the live desktop (which never
/// makes it wait). When the gateway ends the session (`bye`), the PDU being relayed is finished
/// and the client is told why ([`farewell`]); then the pump returns [`End::Farewell`].
async fn down<R, W>(
    mut rd: R,
    mut wr: W,
    tap: Option<Tap>,
    live: Option<DesktopFeed>,
    shared: Arc<SessionShared>,
    mut bye: oneshot::Receiver<Goodbye>,
    mut banners: mpsc::Receiver<String>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    let mut framing = Boundaries::default();
    let mut leaving: Option<Goodbye> = None;
    let mut banner: Option<String> = None;
    let mut banners_open = true;
    loop {
        if let Some(why) = leaving {
            if framing.at_boundary() {
                return say_goodbye(&mut wr, &framing, why, &tap).await;
            }
        }
        if banner.is_some() && framing.at_boundary() {
            if let Some(text) = banner.take() {
                if let Err(e) = show_banner(&mut wr, &framing, &text, &tap).await {
                    return e;
                }
            }
        }
        let read = tokio::select! {
            r = rd.read(&mut buf) => r,
            text = banners.recv(), if banners_open && banner.is_none() && leaving.is_none() => {
                match text {
                    Some(t) => banner = Some(t),
                    None => banners_open = false,
                }
                continue;
            }
            why = &mut bye, if leaving.is_none() => {
                match why {
                    Ok(why) if !framing.lost && framing.ids.is_some() => leaving = Some(why),
                    // Nothing to say it with (before the desktop, or an unframeable stream).
                    _ => return End::Farewell,
                }
                continue;
            }
        };
        let mut n = match read {
            Ok(0) => return End::Target,
            Ok(n) => n,
            Err(e) => return End::Io(LegError::target(e)),
        };
        let read_at = std::time::Instant::now();
        if leaving.is_some() {
            // Only the rest of the PDU under way: the client gets no half PDU, nor a new one.
            n = framing.to_boundary(&buf[..n]);
        }
        framing.feed(&buf[..n]);
        shared.note_output(n);
        if let Err(e) = send(&mut wr, &buf[..n]).await {
            return End::Io(LegError::client(e));
        }
        shared.note_relayed(read_at.elapsed());
        if tap.is_none() && live.is_none() {
            continue;
        }
        let data = Bytes::copy_from_slice(&buf[..n]);
        if let Some(l) = &live {
            l.push(&data);
        }
        if let Some(t) = &tap {
            t.record(EventKind::Output {
                channel: 0,
                data,
                stderr: false,
            })
            .await;
        }
    }
}

fn ended(end: End) -> Outcome {
    match end {
        End::Client => Outcome::ClientExit,
        End::Target => Outcome::TargetClosed,
        End::Io(e) if e.leg == Leg::Client => Outcome::ClientDropped(e.to_string()),
        End::Io(e) => Outcome::Error(e.to_string()),
        End::Farewell => Outcome::Error("the relay ended the session unasked".into()),
    }
}

/// Draw `text` across the top of the client's screen (and record it: the client saw it). Only
/// a broken client connection is an error; a banner that cannot be drawn is skipped.
async fn show_banner<W: AsyncWrite + Unpin>(
    wr: &mut W,
    framing: &Boundaries,
    text: &str,
    tap: &Option<Tap>,
) -> Result<(), End> {
    let Some(width) = framing.desktop_width.filter(|_| !framing.lost) else {
        return Ok(()); // before the desktop: nothing to draw on
    };
    let bytes = match super::banner::banner(text, width) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("rdp: no banner for the client: {e}");
            return Ok(());
        }
    };
    inject(wr, bytes, tap)
        .await
        .map_err(|e| End::Io(LegError::client(e)))
}

/// Bytes of the gateway's own for the client (a banner, a farewell): written, then recorded,
/// since the client saw them.
async fn inject<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: Vec<u8>,
    tap: &Option<Tap>,
) -> std::io::Result<()> {
    send(wr, &bytes).await?;
    if let Some(t) = tap {
        t.record(EventKind::Output {
            channel: 0,
            data: Bytes::from(bytes),
            stderr: false,
        })
        .await;
    }
    Ok(())
}

/// Write the farewell (and record it: it is what the client got last).
async fn say_goodbye<W: AsyncWrite + Unpin>(
    wr: &mut W,
    framing: &Boundaries,
    why: Goodbye,
    tap: &Option<Tap>,
) -> End {
    let Some(ids) = framing.ids else {
        return End::Farewell;
    };
    let bytes = match farewell(ids, why) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("rdp: no farewell for the client: {e}");
            return End::Farewell;
        }
    };
    let _ = inject(wr, bytes, tap).await;
    End::Farewell
}

/// How long the client's last PDU may take to finish before the connection is closed without a
/// farewell.
const FAREWELL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The client leg, for the supervisor: texts are drawn across the top of the desktop; the end
/// is a farewell in RDP's own terms, sent by the down pump once the supervisor is done.
struct RdpFront<'a> {
    banners: &'a mpsc::Sender<String>,
}

impl Front for RdpFront<'_> {
    const INPUT: Input = Input {
        noun: "keyboard or mouse input",
        unless: "unless the keyboard or mouse is used",
    };

    async fn say(&mut self, text: &str, _: Say) {
        let text = match text.strip_prefix("wardengate: ") {
            Some(rest) => format!("[wardengate] {rest}"),
            None => text.to_string(),
        };
        // Never waits: a banner that finds the queue full is skipped.
        let _ = self.banners.try_send(text);
    }

    async fn end(&mut self, _: &Outcome, _: &str) {
        // The farewell names the reason in RDP's terms; it is sent after the supervisor.
    }
}

/// Relay until the session ends; the outcome is what the gateway records.
pub async fn run<C, T>(
    mut link: SessionLink,
    admitted: Admitted,
    client: C,
    target: T,
    shutdown: tokio_util::sync::CancellationToken,
    notify: impl Fn(&'static str, String) + Send + Sync,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (crd, cwr) = tokio::io::split(client);
    let (trd, twr) = tokio::io::split(target);
    let shared = link.shared.clone();
    let up = up(crd, twr, link.tap.clone(), shared.clone());
    // Observers watch a decoded desktop; there is none to keep when the policy blocks them.
    let live = match admitted.settings().shadow {
        ShadowMode::Blocked => None,
        _ => link
            .hub
            .desktop()
            .map_err(|e| tracing::warn!("rdp: no live desktop for observers: {e}"))
            .ok(),
    };
    let (say_bye, bye) = oneshot::channel();
    let (banner_tx, banners) = mpsc::channel::<String>(8);
    let down = down(
        trd,
        cwr,
        link.tap.clone(),
        live,
        shared.clone(),
        bye,
        banners,
    );
    tokio::pin!(up, down);
    let outcome = {
        // (The pumps end by themselves only for what happens to a connection; the farewell is
        // asked for after the supervisor.)
        let relay = async {
            tokio::select! {
                r = &mut up => ended(r),
                r = &mut down => ended(r),
            }
        };
        tokio::pin!(relay);
        let supervisor = Supervisor::new(&mut link, &admitted, &shutdown, &notify);
        let mut front = RdpFront {
            banners: &banner_tx,
        };
        match supervisor.run(&mut front, relay).await {
            Ended::Relay(o) | Ended::Gateway(o) => o,
            // Never asked for: an RDP front does not hand off.
            Ended::Handoff(_) => Outcome::Error("a handoff reached an RDP session".into()),
        }
    };
    // The gateway ends it: the client is told why, in RDP's own terms.
    let why = match &outcome {
        Outcome::Terminated { .. } | Outcome::Shutdown => Some(Goodbye::Administrative),
        Outcome::Policy { reason: "idle", .. } => Some(Goodbye::Idle),
        Outcome::Policy {
            reason: "lifespan", ..
        } => Some(Goodbye::Lifespan),
        Outcome::Policy { .. } => Some(Goodbye::Administrative),
        _ => None,
    };
    if let Some(why) = why {
        if say_bye.send(why).is_ok() {
            let _ = tokio::time::timeout(FAREWELL_WAIT, &mut down).await;
        }
    }
    // Returning drops both pumps, which closes both connections.
    link.control.close();
    outcome
}
