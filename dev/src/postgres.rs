//! A throwaway PostgreSQL cluster from Debian's packages on a loopback port: the demo database of
//! `wardengate dev` and the PostgreSQL target of the end-to-end tests and `scripts/bench pg`.
//!
//! Layout of the cluster directory `dir` (given to [`PgCluster::start`]):
//! - `dir/data`: the data directory, re-created by `initdb` at every start (throwaway: fsync,
//!   synchronous_commit and full_page_writes are off);
//! - `dir/.s.PGSQL.PORT`: the unix socket, where the superuser `postgres` logs in without a
//!   password (`local all all trust`), e.g. `psql -h DIR -p PORT -U postgres`;
//! - `dir/postgres.log`, `dir/initdb.log`: the server's and initdb's output.
//!
//! Over TCP (127.0.0.1 only) each configured user logs in with its password and its own method
//! (scram-sha-256, md5 or password); nobody else does.
//!
//! `initdb` and `postgres` refuse to run as root. Run as root, the cluster runs as the `postgres`
//! system user (created by the Debian package): `dir` is chowned to it, and every ancestor of `dir`
//! that this user could not traverse gets the search bit for others (`o+x`, never read), since
//! temporary directories are created 0700 (`tempfile`, `mktemp -d`). Run as another user, the
//! cluster runs as that user.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::sshd::free_port;

/// The superuser created by `initdb`; it logs in over the unix socket only (trust).
pub const SUPERUSER: &str = "postgres";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How a user authenticates over TCP (its `pg_hba.conf` method).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgAuth {
    /// `scram-sha-256`, the password stored as a SCRAM verifier.
    Scram,
    /// `md5`, the password stored as an MD5 hash.
    Md5,
    /// `password` (clear text on the wire), the password stored as a SCRAM verifier.
    Password,
}

impl PgAuth {
    fn hba_method(self) -> &'static str {
        match self {
            PgAuth::Scram => "scram-sha-256",
            PgAuth::Md5 => "md5",
            PgAuth::Password => "password",
        }
    }

    fn password_encryption(self) -> &'static str {
        match self {
            PgAuth::Md5 => "md5",
            PgAuth::Scram | PgAuth::Password => "scram-sha-256",
        }
    }
}

/// A login role created at start.
#[derive(Clone, Debug)]
pub struct PgUser {
    pub name: String,
    pub password: String,
    pub method: PgAuth,
}

