//! Live shadowing with real OpenSSH sessions and `wgctl session shadow` in real terminals
//! (tmux): the screen an observer sees, banners per policy mode, blocked attaches, several
//! observers at once, keystrokes that go nowhere, covert observers hidden from the watched user,
//! and an observer that stops reading beside a 256 MiB transfer.

use std::time::Duration;

use wardengate_tests::tmux::{shell, Tmux};
use wardengate_tests::*;

const T: Duration = Duration::from_secs(20);

pub const CAROL_TOKEN: &str = "carol-0123456789abcdef0123456789abcdef";
pub const ERIN_TOKEN: &str = "erin-0123456789abcdef0123456789abcdef";
pub const ALICE_TOKEN: &str = "alice-0123456789abcdef0123456789abcdef";

const POLICIES: &str = r#"
[[policies]]
name = "watched"
groups = ["sre"]
targets = ["visible.test"]
shadow = "visible"

[[policies]]
name = "quiet"
groups = ["sre"]
targets = ["covert.test"]
shadow = "covert"

[[policies]]
name = "private"
groups = ["sre"]
targets = ["blocked.test"]
shadow = "blocked"
"#;

fn gateway(env: &TestEnv, sshd: &wardengate_dev::sshd::Sshd) -> GatewayProc {
    let addr = sshd.address();
    let users = format!(
        "[[users]]\nname = \"carol\"\noperator = true\npublic_keys = [\"{key}\"]\napi_token_sha256 = \"{c}\"\n\n\
         [[users]]\nname = \"erin\"\noperator = true\npublic_keys = [\"{key}\"]\napi_token_sha256 = \"{e}\"\n\n",
        key = env.alice_pub,
        c = sha256_hex(CAROL_TOKEN.as_bytes()),
        e = sha256_hex(ERIN_TOKEN.as_bytes()),
    );
    env.gateway()
        .target_at("visible.test", &addr, &sshd.user)
        .target_at("covert.test", &addr, &sshd.user)
        .target_at("blocked.test", &addr, &sshd.user)
        .extra(&users)
        .policies(POLICIES)
        .user_token(ALICE_TOKEN)
        .start()
}

fn wgctl_shadow(tmux: &Tmux, gw: &GatewayProc, win: &str, id: &str, token: &str) {
    let cmd = vec![
        bin("wgctl").display().to_string(),
        "session".into(),
        "shadow".into(),
        id.into(),
    ];
    tmux.spawn(
        win,
        &[("WARDENGATE_ADDR", &gw.api), ("WARDENGATE_TOKEN", token)],
        &cmd,
    );
}

