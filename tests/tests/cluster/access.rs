//! Network access sessions on the cluster's PostgreSQL store: every gateway lists them, the
//! per-person limit counts the whole cluster, and a session is stopped by the gateway that
//! applied its rules.

use super::cluster_with;
use wardengate_tests::text;

const ALICE: &str = "alice-cluster-access-token";

#[test]
fn access_sessions_span_the_cluster_store_and_belong_to_their_gateway() {
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = wardengate_tests::ledger::Ledger::new(dir.path().join("allowed.txt"));
    let extra = format!(
        "[access]\nmax_sessions_per_user = 1\n\n{}",
        ledger.resource("bastion", ("env", "test"), "")
    );
    let policies = "\n[[policies]]\nname = \"sre-test\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n\n\
         [[policies]]\nname = \"net\"\ngroups = [\"sre\"]\nprotocols = [\"network\"]\nresource_tags = [\"env=test\"]\n";
    let c = cluster_with(2, "3s", &extra, |b, _| {
        b.user_token(ALICE).policies(policies)
    });
    let (gw1, gw2) = (&c.gws[0], &c.gws[1]);

    let (code, body) = gw1.request(
        "POST",
        "/api/v1/access-sessions",
        ALICE,
        "{\"duration\":\"1h\"}",
    );
    assert_eq!(code, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(s["state"], "ACTIVE", "{s:#}");
    assert_eq!(s["gateway"], "gw-1");
    let id = s["id"].as_str().expect("id").to_string();
    assert_eq!(ledger.read().trim(), "bastion 127.0.0.1");
    // The limit is the person's across the cluster: gw-2 counts gw-1's session.
    let (code, body) = gw2.request(
        "POST",
        "/api/v1/access-sessions",
        ALICE,
        "{\"duration\":\"1h\"}",
    );
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("alice 1/1"), "{body}");
    // gw-2 lists and shows it (from the store); a stop through gw-2 is carried out by gw-1,
    // whose rules they are, and its answer comes back.
    let all = gw2.get_json("/api/v1/access-sessions?all=true");
    assert_eq!(all["sessions"][0]["id"], id.as_str(), "{all:#}");
    assert_eq!(all["sessions"][0]["gateway"], "gw-1");
    let (code, body) = gw2.request(
        "POST",
        &format!("/api/v1/access-sessions/{id}/stop"),
        ALICE,
        "{\"reason\":\"done\"}",
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        text(body.as_bytes()).contains("cancelled by alice: done"),
        "{body}"
    );
    assert_eq!(ledger.read().trim(), "");
    let (code, body) = gw1.request(
        "POST",
        &format!("/api/v1/access-sessions/{id}/stop"),
        ALICE,
        "{\"reason\":\"again\"}",
    );
    assert_eq!(code, 409, "{body}");
    let shown = gw2.get_json(&format!("/api/v1/access-sessions/{id}"));
    assert_eq!(shown["state"], "CANCELLED", "{shown:#}");

    // Both gateways start one for alice at the same instant, a few times over: the store counts
    // one at a time (an advisory lock on the person), so exactly one of each pair gets in.
    for round in 0..5 {
        let codes: Vec<(u16, String)> = std::thread::scope(|s| {
            let a = s.spawn(|| {
                gw1.request(
                    "POST",
                    "/api/v1/access-sessions",
                    ALICE,
                    "{\"duration\":\"1h\"}",
                )
            });
            let b = s.spawn(|| {
                gw2.request(
                    "POST",
                    "/api/v1/access-sessions",
                    ALICE,
                    "{\"duration\":\"1h\"}",
                )
            });
            vec![a.join().expect("a"), b.join().expect("b")]
        });
        let mut got: Vec<u16> = codes.iter().map(|c| c.0).collect();
        got.sort();
        assert_eq!(got, vec![200, 429], "round {round}: {codes:?}");
        let (gw, body) = match codes[0].0 {
            200 => (gw1, &codes[0].1),
            _ => (gw2, &codes[1].1),
        };
        let s: serde_json::Value = serde_json::from_str(body).expect("json");
        let id = s["id"].as_str().expect("id");
        let (code, body) = gw.request(
            "POST",
            &format!("/api/v1/access-sessions/{id}/stop"),
            ALICE,
            "{\"reason\":\"next round\"}",
        );
        assert_eq!(code, 200, "{body}");
    }
}

const BOB: &str = "bob-cluster-access-token";

