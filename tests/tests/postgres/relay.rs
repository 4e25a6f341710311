//! PostgreSQL through the gateway with real clients: `psql` (TLS, COPY, large objects through
//! the FunctionCall message), `pgbench` (simple and prepared), and tokio-postgres exercising the
//! extended protocol, pipelining, portals, COPY both ways, LISTEN/NOTIFY, cancel and large
//! results. The target is a real PostgreSQL cluster started for the test.

use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use wardengate_tests::pg::*;
use wardengate_tests::*;

const T: Duration = Duration::from_secs(120);

fn export(gw: &GatewayProc, id: &str, format: &str) -> String {
    gw.wait_sealed(id);
    let out = run(
        gw.wgctl()
            .args(["recording", "export", id, "--format", format]),
        T,
    );
    assert!(out.status.success(), "export: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The query records of a JSON-lines recording export.
fn query_records(jsonl: &str) -> Vec<serde_json::Value> {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "query")
        .collect()
}

/// The first of `records` whose statement contains `needle`; panics showing the whole export
/// (`jsonl`) when there is none.
#[track_caller]
fn query_with<'a>(
    records: &'a [serde_json::Value],
    needle: &str,
    jsonl: &str,
) -> &'a serde_json::Value {
    records
        .iter()
        .find(|q| q["statement"].as_str().is_some_and(|s| s.contains(needle)))
        .unwrap_or_else(|| panic!("no query record for {needle}: {jsonl}"))
}

#[test]
fn psql_over_tls_with_copy_and_large_objects_is_recorded_as_a_query_log() {
    let (env, pg, gw) = pg_standard();
    let file = env.path("lo.bin");
    std::fs::write(&file, pseudo_random(70_000, 7)).expect("lo file");
    let back = env.path("lo.out");
    let script = format!(
        "select current_user, current_database();\n\
         set application_name = 'audit-check';\n\
         create table notes(id int primary key, body text);\n\
         \\copy notes from stdin\n1\tfirst\n2\tsecond\n\\.\n\
         begin;\n\
         insert into notes values (3, 'third');\n\
         commit;\n\
         select count(*) from notes;\n\
         \\lo_import {file}\n\
         \\lo_export :LASTOID {back}\n\
         select 1/0;\n",
        file = file.display(),
        back = back.display()
    );
    let out = run_with_input(
        gw.psql("alice#billing.test", "sslmode=require")
            .args(["-v", "ON_ERROR_STOP=0", "-f", "-"]),
        Some(script.into_bytes()),
        T,
    );
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(
        so.contains("billing_ro|billing"),
        "logged in as the account: {so}\n{se}"
    );
    assert!(
        so.contains("\n3\n"),
        "COPY and the transaction landed: {so}"
    );
    assert!(
        se.contains("division by zero"),
        "errors arrive verbatim: {se}"
    );
    assert_eq!(
        std::fs::read(&back).expect("exported large object"),
        std::fs::read(&file).expect("original"),
        "large object round trip (FunctionCall)"
    );
    assert!(!so.contains(RO_PASSWORD) && !se.contains(RO_PASSWORD));
    // The target really has the rows.
    assert_eq!(
        pg.psql(
            "billing",
            "select string_agg(body, ',' order by id) from notes"
        )
        .expect("psql")
        .trim(),
        "first,second,third"
    );

    let s = gw.last_closed();
    assert_eq!(s["protocol"], "postgres");
    assert_eq!(s["end_reason"], "client_exit", "{s}");
    assert_eq!(s["client_version"], "psql");
    let id = s["id"].as_str().expect("id");
    let jsonl = export(&gw, id, "jsonl");
    let queries = query_records(&jsonl);
    let find = |needle: &str| query_with(&queries, needle, &jsonl);
    assert_eq!(find("notes FROM STDIN")["tag"], "COPY 2", "{jsonl}");
    assert_eq!(find("insert into notes")["tx_status"], "in transaction");
    assert_eq!(find("commit")["tx_status"], "idle");
    assert_eq!(find("count(*)")["rows"], 1);
    let div = find("1/0");
    assert_eq!(div["sqlstate"], "22012");
    assert_eq!(div["error"], "division by zero");
    assert!(
        queries.iter().any(|q| q["kind"] == "function"),
        "lo_import/lo_export use FunctionCall: {jsonl}"
    );
    secrets::assert_secret_absent(&jsonl, RO_PASSWORD, "the recording");
    secrets::assert_secret_absent(&gw.log(), RO_PASSWORD, "the gateway's log");
    assert!(
        jsonl.contains("application_name=audit-check"),
        "ParameterStatus changes are recorded: {jsonl}"
    );
    let play = run(
        gw.wgctl()
            .args(["recording", "play", id, "--speed", "1000"]),
        T,
    );
    let play = text(&play.stdout);
    assert_has_all(
        &play,
        &[
            "ERROR 22012 division by zero  (idle)  select 1/0;",
            "COPY 2",
        ],
    );
    let csv = export(&gw, id, "csv");
    assert!(csv.starts_with("t,started_ms,duration_us,kind,"), "{csv}");
    assert!(
        csv.contains(",simple,,,select 1/0;,,,,22012,division by zero,idle"),
        "{csv}"
    );
}

