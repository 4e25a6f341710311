//! Every way a connection is refused: the user sees a specific message, the audit log says why,
//! and nothing panics or hangs.

use std::process::Command;
use std::time::Duration;

use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

/// An interactive-style client: keyboard-interactive messages are shown (BatchMode hides them),
/// and every password prompt (the gateway asks everyone) is answered wrongly.
fn interactive(gw: &GatewayProc, env: &TestEnv, login: &str) -> Command {
    let wrong = env.path("wrong-askpass.sh");
    if !wrong.exists() {
        std::fs::write(&wrong, "#!/bin/sh\necho 'not the password'\n").expect("askpass");
        let _ = Command::new("chmod").arg("+x").arg(&wrong).status();
    }
    let mut c = gw.ssh_interactive(env, login);
    c.env("SSH_ASKPASS", &wrong)
        .env("SSH_ASKPASS_REQUIRE", "force");
    c
}

/// What every refusal before authentication says, whoever asks.
const DENIED: &str = "wardengate: access denied. Log in as USER:TARGET";

fn audit_has(gw: &GatewayProc, kind: &str, needle: &str) -> bool {
    gw.audit(kind)
        .iter()
        .any(|e| e.to_string().contains(needle))
}

#[test]
fn unknown_user_is_refused_like_anyone_and_audited() {
    let (env, _sshd, gw) = standard();
    let out = run(interactive(&gw, &env, "mallory:web-01.test").arg("true"), T);
    assert_eq!(out.status.code(), Some(255));
    assert_stderr_has(&out, DENIED);
    assert!(
        !text(&out.stderr).contains("unknown user"),
        "{}",
        text(&out.stderr)
    );
    assert!(audit_has(&gw, "auth.failed", "unknown_user"));
}

#[test]
fn unregistered_key_is_refused() {
    let (env, _sshd, gw) = standard();
    let other = wardengate_gateway::keys::generate_ed25519("other").expect("key");
    let other_path = env.path("other_key");
    wardengate_gateway::keys::write_keypair(&other_path, &other).expect("write");
    // `ssh alice:web-01.test true` with `options`, offering only the key the gateway does not know.
    let ssh_with_other_key = |options: &[&str]| {
        let mut c = Command::new("ssh");
        c.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(options)
        .arg("-i")
        .arg(&other_path)
        .args([
            "-p",
            &gw.ssh_port.to_string(),
            "alice:web-01.test@127.0.0.1",
            "true",
        ]);
        c
    };
    let mut c = ssh_with_other_key(&[
        "-o",
        "PreferredAuthentications=publickey,keyboard-interactive",
        "-o",
        "BatchMode=no",
    ]);
    c.env("SSH_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS_REQUIRE", "force");
    let out = run(&mut c, T);
    assert_eq!(out.status.code(), Some(255));
    // alice has a password, so keyboard-interactive asks for it; askpass fails, nothing is accepted.
    assert!(gw
        .sessions("?actor=alice")
        .iter()
        .all(|s| s["state"] != "active"));
    // Batch clients get the plain refusal.
    let out = run(&mut ssh_with_other_key(&["-o", "BatchMode=yes"]), T);
    assert_eq!(out.status.code(), Some(255));
    assert_stderr_has(&out, "Permission denied");
}

