//! Several gateway processes on one real PostgreSQL store, for the cluster tests and
//! `scripts/bench cluster`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::*;
use wardengate_dev::postgres::{PgAuth, PgCluster, PgOptions, PgUser};
use wardengate_dev::sshd::Sshd;

/// The store role's password (`wardengate` on the store's server).
pub const STORE_PASSWORD: &str = "store-Secret-5e2a";

/// N gateways (`gw-1` …) in front of one sshd (`web.test`), sharing a PostgreSQL store.
pub struct Cluster {
    pub env: TestEnv,
    pub sshd: Sshd,
    pub store: PgCluster,
    pub gws: Vec<GatewayProc>,
}

/// Start the store, run `wardengate cluster init` once (it writes the cluster key; the vault
/// key comes with it), give every gateway both keys, and start them. `extra` is more config
/// (limits); `ttl` the lease TTL.
pub fn cluster(n: usize, ttl: &str, extra: &str) -> Cluster {
    cluster_with(n, ttl, extra, |b, _| b)
}

/// [`cluster`] with each gateway's configuration changed by `more` (its policies, a PostgreSQL
/// target on the store's server, given as the second argument).
pub fn cluster_with(
    n: usize,
    ttl: &str,
    extra: &str,
    more: impl for<'e> Fn(GatewayBuilder<'e>, &PgCluster) -> GatewayBuilder<'e>,
) -> Cluster {
    cluster_opts(n, ttl, extra, None, more)
}

/// [`cluster_with`], the store's PostgreSQL serving TLS when `tls` is given (a certificate for
/// `localhost` and its CA, see [`crate::pg::ca_and_server`]): the gateways reach it as
/// `localhost` and trust the CA (`[store] ca_file = "store-ca.pem"` in each data directory).
pub fn cluster_opts(
    n: usize,
    ttl: &str,
    extra: &str,
    tls: Option<crate::pg::CaAndServer>,
    more: impl for<'e> Fn(GatewayBuilder<'e>, &PgCluster) -> GatewayBuilder<'e>,
) -> Cluster {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let store = PgCluster::start(
        &env.path("store"),
        0,
        &PgOptions {
            users: vec![PgUser::new("wardengate", STORE_PASSWORD, PgAuth::Scram)],
            tls: tls.as_ref().map(|t| (t.cert.clone(), t.key.clone())),
            database: "wardengate".into(),
            owner: None,
        },
    )
    .expect("start the store's PostgreSQL");
    let (host, ca_line) = match &tls {
        Some(_) => ("localhost", "ca_file = \"store-ca.pem\"\n"),
        None => ("127.0.0.1", ""),
    };
    let url = format!(
        "postgres://wardengate:{STORE_PASSWORD}@{host}:{}/wardengate",
        store.port
    );
    let section = format!(
        "[store]\nurl = \"{url}\"\n{ca_line}\n[cluster]\nlease_ttl = \"{ttl}\"\n\n{extra}\n"
    );
    let ca_in = |dir: &std::path::Path| {
        if let Some(t) = &tls {
            std::fs::create_dir_all(dir).expect("data dir");
            std::fs::write(dir.join("store-ca.pem"), &t.ca).expect("store-ca.pem");
        }
    };
    // What an operator does once: init against the store, then copy the keys.
    let keys = env.path("keys");
    ca_in(&keys);
    let init = env.path("init.toml");
    write_private(
        &init,
        &format!(
            "[gateway]\nname = \"init\"\ndata_dir = \"{}\"\n\n{section}",
            keys.display()
        ),
    );
    let out = run(
        Command::new(bin("wardengate"))
            .args(["cluster", "--config"])
            .arg(&init)
            .arg("init"),
        Duration::from_secs(60),
    );
    assert_success(&out, "wardengate cluster init");
    assert_stdout_has(&out, "wrote the cluster key");
    assert_stdout_has(&out, "copy these three files");
    let mut gws = Vec::new();
    for i in 1..=n {
        let b = env
            .gateway()
            .named(&format!("gw-{i}"))
            .target("web.test", &sshd)
            .security_lines("max_unauthenticated_per_source = 500\nmax_unauthenticated = 500\n")
            .extra(&section);
        let b = more(b, &store);
        let data = b.data_dir();
        std::fs::create_dir_all(&data).expect("data dir");
        for f in ["cluster.key", "vault.key", "recording_ed25519.key"] {
            std::fs::copy(keys.join(f), data.join(f)).expect("copy a cluster key");
        }
        ca_in(&data);
        gws.push(b.start());
    }
    Cluster {
        env,
        sshd,
        store,
        gws,
    }
}

impl Cluster {
    /// alice's ssh to `web.test` through gateway `i` (0-based) running `cmd`, output piped.
    pub fn ssh(&self, i: usize, cmd: &str) -> Child {
        self.gws[i]
            .ssh(&self.env, "alice#web.test")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssh")
    }

    /// Like [`ssh`](Self::ssh) with a terminal (`-tt`): what observers of the session see.
    pub fn ssh_tty(&self, i: usize, cmd: &str) -> Child {
        let gw = &self.gws[i];
        Command::new("ssh")
            .args(["-tt", "-o", "BatchMode=yes"])
            .args(gw.ssh_opts(&self.env))
            .args([
                "-p",
                &gw.ssh_port.to_string(),
                "alice#web.test@127.0.0.1",
                cmd,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssh -tt")
    }

    /// The live sessions gateway `i` lists (every gateway's).
    pub fn active(&self, i: usize, n: usize) -> Vec<serde_json::Value> {
        self.gws[i].wait_sessions("?state=active", Duration::from_secs(30), |s| s.len() == n)
    }
}