#[test]
fn md5_and_cleartext_targets_and_plaintext_clients() {
    let env = TestEnv::new();
    let pg = cluster(&env);
    // The same MD5 account, without allowing MD5: the gateway refuses to send the password.
    let gw = pg_targets(env.gateway(), &pg)
        .pg_target(
            "md5-strict.test",
            &pg.address(),
            "billing_md5",
            MD5_PASSWORD,
        )
        .start();
    let err = gw.psql_stderr("alice#md5-strict.test", "sslmode=disable", "select 1");
    assert!(
        err.contains(
            "asked to authenticate billing_md5 with md5, which this target does not allow"
        ),
        "{err}"
    );
    assert!(err.contains("the password was not sent"), "{err}");
    for (target, role) in [
        ("billing-md5.test", "billing_md5"),
        ("billing-clear.test", "billing_clear"),
    ] {
        let out = run(
            gw.psql(&format!("alice#{target}"), "sslmode=disable")
                .args(["-c", "select current_user"]),
            T,
        );
        assert!(out.status.success(), "{target}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), role);
    }
    // The account form: user#target#account.
    let out = run(
        gw.psql("alice#billing.test#billing_ro", "")
            .args(["-c", "select 1"]),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn pgbench_simple_and_prepared_through_the_gateway() {
    let (_env, _pg, gw) = pg_standard();
    let port = gw.pg_port.expect("pg port").to_string();
    let bench = |args: &[&str]| {
        let out = run(
            Command::new("pgbench")
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "alice#billing.test"])
                .args(args)
                .arg("billing")
                .env("PGPASSWORD", ALICE_PASSWORD),
            T,
        );
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "pgbench {args:?}: {all}");
        all
    };
    bench(&["-i", "-s", "1", "-q"]);
    for mode in ["simple", "prepared", "extended"] {
        let r = bench(&["-S", "-n", "-M", mode, "-c", "4", "-j", "2", "-t", "200"]);
        assert!(
            r.contains("number of transactions actually processed: 800/800"),
            "{mode}: {r}"
        );
        assert!(
            r.contains("number of failed transactions: 0"),
            "{mode}: {r}"
        );
    }
    // Every session ended and gave its slot back.
    gw.wait_sessions("?state=active", Duration::from_secs(10), |s| s.is_empty());
    let ex =
        gw.get_json("/api/v1/policies/explain?actor=alice&target=billing.test&protocol=postgres");
    assert_eq!(ex["current"]["target"], 0, "{ex}");
}

