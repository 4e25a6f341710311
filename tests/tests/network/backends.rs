//! The command backend (the operator's scripts), PARTIAL and FAILED sessions, and the caps on
//! durations.

use wardengate_tests::netns::elements;
use wardengate_tests::{assert_stderr_has, run, tcp::wgctl_as, text, TestEnv};

use super::*;

#[test]
fn a_failing_command_backend_makes_a_session_partial_or_failed() {
    let env = TestEnv::new();
    let lab = lab();
    let ledger = env.path("notes-allowed.txt");
    std::fs::write(&ledger, "").expect("ledger");
    // `notes`: a working script pair that keeps allowed addresses in a file; `cloud`: an
    // appliance that refuses, saying why on stderr.
    let more = format!(
        "{ACCESS}{web}\
         [[resources]]\nname = \"notes\"\ntags = {{ env = \"test\" }}\nbackend = \"command\"\n\
         apply = [\"/bin/sh\", \"-c\", \"echo \\\"$1 $2 $3\\\" >> {ledger}; env > {ledger}.env\", \"apply\"]\n\
         revoke = [\"/bin/sh\", \"-c\", \"grep -v \\\" $2 \\\" {ledger} > {ledger}.new; mv {ledger}.new {ledger}\", \"revoke\"]\n\n\
         [[resources]]\nname = \"cloud\"\ntags = {{ env = \"test\" }}\nbackend = \"command\"\n\
         apply = [\"/bin/sh\", \"-c\", \"echo 'sg-42: rule quota exceeded' >&2; exit 3\", \"apply\"]\n\
         revoke = [\"/bin/true\"]\n\n",
        web = lab.resource_toml("web", "env = \"test\""),
        ledger = ledger.display()
    );
    // bob's own policy grants only the failing resource.
    let policies = format!(
        "{NET_POLICY}\n[[policies]]\nname = \"bob-cloud\"\nusers = [\"bob\"]\nprotocols = [\"network\"]\nresources = [\"cloud\"]\npriority = 10\n"
    );
    let more = more.replace(
        "[[resources]]\nname = \"cloud\"\ntags = { env = \"test\" }",
        "[[resources]]\nname = \"cloud\"\ntags = { env = \"cloud\" }",
    );
    // alice's grants all three; bob's (he is in sre too) only the failing one.
    let policies = policies
        .replace(
            "resource_tags = [\"env=test\"]",
            "resources = [\"web\", \"notes\", \"cloud\"]",
        )
        .replace("groups = [\"sre\"]", "users = [\"alice\"]");
    // `odd`: an nftables resource in the same namespace whose set the operator made for ports,
    // not addresses: its element cannot be added. The namespace's batch (web and odd together)
    // fails, and each is tried alone: web applied, odd failed.
    let out = wardengate_tests::netns::nft_in(
        &lab.ns,
        "add set inet wardengate odd_set { type inet_service; }\n",
    );
    assert_success(&out, "the operator's odd set");
    let more = format!(
        "{more}[[resources]]\nname = \"odd\"\ntags = {{ env = \"test\" }}\nbackend = \"nftables\"\nnetns = \"{}\"\nset = \"odd_set\"\n\n",
        lab.ns
    );
    let policies = policies.replace(
        "\"web\", \"notes\", \"cloud\"",
        "\"web\", \"notes\", \"cloud\", \"odd\"",
    );
    let gw = gateway(&env, &more, &policies);
    let a = lab.v4[0];

    // alice: web and notes applied, cloud and odd failed with their stderr: PARTIAL.
    let out = access(
        &gw,
        ALICE,
        &["start", "--from", &a.to_string(), "--duration", "1h"],
    );
    assert_success(&out, "partial start");
    assert_stderr_has(&out, "PARTIAL");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["state"], "PARTIAL", "{s:#}");
    let mut got = rules(&s);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("cloud".to_string(), "failed".to_string(), 0),
            ("notes".to_string(), "applied".to_string(), 1),
            ("odd".to_string(), "failed".to_string(), 0),
            ("web".to_string(), "applied".to_string(), 1),
        ]
    );
    let cloud = s["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["resource"] == "cloud")
        .cloned()
        .expect("cloud");
    let err = cloud["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("exited with 3") && err.contains("sg-42: rule quota exceeded"),
        "{err}"
    );
    let odd = s["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["resource"] == "odd")
        .cloned()
        .expect("odd");
    assert!(
        odd["error"].as_str().is_some_and(|e| e.contains("nft")),
        "{odd:#}"
    );
    let id = s["id"].as_str().expect("id").to_string();
    let kept = std::fs::read_to_string(&ledger).expect("ledger");
    assert_eq!(
        kept.trim(),
        format!("notes {a} {id}"),
        "the apply script's arguments"
    );
    // The script's environment is its own: the session's variables, none of the gateway's.
    let seen = std::fs::read_to_string(format!("{}.env", ledger.display())).expect("env");
    assert!(
        seen.contains(&format!("WARDENGATE_SESSION={id}")) && seen.contains("WARDENGATE_OP=apply"),
        "{seen}"
    );
    assert!(
        !seen.contains("RUST_LOG"),
        "the gateway's environment reached the script: {seen}"
    );
    assert_eq!(elements(&lab.ns, "allow_web"), vec![a.to_string()]);
    lab.reach(a).expect("web is reachable in a partial session");
    let failed = gw.audit("access.rule.failed");
    assert!(
        failed.iter().any(|e| e["detail"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("quota exceeded")),
        "{failed:#?}"
    );
    // The table says which rule failed and why.
    let out = run(wgctl_as(&gw, ALICE).args(["access", "show", &id]), T);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("PARTIAL") && shown.contains("2/4") && shown.contains("quota exceeded"),
        "{shown}"
    );

    // bob: only the failing resource: FAILED, ended at once, and wgctl says so.
    let out = access(
        &gw,
        BOB,
        &[
            "start",
            "--from",
            &lab.v4[1].to_string(),
            "--duration",
            "1h",
        ],
    );
    assert!(!out.status.success(), "a FAILED session exited 0");
    assert_stderr_has(&out, "no rule could be applied");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["state"], "FAILED", "{s:#}");
    assert!(s["ended_at"].is_string(), "{s:#}");
    assert!(!gw.audit("access.failed").is_empty());
    // A failed session holds nothing: bob may try again (no per-user limit here) and nothing
    // is left to stop.
    let (code, _) = gw.request(
        "POST",
        &format!(
            "/api/v1/access-sessions/{}/stop",
            s["id"].as_str().expect("id")
        ),
        BOB,
        "{\"reason\":\"x\"}",
    );
    assert_eq!(code, 409);

    // Stopping alice's runs the revoke script for notes and empties the set.
    let out = access(&gw, ALICE, &["stop", &id, "--reason", "done"]);
    assert_success(&out, "stop");
    assert_eq!(std::fs::read_to_string(&ledger).expect("ledger").trim(), "");
    assert!(elements(&lab.ns, "allow_web").is_empty());
}

