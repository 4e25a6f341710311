//! Loading: the TOML parsed, every name and reference checked, and the first problem named
//! with its file, line and key.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use russh::keys::PublicKey;

use super::model::*;

/// One step of a path into the configuration document: a key or an array index.
enum At<'a> {
    K(&'a str),
    I(usize),
}
use At::{I, K};

/// Where things are in the configuration text, by their path in the parsed document (toml's
/// own spans): `users[3].password_hash` is the line of that value, even when the same text
/// appears elsewhere or the name is defined twice.
struct Spans<'i> {
    text: &'i str,
    doc: Option<toml::Spanned<toml::de::DeTable<'i>>>,
}

impl<'i> Spans<'i> {
    fn new(text: &'i str) -> Spans<'i> {
        Spans {
            text,
            doc: toml::de::DeTable::parse(text).ok(),
        }
    }

    /// The line of the value at `path` (or of the deepest part of it that exists).
    fn line(&self, path: &[At<'_>]) -> Option<usize> {
        use toml::de::DeValue;
        let doc = self.doc.as_ref()?;
        let mut span = doc.span();
        let mut table = Some(doc.get_ref());
        let mut array: Option<&toml::de::DeArray<'_>> = None;
        for step in path {
            let next = match (step, table, array) {
                (K(k), Some(t), _) => t.get(*k),
                (I(i), _, Some(a)) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            (table, array) = match next.get_ref() {
                DeValue::Table(t) => (Some(t), None),
                DeValue::Array(a) => (None, Some(a)),
                _ => (None, None),
            };
        }
        Some(
            self.text[..span.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1,
        )
    }
}

pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text, path)
}

/// `N` bytes written as hex (surrounding spaces allowed).
fn hex_bytes<const N: usize>(h: &str) -> Option<[u8; N]> {
    hex::decode(h.trim()).ok()?.try_into().ok()
}

/// A user or target name is part of a login (`user:target`, `user#target`): it must be
/// non-empty and hold neither separator. `at` says where it was written.
fn login_part(name: &str, kind: &str, at: impl FnOnce() -> String) -> Result<()> {
    if name.is_empty() || name.contains([':', '#']) {
        bail!(
            "{}: {kind}.name '{name}' must be non-empty without ':' or '#'",
            at()
        );
    }
    Ok(())
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
    let spans = Spans::new(text);
    let here = |at: &[At<'_>]| {
        spans
            .line(at)
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
            here(&[K("ssh"), K("ciphers")])
        );
    }
    for (ci, c) in config.ssh.ciphers.iter().enumerate() {
        if !wardengate_protocols::ssh::SUPPORTED_CIPHERS.contains(&c.as_str()) {
            bail!(
                "{}: ssh.ciphers entry '{c}' is not supported (supported: {})",
                here(&[K("ssh"), K("ciphers"), I(ci)]),
                wardengate_protocols::ssh::SUPPORTED_CIPHERS.join(", ")
            );
        }
    }
    if let Some(u) = &config.approvals.webhook_url {
        if !(u.starts_with("https://") || u.starts_with("http://"))
            || u.parse::<reqwest::Url>().is_err()
        {
            bail!(
                "{}: approvals.webhook_url '{u}' is not an http(s) URL",
                here(&[K("approvals"), K("webhook_url")])
            );
        }
    }
    if config.api.plain_http && !config.api.listen.ip().is_loopback() {
        bail!(
            "{}: api.plain_http is only allowed on a loopback listen address ({} is not): API \
             tokens would travel in clear; remove it to serve TLS",
            here(&[K("api"), K("plain_http")]),
            config.api.listen
        );
    }
    crate::identity::relying_party(
        &config.identity,
        config.api.listen.port(),
        config.api.scheme(),
    )
    .map_err(|e| anyhow!("{}: identity: {e}", here(&[K("identity")])))?;
    if let Some((key, why)) = config.console.problem() {
        bail!("{}: console.{key} {why}", here(&[K("console"), K(key)]));
    }
    for (ri, r) in config.roles.iter().enumerate() {
        for (ci, c) in r.can.iter().enumerate() {
            if super::Perm::parse(c).is_none() {
                bail!(
                    "{}: roles.{}: '{c}' is not a permission (one of {})",
                    here(&[K("roles"), I(ri), K("can"), I(ci)]),
                    r.name,
                    super::Perm::ALL.map(super::Perm::name).join(", ")
                );
            }
        }
    }
    let mut token_names = std::collections::HashSet::new();
    for (ti, t) in config.api_tokens.iter().enumerate() {
        let at = |key| here(&[K("api_tokens"), I(ti), K(key)]);
        if t.name.trim().is_empty() || !token_names.insert(t.name.as_str()) {
            bail!(
                "{}: api_tokens.name '{}' is empty or defined twice",
                at("name"),
                t.name
            );
        }
        if hex_bytes::<32>(&t.sha256).is_none() {
            bail!(
                "{}: api_tokens.{}.sha256 must be 64 hex digits (`wardengate new-token` prints them)",
                at("sha256"),
                t.name
            );
        }
        for (ci, c) in t.can.iter().enumerate() {
            if super::Perm::parse(c).is_none() {
                bail!(
                    "{}: api_tokens.{}: '{c}' is not a permission (one of {})",
                    here(&[K("api_tokens"), I(ti), K("can"), I(ci)]),
                    t.name,
                    super::Perm::ALL.map(super::Perm::name).join(", ")
                );
            }
        }
    }
    let mut users = HashMap::new();
    for (ui, u) in config.users.iter().enumerate() {
        let user = |key: &'static str| here(&[K("users"), I(ui), K(key)]);
        login_part(&u.name, "users", || user("name"))?;
        let mut keys = Vec::new();
        for (i, line) in u.public_keys.iter().enumerate() {
            let key = PublicKey::from_openssh(line.trim()).map_err(|e| {
                anyhow!(
                    "{}: users.{}.public_keys[{i}] is not an OpenSSH public key: {e}",
                    here(&[K("users"), I(ui), K("public_keys"), I(i)]),
                    u.name
                )
            })?;
            keys.push(key);
        }
        if let Some(h) = &u.password_hash {
            argon2::password_hash::phc::PasswordHash::new(h).map_err(|e| {
                anyhow!(
                    "{}: users.{}.password_hash is not an argon2 PHC string: {e}",
                    user("password_hash"),
                    u.name
                )
            })?;
        }
        let scram = match &u.scram_sha_256 {
            Some(v) => Some(
                wardengate_protocols::postgres::Verifier::parse(v).map_err(|e| {
                    anyhow!(
                        "{}: users.{}.scram_sha_256 is {e}",
                        user("scram_sha_256"),
                        u.name
                    )
                })?,
            ),
            None => None,
        };
        let nt_hash = match &u.nt_hash {
            Some(h) => Some(hex_bytes::<16>(h).ok_or_else(|| {
                anyhow!(
                    "{}: users.{}.nt_hash must be 32 hex digits (the NT hash that \
                             `wardengate hash-password` prints)",
                    user("nt_hash"),
                    u.name
                )
            })?),
            None => None,
        };
        if keys.is_empty() && u.password_hash.is_none() && scram.is_none() && nt_hash.is_none() {
            bail!(
                "{}: users.{} has neither public_keys nor password_hash",
                user("name"),
                u.name
            );
        }
        let api_token = match &u.api_token_sha256 {
            Some(h) => Some(hex_bytes::<32>(h).ok_or_else(|| {
                anyhow!(
                    "{}: users.{}.api_token_sha256 must be 64 hex digits (the sha256 \
                             that `wardengate new-token` prints)",
                    user("api_token_sha256"),
                    u.name
                )
            })?),
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
            bail!("{}: users.name '{}' is defined twice", user("name"), u.name);
        }
    }
    for (gi, g) in config.groups.iter().enumerate() {
        for (mi, m) in g.members.iter().enumerate() {
            let user = users.get_mut(m).ok_or_else(|| {
                anyhow!(
                    "{}: groups.{}.members names unknown user '{m}'",
                    here(&[K("groups"), I(gi), K("members"), I(mi)]),
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
    for (ti, t) in config.targets.iter().enumerate() {
        let target = |key: &'static str| here(&[K("targets"), I(ti), K(key)]);
        login_part(&t.name, "targets", || target("name"))?;
        if targets.contains_key(&t.name) {
            bail!(
                "{}: targets.name '{}' is defined twice",
                target("name"),
                t.name
            );
        }
        use wardengate_api::Protocol;
        match (t.protocol, &t.tls) {
            (Protocol::Network, _) => bail!(
                "{}: targets.{}: 'network' is not a target's protocol: what access sessions open \
                 is a [[resources]] entry (granted by policies with protocols = [\"network\"])",
                target("protocol"),
                t.name
            ),
            (Protocol::Ssh | Protocol::Rdp | Protocol::Tcp, None)
                if t.auth_methods.is_none() && t.database.is_none() => {}
            (Protocol::Ssh | Protocol::Rdp | Protocol::Tcp, _) => bail!(
                "{}: targets.{}: tls, auth_methods and database apply to postgres targets only",
                target("protocol"),
                t.name
            ),
            (Protocol::Postgres, _) => {
                for (mi, m) in t.auth_methods.iter().flatten().enumerate() {
                    if !wardengate_protocols::postgres::AUTH_METHODS.contains(&m.as_str()) {
                        bail!(
                            "{}: targets.{}.auth_methods entry '{m}' is not a method ({})",
                            here(&[K("targets"), I(ti), K("auth_methods"), I(mi)]),
                            t.name,
                            wardengate_protocols::postgres::AUTH_METHODS.join(", ")
                        );
                    }
                }
                if let Some(mode) = &t.tls {
                    if !["disable", "require", "verify-full"].contains(&mode.as_str()) {
                        bail!(
                            "{}: targets.{}.tls '{mode}' is not a mode (disable, require, verify-full)",
                            target("tls"),
                            t.name
                        );
                    }
                    if mode == "verify-full" && t.tls_ca_file.is_none() {
                        bail!(
                            "{}: targets.{}.tls = \"verify-full\" needs tls_ca_file (the CA that signed the target's certificate)",
                            target("tls"),
                            t.name
                        );
                    }
                }
            }
        }
        let tcp = super::tcp_target(t)
            .map_err(|(key, e)| anyhow!("{}: targets.{}.{key}: {e}", target(key), t.name))?;
        if let Some(checked) = tcp {
            targets.insert(t.name.clone(), checked);
            continue;
        }
        if !t.address.contains(':')
            || t.address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
        {
            bail!(
                "{}: targets.{}.address '{}' must be host:port",
                target("address"),
                t.name,
                t.address
            );
        }
        if t.accounts.is_empty() {
            bail!("{}: targets.{} has no accounts", target("name"), t.name);
        }
        let mut seen = Vec::new();
        for (ai, a) in t.accounts.iter().enumerate() {
            let account =
                |key: &'static str| here(&[K("targets"), I(ti), K("accounts"), I(ai), K(key)]);
            if a.secret.is_empty() {
                bail!(
                    "{}: targets.{}.accounts.{}.secret is empty",
                    account("secret"),
                    t.name,
                    a.name
                );
            }
            if seen.contains(&a.name) {
                bail!(
                    "{}: targets.{} defines account '{}' twice",
                    account("name"),
                    t.name,
                    a.name
                );
            }
            seen.push(a.name.clone());
        }
        if t.protocol == wardengate_api::Protocol::Postgres {
            pg_tls.insert(
                t.name.clone(),
                target_tls(t, &base)
                    .map_err(|e| anyhow!("{}: targets.{}: {e}", target("name"), t.name))?,
            );
        }
        targets.insert(t.name.clone(), t.clone());
    }
    let mut policies = wardengate_policy::file::entries(
        config.policies.clone(),
        text,
        &path.display().to_string(),
        "policies",
    )?;
    policies.extend(super::policy_files::load(&config, &base)?);
    wardengate_policy::check_set(&policies)?;
    let resources = network(&config, &here)?;
    Ok(Loaded {
        resources,
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
    use wardengate_protocols::postgres::TargetTls;
    Ok(match t.tls.as_deref().unwrap_or("disable") {
        "require" => TargetTls::Require,
        "verify-full" => {
            let file = base.join(t.tls_ca_file.as_deref().unwrap_or(Path::new("")));
            TargetTls::VerifyFull(std::sync::Arc::new(ca_roots(&file, "tls_ca_file")?))
        }
        _ => TargetTls::Disable,
    })
}

/// The certificates of a PEM CA file (`what` names the setting in messages).
pub fn ca_roots(file: &Path, what: &str) -> Result<tokio_rustls::rustls::RootCertStore> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file)
        .with_context(|| format!("cannot read {what} {}", file.display()))?
    {
        let cert = cert.with_context(|| format!("{what} {} is not PEM", file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{what} {}: unusable certificate", file.display()))?;
    }
    if roots.is_empty() {
        bail!("{what} {} holds no certificate", file.display());
    }
    Ok(roots)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

/// `[access]`, `[[resources]]` and `api.trusted_proxies`, checked; resources by name.
fn network(
    config: &Config,
    here: &dyn Fn(&[At<'_>]) -> String,
) -> Result<std::collections::BTreeMap<String, super::Resource>> {
    super::check_access(&config.access)
        .map_err(|(key, e)| anyhow!("{}: access.{key}: {e}", here(&[K("access"), K(key)])))?;
    for (i, p) in config.api.trusted_proxies.iter().enumerate() {
        if crate::access::Cidr::parse(p).is_none() {
            bail!(
                "{}: api.trusted_proxies entry '{p}' is not an address or CIDR (10.0.0.1, 10.0.0.0/8, fd00::/8)",
                here(&[K("api"), K("trusted_proxies"), I(i)])
            );
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for (ri, r) in config.resources.iter().enumerate() {
        let at = |key: &str| here(&[K("resources"), I(ri), K(key)]);
        super::check_resource(r)
            .map_err(|(key, e)| anyhow!("{}: resources.{}.{key}: {e}", at(key), r.name))?;
        if out.insert(r.name.clone(), r.clone()).is_some() {
            bail!("{}: resources.{} is defined twice", at("name"), r.name);
        }
        // One nftables set per resource: two resources on one set would count apart and remove
        // each other's addresses.
        let set_of = |x: &super::Resource| (x.netns.clone(), x.table().to_string(), x.set());
        if let Some(other) = config.resources[..ri].iter().find(|o| {
            o.backend == super::BackendKind::Nftables
                && r.backend == super::BackendKind::Nftables
                && set_of(o) == set_of(r)
        }) {
            bail!(
                "{}: resources.{}: set {} (table {}) is already resource {}'s; give each its own set",
                at("set"),
                r.name,
                r.set(),
                r.table(),
                other.name
            );
        }
    }
    Ok(out)
}
