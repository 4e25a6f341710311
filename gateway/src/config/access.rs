//! `[access]` and `[[resources]]`: network access sessions, EntryGuard style. A resource is
//! something reached directly (not through the gateway) whose ingress the gateway opens for one
//! address at a time: an element of an nftables set, or the operator's own apply/revoke scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use wardengate_policy::Dur;

/// Deployment-wide settings of access sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// The durations people may pick (`wgctl access start --duration`, the console); default
    /// 1h, 2h, 4h, 8h, 12h, 16h, 24h.
    #[serde(default = "default_durations")]
    pub durations: Vec<Dur>,
    /// What `wgctl access start` without `--duration` asks for; default the shortest offered.
    pub default_duration: Option<Dur>,
    /// The longest session the deployment allows (e.g. `4h` on a small plan); a policy's
    /// `max_session_duration` may lower it further.
    #[serde(default = "default_max_duration")]
    pub max_duration: Dur,
    /// Live access sessions one person may hold at once; absent: no limit.
    pub max_sessions_per_user: Option<u32>,
    /// How long one backend call (`nft`, an apply or revoke script) may take.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Dur,
    /// How often the removal of a rule that failed to go is tried again.
    #[serde(default = "default_retry_every")]
    pub retry_every: Dur,
}

impl Default for AccessSection {
    fn default() -> Self {
        AccessSection {
            durations: default_durations(),
            default_duration: None,
            max_duration: default_max_duration(),
            max_sessions_per_user: None,
            command_timeout: default_command_timeout(),
            retry_every: default_retry_every(),
        }
    }
}

fn default_durations() -> Vec<Dur> {
    wardengate_api::DURATIONS
        .iter()
        .filter_map(|d| wardengate_policy::duration::parse(d).ok().map(Dur))
        .collect()
}
fn default_max_duration() -> Dur {
    Dur::secs(24 * 3600)
}
fn default_command_timeout() -> Dur {
    Dur::secs(30)
}
fn default_retry_every() -> Dur {
    Dur::secs(30)
}

impl AccessSection {
    /// The duration asked for when none is given.
    pub fn default_duration(&self) -> Dur {
        self.default_duration
            .or_else(|| self.durations.iter().min().copied())
            .unwrap_or(Dur::secs(3600))
    }
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout.get()
    }
}

/// A duration as access sessions name it: whole hours up to two days in hours (`24h`, as the
/// offered set says it, not `1d`), anything else as policies write it.
pub fn shown(d: Dur) -> String {
    let secs = d.get().as_secs();
    match secs.is_multiple_of(3600) && secs > 0 && secs <= 48 * 3600 && d.get().subsec_nanos() == 0
    {
        true => format!("{}h", secs / 3600),
        false => d.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Nftables,
    Command,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Nftables => "nftables",
            BackendKind::Command => "command",
        }
    }
}

/// One network resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub backend: BackendKind,
    /// nftables: the table (family `inet`); default `wardengate`.
    pub table: Option<String>,
    /// nftables: the set of allowed IPv4 addresses; default `allow_<name>` (`-` and `.` made
    /// `_`). IPv6 addresses go to `<set>_v6`. Both are created (with the table) when missing;
    /// the chain that uses them (`ip saddr @allow_x accept`) is the operator's.
    pub set: Option<String>,
    /// nftables: the network namespace (`ip netns` name) whose firewall this is; default the
    /// gateway's own.
    pub netns: Option<String>,
    /// command: the program (and its first arguments) that allows an address; the resource,
    /// the address and the session id are appended. A non-zero exit is a failure carrying its
    /// stderr. It must be idempotent: the gateway calls it again at start for rules it cannot
    /// check (without `check`).
    #[serde(default)]
    pub apply: Vec<String>,
    /// command: the program that removes the rule (same arguments).
    #[serde(default)]
    pub revoke: Vec<String>,
    /// command, optional: exits 0 when the rule is in place (same arguments), so that a restart
    /// re-applies only what is missing.
    #[serde(default)]
    pub check: Vec<String>,
    /// Every gateway of the cluster reaches this resource's backend alike (a cloud API behind
    /// the scripts, a firewall they all manage): a rule is removed only when no live session on
    /// any gateway holds it, and a lost gateway's sessions on such resources are taken over by
    /// the gateway that notices. Default `false`: the rules belong to the gateway that applied
    /// them (its own host's nftables).
    #[serde(default)]
    pub shared: bool,
}

