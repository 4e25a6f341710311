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

#[test]
fn a_removal_that_failed_or_was_cut_by_a_crash_is_finished_after_a_restart() {
    let env = TestEnv::new();
    let ledger = env.path("allowed.txt");
    let slow = env.path("slow.flag");
    let freeze = env.path("freeze.flag");
    std::fs::write(&ledger, "").expect("ledger");
    // The operator's scripts: apply adds "RESOURCE ADDRESS"; revoke removes it, but sleeps while
    // slow.flag exists and refuses (stderr) while freeze.flag does.
    let more = format!(
        "[access]\ndurations = [\"3s\", \"1h\"]\nretry_every = \"1s\"\n\n\
         [[resources]]\nname = \"sg\"\ntags = {{ env = \"test\" }}\nbackend = \"command\"\n\
         apply = [\"/bin/sh\", \"-c\", \"echo \\\"$1 $2\\\" >> {l}\", \"apply\"]\n\
         revoke = [\"/bin/sh\", \"-c\", \"if [ -e {s} ]; then sleep 20; fi; if [ -e {f} ]; then echo 'change freeze until 18:00' >&2; exit 1; fi; grep -vx \\\"$1 $2\\\" {l} > {l}.new; mv {l}.new {l}\", \"revoke\"]\n\n",
        l = ledger.display(),
        s = slow.display(),
        f = freeze.display()
    );
    let mut gw = gateway(&env, &more, NET_POLICY);
    let lines = || {
        let mut v: Vec<String> = std::fs::read_to_string(&ledger)
            .expect("ledger")
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };

    // bob's session expires while the change freeze refuses the removal: EXPIRED, the rule
    // revoke_failed with the script's words, the address still allowed.
    std::fs::write(&freeze, "").expect("freeze");
    let bob = post_from(
        &gw,
        BOB,
        "127.0.0.2".parse().expect("ip"),
        "/api/v1/access-sessions",
        "{\"duration\":\"3s\"}",
    );
    assert_eq!(bob.0, 200, "{}", bob.1);
    let bob: serde_json::Value = serde_json::from_str(&bob.1).expect("json");
    let bob_id = bob["id"].as_str().expect("id").to_string();
    let s = wait_state(&gw, &bob_id, "EXPIRED", Duration::from_secs(15));
    assert_eq!(s["rules"][0]["state"], "revoke_failed", "{s:#}");
    assert!(
        s["rules"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("change freeze until 18:00"),
        "{s:#}"
    );
    assert_eq!(lines(), vec!["sg 127.0.0.2"]);
    assert!(!gw.audit("access.rule.revoke_failed").is_empty());

    // alice's stop is cut by a crash half way: her session is EXPIRING when the gateway dies.
    std::fs::remove_file(&freeze).expect("thaw");
    std::fs::write(&slow, "").expect("slow");
    let alice = post_from(
        &gw,
        ALICE,
        "127.0.0.3".parse().expect("ip"),
        "/api/v1/access-sessions",
        "{\"duration\":\"1h\"}",
    );
    let alice: serde_json::Value = serde_json::from_str(&alice.1).expect("json");
    let alice_id = alice["id"].as_str().expect("id").to_string();
    assert_eq!(lines(), vec!["sg 127.0.0.2", "sg 127.0.0.3"]);
    let api = gw.api.clone();
    let stopper = std::thread::spawn(move || {
        // The caller gives up after 2 s; the stop goes on in the gateway.
        let _ = std::process::Command::new("curl")
            .args([
                "-s",
                "-m",
                "2",
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {ALICE}"),
                "--interface",
                "127.0.0.3",
                "-d",
                "{\"reason\":\"end of shift\"}",
                &format!("{api}/api/v1/access-sessions/{alice_id}/stop"),
            ])
            .output();
    });
    let alice_id = alice["id"].as_str().expect("id").to_string();
    wait_state(&gw, &alice_id, "EXPIRING", Duration::from_secs(10));
    stopper.join().expect("stopper");
    gw.kill9();
    std::fs::remove_file(&slow).expect("quick again");

    // After the restart: alice's stop is finished (CANCELLED, her rule removed) and bob's
    // failed removal is tried again until it goes.
    let gw = GatewayProc::spawn(gw.config.clone(), gw.data.clone());
    let s = show(&gw, &alice_id);
    assert_eq!(s["state"], "CANCELLED", "{s:#}");
    assert_eq!(s["reason"], "cancelled by alice: end of shift");
    assert_eq!(s["rules"][0]["state"], "revoked", "{s:#}");
    wait_state(&gw, &bob_id, "EXPIRED", Duration::from_secs(1));
    let s = wardengate_tests::poll(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || show(&gw, &bob_id),
        |s| s["rules"][0]["state"] == "revoked",
    );
    assert_eq!(s["rules"][0]["state"], "revoked", "{s:#}");
    assert!(lines().is_empty(), "{:?}", lines());
    let retried = gw.audit("access.rule.revoked");
    assert!(
        retried.iter().any(|e| e["detail"]["retried"] == true),
        "{retried:#?}"
    );
    // Neither counts against its person any more.
    let live = gw.get_json("/api/v1/access-sessions?all=true&live=true");
    assert_eq!(
        live["sessions"].as_array().map(Vec::len),
        Some(0),
        "{live:#}"
    );
}