#[test]
fn wrong_password_is_told_and_audited_and_right_password_works() {
    let (env, _sshd, gw) = standard();
    let askpass = |pw: &str, name: &str| {
        let p = env.path(name);
        std::fs::write(&p, format!("#!/bin/sh\necho '{pw}'\n")).expect("askpass");
        let _ = Command::new("chmod").arg("+x").arg(&p).status();
        p
    };
    let wrong = askpass("not the password", "wrong.sh");
    let mut c = gw.ssh_interactive(&env, "alice:web-01.test");
    c.args(["-o", "PreferredAuthentications=keyboard-interactive"])
        .env("SSH_ASKPASS", &wrong)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .arg("true");
    let out = run(&mut c, T);
    assert_eq!(out.status.code(), Some(255));
    assert_stderr_has(&out, DENIED);
    assert!(audit_has(&gw, "auth.failed", "bad_password"));

    let right = askpass(ALICE_PASSWORD, "right.sh");
    for method in ["keyboard-interactive", "password"] {
        let mut c = gw.ssh_interactive(&env, "alice:web-01.test");
        c.args(["-o", &format!("PreferredAuthentications={method}")])
            .env("SSH_ASKPASS", &right)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .arg("echo via-$0 >/dev/null; echo authenticated");
        let out = run(&mut c, T);
        assert_eq!(
            text(&out.stdout).trim(),
            "authenticated",
            "{method}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn unknown_target_no_permission_and_account_errors_are_specific() {
    let (env, _sshd, gw) = with_gateway(|env, sshd| {
        env.gateway()
            .target("web-01.test", sshd)
            .extra(&format!(
                "[[targets]]\nname = \"db-01.prod\"\naddress = \"{a}\"\ntags = {{ env = \"prod\" }}\naccounts = [{{ name = \"x\", secret = \"db/x\" }}]\n\n\
                 [[targets]]\nname = \"multi.test\"\naddress = \"{a}\"\ntags = {{ env = \"test\" }}\n\
                 accounts = [{{ name = \"one\", secret = \"m/one\" }}, {{ name = \"two\", secret = \"m/two\" }}]\n",
                a = sshd.address()
            ))
            .start()
    });
    let cases = [
        (
            "alice:nope.test",
            "unknown target 'nope.test'",
            "unknown_target",
        ),
        ("alice:db-01.prod", "access denied", "no_permission"),
        (
            "alice:multi.test",
            "has several accounts (you may use: one, two); connect as alice:multi.test:ACCOUNT",
            "account_required",
        ),
        (
            "alice:web-01.test:ghost",
            "has no account 'ghost'",
            "unknown_account",
        ),
        (
            "alice:multi.test:one",
            "credential for one@multi.test is not available",
            "credential_unavailable",
        ),
        ("alice", DENIED, ""),
    ];
    for (login, msg, reason) in cases {
        // BatchMode on purpose: an authenticated user learns why in batch mode too.
        let out = run(gw.ssh(&env, login).arg("true"), T);
        assert_ne!(out.status.code(), Some(0), "{login}");
        let err = text(&out.stderr);
        if reason.is_empty() {
            // A malformed login is refused before authentication, like any other refusal there
            // (the audit says why): shown interactively only.
            let out = run(interactive(&gw, &env, login).arg("true"), T);
            assert!(
                text(&out.stderr).contains(msg),
                "{login}: {}",
                text(&out.stderr)
            );
            continue;
        }
        assert!(err.contains(msg), "{login}: expected '{msg}' in: {err}");
        assert!(
            audit_has(&gw, "session.denied", reason),
            "no session.denied/{reason} for {login}"
        );
    }
    let denied = gw.sessions("?state=denied");
    assert_eq!(denied.len(), 5, "denied sessions are recorded: {denied:?}");
    // `ssh -N` opens no channel: the reason arrives as the disconnect message.
    let out = run(
        gw.ssh(&env, "alice:nope.test")
            .args(["-N", "-o", "LogLevel=INFO"]),
        T,
    );
    assert_stderr_has(&out, "unknown target 'nope.test'");
}

#[test]
fn target_down_fails_the_session_with_a_clear_error() {
    let dead = wardengate_dev::sshd::free_port().expect("port");
    let (env, _sshd, gw) = with_gateway(|env, sshd| {
        env.gateway()
            .target_at("down.test", &format!("127.0.0.1:{dead}"), &sshd.user)
            .start()
    });
    let out = run(
        gw.ssh(&env, "alice:down.test")
            .args(["-o", "LogLevel=INFO"])
            .arg("true"),
        T,
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains(&format!(
            "target down.test (127.0.0.1:{dead}) is unreachable"
        )),
        "{}",
        text(&out.stderr)
    );
    let s = gw.wait_sessions("?actor=alice&state=failed", Duration::from_secs(10), |s| {
        !s.is_empty()
    });
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["end_reason"], "target_failed");
    assert!(gw.sessions("?state=active").is_empty(), "nothing left live");
    // Its concurrency slot came back (the client may leave before the session is supervised).
    let v = gw.get_json("/api/v1/policies/explain?actor=alice&target=down.test");
    assert_eq!(v["current"]["target"], 0, "{v}");
    assert_eq!(v["current"]["pool"], 0, "{v}");
}

#[test]
fn host_key_mismatch_refuses_the_session() {
    let env = TestEnv::new();
    let mut first = env.sshd_named("sshd-a", 0);
    let port = first.port;
    let gw = env.gateway().target("web-01.test", &first).start();
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("echo pinned"), T);
    assert_eq!(text(&out.stdout).trim(), "pinned", "{}", text(&out.stderr));
    assert!(!gw.audit("target.hostkey_pinned").is_empty());
    // Same address, different host key: an impostor or an unannounced re-key.
    first.stop();
    let _second = env.sshd_named("sshd-b", port);
    let out = run(
        gw.ssh(&env, "alice:web-01.test")
            .args(["-o", "LogLevel=INFO"])
            .arg("echo should-not-run"),
        T,
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert_stderr_has(&out, "does not match the pinned key");
    assert!(!gw.audit("target.hostkey_mismatch").is_empty());
    let failed = gw.wait_sessions("?state=failed", Duration::from_secs(10), |s| !s.is_empty());
    assert!(failed[0]["end_detail"]
        .as_str()
        .unwrap_or_default()
        .contains("pinned"));
}
