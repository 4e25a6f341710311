//! Where port forwarding (`ssh -L`, `ssh -W`: direct-tcpip, opened by the target's sshd) may go.
//!
//! A policy's `forward_to` lists destinations as `DEST[:PORTS]`:
//! - `DEST`: `target` (the target's own host, as its address names it), a host name
//!   (`db.internal`, or `*.internal` for any name under it), an IPv4 address or CIDR
//!   (`10.1.2.3`, `10.0.0.0/8`), an IPv6 address or prefix in brackets (`[fd00::/8]`), or `*`;
//! - `PORTS`: `*` (the default), a port (`5432`) or a range (`8000-8099`).
//!
//! Absent or empty, it is `["target"]`: forwarding reaches the target host itself only.
//! Loopback (`127.0.0.0/8`, `::1`, `localhost`) and link-local addresses (`169.254.0.0/16`, where
//! clouds serve instance credentials, and `fe80::/10`) are refused unless an entry names them
//! explicitly (`127.0.0.1:5432`, `localhost:*`, `169.254.169.254`): `*`, wide CIDRs and `target`
//! never open them. The gateway checks the host as the client wrote it; a name is matched as a
//! name (the target resolves it, not the gateway).

use std::net::IpAddr;

/// One `forward_to` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    dest: Dest,
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Target,
    Any,
    /// A host name, lower case; `suffix` for `*.name`.
    Name {
        name: String,
        suffix: bool,
    },
    Net {
        addr: IpAddr,
        prefix: u8,
    },
}

impl Rule {
    /// Parse `DEST[:PORTS]`; the error says what is wrong in words.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        let (dest, ports) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{s}': an IPv6 destination needs its closing ']'"))?;
            let ports = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("'{s}': write [IPV6]:PORTS, e.g. [fd00::1]:5432"))?,
                ),
            };
            (net(inside, s)?, ports)
        } else {
            let (d, p) = match s.rsplit_once(':') {
                Some((d, p)) => (d, Some(p)),
                None => (s, None),
            };
            let dest = match d {
                "" => return Err("an empty destination: write DEST[:PORTS], e.g. target:22".into()),
                "target" => Dest::Target,
                "*" => Dest::Any,
                d if d.contains('/') || d.parse::<IpAddr>().is_ok() => net(d, s)?,
                d => {
                    let (name, suffix) = match d.strip_prefix("*.") {
                        Some(n) => (n, true),
                        None => (d, false),
                    };
                    let ok = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                    if !ok {
                        return Err(format!(
                            "'{s}': '{d}' is not a host name, address, CIDR, `target` or `*`"
                        ));
                    }
                    Dest::Name {
                        name: name.to_ascii_lowercase(),
                        suffix,
                    }
                }
            };
            (dest, p)
        };
        let ports = match ports {
            None | Some("*") => (1, 65535),
            Some(p) => {
                let port = |x: &str| {
                    x.parse::<u16>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("'{s}': '{x}' is not a port (1-65535)"))
                };
                match p.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (port(a)?, port(b)?);
                        if a > b {
                            return Err(format!("'{s}': the port range {a}-{b} is backwards"));
                        }
                        (a, b)
                    }
                    None => {
                        let n = port(p)?;
                        (n, n)
                    }
                }
            }
        };
        Ok(Rule { dest, ports })
    }

    /// Whether this entry names loopback or link-local explicitly (so it may open them).
    fn names_special(&self) -> bool {
        match &self.dest {
            Dest::Name { name, .. } => is_localhost(name),
            Dest::Net { addr, prefix } => {
                special(*addr) && *prefix >= if addr.is_ipv4() { 8 } else { 10 }
            }
            Dest::Target | Dest::Any => false,
        }
    }

    fn matches(&self, host: &Host, port: u16, target_host: &str) -> bool {
        if port < self.ports.0 || port > self.ports.1 {
            return false;
        }
        match (&self.dest, host) {
            (Dest::Any, _) => true,
            (Dest::Target, h) => h.same_as(target_host),
            (Dest::Name { name, suffix }, Host::Name(h)) => {
                if *suffix {
                    h.len() > name.len()
                        && h.ends_with(name.as_str())
                        && h.as_bytes()[h.len() - name.len() - 1] == b'.'
                } else {
                    h == name
                }
            }
            (Dest::Net { addr, prefix }, Host::Ip(ip)) => in_net(*ip, *addr, *prefix),
            _ => false,
        }
    }
}

fn net(d: &str, whole: &str) -> Result<Dest, String> {
    let (a, p) = match d.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (d, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("'{whole}': '{a}' is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("'{whole}': '/{p}' is not a prefix length (0-{max})"))?,
        None => max,
    };
    Ok(Dest::Net { addr, prefix })
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Loopback or link-local.
fn special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => special(IpAddr::V4(v4)),
            None => {
                v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        },
    }
}

/// The host a client asked for.
enum Host {
    Ip(IpAddr),
    Name(String),
    /// A number the target's resolver may read as an address (`127.1`, `2130706433`,
    /// `0x7f.0.0.1`, `0177.0.0.1`): never allowed, since no rule can say where it leads.
    Numeric,
}

/// Whether `h` is one of the legacy numeric forms `inet_aton` accepts (it starts with a digit
/// and holds only hex digits, dots and `x`) without being a canonical address.
fn numeric_form(h: &str) -> bool {
    h.starts_with(|c: char| c.is_ascii_digit())
        && h.chars()
            .all(|c| c.is_ascii_hexdigit() || c == '.' || c == 'x' || c == 'X')
}

