//! Gateway-to-gateway requests, signed with the cluster's shared key.
//!
//! `wardengate cluster init` writes a random 256-bit key (hex, 0600) that every gateway of the
//! cluster holds in its data directory (or in `WARDENGATE_CLUSTER_KEY`). A request from a peer
//! carries the sender's name, the time, a random nonce and an HMAC-SHA256 (ring) over the
//! method, the path, those three and the body's SHA-256. The receiver accepts it only when the
//! MAC verifies (constant time), the time is within [`SKEW`] of its own, and the nonce was not
//! seen before (replays are refused). Without a key the internal endpoints refuse everything:
//! they are never an open port.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use ring::hmac;
use sha2::{Digest, Sha256};

pub const PEER: &str = "x-wardengate-peer";
pub const TIME: &str = "x-wardengate-time";
pub const NONCE: &str = "x-wardengate-nonce";
pub const SIGNATURE: &str = "x-wardengate-signature";

/// How far a peer's clock may be from ours.
pub const SKEW_MS: u64 = 30_000;
/// Most nonces remembered (a peer sends a few per operation).
const MAX_NONCES: usize = 100_000;

/// The cluster's shared key.
pub struct ClusterKey(hmac::Key);

fn parse(hex_text: &str, from: &str) -> Result<ClusterKey> {
    let bytes = hex::decode(hex_text.trim())
        .map_err(|e| anyhow!("the cluster key in {from} is not hex: {e}"))?;
    if bytes.len() != 32 {
        return Err(anyhow!(
            "the cluster key in {from} has {} bytes; it must have 32 (made by `wardengate cluster init`)",
            bytes.len()
        ));
    }
    Ok(ClusterKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
}

impl ClusterKey {
    /// The key from `WARDENGATE_CLUSTER_KEY` or `path`; `None` when neither holds one.
    pub fn load(path: &Path) -> Result<Option<ClusterKey>> {
        if let Ok(k) = std::env::var("WARDENGATE_CLUSTER_KEY") {
            if !k.trim().is_empty() {
                return parse(&k, "WARDENGATE_CLUSTER_KEY").map(Some);
            }
        }
        match std::fs::read_to_string(path) {
            Ok(text) => parse(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read the cluster key {}", path.display()))
            }
        }
    }

    /// Write a new key to `path` (0600) unless one is there; whether it wrote one.
    pub fn create(path: &Path) -> Result<bool> {
        if path.exists() {
            Self::load(path)?;
            return Ok(false);
        }
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)
            .map_err(|e| anyhow!("no randomness for the cluster key: {e}"))?;
        crate::util::write_private(path, format!("{}\n", hex::encode(key)).as_bytes())?;
        Ok(true)
    }

    fn message(
        method: &str,
        path: &str,
        peer: &str,
        time: &str,
        nonce: &str,
        body: &[u8],
    ) -> Vec<u8> {
        let digest = hex::encode(Sha256::digest(body));
        format!("{method}\n{path}\n{peer}\n{time}\n{nonce}\n{digest}").into_bytes()
    }

    /// The headers of a signed request from `peer`.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        peer: &str,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>> {
        let time = wardengate_protocols::session::now_ms().to_string();
        let nonce = crate::util::new_token()?;
        let tag = hmac::sign(
            &self.0,
            &Self::message(method, path, peer, &time, &nonce, body),
        );
        Ok(vec![
            (PEER, peer.to_string()),
            (TIME, time),
            (NONCE, nonce),
            (SIGNATURE, hex::encode(tag.as_ref())),
        ])
    }

    /// Check a request's signature, time and nonce; the peer's name when all hold, else why not
    /// (for the audit: the peer itself is only told no).
    pub fn verify(
        &self,
        seen: &Nonces,
        method: &str,
        path: &str,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<String, &'static str> {
        let (Some(peer), Some(time), Some(nonce), Some(sig)) =
            (header(PEER), header(TIME), header(NONCE), header(SIGNATURE))
        else {
            return Err("unsigned");
        };
        let sig = hex::decode(sig).map_err(|_| "malformed signature")?;
        hmac::verify(
            &self.0,
            &Self::message(method, path, &peer, &time, &nonce, body),
            &sig,
        )
        .map_err(|_| "bad signature")?;
        let at: u64 = time.parse().map_err(|_| "malformed time")?;
        let now = wardengate_protocols::session::now_ms();
        if at.abs_diff(now) > SKEW_MS {
            return Err("stale or future time");
        }
        if !seen.first_use(&nonce, now) {
            return Err("replayed nonce");
        }
        Ok(peer)
    }
}

/// Nonces seen within the skew window.
#[derive(Default)]
pub struct Nonces(Mutex<HashMap<String, u64>>);

impl Nonces {
    fn first_use(&self, nonce: &str, now: u64) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_NONCES {
            m.retain(|_, at| now.saturating_sub(*at) <= 2 * SKEW_MS);
            if m.len() >= MAX_NONCES {
                return false;
            }
        }
        m.insert(nonce.to_string(), now).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (tempfile::TempDir, ClusterKey) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.key");
        assert!(ClusterKey::create(&path).expect("create"));
        assert!(
            !ClusterKey::create(&path).expect("kept"),
            "a second init keeps the key"
        );
        let k = ClusterKey::load(&path).expect("load").expect("key");
        (dir, k)
    }

    #[test]
    fn a_signed_request_verifies_once_and_any_change_is_refused() {
        let (_d, k) = key();
        let seen = Nonces::default();
        let body = br#"{"reason":"r"}"#;
        let h = k
            .sign("POST", "/internal/v1/x", "gw-2", body)
            .expect("sign");
        fn get(h: &[(&'static str, String)]) -> impl Fn(&str) -> Option<String> {
            let h = h.to_vec();
            move |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
        }
        assert_eq!(
            k.verify(&seen, "POST", "/internal/v1/x", get(&h), body),
            Ok("gw-2".into())
        );
        assert_eq!(
            k.verify(&seen, "POST", "/internal/v1/x", get(&h), body),
            Err("replayed nonce")
        );
        let h = k
            .sign("POST", "/internal/v1/x", "gw-2", body)
            .expect("sign");
        assert_eq!(
            k.verify(&seen, "POST", "/internal/v1/y", get(&h), body),
            Err("bad signature")
        );
        assert_eq!(
            k.verify(&seen, "POST", "/internal/v1/x", get(&h), b"{}"),
            Err("bad signature")
        );
        let mut renamed = h.clone();
        renamed[0].1 = "gw-3".into();
        assert_eq!(
            k.verify(&seen, "POST", "/internal/v1/x", get(&renamed), body),
            Err("bad signature")
        );
        let (_d2, other) = key();
        assert_eq!(
            other.verify(&seen, "POST", "/internal/v1/x", get(&h), body),
            Err("bad signature")
        );
        assert_eq!(
            k.verify(&seen, "POST", "/internal/v1/x", |_| None, body),
            Err("unsigned")
        );
    }
}
