//! The console's cookie: a random secret sealed with XChaCha20-Poly1305 under `console.key`
//! (data directory, 0600), set `HttpOnly; SameSite=Strict` (and `Secure` behind TLS). Only the
//! gateway can make or open one; what it holds is half of a console session
//! (`identity/console.rs` keeps the other half in the store).

use std::path::Path;

use anyhow::{anyhow, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The cookie's name.
pub const COOKIE: &str = "wg_console";

/// The key console cookies are sealed with.
pub struct CookieKey(XChaCha20Poly1305);

impl CookieKey {
    /// A key for this process only (tests, and until the server loads its file).
    pub fn ephemeral() -> CookieKey {
        let mut k = [0u8; 32];
        // No entropy at all: the cookie then cannot be trusted, and nothing decrypts with a key
        // nobody else has either way.
        let _ = getrandom::getrandom(&mut k);
        CookieKey(XChaCha20Poly1305::new(&k.into()))
    }

    /// The key in `path` (64 hex digits), made (mode 0600) when it is not there: restarts keep
    /// people signed in.
    pub fn open(path: &Path) -> Result<CookieKey> {
        Ok(CookieKey(XChaCha20Poly1305::new(
            &crate::util::key_file(path, "console cookie key")?.into(),
        )))
    }

    /// The cookie's value for `secret`.
    pub fn seal(&self, secret: &[u8; 32]) -> Result<String> {
        let mut nonce = [0u8; 24];
        getrandom::getrandom(&mut nonce).map_err(|e| anyhow!("no randomness: {e}"))?;
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: COOKIE.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("cannot seal the console cookie"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The secret in a cookie's value; `None` for anything this gateway did not seal.
    pub fn open_value(&self, value: &str) -> Option<[u8; 32]> {
        if value.len() > 256 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value.trim()).ok()?;
        if raw.len() < 24 {
            return None;
        }
        let (nonce, sealed) = raw.split_at(24);
        let plain = self
            .0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: COOKIE.as_bytes(),
                },
            )
            .ok()?;
        plain.try_into().ok()
    }
}

/// The `Set-Cookie` value that gives the browser its half (`secure` behind TLS).
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that takes it away.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The console cookie's value among a request's `Cookie` headers.
pub fn cookie_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_opens_only_with_its_key_and_unchanged() {
        let k = CookieKey::ephemeral();
        let secret = [7u8; 32];
        let v = k.seal(&secret).expect("seal");
        assert_eq!(k.open_value(&v), Some(secret));
        assert_ne!(k.seal(&secret).expect("seal"), v, "a fresh nonce each time");
        assert_eq!(CookieKey::ephemeral().open_value(&v), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&v).expect("b64");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(k.open_value(&URL_SAFE_NO_PAD.encode(raw)), None);
        assert_eq!(k.open_value("not-a-cookie"), None);
        assert_eq!(k.open_value(&"A".repeat(4000)), None);
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_strictly() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; wg_console=xyz; b=2".parse().expect("h"));
        assert_eq!(cookie_of(&h).as_deref(), Some("xyz"));
        let set = set_cookie("v", true);
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set_cookie("v", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
