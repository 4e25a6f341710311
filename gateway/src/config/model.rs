//! The configuration as written (`Config` and its sections) and as loaded (`Loaded`: users with
//! their keys and groups, targets, policies).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use russh::keys::PublicKey;
use serde::Deserialize;
use wardengate_policy::{Entry, OnLimit, Policy};

use super::cluster::{ClusterSection, StoreSection};
use super::sections::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub ssh: SshSection,
    /// The PostgreSQL front; absent: no PostgreSQL listener.
    pub postgres: Option<PostgresSection>,
    /// The RDP front; off unless configured.
    pub rdp: Option<RdpSection>,
    /// The brokered-TCP listener (`wgctl proxy`); off unless configured.
    pub tcp: Option<super::TcpSection>,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub recording: RecordingSection,
    #[serde(default)]
    pub security: SecuritySection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub geoip: GeoipSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub approvals: ApprovalsSection,
    #[serde(default)]
    pub console: ConsoleSection,
    /// Where the store lives: SQLite in `data_dir` (default) or a PostgreSQL shared by a cluster.
    #[serde(default)]
    pub store: StoreSection,
    /// Several gateways on one PostgreSQL store.
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub groups: Vec<Group>,
    /// Operator permissions for users and groups.
    #[serde(default)]
    pub roles: Vec<super::Role>,
    /// Named tokens for automation, each with its permissions.
    #[serde(default)]
    pub api_tokens: Vec<super::ApiToken>,
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Network access sessions: durations, caps, backend timeouts.
    #[serde(default)]
    pub access: super::AccessSection,
    /// Resources reached directly whose ingress access sessions open (`[[resources]]`).
    #[serde(default)]
    pub resources: Vec<super::Resource>,
    #[serde(default)]
    pub limits: LimitsSection,
    /// Policies written inline; policy files (`gateway.policy_files`) are usually clearer.
    #[serde(default)]
    pub policies: Vec<toml::Spanned<Policy>>,
}

/// Concurrency limits at the actor and target levels (the policy level is each policy's
/// `concurrency.max`, the pool level `gateway.max_active`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Sessions one user may hold at once; `users.max_sessions` and `groups.max_sessions`
    /// override it.
    pub max_sessions_per_user: Option<u32>,
    /// Sessions one target may serve at once; `targets.max_sessions` overrides it.
    pub max_sessions_per_target: Option<u32>,
    /// At the user level: `deny` (default) or `evict_oldest` (the user's oldest session is
    /// terminated with reason `concurrency`).
    #[serde(default)]
    pub on_limit: OnLimit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// OpenSSH `authorized_keys` lines.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// An argon2 PHC string (`wardengate hash-password` prints one).
    pub password_hash: Option<String>,
    /// The same password as a SCRAM-SHA-256 verifier, for PostgreSQL clients
    /// (`wardengate hash-password` prints it too). Without it, PostgreSQL logins need TLS.
    pub scram_sha_256: Option<String>,
    /// The same password's NT hash (32 hex digits, MD4 of its UTF-16), for RDP clients' NLA
    /// (`wardengate hash-password` prints it too). NTLM cannot verify a password without it.
    pub nt_hash: Option<String>,
    /// Overrides `limits.max_sessions_per_user` (and any group's value) for this user.
    pub max_sessions: Option<u32>,
    /// sha256 (hex) of the user's personal API token (`wardengate new-token` makes one), for
    /// `wgctl` as themselves: hand off and accept sessions, and (operators) shadow them.
    pub api_token_sha256: Option<String>,
    /// An operator's token may do what the admin token does, under their own name.
    #[serde(default)]
    pub operator: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
    /// Overrides `limits.max_sessions_per_user` for members (the largest of a user's groups).
    pub max_sessions: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    /// `host:port` of the target's server (a TCP target may give `hosts` instead).
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default = "default_protocol")]
    pub protocol: wardengate_api::Protocol,
    /// The accounts whose secrets the gateway injects (none for TCP targets: the client brings
    /// its own credentials).
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// TCP: a host set, `host` or `host:port` each (`default_port` for the former); a session
    /// goes to one of them, picked at random unless `wgctl target authorize --host-id` names it.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// TCP: the port of `hosts` entries that name none.
    pub default_port: Option<u16>,
    /// TCP: connections one session may carry (default 1; -1: unlimited).
    pub session_connection_limit: Option<i64>,
    /// TCP: how long a session may last, from its authorization (default 28800, 8 hours).
    pub session_max_seconds: Option<u64>,
    /// Overrides `limits.max_sessions_per_target` for this target.
    pub max_sessions: Option<u32>,
    /// PostgreSQL: the database every session uses, whatever the client asks for.
    pub database: Option<String>,
    /// PostgreSQL: TLS towards the target: `disable` (default), `require` (encrypted, not
    /// verified) or `verify-full` (verified against `tls_ca_file` and the host name).
    pub tls: Option<String>,
    /// PostgreSQL: PEM CA certificates for `tls = "verify-full"`, relative to the config file.
    pub tls_ca_file: Option<PathBuf>,
    /// PostgreSQL: the name the certificate must carry, when not the address's host.
    pub tls_server_name: Option<String>,
    /// PostgreSQL: how the target may authenticate the account, of `scram-sha-256` (default),
    /// `md5`, `password`, `trust`. Anything else is refused before the password is sent, so a
    /// spoofed target cannot ask for it in the clear.
    pub auth_methods: Option<Vec<String>>,
}

