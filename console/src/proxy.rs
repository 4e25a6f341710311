//! `wgctl proxy`'s engine: a local listener whose every connection is carried over TLS (pinned
//! to the certificate the token names) to the gateway's `[tcp]` listener, after a one-line
//! hello with the authorization token and the person's own API token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use wardengate_api as api;

use crate::output::note;

/// Why a proxy stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Expired,
    /// Every connection the session allows was made and closed.
    Used,
    /// The gateway refused a connection because the session is over.
    Ended(String),
    Interrupted,
}

impl End {
    pub fn text(&self) -> String {
        match self {
            End::Expired => "the session expired".into(),
            End::Used => "every connection the session allows was used".into(),
            End::Ended(why) => why.clone(),
            End::Interrupted => "interrupted".into(),
        }
    }
}

/// The local listener and what each of its connections needs.
pub struct Proxy {
    listener: TcpListener,
    pub local: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    hello: Vec<u8>,
    endpoint: String,
    tls: TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    limit: i64,
    exp_ms: u64,
    /// Connections the gateway took, and those still open.
    made: AtomicU32,
    open: AtomicU32,
    changed: tokio::sync::Notify,
    ended: tokio::sync::Mutex<Option<End>>,
    /// Handshakes with the gateway at once: a client opening 50 connections together would
    /// otherwise meet the gateway's cap on unauthenticated connections per source (16).
    handshakes: tokio::sync::Semaphore,
    /// Until one handshake has succeeded, one at a time: the gateway counts a token it has not
    /// seen yet among the attempts a source may have in flight (5 by default).
    opened_once: std::sync::atomic::AtomicBool,
}

/// Handshakes in flight per proxy.
const HANDSHAKES: usize = 8;

/// How long one handshake with the gateway may take (TLS, the hello, its answer).
const HANDSHAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

