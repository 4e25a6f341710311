//! Operating live PostgreSQL sessions: idle measured from ReadyForQuery to the next statement (a
//! running statement is never idle), the idle warning as a NoticeResponse, the idle end as
//! FATAL 57P05; `session show` reporting idle-in-transaction; terminate cancelling the running
//! statement on the target, then FATAL 57P01 with the operator's reason.

use std::time::{Duration, Instant};

use wardengate_dev::postgres::PgCluster;
use wardengate_tests::pg::*;
use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

/// Wait until `count` (a `select count(*)` on the target cluster) answers `want`; fails with
/// `what` when it still does not after `T`.
#[track_caller]
fn wait_for_count(pg: &PgCluster, count: &str, want: &str, what: &str) {
    let deadline = Instant::now() + T;
    while pg.psql("postgres", count).expect("psql").trim() != want {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_counts_from_ready_for_query_and_ends_with_57p05() {
    let env = TestEnv::new();
    let pg = cluster(&env);
    let gw = pg_targets(env.gateway(), &pg)
        .policies("[[policies]]\nname = \"dba-idle\"\ngroups = [\"sre\"]\ntarget_tags = [\"env=test\"]\nidle_timeout = \"1s\"\nidle_grace = \"1s\"\n")
        .start();
    let (rt, client, mut messages, id) = driver_session(&gw, "");
    rt.block_on(async {
        // Three seconds inside one statement: never idle, however long it runs.
        client
            .batch_execute("select pg_sleep(3)")
            .await
            .expect("a long statement is not idle");
        let started = Instant::now();
        let mut notice = None;
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(20), messages.recv())
                .await
                .expect("the gateway acts within 20s")
            {
                Some(Ok(tokio_postgres::AsyncMessage::Notice(n))) => {
                    notice = Some((n.message().to_string(), started.elapsed()))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break e,
                None => panic!("the connection ended without an error"),
            }
        };
        let (text, at) = notice.expect("an idle warning came first");
        assert!(
            text.contains("idle for 1s") && text.contains("closed in 1s"),
            "{text}"
        );
        assert!(
            at >= Duration::from_millis(900),
            "warned after {at:?}, counted from the end of the statement"
        );
        let db = end.as_db_error().unwrap_or_else(|| panic!("{end:?}"));
        assert_eq!(
            db.code(),
            &tokio_postgres::error::SqlState::IDLE_SESSION_TIMEOUT
        );
        assert!(
            db.message()
                .contains("without a statement (idle timeout 1s, policy 'dba-idle')"),
            "{}",
            db.message()
        );
    });
    let s = gw.last_closed();
    assert_eq!(
        (s["id"].as_str(), s["end_reason"].as_str()),
        (Some(id.as_str()), Some("idle")),
        "{s}"
    );
    assert!(!gw.audit("session.idle_warning").is_empty());
}

#[test]
fn terminate_cancels_upstream_then_tells_the_client() {
    let (_env, pg, gw) = pg_standard();
    let (rt, client, mut messages, id) = driver_session(&gw, "");
    rt.block_on(client.batch_execute("begin; select 1"))
        .expect("begin");
    let show = run(gw.wgctl().args(["session", "show", &id]), T);
    assert_stdout_has(&show, "activity:     idle in transaction");
    let query = rt.spawn(async move {
        let r = client.batch_execute("select pg_sleep(60)").await;
        (r, client)
    });
    // Wait until the statement runs on the target.
    wait_for_count(
        &pg,
        "select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'",
        "1",
        "the statement never started",
    );
    let show = run(gw.wgctl().args(["session", "show", &id]), T);
    assert_stdout_has(&show, "activity:     active");
    let out = gw.terminate(&id, "runaway query during incident 42");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (r, _client) = rt.block_on(query).expect("join");
    let err = r.expect_err("the statement was stopped");
    let fatal = rt.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), messages.recv()).await {
                Ok(Some(Err(e))) => return Some(e),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    });
    // The client hears why: FATAL 57P01 with the reason (on the statement or the connection).
    let said = [Some(&err), fatal.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_db_error())
        .any(|d| {
            d.code() == &tokio_postgres::error::SqlState::ADMIN_SHUTDOWN
                && d.message().contains("runaway query during incident 42")
        });
    assert!(said, "statement error {err:?}, connection error {fatal:?}");
    // Nothing is left running on the target.
    let left = pg.psql("postgres", "select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'").expect("psql");
    assert_eq!(
        left.trim(),
        "0",
        "the running statement was cancelled upstream"
    );
    gw.last_closed_with("terminated", "runaway query during incident 42");
    // The interrupted statement is in the query log, with what happened to it.
    gw.wait_sealed(&id);
    let sleep = gw
        .recording_export(&id, "jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "query" && v["statement"] == "select pg_sleep(60)")
        .unwrap_or_else(|| panic!("not recorded: {}", text(&out.stdout)));
    let why = format!("{} {}", sleep["sqlstate"], sleep["error"]);
    assert!(
        why.contains("57014") || why.contains("terminated by admin: runaway query"),
        "{sleep}"
    );
}

