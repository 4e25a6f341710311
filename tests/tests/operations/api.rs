//! What operators do: list, show and terminate sessions with wgctl and the API; the audit log;
//! graceful shutdown; and the injected secret never showing up anywhere.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

/// A long-running interactive session (pty, `sleep`), with its stderr captured.
fn long_session(gw: &GatewayProc, env: &TestEnv, login: &str) -> Child {
    let mut c = gw.ssh(env, login);
    c.args(["-tt", "-o", "LogLevel=INFO"])
        .arg("sleep 600")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().expect("ssh")
}

fn wgctl(gw: &GatewayProc, args: &[&str]) -> std::process::Output {
    run(gw.wgctl().args(args), T)
}

fn finish(mut child: Child) -> (Option<i32>, String) {
    let status = wait_timeout(&mut child, Duration::from_secs(10))
        .expect("ssh did not exit after terminate");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

#[test]
fn terminate_with_wgctl_reaches_the_user_at_once() {
    let (env, _sshd, gw) = standard();
    let child = long_session(&gw, &env, "alice:web-01.test");
    let id = gw.wait_one_active();

    let list = wgctl(&gw, &["session", "list"]);
    let table = text(&list.stdout);
    assert!(table.starts_with("SESSION"), "{table}");
    for col in ["ACTOR", "TARGET", "PROTO", "GW", "AGE", "IDLE"] {
        assert!(
            table.lines().next().unwrap_or_default().contains(col),
            "{table}"
        );
    }
    assert!(
        table.contains(&id) && table.contains("web-01.test") && table.contains("gw-test"),
        "{table}"
    );
    let show = text(&wgctl(&gw, &["session", "show", &id]).stdout);
    assert!(
        show.contains("state:") && show.contains("active") && show.contains("OpenSSH"),
        "{show}"
    );

    let missing = wgctl(&gw, &["session", "terminate", &id]);
    assert!(!missing.status.success());
    assert_stderr_has(&missing, "--reason is required");

    let started = Instant::now();
    let out = wgctl(
        &gw,
        &[
            "session",
            "terminate",
            &id,
            "--reason",
            "incident 42: rotating keys",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, err) = finish(child);
    let took = started.elapsed();
    assert_eq!(code, Some(255));
    assert!(
        err.contains("session terminated by admin: incident 42: rotating keys"),
        "client saw: {err}"
    );
    eprintln!("terminate to client exit: {took:?}");

    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["state"], "closed");
    assert_eq!(s["end_reason"], "terminated");
    assert_eq!(s["end_detail"], "incident 42: rotating keys");
    assert_eq!(s["terminated_by"], "admin");
    let ev = gw.audit("session.terminated");
    assert!(ev
        .iter()
        .any(|e| e["session_id"] == id.as_str()
            && e["detail"]["reason"] == "incident 42: rotating keys"));
    assert!(gw
        .audit("session.end")
        .iter()
        .any(|e| e["session_id"] == id.as_str()));

    // Again: already closed.
    let again = wgctl(&gw, &["session", "terminate", &id, "--reason", "twice"]);
    assert!(!again.status.success());
    assert_stderr_has(&again, "already closed");
    assert_stderr_has(&again, "409");
}

#[test]
fn api_status_codes_and_filters() {
    let (env, _sshd, gw) = standard();
    let child = long_session(&gw, &env, "alice:web-01.test");
    let id = gw.wait_one_active();

    assert_eq!(gw.get("/api/v1/sessions/sess_doesnotexist").0, 404);
    let (code, body) = gw.post(&format!("/api/v1/sessions/{id}/terminate"), "{}");
    assert_eq!(code, 400);
    assert!(body.contains("reason is required"), "{body}");
    let (code, body) = gw.post(&format!("/api/v1/sessions/{id}/terminate"), "not json");
    assert_eq!(code, 400, "{body}");
    assert_eq!(gw.get("/api/v1/sessions?idle_gt=soon").0, 400);
    assert_eq!(gw.get("/api/v1/sessions?state=sleeping").0, 400);
    let (code, body) = gw.get("/api/v1/sessions?protocol=telnet");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("unknown protocol 'telnet' (one of: ssh, postgres, rdp, tcp)"),
        "{body}"
    );
    assert_eq!(gw.sessions("?protocol=ssh").len(), 1);
    assert_eq!(gw.sessions("?protocol=postgres").len(), 0);
    let unauth = reqwest::blocking::get(format!("{}/api/v1/sessions", gw.api)).expect("get");
    assert_eq!(unauth.status().as_u16(), 401);
    let health = reqwest::blocking::get(format!("{}/healthz", gw.api)).expect("get");
    assert_eq!(health.status().as_u16(), 200);
    let spec: serde_json::Value = reqwest::blocking::get(format!("{}/api/v1/openapi.json", gw.api))
        .expect("get")
        .json()
        .expect("json");
    assert!(spec["paths"]["/api/v1/sessions/{id}/terminate"]["post"].is_object());

    assert_eq!(
        gw.sessions("?actor=alice&protocol=ssh&target=web-01.test")
            .len(),
        1
    );
    assert_eq!(gw.sessions("?actor=bob").len(), 0);
    assert_eq!(gw.sessions("?target_tag=env=test").len(), 1);
    assert_eq!(gw.sessions("?target_tag=env=prod").len(), 0);
    // Nobody typed: idle since the start.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(gw.sessions("?idle_gt=1s").len(), 1);
    assert_eq!(gw.sessions("?idle_gt=1h").len(), 0);
    let idle = text(&wgctl(&gw, &["session", "list", "--idle-gt", "1s", "-o", "json"]).stdout);
    assert!(idle.contains(&id), "{idle}");
    let bad = wgctl(&gw, &["session", "list", "--idle-gt", "soon"]);
    assert!(
        !bad.status.success() && text(&bad.stderr).lines().count() == 1,
        "{}",
        text(&bad.stderr)
    );

    // Bulk terminate by target tag and protocol.
    let (code, body) = gw.post("/api/v1/sessions/terminate", r#"{"reason":"maintenance"}"#);
    assert_eq!(code, 400, "a selector is required: {body}");
    let out = wgctl(
        &gw,
        &[
            "session",
            "terminate",
            "--target-tag",
            "env=test",
            "--protocol",
            "ssh",
            "--reason",
            "maintenance window",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_stdout_has(&out, "1 session(s) terminated");
    let (_, err) = finish(child);
    assert!(err.contains("maintenance window"), "{err}");
}

#[test]
fn bulk_terminate_by_actor() {
    let (env, _sshd, gw) = standard();
    let a = long_session(&gw, &env, "alice:web-01.test");
    let b = long_session(&gw, &env, "alice:web-01.test");
    let live = gw.wait_sessions("?state=active", Duration::from_secs(20), |s| s.len() == 2);
    assert_eq!(live.len(), 2, "gateway log:\n{}", gw.log());
    let out = wgctl(
        &gw,
        &[
            "session",
            "terminate",
            "--actor",
            "alice",
            "--reason",
            "offboarding",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["terminated"].as_array().map(Vec::len), Some(2));
    for c in [a, b] {
        let (_, err) = finish(c);
        assert!(err.contains("offboarding"), "{err}");
    }
}

#[test]
fn wgctl_errors_are_one_line() {
    let out = run(
        Command::new(bin("wgctl"))
            .args(["session", "list"])
            .env_remove("WARDENGATE_TOKEN")
            .env_remove("XDG_CONFIG_HOME")
            // No kept sign-in either.
            .env("HOME", "/nonexistent-wgctl-home"),
        T,
    );
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "wgctl: not signed in: run `wgctl login`, or pass --token / set WARDENGATE_TOKEN"
    );
    let port = wardengate_dev::sshd::free_port().expect("port");
    let out = run(
        Command::new(bin("wgctl")).args([
            "session",
            "list",
            "--token",
            "x",
            "--addr",
            &format!("http://127.0.0.1:{port}"),
        ]),
        T,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach the gateway"), "{err}");
}

#[test]
fn injected_secret_never_appears_in_api_or_logs_and_audit_chain_verifies() {
    let (env, sshd, gw) = standard();
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("echo ok"), T);
    assert_eq!(text(&out.stdout).trim(), "ok");
    let _ = run(gw.ssh(&env, "alice:nope").arg("true"), T);
    // The base64 body of the account's private key, line by line.
    let secret_lines: Vec<&str> = env
        .account_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    assert!(!secret_lines.is_empty());
    let mut haystacks = vec![gw.log()];
    for path in ["/api/v1/sessions", "/api/v1/audit?limit=1000"] {
        haystacks.push(gw.get(path).1);
    }
    let sessions = gw.sessions("");
    assert!(sessions.iter().any(|s| s["state"] == "denied"));
    for s in sessions.iter().filter(|s| s["state"] != "denied") {
        haystacks.push(
            gw.get(&format!(
                "/api/v1/sessions/{}",
                s["id"].as_str().unwrap_or_default()
            ))
            .1,
        );
        assert_eq!(s["account_ref"], format!("web-01.test/{}", sshd.user));
    }
    for (i, h) in haystacks.iter().enumerate() {
        for l in &secret_lines {
            assert!(!h.contains(l), "secret material found in output #{i}");
        }
    }
    // The store holds only ciphertext.
    let db = std::fs::read(gw.data.join("wardengate.db")).expect("db");
    for l in &secret_lines {
        assert!(
            !db.windows(l.len()).any(|w| w == l.as_bytes()),
            "plaintext key in the store"
        );
    }
    let audit = gw.get_json("/api/v1/audit");
    assert_eq!(audit["chain_ok"], true);
    let kinds: Vec<String> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for k in [
        "session.requested",
        "session.start",
        "session.end",
        "session.denied",
    ] {
        assert!(kinds.iter().any(|x| x == k), "missing {k} in {kinds:?}");
    }
    let evs = audit["events"].as_array().expect("events");
    for w in evs.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"], "audit chain links");
    }
}

#[test]
fn graceful_shutdown_tells_users_and_closes_sessions() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let mut gw = env.gateway().target("web-01.test", &sshd).start();
    let child = long_session(&gw, &env, "alice:web-01.test");
    let id = gw.wait_one_active();
    let status = gw.stop().expect("gateway did not exit on SIGTERM");
    assert!(status.success(), "{status:?}");
    let (_, err) = finish(child);
    assert!(err.contains("wardengate is shutting down"), "{err}");
    // Restart on the same data directory: the session was closed cleanly, not left dangling.
    let gw2 = GatewayProc::spawn(gw.config.clone(), gw.data.clone());
    let s = gw2.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["state"], "closed");
    assert_eq!(s["end_reason"], "gateway_shutdown");
    // The recording was sealed before the gateway exited, not recovered afterwards.
    assert_eq!(s["recording"]["status"], "complete", "{s}");
    assert!(gw2.audit("recording.recovered").is_empty());
}

