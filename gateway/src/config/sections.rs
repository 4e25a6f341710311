//! The daemon-wide sections of the configuration: `[gateway]`, `[ssh]`, `[postgres]`, `[api]`,
//! `[recording]`, `[security]`, each with its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// This gateway's name, shown as the owning gateway of its sessions.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the store, keys and (later) recordings live. Relative paths are relative to the
    /// config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// File holding the vault's 32-byte key as hex. `WARDENGATE_VAULT_KEY` overrides it.
    /// Relative to `data_dir`; generated on first start when missing.
    #[serde(default = "default_vault_key")]
    pub vault_key_file: PathBuf,
    /// Policy files, or directories of `*.toml` policy files, relative to the config file.
    #[serde(default)]
    pub policy_files: Vec<PathBuf>,
    /// Most sessions this gateway (the pool, until gateways cluster) runs at once.
    pub max_active: Option<u32>,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            name: default_name(),
            data_dir: default_data_dir(),
            vault_key_file: default_vault_key(),
            policy_files: Vec::new(),
            max_active: None,
        }
    }
}

fn default_name() -> String {
    "gw-1".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_vault_key() -> PathBuf {
    PathBuf::from("vault.key")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    #[serde(default = "default_ssh_listen")]
    pub listen: SocketAddr,
    /// Relative to `data_dir`; an Ed25519 key is generated when missing.
    #[serde(default = "default_host_key")]
    pub host_key_file: PathBuf,
    /// Constant delay before each authentication rejection (defeats timing probes).
    #[serde(default = "default_rejection", with = "duration")]
    pub auth_rejection_time: Duration,
    /// How long the target leg may take to connect and authenticate.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Ciphers offered to clients and preferred towards targets, best first.
    #[serde(default = "default_ciphers")]
    pub ciphers: Vec<String>,
}

fn default_ciphers() -> Vec<String> {
    wardengate_protocols::ssh::DEFAULT_CIPHERS
        .iter()
        .map(|c| c.to_string())
        .collect()
}

impl Default for SshSection {
    fn default() -> Self {
        SshSection {
            listen: default_ssh_listen(),
            host_key_file: default_host_key(),
            auth_rejection_time: default_rejection(),
            connect_timeout: default_connect_timeout(),
            ciphers: default_ciphers(),
        }
    }
}

fn default_ssh_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2222))
}
fn default_host_key() -> PathBuf {
    PathBuf::from("ssh_host_ed25519_key")
}
fn default_rejection() -> Duration {
    Duration::from_millis(500)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(15)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    pub listen: SocketAddr,
    /// PEM certificate chain and key for TLS with clients, relative to `data_dir`. A self-signed
    /// certificate for `localhost` is generated when both are missing.
    #[serde(default = "default_pg_cert")]
    pub tls_cert_file: PathBuf,
    #[serde(default = "default_pg_key")]
    pub tls_key_file: PathBuf,
    /// Refuse clients that do not use TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Constant delay before an authentication failure is reported.
    #[serde(default = "default_rejection", with = "duration")]
    pub auth_rejection_time: Duration,
    /// How long a target may take to connect and start up.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// How long a client may take from connecting to being authenticated; overrides
    /// `security.auth_timeout` for this listener.
    #[serde(default, with = "duration::option")]
    pub auth_timeout: Option<Duration>,
    /// Bytes of each statement and bind parameter kept in the query log.
    #[serde(default = "default_capture_bytes")]
    pub capture_bytes: usize,
    /// Record `<redacted>` instead of bind parameter values.
    #[serde(default)]
    pub redact_params: bool,
}

