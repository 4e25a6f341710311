//! Security keys end to end with real peers: headless Chromium's DevTools virtual authenticator
//! (CTAP2, user verification) as the person's key on the gateway's `/mfa` page, OpenSSH in tmux
//! for the step-up prompt, psql for a protocol that cannot prompt, `wgctl` for the links.

use std::time::Duration;

use serde_json::{json, Value};
use wardengate_dev::sshd::Sshd;
use wardengate_tests::browser::Chromium;
use wardengate_tests::tmux::{argv, Tmux};
use wardengate_tests::*;

const T: Duration = Duration::from_secs(30);
const ALICE_TOKEN: &str = "alice-own-api-token-for-the-identity-tests";

/// The page's outcome: `{state, text}` once it is no longer working.
const STATUS: &str = "(() => { const s = document.getElementById('status'); \
    return s ? {state: s.dataset.state, text: s.textContent} : null; })()";

/// A browser with a virtual security key plugged in.
struct Browser {
    chromium: Chromium,
    authenticator: String,
    profile: std::path::PathBuf,
    shots: usize,
}

impl Browser {
    fn start(env: &TestEnv, name: &str) -> Browser {
        let profile = env.path(name);
        let mut chromium = Chromium::open("about:blank", &profile);
        chromium.call("WebAuthn.enable", json!({}));
        let authenticator = Self::plug(&mut chromium);
        Browser {
            chromium,
            authenticator,
            profile,
            shots: 0,
        }
    }

    /// A new virtual key (USB, CTAP2, with a PIN that is always right, touched at once).
    fn plug(chromium: &mut Chromium) -> String {
        let r = chromium.call(
            "WebAuthn.addVirtualAuthenticator",
            json!({"options": {"protocol": "ctap2", "transport": "usb", "hasResidentKey": false,
                   "hasUserVerification": true, "isUserVerified": true,
                   "automaticPresenceSimulation": true}}),
        );
        r["authenticatorId"]
            .as_str()
            .expect("an authenticator id")
            .to_string()
    }

    /// Open `url` and wait for the page to finish: `(state, text)`.
    fn complete(&mut self, url: &str) -> (String, String) {
        self.chromium.navigate(url);
        // Page.navigate does not wait for the page: wait until it is the key page.
        self.chromium
            .eval_until("location.pathname", T, |v| v == &json!("/mfa"));
        let v = self.chromium.eval_until(STATUS, T, |v| {
            v["state"].as_str().is_some_and(|s| s != "working")
        });
        let out = (
            v["state"].as_str().unwrap_or_default().to_string(),
            v["text"].as_str().unwrap_or_default().to_string(),
        );
        assert!(
            !out.0.is_empty(),
            "the page never finished: {v}\nchromium: {}",
            Chromium::log(&self.profile)
        );
        // To look at the page: WARDENGATE_SCREENSHOTS=DIR keeps a picture of each outcome.
        if let Some(dir) = std::env::var_os("WARDENGATE_SCREENSHOTS") {
            let name = format!("mfa-{}-{}.png", out.0, self.shots);
            self.shots += 1;
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(name),
                self.chromium.screenshot(),
            );
        }
        out
    }

    fn credentials(&mut self) -> Vec<Value> {
        let r = self.chromium.call(
            "WebAuthn.getCredentials",
            json!({"authenticatorId": self.authenticator}),
        );
        r["credentials"].as_array().cloned().unwrap_or_default()
    }
}

/// A gateway where alice has her own API token and `policy` (a TOML `[[policies]]` block).
fn gateway<'a>(env: &'a TestEnv, sshd: &Sshd, policy: &str) -> GatewayBuilder<'a> {
    env.gateway()
        .target("web-01.test", sshd)
        .user_token(ALICE_TOKEN)
        .policies(policy)
}

const STEP_UP: &str = "\n[[policies]]\nname = \"sre-prod\"\ngroups = [\"sre\"]\n\
    target_tags = [\"env=test\"]\nmfa = \"webauthn\"\n";

