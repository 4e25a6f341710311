//! Which cipher and MAC the client leg negotiated. russh's server handler is never told (its
//! client handler is, in `kex_done`), so the front reads the client's first KEXINIT as it passes
//! (plaintext, before any key exists) and applies RFC 4253 §7.1: each direction uses the first
//! algorithm of the *client's* list that the server also offers.
//!
//! [`Sniffer`] wraps the client socket and looks at the bytes russh reads until the KEXINIT is
//! whole (at most 64 KiB), then only passes reads through.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes looked at before giving up (a KEXINIT is a few hundred bytes to a few KiB).
const MAX_SNIFF: usize = 64 * 1024;
const SSH_MSG_KEXINIT: u8 = 20;

/// The algorithms a client offered for the two directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOffer {
    pub ciphers_c2s: Vec<String>,
    pub ciphers_s2c: Vec<String>,
    pub macs_c2s: Vec<String>,
    pub macs_s2c: Vec<String>,
}

/// What the start of a client's stream says so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The first binary packet is not whole yet.
    More,
    /// The first binary packet is whole: its offer, or `None` when it is not a KEXINIT one can
    /// read (then nothing more is looked at).
    Done(Option<ClientOffer>),
}

/// Parse the client's KEXINIT from the start of its stream (identification line(s), then the
/// first binary packet); `None` until it is whole, or when it is not one.
pub fn parse(stream: &[u8]) -> Option<ClientOffer> {
    match look(stream) {
        Seen::Done(o) => o,
        Seen::More => None,
    }
}

/// How far the start of the stream goes towards a KEXINIT.
pub fn look(stream: &[u8]) -> Seen {
    // RFC 4253 §4.2: lines before the one starting "SSH-" may come first.
    let mut rest = stream;
    loop {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Seen::More;
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.starts_with(b"SSH-") {
            break;
        }
    }
    let Some(len) = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return Seen::More;
    };
    let len = len as usize;
    if len > MAX_SNIFF {
        return Seen::Done(None);
    }
    let Some(packet) = rest.get(4..4 + len) else {
        return Seen::More;
    };
    Seen::Done(offer(packet, len))
}

/// The offer in a whole first packet, if it is a readable KEXINIT.
fn offer(packet: &[u8], len: usize) -> Option<ClientOffer> {
    let padding = *packet.first()? as usize;
    let payload = packet.get(1..len.checked_sub(padding)?)?;
    if *payload.first()? != SSH_MSG_KEXINIT {
        return None;
    }
    // Message byte, 16-byte cookie, then the name-lists in order.
    let mut at = 17usize;
    let mut lists = Vec::new();
    for _ in 0..6 {
        let n = u32::from_be_bytes(payload.get(at..at.checked_add(4)?)?.try_into().ok()?) as usize;
        let start = at.checked_add(4)?;
        let text = std::str::from_utf8(payload.get(start..start.checked_add(n)?)?).ok()?;
        lists.push(
            text.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>(),
        );
        at = start + n;
    }
    let mut l = lists.into_iter().skip(2);
    Some(ClientOffer {
        ciphers_c2s: l.next()?,
        ciphers_s2c: l.next()?,
        macs_c2s: l.next()?,
        macs_s2c: l.next()?,
    })
}

/// The first of the client's `offered` that the server `supports` (RFC 4253 §7.1).
pub fn choose<'a>(offered: &'a [String], supports: &[&str]) -> Option<&'a str> {
    offered
        .iter()
        .map(String::as_str)
        .find(|c| supports.contains(c))
}

/// Whether a cipher carries its own integrity (then no MAC is negotiated in effect).
pub fn is_aead(cipher: &str) -> bool {
    cipher.contains("gcm") || cipher.starts_with("chacha20-poly1305")
}

/// `cipher` with its MAC, as sessions show it: `aes128-gcm@openssh.com` or
/// `aes128-ctr + hmac-sha2-256-etm@openssh.com`.
pub fn describe(cipher: &str, mac: Option<&str>) -> String {
    match mac {
        Some(m) if !is_aead(cipher) => format!("{cipher} + {m}"),
        _ => cipher.to_string(),
    }
}

/// What the client leg negotiated (client to server direction; OpenSSH uses one list for both).
pub fn negotiated(offer: &ClientOffer, ciphers: &[&str], macs: &[&str]) -> Option<String> {
    let cipher = choose(&offer.ciphers_c2s, ciphers)?;
    let mac = choose(&offer.macs_c2s, macs);
    Some(describe(cipher, mac))
}

