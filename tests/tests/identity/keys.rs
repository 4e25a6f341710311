//! Security keys: enrolment, once-only and expiring links, step-up for SSH, PostgreSQL and RDP,
//! a cloned key, another origin, mfa_max_age and reauth.

use std::time::Duration;

use serde_json::{json, Value};
use wardengate_tests::tmux::{argv, Tmux};
use wardengate_tests::*;

use super::*;

#[test]
fn a_key_is_enrolled_listed_and_removed_and_its_link_works_once() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = gateway(&env, &sshd, STEP_UP).start();
    let mut browser = Browser::start(&env, "chromium");
    let url = link_of(&alice_wgctl(
        &gw,
        &["mfa", "enroll", "--name", "YubiKey 5C", "-o", "json"],
    ));
    let (state, text) = browser.complete(&url);
    assert_eq!(state, "done", "{text}");
    assert_eq!(
        browser.credentials().len(),
        1,
        "the key holds one credential"
    );

    // The same link again: spent.
    let (state, text) = browser.complete(&url);
    assert_eq!(state, "failed", "{text}");
    assert!(text.contains("cannot be used"), "{text}");

    let out = alice_wgctl(&gw, &["mfa", "list"]);
    assert_stdout_has(&out, "YubiKey 5C");
    let out = alice_wgctl(&gw, &["mfa", "list", "-o", "json"]);
    let keys: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = keys[0]["id"].as_str().expect("a key id").to_string();
    assert_eq!(keys[0]["user"], "alice");
    assert!(keys[0]["counter"].as_u64().is_some(), "{keys}");
    let enrolled = gw.wait_audit("mfa.enrolled", T);
    assert_eq!(enrolled["actor"], "alice", "{enrolled}");
    assert_eq!(enrolled["detail"]["key"], id.as_str(), "{enrolled}");

    // Nobody removes another person's key with their own token; alice removes hers.
    let out = alice_wgctl(&gw, &["mfa", "remove", "key_0000"]);
    assert_stderr_has(&out, "no security key key_0000 of yours");
    assert_success(&alice_wgctl(&gw, &["mfa", "remove", &id]), "mfa remove");
    let out = alice_wgctl(&gw, &["mfa", "list"]);
    assert_stdout_has(&out, "no security keys enrolled");
    let removed = gw.wait_audit("mfa.removed", T);
    assert_eq!(removed["detail"]["by"], "alice", "{removed}");

    // The admin token is nobody: it has to name the person.
    let out = run(gw.wgctl().args(["mfa", "enroll"]), T);
    assert_stderr_has(&out, "belongs to no person");
}

#[test]
fn ssh_asks_for_the_key_and_continues_once_it_is_touched() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = gateway(&env, &sshd, STEP_UP).start();
    let mut browser = Browser::start(&env, "chromium");
    enrol(&gw, &mut browser);

    let tmux = Tmux::new(env.dir.path());
    let mut c = gw.ssh_interactive(&env, "alice:web-01.test");
    c.arg("-t");
    tmux.spawn("ssh", &[], &argv(&c));
    let screen = tmux.expect("ssh", "Security key required by policy sre-prod: open ", T);
    let link = screen
        .split_whitespace()
        .find(|w| w.contains("/mfa#ticket="))
        .unwrap_or_else(|| panic!("no link on the screen:\n{screen}"))
        .to_string();
    assert!(screen.contains("within 2m and touch your key"), "{screen}");
    // Nothing was admitted while the key is awaited.
    assert!(gw.sessions("?state=active").is_empty());

    let (state, text) = browser.complete(&link);
    assert_eq!(state, "done", "{text}");
    assert!(
        text.contains("alice proved presence with 'YubiKey 5C'"),
        "{text}"
    );
    let id = gw.wait_one_active();
    tmux.line("ssh", "echo step-up-$((40+2))");
    tmux.expect("ssh", "step-up-42", T);

    let out = run(gw.wgctl().args(["session", "show", &id]), T);
    assert_stdout_has(&out, "webauthn (YubiKey 5C, 00:00:");
    let passed = gw.wait_audit("mfa.passed", T);
    assert_eq!(passed["detail"]["policy"], "sre-prod", "{passed}");
    assert!(!gw.audit("mfa.challenged").is_empty());

    // A proof is for one session (mfa_max_age = 0): a BatchMode client gets no session.
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
    assert!(!out.status.success(), "admitted without a new proof");
}