/// `wgctl` as alice herself.
fn alice_wgctl(gw: &GatewayProc, args: &[&str]) -> std::process::Output {
    run(
        gw.wgctl().env("WARDENGATE_TOKEN", ALICE_TOKEN).args(args),
        T,
    )
}

/// The link `wgctl mfa enroll|prove` printed (JSON).
fn link_of(out: &std::process::Output) -> String {
    assert_success(out, "wgctl mfa");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["url"].as_str().expect("a url").to_string()
}

/// alice enrols her browser's key as "YubiKey 5C".
fn enrol(gw: &GatewayProc, browser: &mut Browser) {
    let url = link_of(&alice_wgctl(
        gw,
        &["mfa", "enroll", "--name", "YubiKey 5C", "-o", "json"],
    ));
    assert!(url.contains("/mfa#ticket="), "{url}");
    let (state, text) = browser.complete(&url);
    assert_eq!(state, "done", "{text}");
    assert!(text.contains("'YubiKey 5C' enrolled for alice"), "{text}");
}

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

const CAROL_TOKEN: &str = "carol-own-api-token-an-approver";
const BOB_TOKEN: &str = "bob-own-api-token-another-approver";
const DAN_TOKEN: &str = "dan-own-api-token-not-an-approver";

/// carol and bob lead the SREs (approvers); dan is an SRE who may not approve. (Their SSH key
/// is alice's: the config wants one; these tests log them in only to the API.)
fn people(env: &TestEnv) -> String {
    // All of them, alice too, may decide approvals ([[roles]] approval.decide); which requests
    // is each policy's approvers.
    let mut toml = "[[roles]]\nname = \"approvers\"\n\
        members = [\"group:sre-leads\", \"dan\", \"alice\"]\ncan = [\"approval.decide\"]\n\n"
        .to_string();
    let people = [
        ("carol", "sre-leads", CAROL_TOKEN),
        ("bob", "sre-leads", BOB_TOKEN),
        ("dan", "sre", DAN_TOKEN),
    ];
    for (name, group, token) in people {
        toml.push_str(&format!(
            "[[users]]\nname = \"{name}\"\ngroups = [\"{group}\"]\npublic_keys = [\"{}\"]\n\
             api_token_sha256 = \"{}\"\n\n",
            env.alice_pub,
            sha256_hex(token.as_bytes())
        ));
    }
    toml
}

fn wgctl_as(gw: &GatewayProc, token: &str, args: &[&str]) -> std::process::Output {
    run(gw.wgctl().env("WARDENGATE_TOKEN", token).args(args), T)
}

/// The `req_…` id in a text.
fn request_id(text: &str) -> String {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("req_"))
        .unwrap_or_else(|| panic!("no request id in: {text}"))
        .to_string()
}

