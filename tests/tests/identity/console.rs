//! The operator console in headless Chromium: signing in (password, and the security key where
//! the person has one), the live sessions view against a real ssh, shadow, handoff, terminate
//! (one and in bulk), the timeline, saved views, approvals, recordings, the audit page, and
//! what a viewer is not offered. (Console sessions' mechanics: `console_sessions.rs`.)

use std::time::{Duration, Instant};

use serde_json::json;
use wardengate_tests::tmux::{argv, Tmux};
use wardengate_tests::*;

use super::console_page::*;
use super::*;

/// alice runs the console with every permission; erin only reads sessions.
pub(crate) fn console_people(env: &TestEnv, console: &str) -> String {
    let hash = wardengate_gateway::passwords::hash(ERIN_PASSWORD).expect("hash");
    format!(
        "[console]\n{console}\n\n\
         [[roles]]\nname = \"soc\"\nmembers = [\"alice\"]\n\
         can = [\"session.read\", \"session.terminate\", \"session.handoff\", \"session.shadow\", \"user.admin\", \"recording.read\", \"audit.read\"]\n\n\
         [[roles]]\nname = \"viewers\"\nmembers = [\"erin\"]\ncan = [\"session.read\"]\n\n\
         [[users]]\nname = \"erin\"\ngroups = [\"audit\"]\npublic_keys = [\"{}\"]\npassword_hash = \"{hash}\"\n\n",
        env.alice_pub
    )
}

pub(crate) const ERIN_PASSWORD: &str = "erin reads the sessions";

/// The page's own view of a row: its id, state and the detail panel's text.
const ROWS: &str = "Array.from(document.querySelectorAll('#sessions tr.row')).map((r) => \
    ({id: r.dataset.id, state: r.dataset.state}))";

