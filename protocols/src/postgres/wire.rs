//! Wire helpers: the connection type both legs use, the frame scanner of the relay, and the few
//! messages the gateway writes itself (errors, notices, authentication), encoded by pgwire.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use pgwire::messages::response::{ErrorResponse, NoticeResponse};
use pgwire::messages::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A leg's byte stream: plain TCP, or TLS over TCP (the server side towards clients, the client
/// side towards targets).
pub enum Conn {
    Plain(TcpStream),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Conn::Plain(_))
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::TlsServer($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            Conn::TlsClient($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::TlsServer(s) => s.is_write_vectored(),
            Conn::TlsClient(s) => s.is_write_vectored(),
        }
    }
}

/// Encode a pgwire message (the gateway's own messages are small and well-formed).
/// Write all of `parts` and flush. Over TLS, `write_all` returns once rustls has taken the
/// plaintext, which may still sit in its buffer: tokio-rustls reports the write done when the
/// socket would block, which happens when it is full and also when the task has used up its
/// cooperative budget (a busy relay task on a loaded machine). Without the flush the last records
/// of a response waited there until the next write, and a client waiting for its ReadyForQuery
/// waited forever (seen as a `pgbench -M extended` client hanging over TLS, about one run in
/// twelve on a loaded 2-core machine; none in 40 runs with the flush).
pub async fn send<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    for p in parts {
        w.write_all(p).await?;
    }
    w.flush().await
}

pub fn encode(m: &impl Message) -> BytesMut {
    let mut b = BytesMut::new();
    if let Err(e) = m.encode(&mut b) {
        tracing::error!("cannot encode a PostgreSQL message: {e}");
    }
    b
}

/// An ErrorResponse (`severity` FATAL or ERROR) with SQLSTATE `code`, as psql prints it:
/// `FATAL:  message` and, when given, `DETAIL:  detail` and `HINT:  hint`.
pub fn error(
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> BytesMut {
    let mut fields = vec![
        (b'S', severity.to_string()),
        (b'V', severity.to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    if let Some(d) = detail {
        fields.push((b'D', d.to_string()));
    }
    if let Some(h) = hint {
        fields.push((b'H', h.to_string()));
    }
    encode(&ErrorResponse::new(fields))
}

/// A NoticeResponse (severity NOTICE or WARNING), which clients show between results.
pub fn notice(severity: &str, code: &str, message: &str) -> BytesMut {
    encode(&NoticeResponse::new(vec![
        (b'S', severity.to_string()),
        (b'V', severity.to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ]))
}

/// Largest frame body accepted from either side (PostgreSQL's own limit is 1 GiB - 1).
pub const MAX_FRAME: usize = 0x3fff_fffb;

/// Finds frame boundaries in a byte stream that is relayed as it arrives, and hands the frames
/// the relay inspects (by tag) to a callback: directly from the chunk when a frame is whole in
/// it, else from a capture buffer that keeps at most `cap` bytes of its body. Bytes are never
/// held back: the relay forwards each chunk at once, whatever the scanner found.
#[derive(Debug)]
pub struct Scanner {
    head: [u8; 5],
    head_len: usize,
    in_body: bool,
    tag: u8,
    remaining: usize,
    total: usize,
    capture: Option<Vec<u8>>,
    cap: usize,
}

impl Scanner {
    pub fn new(cap: usize) -> Scanner {
        Scanner {
            head: [0; 5],
            head_len: 0,
            in_body: false,
            tag: 0,
            remaining: 0,
            total: 0,
            capture: None,
            cap,
        }
    }

    /// Between frames: a message of the gateway's own may be written now.
    pub fn at_boundary(&self) -> bool {
        self.head_len == 0 && !self.in_body
    }

    /// Scan `chunk`. `wanted(tag)` selects the frames passed to `frame(tag, body, full_len)`
    /// (`body` shorter than `full_len` when the capture was cut). Returns the offset just past
    /// the last frame that ended in this chunk (`None`: none did), or the protocol error.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        wanted: impl Fn(u8) -> bool,
        mut frame: impl FnMut(u8, &[u8], usize),
    ) -> Result<Option<usize>, String> {
        let mut i = 0;
        let mut boundary = None;
        while i < chunk.len() {
            if !self.in_body {
                let take = (5 - self.head_len).min(chunk.len() - i);
                self.head[self.head_len..self.head_len + take].copy_from_slice(&chunk[i..i + take]);
                self.head_len += take;
                i += take;
                if self.head_len < 5 {
                    break;
                }
                self.tag = self.head[0];
                let len =
                    u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]])
                        as usize;
                if !(4..=MAX_FRAME + 4).contains(&len) {
                    return Err(format!(
                        "invalid message length {len} for message type '{}'",
                        self.tag.escape_ascii()
                    ));
                }
                self.total = len - 4;
                self.remaining = self.total;
                self.in_body = true;
                if wanted(self.tag) {
                    if chunk.len() - i >= self.total {
                        // The whole frame is here: no copy.
                        frame(self.tag, &chunk[i..i + self.total], self.total);
                        i += self.total;
                        self.end_frame();
                        boundary = Some(i);
                        continue;
                    }
                    self.capture = Some(Vec::with_capacity(self.total.min(self.cap)));
                }
                if self.total == 0 {
                    self.end_frame();
                    boundary = Some(i);
                }
                continue;
            }
            let take = self.remaining.min(chunk.len() - i);
            if let Some(c) = self.capture.as_mut() {
                let room = self.cap.saturating_sub(c.len()).min(take);
                c.extend_from_slice(&chunk[i..i + room]);
            }
            i += take;
            self.remaining -= take;
            if self.remaining == 0 {
                if let Some(c) = self.capture.take() {
                    frame(self.tag, &c, self.total);
                }
                self.end_frame();
                boundary = Some(i);
            }
        }
        Ok(boundary)
    }

    fn end_frame(&mut self) {
        self.head_len = 0;
        self.in_body = false;
        self.remaining = 0;
        self.capture = None;
    }
}