#[test]
fn operators_watch_a_live_terminal_read_only() {
    let (env, _sshd, gw) = with_gateway(gateway);
    let tmux = Tmux::new(env.dir.path());
    let id = shell(&tmux, &gw, &env, "alice", "alice:visible.test");
    tmux.line("alice", "echo before-$((40+2))");
    tmux.expect("alice", "before-42", T);

    // carol attaches mid-session: the header, then the screen as it is.
    wgctl_shadow(&tmux, &gw, "carol", &id, CAROL_TOKEN);
    let screen = tmux.expect("carol", "before-42", T);
    assert!(
        screen.contains("[shadow] attached read-only at 00:00:"),
        "{screen}"
    );
    assert!(screen.contains(&format!("of {id}")), "{screen}");
    assert_has_all(
        &screen,
        &[
            "[shadow] observer: carol  banner=visible",
            "[shadow] detach with Ctrl-] q",
        ],
    );
    // alice is told, in her terminal.
    tmux.expect(
        "alice",
        "[wardengate] carol is now watching this session read-only (1 observer)",
        T,
    );

    // Live: what alice does next appears for carol.
    tmux.line("alice", "echo live-$((6*7))");
    tmux.expect("carol", "live-42", T);

    // carol's keystrokes go nowhere: not to the session, not to alice's terminal.
    let marker = env.path("typed-by-observer");
    tmux.line("carol", &format!("touch {}", marker.display()));
    tmux.line("alice", "echo after-typing");
    tmux.expect("carol", "after-typing", T);
    assert!(
        !marker.exists(),
        "an observer's keystrokes reached the session"
    );
    assert!(!tmux.screen("alice").contains("typed-by-observer"));

    // Three observers at once: carol, erin, and the admin; each sees the session, alice sees
    // the count.
    let erin = gw.watch(&id, Some(ERIN_TOKEN));
    let admin = gw.watch(&id, None);
    assert_eq!(
        (erin.status, admin.status),
        (200, 200),
        "{} {}",
        erin.error,
        admin.error
    );
    tmux.expect(
        "alice",
        "admin is now watching this session read-only (3 observers)",
        T,
    );
    tmux.line("alice", "echo three-watchers");
    erin.expect("three-watchers", T);
    admin.expect("three-watchers", T);
    tmux.expect("carol", "three-watchers", T);
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    let names: Vec<&str> = s["observers"]
        .as_array()
        .expect("observers")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{s}");
    for n in ["carol", "erin", "admin"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let out = run(gw.wgctl().args(["session", "show", &id]), T);
    assert_stdout_has(&out, "carol (banner=visible");
    let shadowed = run(
        gw.wgctl()
            .args(["session", "list", "--shadowed", "-o", "json"]),
        T,
    );
    assert_stdout_has(&shadowed, &id);

    // carol detaches with Ctrl-] q; alice is told; the count drops.
    tmux.keys("carol", &["C-]", "q"]);
    tmux.expect("carol", "[shadow] detached", T);
    tmux.expect(
        "alice",
        "carol stopped watching this session (2 observers now)",
        T,
    );
    let detach = gw.wait_audit("session.shadow.detach", T);
    assert_eq!(detach["actor"], "carol", "{detach}");

    // Nobody else is listed as watching once the others go.
    drop(erin);
    drop(admin);
    let unwatched = gw.wait_sessions("?shadowed=true", T, |s| s.is_empty());
    assert!(unwatched.is_empty(), "{unwatched:?}");

    tmux.line("alice", "exit");
    let rec = gw.wait_sealed(&id);
    assert_eq!(rec["state"], "closed");
    let attach = gw.audit("session.shadow.attach");
    assert_eq!(attach.len(), 3, "{attach:?}");
    assert!(attach.iter().all(|a| a["detail"]["banner"] == "visible"));
    // The recording says who watched, and when.
    let jsonl = gw.recording_export(&id, "jsonl");
    assert!(
        jsonl.contains("shadow.attach") && jsonl.contains("carol (visible)"),
        "{jsonl}"
    );
    assert!(jsonl.contains("shadow.detach"), "{jsonl}");
}

#[test]
fn covert_and_blocked_modes() {
    let (env, _sshd, gw) = with_gateway(gateway);
    let tmux = Tmux::new(env.dir.path());

    let covert = shell(&tmux, &gw, &env, "covert", "alice:covert.test");
    let w = gw.watch(&covert, Some(CAROL_TOKEN));
    assert_eq!(w.status, 200, "{}", w.error);
    w.wait("the attach line", T, |e| {
        e["type"] == "attached" && e["banner"] == "covert" && e["observer"] == "carol"
    });
    tmux.line("covert", "echo covert-$((1+1))");
    w.expect("covert-2", T);
    let attach = gw.wait_audit("session.shadow.attach", T);
    assert_eq!(attach["detail"]["banner"], "covert", "{attach}");
    assert!(
        !tmux.screen("covert").contains("watching"),
        "a covert observer was announced:\n{}",
        tmux.screen("covert")
    );
    // Operators see the covert observer; alice, asking about her own session, does not.
    let admin_view = run(gw.wgctl().args(["session", "show", &covert]), T);
    assert_stdout_has(&admin_view, "carol (banner=covert");
    let alice_view = run(
        gw.wgctl()
            .env("WARDENGATE_TOKEN", ALICE_TOKEN)
            .args(["session", "show", &covert]),
        T,
    );
    assert!(alice_view.status.success(), "{}", text(&alice_view.stderr));
    assert!(
        !text(&alice_view.stdout).contains("carol"),
        "{}",
        text(&alice_view.stdout)
    );
    let alice_list = run(
        gw.wgctl().env("WARDENGATE_TOKEN", ALICE_TOKEN).args([
            "session",
            "list",
            "--shadowed",
            "-o",
            "json",
        ]),
        T,
    );
    assert!(
        !text(&alice_list.stdout).contains(&covert),
        "{}",
        text(&alice_list.stdout)
    );

    let blocked = shell(&tmux, &gw, &env, "blocked", "alice:blocked.test");
    let w = gw.watch(&blocked, Some(CAROL_TOKEN));
    assert_eq!(w.status, 403, "{}", w.error);
    assert!(
        w.error.contains("policy 'private' blocks shadowing"),
        "{}",
        w.error
    );
    let out = run(
        gw.wgctl()
            .env("WARDENGATE_TOKEN", CAROL_TOKEN)
            .args(["session", "shadow", &blocked]),
        T,
    );
    assert!(!out.status.success());
    assert_stderr_has(&out, "blocks shadowing");
    assert_stderr_has(&out, "HTTP 403");
    gw.wait_audit("session.shadow.refused", T);
    // Nor is there a browser link for it; and a terminal session has no browser view at all.
    let (status, body) = gw.post(&format!("/api/v1/sessions/{blocked}/shadow/browser"), "{}");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("blocks shadowing"), "{body}");
    let (status, body) = gw.post(&format!("/api/v1/sessions/{covert}/shadow/browser"), "{}");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("wgctl session shadow"), "{body}");
    assert!(!tmux.screen("blocked").contains("watching"));
    assert_eq!(
        gw.get_json(&format!("/api/v1/sessions/{blocked}"))["observers"],
        serde_json::Value::Null
    );
}