impl Host {
    fn parse(h: &str) -> Host {
        let h = h.trim().trim_start_matches('[').trim_end_matches(']');
        match h.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) if numeric_form(h.trim_end_matches('.')) => Host::Numeric,
            Err(_) => Host::Name(h.trim_end_matches('.').to_ascii_lowercase()),
        }
    }

    fn special(&self) -> bool {
        match self {
            Host::Ip(ip) => special(*ip),
            Host::Name(n) => is_localhost(n),
            Host::Numeric => true,
        }
    }

    fn same_as(&self, target_host: &str) -> bool {
        match (self, Host::parse(target_host)) {
            (Host::Ip(a), Host::Ip(b)) => *a == b,
            (Host::Name(a), Host::Name(b)) => *a == b,
            _ => false,
        }
    }
}

/// Decide a forward to `host:port` under `rules` (empty: `target` only) for a target whose
/// address names `target_host`. `Err` says why not, for the user and the audit.
pub fn check(rules: &[String], host: &str, port: u32, target_host: &str) -> Result<(), String> {
    let Ok(port) = u16::try_from(port) else {
        return Err(format!("port {port} is not a TCP port"));
    };
    let parsed: Vec<Rule> = if rules.is_empty() {
        vec![Rule {
            dest: Dest::Target,
            ports: (1, 65535),
        }]
    } else {
        rules.iter().filter_map(|r| Rule::parse(r).ok()).collect()
    };
    let h = Host::parse(host);
    if matches!(h, Host::Numeric) {
        return Err(format!(
            "{host}:{port} is not a canonical address (a number the target could read as \
             127.0.0.1 or 169.254.169.254): write the address as a.b.c.d or a host name"
        ));
    }
    let special = h.special();
    let allowed = parsed
        .iter()
        .filter(|r| !special || r.names_special())
        .any(|r| r.matches(&h, port, target_host));
    if allowed {
        return Ok(());
    }
    if special {
        return Err(format!(
            "{host}:{port} is a loopback or link-local address, which forwarding reaches only \
             when the policy's forward_to names it explicitly"
        ));
    }
    Err(format!(
        "{host}:{port} is not in the policy's forward_to ({})",
        if rules.is_empty() {
            "not set: the target host only".to_string()
        } else {
            rules.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_is_the_target_host_only() {
        assert!(check(&[], "web-01.internal", 8080, "web-01.internal").is_ok());
        assert!(check(&[], "10.0.0.5", 22, "10.0.0.5").is_ok());
        assert!(check(&[], "db.internal", 5432, "web-01.internal").is_err());
        // A target on loopback (dev mode, tests) does not open loopback by default.
        assert!(check(&[], "127.0.0.1", 8080, "127.0.0.1").is_err());
    }

    #[test]
    fn loopback_and_link_local_need_an_explicit_entry() {
        let wide = rules(&["*", "0.0.0.0/0", "target"]);
        for h in [
            "127.0.0.1",
            "127.9.9.9",
            "localhost",
            "169.254.169.254",
            "::1",
            "[::1]",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            let e = check(&wide, h, 80, "127.0.0.1").expect_err(h);
            assert!(e.contains("loopback or link-local"), "{e}");
        }
        assert!(check(&rules(&["127.0.0.1:5432"]), "127.0.0.1", 5432, "x").is_ok());
        assert!(check(&rules(&["127.0.0.1:5432"]), "127.0.0.1", 8080, "x").is_err());
        assert!(check(&rules(&["localhost:*"]), "localhost", 80, "x").is_ok());
        assert!(check(&rules(&["169.254.169.254"]), "169.254.169.254", 80, "x").is_ok());
        assert!(check(&rules(&["*"]), "db.internal", 5432, "x").is_ok());
    }

    #[test]
    fn numeric_host_forms_are_refused_even_under_a_wildcard() {
        let any = rules(&["*", "0.0.0.0/0"]);
        for h in [
            "2130706433",
            "127.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "169.254.43518",
            "0",
            "0x7f000001",
            "127.0.0.1.",
        ] {
            let e = check(&any, h, 80, "x").expect_err(h);
            assert!(
                e.contains("canonical") || e.contains("loopback"),
                "{h}: {e}"
            );
        }
        assert!(
            check(&any, "1password.example", 443, "x").is_ok(),
            "a name that starts with a digit"
        );
        assert!(check(&any, "10.1.2.3", 443, "x").is_ok());
    }

    #[test]
    fn names_cidrs_and_ports() {
        let r = rules(&["*.internal:5432", "10.0.0.0/8:8000-8099", "[fd00::/8]:443"]);
        assert!(check(&r, "db.internal", 5432, "x").is_ok());
        assert!(check(&r, "DB.Internal.", 5432, "x").is_ok());
        assert!(check(&r, "internal", 5432, "x").is_err());
        assert!(check(&r, "evilinternal", 5432, "x").is_err());
        assert!(check(&r, "db.internal", 22, "x").is_err());
        assert!(check(&r, "10.200.0.1", 8042, "x").is_ok());
        assert!(check(&r, "10.200.0.1", 8100, "x").is_err());
        assert!(check(&r, "11.0.0.1", 8042, "x").is_err());
        assert!(check(&r, "fd12::1", 443, "x").is_ok());
        assert!(check(&r, "fe80::1", 443, "x").is_err());
        assert!(check(&r, "db.internal", 70000, "x").is_err());
    }

    #[test]
    fn bad_entries_say_why() {
        for (bad, want) in [
            ("", "empty destination"),
            ("db.internal:0", "not a port"),
            ("db.internal:99999", "not a port"),
            ("10.0.0.0/33", "prefix length"),
            ("[fd00::1", "closing ']'"),
            ("db_x!:22", "not a host name"),
            ("h:9-3", "backwards"),
        ] {
            let e = Rule::parse(bad).expect_err(bad);
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
