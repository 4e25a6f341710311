//! Start, reach, stop, expire; IPv6 through a trusted proxy; rules shared by two sessions;
//! the per-person limit.

use std::time::Duration;

use wardengate_tests::netns::{echo, elements};
use wardengate_tests::{assert_stderr_has, run, tcp::wgctl_as, text, TestEnv};

use super::*;

#[test]
fn an_address_is_let_in_for_its_session_and_cut_off_when_stopped_or_expired() {
    let env = TestEnv::new();
    let lab = lab();
    let more = format!("{ACCESS}{}", lab.resource_toml("web", "env = \"test\""));
    let gw = gateway(&env, &more, NET_POLICY);
    let [a, b] = lab.v4;

    // Before any session the firewall refuses both addresses.
    assert!(
        lab.reach(a).is_err(),
        "reached the service without a session"
    );
    assert!(elements(&lab.ns, "allow_web").is_empty());

    // alice starts a session from a: her address, as the gateway saw the connection, is let in.
    let s = start(&gw, ALICE, a, "1h");
    assert_eq!(s["state"], "ACTIVE", "{s:#}");
    assert_eq!(s["address"], a.to_string());
    assert_eq!(s["user"], "alice");
    assert_eq!(
        rules(&s),
        vec![("web".to_string(), "applied".to_string(), 1)]
    );
    assert_eq!(elements(&lab.ns, "allow_web"), vec![a.to_string()]);
    let id = s["id"].as_str().expect("id").to_string();
    let open = lab.reach(a).expect("a session lets a in");
    assert!(lab.reach(b).is_err(), "another address got in");

    // list and show, as people read them.
    let out = run(wgctl_as(&gw, ALICE).args(["access", "list"]), T);
    assert_success(&out, "access list");
    let listed = text(&out.stdout);
    assert!(
        listed.contains(&id) && listed.contains("ACTIVE") && listed.contains("1/1"),
        "{listed}"
    );
    let out = run(wgctl_as(&gw, ALICE).args(["access", "show", &id]), T);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("web") && shown.contains("nftables") && shown.contains("applied"),
        "{shown}"
    );

    // Stopping needs a reason, from wgctl and from the API.
    let out = run(wgctl_as(&gw, ALICE).args(["access", "stop", &id]), T);
    assert_stderr_has(&out, "--reason is required");
    let (code, body) = gw.request(
        "POST",
        &format!("/api/v1/access-sessions/{id}/stop"),
        ALICE,
        "{}",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("a reason is required"), "{body}");
    // bob cannot see or stop alice's session: the same answer as an unknown id.
    let (code, body) = gw.request(
        "POST",
        &format!("/api/v1/access-sessions/{id}/stop"),
        BOB,
        "{\"reason\":\"x\"}",
    );
    assert_eq!(code, 404, "{body}");
    let out = access(
        &gw,
        ALICE,
        &["stop", &id, "--reason", "done with the console"],
    );
    assert_success(&out, "access stop");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["state"], "CANCELLED", "{s:#}");
    assert_eq!(s["reason"], "cancelled by alice: done with the console");
    assert_eq!(
        rules(&s),
        vec![("web".to_string(), "revoked".to_string(), 0)]
    );
    assert!(elements(&lab.ns, "allow_web").is_empty());
    // The open connection is cut (the chain resets it), and a new one is refused.
    assert!(
        echo(&open, "still there?").is_err(),
        "the open connection survived the stop"
    );
    assert!(lab.reach(a).is_err());
    let (code, body) = gw.request(
        "POST",
        &format!("/api/v1/access-sessions/{id}/stop"),
        ALICE,
        "{\"reason\":\"again\"}",
    );
    assert_eq!(code, 409, "{body}");

    // A short session expires on the gateway's timer, nobody calling the API.
    let s = start(&gw, ALICE, b, "3s");
    let short = s["id"].as_str().expect("id").to_string();
    lab.reach(b).expect("b is let in");
    let s = wait_state(&gw, &short, "EXPIRED", Duration::from_secs(15));
    assert_eq!(s["reason"], "expired");
    assert!(elements(&lab.ns, "allow_web").is_empty());
    assert!(lab.reach(b).is_err(), "b still gets in after expiry");

    // IPv6, through a proxy the gateway trusts (127.0.0.1): its X-Forwarded-For names alice.
    let [c, d] = lab.v6;
    let out = run(
        std::process::Command::new("curl").args([
            "-s",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {ALICE}"),
            "-H",
            &format!("X-Forwarded-For: 198.51.100.1, {c}"),
            "-d",
            "{\"duration\":\"1h\"}",
            &format!("{}/api/v1/access-sessions", gw.api),
        ]),
        T,
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["address"], c.to_string(), "{s:#}");
    assert_eq!(s["state"], "ACTIVE", "{s:#}");
    assert_eq!(elements(&lab.ns, "allow_web_v6"), vec![c.to_string()]);
    lab.reach(c).expect("c is let in");
    assert!(lab.reach(d).is_err());
    // The trusted proxy without X-Forwarded-For: refused (its own address would let in
    // everyone behind it).
    let (code, body) = gw.request(
        "POST",
        "/api/v1/access-sessions",
        ALICE,
        "{\"duration\":\"1h\"}",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("without X-Forwarded-For"), "{body}");
    // From an address that is not a trusted proxy the header is not believed.
    let out = run(
        std::process::Command::new("curl").args([
            "-s",
            "--interface",
            &b.to_string(),
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {BOB}"),
            "-H",
            &format!("X-Forwarded-For: {c}"),
            "-d",
            "{\"duration\":\"1h\"}",
            &format!("{}/api/v1/access-sessions", gw.api),
        ]),
        T,
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        s["address"],
        b.to_string(),
        "the header of an untrusted caller was believed: {s:#}"
    );

    // Every step is in the audit.
    for kind in [
        "access.requested",
        "access.rule.applied",
        "access.rule.revoked",
        "access.cancelled",
        "access.expired",
        "access.started",
    ] {
        assert!(!gw.audit(kind).is_empty(), "no {kind} in the audit");
    }
    let revoked = gw.audit("access.rule.revoked");
    assert!(
        revoked
            .iter()
            .any(|e| e["detail"]["address"] == a.to_string()),
        "{revoked:#?}"
    );
}