#[test]
fn an_ssh_session_waits_for_an_approver_and_continues_when_approved() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let policy = "\n[[policies]]\nname = \"prod-ssh-write\"\ngroups = [\"sre\"]\n\
        target_tags = [\"env=test\"]\n\
        approval = { approvers = [\"group:sre-leads\", \"alice\"], required = 1, timeout = \"1m\", valid_for = \"5m\" }\n";
    let gw = gateway(&env, &sshd, policy).extra(&people(&env)).start();

    let tmux = Tmux::new(env.dir.path());
    let mut c = gw.ssh_interactive(&env, "alice:web-01.test");
    c.arg("-t");
    tmux.spawn("ssh", &[], &argv(&c));
    let screen = tmux.expect("ssh", "Ctrl-C to withdraw", T);
    assert!(screen.contains("waiting for approval req_"), "{screen}");
    assert!(screen.contains("(approvers: sre-leads, alice)"), "{screen}");
    let id = request_id(&screen);

    // carol sees it; dan may not decide; alice may not decide on her own request.
    let out = wgctl_as(&gw, CAROL_TOKEN, &["approval", "list"]);
    assert_stdout_has(&out, &id);
    let out = wgctl_as(
        &gw,
        DAN_TOKEN,
        &["approval", "approve", &id, "--reason", "sure"],
    );
    assert_stderr_has(&out, "dan is not an approver");
    let out = wgctl_as(
        &gw,
        ALICE_TOKEN,
        &["approval", "approve", &id, "--reason", "me"],
    );
    assert_stderr_has(&out, "nobody decides on their own request");
    assert!(
        gw.sessions("?state=active").is_empty(),
        "admitted before approval"
    );

    let out = wgctl_as(
        &gw,
        CAROL_TOKEN,
        &["approval", "approve", &id, "--reason", "change 42"],
    );
    assert_stdout_has(&out, "approved (1/1 approvals");
    let sid = gw.wait_one_active();
    tmux.line("ssh", "echo approved-$((40+2))");
    tmux.expect("ssh", "approved-42", T);
    let out = run(gw.wgctl().args(["session", "show", &sid]), T);
    assert_stdout_has(&out, "prod-ssh-write (approved by carol, 00:00:");
    for kind in ["approval.requested", "approval.granted", "approval.used"] {
        let e = gw.wait_audit(kind, T);
        assert_eq!(e["actor"], "alice", "{kind}: {e}");
    }
    let out = wgctl_as(
        &gw,
        ALICE_TOKEN,
        &["approval", "list", "--mine", "-o", "json"],
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list[0]["state"], "used", "{list}");
    assert_eq!(list[0]["decisions"][0]["by"], "carol", "{list}");

    // A second connection waits on a new request; Ctrl-C withdraws it.
    tmux.spawn("ssh2", &[], &argv(&c));
    let screen = tmux.expect("ssh2", "Ctrl-C to withdraw", T);
    let second = request_id(&screen);
    assert_ne!(second, id);
    tmux.keys("ssh2", &["C-c"]);
    let list = poll(
        T,
        Duration::from_millis(250),
        || {
            let out = wgctl_as(
                &gw,
                ALICE_TOKEN,
                &["approval", "list", "--mine", "-o", "json"],
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
        },
        |l| l[0]["state"] == "withdrawn",
    );
    assert_eq!(list[0]["id"], second.as_str(), "{list}");
    let withdrawn = gw.wait_audit("approval.withdrawn", T);
    assert_eq!(withdrawn["detail"]["reason"], "client_left", "{withdrawn}");
}

#[test]
fn postgres_needs_two_approvers_once_and_a_request_times_out() {
    let env = TestEnv::new();
    let pg = wardengate_tests::pg::cluster(&env);
    let policy = "\n[[policies]]\nname = \"dba-two-person\"\ngroups = [\"sre\"]\n\
        target_tags = [\"env=test\"]\n\
        approval = { approvers = [\"group:sre-leads\"], required = 2, timeout = \"6s\", valid_for = \"5m\" }\n";
    // The chat bot's webhook: refuses the first delivery (the gateway retries), takes the next.
    let (hook_port, hooks) = webhook_receiver();
    let gw = wardengate_tests::pg::pg_targets(env.gateway(), &pg)
        .user_token(ALICE_TOKEN)
        .extra(&format!(
            "[approvals]\nwebhook_url = \"http://127.0.0.1:{hook_port}/hook\"\n\n{}",
            people(&env)
        ))
        .policies(policy)
        .start();
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    assert!(
        err.contains("policy dba-two-person needs approval: request req_"),
        "{err}"
    );
    let id = request_id(&err);
    let announced = hooks
        .recv_timeout(T)
        .expect("the request is announced again after a 500");
    assert_eq!(announced["request"], id.as_str(), "{announced}");
    assert_eq!(announced["actor"], "alice", "{announced}");
    assert_eq!(
        announced["approvers"],
        json!(["group:sre-leads"]),
        "{announced}"
    );

    let approve = |token: &str| {
        wgctl_as(
            &gw,
            token,
            &["approval", "approve", &id, "--reason", "ticket 7"],
        )
    };
    assert_success(&approve(CAROL_TOKEN), "carol approves");
    // One of two: still waiting, on the same request; carol cannot count twice.
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    assert_eq!(request_id(&err), id, "{err}");
    assert_stderr_has(&approve(CAROL_TOKEN), "carol approved");
    assert_success(&approve(BOB_TOKEN), "bob approves");

    let out = run(
        gw.psql("alice#billing.test", "")
            .args(["-c", "select 40 + 2"]),
        T,
    );
    assert_success(&out, "psql once approved");
    assert_stdout_has(&out, "42");
    // Once: the next connection makes a new request, which alice withdraws.
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    let second = request_id(&err);
    assert_ne!(second, id);
    let out = wgctl_as(&gw, ALICE_TOKEN, &["approval", "withdraw", &second]);
    assert_stdout_has(&out, "is withdrawn");

    // Nobody answers the third within 6 s: denied, approval_timeout.
    let err = gw.psql_stderr("alice#billing.test", "", "select 1");
    let third = request_id(&err);
    let list = poll(
        Duration::from_secs(20),
        Duration::from_millis(250),
        || {
            let out = wgctl_as(&gw, CAROL_TOKEN, &["approval", "list", "-o", "json"]);
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
        },
        |l| {
            l.as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["id"] == third.as_str() && r["state"] == "denied")
            })
        },
    );
    let r = list
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == third.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(r["reason"], "approval_timeout", "{list}");
    let denied = gw.wait_audit("approval.denied", T);
    assert_eq!(denied["detail"]["reason"], "approval_timeout", "{denied}");
}

