//! Operators: roles and their 403s, named API tokens, TLS on the API, `wgctl login`, and
//! sign-in that tells nobody which names exist.

use serde_json::{json, Value};
use wardengate_tests::*;

use super::*;

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
fn wgctl_login_signs_in_through_the_page_with_password_and_key() {
    use std::io::BufRead;
    let env = TestEnv::new();
    let sshd = env.sshd();
    let mut gw = gateway(&env, &sshd, STEP_UP).start();
    let mut browser = Browser::start(&env, "chromium");
    enrol(&gw, &mut browser);
    let home = env.path("home");
    std::fs::create_dir_all(&home).expect("home");
    let first_api = gw.api.clone();
    let wgctl = |args: &[&str]| {
        let mut c = std::process::Command::new(bin("wgctl"));
        c.env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("WARDENGATE_TOKEN")
            .env("WARDENGATE_ADDR", &first_api)
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
        // Page.navigate does not wait for the page: wait for its form's handler (the page marks it).
        browser.chromium.eval_until(
            "location.pathname === '/login' && (document.getElementById('form') || {dataset: {}}).dataset.ready === '1'",
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
    crate::console_page::shot(&mut browser.chromium, "wgctl-login-refused.png");
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

    // The token is kept in the store: after a restart (new ports) it still signs alice in.
    let (config, data) = (gw.config.clone(), gw.data.clone());
    gw.stop();
    let gw = GatewayProc::spawn(config, data);
    let again = |args: &[&str]| {
        let mut c = wgctl(args);
        c.env("WARDENGATE_ADDR", &gw.api);
        c
    };
    assert_success(
        &run(&mut again(&["session", "list"]), T),
        "session list signed in, after a restart",
    );

    let out = run(&mut again(&["logout"]), T);
    assert_stdout_has(&out, "signed out");
    assert!(!creds.exists(), "the credentials are forgotten");
    let out = run(&mut again(&["session", "list"]), T);
    assert_stderr_has(&out, "not signed in: run `wgctl login`");
    let revoked = gw.wait_audit("login.revoked", T);
    assert_eq!(revoked["actor"], "alice", "{revoked}");
}

/// A webhook endpoint on loopback (the peer a chat bot would be): answers 500 to the first
/// POST and 200 to the rest, and passes on each JSON body it accepted.
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