#[test]
fn durations_are_offered_and_capped_by_the_deployment_and_the_policy() {
    let env = TestEnv::new();
    let lab = lab();
    let more = format!("{ACCESS}{}", lab.resource_toml("web", "env = \"test\""));
    let gw = gateway(&env, &more, NET_POLICY);
    let a = lab.v4[0].to_string();
    let refused = |duration: &str, needle: &str| {
        let out = run(
            wgctl_as(&gw, ALICE).args(["access", "start", "--from", &a, "--duration", duration]),
            T,
        );
        assert_stderr_has(&out, needle);
    };
    refused(
        "3h",
        "3h is not an offered duration: choose one of 3s, 1h, 2h, 4h, 8h, 12h",
    );
    refused(
        "12h",
        "12h is longer than this deployment allows: [access] max_duration is 8h",
    );
    refused(
        "8h",
        "8h is longer than policy 'net' allows for resource web: its max_session_duration is 4h",
    );
    refused("soon", "'soon' is not a duration");
    // None of these left a session or a rule; 4h is allowed.
    assert!(elements(&lab.ns, "allow_web").is_empty());
    let s = start(&gw, ALICE, lab.v4[0], "4h");
    assert_eq!(s["state"], "ACTIVE");
    assert_eq!(s["duration"], "4h");
    // Refusals are audited with the limit they met.
    let denied = gw.audit("access.denied");
    assert_eq!(denied.len(), 2, "{denied:#?}");
    // The admin token is not a person: no access session for it.
    let (code, body) = gw.request("POST", "/api/v1/access-sessions", &gw.token, "{}");
    assert_eq!(code, 403, "{body}");
    // What alice is offered stops at her policy's cap; a start without a duration takes the
    // deployment's default (8h here), or the longest she may have below it.
    let with_default = TestEnv::new();
    let more8 = more.replace(
        "max_duration = \"8h\"\n",
        "max_duration = \"8h\"\ndefault_duration = \"8h\"\n",
    );
    let gw3 = gateway(&with_default, &more8, NET_POLICY);
    let (code, body) = gw3.request("GET", "/api/v1/access-sessions", ALICE, "");
    assert_eq!(code, 200, "{body}");
    let offer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        offer["durations"],
        serde_json::json!(["3s", "1h", "2h", "4h"]),
        "{offer:#}"
    );
    assert_eq!(offer["default_duration"], "4h");
    let out = access(&gw3, ALICE, &["start", "--from", &a]);
    assert_success(&out, "start without a duration");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["duration"], "4h", "{s:#}");
    // `wgctl policy explain` says which policy grants a resource, and the caps.
    let out = run(
        gw3.wgctl().args([
            "policy",
            "explain",
            "--actor",
            "alice",
            "--target",
            "web",
            "--protocol",
            "network",
        ]),
        T,
    );
    assert_success(&out, "policy explain network");
    let said = text(&out.stdout);
    assert!(said.contains("ADMITTED by policy net"), "{said}");
    assert!(said.contains("; security key off\n"), "{said}");
    assert!(
        said.contains(
            "policy max_session_duration 4h; [access] max_duration 8h; durations offered 3s, 1h, 2h, 4h"
        ),
        "{said}"
    );
    assert!(
        said.contains("admits: matches group sre, tag env=test"),
        "{said}"
    );
    // No session settings that do not apply (recording, idle), no accounts.
    assert!(
        !said.contains("any account") && !said.contains("recording="),
        "{said}"
    );
    let out = run(
        gw3.wgctl().args([
            "policy",
            "explain",
            "--actor",
            "alice",
            "--target",
            "nope",
            "--protocol",
            "network",
        ]),
        T,
    );
    assert_stderr_has(
        &out,
        "'nope' is not a network resource (this gateway has: web)",
    );
    // A person no policy grants anything is told so.
    let no_grant = TestEnv::new();
    let gw2 = gateway(
        &no_grant,
        &more,
        "[[policies]]\nname = \"ssh-only\"\ngroups = [\"sre\"]\n",
    );
    let out = run(
        wgctl_as(&gw2, ALICE).args(["access", "start", "--from", &a]),
        T,
    );
    assert_stderr_has(&out, "no policy grants alice a network resource");
}
