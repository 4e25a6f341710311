//! SCRAM-SHA-256 (RFC 5802, RFC 7677) on the gateway's side, as PostgreSQL does it.
//!
//! Users are verified against a PostgreSQL-format verifier
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), which — unlike the salted
//! password some libraries keep — cannot be used to log in if it leaks. Verifiers are made by
//! `postgres-protocol`; the primitives (HMAC, SHA-256) are ring's, the comparison `subtle`'s;
//! this module only composes them as the RFC specifies.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, rand::SecureRandom};
use subtle::ConstantTimeEq;

pub const MECHANISM: &str = "SCRAM-SHA-256";
const ITERATIONS: u32 = 4096;

/// A stored SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(SCRAM-SHA-256, <redacted>)")
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&k, data).as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

fn key32(b64: &str) -> Option<[u8; 32]> {
    B64.decode(b64).ok()?.try_into().ok()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG failing is unrecoverable for any security software; fall back to zeros
    // only in the salt-or-nonce position where the proof still has to match a real verifier.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

impl Verifier {
    /// A verifier with this one's salt and iterations that no password matches: what a
    /// throttled attempt for a known user runs against, so the salt it sees is the user's own
    /// and the exchange looks like any other.
    pub fn decoy(&self) -> Verifier {
        Verifier {
            iterations: self.iterations,
            salt: self.salt.clone(),
            stored_key: random_bytes::<32>(),
            server_key: random_bytes::<32>(),
        }
    }

    /// A new verifier for `password` with a random salt, in `pg_authid` form (what
    /// `wardengate hash-password` prints): `postgres-protocol`'s, as PostgreSQL's own clients
    /// compute it (SASLprep, 4096 iterations).
    pub fn generate(password: &str) -> String {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }

    /// Parse `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>` (PostgreSQL's `pg_authid` form).
    pub fn parse(s: &str) -> Result<Verifier, String> {
        let bad = |what: &str| {
            format!("not a SCRAM-SHA-256 verifier ({what}); expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, as `wardengate hash-password` prints")
        };
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or_else(|| bad("prefix"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| bad("no keys"))?;
        let (iter, salt) = params.split_once(':').ok_or_else(|| bad("no salt"))?;
        let (stored, server) = keys.split_once(':').ok_or_else(|| bad("no server key"))?;
        Ok(Verifier {
            iterations: iter
                .parse()
                .ok()
                .filter(|i| *i >= 1)
                .ok_or_else(|| bad("iterations"))?,
            salt: B64.decode(salt).map_err(|_| bad("salt"))?,
            stored_key: key32(stored).ok_or_else(|| bad("StoredKey"))?,
            server_key: key32(server).ok_or_else(|| bad("ServerKey"))?,
        })
    }

    /// A verifier for a user that does not exist: the exchange runs as for a real user (with a
    /// salt that is stable per name, as PostgreSQL's mock authentication does) and always fails,
    /// so the answer does not reveal which names exist.
    pub fn mock(user: &str) -> Verifier {
        static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
        let secret = SECRET.get_or_init(random_bytes::<32>);
        let salt = hmac_sha256(secret, user.as_bytes());
        Verifier {
            iterations: ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: random_bytes::<32>(),
            server_key: random_bytes::<32>(),
        }
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// The server's half of one exchange.
pub struct Exchange {
    verifier: Verifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

fn attr(msg: &str, key: char) -> Option<&str> {
    msg.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl Exchange {
    /// Answer the client-first-message with the server-first-message.
    pub fn start(verifier: Verifier, client_first: &[u8]) -> Result<(Exchange, String), String> {
        let msg = std::str::from_utf8(client_first).map_err(|_| "SCRAM message is not UTF-8")?;
        // gs2-header: channel-binding flag, optional authzid, then the bare message.
        let mut parts = msg.splitn(3, ',');
        let cb = parts.next().unwrap_or_default();
        let authzid = parts.next().ok_or("malformed SCRAM client-first-message")?;
        let bare = parts.next().ok_or("malformed SCRAM client-first-message")?;
        if !authzid.is_empty() {
            return Err("SCRAM authorization identities are not supported".into());
        }
        if cb.starts_with("p=") {
            return Err("SCRAM channel binding is not offered; use SCRAM-SHA-256".into());
        }
        if cb != "n" && cb != "y" {
            return Err("malformed SCRAM channel-binding flag".into());
        }
        let client_nonce = attr(bare, 'r')
            .filter(|n| !n.is_empty())
            .ok_or("SCRAM client-first-message has no nonce")?;
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes::<18>()));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            Exchange {
                verifier,
                gs2_header: format!("{cb},{authzid},"),
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Check the client-final-message; `Ok` carries the server-final-message.
    pub fn finish(&self, client_final: &[u8]) -> Result<String, String> {
        let msg = std::str::from_utf8(client_final).map_err(|_| "SCRAM message is not UTF-8")?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or("SCRAM client-final-message has no proof")?;
        if attr(without_proof, 'c') != Some(B64.encode(&self.gs2_header).as_str()) {
            return Err("SCRAM channel binding does not match".into());
        }
        if attr(without_proof, 'r') != Some(self.nonce.as_str()) {
            return Err("SCRAM nonce does not match".into());
        }
        let proof = key32(proof).ok_or("malformed SCRAM proof")?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ signature[i];
        }
        // Compared in constant time.
        let ok: bool = sha256(&client_key).ct_eq(&self.verifier.stored_key).into();
        if !ok {
            return Err("wrong password".into());
        }
        let server_sig = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// The exchange against tokio-postgres's client implementation.
    fn run(password_stored: &str, password_given: &str) -> Result<(), String> {
        let v = Verifier::parse(&Verifier::generate(password_stored))?;
        let mut client = ScramSha256::new(password_given.as_bytes(), ChannelBinding::unsupported());
        let (ex, server_first) = Exchange::start(v, client.message())?;
        client
            .update(server_first.as_bytes())
            .map_err(|e| e.to_string())?;
        let server_final = ex.finish(client.message())?;
        client
            .finish(server_final.as_bytes())
            .map_err(|e| format!("client rejected the server signature: {e}"))
    }

    #[test]
    fn right_and_wrong_passwords() {
        run("correct horse", "correct horse").expect("right password");
        assert_eq!(run("correct horse", "wrong").unwrap_err(), "wrong password");
    }

    #[test]
    fn verifier_round_trips_and_rejects_garbage() {
        let v = Verifier::parse(&Verifier::generate("pw")).expect("parse");
        assert_eq!(Verifier::parse(&v.to_string()).expect("parse"), v);
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$x:AAAA$AA:AA",
            "SCRAM-SHA-256$4096:AAAA$AA:AA",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mock_users_always_fail_with_a_stable_salt() {
        assert_eq!(Verifier::mock("ghost").salt, Verifier::mock("ghost").salt);
        let mut client = ScramSha256::new(b"anything", ChannelBinding::unsupported());
        let (ex, first) =
            Exchange::start(Verifier::mock("ghost"), client.message()).expect("start");
        client.update(first.as_bytes()).expect("update");
        assert!(ex.finish(client.message()).is_err());
    }

    #[test]
    fn malformed_messages_are_errors() {
        let v = Verifier::parse(&Verifier::generate("pw")).expect("parse");
        for bad in [
            &b"\xff"[..],
            b"",
            b"n,,",
            b"x,,n=,r=abc",
            b"p=tls-server-end-point,,n=,r=a",
            b"n,a=bob,n=,r=abc",
        ] {
            assert!(Exchange::start(v.clone(), bad).is_err(), "{bad:?}");
        }
        let (ex, _) = Exchange::start(v, b"n,,n=,r=abc").expect("start");
        for bad in [&b"c=biws,r=abc"[..], b"c=biws,r=wrong,p=AAAA", b"\xff"] {
            assert!(ex.finish(bad).is_err(), "{bad:?}");
        }
    }
}
