//! The daemon's TOML configuration: listeners, data directory, users and groups, targets and their
//! accounts, and policies. Loading validates everything up front and names the file, the line and
//! the key of the first problem, so a typo never turns into a surprise at 3 a.m.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use russh::keys::PublicKey;
use serde::Deserialize;
use wardengate_policy::{Entry, OnLimit, Policy};

mod sections;
pub use sections::*;

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
    pub users: Vec<User>,
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub targets: Vec<Target>,
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
    /// `host:port` of the target's SSH or PostgreSQL server.
    pub address: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    pub accounts: Vec<Account>,
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

fn default_protocol() -> String {
    "ssh".into()
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
}

impl Loaded {
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
        v.extend(c.postgres.as_ref().map(|p| p.tls_key_file.clone()));
        v.extend(c.rdp.as_ref().map(|r| r.tls_key_file.clone()));
        v.into_iter()
            .map(|p| crate::server::in_data_dir(self, &p))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Locate `key` (a dotted path such as `users.alice`) in the TOML text, for error messages.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Loaded> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                format!(
                    " line {}",
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        anyhow!("{}{at}: {}", path.display(), e.message())
    })?;
    let here = |needle: &str| {
        line_of(text, needle)
            .map(|l| format!("{} line {l}", path.display()))
            .unwrap_or_else(|| path.display().to_string())
    };
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let data_dir = if config.gateway.data_dir.is_absolute() {
        config.gateway.data_dir.clone()
    } else {
        base.join(&config.gateway.data_dir)
    };

    if config.ssh.ciphers.is_empty() {
        bail!(
            "{}: ssh.ciphers must name at least one cipher",
            here("ciphers")
        );
    }
    for c in &config.ssh.ciphers {
        if !wardengate_protocols::ssh::SUPPORTED_CIPHERS.contains(&c.as_str()) {
            bail!(
                "{}: ssh.ciphers entry '{c}' is not supported (supported: {})",
                here(c),
                wardengate_protocols::ssh::SUPPORTED_CIPHERS.join(", ")
            );
        }
    }
    let mut users = HashMap::new();
    for u in &config.users {
        if u.name.is_empty() || u.name.contains(':') || u.name.contains('#') {
            bail!(
                "{}: users.name '{}' must be non-empty without ':' or '#'",
                here(&u.name),
                u.name
            );
        }
        let mut keys = Vec::new();
        for (i, line) in u.public_keys.iter().enumerate() {
            let key = PublicKey::from_openssh(line.trim()).map_err(|e| {
                anyhow!(
                    "{}: users.{}.public_keys[{i}] is not an OpenSSH public key: {e}",
                    here(line.split_whitespace().nth(1).unwrap_or(line)),
                    u.name
                )
            })?;
            keys.push(key);
        }
        if let Some(h) = &u.password_hash {
            argon2::password_hash::phc::PasswordHash::new(h).map_err(|e| {
                anyhow!(
                    "{}: users.{}.password_hash is not an argon2 PHC string: {e}",
                    here(h),
                    u.name
                )
            })?;
        }
        let scram = match &u.scram_sha_256 {
            Some(v) => Some(
                wardengate_protocols::postgres::Verifier::parse(v)
                    .map_err(|e| anyhow!("{}: users.{}.scram_sha_256 is {e}", here(v), u.name))?,
            ),
            None => None,
        };
        let nt_hash = match &u.nt_hash {
            Some(h) => Some(
                hex::decode(h.trim())
                    .ok()
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: users.{}.nt_hash must be 32 hex digits (the NT hash that \
                             `wardengate hash-password` prints)",
                            here(h),
                            u.name
                        )
                    })?,
            ),
            None => None,
        };
        if keys.is_empty() && u.password_hash.is_none() && scram.is_none() && nt_hash.is_none() {
            bail!(
                "{}: users.{} has neither public_keys nor password_hash",
                here(&u.name),
                u.name
            );
        }
        let api_token = match &u.api_token_sha256 {
            Some(h) => Some(
                hex::decode(h.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: users.{}.api_token_sha256 must be 64 hex digits (the sha256 \
                             that `wardengate new-token` prints)",
                            here(h),
                            u.name
                        )
                    })?,
            ),
            None => None,
        };
        let id = Identity {
            name: u.name.clone(),
            groups: u.groups.clone(),
            keys,
            password_hash: u.password_hash.clone(),
            scram,
            nt_hash,
            max_sessions: u.max_sessions,
            api_token,
            operator: u.operator,
        };
        if users.insert(u.name.clone(), id).is_some() {
            bail!(
                "{}: users.name '{}' is defined twice",
                here(&u.name),
                u.name
            );
        }
    }
    for g in &config.groups {
        for m in &g.members {
            let user = users.get_mut(m).ok_or_else(|| {
                anyhow!(
                    "{}: groups.{}.members names unknown user '{m}'",
                    here(m),
                    g.name
                )
            })?;
            if !user.groups.contains(&g.name) {
                user.groups.push(g.name.clone());
            }
        }
    }
    for u in &config.users {
        let Some(id) = users.get_mut(&u.name) else {
            continue;
        };
        let by_group = config
            .groups
            .iter()
            .filter(|g| id.groups.contains(&g.name))
            .filter_map(|g| g.max_sessions)
            .max();
        id.max_sessions = u
            .max_sessions
            .or(by_group)
            .or(config.limits.max_sessions_per_user);
    }

    let mut targets = HashMap::new();
    let mut pg_tls = HashMap::new();
    for t in &config.targets {
        if t.name.is_empty() || t.name.contains(':') || t.name.contains('#') {
            bail!(
                "{}: targets.name '{}' must be non-empty without ':' or '#'",
                here(&t.name),
                t.name
            );
        }
        match (t.protocol.as_str(), &t.tls) {
            ("ssh" | "rdp", None) if t.auth_methods.is_none() && t.database.is_none() => {}
            ("ssh" | "rdp", _) => bail!(
                "{}: targets.{}: tls, auth_methods and database apply to postgres targets only",
                here(&t.name),
                t.name
            ),
            ("postgres", _) => {
                for m in t.auth_methods.iter().flatten() {
                    if !wardengate_protocols::postgres::AUTH_METHODS.contains(&m.as_str()) {
                        bail!(
                            "{}: targets.{}.auth_methods entry '{m}' is not a method ({})",
                            here(m),
                            t.name,
                            wardengate_protocols::postgres::AUTH_METHODS.join(", ")
                        );
                    }
                }
                if let Some(mode) = &t.tls {
                    if !["disable", "require", "verify-full"].contains(&mode.as_str()) {
                        bail!(
                            "{}: targets.{}.tls '{mode}' is not a mode (disable, require, verify-full)",
                            here(mode),
                            t.name
                        );
                    }
                    if mode == "verify-full" && t.tls_ca_file.is_none() {
                        bail!(
                            "{}: targets.{}.tls = \"verify-full\" needs tls_ca_file (the CA that signed the target's certificate)",
                            here(mode),
                            t.name
                        );
                    }
                }
            }
            (other, _) => bail!(
                "{}: targets.{}.protocol '{other}' is not supported (supported: ssh, postgres, rdp)",
                here(other),
                t.name
            ),
        }
        if !t.address.contains(':')
            || t.address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
        {
            bail!(
                "{}: targets.{}.address '{}' must be host:port",
                here(&t.address),
                t.name,
                t.address
            );
        }
        if t.accounts.is_empty() {
            bail!("{}: targets.{} has no accounts", here(&t.name), t.name);
        }
        let mut seen = Vec::new();
        for a in &t.accounts {
            if a.secret.is_empty() {
                bail!(
                    "{}: targets.{}.accounts.{}.secret is empty",
                    here(&a.name),
                    t.name,
                    a.name
                );
            }
            if seen.contains(&a.name) {
                bail!(
                    "{}: targets.{} defines account '{}' twice",
                    here(&a.name),
                    t.name,
                    a.name
                );
            }
            seen.push(a.name.clone());
        }
        if t.protocol == "postgres" {
            pg_tls.insert(
                t.name.clone(),
                target_tls(t, &base)
                    .map_err(|e| anyhow!("{}: targets.{}: {e}", here(&t.name), t.name))?,
            );
        }
        if targets.insert(t.name.clone(), t.clone()).is_some() {
            bail!(
                "{}: targets.name '{}' is defined twice",
                here(&t.name),
                t.name
            );
        }
    }
    let mut policies = wardengate_policy::file::entries(
        config.policies.clone(),
        text,
        &path.display().to_string(),
        "policies",
    )?;
    policies.extend(crate::policy_files::load(&config, &base)?);
    wardengate_policy::check_set(&policies)?;
    Ok(Loaded {
        config,
        path: path.to_path_buf(),
        data_dir,
        users,
        targets,
        pg_tls,
        policies,
    })
}

