//! PostgreSQL refusals and hostile input: each denial is an ErrorResponse with the right SQLSTATE
//! that psql prints verbatim; malformed startup packets, oversized and truncated frames, direct
//! TLS, GSSAPI encryption, replication; a target that is down. None leaves a live session or a
//! concurrency slot behind.

use std::process::Command;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use wardengate_tests::pg::*;
use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

/// The error tokio-postgres reports for `login` with `password`.
fn refused(port: u16, login: &str, password: &str) -> tokio_postgres::Error {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let conninfo =
        format!("host=127.0.0.1 port={port} user={login} password='{password}' dbname=billing");
    match rt.block_on(tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)) {
        Ok(_) => panic!("{login} was admitted"),
        Err(e) => e,
    }
}

fn db_error(e: &tokio_postgres::Error) -> &tokio_postgres::error::DbError {
    e.as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"))
}

fn no_live_sessions(gw: &GatewayProc) {
    let live = gw.wait_sessions("?state=active", Duration::from_secs(10), |s| s.is_empty());
    assert!(live.is_empty(), "sessions left open: {live:?}");
    let ex =
        gw.get_json("/api/v1/policies/explain?actor=alice&target=billing.test&protocol=postgres");
    assert_eq!(ex["current"]["pool"], 0, "a concurrency slot leaked: {ex}");
}

