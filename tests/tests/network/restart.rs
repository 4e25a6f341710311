//! Rules outlive the gateway: a restart removes the rules of sessions that ended while it was
//! down, and puts back a rule that was deleted by hand.

use std::time::Duration;

use wardengate_tests::netns::{elements, nft_in};
use wardengate_tests::{GatewayProc, TestEnv};

use super::*;

#[test]
fn a_restart_removes_rules_of_ended_sessions_and_puts_back_missing_ones() {
    let env = TestEnv::new();
    let lab = lab();
    let more = format!("{ACCESS}{}", lab.resource_toml("web", "env = \"test\""));
    let mut gw = gateway(&env, &more, NET_POLICY);
    let [a, b] = lab.v4;
    let short = start(&gw, ALICE, a, "3s");
    let long = start(&gw, BOB, b, "1h");
    let (short, long) = (
        short["id"].as_str().expect("id").to_string(),
        long["id"].as_str().expect("id").to_string(),
    );
    let mut both = elements(&lab.ns, "allow_web");
    both.sort();
    assert_eq!(both, vec![a.to_string(), b.to_string()]);

    // The gateway dies; the short session's time runs out while it is down (its rule stays:
    // nobody is there to remove it), and someone deletes the long one's rule by hand.
    gw.kill9();
    std::thread::sleep(Duration::from_secs(4));
    assert!(elements(&lab.ns, "allow_web").contains(&a.to_string()));
    let out = nft_in(
        &lab.ns,
        &format!("delete element inet wardengate allow_web {{ {b} }}\n"),
    );
    assert_success(&out, "delete by hand");
    assert!(lab.reach(b).is_err());

    let gw = GatewayProc::spawn(gw.config.clone(), gw.data.clone());
    // Before it answers, the gateway has reconciled: a's rule removed, b's back.
    assert_eq!(elements(&lab.ns, "allow_web"), vec![b.to_string()]);
    let s = show(&gw, &short);
    assert_eq!(s["state"], "EXPIRED", "{s:#}");
    assert_eq!(
        s["reason"],
        "expired while the gateway was down (rules removed at its start)"
    );
    assert_eq!(
        rules(&s),
        vec![("web".to_string(), "revoked".to_string(), 0)]
    );
    let s = show(&gw, &long);
    assert_eq!(s["state"], "ACTIVE", "{s:#}");
    assert_eq!(
        rules(&s),
        vec![("web".to_string(), "applied".to_string(), 1)]
    );
    lab.reach(b).expect("b's rule was put back");
    assert!(lab.reach(a).is_err());
    let back = gw.audit("access.rule.reapplied");
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!(back[0]["detail"]["address"], b.to_string());
    // The restarted gateway still ends the long session on request, and its count is right.
    let (code, body) = gw.request(
        "POST",
        &format!("/api/v1/access-sessions/{long}/stop"),
        BOB,
        "{\"reason\":\"done\"}",
    );
    assert_eq!(code, 200, "{body}");
    assert!(elements(&lab.ns, "allow_web").is_empty());
}