#[test]
fn a_killed_gateway_leaves_no_session_open_after_restart() {
    let (env, _sshd, gw) = standard();
    let mut child = long_session(&gw, &env, "alice:web-01.test");
    let id = gw.wait_one_active();
    let (config, data) = (gw.config.clone(), gw.data.clone());
    drop(gw); // SIGKILL
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    let gw2 = GatewayProc::spawn(config, data);
    let s = gw2.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["state"], "failed");
    assert_eq!(s["end_reason"], "gateway_restart");
}

#[test]
fn terminate_during_setup_still_tells_the_user() {
    // The target leg takes 2 s: the session is admitted but not yet active when terminated.
    let (env, _sshd, gw) = slow_target(Duration::from_secs(2));
    let child = long_session(&gw, &env, "alice:slow.test");
    let s = gw.wait_sessions("?state=approved", Duration::from_secs(20), |s| s.len() == 1);
    assert_eq!(s.len(), 1, "session should wait in approved: {s:?}");
    let id = s[0]["id"].as_str().expect("id").to_string();
    let out = wgctl(
        &gw,
        &["session", "terminate", &id, "--reason", "wrong host"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, err) = finish(child);
    assert_eq!(code, Some(255));
    assert!(
        err.contains("session terminated by admin: wrong host"),
        "{err}"
    );
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["state"], "closed");
    assert_eq!(s["end_reason"], "terminated");
}

