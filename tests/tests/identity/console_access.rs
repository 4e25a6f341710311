//! The console's Access page: a person starts an access session for the browser's own address,
//! sees each rule with its coloured state (one resource's script refuses: PARTIAL), and stops
//! it with a reason; the rules are gone.

use serde_json::json;
use wardengate_tests::*;

use super::console::console_people;
use super::console_page::*;
use super::*;

#[test]
fn the_console_starts_shows_and_stops_an_access_session_for_the_browsers_address() {
    let env = TestEnv::new();
    let ledger = wardengate_tests::ledger::Ledger::new(env.path("allowed.txt"));
    let resources = format!(
        "{}[[resources]]\nname = \"cloud-sg\"\ntags = {{ env = \"test\" }}\nbackend = \"command\"\n\
         apply = [\"/bin/sh\", \"-c\", \"echo 'sg-7: quota exceeded' >&2; exit 2\", \"apply\"]\n\
         revoke = [\"/bin/true\"]\n\n",
        ledger.resource("bastion", ("env", "test"), "")
    );
    let policy = "\n[[policies]]\nname = \"net\"\ngroups = [\"sre\"]\nprotocols = [\"network\"]\nresource_tags = [\"env=test\"]\n";
    let gw = env
        .gateway()
        .policies(policy)
        .extra(&console_people(&env, ""))
        .extra(&resources)
        .start();
    let mut browser = Browser::start(&env, "chromium");
    let origin = gw.api.replace("127.0.0.1", "localhost");
    let c = &mut browser.chromium;
    console_sign_in(c, &origin, "/console/access");
    // The offered durations, the default first selected.
    let offered = until(
        c,
        "Array.from(document.querySelectorAll('#access-duration option')).map((o) => o.value).join(',')",
        T,
        |v| v.as_str().is_some_and(|t| !t.is_empty()),
    );
    assert_eq!(offered, json!("1h,2h,4h,8h,12h,16h,24h"));
    c.eval("document.getElementById('access-duration').value = '2h'");
    click(c, "#access-go");
    let status = until(
        c,
        "document.getElementById('access-status').textContent",
        T,
        |v| v.as_str().is_some_and(|t| t.starts_with("PARTIAL")),
    );
    assert!(
        status
            .as_str()
            .unwrap_or_default()
            .contains("1 of 2 rules in place for 127.0.0.1"),
        "{status}"
    );
    // The row: its state badge and each rule's, coloured by state (the computed colour).
    let row = until(
        c,
        "(() => { const r = document.querySelector('#access tbody tr'); if (!r) return null; \
         const b = Array.from(r.querySelectorAll('.badge')); \
         return b.map((x) => x.textContent + '=' + getComputedStyle(x).color).join('|'); })()",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("PARTIAL")),
    );
    let row = row.as_str().unwrap_or_default().to_string();
    assert!(
        row.contains("PARTIAL=rgb(224, 166, 58)"),
        "amber PARTIAL: {row}"
    );
    assert!(
        row.contains("bastion applied=rgb(63, 182, 122)"),
        "green applied: {row}"
    );
    assert!(
        row.contains("cloud-sg failed=rgb(229, 83, 75)"),
        "red failed: {row}"
    );
    let title = c.eval(
        "Array.from(document.querySelectorAll('#access tbody .badge')).map((b) => b.title).join('|')",
    );
    assert!(
        title
            .as_str()
            .unwrap_or_default()
            .contains("sg-7: quota exceeded"),
        "{title}"
    );
    assert_eq!(ledger.read().trim(), "bastion 127.0.0.1");
    shot(c, "console-access.png");

    // Stop it with a reason: CANCELLED, the rule gone.
    click(c, "#access tbody button.danger");
    c.eval(
        "document.getElementById('ask-reason').value = 'done for today'; \
         document.getElementById('ask-ok').click();",
    );
    until(
        c,
        "(document.querySelector('#access tbody tr .badge') || {}).textContent",
        T,
        |v| v == &json!("CANCELLED"),
    );
    assert_eq!(ledger.read().trim(), "");
    shot(c, "console-access-stopped.png");
    let all = gw.get_json("/api/v1/access-sessions?all=true");
    assert_eq!(
        all["sessions"][0]["reason"], "cancelled by alice: done for today",
        "{all:#}"
    );
}