#[test]
fn postgres_is_refused_with_the_link_and_admitted_after_a_proof() {
    let env = TestEnv::new();
    let pg = wardengate_tests::pg::cluster(&env);
    let gw = wardengate_tests::pg::pg_targets(env.gateway(), &pg)
        .user_token(ALICE_TOKEN)
        .policies(STEP_UP)
        .start();
    let mut browser = Browser::start(&env, "chromium");

    // Without a key: refused, and told to enrol.
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    assert!(err.contains("has none enrolled"), "{err}");
    enrol(&gw, &mut browser);

    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    assert!(
        err.contains("MFA required by policy sre-prod: open http://localhost:"),
        "{err}"
    );
    assert!(
        err.contains("wgctl mfa prove --target billing.test"),
        "{err}"
    );

    let url = link_of(&alice_wgctl(
        &gw,
        &["mfa", "prove", "--target", "billing.test", "-o", "json"],
    ));
    let (state, text) = browser.complete(&url);
    assert_eq!(state, "done", "{text}");
    let out = run(
        gw.psql("alice#billing.test", "")
            .args(["-c", "select 40 + 2"]),
        T,
    );
    assert_success(&out, "psql after the proof");
    assert_stdout_has(&out, "42");
    // Spent by that session: the next one asks again.
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    assert!(err.contains("MFA required"), "{err}");
    let denied = gw.audit("session.denied");
    assert!(
        denied
            .iter()
            .any(|d| d["detail"]["reason"] == "mfa_required"),
        "{denied:?}"
    );
}

#[test]
fn a_cloned_key_whose_counter_goes_back_is_refused() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = gateway(&env, &sshd, STEP_UP).start();
    let mut browser = Browser::start(&env, "chromium");
    enrol(&gw, &mut browser);
    let prove = |browser: &mut Browser| {
        let url = link_of(&alice_wgctl(&gw, &["mfa", "prove", "-o", "json"]));
        browser.complete(&url)
    };
    let (state, text) = prove(&mut browser);
    assert_eq!(state, "done", "{text}");

    // The same private key in a second authenticator whose counter starts over.
    let cred = browser
        .credentials()
        .pop()
        .expect("the enrolled credential");
    browser.chromium.call(
        "WebAuthn.removeVirtualAuthenticator",
        json!({"authenticatorId": browser.authenticator}),
    );
    let clone = Browser::plug(&mut browser.chromium);
    let mut copy = cred.clone();
    copy["signCount"] = json!(0);
    browser.chromium.call(
        "WebAuthn.addCredential",
        json!({"authenticatorId": clone, "credential": copy}),
    );
    let (state, text) = prove(&mut browser);
    assert_eq!(state, "failed", "{text}");
    assert!(
        text.contains("signature counter did not move forward"),
        "{text}"
    );
    assert!(text.contains("cloned"), "{text}");
    let failed = gw.wait_audit("mfa.failed", T);
    assert_eq!(failed["actor"], "alice", "{failed}");
    assert!(
        failed["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("counter")),
        "{failed}"
    );
}

#[test]
fn a_page_on_another_origin_and_an_expired_link_are_refused() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    // The gateway believes its pages are at port 1; the browser reaches the real port.
    let gw = gateway(&env, &sshd, STEP_UP)
        .extra("[identity]\norigin = \"http://localhost:1\"\nlink_ttl = \"20s\"\n")
        .start();
    let mut browser = Browser::start(&env, "chromium");
    let url = link_of(&alice_wgctl(&gw, &["mfa", "enroll", "-o", "json"]));
    let real = url.replace(
        "http://localhost:1/",
        &format!("http://localhost:{}/", gw.api_port()),
    );
    let (state, text) = browser.complete(&real);
    assert_eq!(state, "failed", "{text}");
    assert!(
        text.contains(&format!(
            "origin http://localhost:{} is not the gateway's",
            gw.api_port()
        )),
        "{text}"
    );
    let failed = gw.wait_audit("mfa.failed", T);
    assert_eq!(failed["detail"]["stage"], "enroll", "{failed}");
    assert!(alice_wgctl(&gw, &["mfa", "list", "-o", "json"])
        .stdout
        .starts_with(b"[]"));
}

