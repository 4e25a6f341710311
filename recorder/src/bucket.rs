//! Recordings in an S3-compatible bucket. `s3://bucket/prefix` holds one "directory" per
//! session, the same files as on disk: `prefix/SESSION/00000000.chunk`, …, `recording.json` and,
//! last, `seal.json`. A recording is read or verified by fetching those objects into a local
//! directory and using [`crate::read`] / [`crate::verify`] on it: one reader for both places.
//!
//! The client is `object_store` (path-style requests, so any S3-compatible server works);
//! credentials come from the options, else from the usual `AWS_*` variables.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

use crate::{Error, Result};

/// Where the bucket is and how to sign requests to it.
#[derive(Clone, Default)]
pub struct BucketOptions {
    /// `http://127.0.0.1:9000` for a local S3-compatible server (plain http is allowed when the
    /// endpoint says so); none for AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow a plain `http://` endpoint that is not on this machine (a private network the
    /// operator trusts). Loopback endpoints may always be plain http.
    pub allow_http: bool,
}

impl std::fmt::Debug for BucketOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// A bucket (and prefix) holding recordings.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    url: String,
    prefix: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url)
    }
}

/// The largest object read back (a chunk holds at most `chunk_bytes` of events, compressed).
const MAX_OBJECT: u64 = 256 << 20;

fn err(what: impl std::fmt::Display) -> Error {
    Error::Format(what.to_string())
}

