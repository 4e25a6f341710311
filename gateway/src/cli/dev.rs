//! `wardengate dev`: a zero-configuration gateway with a real demo target, like `boundary dev`.
//!
//! It creates a data directory, generates the gateway's keys, a vault key and an admin token,
//! starts a real OpenSSH `sshd` on a free loopback port as target `web-01.dev` whose account key
//! lives only in the vault, and a real PostgreSQL cluster as target `billing-ro.dev` whose
//! account password lives only in the vault, writes the config it runs with, and prints how to
//! connect.

use wardengate_dev::{children, desktop, postgres, sshd};

use super::dev_cluster;
use super::dev_demo::{kept_secret, status_page, user_key, user_token};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use wardengate_gateway::config;
use wardengate_gateway::keys;
use wardengate_gateway::vault::SecretKind;

/// `wardengate dev`'s flags.
#[derive(Debug, clap::Args)]
pub struct DevOptions {
    #[arg(long, default_value = ".wardengate-dev")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 2222)]
    pub ssh_port: u16,
    #[arg(long, default_value_t = 8080)]
    pub api_port: u16,
    /// The gateway's PostgreSQL port (the demo database is behind it).
    #[arg(long, default_value_t = 6432)]
    pub pg_port: u16,
    /// The gateway's RDP port (the demo Windows desktop is behind it).
    #[arg(long, default_value_t = 3389)]
    pub rdp_port: u16,
    /// The gateway's brokered-TCP port (`wgctl proxy` connects to it).
    #[arg(long, default_value_t = 9201)]
    pub tcp_port: u16,
    /// The demo status page web-01.dev "serves" on 127.0.0.1, the destination of the port
    /// forwarding example (0: none).
    #[arg(long, default_value_t = 9080)]
    pub web_port: u16,
    /// Do not record the demo sessions, nor keep their desktops for observers (for
    /// comparisons; recording is on by default).
    #[arg(long)]
    pub no_recording: bool,
    /// Reconnect mode of the demo sessions: strict, reauth or resume (for comparisons; the
    /// example policies use resume).
    #[arg(long)]
    pub reconnect: Option<String>,
    /// The demo Windows desktop's size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    pub desktop_size: (u16, u16),
    /// The SSH ciphers the gateway offers, comma-separated (for comparisons; default: the
    /// gateway's own default).
    #[arg(long, hide = true)]
    pub ssh_ciphers: Option<String>,
    /// recording.write_ahead_interval (for comparisons; "0s" turns the write-ahead log off).
    #[arg(long, hide = true)]
    pub write_ahead_interval: Option<String>,
    /// Run this many gateways (1 to 9) on one store, a PostgreSQL database on the demo server:
    /// gateway i listens on the usual ports + 10·(i−1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub cluster: u64,
}

/// `WIDTHxHEIGHT`, each side 64 to 8192 pixels (`--desktop-size`).
pub fn parse_size(s: &str) -> std::result::Result<(u16, u16), String> {
    let bad = || format!("'{s}' is not a desktop size: write WIDTHxHEIGHT, e.g. 1280x800");
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h): (u16, u16) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(64..=8192).contains(&w) || !(64..=8192).contains(&h) {
        return Err(format!("{w}x{h}: each side must be 64 to 8192 pixels"));
    }
    Ok((w, h))
}

fn home_public_keys() -> Vec<String> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    let ssh = Path::new(&home).join(".ssh");
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(ssh.join(f)).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| russh::keys::PublicKey::from_openssh(s).is_ok())
        .collect()
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The example policies from `fixtures/policies`, written to the dev data directory.
const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    (
        "sre.toml",
        include_str!("../../../fixtures/policies/sre.toml"),
    ),
    (
        "windows.toml",
        include_str!("../../../fixtures/policies/windows.toml"),
    ),
    (
        "contractors.toml",
        include_str!("../../../fixtures/policies/contractors.toml"),
    ),
    (
        "dba.toml",
        include_str!("../../../fixtures/policies/dba.toml"),
    ),
    (
        "prod.toml",
        include_str!("../../../fixtures/policies/prod.toml"),
    ),
    (
        "change.toml",
        include_str!("../../../fixtures/policies/change.toml"),
    ),
    (
        "tcp.toml",
        include_str!("../../../fixtures/policies/tcp.toml"),
    ),
    (
        "network.toml",
        include_str!("../../../fixtures/policies/network.toml"),
    ),
];

