//! A throwaway S3-compatible object store on a loopback port: `s3s-fs` (the s3s project's
//! filesystem-backed S3 server, a real implementation of the S3 REST API with SigV4
//! authentication). `scripts/test` and `scripts/dev --cluster` install it with
//! `cargo install s3s-fs --features binary` into `~/.cache/wardengate/tools`.
//!
//! Buckets are directories under its root, objects files under them: tests read the root to
//! see what was uploaded, and stop and restart the server on the same port for an outage.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The access key the throwaway server accepts.
pub const ACCESS_KEY: &str = "wardengate-dev";
/// Its secret key (a throwaway server's, on loopback).
pub const SECRET_KEY: &str = "wardengate-dev-secret-0c41";

/// A running `s3s-fs`, killed on drop.
pub struct S3 {
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
}

/// Where `s3s-fs` is: `$S3S_FS`, the tools directory scripts install it into, or `PATH`.
pub fn s3s_fs_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cache/wardengate/tools/bin/s3s-fs"));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        candidates.push(dir.join("s3s-fs"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("the S3-compatible server s3s-fs is not installed; scripts/test and scripts/dev install it (cargo install s3s-fs@0.14.1 --features binary --root ~/.cache/wardengate/tools)")
}

impl S3 {
    /// Start the server with its data in `root`, holding bucket `bucket`, on `port` (0: pick).
    pub fn start(root: &Path, port: u16, bucket: &str) -> Result<S3> {
        std::fs::create_dir_all(root.join(bucket))
            .with_context(|| format!("cannot create {}", root.display()))?;
        let port = if port == 0 {
            crate::sshd::free_port()?
        } else {
            port
        };
        let mut s3 = S3 {
            child: None,
            port,
            root: root.canonicalize()?,
        };
        s3.resume()?;
        Ok(s3)
    }

    /// The endpoint URL clients use.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A `[recording]` section that keeps recordings in `s3://bucket/prefix` on this server,
    /// the secret key in `secret_file` (relative to the gateway's data directory).
    pub fn recording_section(&self, bucket: &str, prefix: &str, secret_file: &str) -> String {
        format!(
            "[recording]\nstore = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key_file = \"{secret_file}\"\n",
            self.endpoint()
        )
    }

    /// Stop the server (an outage); [`resume`](Self::resume) starts it again on the same port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it (again) on its port, with the same data.
    pub fn resume(&mut self) -> Result<()> {
        let bin = s3s_fs_path()?;
        let log = std::fs::File::create(self.root.with_extension("log"))?;
        let mut c = crate::children::command(&bin);
        c.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child =
            crate::children::spawn(c).with_context(|| format!("cannot start {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(self.root.with_extension("log")).unwrap_or_default();
                bail!(
                    "s3s-fs exited ({status}) before listening on {}: {}",
                    self.port,
                    log.trim()
                );
            }
            if Instant::now() > deadline {
                bail!("s3s-fs did not listen on port {} within 10s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// The objects stored for one recording, by file name (sorted).
    pub fn objects(&self, bucket: &str, prefix: &str, session: &str) -> Vec<String> {
        let dir = self.root.join(bucket).join(prefix).join(session);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}