#[test]
fn an_operator_shadows_the_live_query_log() {
    let (_env, _pg, gw) = pg_standard();
    let (rt, client, mut messages, id) = driver_session(&gw, "");
    let w = gw.watch(&id, None);
    assert_eq!(w.status, 200, "{}", w.error);
    w.wait("the attach line", T, |e| {
        e["type"] == "attached" && e["protocol"] == "postgres" && e["banner"] == "visible"
    });
    rt.block_on(async {
        client
            .batch_execute("select 6 * 7 as shadowed_answer")
            .await
            .expect("query");
        // The owner is told, in-band, as a NoticeResponse.
        let deadline = Instant::now() + T;
        loop {
            assert!(Instant::now() < deadline, "no shadow notice");
            if let Ok(Some(Ok(tokio_postgres::AsyncMessage::Notice(n)))) =
                tokio::time::timeout(Duration::from_secs(1), messages.recv()).await
            {
                if n.message()
                    .contains("admin is now watching this session read-only")
                {
                    break;
                }
            }
            // Notices arrive with the next response; keep the connection talking.
            let _ = client.batch_execute("select 1").await;
        }
    });
    w.expect("select 6 * 7 as shadowed_answer", T);
    assert!(w.text().contains("SELECT 1"), "{}", w.text());
    // A database session has no terminal to hand over.
    let (status, body) = gw.post(
        &format!("/api/v1/sessions/{id}/handoff"),
        r#"{"to":"alice","reason":"x"}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("has no terminal to hand over"), "{body}");
    drop(client);
}

/// psql sees the reason of a terminate during a running statement every time, never only the
/// target's "canceling statement" error (it did in about 1 run in 6 when the cancel went first):
/// the FATAL goes to the client first and the cancel follows it upstream.
#[test]
fn psql_always_hears_why_a_running_statement_was_terminated() {
    let (_env, pg, gw) = pg_standard();
    let running = "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'";
    for i in 0..12 {
        let mut c = gw.psql("alice#billing.test", "");
        c.args(["-c", "select pg_sleep(30)"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().expect("psql");
        wait_for_count(
            &pg,
            running,
            "1",
            &format!("run {i}: the statement never started"),
        );
        let id = gw.wait_one_active();
        let reason = format!("incident run {i}");
        let out = gw.terminate(&id, &reason);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = child.wait_with_output().expect("psql ends");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "FATAL:  wardengate: session terminated by admin: {reason}"
            )),
            "run {i}: psql did not hear why: {err}"
        );
        assert!(
            !err.contains("canceling statement due to user request"),
            "run {i}: the cancel reached psql before the reason: {err}"
        );
        wait_for_count(
            &pg,
            running,
            "0",
            &format!("run {i}: the statement kept running upstream"),
        );
    }
}