/// With `--no-recording` or `--reconnect`, one policy that wins over the examples (benchmarks).
/// `--no-recording` takes the whole tap away: no recording, and no live desktop for observers
/// (`shadow = "blocked"`).
fn bench_policy(opts: &DevOptions) -> Result<String> {
    if !opts.no_recording && opts.reconnect.is_none() {
        return Ok(String::new());
    }
    let mode = opts.reconnect.as_deref().unwrap_or("strict");
    if !["strict", "reauth", "resume"].contains(&mode) {
        anyhow::bail!("--reconnect '{mode}' must be strict, reauth or resume");
    }
    Ok(format!(
        "\n# From --no-recording / --reconnect: wins over the example policies.\n\
         [[policies]]\nname = \"dev-bench\"\npriority = 1000\ngroups = [\"sre\"]\n\
         recording = \"{}\"\nshadow = \"{}\"\nallow_port_forwarding = true\nreconnect = {{ mode = \"{mode}\" }}\n",
        if opts.no_recording { "off" } else { "required" },
        if opts.no_recording { "blocked" } else { "visible" },
    ))
}

/// The running dev instance's pid, in its data directory; removed when it stops.
const LOCK_FILE: &str = "dev.pid";

/// Removes the lock file when dev mode ends.
struct DevLock(PathBuf);

impl Drop for DevLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Before anything is touched: no other dev mode on this data directory, and every port free.
fn claim(dir: &Path, opts: &DevOptions) -> Result<DevLock> {
    let lock = dir.join(LOCK_FILE);
    let flags = "--data-dir DIR --ssh-port N --api-port N --pg-port N --rdp-port N --web-port N";
    if let Some(pid) = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id() && children::alive(pid))
    {
        anyhow::bail!(
            "dev mode is already running (pid {pid}) on {}; stop it (Ctrl-C there, or kill {pid}) \
             or start another one with its own {flags}",
            dir.display()
        );
    }
    let gateways = (0..opts.cluster as usize).flat_map(|i| {
        [
            ("--ssh-port", opts.ssh_port),
            ("--api-port", opts.api_port),
            ("--pg-port", opts.pg_port),
            ("--rdp-port", opts.rdp_port),
            ("--tcp-port", opts.tcp_port),
        ]
        .map(|(flag, port)| (flag, dev_cluster::shift(port, i)))
    });
    for (flag, port) in gateways.chain([("--web-port", Ok(opts.web_port))]) {
        let port = port?;
        if port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            anyhow::bail!(
                "port {port} on 127.0.0.1 is in use (dev mode's {flag}); is dev mode already \
                 running? Stop what uses it, or choose other ports: {flags}"
            );
        }
    }
    wardengate_gateway::util::write_private(&lock, format!("{}\n", std::process::id()).as_bytes())?;
    Ok(DevLock(lock))
}

