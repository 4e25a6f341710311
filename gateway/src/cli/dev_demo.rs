//! The dev mode's small pieces: the demo status page, and the demo people's keys, tokens and
//! passwords, made once in the dev directory.

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use wardengate_gateway::keys;

/// The demo status page: a web service on 127.0.0.1 that web-01.dev's users reach by port
/// forwarding (the example policy's `forward_to` names it). Its address, when on.
pub async fn status_page(
    port: u16,
    shutdown: CancellationToken,
) -> Result<Option<std::net::SocketAddr>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if port == 0 {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("cannot serve the demo status page on 127.0.0.1:{port} (--web-port)")
        })?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = shutdown.cancelled() => return,
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
                let body = "web-01.dev status: all systems nominal (reached through a Wardengate port forward)\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(Some(addr))
}

/// `NAME.token` in the dev directory (made once), and the sha256 the config holds.
pub fn user_token(dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    use sha2::Digest;
    let token = kept_secret(&dir.join(format!("{name}.token")), 64)?;
    Ok(hex::encode(sha2::Sha256::digest(token.as_bytes())))
}

/// A random secret of `len` hex digits kept in `file` (private), made on first use.
pub fn kept_secret(file: &std::path::Path, len: usize) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(file) {
        return Ok(s.trim().to_string());
    }
    let s = wardengate_gateway::util::new_token()?[..len].to_string();
    wardengate_gateway::util::write_private(file, format!("{s}\n").as_bytes())?;
    Ok(s)
}

/// `NAME_ed25519` in the dev directory (made once): the public key line.
pub fn user_key(dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(format!("{name}_ed25519"));
    if !path.exists() {
        keys::write_keypair(
            &path,
            &keys::generate_ed25519(&format!("{name}@wardengate-dev"))?,
        )?;
    }
    Ok(
        std::fs::read_to_string(dir.join(format!("{name}_ed25519.pub")))?
            .trim()
            .to_string(),
    )
}