#[test]
fn an_operator_signs_in_with_a_key_watches_a_live_ssh_session_and_terminates_it() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let policy =
        "\n[[policies]]\nname = \"sre-test\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n";
    let gw = gateway(&env, &sshd, policy)
        .extra(&format!("{}{}", people(&env), console_people(&env, "")))
        .start();
    let mut browser = Browser::start(&env, "chromium");
    enrol(&gw, &mut browser);
    let c = &mut browser.chromium;

    // Signed out: the console sends the person to sign in. (Security keys are bound to the
    // relying party, localhost: the page is opened there, as the gateway's links are.)
    let origin = gw.api.replace("127.0.0.1", "localhost");
    c.navigate(&format!("{origin}/console"));
    until(c, "location.pathname", T, |v| v == &json!("/console/login"));
    until(
        c,
        "!!window.WG && (document.getElementById('form') || {dataset: {}}).dataset.ready === '1'",
        T,
        |v| v == &json!(true),
    );
    c.eval(&format!(
        "(() => {{ document.getElementById('user').value = 'alice'; \
         document.getElementById('password').value = {}; \
         document.getElementById('form').requestSubmit(); }})()",
        json!(ALICE_PASSWORD)
    ));
    // The key is asked for (alice has one), touched by the virtual authenticator, and the
    // console opens.
    until(c, "location.pathname", T, |v| v == &json!("/console"));
    let signed = gw.wait_audit("console.signed_in", T);
    assert_eq!(
        signed["detail"]["provider"], "password+webauthn",
        "{signed}"
    );
    until(
        c,
        "(document.getElementById('who') || {dataset: {}}).textContent",
        T,
        |v| v == &json!("alice"),
    );
    until(
        c,
        "(document.getElementById('conn') || {dataset: {}}).dataset.state",
        T,
        |v| v == &json!("live"),
    );

    // A real ssh session appears by itself.
    let tmux = Tmux::new(env.dir.path());
    let mut ssh = gw.ssh_interactive(&env, "alice:web-01.test");
    ssh.arg("-t");
    tmux.spawn("ssh", &[], &argv(&ssh));
    let sid = gw.wait_one_active();
    let rows = until(c, ROWS, T, |v| {
        v.as_array().is_some_and(|r| {
            r.iter()
                .any(|x| x["id"] == sid.as_str() && x["state"] == "active")
        })
    });
    assert!(rows.to_string().contains(&sid), "{rows}");
    until(
        c,
        "(document.getElementById('s-active') || {dataset: {}}).textContent",
        T,
        |v| v == &json!("1"),
    );

    // Filters: another protocol hides it, ssh shows it again (and the address keeps the view).
    let set_protocol = |c: &mut wardengate_tests::browser::Chromium, p: &str| {
        c.eval(&format!(
            "(() => {{ const s = document.getElementById('f-protocol'); s.value = '{p}'; \
             s.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"
        ));
    };
    set_protocol(c, "postgres");
    until(c, ROWS, T, |v| v.as_array().is_some_and(|r| r.is_empty()));
    assert_eq!(c.eval("location.hash"), json!("#protocol=postgres"));
    set_protocol(c, "ssh");
    until(c, ROWS, T, |v| v.as_array().is_some_and(|r| r.len() == 1));
    // The policy filter is the API's (`?policy=`), not only the rows on the page.
    let set_policy = |c: &mut wardengate_tests::browser::Chromium, p: &str| {
        c.eval(&format!(
            "(() => {{ const s = document.getElementById('f-policy'); s.value = '{p}'; \
             s.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"
        ));
    };
    set_policy(c, "other-policy");
    until(c, ROWS, T, |v| v.as_array().is_some_and(|r| r.is_empty()));
    let none = gw.sessions("?policy=other-policy");
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(gw.sessions("?policy=sre-test").len(), 1);
    set_policy(c, "");
    until(c, ROWS, T, |v| v.as_array().is_some_and(|r| r.len() == 1));

    // The view is saved under a name, pinned above the list, and kept by the gateway.
    click(c, "#save-view");
    c.eval(
        "(() => { document.getElementById('ask-reason').value = 'ssh only'; \
            document.getElementById('ask-ok').click(); })()",
    );
    click(
        c,
        "#saved-list li[data-name='ssh only'] button[aria-label='pin ssh only']",
    );
    until(
        c,
        "Array.from(document.querySelectorAll('#pinned .chip')).map((b) => b.textContent)",
        T,
        |v| v == &json!(["ssh only"]),
    );
    let saved = c.eval("fetch('/api/v1/console/queries').then((r) => r.json())");
    assert_eq!(
        saved,
        json!([{"name": "ssh only", "query": "protocol=ssh", "pinned": true}])
    );
    let refused = c.eval(
        "(async () => { const me = await (await fetch('/api/v1/console/me')).json(); \
         const r = await fetch('/api/v1/console/queries/x', {method: 'PUT', \
           headers: {'content-type': 'application/json', 'x-csrf-token': me.csrf}, \
           body: JSON.stringify({query: 'password=1'})}); return [r.status, (await r.json()).error]; })()",
    );
    assert_eq!(refused[0], 400, "{refused}");
    assert!(
        refused[1]
            .as_str()
            .is_some_and(|e| e.contains("not a filter")),
        "{refused}"
    );

    // The row opens to what `wgctl session show` prints.
    c.eval(&format!(
        "document.querySelector('tr.row[data-id=\"{sid}\"]').click()"
    ));
    let detail = until(
        c,
        "(document.querySelector('pre.detail') || {}).textContent || ''",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("sre-test")),
    );
    let shown = run(gw.wgctl().args(["session", "show", &sid]), T);
    assert_success(&shown, "wgctl session show");
    let text = detail.as_str().unwrap_or_default();
    let first = String::from_utf8_lossy(&shown.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(text.starts_with(&first), "page: {text}\nwgctl: {first}");

    // Shadow: the terminal in the page (xterm.js) shows what alice types, and she is told.
    c.eval("Array.from(document.querySelectorAll('.actions button')).find((b) => b.textContent === 'Shadow').click()");
    until(
        c,
        "(document.querySelector('.shadow-status') || {}).textContent || ''",
        T,
        |v| v.as_str().is_some_and(|t| t.starts_with("Watching alice")),
    );
    tmux.line("ssh", "echo shadow-$((6*7))");
    until(
        c,
        "(document.querySelector('.shadow .xterm-rows') || {}).textContent || ''",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("shadow-42")),
    );
    let attach = gw.wait_audit("session.shadow.attach", T);
    assert_eq!(attach["actor"], "alice", "{attach}");
    if let Some(dir) = std::env::var_os("WARDENGATE_SCREENSHOTS") {
        let _ = std::fs::write(
            std::path::Path::new(&dir).join("console-sessions.png"),
            c.screenshot(),
        );
    }
    c.eval("Array.from(document.querySelectorAll('.actions button')).find((b) => b.textContent === 'Stop shadowing').click()");
    gw.wait_audit("session.shadow.detach", T);

    // Handoff asks to whom and why; the offer is made.
    click_button(c, "Handoff…");
    until(c, "(document.getElementById('ask') || {}).open", T, |v| {
        v == &json!(true)
    });
    c.eval(
        "(() => { document.getElementById('ask-to').value = 'dan'; \
            document.getElementById('ask-reason').value = 'shift change'; \
            document.getElementById('ask-ok').click(); })()",
    );
    let offer = gw.wait_audit("session.handoff.requested", T);
    assert_eq!(offer["detail"]["to"], "dan", "{offer}");
    assert_eq!(offer["actor"], "alice", "{offer}");

    // Terminate asks for a reason, and alice's ssh prints it.
    c.eval("Array.from(document.querySelectorAll('.actions button')).find((b) => b.textContent.startsWith('Terminate')).click()");
    until(
        c,
        "(document.getElementById('ask') || {dataset: {}}).open",
        T,
        |v| v == &json!(true),
    );
    c.eval(
        "(() => { document.getElementById('ask-reason').value = 'incident 4711: console test'; \
            document.getElementById('ask-ok').click(); })()",
    );
    tmux.expect("ssh", "incident 4711: console test", T);
    let s = gw.wait_sealed(&sid);
    assert_eq!(s["end_reason"], "terminated", "{s}");
    assert_eq!(s["end_detail"], "incident 4711: console test", "{s}");
    assert_eq!(s["terminated_by"], "alice", "{s}");
    until(c, ROWS, T, |v| {
        v.as_array().is_some_and(|r| {
            r.iter()
                .any(|x| x["id"] == sid.as_str() && x["state"] == "closed")
        })
    });

    // The timeline stitches the decision, the shadow and the terminate, from the audit and
    // the recording's markers; the page shows it under the session.
    let t = gw.get_json(&format!("/api/v1/sessions/{sid}/timeline"));
    let kinds: Vec<&str> = t["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in [
        "session.requested",
        "session.approved",
        "session.shadow.attach",
        "session.shadow.detach",
        "session.terminated",
        "marker.terminated",
    ] {
        assert!(kinds.contains(&k), "{k} not in the timeline: {kinds:?}");
    }
    until(c,
        "Array.from(document.querySelectorAll('ol.timeline .k')).map((e) => e.textContent).join(' ')",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("session.terminated")),
    );

    // Signing out ends the record; the cookie alone no longer works.
    c.eval("document.getElementById('signout').click()");
    until(c, "location.pathname", T, |v| v == &json!("/console/login"));
    let out = gw.wait_audit("console.signed_out", T);
    assert_eq!(out["actor"], "alice", "{out}");
}