#[test]
fn a_role_gives_a_person_exactly_its_permissions() {
    const ERIN_TOKEN: &str = "erin-own-api-token-an-auditor";
    let env = TestEnv::new();
    let sshd = env.sshd();
    let erin = format!(
        "[[roles]]\nname = \"auditors\"\nmembers = [\"group:audit\"]\n\
         can = [\"audit.read\", \"recording.read\"]\n\n\
         [[users]]\nname = \"erin\"\ngroups = [\"audit\"]\npublic_keys = [\"{}\"]\n\
         api_token_sha256 = \"{}\"\n\n",
        env.alice_pub,
        sha256_hex(ERIN_TOKEN.as_bytes())
    );
    let gw = gateway(&env, &sshd, STEP_UP).extra(&erin).start();
    assert_success(
        &wgctl_as(&gw, ERIN_TOKEN, &["audit", "list"]),
        "an auditor reads the audit",
    );
    assert_success(
        &wgctl_as(&gw, ERIN_TOKEN, &["recording", "list"]),
        "an auditor lists recordings",
    );
    let out = wgctl_as(
        &gw,
        ERIN_TOKEN,
        &[
            "session",
            "terminate",
            "sess_00000000000000000000",
            "--reason",
            "x",
        ],
    );
    assert_stderr_has(
        &out,
        "erin may not POST /api/v1/sessions/{id}/terminate: it needs session.terminate",
    );
    let out = wgctl_as(&gw, ERIN_TOKEN, &["policy", "reload"]);
    assert_stderr_has(&out, "it needs policy.reload");
    let forbidden = gw.wait_audit("api.forbidden", T);
    assert_eq!(forbidden["actor"], "erin", "{forbidden}");
}

#[test]
fn the_api_speaks_tls_and_wgctl_trusts_the_certificate_it_is_given() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = gateway(&env, &sshd, STEP_UP).api_tls().start();
    assert!(gw.api.starts_with("https://127.0.0.1:"), "{}", gw.api);
    let cert = env.dir.path().join("gw").join("api_tls.crt");
    assert!(
        cert.exists(),
        "a self-signed certificate is generated at first start"
    );

    // Without the certificate: refused, and told what to do.
    let out = run(gw.wgctl().args(["session", "list"]), T);
    assert_stderr_has(&out, "does not trust: pass its certificate with --ca-file");
    // With it: the same command works over TLS.
    let out = run(
        gw.wgctl()
            .arg("--ca-file")
            .arg(&cert)
            .args(["session", "list"]),
        T,
    );
    assert_success(&out, "wgctl over https");
    // Plain HTTP to the TLS listener gets no answer a client could take for the API.
    let http = gw.api.replace("https://", "http://");
    let out = run(
        std::process::Command::new("curl").args([
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{http}/healthz"),
        ]),
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "000",
        "plain HTTP answered on the TLS port"
    );
    // A link for the browser names https.
    let url = link_of(&alice_wgctl_ca(
        &gw,
        &cert,
        &["mfa", "enroll", "-o", "json"],
    ));
    assert!(
        url.starts_with(&format!("https://localhost:{}/mfa#ticket=", gw.api_port())),
        "{url}"
    );
}