#[test]
fn a_link_past_its_time_is_refused() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = gateway(&env, &sshd, STEP_UP)
        .extra("[identity]\nlink_ttl = \"1s\"\n")
        .start();
    let mut browser = Browser::start(&env, "chromium");
    let url = link_of(&alice_wgctl(&gw, &["mfa", "enroll", "-o", "json"]));
    std::thread::sleep(Duration::from_millis(1500));
    let (state, text) = browser.complete(&url);
    assert_eq!(state, "failed", "{text}");
    assert!(text.contains("has expired"), "{text}");
}

#[test]
fn mfa_max_age_lets_one_proof_serve_and_reauth_asks_again_after_a_drop() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let policy = "\n[[policies]]\nname = \"sre-prod\"\ngroups = [\"sre\"]\n\
        target_tags = [\"env=test\"]\nmfa = \"webauthn\"\nmfa_max_age = \"1h\"\n\
        reconnect = { mode = \"reauth\", grace = \"2m\" }\n";
    let gw = gateway(&env, &sshd, policy).start();
    let mut browser = Browser::start(&env, "chromium");
    enrol(&gw, &mut browser);
    let url = link_of(&alice_wgctl(
        &gw,
        &["mfa", "prove", "--target", "web-01.test", "-o", "json"],
    ));
    let (state, text) = browser.complete(&url);
    assert_eq!(state, "done", "{text}");
    assert!(
        text.contains("under policy") || text.contains("proved presence"),
        "{text}"
    );

    // Within mfa_max_age the one proof admits session after session (BatchMode: no prompt).
    for n in ["one", "two"] {
        let out = run(gw.ssh(&env, "alice:web-01.test").args(["echo", n]), T);
        assert_success(&out, "ssh within mfa_max_age");
        assert_stdout_has(&out, n);
    }

    // A dropped connection: the reconnect is linked to it, and wants a fresh proof.
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.arg("-tt");
    let mut first = wardengate_tests::live::Live::spawn(&mut c);
    let old = gw.wait_one_active();
    first.kill9();
    let s = gw.wait_sealed(&old);
    assert_eq!(s["end_reason"], "client_dropped", "{s}");
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
    assert!(
        !out.status.success(),
        "a reauth admitted without a fresh proof"
    );
    let challenged = gw.wait_audit("mfa.challenged", T);
    assert_eq!(challenged["detail"]["fresh"], true, "{challenged}");
}

/// carol and bob lead the SREs (approvers); dan is an SRE who may not approve. (Their SSH key
/// is alice's: the config wants one; these tests log them in only to the API.)
#[test]
fn rdp_is_refused_without_a_proof_and_admitted_after_wgctl_mfa_prove() {
    use wardengate_tests::rdp::{xfreerdp, Desktop, Xvfb, BOB_PASSWORD};
    let env = TestEnv::new();
    let desk = Desktop::start(&env.path("desktop"), 0, "bob", BOB_PASSWORD)
        .expect("the RDP target desktop");
    let gw = env
        .gateway()
        .rdp_target("win-dc01.test", &desk.address(), "bob", BOB_PASSWORD)
        .user_token(ALICE_TOKEN)
        .policies(STEP_UP)
        .start();
    let mut browser = Browser::start(&env, "chromium");
    enrol(&gw, &mut browser);
    let port = gw.rdp_port.expect("the RDP front is on");
    let screen = Xvfb::start(1024, 768).expect("the client's display");

    // RDP cannot show the link: refused in its own terms, the link in the audit.
    let out = run(
        &mut xfreerdp(&screen, port, "alice:win-dc01.test", ALICE_PASSWORD),
        T,
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES"),
        "{said}"
    );
    let denied = gw.wait_audit("session.denied", T);
    assert_eq!(denied["detail"]["reason"], "mfa_required", "{denied}");
    assert!(
        denied["detail"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/mfa#ticket=")
                && m.contains("wgctl mfa prove --target win-dc01.test")),
        "{denied}"
    );

    let url = link_of(&alice_wgctl(
        &gw,
        &["mfa", "prove", "--target", "win-dc01.test", "-o", "json"],
    ));
    let (state, text) = browser.complete(&url);
    assert_eq!(state, "done", "{text}");
    let mut client = xfreerdp(&screen, port, "alice:win-dc01.test", ALICE_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("xfreerdp");
    let id = gw.wait_one_active();
    let _ = client.kill();
    let _ = client.wait();
    let out = run(gw.wgctl().args(["session", "show", &id]), T);
    assert_stdout_has(&out, "webauthn (YubiKey 5C, ");
}