fn target_tls(t: &Target, base: &Path) -> Result<wardengate_protocols::postgres::TargetTls> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    use wardengate_protocols::postgres::TargetTls;
    Ok(match t.tls.as_deref().unwrap_or("disable") {
        "require" => TargetTls::Require,
        "verify-full" => {
            let file = base.join(t.tls_ca_file.as_deref().unwrap_or(Path::new("")));
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&file)
                .with_context(|| format!("cannot read tls_ca_file {}", file.display()))?
            {
                let cert =
                    cert.with_context(|| format!("tls_ca_file {} is not PEM", file.display()))?;
                roots.add(cert).with_context(|| {
                    format!("tls_ca_file {}: unusable certificate", file.display())
                })?;
            }
            if roots.is_empty() {
                bail!("tls_ca_file {} holds no certificate", file.display());
            }
            TargetTls::VerifyFull(std::sync::Arc::new(roots))
        }
        _ => TargetTls::Disable,
    })
}

/// serde helper: durations written as `500ms`, `10s`, `5m`.
pub(crate) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("'{s}': {e}")))
    }

    /// The same for an optional setting.
    pub mod option {
        use serde::Deserializer;
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_line_and_key() {
        let text = "[[users]]\nname = \"alice\"\npublic_keys = [\"ssh-ed25519 notbase64\"]\n";
        let e = parse(text, Path::new("gw.toml")).unwrap_err().to_string();
        assert!(e.contains("gw.toml line 3"), "{e}");
        assert!(e.contains("users.alice.public_keys[0]"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let text = "[ssh]\nlisten = \"127.0.0.1:2222\"\nlisen = 1\n";
        let e = parse(text, Path::new("gw.toml")).unwrap_err().to_string();
        assert!(e.contains("gw.toml line 3"), "{e}");
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn groups_resolve_members() {
        let text = r#"
[[users]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$9Jb2ePnBiCIJUWOVVtP0kHbpv4x9sUE8C5bvpY4Qd1g"
[[groups]]
name = "sre"
members = ["alice"]
[[targets]]
name = "web-01"
address = "127.0.0.1:22"
accounts = [{ name = "root", secret = "web-01/root" }]
"#;
        let l = parse(text, Path::new("gw.toml")).expect("valid");
        assert_eq!(l.users["alice"].groups, vec!["sre".to_string()]);
        assert_eq!(l.targets["web-01"].accounts[0].username(), "root");
    }
}