#[test]
fn a_driver_gets_the_whole_protocol() {
    let (_env, pg, gw) = pg_standard();
    let (rt, client, mut messages, id) = driver_session(&gw, "application_name=driver-test");
    rt.block_on(async {
        // Extended protocol with a named statement, and pipelining (three in flight at once).
        let stmt = client.prepare("select $1::int + 1").await.expect("prepare");
        let (a, b, c) = tokio::join!(
            client.query_one(&stmt, &[&41i32]),
            client.query_one(&stmt, &[&1i32]),
            client.query_one("select $1::text || '!'", &[&"hi"]),
        );
        assert_eq!(a.expect("a").get::<_, i32>(0), 42);
        assert_eq!(b.expect("b").get::<_, i32>(0), 2);
        assert_eq!(c.expect("c").get::<_, String>(0), "hi!");

        // A portal read in pieces (Execute with a row limit, PortalSuspended).
        let mut client = client;
        let tx = client.transaction().await.expect("begin");
        let s = tx.prepare("select generate_series(1, 5)").await.expect("prepare");
        let portal = tx.bind(&s, &[]).await.expect("bind");
        assert_eq!(tx.query_portal(&portal, 2).await.expect("first rows").len(), 2);
        assert_eq!(tx.query_portal(&portal, 10).await.expect("rest").len(), 3);
        tx.commit().await.expect("commit");

        // COPY in and out.
        client.batch_execute("create table copied(n int, s text)").await.expect("create");
        let sink = client.copy_in("copy copied from stdin").await.expect("copy in");
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"1\tone\n2\ttwo\n3\tthree\n")).await.expect("send rows");
        assert_eq!(sink.finish().await.expect("copy done"), 3);
        let out = client.copy_out("copy (select * from copied order by n) to stdout").await.expect("copy out");
        let chunks: Vec<_> = out.collect().await;
        let data: Vec<u8> = chunks.into_iter().flat_map(|c| c.expect("copy data").to_vec()).collect();
        assert_eq!(String::from_utf8_lossy(&data), "1\tone\n2\ttwo\n3\tthree\n");

        // A parameter larger than one read and than the capture limit.
        let big = "z".repeat(20_000);
        assert_eq!(client.execute("insert into copied values ($1, $2)", &[&4i32, &big]).await.expect("big bind"), 1);

        // LISTEN/NOTIFY.
        client.batch_execute("listen jobs; notify jobs, 'run-42'").await.expect("notify");
        let n = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) = messages.recv().await {
                    return n;
                }
            }
        })
        .await
        .expect("notification");
        assert_eq!((n.channel(), n.payload()), ("jobs", "run-42"));

        // A large result streams through (back-pressure, many reads).
        let rows = client
            .query_one("select count(*), sum(length(r)) from (select repeat('x', 1000) || g as r from generate_series(1, 100000) g) t", &[])
            .await
            .expect("count");
        assert_eq!(rows.get::<_, i64>(0), 100_000);
        let big = client.simple_query("select repeat('y', 500) from generate_series(1, 50000)").await.expect("big result");
        assert_eq!(big.iter().filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))).count(), 50_000);

        // Cancel a running statement: the gateway maps its key to the target's.
        let token = client.cancel_token();
        let sleeper = client.query("select pg_sleep(30)", &[]);
        let canceller = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            token.cancel_query(tokio_postgres::NoTls).await.expect("cancel request");
        };
        let (r, ()) = tokio::join!(sleeper, canceller);
        let e = r.expect_err("the sleep was cancelled");
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{e}");
        // The connection is still good.
        assert_eq!(client.query_one("select 7", &[]).await.expect("after cancel").get::<_, i32>(0), 7);
        drop(client);
    });
    let s = gw.wait_sessions("", Duration::from_secs(10), |v| {
        v.iter()
            .any(|s| s["id"] == id.as_str() && s["state"] == "closed")
    });
    let s = s
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("session")
        .clone();
    assert_eq!(s["client_version"], "driver-test");
    let audit = gw.audit("session.cancel_requested");
    assert!(
        audit.iter().any(|a| a["session_id"] == id.as_str()),
        "{audit:?}"
    );
    let jsonl = export(&gw, &id, "jsonl");
    assert!(
        jsonl.contains(r#""statement":"select $1::int + 1""#),
        "{jsonl}"
    );
    assert!(
        jsonl.contains(r#""params":["41"]"#),
        "bind parameters recorded: {jsonl}"
    );
    assert!(
        jsonl.contains(r#""tag":"suspended""#),
        "portal suspension recorded"
    );
    assert!(
        jsonl.contains(r#""sqlstate":"57014""#),
        "the cancelled statement recorded"
    );
    assert!(
        jsonl.contains(r#""statement":"copy copied from stdin""#)
            && jsonl.contains(r#""tag":"COPY 3""#),
        "{jsonl}"
    );
    let records = query_records(&jsonl);
    let by = |needle: &str| query_with(&records, needle, &jsonl);
    let insert = by("insert into copied");
    assert_eq!(
        (
            insert["params"][0].as_str(),
            insert["params"][1].as_str().map(str::len),
            insert["truncated"].as_bool()
        ),
        (Some("4"), Some(4096), Some(true)),
        "{insert}"
    );
    assert_eq!(
        by("pg_sleep(30)")["sqlstate"],
        "57014",
        "correlation survives COPY: {jsonl}"
    );
    assert_eq!(by("select 7")["tag"], "SELECT 1");
    // The target saw nothing of ours left running.
    let active = pg.psql("postgres", "select count(*) from pg_stat_activity where query like '%pg_sleep(30)%' and state = 'active' and pid <> pg_backend_pid()").expect("psql");
    assert_eq!(active.trim(), "0");
}

/// A query log is read, not watched: `recording play` prints it at once (`--realtime` keeps the
/// pace); a format that shows nothing of a recording is refused with the ones that fit; a play
/// or an export is one `recording.accessed` event.
#[test]
fn query_logs_print_at_once_and_formats_fit_the_recording() {
    let (_env, _pg, gw) = pg_standard();
    let out = run(
        gw.psql("alice#billing.test", "").args([
            "-c",
            "select 'first'",
            "-c",
            "select pg_sleep(3)",
            "-c",
            "select 'last'",
        ]),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = gw.last_closed()["id"].as_str().expect("id").to_string();
    gw.wait_sealed(&id);
    let accessed = || gw.audit("recording.accessed").len();
    let before = accessed();
    let started = std::time::Instant::now();
    let play = run(gw.wgctl().args(["recording", "play", &id]), T);
    let took = started.elapsed();
    let shown = text(&play.stdout);
    assert!(
        shown.contains("'first'") && shown.contains("'last'"),
        "{shown}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "the log was paced: {took:?}"
    );
    assert_eq!(accessed(), before + 1, "one play, one audit event");
    let started = std::time::Instant::now();
    let paced = run(gw.wgctl().args(["recording", "play", &id, "--realtime"]), T);
    assert!(text(&paced.stdout).contains("'last'"));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "--realtime keeps the pace"
    );

    for (format, ok) in [
        ("csv", true),
        ("text", true),
        ("asciicast", false),
        ("png", false),
    ] {
        let out = run(
            gw.wgctl()
                .args(["recording", "export", &id, "--format", format]),
            T,
        );
        assert_eq!(out.status.success(), ok, "{format}: {}", text(&out.stderr));
        if !ok {
            assert_stderr_has(
                &out,
                &format!("is a database (PostgreSQL) recording: --format {format} shows nothing of it; use csv, text, jsonl"),
            );
        }
    }
    let help = run(gw.wgctl().args(["recording", "export", "--help"]), T);
    let help = text(&help.stdout);
    for f in ["asciicast", "text", "jsonl", "csv", "png", "frames"] {
        assert!(help.contains(f), "--help lists {f}: {help}");
    }
}
