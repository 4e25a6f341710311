//! What this gateway needs to talk to its peers (the cluster key, an HTTP client) and to check
//! them (the key, the nonces seen).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::sign::{ClusterKey, Nonces};

/// How long connecting to a peer may take (a request's own deadline is its caller's: a short
/// answer has [`super::forward`]'s, a stream none).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What this gateway needs to talk to its peers and to check them.
pub struct Peers {
    pub key: Option<ClusterKey>,
    pub seen: Nonces,
    pub(crate) http: reqwest::Client,
}

impl Peers {
    /// No cluster: internal endpoints refuse everything.
    pub fn none() -> Peers {
        Peers {
            key: None,
            seen: Nonces::default(),
            http: reqwest::Client::new(),
        }
    }

    pub fn new(key: Option<ClusterKey>, ca_file: Option<&Path>) -> Result<Peers> {
        let mut http = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read [cluster] ca_file {}", ca.display()))?;
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).with_context(
                || {
                    format!(
                        "[cluster] ca_file {} is not a PEM certificate",
                        ca.display()
                    )
                },
            )?);
        }
        Ok(Peers {
            key,
            seen: Nonces::default(),
            http: http.build().context("cannot build the peer client")?,
        })
    }
}