impl PgUser {
    pub fn new(name: &str, password: &str, method: PgAuth) -> PgUser {
        PgUser {
            name: name.into(),
            password: password.into(),
            method,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    pub users: Vec<PgUser>,
    /// `(certificate PEM, private key PEM)`: when given, the server also accepts TLS (`ssl = on`);
    /// plain connections are still accepted.
    pub tls: Option<(String, String)>,
    /// A database created at start (unless empty), owned by `owner`, who also owns its demo
    /// table `invoices` (50 rows); the users may connect and read it.
    pub database: String,
    /// The role that owns the database and its table: a role of its own that cannot log in
    /// (then every user only reads), or, when `None`, the first user.
    pub owner: Option<String>,
}

/// A running PostgreSQL server, stopped on drop.
pub struct PgCluster {
    child: Option<Child>,
    /// The TCP port on 127.0.0.1 (also the number in the unix socket's name).
    pub port: u16,
    /// The cluster directory: unix socket directory, logs, and `data/`.
    pub dir: PathBuf,
    /// The data directory, `dir/data`.
    pub data_dir: PathBuf,
    /// Where `initdb`, `postgres`, `pg_ctl`, `psql` and `pgbench` come from.
    pub bin_dir: PathBuf,
    /// `(uid, gid)` the server runs as, when it is not the invoking user (run as root).
    run_as: Option<(u32, u32)>,
}

/// The newest `/usr/lib/postgresql/VERSION/bin` that has `initdb` and `postgres`.
pub fn bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let bin = e.path().join("bin");
            if !bin.join("initdb").is_file() || !bin.join("postgres").is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().to_string();
            let version: Vec<u32> = name.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            if best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, b)| b).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server not found (no /usr/lib/postgresql/*/bin with initdb and postgres); \
             install it with `apt-get install postgresql` (scripts/dev and scripts/test do this)"
        )
    })
}

/// This process's effective uid, from /proc (no libc: the crate forbids unsafe code).
fn euid() -> Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| anyhow!("no effective uid in /proc/self/status"))
}

/// `(uid, gid)` of the `postgres` system user, from /etc/passwd.
fn postgres_account() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == "postgres")
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| {
            anyhow!(
                "running as root, PostgreSQL must run as the `postgres` system user, which does \
                 not exist; install the server with `apt-get install postgresql` (it creates it)"
            )
        })
}

/// Let `uid` traverse every ancestor of `dir`: add `o+x` where it is missing.
fn make_traversable(dir: &Path, uid: u32) -> Result<()> {
    for a in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(a).with_context(|| format!("cannot stat {}", a.display()))?;
        let mode = meta.permissions().mode();
        let ok = mode & 0o001 != 0 || (meta.uid() == uid && mode & 0o100 != 0);
        if !ok {
            std::fs::set_permissions(a, std::fs::Permissions::from_mode((mode | 0o001) & 0o7777))
                .with_context(|| {
                format!(
                    "cannot make {} traversable for the postgres user",
                    a.display()
                )
            })?;
        }
    }
    Ok(())
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `'text'` as an SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `"name"` as an SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The pid of a live postmaster on `data_dir` (from its `postmaster.pid`).
pub fn live_postmaster(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    crate::children::alive(pid).then_some(pid)
}

impl PgCluster {
    /// Initialise a fresh cluster in `dir/data` (an old one there is deleted), start it on
    /// 127.0.0.1:`port` (0: pick a free one), create `opts`' users and database, and return once
    /// it accepts connections.
    pub fn start(dir: &Path, port: u16, opts: &PgOptions) -> Result<PgCluster> {
        let bin_dir = bin_dir()?;
        let run_as = if euid()? == 0 {
            Some(postgres_account()?)
        } else {
            None
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        // The socket path must fit in sockaddr_un (107 bytes).
        if dir.as_os_str().len() + "/.s.PGSQL.65535".len() > 107 {
            bail!(
                "PostgreSQL cluster directory path too long for a unix socket: {}",
                dir.display()
            );
        }
        let data_dir = dir.join("data");
        if let Some(pid) = live_postmaster(&data_dir) {
            bail!(
                "a PostgreSQL server (pid {pid}) is running on {}: is another `wardengate dev` (or \
                 test) using this directory? Stop it first; this cluster is not touched",
                data_dir.display()
            );
        }
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("cannot remove the old cluster {}", data_dir.display()))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {} to postgres", dir.display()))?;
            make_traversable(&dir, uid)?;
        }
        let mut me = PgCluster {
            child: None,
            port,
            dir: dir.clone(),
            data_dir: data_dir.clone(),
            bin_dir,
            run_as,
        };
        me.initdb(opts)?;
        // A port picked here may be taken before the server binds it: pick another then.
        let mut attempt = 0;
        loop {
            attempt += 1;
            me.port = if port == 0 { free_port()? } else { port };
            match me.spawn_and_wait() {
                Ok(()) => break,
                Err(e) if port == 0 && attempt < 3 && me.bind_failed() => {
                    tracing::debug!("postgres: port {} taken, retrying: {e:#}", me.port)
                }
                Err(e) => return Err(e),
            }
        }
        me.create_objects(opts)?;
        Ok(me)
    }

    /// A command for a server-side program, run as the server's user.
    fn server_cmd(&self, program: &str) -> Command {
        self.as_server(Command::new(self.bin_dir.join(program)))
    }

    /// `c` run in the cluster's directory as the server's user.
    fn as_server(&self, mut c: Command) -> Command {
        c.current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        c
    }

    fn initdb(&self, opts: &PgOptions) -> Result<()> {
        let log_path = self.dir.join("initdb.log");
        let log = std::fs::File::create(&log_path)?;
        let status = self
            .server_cmd("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("cannot run {}/initdb", self.bin_dir.display()))?;
        if !status.success() {
            bail!("initdb failed ({status}):\n{}", tail(&log_path));
        }
        let mut conf = format!(
            "\n# Written by Wardengate (throwaway cluster).\n\
             listen_addresses = '127.0.0.1'\nunix_socket_directories = {sock}\n\
             max_connections = 200\nshared_buffers = 128MB\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             logging_collector = off\nlog_min_messages = warning\n",
            sock = literal(&self.dir.to_string_lossy()),
        );
        let mut hba = String::from("# Written by Wardengate.\nlocal all all trust\n");
        for u in &opts.users {
            hba += &format!(
                "host all {} 127.0.0.1/32 {}\n",
                ident(&u.name),
                u.method.hba_method()
            );
        }
        if let Some((cert, key)) = &opts.tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = self.data_dir.join(name);
                std::fs::write(&path, pem)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                if let Some((uid, gid)) = self.run_as {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
                }
            }
            conf += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
        }
        // initdb wrote both files as the server's user: appending and rewriting keep their owner.
        let conf_path = self.data_dir.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        let hba_path = self.data_dir.join("pg_hba.conf");
        std::fs::write(&hba_path, hba)
            .with_context(|| format!("cannot write {}", hba_path.display()))?;
        Ok(())
    }

    /// The server's log (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn bind_failed(&self) -> bool {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        log.contains("could not bind") || log.contains("could not create any TCP/IP sockets")
    }

    /// Start `postgres` on `self.port` and wait until it accepts connections.
    fn spawn_and_wait(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.log_path())?;
        // The postmaster dies with this process (its backends follow it).
        let mut cmd = self.as_server(crate::children::command(self.bin_dir.join("postgres")));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = crate::children::spawn(cmd)
            .with_context(|| format!("cannot start {}/postgres", self.bin_dir.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                bail!(
                    "postgres exited ({status}) before accepting connections on port {}; the end of {}:\n{}",
                    self.port,
                    self.log_path().display(),
                    tail(&self.log_path())
                );
            }
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-t", "2"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("cannot run pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "postgres did not accept connections on port {} within {}s; the end of {}:\n{}",
                    self.port,
                    START_TIMEOUT.as_secs(),
                    self.log_path().display(),
                    tail(&self.log_path())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_objects(&self, opts: &PgOptions) -> Result<()> {
        let mut sql = String::new();
        for u in &opts.users {
            sql += &format!(
                "SET password_encryption = {};\nCREATE ROLE {} LOGIN PASSWORD {};\n",
                literal(u.method.password_encryption()),
                ident(&u.name),
                literal(&u.password)
            );
        }
        if opts.database.is_empty() {
            return self.psql("postgres", &sql).map(drop);
        }
        let (owner, others): (String, &[PgUser]) = match (&opts.owner, opts.users.split_first()) {
            (Some(o), _) => {
                sql += &format!("CREATE ROLE {} NOLOGIN;\n", ident(o));
                (o.clone(), &opts.users[..])
            }
            (None, Some((first, others))) => (first.name.clone(), others),
            (None, None) => bail!(
                "PostgreSQL database '{}' needs a user to own it",
                opts.database
            ),
        };
        let db = ident(&opts.database);
        sql += &format!("CREATE DATABASE {db} OWNER {};\n", ident(&owner));
        for o in others {
            sql += &format!("GRANT CONNECT ON DATABASE {db} TO {};\n", ident(&o.name));
        }
        self.psql("postgres", &sql)?;
        let mut sql = format!(
            "SET ROLE {};\n\
             CREATE TABLE invoices (id serial PRIMARY KEY, customer text NOT NULL, \
             amount numeric NOT NULL, created timestamptz NOT NULL DEFAULT now());\n\
             INSERT INTO invoices (customer, amount, created)\n  \
             SELECT (ARRAY['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli'])[1 + i % 5],\n    \
             ((i * 7919) % 100000) / 100.0, now() - i * interval '1 day'\n  \
             FROM generate_series(1, 50) AS i;\n",
            ident(&owner)
        );
        for o in others {
            sql += &format!(
                "GRANT USAGE ON SCHEMA public TO {u};\nGRANT SELECT ON invoices TO {u};\n",
                u = ident(&o.name)
            );
        }
        self.psql(&opts.database, &sql).map(drop)
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Run `sql` (one or more statements, fed to psql's stdin) in database `db` as the superuser
    /// over the unix socket; stop at the first error. Returns psql's unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut child = Command::new(self.bin_dir.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-f",
                "-",
            ])
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}/psql", self.bin_dir.display()))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("psql has no stdin"))?;
        let input = sql.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().context("psql")?;
        let written = writer
            .join()
            .map_err(|_| anyhow!("psql stdin writer panicked"))?;
        if !out.status.success() {
            bail!(
                "psql on database '{db}' failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        written.context("cannot write to psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Start the server again on the same port with the same data, after [`stop`](Self::stop)
    /// (a database restart, as an operator would do one).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// Stop the server (fast shutdown: open sessions are ended); the port is free when this
    /// returns. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let stopped = self
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["stop", "-m", "fast", "-w", "-t", "10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let deadline = Instant::now() + Duration::from_secs(if stopped { 5 } else { 0 });
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
