//! Reconnect modes with real OpenSSH clients killed with SIGKILL (a laptop losing its network):
//! `resume` re-attaches the same session with its screen, `reauth` links a new session to the
//! dropped one, `strict` ends the session.

use std::time::Duration;

use wardengate_tests::live::Live;
use wardengate_tests::*;

const POLICIES: &str = r#"
[[policies]]
name = "resumable"
groups = ["sre"]
targets = ["resume.test"]
reconnect = { mode = "resume", grace = "30s" }

[[policies]]
name = "relinked"
groups = ["sre"]
targets = ["reauth.test"]
reconnect = { mode = "reauth", grace = "30s" }

[[policies]]
name = "brief"
groups = ["sre"]
targets = ["brief.test"]
reconnect = { mode = "resume", grace = "1s" }

[[policies]]
name = "strict"
groups = ["sre"]
targets = ["strict.test"]
reconnect = { mode = "strict" }
"#;

fn gateway(env: &TestEnv, sshd: &wardengate_dev::sshd::Sshd) -> GatewayProc {
    let addr = sshd.address();
    env.gateway()
        .target_at("resume.test", &addr, &sshd.user)
        .target_at("reauth.test", &addr, &sshd.user)
        .target_at("strict.test", &addr, &sshd.user)
        .target_at("brief.test", &addr, &sshd.user)
        .policies(POLICIES)
        .start()
}

/// An interactive shell through the gateway (`ssh -tt`, keystrokes from our pipe).
fn shell(gw: &GatewayProc, env: &TestEnv, target: &str) -> Live {
    let mut c = gw.ssh(env, &format!("alice:{target}"));
    c.arg("-tt");
    Live::spawn(&mut c)
}

const T: Duration = Duration::from_secs(20);

fn one(
    gw: &GatewayProc,
    query: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let s = gw.wait_sessions(query, T, |s| s.len() == 1 && pred(&s[0]));
    assert_eq!(s.len(), 1, "{query}: {s:?}");
    assert!(pred(&s[0]), "{query}: {s:?}");
    s[0].clone()
}

#[test]
fn resume_after_kill_9_reattaches_the_same_session_with_its_screen() {
    let (env, _sshd, gw) = with_gateway(gateway);
    let mut first = shell(&gw, &env, "resume.test");
    // The shell computes the marker, so seeing it proves the target ran our command.
    first.send("export WG=resumed; echo MARK-$((6*7))-$WG\n");
    first.expect("MARK-42-resumed", T);
    let id = gw.wait_one_active();
    // Output that arrives while no client is attached still reaches the screen.
    first.send("sleep 1; echo LATE-$((5*5))\n");
    // The target's terminal echoed the line: it has it.
    first.expect("echo LATE-$((5*5))", T);
    first.kill9();

    let paused = one(&gw, "?target=resume.test", |s| s["state"] == "paused");
    std::thread::sleep(Duration::from_millis(1500));
    // A command meanwhile runs on the paused session's target connection and leaves the shell
    // paused for the terminal that comes back.
    let out = run(
        gw.ssh(&env, "alice:resume.test").arg("echo cmd-$((3*3))"),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "cmd-9");
    one(&gw, "?target=resume.test", |s| s["state"] == "paused");
    assert_eq!(paused["id"], id.as_str());
    assert!(!gw.audit("session.paused").is_empty());
    let list = run(gw.wgctl().args(["session", "list"]), T);
    let list = text(&list.stdout);
    assert!(list.contains("STATE") && list.contains("paused"), "{list}");

    let mut second = shell(&gw, &env, "resume.test");
    // The screen comes back from the gateway's terminal state...
    second.expect("MARK-42-resumed", T);
    second.expect("LATE-25", T);
    // ...and it is the same shell: its variable is still set.
    second.send("echo again-$((1+1))-$WG\n");
    second.expect("again-2-resumed", T);
    let s = one(&gw, "?target=resume.test", |s| s["state"] == "active");
    assert_eq!(s["id"], id.as_str(), "same session id");
    let resumed = gw.audit("session.resumed");
    assert_eq!(resumed.len(), 2, "the command and the shell: {resumed:?}");
    assert!(resumed.iter().all(|r| r["session_id"] == id.as_str()));

    second.send("exit\n");
    assert!(second.wait(T).is_some(), "{}", second.output());
    let ended = gw.wait_sealed(&id);
    assert_eq!(ended["end_reason"], "client_exit", "{ended}");
    // The recording is one piece with a `resumed` marker, and verifies.
    let jsonl = gw.recording_export(&id, "jsonl");
    assert_has_all(&jsonl, &["\"paused\"", "\"resumed\""]);
    assert!(
        jsonl.contains("again-2-resumed"),
        "input after the resume is recorded"
    );
    let out = run(gw.wgctl().args(["recording", "verify", &id]), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn resume_window_expiry_ends_the_session_and_strict_ends_at_once() {
    let (env, _sshd, gw) = with_gateway(gateway);
    let mut strict = shell(&gw, &env, "strict.test");
    strict.send("echo strict-$((2+3))\n");
    strict.expect("strict-5", T);
    strict.kill9();
    let s = one(&gw, "?target=strict.test&state=closed", |_| true);
    assert_eq!(s["end_reason"], "client_dropped", "{s}");
    // A new connection is a new, unlinked session.
    let out = run(gw.ssh(&env, "alice:strict.test").arg("true"), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = gw.wait_sessions("?target=strict.test&state=closed", T, |s| s.len() == 2);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|s| s["linked_session"].is_null()), "{all:?}");

    // resume with a 1s window: paused, then closed when nobody comes back.
    let mut brief = shell(&gw, &env, "brief.test");
    brief.send("echo brief-$((1+8))\n");
    brief.expect("brief-9", T);
    brief.kill9();
    one(&gw, "?target=brief.test", |s| s["state"] == "paused");
    let s = one(&gw, "?target=brief.test&state=closed", |_| true);
    assert_eq!(s["end_reason"], "client_dropped", "{s}");
    assert!(
        s["end_detail"]
            .as_str()
            .unwrap_or("")
            .contains("not resumed within 1s"),
        "{s}"
    );
}

#[test]
fn reauth_opens_a_new_session_linked_to_the_dropped_one() {
    let (env, _sshd, gw) = with_gateway(gateway);
    let mut first = shell(&gw, &env, "reauth.test");
    first.send("echo reauth-$((3+4))\n");
    first.expect("reauth-7", T);
    let old = gw.wait_one_active();
    first.kill9();
    // The dropped session ends and its recording is sealed.
    let s = gw.wait_sealed(&old);
    assert_eq!(s["end_reason"], "client_dropped", "{s}");

    let mut second = shell(&gw, &env, "reauth.test");
    second.send("echo fresh-$((4+4))\n");
    second.expect("fresh-8", T);
    let new = one(&gw, "?target=reauth.test&state=active", |_| true);
    assert_ne!(new["id"], old.as_str(), "a new session");
    assert_eq!(
        new["linked_session"],
        old.as_str(),
        "linked to the dropped one"
    );
    // Nothing of the old shell: the new session starts from a fresh login.
    assert!(!second.output().contains("reauth-7"), "{}", second.output());
}
