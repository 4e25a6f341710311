//! `[tcp]`, the listener `wgctl proxy` connects to, and what a `protocol = "tcp"` target may say.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::model::{Account, Target};

/// The brokered-TCP listener: TLS only; each connection starts with an authorization token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    pub listen: SocketAddr,
    /// `host:port` that clients reach the listener at, put in authorization tokens; default:
    /// `listen` (its address, or `127.0.0.1` for an unspecified one).
    pub public_addr: Option<String>,
    /// PEM certificate chain and key, relative to `data_dir`; a self-signed pair is generated
    /// when both are missing. `wgctl proxy` pins the certificate's sha256, which the token
    /// carries, so no CA is needed.
    #[serde(default = "default_cert")]
    pub tls_cert_file: PathBuf,
    #[serde(default = "default_key")]
    pub tls_key_file: PathBuf,
    /// How long a host may take to accept a connection.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// From accept to a checked token; overrides `security.auth_timeout` for this listener.
    #[serde(default, with = "duration::option")]
    pub auth_timeout: Option<Duration>,
}

fn default_cert() -> PathBuf {
    PathBuf::from("tcp_tls.crt")
}
fn default_key() -> PathBuf {
    PathBuf::from("tcp_tls.key")
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TcpSection {
    /// Where clients reach the listener bound at `bound`.
    pub fn public(&self, bound: SocketAddr) -> String {
        match &self.public_addr {
            Some(a) => a.clone(),
            None if bound.ip().is_unspecified() => format!("127.0.0.1:{}", bound.port()),
            None => bound.to_string(),
        }
    }
}

/// Connections a session may carry when the target does not say.
pub const DEFAULT_CONNECTION_LIMIT: i64 = 1;
/// How long a session may last when the target does not say (8 hours).
pub const DEFAULT_MAX_SECONDS: u64 = 8 * 3600;
/// The longest `session_max_seconds` (a year).
pub const MAX_SECONDS_CAP: u64 = 365 * 24 * 3600;
/// The account every TCP session is counted under (the client brings its own credentials).
pub const TCP_ACCOUNT: &str = "-";

/// Whether `s` is `host:port` with a port number.
pub fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// A TCP target as loaded (`None` for other protocols, which may not use the TCP keys). An
/// error names the key at fault.
pub fn tcp_target(t: &Target) -> Result<Option<Target>, (&'static str, String)> {
    let tcp_only = !t.hosts.is_empty()
        || t.default_port.is_some()
        || t.session_connection_limit.is_some()
        || t.session_max_seconds.is_some();
    match t.protocol {
        wardengate_api::Protocol::Tcp => check_target(t).map(Some),
        _ if tcp_only => Err((
            "protocol",
            "hosts, default_port, session_connection_limit and session_max_seconds apply to \
             tcp targets only"
                .into(),
        )),
        _ => Ok(None),
    }
}

/// A TCP target as loaded: its hosts resolved to `host:port`, its limits set, and the one
/// account sessions are counted under. An error names the key at fault.
fn check_target(t: &Target) -> Result<Target, (&'static str, String)> {
    if !t.accounts.is_empty() {
        return Err((
            "accounts",
            "a tcp target has no accounts: the gateway carries the client's bytes and injects no \
             secret (the client brings its own credentials)"
                .into(),
        ));
    }
    let mut hosts = Vec::new();
    match (t.address.is_empty(), t.hosts.is_empty()) {
        (false, false) => return Err(("hosts", "give either address or hosts, not both".into())),
        (true, true) => {
            return Err((
                "address",
                "a tcp target needs address = \"host:port\" or hosts = [...]".into(),
            ))
        }
        (false, true) if !is_host_port(&t.address) => {
            return Err(("address", format!("'{}' must be host:port", t.address)))
        }
        (false, true) => hosts.push(t.address.clone()),
        (true, false) => {
            for h in &t.hosts {
                let full = match (is_host_port(h), t.default_port) {
                    (true, _) => h.clone(),
                    (false, Some(p)) if !h.is_empty() && !h.contains(':') && p > 0 => {
                        format!("{h}:{p}")
                    }
                    (false, Some(_)) => {
                        return Err(("hosts", format!("'{h}' must be host or host:port")))
                    }
                    (false, None) => {
                        return Err((
                            "default_port",
                            format!("host '{h}' names no port: add :PORT or set default_port"),
                        ))
                    }
                };
                hosts.push(full);
            }
        }
    }
    let limit = t
        .session_connection_limit
        .unwrap_or(DEFAULT_CONNECTION_LIMIT);
    if limit == 0 || limit < -1 {
        return Err((
            "session_connection_limit",
            format!("{limit} is not a limit: use 1 or more, or -1 for unlimited"),
        ));
    }
    let max = t.session_max_seconds.unwrap_or(DEFAULT_MAX_SECONDS);
    if max == 0 || max > MAX_SECONDS_CAP {
        return Err((
            "session_max_seconds",
            format!("{max} is out of range: 1 to {MAX_SECONDS_CAP} seconds (a year)"),
        ));
    }
    Ok(Target {
        address: hosts[0].clone(),
        hosts,
        session_connection_limit: Some(limit),
        session_max_seconds: Some(max),
        accounts: vec![Account {
            name: TCP_ACCOUNT.into(),
            username: None,
            secret: String::new(),
        }],
        ..t.clone()
    })
}

impl Target {
    /// A TCP target's hosts: (`h1`, `host:port`), (`h2`, ...) in the order listed.
    pub fn host_set(&self) -> Vec<(String, String)> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("h{}", i + 1), h.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(toml_text: &str) -> Target {
        toml::from_str(&format!("name = \"t\"\nprotocol = \"tcp\"\n{toml_text}")).expect("toml")
    }

    #[test]
    fn a_tcp_target_is_checked_key_by_key() {
        let ok = tcp_target(&target("hosts = [\"a\", \"b:7000\"]\ndefault_port = 6379"))
            .expect("valid")
            .expect("a tcp target");
        assert_eq!(ok.hosts, vec!["a:6379", "b:7000"]);
        assert_eq!(ok.address, "a:6379");
        assert_eq!(ok.session_connection_limit, Some(1));
        assert_eq!(ok.session_max_seconds, Some(DEFAULT_MAX_SECONDS));
        assert_eq!(ok.accounts[0].name, TCP_ACCOUNT);
        let key = |t: &str| tcp_target(&target(t)).err().map(|(k, _)| k);
        assert_eq!(
            key("address = \"a:1\"\naccounts = [{ name = \"x\", secret = \"s\" }]"),
            Some("accounts")
        );
        assert_eq!(key("address = \"a:1\"\nhosts = [\"b:2\"]"), Some("hosts"));
        assert_eq!(key(""), Some("address"));
        assert_eq!(key("address = \"a\""), Some("address"));
        assert_eq!(key("hosts = [\"a\"]"), Some("default_port"));
        assert_eq!(
            key("address = \"a:1\"\nsession_connection_limit = 0"),
            Some("session_connection_limit")
        );
        assert_eq!(
            key("address = \"a:1\"\nsession_connection_limit = -2"),
            Some("session_connection_limit")
        );
        assert_eq!(
            key("address = \"a:1\"\nsession_max_seconds = 0"),
            Some("session_max_seconds")
        );
        assert_eq!(
            key("address = \"a:1\"\nsession_max_seconds = 99999999999"),
            Some("session_max_seconds")
        );
        assert!(tcp_target(&target("address = \"a:1\"\nsession_connection_limit = -1")).is_ok());
        // The TCP keys on another protocol's target.
        let ssh: Target = toml::from_str(
            "name = \"s\"\naddress = \"a:22\"\nhosts = [\"b\"]\naccounts = [{ name = \"x\", secret = \"s\" }]",
        )
        .expect("toml");
        assert_eq!(tcp_target(&ssh).err().map(|(k, _)| k), Some("protocol"));
    }
}