#[test]
fn the_console_decides_approvals_plays_recordings_and_shows_the_verified_audit() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let policy = "\n[[policies]]\nname = \"prod-change\"\ngroups = [\"sre\"]\n\
        target_tags = [\"env=test\"]\n\
        approval = { approvers = [\"alice\"], required = 1, timeout = \"2m\", valid_for = \"5m\" }\n";
    let gw = gateway(&env, &sshd, policy)
        .extra(&format!("{}{}", people(&env), console_people(&env, "")))
        .start();
    let mut browser = Browser::start(&env, "chromium");
    let origin = gw.api.replace("127.0.0.1", "localhost");
    let c = &mut browser.chromium;
    console_sign_in(c, &origin, "/console/approvals");

    // dan asks; the queue shows it; alice approves with a reason; dan's ssh goes on.
    let tmux = Tmux::new(env.dir.path());
    let mut ssh = gw.ssh_interactive(&env, "dan:web-01.test");
    ssh.arg("-t");
    tmux.spawn("ssh", &[], &argv(&ssh));
    tmux.expect("ssh", "Ctrl-C to withdraw", T);
    until(c,
        "Array.from(document.querySelectorAll('#approvals tbody tr')).map((r) => r.textContent).join('|')",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("dan") && t.contains("pending")),
    );
    shot(c, "console-approvals.png");
    c.eval("Array.from(document.querySelectorAll('#approvals button')).find((b) => b.textContent.startsWith('Approve')).click()");
    until(
        c,
        "(document.getElementById('ask') || {dataset: {}}).open",
        T,
        |v| v == &json!(true),
    );
    c.eval(
        "(() => { document.getElementById('ask-reason').value = 'change 42'; \
            document.getElementById('ask-ok').click(); })()",
    );
    let sid = gw.wait_one_active();
    let granted = gw.wait_audit("approval.granted", T);
    assert_eq!(granted["detail"]["by"], "alice", "{granted}");
    tmux.line("ssh", "echo replay-$((6*7))");
    tmux.expect("ssh", "replay-42", T);
    tmux.line("ssh", "exit");
    gw.wait_sealed(&sid);

    // The recording is listed with its seal, verifies, and plays in the page.
    goto(c, &origin, "/console/recordings");
    let row = format!("#recordings tr[data-id=\"{sid}\"]");
    until(
        c,
        &format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(row)
        ),
        T,
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("complete") && t.contains("Verify"))
        },
    );
    click(c, &format!("{row} td:nth-child(7) button"));
    until(
        c,
        &format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(format!("{row} td:nth-child(7)"))
        ),
        T,
        |v| v == &json!("verified"),
    );
    click(c, &format!("{row} td:nth-child(8) button"));
    c.eval("document.getElementById('player-speed').value = '16'");
    until(
        c,
        "(document.querySelector('#player-term .xterm-rows') || {}).textContent || ''",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("replay-42")),
    );
    let accessed = gw.wait_audit("recording.accessed", T);
    assert_eq!(accessed["actor"], "alice", "{accessed}");
    if let Some(dir) = std::env::var_os("WARDENGATE_SCREENSHOTS") {
        let _ = std::fs::write(
            std::path::Path::new(&dir).join("console-recordings.png"),
            c.screenshot(),
        );
    }

    // The audit page says the chain verifies, and filters by kind.
    goto(c, &origin, "/console/audit");
    until(
        c,
        "(document.getElementById('chain') || {dataset: {}}).dataset.ok",
        T,
        |v| v == &json!("true"),
    );
    c.eval(
        "(() => { const f = document.getElementById('audit-filters'); \
            f.elements.namedItem('kind').value = 'approval.granted'; f.requestSubmit(); })()",
    );
    until(c,
        "Array.from(document.querySelectorAll('#audit tbody tr')).map((r) => r.textContent).join('|')",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("approval.granted") && !t.contains("session.start")),
    );
    shot(c, "console-audit.png");
}