#[test]
fn a_stalled_observer_never_holds_up_a_bulk_transfer() {
    let (env, _sshd, gw) = with_gateway(gateway);
    let tmux = Tmux::new(env.dir.path());
    let id = shell(&tmux, &gw, &env, "alice", "alice:visible.test");
    // An observer that never reads, and one that does.
    let stalled = gw.stalled_watch(&id);
    let reader = gw.watch(&id, Some(CAROL_TOKEN));
    gw.wait_sessions("?shadowed=true", T, |s| {
        s.first()
            .is_some_and(|s| s["observers"].as_array().is_some_and(|o| o.len() == 2))
    });
    // 256 MiB through alice's terminal, then a marker.
    let mib = 256;
    tmux.line(
        "alice",
        &format!("head -c {}M /dev/zero | tr '\\0' 'x' | fold -w 100 | nl; echo; echo bulk-$((5*5))-done", mib),
    );
    tmux.expect("alice", "bulk-25-done", Duration::from_secs(600));
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    let out = s["bytes_out"].as_u64().expect("bytes_out");
    assert!(out > mib << 20, "the whole output passed: {out}");
    // The reading observer ends on the final screen.
    reader.expect("bulk-25-done", T);
    // The stalled one is still attached, was never waited for, and once it reads it gets a
    // fresh screen rather than the backlog.
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["observers"].as_array().map(Vec::len), Some(2), "{s}");
    // It was never waited for: what it is sent is a few frames, not the 256 MiB. When it reads
    // again it gets the screen as it is now.
    let mut body = Vec::new();
    {
        use std::io::Read;
        let mut r = stalled.try_clone().expect("clone");
        r.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 65536];
        let deadline = std::time::Instant::now() + T;
        while std::time::Instant::now() < deadline
            && !wardengate_tests::observe::decode_raw(&body).contains("bulk-25-done")
        {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
    assert!(
        wardengate_tests::observe::decode_raw(&body).contains("bulk-25-done"),
        "the stalled observer caught up with the final screen ({} bytes read)",
        body.len()
    );
    assert!(
        body.len() < 64 << 20,
        "what a stalled observer is sent stays small: {} bytes",
        body.len()
    );
    drop(stalled);
    let detach = gw.wait_audit("session.shadow.detach", T);
    assert!(detach["detail"]["resyncs"].as_u64().is_some(), "{detach}");
    tmux.line("alice", "exit");
    gw.wait_sealed(&id);
}
