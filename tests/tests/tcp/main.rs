//! Brokered TCP sessions (`protocol = "tcp"`), Boundary style, end to end with real peers:
//! redis-server and redis-cli, an HTTP server and curl, OpenSSH with the engineer's own key;
//! `wgctl target authorize`, `wgctl proxy`, `wgctl connect`, and the gateway's `[tcp]` listener.

mod clients;
mod sessions;
mod tokens;

use std::time::Duration;

use wardengate_tests::{GatewayProc, TestEnv};

/// alice's own API token (she is in group sre).
pub const ALICE: &str = "alice-own-token";
/// bob's (another person, also allowed).
pub const BOB: &str = "bob-own-token";

/// A gateway with a `[tcp]` listener, `targets` (TOML), bob beside alice, and `policies` (TOML;
/// default: group sre may reach env=test).
pub fn gateway(env: &TestEnv, targets: &str, policies: Option<&str>) -> GatewayProc {
    gateway_on(env, targets, policies, 0)
}

/// [`gateway`] with its `[tcp]` listener on `port` (0: one the system picks).
pub fn gateway_on(env: &TestEnv, targets: &str, policies: Option<&str>, port: u16) -> GatewayProc {
    let hash = wardengate_gateway::passwords::hash("bob's password").expect("hash");
    let bob = format!(
        "[[users]]\nname = \"bob\"\ngroups = [\"sre\"]\npassword_hash = \"{hash}\"\n\
         api_token_sha256 = \"{}\"\n\n\
         [[roles]]\nname = \"approvers\"\nmembers = [\"bob\"]\ncan = [\"approval.decide\"]\n\n",
        wardengate_tests::sha256_hex(BOB.as_bytes())
    );
    let mut b = env
        .gateway()
        .user_token(ALICE)
        .extra(&bob)
        .extra(targets)
        .extra(&format!(
        "[tcp]\nlisten = \"127.0.0.1:{port}\"\nconnect_timeout = \"3s\"\nauth_timeout = \"2s\"\n\n"
    ));
    if let Some(p) = policies {
        b = b.policies(p);
    }
    b.start()
}

/// The session as the admin sees it.
pub fn session(gw: &GatewayProc, id: &str) -> serde_json::Value {
    gw.get_json(&format!("/api/v1/sessions/{id}"))
}

/// Wait until session `id` has ended; its record.
#[track_caller]
pub fn ended(gw: &GatewayProc, id: &str) -> serde_json::Value {
    let s = wardengate_tests::poll(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || session(gw, id),
        |s| s["state"] == "terminated",
    );
    assert_eq!(s["state"], "terminated", "{s:#}");
    s
}

/// The session's states, oldest first: (state, reason).
pub fn states(s: &serde_json::Value) -> Vec<(String, String)> {
    s["tcp"]["states"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|st| {
            (
                st["state"].as_str().unwrap_or_default().to_string(),
                st["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Every state but the current one has an end time, and each starts where the last ended.
#[track_caller]
pub fn assert_timed(s: &serde_json::Value) {
    let list = s["tcp"]["states"].as_array().cloned().unwrap_or_default();
    assert!(!list.is_empty(), "{s:#}");
    for pair in list.windows(2) {
        assert_eq!(pair[0]["end_time"], pair[1]["start_time"], "{s:#}");
    }
    assert!(list[list.len() - 1].get("end_time").is_none(), "{s:#}");
}