/// Lists are cut at --limit and say so, with the way to the next page: sessions, audit events,
/// recordings; the pages together hold everything once.
#[test]
fn lists_are_paged_and_say_what_was_cut() {
    let (env, _sshd, gw) = standard();
    for i in 0..5 {
        let out = run(
            gw.ssh(&env, "alice:web-01.test").arg(format!("echo {i}")),
            T,
        );
        assert!(out.status.success());
    }
    gw.wait_sessions("?state=closed", T, |s| s.len() == 5);
    let page = |args: &[&str]| -> (Vec<String>, Option<String>, String) {
        let out = run(gw.wgctl().args(args), T);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        let rows: Vec<String> = shown
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.starts_with("sess_"))
            .map(String::from)
            .collect();
        let cursor = shown
            .lines()
            .find(|l| l.starts_with('…'))
            .and_then(|l| l.split("--cursor ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(String::from);
        (rows, cursor, shown)
    };
    let mut seen = Vec::new();
    let mut args = vec!["session", "list", "--all", "--limit", "2"];
    let (rows, cursor, shown) = page(&args);
    assert_eq!(rows.len(), 2, "{shown}");
    assert!(shown.contains("… 3 more sessions;"), "{shown}");
    seen.extend(rows);
    let c1 = cursor.expect("a cursor");
    args.extend(["--cursor", c1.as_str()]);
    let (rows, cursor, shown) = page(&args);
    assert_eq!(rows.len(), 2, "{shown}");
    assert!(shown.contains("… 1 more session;"), "{shown}");
    seen.extend(rows);
    let c2 = cursor.expect("a cursor");
    let (rows, cursor, shown) =
        page(&["session", "list", "--all", "--limit", "2", "--cursor", &c2]);
    assert_eq!((rows.len(), cursor), (1, None), "{shown}");
    seen.extend(rows);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "every session once across the pages");

    let (rows, _, shown) = page(&["recording", "list", "--limit", "3"]);
    assert_eq!(rows.len(), 3, "{shown}");
    assert!(
        shown.contains("STARTED") && shown.contains("… 2 more recordings;"),
        "{shown}"
    );

    let out = run(gw.wgctl().args(["audit", "list", "--limit", "3"]), T);
    let shown = text(&out.stdout);
    assert!(shown.contains("more older events; use --limit"), "{shown}");
    let before = shown
        .lines()
        .find(|l| l.starts_with('…'))
        .and_then(|l| l.split("--before ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a --before");
    let out = run(
        gw.wgctl()
            .args(["audit", "list", "--limit", "3", "--before", before]),
        T,
    );
    let older = text(&out.stdout);
    let first_seq = |t: &str| -> i64 {
        t.lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(first_seq(&older) < first_seq(&shown), "{older}\n{shown}");
}

/// With `[geoip] database` set, `session show` says where the client connects from (MaxMind's
/// test database; the client connects from one of its documented addresses, added to the
/// loopback interface for the test).
#[test]
fn session_show_places_the_client() {
    const LONDON: &str = "81.2.69.142";
    struct Address;
    impl Drop for Address {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["addr", "del", &format!("{LONDON}/32"), "dev", "lo"])
                .status();
        }
    }
    let added = Command::new("ip")
        .args(["addr", "add", &format!("{LONDON}/32"), "dev", "lo"])
        .status()
        .expect("ip (iproute2)");
    assert!(
        added.success(),
        "this test adds an address to lo: it needs root and iproute2"
    );
    let _cleanup = Address;
    let env = TestEnv::new();
    let sshd = env.sshd();
    let db = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/geoip/GeoIP2-City-Test.mmdb");
    let gw = env
        .gateway()
        .target("web-01.test", &sshd)
        .extra(&format!("[geoip]\ndatabase = \"{}\"\n", db.display()))
        .start();
    let out = run(
        gw.ssh(&env, "alice:web-01.test")
            .args(["-b", LONDON])
            .arg("echo placed"),
        T,
    );
    assert_eq!(text(&out.stdout).trim(), "placed", "{}", text(&out.stderr));
    let id = gw.last_closed()["id"].as_str().expect("id").to_string();
    let show = run(gw.wgctl().args(["session", "show", &id]), T);
    let shown = text(&show.stdout);
    assert!(shown.contains(&format!("{LONDON}:")), "{shown}");
    assert!(shown.contains("(London, GB)"), "{shown}");
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["client_location"], "London, GB", "{s}");
    // From 127.0.0.1 there is nothing to say.
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
    assert!(out.status.success());
    let local = gw.last_closed();
    assert!(local["client_location"].is_null(), "{local}");
}

/// `wardengate hash-password` and `new-token` read by a script that takes only what it needs
/// (`| head -1`, as `scripts/bench tcp` first did): no panic on the closed pipe, exit 0.
#[test]
fn the_key_printing_commands_survive_a_reader_that_stops_early() {
    for (cmd, first) in [
        ("echo pw | WG hash-password", "password_hash = \""),
        ("WG new-token", "token = "),
    ] {
        let script = format!(
            "set -o pipefail; {} | head -1",
            cmd.replace("WG", &bin("wardengate").display().to_string())
        );
        let out = run(
            Command::new("bash").args(["-c", &script]),
            Duration::from_secs(60),
        );
        assert_success(&out, cmd);
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(first),
            "{cmd}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{cmd}"
        );
    }
}