#[test]
fn denials_carry_their_sqlstate_and_psql_prints_them() {
    let env = TestEnv::new();
    let pg = cluster(&env);
    let gw = pg_targets(env.gateway(), &pg)
        .pg_target("other.test", &pg.address(), "billing_ro", RO_PASSWORD)
        .extra("[limits]\nmax_sessions_per_target = 1\n")
        .policies("[[policies]]\nname = \"dba-test\"\ngroups = [\"sre\"]\ntargets = [\"billing.test\", \"billing-md5.test\"]\n")
        .start();
    let port = gw.pg_port.expect("pg port");

    let e = refused(port, "alice#billing.test", "wrong");
    assert_eq!(db_error(&e).code(), &SqlState::INVALID_PASSWORD);
    assert_eq!(
        db_error(&e).message(),
        "password authentication failed for user \"alice\""
    );
    let e = refused(port, "mallory#billing.test", "x");
    assert_eq!(
        db_error(&e).code(),
        &SqlState::INVALID_PASSWORD,
        "unknown users look like wrong passwords"
    );
    let e = refused(port, "alice#nowhere.test", ALICE_PASSWORD);
    assert_eq!(
        db_error(&e).code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    assert!(
        db_error(&e)
            .message()
            .contains("unknown target 'nowhere.test'"),
        "{e}"
    );
    let e = refused(port, "alice#other.test", ALICE_PASSWORD);
    assert_eq!(
        db_error(&e).code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    assert!(db_error(&e).message().contains("access denied"), "{e}");
    let e = refused(port, "alice", ALICE_PASSWORD);
    assert!(
        db_error(&e).message().contains("connect as USER#TARGET"),
        "{e}"
    );

    // Concurrency: one session holds the target's only slot.
    let mut holder = Command::new("psql");
    holder
        .arg(format!(
            "host=127.0.0.1 port={port} user=alice#billing.test dbname=billing"
        ))
        .args(["-X", "-c", "select pg_sleep(60)"])
        .env("PGPASSWORD", ALICE_PASSWORD);
    let mut holder = holder.spawn().expect("psql");
    let held = gw.wait_one_active();
    let e = refused(port, "alice#billing.test", ALICE_PASSWORD);
    let d = db_error(&e);
    assert_eq!(d.code(), &SqlState::TOO_MANY_CONNECTIONS);
    assert!(
        d.message()
            .contains("target at capacity: billing.test 1/1 (max_sessions_per_target)"),
        "{d:?}"
    );
    let detail: serde_json::Value =
        serde_json::from_str(d.detail().expect("structured detail")).expect("JSON detail");
    assert_eq!(
        (
            detail["scope"].as_str(),
            detail["limit"].as_u64(),
            detail["current"].as_u64()
        ),
        (Some("target"), Some(1), Some(1)),
        "{detail}"
    );
    let err = gw.psql_stderr("alice#billing.test", "sslmode=require", "select 1");
    assert_has_all(
        &err,
        &[
            "FATAL:  wardengate: target at capacity: billing.test 1/1",
            "DETAIL:  {\"current\":1,\"limit\":1,\"scope\":\"target\"",
        ],
    );
    let out = gw.terminate(&held, "free the slot");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = wait_timeout(&mut holder, T);

    // Each refusal is a denied session with its reason (bad passwords are audited instead).
    let all = gw.sessions("?state=denied");
    for reason in ["unknown_target", "no_permission", "concurrency"] {
        assert!(
            all.iter()
                .any(|s| s["end_reason"] == reason && s["protocol"] == "postgres"),
            "{reason}: {all:?}"
        );
    }
    let failed = gw.audit("auth.failed");
    assert!(
        failed
            .iter()
            .any(|a| a["detail"]["reason"] == "bad_password"),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|a| a["detail"]["reason"] == "unknown_user"),
        "{failed:?}"
    );
    no_live_sessions(&gw);
}

#[test]
fn hostile_startup_packets_get_clear_errors() {
    let (_env, _pg, gw) = pg_standard();
    let port = gw.pg_port.expect("pg port");
    for (packet, want) in [
        (
            3u32.to_be_bytes().to_vec(),
            "invalid length of startup packet: 3",
        ),
        (
            1_000_000u32.to_be_bytes().to_vec(),
            "invalid length of startup packet: 1000000",
        ),
        (
            [8u32.to_be_bytes(), 0x0001_0000u32.to_be_bytes()].concat(),
            "unsupported frontend protocol 1.0",
        ),
        (
            [
                13u32.to_be_bytes().to_vec(),
                0x0003_0000u32.to_be_bytes().to_vec(),
                b"a\0b\0\0".to_vec(),
            ]
            .concat(),
            "no user name in the startup packet",
        ),
    ] {
        let mut r = Raw::connect(port);
        r.send(&packet);
        let (tag, body) = r
            .recv()
            .unwrap_or_else(|| panic!("no answer to {packet:?}"));
        assert_eq!(tag, b'E', "{packet:?}");
        assert!(
            field(&body, 'M').contains(want),
            "{packet:?}: {:?}",
            fields(&body)
        );
        assert!(
            r.recv().is_none(),
            "the connection is closed after the error"
        );
    }
    // GSSAPI encryption is declined with 'N'; the client then goes on in plain text.
    let mut r = Raw::connect(port);
    r.send(&[8u32.to_be_bytes(), 80877104u32.to_be_bytes()].concat());
    let mut n = [0u8; 1];
    std::io::Read::read_exact(&mut r.s, &mut n).expect("answer");
    assert_eq!(&n, b"N");
    r.startup("alice#billing.test");
    assert_eq!(r.recv().map(|m| m.0), Some(b'R'), "authentication follows");
    // Replication connections are refused.
    let out = run(
        gw.psql("alice#billing.test", "replication=database")
            .args(["-c", "IDENTIFY_SYSTEM"]),
        T,
    );
    assert_stderr_has(&out, "replication connections are not supported");
    assert!(gw.sessions("?state=active").is_empty());
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

#[test]
fn oversized_and_truncated_frames_end_the_session_cleanly() {
    let (_env, _pg, gw) = pg_standard();
    let port = gw.pg_port.expect("pg port");
    let (mut r, hello) = Raw::login(port, "alice#billing.test");
    assert!(hello.iter().any(|(t, _)| *t == b'K'), "BackendKeyData");
    assert_eq!(hello.last().map(|m| m.0), Some(b'Z'));
    r.send(&[b'Q', 0x7f, 0xff, 0xff, 0xf0]);
    let (tag, body) = r.recv().expect("an error");
    assert_eq!(
        (tag, field(&body, 'C').as_str()),
        (b'E', "08P01"),
        "{:?}",
        fields(&body)
    );
    assert!(
        field(&body, 'M').contains("invalid message length"),
        "{:?}",
        fields(&body)
    );
    let s = gw.last_closed();
    assert_eq!(s["end_reason"], "error", "{s}");

    // A frame cut off by the client going away.
    let (mut r, _) = Raw::login(port, "alice#billing.test");
    r.send(&[b'Q', 0, 0, 0, 100, b's', b'e', b'l']);
    drop(r);
    let closed = gw.wait_sessions("?state=closed", Duration::from_secs(10), |s| s.len() == 2);
    assert_eq!(closed.len(), 2, "{closed:?}");
    no_live_sessions(&gw);
    assert!(!gw.log().contains("panicked"));
}

#[test]
fn direct_tls_with_alpn_like_postgresql_17() {
    let (_env, _pg, gw) = pg_standard();
    let port = gw.pg_port.expect("pg port");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cert = std::fs::read(gw.data.join("postgres_tls.crt")).expect("the generated certificate");
    rt.block_on(async {
        use rustls::pki_types::pem::PemObject;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&cert) {
            roots.add(c.expect("pem")).expect("root");
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config.clone()))
            .connect(name, tcp)
            .await
            .expect("direct TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
        let mut b = bytes::BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [("user", "alice#billing.test")],
            &mut b,
        )
        .expect("startup");
        tls.write_all(&b).await.expect("write");
        let mut head = [0u8; 9];
        tls.read_exact(&mut head).await.expect("auth request");
        assert_eq!(head[0], b'R');
        assert_eq!(&head[5..9], &10u32.to_be_bytes(), "SASL over direct TLS");

        // Without ALPN, as PostgreSQL 17 does: refused with a clear error.
        let mut bare = config.clone();
        bare.alpn_protocols.clear();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(bare))
            .connect(name, tcp)
            .await
            .expect("the handshake itself completes");
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
        assert!(
            String::from_utf8_lossy(&answer)
                .contains("without ALPN protocol negotiation extension"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    });
}

#[test]
fn target_down_fails_the_session_and_frees_the_slot() {
    let env = TestEnv::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let gw = env
        .gateway()
        .pg_target("billing.test", &addr, "billing_ro", RO_PASSWORD)
        .start();
    let err = gw.psql_stderr("alice#billing.test", "sslmode=disable", "select 1");
    assert!(
        err.contains("FATAL:  wardengate: cannot connect to target billing.test"),
        "{err}"
    );
    let s = gw.wait_sessions("?state=failed", T, |s| !s.is_empty());
    assert_eq!(s[0]["end_reason"], "target_failed", "{s:?}");
    no_live_sessions(&gw);
}

/// A target's own refusal keeps its SQLSTATE (drivers branch on it), with the gateway's context
/// in the message; a target that cannot be reached is 08001.
#[test]
fn a_targets_own_refusal_keeps_its_sqlstate() {
    let (_env, _pg, gw) = pg_standard();
    let port = gw.pg_port.expect("pg port");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=alice#billing.test password='{ALICE_PASSWORD}' dbname=nope"
    );
    let e = match rt.block_on(tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)) {
        Ok(_) => panic!("a database that does not exist was opened"),
        Err(e) => e,
    };
    let d = db_error(&e);
    assert_eq!(d.code(), &SqlState::INVALID_CATALOG_NAME, "{d:?}");
    assert!(d.message().contains("billing.test"), "{}", d.message());
    assert!(
        d.message().contains("\"nope\" does not exist"),
        "{}",
        d.message()
    );
    let failed = gw.wait_sessions("?state=failed", T, |s| !s.is_empty());
    assert_eq!(failed[0]["end_reason"], "target_failed");
    no_live_sessions(&gw);
}
