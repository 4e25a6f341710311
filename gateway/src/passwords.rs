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

/// Most argon2 memory a stored hash may ask for (256 MiB); a hash asking more is refused rather
/// than allocated.
const MAX_BLOCKS: usize = 256 * 1024;

/// A password checker that keeps its argon2 memory between checks: each checking thread owns
/// one, so a check allocates nothing and the gateway's memory stays at (threads × the largest
/// `m_cost` in use), whatever the rate of attempts. (`verify` allocates 19 MiB per check, and
/// the allocator keeps much of it per thread.)
#[derive(Default)]
pub struct Verifier {
    blocks: Vec<argon2::Block>,
}

impl Verifier {
    /// Check `password` against the PHC string `phc`.
    pub fn verify(&mut self, phc: &str, password: &str) -> bool {
        use argon2::{Algorithm, Argon2, Params, Version};
        let Ok(h) = PasswordHash::new(phc) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(h.algorithm.as_str()) else {
            return false;
        };
        let version = match h.version.map(Version::try_from) {
            None => Version::default(),
            Some(Ok(v)) => v,
            Some(Err(_)) => return false,
        };
        let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&h), &h.salt, &h.hash)
        else {
            return false;
        };
        let n = params.block_count();
        if n > MAX_BLOCKS {
            return false;
        }
        if self.blocks.len() < n {
            self.blocks.resize(n, argon2::Block::new());
        }
        let mut out = vec![0u8; expected.len()];
        let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut self.blocks[..n],
        );
        use subtle::ConstantTimeEq;
        hashed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
    }
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
    fn the_reusing_verifier_agrees_with_argon2() {
        let h = super::hash("correct horse").expect("hash");
        let mut v = super::Verifier::default();
        assert!(v.verify(&h, "correct horse"));
        assert!(!v.verify(&h, "wrong"));
        assert!(!v.verify("not a hash", "x"));
        // Other parameters and algorithms, as another tool may have written them.
        use argon2::password_hash::PasswordHasher;
        for (alg, m) in [
            (argon2::Algorithm::Argon2i, 4096),
            (argon2::Algorithm::Argon2id, 8192),
        ] {
            let a = argon2::Argon2::new(
                alg,
                argon2::Version::V0x13,
                argon2::Params::new(m, 2, 1, None).expect("params"),
            );
            let other = a.hash_password(b"pw").expect("hash").to_string();
            assert!(v.verify(&other, "pw"), "{other}");
            assert!(!v.verify(&other, "px"));
        }
        assert!(
            v.verify(&h, "correct horse"),
            "memory reused after a smaller hash"
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
