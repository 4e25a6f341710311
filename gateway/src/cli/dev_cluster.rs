//! `wardengate dev --cluster N`: N gateways in one process on one store, a PostgreSQL database
//! (`wardengate`) on the demo PostgreSQL server. Gateway 1 is the usual dev gateway (its data
//! directory is the dev directory, its ports the usual ones); gateway i listens on the usual
//! ports + 10·(i−1) with its data in `DIR/dev-gw-i`, and holds the same three keys as gateway 1
//! (what `wardengate cluster init` tells an operator to copy). Recordings go to a local
//! S3-compatible object store (s3s-fs, data in `DIR/s3`, bucket `recordings`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wardengate_dev::postgres::PgCluster;
use wardengate_dev::s3::S3;
use wardengate_gateway::config::Loaded;
use wardengate_gateway::server::Listening;

/// Gateway `i`'s (0-based) port for the usual `port` (0 stays 0: picked by the system).
pub fn shift(port: u16, i: usize) -> Result<u16> {
    if port == 0 {
        return Ok(0);
    }
    u16::try_from(usize::from(port) + 10 * i)
        .with_context(|| format!("port {port} + {} is not a port", 10 * i))
}

/// Gateway `i`'s name and data directory.
pub fn gateway(dir: &Path, n: usize, i: usize) -> (String, PathBuf) {
    match (n, i) {
        (1, _) => ("dev-gw".into(), dir.to_path_buf()),
        (_, 0) => ("dev-gw-1".into(), dir.to_path_buf()),
        _ => {
            let name = format!("dev-gw-{}", i + 1);
            let d = dir.join(&name);
            (name, d)
        }
    }
}

/// The store's database on the demo server (its role, `wardengate`, is one of the server's
/// users), and the config that points at it (`[store]`, `[cluster]`).
pub fn store_section(pg: &PgCluster, password: &str) -> Result<String> {
    pg.psql("postgres", "CREATE DATABASE wardengate OWNER wardengate;\n")
        .context("cannot create the cluster's store database on the demo PostgreSQL")?;
    Ok(format!(
        "\n# The cluster's store: every gateway of `wardengate dev --cluster` shares it.\n\
         [store]\nurl = \"postgres://wardengate:{password}@127.0.0.1:{}/wardengate\"\n\n\
         [cluster]\nlease_ttl = \"6s\"\n",
        pg.port
    ))
}

/// The dev cluster's object store: s3s-fs on a free loopback port, its data in `DIR/s3`.
pub fn object_store(dir: &Path) -> Result<S3> {
    S3::start(&dir.join("s3"), 0, BUCKET)
        .context("cannot start the dev cluster's object store (s3s-fs; scripts/dev installs it)")
}

/// The dev cluster's bucket.
const BUCKET: &str = "recordings";
/// The file, in each gateway's data directory, holding the object store's secret key.
const S3_SECRET: &str = "s3.secret";

/// Each gateway's copy of the object store's secret key (0600).
pub fn write_s3_secret(gw_dir: &Path) -> Result<()> {
    wardengate_gateway::util::write_private(
        &gw_dir.join(S3_SECRET),
        wardengate_dev::s3::SECRET_KEY.as_bytes(),
    )
}

/// The `[recording]` section of a dev gateway: the write-ahead interval given (TOML), and the
/// object store with --cluster.
pub fn recording_section(write_ahead: Option<String>, s3: Option<&S3>) -> String {
    let mut out = String::new();
    if let Some(s3) = s3 {
        out.push_str(&s3.recording_section(BUCKET, "dev", S3_SECRET));
    }
    if let Some(w) = write_ahead {
        if out.is_empty() {
            out.push_str("[recording]\n");
        }
        out.push_str(&format!("write_ahead_interval = {w}\n"));
    }
    if out.is_empty() {
        out
    } else {
        format!("\n{out}")
    }
}

/// Make gateway 1's cluster and signing keys (its vault key exists by now) and give all three
/// to the other gateways.
pub fn share_keys(first: &Loaded, others: &[PathBuf]) -> Result<()> {
    let c = &first.config;
    let files = [
        first.in_data_dir(&c.cluster.key_file),
        first.in_data_dir(&c.gateway.vault_key_file),
        first.in_data_dir(&c.recording.key_file),
    ];
    wardengate_gateway::cluster::sign::ClusterKey::create(&files[0])?;
    wardengate_gateway::recording::load_or_create_key(&files[2])?;
    for dir in others {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for f in &files {
            let name = f.file_name().context("a key file name")?;
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            wardengate_gateway::util::write_private(&dir.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// What a gateway other than the first prints when it is ready.
pub fn ready_line(name: &str, dir: &Path, l: &Listening) -> String {
    format!(
        "{name} is ready: SSH {}, PostgreSQL {}, RDP {}, API http://{} (admin token {}/admin.token)",
        l.ssh,
        l.postgres.map_or("-".into(), |a| a.to_string()),
        l.rdp.map_or("-".into(), |a| a.to_string()),
        l.api,
        dir.display()
    )
}

/// The cluster paragraph of the first gateway's welcome text (`api_port`: the first gateway's,
/// 0 when the system picks the ports).
pub fn help(n: usize, dir: &Path, wgctl: &str, api_port: u16, s3: Option<&S3>) -> String {
    if n == 1 {
        return String::new();
    }
    let d = dir.display();
    let second = match shift(api_port, 1) {
        Ok(p) if p != 0 => format!("http://127.0.0.1:{p}"),
        _ => "http://ITS_API (printed when it is ready)".into(),
    };
    format!(
        "A cluster of {n} gateways shares one store (database 'wardengate' on the demo PostgreSQL);\n  \
         gateway i listens on these ports + 10*(i-1), each prints a line when it is ready. Any of\n  \
         them lists every gateway's sessions (GW), and shows, watches or terminates a session\n  \
         another one runs:\n    \
         WARDENGATE_ADDR={second} WARDENGATE_TOKEN=$(cat {d}/dev-gw-2/admin.token) {wgctl} session list\n    \
         wardengate cluster -c {d}/wardengate.toml status\n  \
         Recordings go to an S3-compatible object store ({endpoint}, bucket '{BUCKET}', data in\n  \
         {d}/s3); read one straight from the bucket, with only the public key:\n    \
         AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY=$(cat {d}/{S3_SECRET}) \\\n      \
         {wgctl} recording verify s3://{BUCKET}/dev/SESSION_ID --pubkey $({wgctl} recording pubkey)\n\n",
        endpoint = s3.map_or("-".into(), |s| s.endpoint()),
        key = wardengate_dev::s3::ACCESS_KEY,
    )
}
