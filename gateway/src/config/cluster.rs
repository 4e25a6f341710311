//! `[store]` and `[cluster]`: where the store lives, and how gateways sharing it trust each
//! other.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// `[store]`: absent, the embedded SQLite store in `data_dir` (one gateway). With `url`, a
/// PostgreSQL database that several gateways share (`[cluster]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `postgres://user:password@host:port/database` (or libpq's `host=… user=…` form).
    /// `WARDENGATE_STORE_URL` overrides it, to keep the password out of the file.
    pub url: Option<String>,
    /// The CA (PEM) that signed the database server's certificate: with it, the connection is
    /// TLS, the certificate verified against it and the host name of the URL. Without it, plain
    /// TCP (keep the database on a private network). Relative to `data_dir`.
    pub ca_file: Option<PathBuf>,
}

/// `[cluster]`: how the gateways sharing a PostgreSQL store find and trust each other.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// How long a gateway's leases (and the gateway itself) outlive its last heartbeat. It
    /// renews them every third of this; a peer that stops renewing is declared lost after it.
    #[serde(default = "default_lease_ttl", with = "duration")]
    pub lease_ttl: Duration,
    /// The URL peers reach this gateway's API at (default: the API's listen address, http or
    /// https as the API serves).
    pub advertise_url: Option<String>,
    /// The cluster's shared key (hex, 0600), made by `wardengate cluster init`: it signs every
    /// gateway-to-gateway request. Relative to `data_dir`.
    #[serde(default = "default_cluster_key")]
    pub key_file: PathBuf,
    /// The CA that signed the peers' API certificates, when they serve TLS.
    pub ca_file: Option<PathBuf>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            lease_ttl: default_lease_ttl(),
            advertise_url: None,
            key_file: default_cluster_key(),
            ca_file: None,
        }
    }
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(15)
}
fn default_cluster_key() -> PathBuf {
    PathBuf::from("cluster.key")
}