pub async fn run(opts: DevOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    let dir = opts.data_dir.canonicalize()?;
    let _lock = claim(&dir, &opts)?;

    // The demo target's account key: generated once, stored in the vault, trusted by sshd.
    let target_key_path = dir.join("target/account_key");
    let target_key = if target_key_path.exists() {
        russh::keys::PrivateKey::from_openssh(std::fs::read_to_string(&target_key_path)?.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", target_key_path.display()))?
    } else {
        let k = keys::generate_ed25519("web-01.dev account key")?;
        keys::write_keypair(&target_key_path, &k)?;
        k
    };
    let sshd = tokio::task::spawn_blocking({
        let d = dir.join("target");
        let pubkey = keys::public_openssh(&target_key)?;
        move || sshd::Sshd::start(&d, 0, &[pubkey])
    })
    .await??;

    // alice's own key (what a user would have in ~/.ssh) and password; dan, the next on-call
    // engineer, has his own key; API tokens for both (the handoff demo).
    let alice_pub = user_key(&dir, "alice")?;
    let dan_pub = user_key(&dir, "dan")?;
    let alice_token = user_token(&dir, "alice")?;
    let dan_token = user_token(&dir, "dan")?;
    let password = kept_secret(&dir.join("alice.password"), 16)?;
    // The demo database: a real PostgreSQL cluster, its account's password only in the vault.
    let pg_dir = dir.join("postgres");
    std::fs::create_dir_all(&pg_dir)?;
    let ro_password = kept_secret(&pg_dir.join("billing_ro.password"), 24)?;
    // With --cluster, the gateways' store is a database of this server too, with a role of its own.
    let store_password = match opts.cluster {
        1 => None,
        _ => Some(kept_secret(&pg_dir.join("store.password"), 24)?),
    };
    let cluster = tokio::task::spawn_blocking({
        let (d, password) = (pg_dir.clone(), ro_password.clone());
        let store = store_password.clone();
        move || {
            let mut users = vec![postgres::PgUser::new(
                "billing_ro",
                &password,
                postgres::PgAuth::Scram,
            )];
            users.extend(
                store.map(|p| postgres::PgUser::new("wardengate", &p, postgres::PgAuth::Scram)),
            );
            postgres::PgCluster::start(
                &d,
                0,
                &postgres::PgOptions {
                    users,
                    tls: None,
                    database: "billing".into(),
                    // billing_ro only reads: the data belongs to a role nobody logs in as.
                    owner: Some("billing_owner".into()),
                },
            )
        }
    })
    .await??;
    // The demo Windows desktop: FreeRDP's shadow server on an Xvfb desktop, NLA with account
    // 'bob' whose password is only in the vault.
    let win_password = kept_secret(&dir.join("desktop.password"), 20)?;
    let desktop = tokio::task::spawn_blocking({
        let (d, password, size) = (dir.join("desktop"), win_password.clone(), opts.desktop_size);
        move || desktop::Desktop::start_sized(&d, 0, "bob", &password, size)
    })
    .await??;
    let redis = tokio::task::block_in_place(|| super::dev_tcp::start(&dir));
    let mut alice_keys = vec![alice_pub];
    alice_keys.extend(home_public_keys());
    let keys_toml = alice_keys
        .iter()
        .map(|k| toml_str(k))
        .collect::<Vec<_>>()
        .join(", ");
    let account = sshd.user.clone();
    let policy_dir = toml_str(&dir.join("policies").display().to_string());
    // With --cluster: recordings in a local S3-compatible object store (s3s-fs), shared by the
    // gateways as in a real cluster.
    let object_store = match &store_password {
        Some(_) => Some(tokio::task::block_in_place(|| {
            dev_cluster::object_store(&dir)
        })?),
        None => None,
    };
    let config_for = |name: &str, i: usize, tail: &str| -> Result<String> {
        Ok(format!(
            r#"# Written by `wardengate dev`; regenerated at every start.
[gateway]
name = "{name}"
data_dir = "."
# The example policies (fixtures/policies), copied here on first start: edit them, then
# `wgctl policy reload`.
policy_files = [{policy_dir}]

[ssh]
listen = "127.0.0.1:{ssh_port}"
auth_rejection_time = "200ms"
{ssh_extra}
[postgres]
listen = "127.0.0.1:{pg_port}"
auth_rejection_time = "200ms"

[rdp]
listen = "127.0.0.1:{rdp_port}"
auth_rejection_time = "200ms"

[api]
listen = "127.0.0.1:{api_port}"
# Plain HTTP on loopback only: browsers accept security keys on http://localhost, not on a
# self-signed certificate. Off loopback the API serves TLS (api_tls.crt, generated).
plain_http = true
{recording_extra}
[[users]]
name = "alice"
groups = ["sre", "dba"]
public_keys = [{keys_toml}]
password_hash = {hash}
scram_sha_256 = {scram}
nt_hash = "{nt_hash}"
api_token_sha256 = "{alice_token}"

[[users]]
name = "dan"
groups = ["sre"]
public_keys = [{dan_pub}]
api_token_sha256 = "{dan_token}"

# The on-call operator of the demo: signs in to the console (/console) with the demo
# password (and a security key once she enrols one).
[[users]]
name = "olga"
groups = ["soc"]
public_keys = []
password_hash = {hash}
operator = true

[[targets]]
name = "web-01.dev"
address = "{addr}"
tags = {{ env = "dev" }}
accounts = [{{ name = {account}, secret = "web-01.dev/{account_raw}" }}]

# The same host as a production one: policy sre-prod asks for a security key (step-up).
[[targets]]
name = "web-01-prod.dev"
address = "{addr}"
tags = {{ env = "dev", tier = "prod" }}
accounts = [{{ name = {account}, secret = "web-01.dev/{account_raw}" }}]

# The same host once more: policy sre-change holds each session for an approver (dan).
[[targets]]
name = "web-01-change.dev"
address = "{addr}"
tags = {{ env = "dev", change = "yes" }}
accounts = [{{ name = {account}, secret = "web-01.dev/{account_raw}" }}]

[[targets]]
name = "billing-ro.dev"
protocol = "postgres"
address = "{pg_addr}"
tags = {{ env = "dev", kind = "postgres" }}
accounts = [{{ name = "billing_ro", secret = "billing-ro.dev/billing_ro" }}]

[[targets]]
name = "win-dc01.dev"
protocol = "rdp"
address = "{desktop_addr}"
tags = {{ env = "dev", kind = "windows" }}
accounts = [{{ name = "bob", secret = "win-dc01.dev/bob" }}]

{tcp}{access}{bench_policy}{tail}"#,
            tcp = super::dev_tcp::config(redis.as_ref(), dev_cluster::shift(opts.tcp_port, i)?),
            access = super::dev_access::config(&dir),
            bench_policy = bench_policy(&opts)?,
            ssh_extra = opts
                .ssh_ciphers
                .as_deref()
                .map(|c| {
                    let list: Vec<String> = c.split(',').map(toml_str).collect();
                    format!("ciphers = [{}]\n", list.join(", "))
                })
                .unwrap_or_default(),
            recording_extra = dev_cluster::recording_section(
                opts.write_ahead_interval.as_deref().map(toml_str),
                object_store.as_ref(),
            ),
            ssh_port = dev_cluster::shift(opts.ssh_port, i)?,
            api_port = dev_cluster::shift(opts.api_port, i)?,
            pg_port = dev_cluster::shift(opts.pg_port, i)?,
            rdp_port = dev_cluster::shift(opts.rdp_port, i)?,
            pg_addr = cluster.address(),
            desktop_addr = desktop.address(),
            nt_hash = hex::encode(wardengate_gateway::passwords::nt_hash(&password)),
            hash = toml_str(&wardengate_gateway::passwords::hash(&password)?),
            scram = toml_str(&wardengate_protocols::postgres::Verifier::generate(
                &password
            )),
            addr = sshd.address(),
            account = toml_str(&account),
            account_raw = account,
            dan_pub = toml_str(&dan_pub),
        ))
    };
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    for (name, text) in EXAMPLE_POLICIES {
        let path = policies.join(name);
        if !path.exists() {
            std::fs::write(&path, text)?;
        }
    }
    let n = opts.cluster as usize;
    let tail = match &store_password {
        None => String::new(),
        Some(p) => tokio::task::block_in_place(|| dev_cluster::store_section(&cluster, p))?,
    };
    let mut cfgs = Vec::new();
    for i in 0..n {
        let (name, gw_dir) = dev_cluster::gateway(&dir, n, i);
        std::fs::create_dir_all(&gw_dir)?;
        if object_store.is_some() {
            dev_cluster::write_s3_secret(&gw_dir)?;
        }
        let config_path = gw_dir.join("wardengate.toml");
        // It holds the demo users' password hashes and NT hashes.
        wardengate_gateway::util::write_private(
            &config_path,
            config_for(&name, i, &tail)?.as_bytes(),
        )?;
        cfgs.push((name, gw_dir, config::load(&config_path)?));
    }
    let mut cfgs = cfgs.into_iter();
    let (_, _, cfg) = cfgs.next().context("a gateway")?;
    let others: Vec<_> = cfgs.collect();
    {
        let (store, vault) = wardengate_gateway::server::open_state(&cfg, true).await?;
        let dirs: Vec<PathBuf> = others.iter().map(|(_, d, _)| d.clone()).collect();
        if n > 1 {
            dev_cluster::share_keys(&cfg, &dirs)?;
        }
        let store = &*store;
        let demo_key = keys::private_openssh(&target_key)?;
        for (reference, kind, secret) in [
            (
                format!("web-01.dev/{account}"),
                SecretKind::PrivateKey,
                &demo_key,
            ),
            (
                "billing-ro.dev/billing_ro".into(),
                SecretKind::Password,
                &ro_password,
            ),
            (
                "win-dc01.dev/bob".into(),
                SecretKind::Password,
                &win_password,
            ),
        ] {
            vault.put(store, &reference, kind, secret).await?;
        }
        // A new sshd host key may have been generated: forget any stale pin from a previous run.
        let pinned = store.hostkey_get("web-01.dev", &sshd.address()).await?;
        if pinned.is_some_and(|(_, k)| {
            Some(k.trim().to_string()) != sshd.host_key_pub().ok().map(|p| p.trim().to_string())
        }) {
            store.hostkey_forget("web-01.dev").await?;
        }
    }
    let shutdown = CancellationToken::new();
    let web = status_page(opts.web_port, shutdown.clone()).await?;
    let d = dir.display().to_string();
    // wgctl is built next to wardengate; name it by path so the printed commands work as shown.
    let wgctl = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("wgctl")))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "wgctl".into());
    let mut peers = Vec::new();
    for (name, gw_dir, cfg) in others {
        let stop = shutdown.clone();
        peers.push(tokio::spawn(async move {
            let said = wardengate_gateway::server::run(cfg, stop, |l| {
                println!("{}", dev_cluster::ready_line(&name, &gw_dir, l));
            })
            .await;
            if let Err(e) = said {
                eprintln!("{name} stopped: {e:#}");
            }
        }));
    }
    let cluster_help = dev_cluster::help(n, &dir, &wgctl, opts.api_port, object_store.as_ref());
    wardengate_gateway::server::run(cfg, shutdown, |l| {
        println!(
            "\nWardengate dev mode is running (data in {d}).\n\n  \
             SSH gateway    {ssh}\n  PostgreSQL     127.0.0.1:{pgp}\n  RDP            127.0.0.1:{rdpp}\n  {tcp_line}REST API       http://{api}\n  \
             demo target    web-01.dev = OpenSSH sshd on {target}, account '{account}' (its key is only in the vault)\n  \
             demo target    billing-ro.dev = demo postgres on {pg_target}, account 'billing_ro' (its password is only in the vault)\n  \
             demo target    win-dc01.dev = FreeRDP shadow server on Xvfb display {display} at {desktop}, account 'bob' (password only in the vault)\n\n\
             Operator console: http://localhost:{api_port}/console (sign in as olga, password {password})\n\n\
             Connect as alice (key, or password {password}):\n    \
             ssh -i {d}/alice_ed25519 -p {sp} alice:web-01.dev@127.0.0.1\n\n\
             Copy files (scp, sftp and rsync read ':' as host:path, so use '#' to upload, and for\n  \
             a download give the login with -o User=, which scp does not parse):\n    \
             scp -i {d}/alice_ed25519 -P {sp} FILE 'alice#web-01.dev@127.0.0.1:/tmp/'\n    \
             scp -i {d}/alice_ed25519 -P {sp} -o User=alice:web-01.dev 127.0.0.1:/etc/hostname .\n\n\
             {forward}\
             Query the database as alice (same password; every statement is recorded):\n    \
             psql \"host=127.0.0.1 port={pgp} user=alice#billing-ro.dev dbname=billing\"\n\n\
             Open the Windows desktop as alice (same password; NLA; the gateway injects bob's;\n  \
             without a display of your own, under xvfb-run):\n    \
             xfreerdp /v:127.0.0.1:{rdpp} /u:alice:win-dc01.dev /p:{password} /cert:ignore\n\n\
             Step up with a security key (policy sre-prod asks for one on web-01-prod.dev): enrol\n  \
             a key or passkey with alice's own token, open the link, then ssh shows a link to touch it:\n    \
             WARDENGATE_ADDR=http://{api} WARDENGATE_TOKEN=$(cat {d}/alice.token) {wgctl} mfa enroll --name \"my key\"\n    \
             ssh -i {d}/alice_ed25519 -p {sp} alice:web-01-prod.dev@127.0.0.1\n\n\
             Ask for approval (policy sre-change holds web-01-change.dev for an approver, dan):\n    \
             ssh -i {d}/alice_ed25519 -p {sp} alice:web-01-change.dev@127.0.0.1    (waits; Ctrl-C withdraws)\n    \
             WARDENGATE_ADDR=http://{api} WARDENGATE_TOKEN=$(cat {d}/dan.token) {wgctl} approval list\n    \
             WARDENGATE_ADDR=http://{api} WARDENGATE_TOKEN=$(cat {d}/dan.token) {wgctl} approval approve REQ --reason \"change 42\"\n\n\
             {tcp_help}{access_help}\
             Operate (another terminal):\n    \
             export WARDENGATE_ADDR=http://{api} WARDENGATE_TOKEN=$(cat {d}/admin.token)\n    \
             {wgctl} session list\n    {wgctl} session terminate SESSION_ID --reason \"demo\"\n    \
             {wgctl} policy explain --actor alice --target web-01.dev\n    \
             {wgctl} recording play SESSION_ID    (a psql session plays as its query log)\n\n\
             Watch alice's session read-only, or hand it to dan (his token in {d}/dan.token):\n    \
             {wgctl} session shadow SESSION_ID\n    \
             {wgctl} session shadow SESSION_ID --browser    (the desktop: a link for your browser)\n    \
             {wgctl} recording export SESSION_ID --format png --at 1m --file at.png    (a desktop's recording)\n    \
             {wgctl} session handoff SESSION_ID --to dan --reason \"shift change\"\n    \
             WARDENGATE_TOKEN=$(cat {d}/dan.token) {wgctl} session accept SESSION_ID\n    \
             ssh -i {d}/dan_ed25519 -p {sp} dan:SESSION_ID@127.0.0.1\n\n\
             Policies: {d}/policies/*.toml (edit, then `{wgctl} policy reload`). Sessions resume:\n    \
             kill the ssh client, reconnect within 2m, and the same shell comes back.\n\n\
             {cluster_help}\
             Ctrl-C stops the gateway and the demo targets. The demo database is recreated at each start.\n",
            forward = match web {
                Some(w) => format!(
                    "Forward a port (the example policy lets alice reach the target and the demo status page):\n    \
                     ssh -i {d}/alice_ed25519 -p {sp} -N -L 8081:{w} alice:web-01.dev@127.0.0.1 &\n    \
                     curl http://127.0.0.1:8081/\n\n",
                    sp = l.ssh.port()
                ),
                None => String::new(),
            },
            ssh = l.ssh,
            api = l.api,
            api_port = l.api.port(),
            target = sshd.address(),
            sp = l.ssh.port(),
            pg_target = cluster.address(),
            pgp = l.postgres.map(|a| a.port()).unwrap_or(opts.pg_port),
            rdpp = l.rdp.map(|a| a.port()).unwrap_or(opts.rdp_port),
            desktop = desktop.address(),
            display = desktop.xvfb.name(),
            tcp_line = l.tcp.map(|a| format!("TCP (proxy)    {a}\n  ")).unwrap_or_default(),
            tcp_help = super::dev_tcp::help(redis.as_ref(), &d, &l.api.to_string(), &wgctl),
            access_help = super::dev_access::help(&dir, &d, &l.api.to_string(), &wgctl),
        );
    })
    .await?;
    // The other gateways stop on the same signal: let them finish before their targets go.
    for p in peers {
        let _ = p.await;
    }
    drop(sshd);
    drop(cluster);
    drop(desktop);
    drop(redis);
    Ok(())
}