/// Split `s3://bucket/some/prefix` into the bucket name and the prefix (without slashes at
/// either end; empty when the recordings sit at the top of the bucket).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        err(format!(
            "'{url}' is not an object-store URL (expected s3://bucket/prefix)"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
        return Err(err(format!(
            "'{bucket}' is not a bucket name (3 to 63 of a-z, 0-9, '-' and '.')"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if prefix
        .split('/')
        .any(|seg| seg == "." || seg == ".." || (seg.is_empty() && !prefix.is_empty()))
    {
        return Err(err(format!(
            "'{url}': the prefix has an empty, '.' or '..' part"
        )));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Whether an `http://` endpoint is on this machine (`localhost`, 127.0.0.0/8, `[::1]`).
fn loopback(endpoint: &str) -> bool {
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    // The authority ends at the first of these (so `http://remote#@127.0.0.1` is `remote`).
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A session id as it names a recording: letters, digits, `-` and `_` only (so it can never
/// leave its prefix).
pub fn valid_session(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Bucket {
    /// A client for `url` (`s3://bucket/prefix`). Nothing is contacted yet.
    pub fn open(url: &str, o: &BucketOptions) -> Result<Bucket> {
        let (bucket, prefix) = parse_url(url)?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            // A failed request is retried a little, then reported: the uploader keeps the
            // chunk in the spool and tries again, rather than one call hanging for minutes.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            );
        if let Some(e) = &o.endpoint {
            let plain = e.starts_with("http://");
            if plain && !o.allow_http && !loopback(e) {
                return Err(err(format!(
                    "the object store endpoint {e} is plain http and not on this machine: \
                     recordings would cross the network unencrypted. Use https, or allow it \
                     explicitly (allow_http = true) on a network you trust"
                )));
            }
            b = b.with_endpoint(e).with_allow_http(plain);
        }
        if let Some(r) = &o.region {
            b = b.with_region(r);
        }
        if let Some(k) = &o.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &o.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let store = b
            .build()
            .map_err(|e| err(format!("object store {url}: {e}")))?;
        Ok(Bucket {
            store: Arc::new(store),
            url: url.trim_end_matches('/').to_string(),
            prefix,
        })
    }

    /// The URL it was opened with (`s3://bucket/prefix`), for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, session: &str, name: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(format!("{session}/{name}"))
        } else {
            Key::from(format!("{}/{session}/{name}", self.prefix))
        }
    }

    fn session_key(&self, session: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(session)
        } else {
            Key::from(format!("{}/{session}", self.prefix))
        }
    }

    fn check(session: &str) -> Result<()> {
        if valid_session(session) {
            Ok(())
        } else {
            Err(err(format!("'{session}' is not a recording id")))
        }
    }

    /// Store one file of a session's recording.
    pub async fn put(&self, session: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        Self::check(session)?;
        self.store
            .put(&self.key(session, name), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{}/{session}/{name}: {e}", self.url)))
    }

    /// One file of a session's recording; `None` when it is not there.
    pub async fn get(&self, session: &str, name: &str) -> Result<Option<Vec<u8>>> {
        Self::check(session)?;
        let key = self.key(session, name);
        match self.store.get(&key).await {
            // A recording's files are a chunk (compressed, a few MiB at most) or small JSON:
            // anything larger is not one of ours, and is not read into memory.
            Ok(r) if r.meta.size > MAX_OBJECT => Err(Error::Oversize(format!(
                "{}/{session}/{name} is {} bytes, more than a recording file can be",
                self.url, r.meta.size
            ))),
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| err(format!("{}/{session}/{name}: {e}", self.url))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(format!("{}/{session}/{name}: {e}", self.url))),
        }
    }

    /// The file names stored for a session (empty when there is no such recording).
    pub async fn names(&self, session: &str) -> Result<Vec<String>> {
        Self::check(session)?;
        let base = self.session_key(session);
        let list = self
            .store
            .list_with_delimiter(Some(&base))
            .await
            .map_err(|e| err(format!("{}/{session}: {e}", self.url)))?;
        let mut names: Vec<String> = list
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Fetch every file of a session's recording into `dir` (created); the number of files.
    /// Only names a recording uses are written, so a hostile bucket cannot write elsewhere.
    pub async fn download(&self, session: &str, dir: &Path) -> Result<usize> {
        let names = self.names(session).await?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut n = 0;
        for name in names.iter().filter(|n| recording_file(n)) {
            if let Some(bytes) = self.get(session, name).await? {
                let path = dir.join(name);
                std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The sessions that have a recording in the bucket.
    pub async fn sessions(&self) -> Result<Vec<String>> {
        let base = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
        let list = self
            .store
            .list_with_delimiter(base.as_ref())
            .await
            .map_err(|e| err(format!("{}: {e}", self.url)))?;
        Ok(list
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|s| valid_session(s))
            .collect())
    }

    /// Remove one file of a session's recording.
    pub async fn delete(&self, session: &str, name: &str) -> Result<()> {
        Self::check(session)?;
        self.store
            .delete(&self.key(session, name))
            .await
            .map_err(|e| err(format!("{}/{session}/{name}: {e}", self.url)))
    }

    /// Remove every object of a session's recording (tests and retention).
    pub async fn remove(&self, session: &str) -> Result<()> {
        for name in self.names(session).await? {
            self.delete(session, &name).await?;
        }
        Ok(())
    }

    /// Whether the bucket answers (a listing of the prefix).
    pub async fn reachable(&self) -> Result<()> {
        let base = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
        self.store
            .list(base.as_ref())
            .try_next()
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{}: {e}", self.url)))
    }
}

/// The names a recording directory holds that belong in the bucket.
pub fn recording_file(name: &str) -> bool {
    crate::format::chunk_index(name).is_some()
        || name == crate::format::SEAL_FILE
        || name == crate::format::META_FILE
}

/// `s3://bucket/prefix/SESSION` → the bucket's URL and the session id.
pub fn split_session_url(url: &str) -> Result<(String, String)> {
    let trimmed = url.trim_end_matches('/');
    let (base, session) = trimmed
        .rsplit_once('/')
        .filter(|(b, _)| b.len() > "s3://".len())
        .ok_or_else(|| {
            err(format!(
                "'{url}' does not name a recording (expected s3://bucket/prefix/SESSION_ID)"
            ))
        })?;
    parse_url(base)?;
    if !valid_session(session) {
        return Err(err(format!("'{session}' is not a recording id")));
    }
    Ok((base.to_string(), session.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_url("s3://recs/gw/prod/").unwrap(),
            ("recs".to_string(), "gw/prod".to_string())
        );
        assert_eq!(
            parse_url("s3://recs").unwrap(),
            ("recs".into(), String::new())
        );
        assert!(parse_url("https://recs/x")
            .unwrap_err()
            .to_string()
            .contains("s3://"));
        assert!(parse_url("s3://A_B/x")
            .unwrap_err()
            .to_string()
            .contains("bucket name"));
        let (b, s) = split_session_url("s3://recs/prod/s-123_ab").unwrap();
        assert_eq!((b.as_str(), s.as_str()), ("s3://recs/prod", "s-123_ab"));
        assert!(split_session_url("s3://recs/prod/../x").is_err());
        assert!(split_session_url("s3://recs").is_err());
        assert!(recording_file("00000003.chunk") && recording_file("seal.json"));
        assert!(!recording_file("../seal.json") && !recording_file("open.wal"));
    }

    #[test]
    fn plain_http_only_on_this_machine_unless_allowed() {
        for local in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000",
        ] {
            assert!(loopback(local), "{local}");
        }
        assert!(!loopback("http://minio.internal:9000"));
        assert!(!loopback("http://127.0.0.1.evil.example:9000"));
        for trick in [
            "http://remote#@127.0.0.1",
            "http://remote?@127.0.0.1",
            "http://remote\\@127.0.0.1",
        ] {
            assert!(!loopback(trick), "{trick}");
        }
        let far = BucketOptions {
            endpoint: Some("http://minio.internal:9000".into()),
            ..BucketOptions::default()
        };
        let refused = Bucket::open("s3://recs/p", &far).unwrap_err().to_string();
        assert!(refused.contains("plain http"), "{refused}");
        let allowed = BucketOptions {
            allow_http: true,
            ..far
        };
        assert!(Bucket::open("s3://recs/p", &allowed).is_ok());
    }
}
