//! The console with a brokered TCP session (`protocol = "tcp"`): listed like the others, its
//! detail with the States history, no Shadow or Handoff (the bytes are the client's own
//! protocol), and its recording played as a transcript.

use serde_json::json;
use wardengate_dev::services;
use wardengate_tests::tcp::{authorized, wgctl_as, Proxy, Resp};
use wardengate_tests::*;

use super::console::console_people;
use super::console_page::*;
use super::*;

#[test]
fn the_console_lists_a_tcp_session_with_its_states_and_plays_its_transcript() {
    let env = TestEnv::new();
    let redis = services::redis(&env.path("redis"), 0).expect("redis-server");
    let targets = format!(
        "[[targets]]\nname = \"cache\"\nprotocol = \"tcp\"\naddress = \"{}\"\n\
         tags = {{ env = \"test\" }}\n\n[tcp]\nlisten = \"127.0.0.1:0\"\n\n",
        redis.address()
    );
    let policy =
        "\n[[policies]]\nname = \"sre-test\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\n";
    let gw = env
        .gateway()
        .user_token(ALICE_TOKEN)
        .policies(policy)
        .extra(&console_people(&env, ""))
        .extra(&targets)
        .start();
    let a = authorized(&gw, ALICE_TOKEN, "cache", &[]);
    let sid = a["session_id"].as_str().expect("id").to_string();
    let proxy = Proxy::start(
        &gw,
        ALICE_TOKEN,
        a["authorization_token"].as_str().expect("token"),
    );
    let mut held = Resp::connect(proxy.port);
    assert_eq!(
        held.command(&["SET", "console", "seen-42"]).as_deref(),
        Some("+OK")
    );

    let mut browser = Browser::start(&env, "chromium");
    let origin = gw.api.replace("127.0.0.1", "localhost");
    let c = &mut browser.chromium;
    console_sign_in(c, &origin, "/console");
    let row = format!("#sessions tr.row[data-id=\"{sid}\"]");
    until(
        c,
        &format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(row)
        ),
        T,
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("tcp") && t.contains("active"))
        },
    );
    click(c, &row);
    let detail = until(
        c,
        "(document.querySelector('#sessions pre.detail') || {}).textContent || ''",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("States:")),
    );
    let detail = detail.as_str().unwrap_or_default();
    assert!(
        detail.contains("Status:       active") && detail.contains("Status:       pending"),
        "{detail}"
    );
    assert!(detail.contains("connections:  1 of 1 (1 open)"), "{detail}");
    let buttons = c.eval(
        "Array.from(document.querySelectorAll('.actions button')).map((b) => b.textContent).join('|')",
    );
    let buttons = buttons.as_str().unwrap_or_default().to_string();
    assert!(buttons.contains("Terminate"), "{buttons}");
    assert!(
        !buttons.contains("Shadow") && !buttons.contains("Handoff"),
        "{buttons}"
    );
    shot(c, "console-tcp-session.png");

    // Canceled from the command line; the recording plays as the session's transcript.
    let out = run(
        wgctl_as(&gw, ALICE_TOKEN).args(["session", "cancel", &sid, "--reason", "seen it"]),
        T,
    );
    assert_success(&out, "cancel");
    gw.wait_sealed(&sid);
    goto(c, &origin, "/console/recordings");
    let rec = format!("#recordings tr[data-id=\"{sid}\"]");
    until(
        c,
        &format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(rec)
        ),
        T,
        |v| v.as_str().is_some_and(|t| t.contains("complete")),
    );
    click(c, &format!("{rec} td:nth-child(8) button"));
    let log = until(
        c,
        "(document.querySelector('#player-queries tbody') || {}).textContent || ''",
        T,
        |v| v.as_str().is_some_and(|t| t.contains("seen-42")),
    );
    let log = log.as_str().unwrap_or_default();
    assert!(log.contains(r"#1 > *3\r\n$3\r\nSET"), "{log}");
    assert!(log.contains("-- connection"), "{log}");
    shot(c, "console-tcp-recording.png");
}