fn default_protocol() -> wardengate_api::Protocol {
    wardengate_api::Protocol::Ssh
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The name users pick in `user:target:account`.
    pub name: String,
    /// Login name on the target; defaults to `name`.
    pub username: Option<String>,
    /// Vault reference of the secret (`wardengate vault set REF ...`).
    pub secret: String,
}

impl Account {
    pub fn username(&self) -> &str {
        self.username.as_deref().unwrap_or(&self.name)
    }
}

/// A user ready for authentication: parsed keys and group membership resolved.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub groups: Vec<String>,
    pub keys: Vec<PublicKey>,
    pub password_hash: Option<String>,
    pub scram: Option<wardengate_protocols::postgres::Verifier>,
    pub nt_hash: Option<[u8; 16]>,
    /// The most specific per-user session limit (user, then groups, then `limits`).
    pub max_sessions: Option<u32>,
    /// sha256 of the user's API token.
    pub api_token: Option<[u8; 32]>,
    pub operator: bool,
}

/// The validated configuration, indexed for lookups.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    pub data_dir: PathBuf,
    pub users: HashMap<String, Identity>,
    pub targets: HashMap<String, Target>,
    /// TLS towards each PostgreSQL target, CA certificates loaded.
    pub pg_tls: HashMap<String, wardengate_protocols::postgres::TargetTls>,
    /// Inline policies first, then each policy file in the order listed (directories sorted).
    pub policies: Vec<Entry>,
    /// Network resources by name (`[[resources]]`), checked.
    pub resources: BTreeMap<String, super::Resource>,
}

impl Loaded {
    /// A path from the configuration: absolute as it is, relative under the data directory.
    pub fn in_data_dir(&self, p: &std::path::Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir.join(p)
        }
    }

    /// Key files the configuration names that exist (vault key, SSH host key, recording key,
    /// admin token, the TLS keys of the PostgreSQL and RDP fronts), resolved.
    pub fn key_files(&self) -> Vec<PathBuf> {
        let c = &self.config;
        let mut v = vec![
            c.gateway.vault_key_file.clone(),
            c.ssh.host_key_file.clone(),
            c.recording.key_file.clone(),
            c.api.admin_token_file.clone(),
        ];
        if !c.api.plain_http {
            v.push(c.api.tls_key_file.clone());
        }
        v.extend(c.postgres.as_ref().map(|p| p.tls_key_file.clone()));
        v.extend(c.rdp.as_ref().map(|r| r.tls_key_file.clone()));
        v.extend(c.tcp.as_ref().map(|r| r.tls_key_file.clone()));
        v.extend(c.recording.secret_access_key_file.clone());
        v.into_iter()
            .map(|p| self.in_data_dir(&p))
            .filter(|p| p.exists())
            .collect()
    }
}