fn default_pg_cert() -> PathBuf {
    PathBuf::from("postgres_tls.crt")
}
fn default_pg_key() -> PathBuf {
    PathBuf::from("postgres_tls.key")
}
fn default_capture_bytes() -> usize {
    4096
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Relative to `data_dir`; generated when missing. `WARDENGATE_ADMIN_TOKEN` overrides it.
    #[serde(default = "default_token_file")]
    pub admin_token_file: PathBuf,
    /// How long a handoff waits for the new owner to accept it, and then for their connection.
    #[serde(default = "default_handoff_window", with = "duration")]
    pub handoff_window: Duration,
    /// The API's (and the pages') TLS certificate chain, PEM, relative to `data_dir`; a
    /// self-signed one is generated at first start when neither file exists.
    #[serde(default = "default_api_cert")]
    pub tls_cert_file: PathBuf,
    #[serde(default = "default_api_key")]
    pub tls_key_file: PathBuf,
    /// Serve plain HTTP instead of TLS: only for a loopback `listen` (tokens would travel in
    /// clear otherwise), e.g. dev mode, where browsers accept security keys on
    /// `http://localhost` but not on a self-signed certificate.
    #[serde(default)]
    pub plain_http: bool,
    /// Proxies whose `X-Forwarded-For` is believed (addresses, CIDRs); nobody else's.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: default_api_listen(),
            admin_token_file: default_token_file(),
            handoff_window: default_handoff_window(),
            tls_cert_file: default_api_cert(),
            tls_key_file: default_api_key(),
            plain_http: false,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ApiSection {
    /// `https`, or `http` with `plain_http`.
    pub fn scheme(&self) -> &'static str {
        ["https", "http"][usize::from(self.plain_http)]
    }
}

fn default_api_cert() -> PathBuf {
    PathBuf::from("api_tls.crt")
}
fn default_api_key() -> PathBuf {
    PathBuf::from("api_tls.key")
}

