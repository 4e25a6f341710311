//! Concurrency limits at the four levels with real ssh clients: the denial text the user sees, the
//! structured denial in the API and the audit log, exactness under 100 simultaneous attempts, the
//! most specific value winning, and evict-oldest.

use std::time::Duration;

use wardengate_tests::live::Live;
use wardengate_tests::*;

const T: Duration = Duration::from_secs(30);

/// A session that stays open until dropped.
fn hold(gw: &GatewayProc, env: &TestEnv) -> Live {
    Live::spawn(gw.ssh(env, "alice:web-01.test").arg("sleep 60"))
}

fn wait_active(gw: &GatewayProc, n: usize) {
    let s = gw.wait_sessions("?state=active", T, |s| s.len() == n);
    assert_eq!(s.len(), n, "{s:?}");
}

#[test]
fn each_level_denies_with_its_text_and_structured_detail() {
    let one_policy = "\n[[policies]]\nname = \"sre-test\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\nconcurrency = { max = 1 }\n";
    // (scope, how it is configured, what the user reads)
    let cases: [(&str, &str, &str, Option<&str>, &str); 4] = [
        (
            "actor",
            "[limits]\nmax_sessions_per_user = 1\n",
            "",
            None,
            "user at capacity: alice 1/1 (max_sessions_per_user)",
        ),
        (
            "target",
            "[limits]\nmax_sessions_per_target = 1\n",
            "",
            None,
            "target at capacity: web-01.test 1/1 (max_sessions_per_target)",
        ),
        (
            "policy",
            "",
            "",
            Some(one_policy),
            "policy at capacity: sre-test 1/1 (concurrency.max)",
        ),
        (
            "pool",
            "",
            "max_active = 1",
            None,
            "gateway pool at capacity: gw-test 1/1 (gateway.max_active)",
        ),
    ];
    for (scope, extra, gateway_lines, policies, message) in cases {
        let env = TestEnv::new();
        let sshd = env.sshd();
        let mut b = env
            .gateway()
            .target("web-01.test", &sshd)
            .extra(extra)
            .gateway_lines(gateway_lines);
        if let Some(p) = policies {
            b = b.policies(p);
        }
        let gw = b.start();
        let held = hold(&gw, &env);
        wait_active(&gw, 1);
        let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
        assert_eq!(out.status.code(), Some(1), "{scope}: {}", text(&out.stderr));
        assert_stderr_has(&out, message);

        let denied = gw.sessions("?state=denied");
        assert_eq!(denied.len(), 1, "{scope}: {denied:?}");
        assert_eq!(denied[0]["end_reason"], "concurrency");
        let limit = &denied[0]["decision"]["limit"];
        assert_eq!(limit["scope"], scope, "{denied:?}");
        assert_eq!(
            (limit["limit"].as_u64(), limit["current"].as_u64()),
            (Some(1), Some(1))
        );
        let audit = gw.audit("session.denied");
        assert_eq!(
            audit
                .last()
                .map(|a| a["detail"]["decision"]["limit"].clone()),
            Some(limit.clone())
        );
        // The limit never reached the vault: the denied session has no target connection.
        assert_eq!(gw.sessions("?state=active").len(), 1);
        drop(held);
        // The slot is released when the session ends: the next attempt succeeds.
        gw.wait_sessions("?state=active", T, |s| s.is_empty());
        let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
        assert!(
            out.status.success(),
            "{scope} after release: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn the_most_specific_value_wins() {
    // The global user limit is 1, but alice's group allows 2.
    let (env, _sshd, gw) = standard_with(|gw| {
        gw.extra("[limits]\nmax_sessions_per_user = 1\n[[groups]]\nname = \"sre\"\nmembers = [\"alice\"]\nmax_sessions = 2\n")
    });
    let _a = hold(&gw, &env);
    let _b = hold(&gw, &env);
    wait_active(&gw, 2);
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("true"), T);
    assert_stderr_has(&out, "user at capacity: alice 2/2");
    let ex = gw.policy_explain("alice", "web-01.test", &["-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&ex.stdout).expect("json");
    assert_eq!(v["limits"]["actor"], 2, "{v}");
    assert_eq!(v["current"]["actor"], 2, "{v}");
}

#[test]
fn a_hundred_simultaneous_attempts_never_exceed_the_limit() {
    let (env, _sshd, gw) = standard_with(|gw| {
        gw.extra("[limits]\nmax_sessions_per_target = 5\n")
            // A hundred logins at once from one address: more than the default per-source cap on
            // unauthenticated connections (16), which would close most of them before they spoke.
            .security_lines("max_unauthenticated_per_source = 128")
    });
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(100));
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let mut c = gw.ssh(&env, "alice:web-01.test");
            c.arg("sleep 8");
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                run(&mut c, Duration::from_secs(90))
            })
        })
        .collect();
    let outs: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let at_capacity = outs
        .iter()
        .filter(|o| text(&o.stderr).contains("target at capacity: web-01.test 5/5"))
        .count();
    assert_eq!(ok, 5, "exactly the limit got through");
    assert_eq!(at_capacity, 95, "every other attempt was told why");
    assert_eq!(gw.sessions("?state=denied").len(), 95);
    // Every slot came back.
    let v = gw.get_json("/api/v1/policies/explain?actor=alice&target=web-01.test");
    assert_eq!(v["current"]["target"], 0, "{v}");
}

#[test]
fn evict_oldest_terminates_the_oldest_session_with_reason_concurrency() {
    let (env, _sshd, gw) = standard_with(|gw| {
        gw.extra("[limits]\nmax_sessions_per_user = 1\non_limit = \"evict_oldest\"\n")
    });
    let mut oldest = hold(&gw, &env);
    wait_active(&gw, 1);
    let first = gw.wait_one_active();
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("echo newest"), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "newest");
    oldest.expect("opened a newer session and may hold at most 1", T);
    assert_eq!(oldest.wait(T).and_then(|s| s.code()), Some(255));
    let s = gw.get_json(&format!("/api/v1/sessions/{first}"));
    assert_eq!(s["end_reason"], "concurrency", "{s}");
    let ev = gw.audit("session.evicted");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["session_id"], first.as_str());
}
