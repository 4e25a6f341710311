//! Ownership handoff with real OpenSSH clients in real terminals (tmux) and `wgctl`: alice
//! offers her live shell to dan, dan accepts and takes it over with `ssh dan:sess_…@gateway`
//! (same shell, screen repainted), under the stricter of the two policies; offers that expire
//! or are declined change nothing; handoffs nobody may accept are refused.

use std::time::Duration;

use wardengate_tests::tmux::{argv, shell, Tmux};
use wardengate_tests::*;

const T: Duration = Duration::from_secs(20);
const ALICE_TOKEN: &str = "alice-0123456789abcdef0123456789abcdef";
const DAN_TOKEN: &str = "dan-0123456789abcdef0123456789abcdef";
const MALLORY_TOKEN: &str = "mallory-0123456789abcdef0123456789abcdef";

const POLICIES: &str = r#"
[[policies]]
name = "oncall"
groups = ["sre"]
targets = ["web.test"]
shadow = "covert"
idle_timeout = "15m"

[[policies]]
name = "contractor"
users = ["dan"]
targets = ["web.test"]
shadow = "visible"
idle_timeout = "10m"
"#;

fn gateway(env: &TestEnv, sshd: &wardengate_dev::sshd::Sshd, window: &str) -> GatewayProc {
    // dan logs in with the same key pair as alice (the test has one); the login name decides.
    let users = format!(
        "[[users]]\nname = \"dan\"\npublic_keys = [\"{key}\"]\napi_token_sha256 = \"{d}\"\n\n\
         [[users]]\nname = \"mallory\"\npublic_keys = [\"{key}\"]\napi_token_sha256 = \"{m}\"\n\n",
        key = env.alice_pub,
        d = sha256_hex(DAN_TOKEN.as_bytes()),
        m = sha256_hex(MALLORY_TOKEN.as_bytes()),
    );
    // alice's own token (the builder makes her; her entry takes the token line by name).
    let gw = env
        .gateway()
        .target_at("web.test", &sshd.address(), &sshd.user)
        .extra(&users)
        .api_lines(&format!("handoff_window = \"{window}\""))
        .policies(POLICIES);
    gw.user_token(ALICE_TOKEN).start()
}

fn wgctl(gw: &GatewayProc, token: &str, args: &[&str]) -> std::process::Output {
    run(gw.wgctl().env("WARDENGATE_TOKEN", token).args(args), T)
}