fn default_handoff_window() -> Duration {
    Duration::from_secs(300)
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_token_file() -> PathBuf {
    PathBuf::from("admin.token")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    /// Where recordings are written, one directory per session. Relative to `data_dir`.
    #[serde(default = "default_recordings_dir")]
    pub dir: PathBuf,
    /// The Ed25519 recording key (hex seed), generated on first start. Relative to `data_dir`.
    #[serde(default = "default_recording_key")]
    pub key_file: PathBuf,
    /// Record what users type (keystrokes, uploads) as well as what targets print.
    #[serde(default = "default_true")]
    pub input: bool,
    /// A chunk closes at this many raw event bytes...
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: usize,
    /// ...or when its first event is this old.
    #[serde(default = "default_chunk_age", with = "duration")]
    pub chunk_age: Duration,
    /// How often the open chunk's new events are appended to its write-ahead log: the most of a
    /// session a crash of the gateway process can lose. `0s` turns the log off (a crash then
    /// loses the open chunk: up to `chunk_bytes` or `chunk_age`).
    #[serde(default = "default_write_ahead", with = "duration")]
    pub write_ahead_interval: Duration,
    /// Keep recordings in an S3-compatible bucket: `s3://bucket/prefix`. `dir` is then the
    /// spool: chunks are written there and uploaded as they close, the seal last.
    #[serde(default)]
    pub store: Option<String>,
    /// The object store's endpoint (`http://127.0.0.1:9000` for a local S3-compatible server;
    /// none for AWS). Plain http only when the endpoint says `http://`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// The access key id (else `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// A file (0600, relative to `data_dir`) holding the secret access key (else
    /// `AWS_SECRET_ACCESS_KEY`). Never the secret itself in this file.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Allow a plain `http://` endpoint that is not on this machine (refused otherwise:
    /// recordings would cross the network unencrypted).
    #[serde(default)]
    pub allow_http: bool,
    /// The most the spool may hold (MiB) before sessions that require recording are refused.
    #[serde(default = "default_spool_max_mb")]
    pub spool_max_mb: u64,
}

fn default_spool_max_mb() -> u64 {
    10 * 1024
}

fn default_write_ahead() -> Duration {
    Duration::from_millis(200)
}

impl Default for RecordingSection {
    fn default() -> Self {
        RecordingSection {
            dir: default_recordings_dir(),
            key_file: default_recording_key(),
            input: true,
            chunk_bytes: default_chunk_bytes(),
            chunk_age: default_chunk_age(),
            write_ahead_interval: default_write_ahead(),
            store: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key_file: None,
            allow_http: false,
            spool_max_mb: default_spool_max_mb(),
        }
    }
}

fn default_recordings_dir() -> PathBuf {
    PathBuf::from("recordings")
}
fn default_recording_key() -> PathBuf {
    PathBuf::from("recording_ed25519.key")
}
fn default_true() -> bool {
    true
}
fn default_chunk_bytes() -> usize {
    1 << 20
}
fn default_chunk_age() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdpSection {
    pub listen: SocketAddr,
    /// PEM certificate chain and key for TLS with clients, relative to `data_dir`. A self-signed
    /// certificate is generated when both are missing.
    #[serde(default = "default_rdp_cert")]
    pub tls_cert_file: PathBuf,
    #[serde(default = "default_rdp_key")]
    pub tls_key_file: PathBuf,
    /// Constant delay before an authentication failure is reported.
    #[serde(default = "default_rejection", with = "duration")]
    pub auth_rejection_time: Duration,
    /// How long a target may take to connect and complete NLA.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// How long a client may take from connecting to being authenticated; overrides
    /// `security.auth_timeout` for this listener.
    #[serde(default, with = "duration::option")]
    pub auth_timeout: Option<Duration>,
}

fn default_rdp_cert() -> PathBuf {
    PathBuf::from("rdp_tls.crt")
}
fn default_rdp_key() -> PathBuf {
    PathBuf::from("rdp_tls.key")
}

/// What every listener does before a client has authenticated, and how password guessing is
/// slowed down. The defaults suit a gateway exposed to hostile networks; README "Security" says
/// what each one defends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// From connect to authenticated, on every listener (for the API: until the request's
    /// headers are in); then the connection is closed.
    #[serde(default = "default_auth_timeout", with = "duration")]
    pub auth_timeout: Duration,
    /// Connections not authenticated yet, per listener; more are closed at once.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// Connections not authenticated yet from one source address (IPv6: one /64), per listener.
    #[serde(default = "default_max_unauthenticated_per_source")]
    pub max_unauthenticated_per_source: usize,
    /// API connections open at once from one source address (`[api] trusted_proxies` are not
    /// held to it: their connections carry everyone's requests; `max_unauthenticated` still is).
    #[serde(default = "default_api_connections_per_source")]
    pub api_connections_per_source: usize,
    /// Password hashes (argon2, 19 MiB each) checked at once; 0 = one per CPU core.
    #[serde(default)]
    pub password_checks: usize,
    /// How long an attempt waits for a free password check before it is refused.
    #[serde(default = "default_password_queue_timeout", with = "duration")]
    pub password_queue_timeout: Duration,
    /// Failed logins from one source (or for one user from one source) before each further
    /// attempt has to wait: 1 s, then doubling up to `backoff_max`.
    #[serde(default = "default_failures_before_backoff")]
    pub failures_before_backoff: u32,
    /// Failed logins for one user from all sources before sources that failed for that user
    /// have to wait (sources without failures still get their chance: the real user's).
    #[serde(default = "default_user_failures_before_backoff")]
    pub user_failures_before_backoff: u32,
    /// The longest wait between attempts.
    #[serde(default = "default_backoff_max", with = "duration")]
    pub backoff_max: Duration,
    /// Failures older than this are forgotten.
    #[serde(default = "default_failure_window", with = "duration")]
    pub failure_window: Duration,
    /// PostgreSQL CancelRequests accepted per second from one source (each may guess a key).
    #[serde(default = "default_cancel_requests_per_second")]
    pub cancel_requests_per_second: u32,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            auth_timeout: default_auth_timeout(),
            max_unauthenticated: default_max_unauthenticated(),
            max_unauthenticated_per_source: default_max_unauthenticated_per_source(),
            api_connections_per_source: default_api_connections_per_source(),
            password_checks: 0,
            password_queue_timeout: default_password_queue_timeout(),
            failures_before_backoff: default_failures_before_backoff(),
            user_failures_before_backoff: default_user_failures_before_backoff(),
            backoff_max: default_backoff_max(),
            failure_window: default_failure_window(),
            cancel_requests_per_second: default_cancel_requests_per_second(),
        }
    }
}

fn default_auth_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_unauthenticated() -> usize {
    256
}
fn default_max_unauthenticated_per_source() -> usize {
    16
}
fn default_api_connections_per_source() -> usize {
    64
}
fn default_password_queue_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_failures_before_backoff() -> u32 {
    5
}
fn default_user_failures_before_backoff() -> u32 {
    20
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}
fn default_failure_window() -> Duration {
    Duration::from_secs(900)
}
fn default_cancel_requests_per_second() -> u32 {
    20
}

/// Where clients connect from, for `session show`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoipSection {
    /// A GeoIP2 or GeoLite2 City database (`.mmdb`), relative to the config file; absent: no
    /// locations.
    pub database: Option<PathBuf>,
}

/// The audit log's signed checkpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Sign the chain head after this many events...
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ...or this long after the first unsigned event (and at shutdown).
    #[serde(default = "default_checkpoint_interval", with = "duration")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