impl Proxy {
    pub async fn bind(
        addr: SocketAddr,
        authz: &str,
        claims: &api::TokenClaims,
        token: &str,
    ) -> Result<Proxy> {
        if token.is_empty() {
            bail!("not signed in: run `wgctl login` (the proxy presents your own token with the authorization)");
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let pin = hex::decode(&claims.cert_sha256)
            .ok()
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or_else(|| anyhow!("the authorization token names no certificate"))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::pin::Pinned::new(pin)))
            .with_no_client_auth();
        let host = claims
            .endpoint
            .rsplit_once(':')
            .map_or(claims.endpoint.as_str(), |(h, _)| h);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        // The name is not what is checked (the pin is); any valid one will do.
        let server_name = rustls::pki_types::ServerName::try_from(host)
            .or_else(|_| rustls::pki_types::ServerName::try_from("wardengate"))
            .map_err(|e| anyhow!("cannot name the gateway for TLS: {e}"))?;
        let mut hello = serde_json::to_vec(&api::TcpHello {
            authz: authz.trim().to_string(),
            token: token.to_string(),
        })?;
        hello.push(b'\n');
        Ok(Proxy {
            listener,
            local,
            shared: Arc::new(Shared {
                hello,
                endpoint: claims.endpoint.clone(),
                tls: TlsConnector::from(Arc::new(config)),
                server_name,
                limit: claims.connection_limit,
                exp_ms: claims.exp_ms,
                made: AtomicU32::new(0),
                open: AtomicU32::new(0),
                changed: tokio::sync::Notify::new(),
                ended: tokio::sync::Mutex::new(None),
                handshakes: tokio::sync::Semaphore::new(1),
                opened_once: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Accept local connections until the session is over.
    pub async fn serve(self) -> Result<End> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let expiry = tokio::time::sleep(std::time::Duration::from_millis(
            self.shared.exp_ms.saturating_sub(now),
        ));
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                _ = &mut expiry => return Ok(End::Expired),
                _ = self.shared.changed.notified() => {
                    if let Some(end) = self.shared.ended.lock().await.clone() {
                        return Ok(end);
                    }
                    let s = &self.shared;
                    if s.limit >= 0 && i64::from(s.made.load(Ordering::SeqCst)) >= s.limit
                        && s.open.load(Ordering::SeqCst) == 0 {
                        return Ok(End::Used);
                    }
                }
                accepted = self.listener.accept() => {
                    let (socket, _) = accepted.context("accepting a local connection")?;
                    let shared = self.shared.clone();
                    tokio::spawn(async move { shared.carry(socket).await });
                }
            }
        }
    }
}

impl Shared {
    /// One local connection: TLS to the gateway, the hello, its answer, then both ways.
    async fn carry(self: Arc<Self>, mut local: TcpStream) {
        let _ = local.set_nodelay(true);
        // A gateway that stalls the handshake does not hold the proxy's one turn for ever.
        let opened = tokio::time::timeout(HANDSHAKE_WITHIN, self.open_remote()).await;
        let opened = opened.unwrap_or_else(|_| {
            Err(Refusal::Other(anyhow!(
                "the gateway at {} did not answer within {}s",
                self.endpoint,
                HANDSHAKE_WITHIN.as_secs()
            )))
        });
        match opened {
            Ok(mut remote) => {
                self.made.fetch_add(1, Ordering::SeqCst);
                self.open.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
            Err(Refusal::Session(reason, msg)) => {
                note(&format!("wgctl: connection refused: {msg}"));
                // What no later connection can get past ends the proxy; a full connection
                // limit does when this proxy has nothing open either.
                let over = matches!(
                    reason.as_str(),
                    "session_ended"
                        | "session_ending"
                        | "forged_token"
                        | "expired_token"
                        | "malformed_token"
                        | "foreign_token"
                        | "not_authorized"
                ) || (reason == "connection_limit"
                    && self.open.load(Ordering::SeqCst) == 0);
                if over {
                    *self.ended.lock().await = Some(End::Ended(msg));
                }
            }
            Err(Refusal::Other(e)) => note(&format!("wgctl: connection failed: {e:#}")),
        }
        self.changed.notify_one();
    }

    async fn open_remote(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Refusal> {
        let _turn = self
            .handshakes
            .acquire()
            .await
            .map_err(|e| Refusal::Other(anyhow!("the proxy is stopping: {e}")))?;
        let tcp = TcpStream::connect(&self.endpoint).await.map_err(|e| {
            Refusal::Other(anyhow!(
                "cannot reach the gateway's TCP listener at {}: {e}",
                self.endpoint
            ))
        })?;
        let _ = tcp.set_nodelay(true);
        let mut tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                Refusal::Other(anyhow!(
                    "TLS with the gateway at {} failed: {e}",
                    self.endpoint
                ))
            })?;
        let io = |e: std::io::Error| {
            Refusal::Other(anyhow!(
                "the gateway at {} closed the connection: {e}",
                self.endpoint
            ))
        };
        tls.write_all(&self.hello).await.map_err(io)?;
        tls.flush().await.map_err(io)?;
        let mut line = Vec::new();
        loop {
            let b = tls.read_u8().await.map_err(io)?;
            if b == b'\n' {
                break;
            }
            if line.len() > 64 * 1024 {
                return Err(Refusal::Other(anyhow!("the gateway's answer is too long")));
            }
            line.push(b);
        }
        let reply: api::TcpReply = serde_json::from_slice(&line).map_err(|e| {
            Refusal::Other(anyhow!("the gateway's answer is not one wgctl reads: {e}"))
        })?;
        match reply.ok {
            true => {
                if !self.opened_once.swap(true, Ordering::SeqCst) {
                    self.handshakes.add_permits(HANDSHAKES - 1);
                }
                Ok(tls)
            }
            false => Err(Refusal::Session(
                api::text::inert(reply.reason.as_deref().unwrap_or(""), api::text::MAX_NAME)
                    .into_owned(),
                api::text::inert(
                    reply.error.as_deref().unwrap_or("refused"),
                    api::text::MAX_TEXT,
                )
                .into_owned(),
            )),
        }
    }
}

enum Refusal {
    /// The gateway refused: its reason for programs, its message for people.
    Session(String, String),
    Other(anyhow::Error),
}
