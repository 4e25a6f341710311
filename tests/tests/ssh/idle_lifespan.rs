//! Idle from meaningful input only, and the maximum lifespan, with real OpenSSH clients and short
//! policy timeouts: warning banner, then disconnect with the reason; keepalives and target output
//! never keep a session alive; a running non-interactive command is not idle.

use std::time::Duration;

use wardengate_tests::live::Live;
use wardengate_tests::*;

const POLICIES: &str = r#"
[[policies]]
name = "short-idle"
groups = ["sre"]
targets = ["idle.test"]
idle_timeout = "2s"
idle_grace = "2s"

[[policies]]
name = "short-life"
groups = ["sre"]
targets = ["life.test"]
max_lifespan = "5s"
lifespan_warning = "3s"
"#;

const T: Duration = Duration::from_secs(30);

fn gateway(env: &TestEnv, sshd: &wardengate_dev::sshd::Sshd) -> GatewayProc {
    let addr = sshd.address();
    env.gateway()
        .target_at("idle.test", &addr, &sshd.user)
        .target_at("life.test", &addr, &sshd.user)
        .policies(POLICIES)
        .start()
}

#[test]
fn idle_sessions_are_warned_then_closed_whatever_keepalives_and_output_say() {
    let (env, _sshd, gw) = with_gateway(gateway);

    // 1. An interactive shell whose client sends keepalives every second, and nothing else.
    let mut quiet =
        Live::spawn(
            gw.ssh(&env, "alice:idle.test")
                .args(["-tt", "-o", "ServerAliveInterval=1"]),
        );
    // 2. A pty command that prints constantly: output is not input.
    let mut chatty = Live::spawn(
        gw.ssh(&env, "alice:idle.test")
            .args(["-tt", "while true; do echo tick; sleep 0.3; done"]),
    );
    // 3. A non-interactive command that runs longer than the timeout and grace: not idle.
    let busy = std::thread::spawn({
        let mut c = gw.ssh(&env, "alice:idle.test");
        c.arg("sleep 5; echo finished");
        move || run(&mut c, T)
    });

    for client in [&quiet, &chatty] {
        client.expect("has been idle for 2s; it will be closed in 2s unless you type something (policy 'short-idle')", T);
    }
    for client in [&mut quiet, &mut chatty] {
        client.expect("without input (idle timeout 2s, policy 'short-idle')", T);
        let status = client.wait(T).expect("client exits");
        assert_eq!(status.code(), Some(255), "{}", client.output());
    }
    let out = busy.join().expect("busy client");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "finished");

    let closed = gw.wait_sessions("?target=idle.test&state=closed", T, |s| s.len() == 3);
    let idle: Vec<_> = closed
        .iter()
        .filter(|s| s["end_reason"] == "idle")
        .collect();
    assert_eq!(idle.len(), 2, "{closed:?}");
    let exited: Vec<_> = closed
        .iter()
        .filter(|s| s["end_reason"] == "client_exit")
        .collect();
    assert_eq!(
        exited.len(),
        1,
        "the running command was not idle: {closed:?}"
    );
    let warnings = gw.audit("session.idle_warning");
    assert!(warnings.len() >= 2, "{warnings:?}");
    assert!(warnings[0]["detail"].to_string().contains("short-idle"));
}

#[test]
fn typing_during_the_grace_keeps_the_session() {
    let (env, _sshd, gw) = with_gateway(gateway);
    let mut c = Live::spawn(gw.ssh(&env, "alice:idle.test").arg("-tt"));
    c.expect("it will be closed in 2s", T);
    c.send("echo still-$((40+2))\n");
    c.expect("still-42", T);
    // The grace passes without a disconnect: the keystroke reset the clock.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        c.try_status().is_none(),
        "closed despite input: {}",
        c.output()
    );
    c.send("exit\n");
    assert!(c.wait(T).is_some());
}

#[test]
fn lifespan_is_absolute_with_a_warning_first() {
    let (env, _sshd, gw) = with_gateway(gateway);
    let mut c = Live::spawn(gw.ssh(&env, "alice:life.test").arg("-tt"));
    c.expect(
        "reaches its maximum lifespan of 5s in 3s (policy 'short-life')",
        T,
    );
    // Typing does not extend a lifespan.
    c.send("echo typing-$((1+1))\n");
    c.expect("typing-2", T);
    c.expect(
        "it reached its maximum lifespan of 5s (policy 'short-life')",
        T,
    );
    assert_eq!(c.wait(T).and_then(|s| s.code()), Some(255));
    let s = gw.wait_sessions("?target=life.test&state=closed", T, |s| s.len() == 1);
    assert_eq!(s[0]["end_reason"], "lifespan", "{s:?}");
    assert_eq!(gw.audit("session.lifespan_warning").len(), 1);
}