fn default_checkpoint_every() -> u64 {
    100
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(60)
}

/// `[identity]`: the WebAuthn relying party that security keys are enrolled with and proved to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// The relying party id keys are bound to: the gateway's host name as people's browsers
    /// reach it (`gateway.example.com`), never an IP address. Default `localhost` (dev mode).
    #[serde(default = "default_rp_id")]
    pub rp_id: String,
    /// The origin of the gateway's pages as the browser shows it
    /// (`https://gateway.example.com`); it must be `rp_id` or a host under it. Default
    /// `http://localhost:<api port>`.
    pub origin: Option<String>,
    /// The name a browser shows when a key is enrolled.
    #[serde(default = "default_rp_name")]
    pub rp_name: String,
    /// How long an enrolment or proof link can wait to be opened and used, and how long an SSH
    /// login waits for the key.
    #[serde(default = "default_link_ttl", with = "duration")]
    pub link_ttl: Duration,
    /// How long a proof made ahead (`wgctl mfa prove`, or a refusal's link) waits for the
    /// session it is for, when the policy's `mfa_max_age` is 0 (one proof per session).
    #[serde(default = "default_proof_valid_for", with = "duration")]
    pub proof_valid_for: Duration,
    /// How long a `wgctl login` token lasts.
    #[serde(default = "default_operator_token_ttl", with = "duration")]
    pub operator_token_ttl: Duration,
}

impl Default for IdentitySection {
    fn default() -> Self {
        IdentitySection {
            rp_id: default_rp_id(),
            origin: None,
            rp_name: default_rp_name(),
            link_ttl: default_link_ttl(),
            proof_valid_for: default_proof_valid_for(),
            operator_token_ttl: default_operator_token_ttl(),
        }
    }
}

fn default_rp_id() -> String {
    "localhost".into()
}
fn default_rp_name() -> String {
    "Wardengate".into()
}
fn default_link_ttl() -> Duration {
    Duration::from_secs(120)
}
fn default_operator_token_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_proof_valid_for() -> Duration {
    Duration::from_secs(300)
}

/// `[approvals]`: where new approval requests are announced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSection {
    /// Each new request is POSTed here as JSON (a chat bot announces it); failures are logged
    /// and retried a few times, and never hold the request up.
    pub webhook_url: Option<String>,
}

/// `[console]`: the operator console's sign-in sessions, Kibana's model: an encrypted cookie
/// plus a record in the store, both needed. Durations take `<count>[ms|s|m|h|d|w|M|Y]`; `0`
/// turns a timeout off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Signed out after this long without a request from the person (sliding). Default 1h: a
    /// privileged console left open on an unattended screen should not stay usable for long.
    #[serde(default = "default_console_idle", with = "duration")]
    pub idle_timeout: Duration,
    /// Signed out this long after signing in, however active (absolute). Default 1d: a working
    /// day, then the password and key again.
    #[serde(default = "default_console_lifespan", with = "duration")]
    pub lifespan: Duration,
    /// How often expired and invalid records are removed from the store (at least 10s).
    #[serde(default = "default_console_cleanup", with = "duration")]
    pub cleanup_interval: Duration,
    /// Console sessions one person may hold (1 to 1000); signing in once more invalidates the
    /// oldest.
    #[serde(default = "default_console_max")]
    pub max_sessions: u32,
}

fn default_console_idle() -> Duration {
    Duration::from_secs(3600)
}
fn default_console_lifespan() -> Duration {
    Duration::from_secs(86_400)
}
fn default_console_cleanup() -> Duration {
    Duration::from_secs(3600)
}
fn default_console_max() -> u32 {
    10
}

impl ConsoleSection {
    /// The setting that is out of bounds, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.cleanup_interval < Duration::from_secs(10) {
            let is = wardengate_recorder::time::human(self.cleanup_interval);
            return Some((
                "cleanup_interval",
                format!("must be at least 10s (it is {is})"),
            ));
        }
        if !(1..=1000).contains(&self.max_sessions) {
            let is = self.max_sessions;
            return Some((
                "max_sessions",
                format!("must be from 1 to 1000 (it is {is})"),
            ));
        }
        None
    }
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            idle_timeout: default_console_idle(),
            lifespan: default_console_lifespan(),
            cleanup_interval: default_console_cleanup(),
            max_sessions: default_console_max(),
        }
    }
}