/// Rules on a shared resource (a backend every gateway reaches alike) count every gateway's
/// sessions: a session ending on one gateway leaves the rule another gateway's session holds.
/// When a gateway is lost (kill -9), the gateway that notices takes over its sessions on shared
/// resources (they stop and expire there from then on); a session on a resource only its own
/// gateway reaches is named in the audit, its rule left for that gateway.
#[test]
fn shared_rules_count_every_gateway_and_a_lost_gateways_sessions_are_taken_over() {
    let dir = tempfile::tempdir().expect("tmp");
    let cloud = wardengate_tests::ledger::Ledger::new(dir.path().join("cloud.txt"));
    let local = wardengate_tests::ledger::Ledger::new(dir.path().join("local.txt"));
    let extra = format!(
        "{}{}[[users]]\nname = \"bob\"\ngroups = [\"ops\"]\napi_token_sha256 = \"{}\"\n\
         password_hash = \"{}\"\n\n",
        cloud.resource("cloud-sg", ("kind", "shared"), "shared = true\n"),
        local.resource("box-fw", ("kind", "local"), "shared = false\n"),
        wardengate_tests::sha256_hex(BOB.as_bytes()),
        wardengate_gateway::passwords::hash("bob's own").expect("hash")
    );
    let policies = "\n[[policies]]\nname = \"sre-test\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n\n\
         [[policies]]\nname = \"net-shared\"\ngroups = [\"sre\"]\nprotocols = [\"network\"]\nresource_tags = [\"kind=shared\"]\n\n\
         [[policies]]\nname = \"net-local\"\ngroups = [\"ops\"]\nprotocols = [\"network\"]\nresource_tags = [\"kind=local\"]\n";
    let mut c = cluster_with(2, "2s", &extra, |b, _| {
        b.user_token(ALICE).policies(policies)
    });
    let start = |gw: &wardengate_tests::GatewayProc, token: &str| {
        let (code, body) = gw.request(
            "POST",
            "/api/v1/access-sessions",
            token,
            "{\"duration\":\"1h\"}",
        );
        assert_eq!(code, 200, "{body}");
        let s: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(s["state"], "ACTIVE", "{s:#}");
        s["id"].as_str().expect("id").to_string()
    };
    let stop = |gw: &wardengate_tests::GatewayProc, token: &str, id: &str| {
        let (code, body) = gw.request(
            "POST",
            &format!("/api/v1/access-sessions/{id}/stop"),
            token,
            "{\"reason\":\"done\"}",
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };
    // alice on gw-1 and on gw-2, the same address and shared resource: when gw-2's session
    // ends, gw-1's still holds the rule, so it stays.
    let on_one = start(&c.gws[0], ALICE);
    let on_two = start(&c.gws[1], ALICE);
    let ended = stop(&c.gws[1], ALICE, &on_two);
    assert_eq!(ended["rules"][0]["state"], "released", "{ended:#}");
    assert!(
        cloud.read().contains("cloud-sg 127.0.0.1"),
        "removed while gw-1's session holds it"
    );
    // bob on gw-1, on a resource only gw-1 reaches.
    let bobs = start(&c.gws[0], BOB);
    assert!(local.read().contains("box-fw 127.0.0.1"));

    c.gws[0].kill9();
    let adopted = c.gws[1].wait_audit("access.adopted", std::time::Duration::from_secs(30));
    assert_eq!(adopted["session_id"], on_one.as_str(), "{adopted}");
    assert_eq!(adopted["detail"]["from"], "gw-1", "{adopted}");
    let stranded = c.gws[1].wait_audit("access.stranded", std::time::Duration::from_secs(10));
    assert_eq!(stranded["session_id"], bobs.as_str(), "{stranded}");
    let shown = c.gws[1].get_json(&format!("/api/v1/access-sessions/{on_one}"));
    assert_eq!(shown["gateway"], "gw-2", "{shown:#}");
    assert_eq!(shown["state"], "ACTIVE", "{shown:#}");
    // Stopped where it lives now: the rule goes.
    let over = stop(&c.gws[1], ALICE, &on_one);
    assert_eq!(over["rules"][0]["state"], "revoked", "{over:#}");
    assert_eq!(cloud.read(), "");
    // bob's rule stays for gw-1 (not shared): a stop through gw-2 cannot reach gw-1, and says so.
    assert!(local.read().contains("box-fw 127.0.0.1"));
    let (code, body) = c.gws[1].request(
        "POST",
        &format!("/api/v1/access-sessions/{bobs}/stop"),
        BOB,
        "{\"reason\":\"done\"}",
    );
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("gw-1"), "{body}");
}