fn alice_wgctl_ca(gw: &GatewayProc, ca: &std::path::Path, args: &[&str]) -> std::process::Output {
    run(
        gw.wgctl()
            .env("WARDENGATE_TOKEN", ALICE_TOKEN)
            .arg("--ca-file")
            .arg(ca)
            .args(args),
        T,
    )
}

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

#[test]
fn wgctl_login_signs_in_through_the_page_with_password_and_key() {
    use std::io::BufRead;
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = gateway(&env, &sshd, STEP_UP).start();
    let mut browser = Browser::start(&env, "chromium");
    enrol(&gw, &mut browser);
    let home = env.path("home");
    std::fs::create_dir_all(&home).expect("home");
    let wgctl = |args: &[&str]| {
        let mut c = std::process::Command::new(bin("wgctl"));
        c.env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("WARDENGATE_TOKEN")
            .env("WARDENGATE_ADDR", &gw.api)
            .args(args);
        c
    };
    // wgctl's stderr, read to the end in a thread (closing it early would fail its next write).
    let wgctl_said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sign_in = |browser: &mut Browser, password: &str| -> (std::process::Child, String) {
        let mut child = wgctl(&["login"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("wgctl login");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let said = wgctl_said.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(u) = l.split_whitespace().find(|w| w.contains("/login#code=")) {
                    let _ = tx.send(u.to_string());
                }
                if let Ok(mut s) = said.lock() {
                    s.push_str(&l);
                    s.push('\n');
                }
            }
        });
        let url = rx.recv_timeout(T).expect("wgctl login prints the link");
        browser.chromium.navigate(&url);
        // Page.navigate does not wait for the page: wait for its form.
        browser.chromium.eval_until(
            "location.pathname === '/login' && !!document.getElementById('form')",
            T,
            |v| v == &json!(true),
        );
        let filled = browser.chromium.eval(&format!(
            "(() => {{ const code = document.getElementById('code').value; \
             document.getElementById('user').value = 'alice'; \
             document.getElementById('password').value = {}; \
             document.getElementById('form').requestSubmit(); return code; }})()",
            json!(password)
        ));
        (child, filled.as_str().unwrap_or_default().to_string())
    };

    // A wrong password: refused on the page, audited, wgctl still waits.
    let (mut waiting, code) = sign_in(&mut browser, "not her password");
    assert_eq!(
        code.len(),
        9,
        "the page shows the code from its link: {code}"
    );
    let said =
        browser
            .chromium
            .eval_until("document.getElementById('status').textContent", T, |v| {
                v.as_str().is_some_and(|t| t.contains("refused"))
            });
    assert!(
        said.as_str().is_some_and(|t| t.contains("sign-in refused")),
        "{said}"
    );
    let failed = gw.wait_audit("login.failed", T);
    assert_eq!(failed["actor"], "alice", "{failed}");
    let _ = waiting.kill();
    let _ = waiting.wait();

    // Password and key: wgctl receives its token.
    let (mut child, _) = sign_in(&mut browser, ALICE_PASSWORD);
    let v = browser.chromium.eval_until(STATUS, T, |v| {
        v["state"].as_str().is_some_and(|s| s != "working")
    });
    assert_eq!(v["state"], "done", "{v}");
    assert!(
        v["text"]
            .as_str()
            .is_some_and(|t| t.contains("alice signed in")),
        "{v}"
    );
    let status = wait_timeout(&mut child, T).expect("wgctl login finished");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out).ok();
    assert!(
        status.success(),
        "{out}\nwgctl said: {}",
        wgctl_said.lock().map(|s| s.clone()).unwrap_or_default()
    );
    assert!(out.contains("as alice for 12h"), "{out}");
    let creds = home.join(".config/wardengate/credentials");
    let mode = std::fs::metadata(&creds)
        .expect("credentials")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // The kept token acts as alice: her sessions, not the audit (no role gives it).
    assert_success(
        &run(&mut wgctl(&["session", "list"]), T),
        "session list signed in",
    );
    let out = run(&mut wgctl(&["audit", "list"]), T);
    assert_stderr_has(&out, "alice may not GET /api/v1/audit: it needs audit.read");
    assert!(!gw.audit("login.succeeded").is_empty());

    let out = run(&mut wgctl(&["logout"]), T);
    assert_stdout_has(&out, "signed out");
    assert!(!creds.exists(), "the credentials are forgotten");
    let out = run(&mut wgctl(&["session", "list"]), T);
    assert_stderr_has(&out, "not signed in: run `wgctl login`");
}