#[test]
fn a_viewer_gets_no_actions_and_bulk_terminate_counts_asks_and_ends_them_all() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let policy =
        "\n[[policies]]\nname = \"sre-test\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n";
    let gw = gateway(&env, &sshd, policy)
        .extra(&console_people(&env, ""))
        .start();
    let mut sessions: Vec<std::process::Child> = (0..2)
        .map(|_| {
            gw.ssh(&env, "alice:web-01.test")
                .args(["-tt", "sleep 120"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("ssh")
        })
        .collect();
    poll(
        T,
        Duration::from_millis(200),
        || gw.sessions("?state=active").len(),
        |n| *n == 2,
    );
    let mut browser = Browser::start(&env, "chromium");
    let origin = gw.api.replace("127.0.0.1", "localhost");
    let c = &mut browser.chromium;

    // erin may read sessions, nothing more: no action is offered to her.
    sign_in_as(c, &origin, "/console", "erin", ERIN_PASSWORD);
    until(c, ROWS, T, |v| v.as_array().is_some_and(|r| r.len() == 2));
    // The keyboard opens a row: focus it, press Enter.
    c.eval("document.querySelector('#sessions tr.row').focus()");
    for kind in ["keyDown", "keyUp"] {
        c.call(
            "Input.dispatchKeyEvent",
            json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
        );
    }
    until(
        c,
        "(document.querySelector('pre.detail') || {}).textContent || ''",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("sre-test")),
    );
    let buttons = c
        .eval("Array.from(document.querySelectorAll('.actions button')).map((b) => b.textContent)");
    assert_eq!(buttons, json!([]), "erin is offered {buttons}");
    assert_eq!(
        c.eval("document.getElementById('bulk').hidden"),
        json!(true)
    );
    let nav = c.eval("Array.from(document.querySelectorAll('#nav a')).filter((a) => !a.hidden).map((a) => a.textContent)");
    // Approvals and Access are every person's own (their requests, their access sessions).
    assert_eq!(nav, json!(["Sessions", "Approvals", "Access"]), "{nav}");
    click(c, "#signout");
    until(c, "location.pathname", T, |v| v == &json!("/console/login"));

    // alice filters on herself: the bulk button counts, asks, and ends both.
    sign_in_as(c, &origin, "/console#actor=alice", "alice", ALICE_PASSWORD);
    until(
        c,
        "(document.getElementById('bulk-terminate') || {}).textContent",
        T,
        |v| v == &json!("Terminate 2 matching…"),
    );
    click(c, "#bulk-terminate");
    until(
        c,
        "(document.getElementById('ask-title') || {}).textContent",
        T,
        |v| v == &json!("Terminate 2 sessions"),
    );
    c.eval(
        "(() => { document.getElementById('ask-reason').value = 'incident 4712'; \
            document.getElementById('ask-ok').click(); })()",
    );
    let deadline = Instant::now() + T;
    for s in &mut sessions {
        while s.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "an ssh outlived the bulk terminate"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let ended = poll(
        T,
        Duration::from_millis(200),
        || gw.sessions("?state=closed"),
        |r| r.len() == 2,
    );
    for s in &ended {
        assert_eq!(s["end_detail"], "incident 4712", "{s}");
        assert_eq!(s["terminated_by"], "alice", "{s}");
    }
}

#[test]
fn the_console_shows_a_live_postgresql_session_as_its_query_log() {
    use std::io::Write;
    let env = TestEnv::new();
    let pg = wardengate_tests::pg::cluster(&env);
    let policy =
        "\n[[policies]]\nname = \"dba\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n";
    let gw = wardengate_tests::pg::pg_targets(env.gateway(), &pg)
        .policies(policy)
        .extra(&console_people(&env, ""))
        .start();
    let mut psql = gw
        .psql("alice#billing.test", "")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let mut stdin = psql.stdin.take().expect("stdin");
    writeln!(stdin, "select 40 + 1 as first;").expect("query");
    let sid = gw.wait_one_active();
    let mut browser = Browser::start(&env, "chromium");
    let origin = gw.api.replace("127.0.0.1", "localhost");
    let c = &mut browser.chromium;
    console_sign_in(c, &origin, "/console");
    click(c, &format!("#sessions tr.row[data-id=\"{sid}\"]"));
    click_button(c, "Shadow");
    writeln!(stdin, "select 'live-' || 42 as second;").expect("query");
    let log = until(
        c,
        "(document.querySelector('.shadow .querylog') || {}).textContent || ''",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("live-")),
    );
    assert!(log.to_string().contains("select"), "{log}");
    drop(stdin);
    let _ = psql.wait();
}
