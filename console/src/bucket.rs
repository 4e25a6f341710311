//! Recordings read straight from an S3-compatible bucket (`wgctl recording verify|play|export
//! s3://bucket/prefix/SESSION`): no gateway, only the bucket's credentials and the public key.

use anyhow::{bail, Context, Result};

/// A recording in a bucket (`s3://bucket/prefix/SESSION`), fetched into a private temporary
/// directory that is then read like any recording directory. Endpoint, region and credentials
/// come from `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
/// (`AWS_ALLOW_HTTP=true` for a plain-http endpoint that is not on this machine).
pub fn fetch(url: &str) -> Result<tempfile::TempDir> {
    use wardengate_recorder::bucket::{split_session_url, Bucket, BucketOptions};
    let (base, session) = split_session_url(url)?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let opts = BucketOptions {
        endpoint: env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT")),
        region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
        allow_http: env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true")),
    };
    let bucket = Bucket::open(&base, &opts)?;
    let tmp = tempfile::Builder::new()
        .prefix("wgctl-recording-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the object-store client")?;
    let n = rt.block_on(bucket.download(&session, tmp.path()))?;
    if n == 0 {
        bail!("{url}: no such recording in the bucket");
    }
    Ok(tmp)
}
