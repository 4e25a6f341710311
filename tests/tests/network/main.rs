//! Network access sessions (EntryGuard style) against the real kernel firewall: a namespace with
//! a TCP service behind nftables sets the gateway fills (`wardengate_tests::netns`), clients on
//! two IPv4 and two IPv6 addresses, `wgctl access start|list|show|stop` and the API.

mod backends;
mod hostile;
mod restart;
mod sessions;

use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use wardengate_tests::netns::Lab;
use wardengate_tests::{assert_success, run, tcp::wgctl_as, GatewayProc, TestEnv};

/// alice's own API token (group sre).
pub const ALICE: &str = "alice-own-token";
/// bob's (group sre too).
pub const BOB: &str = "bob-own-token";
pub const T: Duration = Duration::from_secs(30);

/// The access settings every test starts from: a 3 s duration besides the usual ones (the
/// expiry tests cannot wait an hour), a deployment cap of 8h.
pub const ACCESS: &str = "[access]\ndurations = [\"3s\", \"1h\", \"2h\", \"4h\", \"8h\", \"12h\"]\nmax_duration = \"8h\"\n\n";

/// Group sre may open every env=test resource, for at most 4h.
pub const NET_POLICY: &str =
    "[[policies]]\nname = \"net\"\ngroups = [\"sre\"]\nprotocols = [\"network\"]\n\
     resource_tags = [\"env=test\"]\nmax_session_duration = \"4h\"\n";

/// A gateway with bob beside alice, `more` TOML (resources, `[access]`), `policies`, and the
/// API trusting 127.0.0.1 as a proxy (for `X-Forwarded-For`).
pub fn gateway(env: &TestEnv, more: &str, policies: &str) -> GatewayProc {
    let hash = wardengate_gateway::passwords::hash("bob's password").expect("hash");
    let bob = format!(
        "[[users]]\nname = \"bob\"\ngroups = [\"sre\"]\npassword_hash = \"{hash}\"\n\
         api_token_sha256 = \"{}\"\n\n",
        wardengate_tests::sha256_hex(BOB.as_bytes())
    );
    env.gateway()
        .user_token(ALICE)
        .extra(&bob)
        .extra(more)
        .api_lines("trusted_proxies = [\"127.0.0.1\"]")
        .policies(policies)
        .start()
}

/// `wgctl access ARGS -o json` as `token`'s person.
pub fn access(gw: &GatewayProc, token: &str, args: &[&str]) -> Output {
    run(
        wgctl_as(gw, token)
            .arg("access")
            .args(args)
            .args(["-o", "json"]),
        T,
    )
}

/// `wgctl access start --from FROM --duration D`: the new session.
#[track_caller]
pub fn start(gw: &GatewayProc, token: &str, from: IpAddr, duration: &str) -> serde_json::Value {
    let out = access(
        gw,
        token,
        &["start", "--from", &from.to_string(), "--duration", duration],
    );
    assert_success(&out, "wgctl access start");
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The session as the admin sees it.
pub fn show(gw: &GatewayProc, id: &str) -> serde_json::Value {
    gw.get_json(&format!("/api/v1/access-sessions/{id}"))
}

/// Each rule of a session: (resource, state, holders).
pub fn rules(s: &serde_json::Value) -> Vec<(String, String, u64)> {
    s["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["resource"].as_str().unwrap_or_default().to_string(),
                r["state"].as_str().unwrap_or_default().to_string(),
                r["holders"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Wait until session `id` is in `state`; its record.
#[track_caller]
pub fn wait_state(gw: &GatewayProc, id: &str, state: &str, within: Duration) -> serde_json::Value {
    let s = wardengate_tests::poll(
        within,
        Duration::from_millis(100),
        || show(gw, id),
        |s| s["state"] == state,
    );
    assert_eq!(s["state"], state, "{s:#}");
    s
}

/// The lab with the usual one resource, `web`.
pub fn lab() -> Lab {
    Lab::new(&["web"])
}

/// POST `body` to `path` as `token`'s person, connecting from local address `from` (curl
/// --interface): (status, body).
pub fn post_from(
    gw: &GatewayProc,
    token: &str,
    from: IpAddr,
    path: &str,
    body: &str,
) -> (u16, String) {
    let out = run(
        std::process::Command::new("curl").args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--interface",
            &from.to_string(),
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "content-type: application/json",
            "-d",
            body,
            &format!("{}{path}", gw.api),
        ]),
        T,
    );
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = t.rsplit_once('\n').expect("status");
    (code.parse().expect("code"), body.to_string())
}
