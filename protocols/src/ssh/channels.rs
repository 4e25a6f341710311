//! Opening channels for an admitted session: a new target channel per client channel, or, for a
//! re-attaching client, the paused channel it takes over (see `resume.rs`).

use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Msg, Session};
use russh::{client, Channel, ChannelId, ChannelOpenFailure};

use super::back::{self, TargetLeg};
use super::brake::OpenChannels;
use super::front::{Front, Resuming};
use super::relay;
use super::SshBroker;

impl<B: SshBroker> Front<B> {
    pub(super) async fn open_target_channel(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
        direct: Option<(String, u32, String, u32)>,
    ) {
        if let Some(msg) = self.denied.clone() {
            if direct.is_some() {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: msg,
                    })
                    .await;
            } else {
                reply.accept().await;
                tokio::spawn(relay::refuse_channel(channel, msg));
            }
            return;
        }
        let Some(adm) = self.admitted.as_ref() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        if direct.is_none() {
            if let Some(attach) = adm.resume.claim() {
                // A re-attaching client: this channel takes over the paused one at its shell
                // request (see `shell_request`).
                reply.accept().await;
                let id = channel.id();
                self.resuming.insert(
                    id,
                    Resuming {
                        channel,
                        attach,
                        pty: None,
                    },
                );
                return;
            }
        }
        match self.open_on_target(&direct).await {
            Ok((target_ch, leg)) => {
                reply.accept().await;
                self.wire(channel, target_ch, leg, session, direct).await;
            }
            Err(reason) => {
                reply
                    .reject(ChannelOpenFailure::Other { code: 2, reason })
                    .await;
            }
        }
    }

    /// The target side of a new channel: wait for the leg, then open a session or direct-tcpip
    /// channel on it. `Err` is the reason for the client.
    async fn open_on_target(
        &self,
        direct: &Option<(String, u32, String, u32)>,
    ) -> Result<(Channel<client::Msg>, Arc<TargetLeg>), String> {
        let adm = self
            .admitted
            .as_ref()
            .ok_or_else(|| "wardengate: no admitted session".to_string())?;
        let mut leg_watch = adm.leg.clone();
        let ending = adm.ending.clone();
        let ready = tokio::select! {
            r = back::ready(&mut leg_watch) => r,
            _ = ending.cancelled() => Err("the session is closing".into()),
        };
        let leg = ready.map_err(|msg| format!("wardengate: {msg}"))?;
        let opened = match direct {
            None => leg.handle.channel_open_session().await,
            Some((host, port, orig, orig_port)) => {
                leg.handle
                    .channel_open_direct_tcpip(host.clone(), *port, orig.clone(), *orig_port)
                    .await
            }
        };
        match opened {
            Ok(ch) => Ok((ch, leg)),
            Err(_) if leg.closed.is_cancelled() => {
                Err("wardengate: the session is closing".to_string())
            }
            Err(e) => Err(format!("wardengate: the target refused the channel: {e}")),
        }
    }

    /// Relay an accepted client channel to its target channel.
    async fn wire(
        &mut self,
        channel: Channel<Msg>,
        target_ch: Channel<client::Msg>,
        leg: Arc<TargetLeg>,
        session: &mut Session,
        direct: Option<(String, u32, String, u32)>,
    ) {
        let Some(adm) = self.admitted.as_ref() else {
            return;
        };
        let shared = adm.shared.clone();
        let resume = Some(adm.resume.clone()).filter(|_| direct.is_none());
        let cid = channel.id();
        let open = if direct.is_none() {
            self.open_channels.clone()
        } else {
            OpenChannels::default()
        };
        let tap = self.tap();
        if let (Some(tap), Some((host, port, orig, oport))) = (&tap, &direct) {
            tap.marker("direct-tcpip", format!("{host}:{port} from {orig}:{oport}"))
                .await;
        }
        let (w, attach) = relay::spawn(
            channel,
            target_ch,
            session.handle(),
            shared,
            open,
            leg.clone(),
            tap,
            resume.as_deref(),
        );
        if let Some(a) = attach {
            self.attaches.insert(cid, a);
        }
        self.channels.insert(cid, (w, leg));
    }

    /// A re-attaching client runs a command instead of a shell on its first channel: leave the
    /// paused shell for a later connection and give this channel a target channel of its own
    /// (with the terminal it asked for). `false` when the target refused.
    pub(super) async fn unclaim(&mut self, id: ChannelId, session: &mut Session) -> bool {
        let Some(r) = self.resuming.remove(&id) else {
            return true;
        };
        r.attach.detach_claim();
        match self.open_on_target(&None).await {
            Ok((target_ch, leg)) => {
                self.wire(r.channel, target_ch, leg, session, None).await;
                if let (Some((term, cols, rows, px, py, modes)), Some((w, _))) =
                    (r.pty, self.channels.get(&id))
                {
                    if let (Some(a), Some(adm)) = (self.attaches.get(&id), &self.admitted) {
                        a.set_pty(&adm.resume.hub, cols, rows);
                    }
                    let _ = w
                        .request_pty(false, &term, cols, rows, px, py, &modes)
                        .await;
                }
                true
            }
            Err(reason) => {
                tokio::spawn(relay::refuse_channel(r.channel, reason));
                false
            }
        }
    }
}

impl<B: SshBroker> Front<B> {
    /// The re-attaching client's shell request: bind its channel to the paused one.
    pub(super) async fn reattach(
        &mut self,
        Resuming {
            channel,
            attach,
            pty,
        }: Resuming,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(adm) = self.admitted.as_ref() else {
            return session.channel_failure(channel.id());
        };
        let mut leg_watch = adm.leg.clone();
        let Ok(leg) = back::ready(&mut leg_watch).await else {
            return session.channel_failure(channel.id());
        };
        let cid = channel.id();
        if let Some((_, cols, rows, px, py, _)) = pty {
            // The paused terminal takes the new client's size.
            attach.set_pty(&adm.resume.hub, cols, rows);
            let _ = attach.target_tx.window_change(cols, rows, px, py).await;
        }
        self.channels.insert(cid, (attach.target_tx.clone(), leg));
        self.attaches.insert(cid, attach.clone());
        adm.resume.note_reattach();
        session.channel_success(cid)?;
        relay::reattach(
            channel,
            session.handle(),
            self.open_channels.clone(),
            attach,
            adm.shared.clone(),
            adm.tap.clone(),
        )
        .await;
        Ok(())
    }
}