/// The client socket, read through until its KEXINIT has been seen.
pub struct Sniffer<S> {
    inner: S,
    seen: Vec<u8>,
    done: bool,
    offer: Arc<OnceLock<ClientOffer>>,
}

impl<S> Sniffer<S> {
    /// `inner`, and where its client's offer will be once read.
    pub fn new(inner: S) -> (Sniffer<S>, Arc<OnceLock<ClientOffer>>) {
        let offer = Arc::new(OnceLock::new());
        (
            Sniffer {
                inner,
                seen: Vec::new(),
                done: false,
                offer: offer.clone(),
            },
            offer,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffer<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if !me.done {
            if let Poll::Ready(Ok(())) = &r {
                let new = &buf.filled()[before..];
                me.seen.extend_from_slice(new);
                // Looked at only when something arrived, and never past the first packet.
                match look(&me.seen) {
                    Seen::Done(o) => {
                        if let Some(o) = o {
                            let _ = me.offer.set(o);
                        }
                        me.done = true;
                    }
                    Seen::More if me.seen.len() > MAX_SNIFF || new.is_empty() => me.done = true,
                    Seen::More => {}
                }
                if me.done {
                    me.seen = Vec::new();
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffer<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A KEXINIT as a client writes it, after its identification line.
    fn client_start(ciphers: &str, macs: &str) -> Vec<u8> {
        let mut payload = vec![SSH_MSG_KEXINIT];
        payload.extend_from_slice(&[7u8; 16]);
        for list in [
            "curve25519-sha256",
            "ssh-ed25519",
            ciphers,
            ciphers,
            macs,
            macs,
            "none",
            "none",
            "",
            "",
        ] {
            payload.extend_from_slice(&(list.len() as u32).to_be_bytes());
            payload.extend_from_slice(list.as_bytes());
        }
        payload.push(0);
        payload.extend_from_slice(&0u32.to_be_bytes());
        let padding = 8 - (payload.len() + 5) % 8 + 8;
        let mut out = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec();
        out.extend_from_slice(&((payload.len() + padding + 1) as u32).to_be_bytes());
        out.push(padding as u8);
        out.extend_from_slice(&payload);
        out.extend(std::iter::repeat_n(0u8, padding));
        out
    }

    #[test]
    fn openssh_9_2_gets_what_the_gateway_offers_first_in_its_order() {
        let stream = client_start(
            "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com",
            "umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com",
        );
        for cut in [0, 10, 40, stream.len() - 1] {
            assert_eq!(parse(&stream[..cut]), None, "cut at {cut}");
        }
        let offer = parse(&stream).expect("whole");
        let macs = [
            "hmac-sha2-512-etm@openssh.com",
            "hmac-sha2-256-etm@openssh.com",
        ];
        let with_ctr = [
            "aes256-gcm@openssh.com",
            "aes128-gcm@openssh.com",
            "aes256-ctr",
            "aes128-ctr",
        ];
        assert_eq!(
            negotiated(&offer, &with_ctr, &macs).as_deref(),
            Some("aes128-ctr + hmac-sha2-256-etm@openssh.com"),
            "CTR on offer: OpenSSH's order picks it over GCM"
        );
        let aead = ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"];
        assert_eq!(
            negotiated(&offer, &aead, &macs).as_deref(),
            Some("aes128-gcm@openssh.com")
        );
    }

    #[tokio::test]
    async fn the_sniffer_passes_every_byte_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = client_start("aes128-gcm@openssh.com", "hmac-sha2-256");
        let (mut a, b) = tokio::io::duplex(16);
        let (mut s, offer) = Sniffer::new(b);
        let data = stream.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&data).await.expect("write");
            a.write_all(b"after").await.expect("write");
        });
        let mut got = vec![0u8; stream.len() + 5];
        s.read_exact(&mut got).await.expect("read");
        writer.await.expect("writer");
        assert_eq!(&got[..stream.len()], &stream[..]);
        assert_eq!(&got[stream.len()..], b"after");
        assert_eq!(
            offer.get().map(|o| o.ciphers_c2s.clone()),
            Some(vec!["aes128-gcm@openssh.com".to_string()])
        );
    }
}
