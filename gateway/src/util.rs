//! Small helpers shared by the daemon's modules: ids, time formatting, private files.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// A random id with a type prefix (`sess_`, `evt_`, ...).
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 10];
    // getrandom failing means the OS has no entropy source; ids then fall back to time+counter.
    if getrandom::getrandom(&mut b).is_err() {
        let t = wardengate_protocols::session::now_ms().to_be_bytes();
        b[..8].copy_from_slice(&t);
    }
    format!("{prefix}{}", hex::encode(b))
}

/// A random secret token (hex, 256 bits).
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(b))
}

/// RFC 3339 UTC from Unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A 32-byte key kept in `path` as 64 hex digits; made (mode 0600) when the file is not there.
pub fn key_file(path: &Path, what: &str) -> Result<[u8; 32]> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {what} file {}", path.display()))?;
        return parse_key(&text, &path.display().to_string(), what);
    }
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| anyhow!("no randomness for the {what}: {e}"))?;
    write_private(path, format!("{}\n", hex::encode(key)).as_bytes())?;
    tracing::warn!(file = %path.display(), "generated a new {what}");
    Ok(key)
}

/// 64 hex digits as a key; the error names where they came from.
pub fn parse_key(hex_text: &str, origin: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(hex_text.trim())
        .map_err(|e| anyhow!("{origin}: the {what} must be 64 hex characters: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow!("{origin}: the {what} must be 32 bytes, found {}", b.len()))
}

/// Write a file readable only by its owner (keys, tokens).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Insert into a map of things that expire (one-time links): the expired ones go first, and
/// when `max` are still waiting the one expiring soonest makes room.
pub fn insert_expiring<K, V>(
    map: &mut std::collections::HashMap<K, V>,
    key: K,
    value: V,
    max: usize,
    expires: impl Fn(&V) -> std::time::Instant,
) where
    K: std::hash::Hash + Eq + Clone,
{
    let now = std::time::Instant::now();
    map.retain(|_, v| expires(v) > now);
    if map.len() >= max {
        if let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| expires(v))
            .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
    map.insert(key, value);
}