#[test]
fn alice_hands_her_shell_to_dan() {
    let (env, _sshd, gw) = with_gateway(|env, sshd| gateway(env, sshd, "60s"));
    let tmux = Tmux::new(env.dir.path());
    let id = shell(&tmux, &gw, &env, "alice", "alice:web.test");
    tmux.line("alice", "export MARK=$((1000+234)); echo mark-$MARK");
    tmux.expect("alice", "mark-1234", T);

    // alice offers it with her own token.
    let out = wgctl(
        &gw,
        ALICE_TOKEN,
        &[
            "session",
            "handoff",
            &id,
            "--to",
            "dan",
            "--reason",
            "shift change",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_stdout_has(&out, &format!("offered {id} to dan"));
    tmux.expect(
        "alice",
        "alice offered this session to dan (shift change)",
        T,
    );
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["handoff"]["to"], "dan", "{s}");
    // dan sees the session offered to him; mallory sees nothing of it and cannot take it.
    let dans = wgctl(&gw, DAN_TOKEN, &["session", "list", "-o", "json"]);
    assert_stdout_has(&dans, &id);
    let mal = wgctl(&gw, MALLORY_TOKEN, &["session", "accept", &id]);
    assert!(!mal.status.success());
    assert_stderr_has(&mal, "HTTP 404");
    let mal = wgctl(&gw, MALLORY_TOKEN, &["session", "shadow", &id]);
    assert_stderr_has(&mal, "HTTP 403");

    // dan accepts: ownership moves, alice is told and detached.
    let out = wgctl(&gw, DAN_TOKEN, &["session", "accept", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains(&format!("ssh dan:{id}@")), "{said}");
    assert!(said.contains("oncall+contractor"), "{said}");
    tmux.expect("alice", "session handed off to dan", T);
    tmux.expect("alice", "[exited]", T);

    // A command run over the takeover login leaves the shell waiting for dan's terminal.
    let out = run(
        gw.ssh(&env, &format!("dan:{id}"))
            .arg("echo quick-$((2+2))"),
        T,
    );
    assert!(
        text(&out.stdout).contains("quick-4"),
        "{}",
        text(&out.stderr)
    );
    // alice cannot come back through the takeover login.
    let out = run(gw.ssh(&env, &format!("alice:{id}")).arg("true"), T);
    assert_stderr_has(&out, &format!("session {id} is not waiting for alice"));

    // dan takes the live shell over: the screen as alice left it, the same shell.
    let mut c = gw.ssh(&env, &format!("dan:{id}"));
    c.arg("-t");
    tmux.spawn("dan", &[], &argv(&c));
    tmux.expect("dan", "mark-1234", T);
    tmux.line("dan", "echo again-$MARK");
    tmux.expect("dan", "again-1234", T);
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["actor"], "dan", "{s}");
    assert_eq!(s["state"], "active", "{s}");
    assert_eq!(s["previous_owners"], serde_json::json!(["alice"]), "{s}");
    assert_eq!(s["policy"], "oncall+contractor", "{s}");
    // The settings reported are the merged ones: the shorter idle timeout, the stricter shadow.
    assert_eq!(s["decision"]["settings"]["idle_timeout"], "10m", "{s}");
    assert_eq!(s["decision"]["settings"]["shadow"], "visible", "{s}");
    assert!(
        s["decision"]["why"]
            .as_str()
            .is_some_and(|w| w.contains("handed to dan")),
        "{s}"
    );
    // The stricter shadow mode now applies: an observer is announced to dan.
    let w = gw.watch(&id, None);
    assert_eq!(w.status, 200, "{}", w.error);
    tmux.expect(
        "dan",
        "admin is now watching this session read-only (1 observer)",
        T,
    );
    drop(w);

    tmux.line("dan", "exit");
    let rec = gw.wait_sealed(&id);
    assert_eq!(rec["actor"], "dan", "{rec}");
    for kind in [
        "session.handoff.requested",
        "session.handoff.accepted",
        "session.handoff.takeover",
    ] {
        let e = gw.wait_audit(kind, T);
        assert_eq!(e["session_id"], id.as_str(), "{e}");
    }
    assert_eq!(gw.wait_audit("session.handoff.accepted", T)["actor"], "dan");
    // Every event after the handoff carries dan.
    let closed = gw.get_json(&format!("/api/v1/audit?session={id}"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let after: Vec<&serde_json::Value> = closed
        .iter()
        .skip_while(|e| e["kind"] != "session.handoff.accepted")
        .collect();
    assert!(after.len() >= 3, "{closed:?}");
    // (Events about someone else acting on it carry that someone: observers, alice's refused
    // attempt to come back.)
    let by_others = [
        "session.shadow.attach",
        "session.shadow.detach",
        "session.handoff.takeover_refused",
    ];
    for e in &after {
        if !by_others.iter().any(|k| e["kind"] == *k) {
            assert_eq!(e["actor"], "dan", "{e}");
        }
    }
    let jsonl = gw.recording_export(&id, "jsonl");
    assert_has_all(&jsonl, &["alice -> dan: shift change", "taken-over"]);
    // The recording has both owners' work in one stream.
    let played = gw.recording_export(&id, "text");
    assert!(
        played.contains("mark-1234") && played.contains("again-1234"),
        "{played}"
    );
}

#[test]
fn offers_that_expire_or_are_declined_change_nothing() {
    let (env, _sshd, gw) = with_gateway(|env, sshd| gateway(env, sshd, "2s"));
    let tmux = Tmux::new(env.dir.path());
    let id = shell(&tmux, &gw, &env, "alice", "alice:web.test");

    // Nobody may take over a session that was not handed to them.
    let mut c = gw.ssh(&env, &format!("dan:{id}"));
    let out = run(c.arg("true"), T);
    assert!(!out.status.success());
    assert_stderr_has(&out, &format!("session {id} is not waiting for dan"));

    // Refused at once: a user no policy lets reach the target, a reason missing, a
    // non-owner's offer, a session without a terminal.
    let out = wgctl(
        &gw,
        ALICE_TOKEN,
        &[
            "session", "handoff", &id, "--to", "mallory", "--reason", "x",
        ],
    );
    assert_stderr_has(&out, "cannot hand session");
    assert_stderr_has(&out, "HTTP 403");
    let out = wgctl(
        &gw,
        ALICE_TOKEN,
        &["session", "handoff", &id, "--to", "dan"],
    );
    assert_stderr_has(&out, "--reason is required");
    let out = wgctl(
        &gw,
        MALLORY_TOKEN,
        &[
            "session", "handoff", &id, "--to", "mallory", "--reason", "mine",
        ],
    );
    assert_stderr_has(&out, "HTTP 404");
    let mut cmd = gw.ssh(&env, "alice:web.test");
    let _batch = wardengate_tests::live::Live::spawn(cmd.arg("sleep 30"));
    let live = gw.wait_sessions("?state=active", T, |s| s.len() == 2);
    let batch = live
        .iter()
        .find(|s| s["id"] != id.as_str())
        .and_then(|s| s["id"].as_str())
        .expect("the batch session");
    let out = wgctl(
        &gw,
        ALICE_TOKEN,
        &["session", "handoff", batch, "--to", "dan", "--reason", "x"],
    );
    assert_stderr_has(&out, "has no terminal to hand over");

    // Expired: after the window, accepting fails and alice still owns it.
    let out = wgctl(
        &gw,
        ALICE_TOKEN,
        &[
            "session", "handoff", &id, "--to", "dan", "--reason", "lunch",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let e = gw.wait_audit("session.handoff.expired", Duration::from_secs(10));
    assert_eq!(e["detail"]["to"], "dan", "{e}");
    tmux.expect("alice", "the handoff to dan expired; nothing changed", T);
    let out = wgctl(&gw, DAN_TOKEN, &["session", "accept", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("HTTP 404")
            || text(&out.stderr).contains("not being handed off"),
        "{}",
        text(&out.stderr)
    );
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["actor"], "alice", "{s}");
    assert!(s["handoff"].is_null(), "{s}");

    // Declined: dan says no; alice is told; nothing changes.
    let out = wgctl(
        &gw,
        ALICE_TOKEN,
        &[
            "session", "handoff", &id, "--to", "dan", "--reason", "again",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = wgctl(
        &gw,
        DAN_TOKEN,
        &["session", "decline", &id, "--reason", "busy"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    tmux.expect(
        "alice",
        "dan declined the handoff (busy); nothing changed",
        T,
    );
    gw.wait_audit("session.handoff.declined", T);
    assert_eq!(
        gw.get_json(&format!("/api/v1/sessions/{id}"))["actor"],
        "alice"
    );

    // Accepted but never taken over: the session waits out the window, then ends.
    let out = wgctl(
        &gw,
        ALICE_TOKEN,
        &["session", "handoff", &id, "--to", "dan", "--reason", "bye"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = wgctl(&gw, DAN_TOKEN, &["session", "accept", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    tmux.expect("alice", "session handed off to dan", T);
    let rec = gw.wait_sealed(&id);
    assert_eq!(rec["end_reason"], "client_dropped", "{rec}");
    assert!(
        rec["end_detail"]
            .as_str()
            .is_some_and(|d| d.contains("dan did not take it over within 2s")),
        "{rec}"
    );
}
