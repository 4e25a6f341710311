//! PostgreSQL in the end-to-end tests: a real throwaway cluster as the target, a gateway in front
//! of it, and a small raw client for what drivers never send (malformed and oversized frames).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use wardengate_dev::postgres::{PgAuth, PgCluster, PgOptions, PgUser};

use crate::{GatewayBuilder, GatewayProc, TestEnv, ALICE_PASSWORD};

/// The target account's password: it lives in the vault only and must never reach a client.
pub const RO_PASSWORD: &str = "ro-Secret-from-the-vault-7f3a";
pub const MD5_PASSWORD: &str = "md5-Secret-9c1e";
pub const CLEAR_PASSWORD: &str = "clear-Secret-2b8d";

/// A cluster with database `billing` (table `invoices`) and three roles, one per target
/// authentication method: `billing_ro` (SCRAM, owns the database), `billing_md5` (MD5),
/// `billing_clear` (cleartext password).
pub fn cluster(env: &TestEnv) -> PgCluster {
    let opts = PgOptions {
        users: vec![
            PgUser::new("billing_ro", RO_PASSWORD, PgAuth::Scram),
            PgUser::new("billing_md5", MD5_PASSWORD, PgAuth::Md5),
            PgUser::new("billing_clear", CLEAR_PASSWORD, PgAuth::Password),
        ],
        tls: None,
        database: "billing".into(),
        owner: None,
    };
    PgCluster::start(&env.path("pg"), 0, &opts).expect("start the PostgreSQL cluster")
}

/// Targets `billing.test` (SCRAM), `billing-md5.test` and `billing-clear.test` on `pg`.
pub fn pg_targets<'a>(b: GatewayBuilder<'a>, pg: &PgCluster) -> GatewayBuilder<'a> {
    let addr = pg.address();
    b.pg_target("billing.test", &addr, "billing_ro", RO_PASSWORD)
        .pg_target_with(
            "billing-md5.test",
            &addr,
            "billing_md5",
            MD5_PASSWORD,
            "auth_methods = [\"md5\"]",
        )
        .pg_target_with(
            "billing-clear.test",
            &addr,
            "billing_clear",
            CLEAR_PASSWORD,
            "auth_methods = [\"password\"]",
        )
}

/// A cluster and a gateway in front of it with the default policy.
pub fn pg_standard() -> (TestEnv, PgCluster, GatewayProc) {
    let env = TestEnv::new();
    let pg = cluster(&env);
    let gw = pg_targets(env.gateway(), &pg).start();
    (env, pg, gw)
}

/// What a tokio-postgres connection reports besides query results: notices, notifications,
/// and the error that ended it.
pub type Messages = tokio::sync::mpsc::UnboundedReceiver<
    Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>,
>;

/// tokio-postgres connected through the gateway as `alice#billing.test`; `extra` adds
/// connection settings (`application_name=...`).
pub async fn driver(port: u16, extra: &str) -> (tokio_postgres::Client, Messages) {
    use futures_util::StreamExt;
    let conninfo = format!("host=127.0.0.1 port={port} user=alice#billing.test password='{ALICE_PASSWORD}' dbname=billing {extra}");
    let (client, mut conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect through the gateway");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            let end = m.is_err();
            let _ = tx.send(m);
            if end {
                break;
            }
        }
    });
    (client, rx)
}

/// A runtime and a [`driver`] connected through `gw` (`extra`: more connection settings), once
/// the gateway shows its session active: (runtime, client, messages, session id). Keep the
/// runtime: the connection runs on it.
pub fn driver_session(
    gw: &GatewayProc,
    extra: &str,
) -> (
    tokio::runtime::Runtime,
    tokio_postgres::Client,
    Messages,
    String,
) {
    let port = gw.pg_port.expect("pg port");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (client, messages) = rt.block_on(driver(port, extra));
    let id = gw.wait_one_active();
    (rt, client, messages, id)
}

impl GatewayProc {
    /// Run `sql` with [`psql`](GatewayProc::psql) through the gateway as `login` (`conninfo`:
    /// more settings); what psql printed on stderr (a refusal's `FATAL:` line and detail).
    pub fn psql_stderr(&self, login: &str, conninfo: &str, sql: &str) -> String {
        let out = crate::run(
            self.psql(login, conninfo).args(["-c", sql]),
            Duration::from_secs(120),
        );
        crate::text(&out.stderr)
    }
}

/// A hand-driven client speaking raw protocol 3.0 to the gateway.
pub struct Raw {
    pub s: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Raw { s }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write to the gateway");
    }

    /// One backend message: (tag, body); `None` when the gateway closed the connection.
    pub fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.s.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.s.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// Messages until (and including) one with `tag`, or until the connection closes.
    pub fn until(&mut self, tag: u8) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.recv() {
            let done = m.0 == tag;
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    pub fn startup(&mut self, user: &str) {
        let mut b = BytesMut::new();
        frontend::startup_message([("user", user), ("database", "billing")], &mut b)
            .expect("startup");
        self.send(&b);
    }

    /// A StartupMessage of protocol 3.`minor`, by hand (postgres-protocol writes 3.0 only).
    pub fn startup_minor(&mut self, user: &str, minor: u16) {
        let mut body = Vec::new();
        body.extend_from_slice(&(3u32 << 16 | u32::from(minor)).to_be_bytes());
        for (k, v) in [("user", user), ("database", "billing")] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut b = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(&body);
        self.send(&b);
    }

    /// Start up as alice and authenticate with SCRAM; returns what came after authentication
    /// (through the first ReadyForQuery).
    pub fn login(port: u16, login: &str) -> (Raw, Vec<(u8, Vec<u8>)>) {
        Raw::login_minor(port, login, 0)
    }

    /// [`login`](Self::login) speaking protocol 3.`minor`.
    pub fn login_minor(port: u16, login: &str, minor: u16) -> (Raw, Vec<(u8, Vec<u8>)>) {
        let mut r = Raw::connect(port);
        if minor == 0 {
            r.startup(login);
        } else {
            r.startup_minor(login, minor);
        }
        let (tag, body) = r.recv().expect("authentication request");
        assert_eq!((tag, &body[..4]), (b'R', &10u32.to_be_bytes()[..]), "SASL");
        let mut scram = ScramSha256::new(ALICE_PASSWORD.as_bytes(), ChannelBinding::unsupported());
        let mut b = BytesMut::new();
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut b).expect("sasl");
        r.send(&b);
        let (_, body) = r.recv().expect("SASLContinue");
        scram.update(&body[4..]).expect("server-first");
        b.clear();
        frontend::sasl_response(scram.message(), &mut b).expect("sasl");
        r.send(&b);
        let (_, body) = r.recv().expect("SASLFinal");
        scram.finish(&body[4..]).expect("server signature");
        let rest = r.until(b'Z');
        (r, rest)
    }
}

/// The fields of an ErrorResponse or NoticeResponse body, as `C=28P01 M=...` pairs.
pub fn fields(body: &[u8]) -> Vec<(char, String)> {
    body.split(|c| *c == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0] as char, String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect()
}

pub fn field(body: &[u8], k: char) -> String {
    fields(body)
        .into_iter()
        .find(|(c, _)| *c == k)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// A CA and a server certificate for `localhost` it signed (PEM).
pub struct CaAndServer {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// A fresh CA and a `localhost` server certificate signed by it.
pub fn ca_and_server() -> CaAndServer {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("server cert");
    CaAndServer {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}
