//! TLS towards the PostgreSQL target: `verify-full` checks the target's certificate against the
//! configured CA and the host name; `require` encrypts without checking; a certificate from
//! another CA is refused before the account's password is sent.

use std::time::Duration;

use wardengate_dev::postgres::{PgAuth, PgCluster, PgOptions, PgUser};
use wardengate_tests::pg::*;
use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

/// A CA, and a server certificate for `localhost` signed by it: (ca pem, cert pem, key pem).
fn ca_and_server() -> (String, String, String) {
    let c = wardengate_tests::pg::ca_and_server();
    (c.ca, c.cert, c.key)
}

#[test]
fn target_tls_verify_full_require_and_a_wrong_ca() {
    let env = TestEnv::new();
    let (ca, cert, key) = ca_and_server();
    let (other_ca, _, _) = ca_and_server();
    let pg = PgCluster::start(
        &env.path("pg"),
        0,
        &PgOptions {
            users: vec![PgUser::new("billing_ro", RO_PASSWORD, PgAuth::Scram)],
            tls: Some((cert, key)),
            database: "billing".into(),
            owner: None,
        },
    )
    .expect("cluster with TLS");
    std::fs::write(env.path("ca.pem"), ca).expect("ca");
    std::fs::write(env.path("other-ca.pem"), other_ca).expect("ca");
    let addr = format!("localhost:{}", pg.port);
    let gw = env
        .gateway()
        .pg_target_with(
            "verified.test",
            &addr,
            "billing_ro",
            RO_PASSWORD,
            "tls = \"verify-full\"\ntls_ca_file = \"ca.pem\"",
        )
        .pg_target_with(
            "encrypted.test",
            &addr,
            "billing_ro",
            RO_PASSWORD,
            "tls = \"require\"",
        )
        .pg_target_with(
            "spoofed.test",
            &addr,
            "billing_ro",
            RO_PASSWORD,
            "tls = \"verify-full\"\ntls_ca_file = \"other-ca.pem\"",
        )
        .start();
    for target in ["verified.test", "encrypted.test"] {
        let out = run(
            gw.psql(&format!("alice#{target}"), "").args([
                "-c",
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            ]),
            T,
        );
        assert!(out.status.success(), "{target}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).trim(),
            "t",
            "{target}: the target leg is encrypted"
        );
    }
    // Cancel reaches a TLS target too (the gateway forwards it over TLS).
    let port = gw.pg_port.expect("pg port");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let conninfo = format!("host=127.0.0.1 port={port} user=alice#verified.test password='{ALICE_PASSWORD}' dbname=billing");
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        let token = client.cancel_token();
        let canceller = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            token.cancel_query(tokio_postgres::NoTls).await.expect("cancel");
        };
        let (r, ()) = tokio::join!(client.batch_execute("select pg_sleep(30)"), canceller);
        let e = r.expect_err("cancelled");
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{e}");
    });
    let err = gw.psql_stderr("alice#spoofed.test", "", "select 1");
    assert!(
        err.contains("TLS with target localhost:") && err.contains("invalid peer certificate"),
        "{err}"
    );
    let s = gw.wait_sessions("?state=failed", T, |s| !s.is_empty());
    assert_eq!(s[0]["end_reason"], "target_failed");
}
