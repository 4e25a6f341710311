//! Authorization tokens: the claims (`wardengate_api::TokenClaims`, base64url JSON) and an
//! HMAC-SHA256 over them with a key this gateway process draws at start. A token is therefore
//! good only at the gateway that issued it, and only until it restarts (its TCP sessions end
//! with it anyway); the session it names must also still be live, and belong to the person
//! presenting it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::hmac;
use wardengate_api::{TokenClaims, TOKEN_PREFIX};

/// Longest token read (a real one is a few hundred bytes).
pub const MAX_TOKEN: usize = 4096;

/// The key tokens are signed with.
pub struct TokenKey(hmac::Key);

/// Why a token was refused, before the session it names is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Not a token at all (no prefix, not base64, not JSON, too long).
    Malformed,
    /// The signature does not match: altered, or issued by another gateway or before a restart.
    Forged,
    /// Past its expiration (unix ms).
    Expired(u64),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Malformed => f.write_str(
                "the authorization token is malformed (copy the whole Authorization Token that \
                 `wgctl target authorize` printed)",
            ),
            Bad::Forged => f.write_str(
                "the authorization token is not genuine: it was altered, or issued by another \
                 gateway or before this one restarted; authorize again",
            ),
            Bad::Expired(at) => write!(
                f,
                "the authorization token expired at {}; authorize again",
                crate::util::rfc3339(*at)
            ),
        }
    }
}

impl TokenKey {
    /// A new random key from the operating system.
    pub fn generate() -> anyhow::Result<TokenKey> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for the TCP token key: {e}"))?;
        Ok(TokenKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    pub fn sign(&self, claims: &TokenClaims) -> String {
        // Serialising a struct of strings and numbers cannot fail.
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = hmac::sign(&self.0, body.as_bytes());
        format!("{TOKEN_PREFIX}{body}.{}", B64.encode(tag.as_ref()))
    }

    /// The claims of a genuine, unexpired token.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<TokenClaims, Bad> {
        let token = token.trim();
        if token.len() > MAX_TOKEN {
            return Err(Bad::Malformed);
        }
        let body = token.strip_prefix(TOKEN_PREFIX).ok_or(Bad::Malformed)?;
        let (claims, tag) = body.split_once('.').ok_or(Bad::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| Bad::Malformed)?;
        hmac::verify(&self.0, claims.as_bytes(), &tag).map_err(|_| Bad::Forged)?;
        let raw = B64.decode(claims).map_err(|_| Bad::Malformed)?;
        let c: TokenClaims = serde_json::from_slice(&raw).map_err(|_| Bad::Malformed)?;
        if now_ms >= c.exp_ms {
            return Err(Bad::Expired(c.exp_ms));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            sid: "sess_1".into(),
            user: "alice".into(),
            target: "redis".into(),
            host_id: "h1".into(),
            exp_ms: 2_000,
            expiration: "1970-01-01T00:00:02Z".into(),
            endpoint: "127.0.0.1:9".into(),
            cert_sha256: "00".into(),
            connection_limit: 1,
        }
    }

    #[test]
    fn a_token_verifies_until_it_expires_and_not_when_altered() {
        let k = TokenKey::generate().unwrap();
        let t = k.sign(&claims());
        assert_eq!(k.verify(&t, 1_999), Ok(claims()));
        assert_eq!(k.verify(&t, 2_000), Err(Bad::Expired(2_000)));
        // Another user written into the claims, the signature kept.
        let mut other = claims();
        other.user = "mallory".into();
        let forged = k.sign(&other);
        let (body, _) = forged.split_once('.').unwrap();
        let (_, sig) = t.split_once('.').unwrap();
        assert_eq!(k.verify(&format!("{body}.{sig}"), 1), Err(Bad::Forged));
        // Another gateway's key.
        assert_eq!(
            TokenKey::generate().unwrap().verify(&t, 1),
            Err(Bad::Forged)
        );
        for junk in [
            "",
            "wgtcp_",
            "wgtcp_x.y",
            "token",
            &"a".repeat(MAX_TOKEN + 1),
        ] {
            assert_eq!(k.verify(junk, 1), Err(Bad::Malformed), "{junk}");
        }
        assert_eq!(wardengate_api::token_claims(&t), Some(claims()));
    }
}
