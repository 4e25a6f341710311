//! Password hashing for gateway users (argon2id, PHC strings).

use anyhow::{anyhow, Result};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

pub fn hash(password: &str) -> Result<String> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow!("cannot hash password: {e}"))?
        .to_string())
}

pub fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The password's NT hash (MD4 of its UTF-16LE encoding), as NTLM (RDP's NLA) needs it.
pub fn nt_hash(password: &str) -> [u8; 16] {
    use md4::Digest;
    let utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
    md4::Md4::digest(&utf16).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nt_hash_matches_windows() {
        // winpr-hash -u bob -p 'Secret1!' (FreeRDP's NTLM hashing tool) prints this.
        assert_eq!(
            hex::encode(super::nt_hash("Secret1!")),
            "2b0fd3faca9a8acd5fdfff6ecae2c207"
        );
    }

    #[test]
    fn hash_and_verify() {
        let h = super::hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(super::verify(&h, "correct horse"));
        assert!(!super::verify(&h, "wrong"));
        assert!(!super::verify("not a hash", "x"));
    }
}