impl Resource {
    pub fn table(&self) -> &str {
        self.table.as_deref().unwrap_or("wardengate")
    }
    /// The IPv4 set; the IPv6 one is this with `_v6`.
    pub fn set(&self) -> String {
        self.set
            .clone()
            .unwrap_or_else(|| format!("allow_{}", self.name.replace(['-', '.'], "_")))
    }
    pub fn tag_pairs(&self) -> Vec<(String, String)> {
        self.tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// An nftables identifier (table, set): a letter, then letters, digits, `_`; short enough for
/// `_v6` to fit.
fn nft_name(s: &str) -> bool {
    s.len() <= 60
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A resource as the configuration may say it; an error names the key at fault.
pub fn check_resource(r: &Resource) -> Result<(), (&'static str, String)> {
    if r.name.is_empty()
        || r.name.len() > 64
        || !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err((
            "name",
            format!(
                "'{}' must be 1 to 64 letters, digits, '-', '_' or '.'",
                r.name
            ),
        ));
    }
    match r.backend {
        BackendKind::Nftables => {
            if let Some(k) = [
                ("apply", &r.apply),
                ("revoke", &r.revoke),
                ("check", &r.check),
            ]
            .iter()
            .find(|(_, v)| !v.is_empty())
            .map(|(k, _)| *k)
            {
                return Err((k, "applies to backend = \"command\" only".into()));
            }
            if !nft_name(r.table()) {
                return Err(("table", format!("'{}' is not an nftables name (a letter, then letters, digits, _; at most 60)", r.table())));
            }
            if !nft_name(&r.set()) {
                return Err(("set", format!("'{}' is not an nftables name (a letter, then letters, digits, _; at most 60)", r.set())));
            }
            if let Some(ns) = &r.netns {
                let ok = !ns.is_empty()
                    && ns.len() <= 64
                    && !ns.starts_with(['.', '-'])
                    && ns
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !ok {
                    return Err(("netns", format!("'{ns}' is not a network namespace name")));
                }
            }
        }
        BackendKind::Command => {
            if let Some(k) = [
                ("table", r.table.is_some()),
                ("set", r.set.is_some()),
                ("netns", r.netns.is_some()),
            ]
            .iter()
            .find(|(_, set)| *set)
            .map(|(k, _)| *k)
            {
                return Err((k, "applies to backend = \"nftables\" only".into()));
            }
            for (k, v) in [("apply", &r.apply), ("revoke", &r.revoke)] {
                if v.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err((k, "a command backend needs apply and revoke programs, e.g. [\"/usr/local/bin/allow-ip\"]".into()));
                }
            }
        }
    }
    Ok(())
}

/// `[access]` as the configuration may say it; an error names the key at fault.
pub fn check_access(a: &AccessSection) -> Result<(), (&'static str, String)> {
    if a.durations.is_empty() || a.durations.iter().any(|d| d.is_zero()) {
        return Err((
            "durations",
            "list at least one duration longer than 0".into(),
        ));
    }
    if a.max_duration.is_zero() {
        return Err(("max_duration", "must be longer than 0".into()));
    }
    if let Some(d) = a.default_duration {
        if !a.durations.contains(&d) {
            return Err(("default_duration", format!("{d} is not among durations")));
        }
    }
    if a.max_sessions_per_user == Some(0) {
        return Err((
            "max_sessions_per_user",
            "0 would allow nothing; leave it out for no limit".into(),
        ));
    }
    if a.retry_every.is_zero() {
        return Err(("retry_every", "must be longer than 0".into()));
    }
    if a.command_timeout.is_zero() {
        return Err(("command_timeout", "must be longer than 0".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(t: &str) -> Resource {
        toml::from_str(&format!("name = \"db-1\"\n{t}")).expect("toml")
    }

    #[test]
    fn resources_are_checked_key_by_key() {
        let r = res("backend = \"nftables\"");
        assert!(check_resource(&r).is_ok());
        assert_eq!(r.set(), "allow_db_1");
        assert_eq!(r.table(), "wardengate");
        let key = |t: &str| check_resource(&res(t)).err().map(|(k, _)| k);
        assert_eq!(
            key("backend = \"nftables\"\napply = [\"x\"]"),
            Some("apply")
        );
        assert_eq!(key("backend = \"nftables\"\nset = \"9bad\""), Some("set"));
        assert_eq!(
            key("backend = \"nftables\"\ntable = \"a b\""),
            Some("table")
        );
        assert_eq!(
            key("backend = \"nftables\"\nnetns = \"../x\""),
            Some("netns")
        );
        assert_eq!(
            key("backend = \"nftables\"\nnetns = \"-all\""),
            Some("netns")
        );
        assert_eq!(
            key("backend = \"command\"\napply = [\"/a\"]"),
            Some("revoke")
        );
        assert_eq!(
            key("backend = \"command\"\napply = [\"/a\"]\nrevoke = [\"/b\"]\nnetns = \"n\""),
            Some("netns")
        );
        assert!(check_resource(&res(
            "backend = \"command\"\napply = [\"/a\"]\nrevoke = [\"/b\"]"
        ))
        .is_ok());
        let bad: Resource = toml::from_str("name = \"a b\"\nbackend = \"nftables\"").expect("toml");
        assert_eq!(check_resource(&bad).err().map(|(k, _)| k), Some("name"));
        let a = AccessSection::default();
        assert!(check_access(&a).is_ok());
        assert_eq!(a.default_duration(), Dur::secs(3600));
        assert_eq!(a.durations.len(), 7);
        assert_eq!(shown(Dur::secs(24 * 3600)), "24h");
        assert_eq!(shown(Dur::secs(3)), "3s");
        assert_eq!(shown(Dur::secs(90 * 60)), "90m");
        let a: AccessSection =
            toml::from_str("durations = [\"2h\"]\ndefault_duration = \"1h\"").expect("toml");
        assert_eq!(
            check_access(&a).err().map(|(k, _)| k),
            Some("default_duration")
        );
    }
}