/// A webhook endpoint on loopback (the peer a chat bot would be): answers 500 to the first
/// POST and 200 to the rest, and passes on each JSON body it accepted.
fn webhook_receiver() -> (u16, std::sync::mpsc::Receiver<Value>) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("webhook listener");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if n > 0 {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
        }
    });
    (port, rx)
}

#[test]
fn sign_in_answers_the_same_whoever_is_named_and_is_throttled() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = gateway(&env, &sshd, STEP_UP)
        .security_lines("failures_before_backoff = 3\nuser_failures_before_backoff = 3")
        .start();
    let (status, body) = gw.request("POST", "/api/v1/login/device", "", "{}");
    assert_eq!(status, 200, "{body}");
    let started: Value = serde_json::from_str(&body).expect("JSON");
    let code = started["user_code"].as_str().expect("a code").to_string();
    let attempt = |user: &str, code: &str| {
        let body = json!({"code": code, "user": user, "password": "not the password"});
        gw.request("POST", "/api/v1/login/password", "", &body.to_string())
    };
    // A known person with a wrong password, an unknown one, a wrong code: one answer.
    let known = attempt("alice", &code);
    let unknown = attempt("nobody-like-this", &code);
    let bad_code = attempt("alice", "ZZZZ-9999");
    assert_eq!(known.0, 401, "{known:?}");
    assert_eq!(known, unknown);
    assert_eq!(known, bad_code);
    // Guessing on: the source is throttled, still with the same answer, and audited.
    for _ in 0..6 {
        assert_eq!(attempt("alice", &code), known);
    }
    let throttled = gw.wait_audit("auth.throttled", T);
    assert!(
        throttled["detail"].to_string().contains("127.0.0.1") || throttled["actor"] == "alice",
        "{throttled}"
    );
    let failed = gw.audit("login.failed");
    assert!(
        failed.iter().any(|e| e["actor"] == "nobody-like-this"),
        "{failed:?}"
    );
    // One source cannot fill the gateway with waiting sign-ins.
    for _ in 0..3 {
        assert_eq!(gw.request("POST", "/api/v1/login/device", "", "{}").0, 200);
    }
    let (status, body) = gw.request("POST", "/api/v1/login/device", "", "{}");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("sign-ins from this address are waiting"),
        "{body}"
    );
}

#[test]
fn a_named_api_token_acts_as_itself_with_its_permissions() {
    const CI_TOKEN: &str = "ci-deployer-token-for-automation-only";
    let env = TestEnv::new();
    let sshd = env.sshd();
    let tokens = format!(
        "[[api_tokens]]\nname = \"ci-deployer\"\nsha256 = \"{}\"\ncan = [\"session.read\", \"audit.read\"]\n\n",
        sha256_hex(CI_TOKEN.as_bytes())
    );
    let gw = gateway(&env, &sshd, STEP_UP).extra(&tokens).start();
    assert_success(
        &wgctl_as(&gw, CI_TOKEN, &["session", "list"]),
        "session.read",
    );
    assert_success(&wgctl_as(&gw, CI_TOKEN, &["audit", "list"]), "audit.read");
    let out = wgctl_as(&gw, CI_TOKEN, &["policy", "reload"]);
    assert_stderr_has(
        &out,
        "token:ci-deployer may not POST /api/v1/policies/reload: it needs policy.reload",
    );
    let forbidden = gw.wait_audit("api.forbidden", T);
    assert_eq!(forbidden["actor"], "token:ci-deployer", "{forbidden}");
}
