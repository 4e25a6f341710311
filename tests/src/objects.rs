//! Recordings in a real S3-compatible object store (`s3s-fs`, started per test on a loopback
//! port): gateways configured to upload to it, and wgctl reading from it.

use std::path::Path;
use std::process::Command;

use crate::*;
pub use wardengate_dev::s3::{ACCESS_KEY, S3, SECRET_KEY};

/// The bucket the tests' gateways upload to.
pub const BUCKET: &str = "recordings";
/// Its prefix.
pub const PREFIX: &str = "wg";

/// An object store for this test (its data in `dir`), with the bucket made.
pub fn s3(dir: &Path) -> S3 {
    S3::start(dir, 0, BUCKET).expect("start s3s-fs")
}

/// The gateway keeps its recordings in the test's bucket: the secret key in a 0600 file in its
/// data directory, `more` added to `[recording]` (`spool_max_mb = 1`, `chunk_age = "1s"`).
pub fn in_bucket<'e>(b: GatewayBuilder<'e>, s3: &S3, more: &str) -> GatewayBuilder<'e> {
    let data = b.data_dir();
    std::fs::create_dir_all(&data).expect("data dir");
    write_private(&data.join("s3.secret"), SECRET_KEY);
    b.extra(&format!(
        "{}{more}\n",
        s3.recording_section(BUCKET, PREFIX, "s3.secret")
    ))
}

/// `s3://recordings/wg/SESSION`.
pub fn url(session: &str) -> String {
    format!("s3://{BUCKET}/{PREFIX}/{session}")
}

/// wgctl with the object store's endpoint and credentials in its environment (what an auditor
/// sets to read recordings straight from the bucket), and no gateway.
pub fn wgctl_offline(s3: &S3) -> Command {
    let mut c = Command::new(bin("wgctl"));
    c.env("AWS_ENDPOINT_URL", s3.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("WARDENGATE_TOKEN")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("WARDENGATE_ADDR", "http://127.0.0.1:9");
    c
}