#[test]
fn two_sessions_from_one_address_share_a_rule_until_the_last_one_ends() {
    let env = TestEnv::new();
    let lab = lab();
    let more = format!(
        "{}max_sessions_per_user = 1\n\n{}",
        ACCESS,
        lab.resource_toml("web", "env = \"test\"")
    );
    let gw = gateway(&env, &more, NET_POLICY);
    let a = lab.v4[0];

    let first = start(&gw, ALICE, a, "1h");
    assert_eq!(
        rules(&first),
        vec![("web".to_string(), "applied".to_string(), 1)]
    );
    let second = start(&gw, BOB, a, "2h");
    assert_eq!(
        rules(&second),
        vec![("web".to_string(), "shared".to_string(), 2)]
    );
    // One element, counted twice.
    assert_eq!(elements(&lab.ns, "allow_web"), vec![a.to_string()]);
    let first_id = first["id"].as_str().expect("id");
    let second_id = second["id"].as_str().expect("id");
    assert_eq!(
        rules(&show(&gw, first_id))[0].2,
        2,
        "holders seen from the first"
    );

    // alice may hold one session: a second is refused with the structured denial.
    let (code, body) = post_from(
        &gw,
        ALICE,
        a,
        "/api/v1/access-sessions",
        "{\"duration\":\"1h\"}",
    );
    assert_eq!(code, 429, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["limit"]["scope"], "actor", "{v:#}");
    assert_eq!(v["limit"]["limit"], 1);
    assert_eq!(v["limit"]["current"], 1);
    assert_eq!(v["limit"]["subject"], "alice");
    let out = run(
        wgctl_as(&gw, ALICE).args([
            "access",
            "start",
            "--from",
            &a.to_string(),
            "--duration",
            "1h",
        ]),
        T,
    );
    assert_stderr_has(
        &out,
        "user at capacity: alice 1/1 (access.max_sessions_per_user)",
    );

    // The first ends: the rule stays for the second.
    let out = access(&gw, ALICE, &["stop", first_id, "--reason", "shift over"]);
    assert_success(&out, "stop first");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        rules(&s),
        vec![("web".to_string(), "released".to_string(), 1)]
    );
    assert_eq!(elements(&lab.ns, "allow_web"), vec![a.to_string()]);
    lab.reach(a).expect("the rule outlives the first session");
    // With the first over, alice may start again (and shares the rule again).
    let third = start(&gw, ALICE, a, "1h");
    assert_eq!(
        rules(&third),
        vec![("web".to_string(), "shared".to_string(), 2)]
    );
    for id in [second_id, third["id"].as_str().expect("id")] {
        let (code, body) = gw.request(
            "POST",
            &format!("/api/v1/access-sessions/{id}/stop"),
            &gw.token,
            "{\"reason\":\"audit\"}",
        );
        assert_eq!(code, 200, "{body}");
    }
    // Only when the last one ends does the rule go.
    assert!(elements(&lab.ns, "allow_web").is_empty());
    assert!(lab.reach(a).is_err());
    // An operator sees everyone's; a person only their own.
    let all = gw.get_json("/api/v1/access-sessions?all=true");
    assert_eq!(all["sessions"].as_array().map(Vec::len), Some(3), "{all:#}");
    let (code, _) = gw.request("GET", "/api/v1/access-sessions?all=true", BOB, "");
    assert_eq!(code, 403);
    let (code, body) = gw.request("GET", "/api/v1/access-sessions", BOB, "");
    assert_eq!(code, 200);
    let mine: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        mine["sessions"].as_array().map(Vec::len),
        Some(1),
        "{mine:#}"
    );
    let released = gw.audit("access.rule.released");
    assert_eq!(
        released.len(),
        2,
        "the first and the second let go of it; the third removed it: {released:#?}"
    );
}