/// A network policy that asks for a security key: `wgctl access start` is refused (with no key
/// enrolled, then with the link that proves presence) and nothing is opened; once the key is
/// touched the session starts and says which key; one proof is good for one start; and the
/// console's Start runs the key's ceremony in the page.
#[test]
fn a_network_policy_asks_for_a_security_key_in_wgctl_and_in_the_console() {
    let env = TestEnv::new();
    let ledger = wardengate_tests::ledger::Ledger::new(env.path("allowed.txt"));
    let resources = ledger.resource("vault-ui", ("env", "prod"), "");
    let policy = "\n[[policies]]\nname = \"net-keyed\"\ngroups = [\"sre\"]\n\
        protocols = [\"network\"]\nresource_tags = [\"env=prod\"]\nmfa = \"webauthn\"\n";
    let gw = env
        .gateway()
        .user_token(ALICE_TOKEN)
        .policies(policy)
        .extra(&console_people(&env, ""))
        .extra(&resources)
        .start();
    // No key enrolled: told to enrol one.
    let out = alice_wgctl(&gw, &["access", "start"]);
    assert!(!out.status.success());
    assert_stderr_has(
        &out,
        "policy net-keyed requires a security key, and alice has none enrolled",
    );
    let mut browser = Browser::start(&env, "chromium");
    enrol(&gw, &mut browser);
    // A key enrolled: the refusal carries the link; nothing is opened or counted.
    let out = alice_wgctl(&gw, &["access", "start"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("MFA required by policy net-keyed: open "),
        "{err}"
    );
    let link = err
        .split_whitespace()
        .find(|w| w.contains("/mfa#ticket="))
        .unwrap_or_else(|| panic!("no link in: {err}"))
        .to_string();
    assert_eq!(ledger.read(), "");
    let none = gw.get_json("/api/v1/access-sessions?all=true");
    assert_eq!(none["sessions"], json!([]), "{none:#}");
    let (state, text) = browser.complete(&link);
    assert_eq!(state, "done", "{text}");
    let out = alice_wgctl(&gw, &["access", "start", "-o", "json"]);
    assert_success(&out, "access start once the key is touched");
    let s: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(s["state"], "ACTIVE", "{s:#}");
    assert_eq!(s["mfa"], "webauthn (YubiKey 5C)", "{s:#}");
    assert_eq!(ledger.read().trim(), "vault-ui 127.0.0.1");
    let id = s["id"].as_str().expect("id");
    assert_stdout_has(
        &alice_wgctl(&gw, &["access", "show", id]),
        "webauthn (YubiKey 5C)",
    );
    // The policy's mfa_max_age is 0: one proof, one start.
    let again = alice_wgctl(&gw, &["access", "start"]);
    assert!(
        !again.status.success(),
        "a spent proof opened a second session"
    );
    assert_stderr_has(&again, "MFA required by policy net-keyed");
    let challenged = gw.audit("mfa.challenged");
    assert!(
        challenged
            .iter()
            .any(|e| e["detail"]["protocol"] == "network"),
        "{challenged:?}"
    );
    let denied = gw.audit("access.denied");
    assert!(
        denied
            .iter()
            .any(|e| e["detail"]["detail"]["reason"] == "mfa_required"),
        "{denied:?}"
    );

    // The console: Start asks for the key in the page, and the session starts.
    let origin = gw.api.replace("127.0.0.1", "localhost");
    let c = &mut browser.chromium;
    console_sign_in(c, &origin, "/console/access");
    until(
        c,
        "document.querySelectorAll('#access-duration option').length",
        T,
        |v| v.as_u64().is_some_and(|n| n > 0),
    );
    click(c, "#access-go");
    let status = until(
        c,
        "document.getElementById('access-status').textContent",
        T,
        |v| v.as_str().is_some_and(|t| t.starts_with("ACTIVE")),
    );
    assert!(
        status
            .as_str()
            .unwrap_or_default()
            .contains("1 of 1 rules in place for 127.0.0.1"),
        "{status}"
    );
    shot(c, "console-access-mfa.png");
    let all = gw.get_json("/api/v1/access-sessions?all=true");
    let keyed: Vec<&Value> = all["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["mfa"] == "webauthn (YubiKey 5C)" && s["state"] == "ACTIVE")
        .collect();
    assert_eq!(keyed.len(), 2, "{all:#}");
}
