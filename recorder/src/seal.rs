//! The seal: what a closed recording contains, signed with the gateway's Ed25519 recording key.

use ed25519_dalek::{Signature, Signer, Verifier};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SealStatus {
    /// Closed by the gateway on a normal path (exit, terminate, failure, shutdown).
    Complete,
    /// Sealed after a crash: everything up to the last whole chunk.
    Truncated,
}

impl SealStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SealStatus::Complete => "complete",
            SealStatus::Truncated => "truncated",
        }
    }
}

/// `seal.json`. The signature covers [`Seal::signed_message`], not the JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub format: u16,
    pub session_id: String,
    pub status: SealStatus,
    pub chunks: u64,
    pub events: u64,
    /// Total uncompressed event bytes.
    pub raw_bytes: u64,
    /// sha256 (hex) of the last chunk file; empty when there is no chunk.
    pub final_sha256: String,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// Time of the last event, in microseconds from the start.
    pub duration_us: u64,
    /// Hex of the Ed25519 public key that signed.
    pub public_key: String,
    /// Hex of the Ed25519 signature.
    pub signature: String,
}

impl Seal {
    /// The exact bytes that are signed: a versioned, newline-separated list of the fields.
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "wardengate-recording-seal-v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.session_id,
            self.status.as_str(),
            self.chunks,
            self.events,
            self.raw_bytes,
            self.final_sha256,
            self.started_at_ms,
            self.ended_at_ms,
            self.duration_us,
        )
        .into_bytes()
    }

    pub(crate) fn sign(&mut self, key: &SigningKey) {
        self.public_key = hex::encode(key.verifying_key().as_bytes());
        self.signature = hex::encode(key.sign(&self.signed_message()).to_bytes());
    }

    /// Check the signature with `key` (the auditor's copy of the gateway's public key).
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<()> {
        let sig = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| Error::Format("seal signature is not 64 bytes of hex".into()))?;
        key.verify(&self.signed_message(), &Signature::from_bytes(&sig))
            .map_err(|_| Error::Format("seal signature does not verify".into()))
    }
}

/// A new recording key from OS randomness.
pub fn generate_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom_fill(&mut seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    let mut f =
        std::fs::File::open("/dev/urandom").map_err(|e| Error::io("/dev/urandom".as_ref(), e))?;
    f.read_exact(buf)
        .map_err(|e| Error::io("/dev/urandom".as_ref(), e))
}

pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Parse a public key from hex (as `wgctl recording pubkey` prints it).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey> {
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| Error::Format("a recording public key is 64 hex characters".into()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| Error::Format("not a valid Ed25519 public key".into()))
}
