//! Handing off a shell another gateway runs: offered and accepted through gw-2, done by gw-1
//! (where the session and its terminal are), and taken over through gw-1's SSH address.

use std::time::Duration;

use wardengate_tests::tmux::{argv, shell, Tmux};
use wardengate_tests::*;

use crate::cluster_with;

const T: Duration = Duration::from_secs(30);
const DAN_TOKEN: &str = "dan-0123456789abcdef0123456789abcdef";

#[test]
fn a_shell_on_one_gateway_is_handed_off_through_another() {
    let c = cluster_with(2, "15s", "[limits]\nmax_sessions_per_user = 1\n", |b, _| {
        // dan logs in with the test's one key pair; the login name decides who it is.
        let users = format!(
            "[[users]]\nname = \"dan\"\ngroups = [\"sre\"]\npublic_keys = [\"{}\"]\napi_token_sha256 = \"{}\"\n\n",
            b.env().alice_pub,
            sha256_hex(DAN_TOKEN.as_bytes())
        );
        b.extra(&users)
    });
    let (gw1, gw2) = (&c.gws[0], &c.gws[1]);
    let tmux = Tmux::new(c.env.dir.path());
    let id = shell(&tmux, gw1, &c.env, "alice", "alice#web.test");
    tmux.line("alice", "export MARK=$((1000+234)); echo mark-$MARK");
    tmux.expect("alice", "mark-1234", T);

    let offer = || {
        let out = run(
            gw2.wgctl().args([
                "session",
                "handoff",
                &id,
                "--to",
                "dan",
                "--reason",
                "shift change",
            ]),
            T,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let accept = || {
        run(
            gw2.wgctl()
                .env("WARDENGATE_TOKEN", DAN_TOKEN)
                .args(["session", "accept", &id]),
            T,
        )
    };
    // dan already has his one session, on gw-2: gw-1, which runs alice's, cannot give him a
    // second (the cluster counts his sessions everywhere), and alice keeps hers.
    let mut dans = gw2
        .ssh(&c.env, "dan#web.test")
        .arg("echo dan-in; sleep 60")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("dan's ssh");
    gw2.wait_sessions("?state=active", T, |s| s.len() == 2);
    offer();
    tmux.expect(
        "alice",
        "admin offered this session to dan (shift change)",
        T,
    );
    let out = accept();
    assert!(!out.status.success());
    assert_stderr_has(
        &out,
        &format!("cannot take session {id} over: user at capacity: dan 1/1"),
    );
    let s = gw2.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["actor"], "alice", "{s}");
    // The refusal left alice's count in the cluster as it was.
    let holder = |c: &wardengate_tests::cluster::Cluster| {
        c.store
            .psql(
                "wardengate",
                &format!("SELECT actor FROM leases WHERE session_id = '{id}'"),
            )
            .expect("psql")
            .trim()
            .to_string()
    };
    assert_eq!(holder(&c), "alice");
    let _ = dans.kill();
    let _ = dans.wait();
    gw2.wait_sessions("?state=active", T, |s| s.len() == 1);

    // Offered again, through gw-2: dan accepts there, the session is his, and wgctl says which
    // gateway runs it.
    offer();
    let out = poll(T, Duration::from_millis(300), accept, |o| {
        o.status.success()
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_stdout_has(
        &out,
        &format!("ssh dan:{id}@GATEWAY (the SSH address of gateway gw-1"),
    );
    tmux.expect("alice", "session handed off to dan", T);
    let accepted = gw1.wait_audit("session.handoff.accepted", T);
    assert_eq!(accepted["actor"], "dan", "{accepted}");
    // The cluster counts it as dan's now.
    assert_eq!(holder(&c), "dan");

    // Taking it over through gw-2 says where it runs; through gw-1 dan gets alice's shell.
    let out = run(gw2.ssh(&c.env, &format!("dan:{id}")).arg("true"), T);
    assert_stderr_has(&out, &format!("session {id} runs on gateway gw-1"));
    let mut ssh = gw1.ssh(&c.env, &format!("dan:{id}"));
    ssh.arg("-t");
    tmux.spawn("dan", &[], &argv(&ssh));
    tmux.expect("dan", "mark-1234", T);
    tmux.line("dan", "echo again-$MARK");
    tmux.expect("dan", "again-1234", T);
    let s = gw2.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["actor"], "dan", "{s}");
    assert_eq!(s["previous_owners"], serde_json::json!(["alice"]), "{s}");
    tmux.line("dan", "exit");
}
