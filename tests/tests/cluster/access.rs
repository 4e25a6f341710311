//! Network access sessions on the cluster's PostgreSQL store: every gateway lists them, the
//! per-person limit counts the whole cluster, and a session is stopped by the gateway that
//! applied its rules.

use super::cluster_with;
use wardengate_tests::text;

const ALICE: &str = "alice-cluster-access-token";

#[test]
fn access_sessions_span_the_cluster_store_and_belong_to_their_gateway() {
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = dir.path().join("allowed.txt");
    std::fs::write(&ledger, "").expect("ledger");
    let extra = format!(
        "[access]\nmax_sessions_per_user = 1\n\n\
         [[resources]]\nname = \"bastion\"\ntags = {{ env = \"test\" }}\nbackend = \"command\"\n\
         apply = [\"/bin/sh\", \"-c\", \"echo \\\"$1 $2\\\" >> {l}\", \"apply\"]\n\
         revoke = [\"/bin/sh\", \"-c\", \": > {l}\", \"revoke\"]\n\n",
        l = ledger.display()
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
    assert_eq!(
        std::fs::read_to_string(&ledger).expect("ledger").trim(),
        "bastion 127.0.0.1"
    );
    // The limit is the person's across the cluster: gw-2 counts gw-1's session.
    let (code, body) = gw2.request(
        "POST",
        "/api/v1/access-sessions",
        ALICE,
        "{\"duration\":\"1h\"}",
    );
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("alice 1/1"), "{body}");
    // gw-2 lists and shows it (from the store) and sends a stop to the gateway that owns it.
    let all = gw2.get_json("/api/v1/access-sessions?all=true");
    assert_eq!(all["sessions"][0]["id"], id.as_str(), "{all:#}");
    assert_eq!(all["sessions"][0]["gateway"], "gw-1");
    let (code, body) = gw2.request(
        "POST",
        &format!("/api/v1/access-sessions/{id}/stop"),
        ALICE,
        "{\"reason\":\"done\"}",
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        text(body.as_bytes()).contains("applied by gateway gw-1"),
        "{body}"
    );
    let (code, body) = gw1.request(
        "POST",
        &format!("/api/v1/access-sessions/{id}/stop"),
        ALICE,
        "{\"reason\":\"done\"}",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(std::fs::read_to_string(&ledger).expect("ledger").trim(), "");
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