/// A panic-free reader over a message body: every read checks the length first, so a hostile
/// or cut frame yields `None`, never a panic. (pgwire's decoders index without checking, which
/// is fine for a server that trusts its own framing but not for a gateway reading copies of
/// frames it cannot trust.)
pub struct Rd<'a>(pub &'a [u8]);

impl<'a> Rd<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    /// A NUL-terminated string (lossy UTF-8).
    pub fn cstr(&mut self) -> Option<String> {
        let n = self.0.iter().position(|c| *c == 0)?;
        let s = String::from_utf8_lossy(&self.0[..n]).into_owned();
        self.0 = &self.0[n + 1..];
        Some(s)
    }
}

/// The fields of an ErrorResponse or NoticeResponse body: (code, value) pairs.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut r = Rd(body);
    let mut out = Vec::new();
    while let Some(code) = r.u8() {
        if code == 0 {
            break;
        }
        match r.cstr() {
            Some(v) => out.push((code, v)),
            None => break,
        }
    }
    out
}

/// A NUL-terminated string at the start of `b` (lossy UTF-8) and what follows it.
pub fn cstr(b: &[u8]) -> (String, &[u8]) {
    match b.iter().position(|c| *c == 0) {
        Some(n) => (String::from_utf8_lossy(&b[..n]).into_owned(), &b[n + 1..]),
        None => (String::from_utf8_lossy(b).into_owned(), &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn stream() -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
        let frames: Vec<(u8, Vec<u8>)> = vec![
            (b'Q', b"select 1\0".to_vec()),
            (b'D', vec![7; 3000]),
            (b'C', b"SELECT 1\0".to_vec()),
            (b'S', vec![]),
            (b'Z', b"I".to_vec()),
            (b'Q', vec![b'x'; 100]),
        ];
        let bytes = frames.iter().flat_map(|(t, b)| frame(*t, b)).collect();
        (bytes, frames)
    }

    proptest! {
        /// However the stream is cut into chunks, the same frames come out, and every reported
        /// boundary is a real one.
        #[test]
        fn chunking_does_not_matter(cuts in proptest::collection::vec(1usize..200, 1..60)) {
            let (bytes, frames) = stream();
            let mut s = Scanner::new(64);
            let mut seen = Vec::new();
            let mut pos = 0;
            let mut boundaries = Vec::new();
            let mut cut = cuts.iter().cycle();
            while pos < bytes.len() {
                let n = (*cut.next().unwrap_or(&1)).min(bytes.len() - pos);
                let b = s.feed(&bytes[pos..pos + n], |t| t != b'D', |t, body, full| seen.push((t, body.to_vec(), full)))
                    .expect("valid stream");
                if let Some(b) = b { boundaries.push(pos + b); }
                pos += n;
            }
            prop_assert!(s.at_boundary());
            let want: Vec<(u8, Vec<u8>, usize)> = frames.iter().filter(|(t, _)| *t != b'D')
                .map(|(t, b)| (*t, b[..b.len().min(64)].to_vec(), b.len())).collect();
            // A frame whole in one chunk is passed uncut; only captured ones are capped at 64.
            prop_assert_eq!(seen.len(), want.len());
            for ((t, body, full), (wt, wbody, wfull)) in seen.iter().zip(want.iter()) {
                prop_assert_eq!(t, wt);
                prop_assert_eq!(full, wfull);
                prop_assert!(body.starts_with(wbody) || wbody.starts_with(body));
            }
            let mut ends = Vec::new();
            let mut at = 0;
            for (t, b) in &frames { at += frame(*t, b).len(); ends.push(at); }
            for b in boundaries { prop_assert!(ends.contains(&b), "{} is not a frame end", b); }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut s = Scanner::new(64);
        let e = s
            .feed(&[b'Q', 0, 0, 0, 2], |_| true, |_, _, _| {})
            .unwrap_err();
        assert!(e.contains("invalid message length 2"), "{e}");
        let mut s = Scanner::new(64);
        assert!(s
            .feed(&[b'Q', 0x7f, 0xff, 0xff, 0xff], |_| true, |_, _, _| {})
            .is_err());
    }

    /// A TLS stream over a pipe of `cap` bytes: the server end and the client end.
    async fn tls_pair(
        cap: usize,
    ) -> (
        tokio_rustls::server::TlsStream<tokio::io::DuplexStream>,
        tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
    ) {
        use tokio_rustls::rustls::{self, pki_types};
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let key = pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(c.cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(cap);
        let name = pki_types::ServerName::try_from("localhost").expect("name");
        let (s, c) = tokio::join!(
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)).accept(a),
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)).connect(name, b),
        );
        (s.expect("accept"), c.expect("connect"))
    }

    /// rustls takes plaintext even when the socket is full, and `write_all` returns with the
    /// tail of it still in rustls's buffer: `send` flushes, so a reader gets all of it although
    /// nothing is written after it. (Without the flush this test times out.)
    #[tokio::test]
    async fn send_over_tls_delivers_everything_without_a_later_write() {
        use tokio::io::AsyncReadExt;
        let (mut server, mut client) = tls_pair(1024).await;
        let data = vec![b'x'; 100_000];
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 100_000];
            let r = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                client.read_exact(&mut got),
            )
            .await;
            (r.is_ok(), client)
        });
        send(&mut server, &[&data[..60_000], &data[60_000..]])
            .await
            .expect("send");
        let (complete, _client) = reader.await.expect("reader");
        assert!(complete, "the reader did not get all 100000 bytes");
        drop(server);
    }
}
