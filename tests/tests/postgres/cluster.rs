//! The throwaway PostgreSQL cluster (`wardengate_dev::postgres`), the PostgreSQL target of
//! the end-to-end tests and `wardengate dev`: each user logs in over TCP with its own method and
//! password, driven by the real `psql` client.

use std::process::{Command, Output};
use std::time::Duration;

use wardengate_dev::postgres::{PgAuth, PgCluster, PgOptions, PgUser};
use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

fn psql_tcp(pg: &PgCluster, user: &str, password: &str, sql: &str) -> Output {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={user} dbname=billing sslmode=disable connect_timeout=10",
        pg.port
    );
    run(
        Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                &conninfo,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", password)
            .env_remove("PGPASSFILE")
            .env_remove("PGSERVICE"),
        T,
    )
}

#[test]
fn users_log_in_with_their_method_and_password_only() {
    let env = TestEnv::new();
    let opts = PgOptions {
        users: vec![
            PgUser::new("owner_scram", "s3cret 'quoted'", PgAuth::Scram),
            PgUser::new("reader_md5", "md5-pass", PgAuth::Md5),
        ],
        tls: None,
        database: "billing".into(),
        owner: None,
    };
    let pg = PgCluster::start(&env.path("pg"), 0, &opts).expect("start the cluster");
    assert_eq!(pg.address(), format!("127.0.0.1:{}", pg.port));

    // Stored as the method asks.
    let stored = pg
        .psql(
            "postgres",
            "SELECT rolname || ' ' || left(rolpassword, 14) FROM pg_authid \
             WHERE rolname IN ('owner_scram', 'reader_md5') ORDER BY 1",
        )
        .expect("superuser psql over the socket");
    let stored: Vec<&str> = stored.lines().collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored[0].starts_with("owner_scram SCRAM-SHA-256$"),
        "{stored:?}"
    );
    assert!(stored[1].starts_with("reader_md5 md5"), "{stored:?}");

    for (name, password, table_owner) in [
        ("owner_scram", "s3cret 'quoted'", true),
        ("reader_md5", "md5-pass", false),
    ] {
        let out = psql_tcp(
            &pg,
            name,
            password,
            "SELECT current_user || ' ' || count(*) FROM invoices",
        );
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), format!("{name} 50"));
        // The first user owns the database and the table; the others only read it.
        let out = psql_tcp(&pg, name, password, "DELETE FROM invoices WHERE id < 0");
        assert_eq!(
            out.status.success(),
            table_owner,
            "{name}: {}",
            text(&out.stderr)
        );

        let out = psql_tcp(&pg, name, "wrong", "SELECT 1");
        assert!(
            !out.status.success(),
            "{name} logged in with a wrong password"
        );
        assert_stderr_has(&out, "password authentication failed");
    }
    // Nobody else logs in over TCP, not even the superuser.
    let out = psql_tcp(&pg, "postgres", "", "SELECT 1");
    assert!(!out.status.success());
    assert_stderr_has(&out, "no pg_hba.conf entry");
}
