//! `wardengate`: the daemon's command line.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
mod dev;
mod dev_access;
mod dev_cluster;
mod dev_demo;
mod dev_tcp;

use wardengate_gateway::{config, passwords, server, vault::SecretKind};

#[derive(Parser)]
#[command(
    name = "wardengate",
    version,
    about = "Wardengate privileged-access gateway"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway with a config file.
    Run {
        #[arg(short, long, env = "WARDENGATE_CONFIG")]
        config: PathBuf,
        /// Start even when the config or a key file can be read by other users (warns loudly).
        #[arg(long, env = "WARDENGATE_ALLOW_INSECURE_PERMISSIONS")]
        allow_insecure_permissions: bool,
    },
    /// Zero-config dev mode: a gateway plus real demo targets (OpenSSH sshd, PostgreSQL, a
    /// Windows-style desktop over RDP); the demo database is recreated at each start.
    Dev(dev::DevOptions),
    /// Validate a config file and exit.
    CheckConfig {
        #[arg(short, long, env = "WARDENGATE_CONFIG")]
        config: PathBuf,
    },
    /// Manage target secrets in the vault.
    Vault {
        #[arg(short, long, env = "WARDENGATE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        cmd: VaultCmd,
    },
    /// Manage pinned target host keys.
    Hostkey {
        #[arg(short, long, env = "WARDENGATE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        cmd: HostkeyCmd,
    },
    /// Several gateways on one PostgreSQL store (`[store] url`).
    Cluster {
        #[arg(short, long, env = "WARDENGATE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Read a password on stdin and print the user lines for it: `password_hash` (argon2, for
    /// SSH and TLS logins), `scram_sha_256` (for PostgreSQL clients) and `nt_hash` (for RDP
    /// clients' NLA).
    HashPassword,
    /// Make a personal API token for a user: prints the token (give it to them, for
    /// `WARDENGATE_TOKEN`) and the `api_token_sha256` line for their `[[users]]` entry.
    NewToken,
}

#[derive(Subcommand)]
enum VaultCmd {
    /// Store a secret: a private key from a file, or a password from stdin.
    Set {
        /// The reference accounts use in `secret = "..."`.
        reference: String,
        #[arg(long, conflicts_with = "password_stdin")]
        private_key_file: Option<PathBuf>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List references (never values).
    List,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Bring the shared store's schema up to date and write the cluster key (`[cluster]
    /// key_file`, 0600) unless it exists: copy that file to every gateway of the cluster.
    Init,
    /// The gateways the shared store knows: state, API address, last heartbeat.
    Status,
}

#[derive(Subcommand)]
enum HostkeyCmd {
    /// Forget the pinned host key of a target (after an intended re-key).
    Forget { target: String },
}

fn read_stdin_line() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read stdin")?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        bail!("nothing on stdin");
    }
    Ok(s)
}

fn main() {
    let cli = Cli::parse();
    wardengate_gateway::logging::init();
    if let Err(e) = real_main(cli) {
        eprintln!("wardengate: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    // Each session holds two sockets; the usual soft limit of 1024 files caps a gateway near 500
    // sessions, so raise it to the hard limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    // Everything the gateway writes (store, keys, recordings, dev mode's demo files) is its
    // owner's only.
    wardengate_gateway::perms::restrict_umask();
    match cli.cmd {
        Cmd::Run {
            config,
            allow_insecure_permissions,
        } => {
            let cfg = config::load(&config)?;
            // The data directory is ours: `run` makes it and everything in it private (and says
            // so), so only what the operator placed elsewhere can fail the check.
            let mut secrets = vec![config.clone()];
            secrets.extend(
                cfg.key_files()
                    .into_iter()
                    .filter(|f| !f.starts_with(&cfg.data_dir)),
            );
            wardengate_gateway::perms::check_private(&secrets, allow_insecure_permissions)?;
            let scheme = cfg.config.api.scheme();
            runtime()?.block_on(server::run(cfg, CancellationToken::new(), |l| {
                let pg = l
                    .postgres
                    .map(|a| format!(" postgres={a}"))
                    .unwrap_or_default();
                let rdp = l.rdp.map(|a| format!(" rdp={a}")).unwrap_or_default();
                let tcp = l.tcp.map(|a| format!(" tcp={a}")).unwrap_or_default();
                println!(
                    "wardengate ready: ssh={}{pg}{rdp}{tcp} api={scheme}://{}",
                    l.ssh, l.api
                );
            }))
        }
        Cmd::Dev(options) => runtime()?.block_on(dev::run(options)),
        Cmd::CheckConfig { config } => {
            let cfg = config::load(&config)?;
            println!(
                "{}: ok ({} users, {} targets, {} policies)",
                config.display(),
                cfg.users.len(),
                cfg.targets.len(),
                cfg.policies.len()
            );
            for e in &cfg.policies {
                println!("  policy {} ({})", e.policy.name, e.source);
            }
            Ok(())
        }
        Cmd::Vault { config, cmd } => {
            let cfg = config::load(&config)?;
            block_on(async move {
                let (store, vault) = server::open_state(&cfg, true).await?;
                match cmd {
                    VaultCmd::Set {
                        reference,
                        private_key_file,
                        password_stdin,
                    } => {
                        let (kind, value) = match (private_key_file, password_stdin) {
                            (Some(f), false) => (
                                SecretKind::PrivateKey,
                                std::fs::read_to_string(&f)
                                    .with_context(|| format!("cannot read {}", f.display()))?,
                            ),
                            (None, true) => (SecretKind::Password, read_stdin_line()?),
                            _ => bail!("give --private-key-file FILE or --password-stdin"),
                        };
                        vault.put(&*store, &reference, kind, &value).await?;
                        println!("stored {} secret '{reference}'", kind.as_str());
                    }
                    VaultCmd::List => {
                        for (r, kind, ms) in store.vault_list().await? {
                            println!("{r}\t{kind}\t{}", wardengate_gateway::util::rfc3339(ms));
                        }
                    }
                }
                store.flush().await
            })
        }
        Cmd::Hostkey { config, cmd } => {
            let cfg = config::load(&config)?;
            block_on(async move {
                let (store, _) = server::open_state(&cfg, true).await?;
                match cmd {
                    HostkeyCmd::Forget { target } => {
                        let n = store.hostkey_forget(&target).await?;
                        println!("forgot {n} pinned host key(s) of {target}; the next connection pins the key it sees");
                    }
                }
                Ok(())
            })
        }
        Cmd::Cluster { config, cmd } => {
            let cfg = config::load(&config)?;
            block_on(async move {
                let (store, _) = server::open_state(&cfg, true).await?;
                if !store.shared() {
                    anyhow::bail!(
                        "{} has no [store] url: a cluster needs a PostgreSQL store that every gateway shares",
                        config.display()
                    );
                }
                match cmd {
                    ClusterCmd::Init => {
                        let path = cfg.in_data_dir(&cfg.config.cluster.key_file);
                        let made = wardengate_gateway::cluster::sign::ClusterKey::create(&path)?;
                        // One signing key for the cluster: every gateway's recordings and audit
                        // checkpoints verify with one public key.
                        let signing = cfg.in_data_dir(&cfg.config.recording.key_file);
                        wardengate_gateway::recording::load_or_create_key(&signing)?;
                        let vault = cfg.in_data_dir(&cfg.config.gateway.vault_key_file);
                        println!("the store's schema is up to date");
                        println!(
                            "{} the cluster key {}",
                            if made { "wrote" } else { "kept" },
                            path.display()
                        );
                        println!(
                            "copy these three files (0600) into every gateway's data directory before it starts:\n  {}  (signs gateway-to-gateway requests)\n  {}  (the vault's key: every gateway reads the same secrets)\n  {}  (signs recordings and audit checkpoints: one public key for the cluster)",
                            path.display(),
                            vault.display(),
                            signing.display()
                        );
                    }
                    ClusterCmd::Status => {
                        let now = wardengate_protocols::session::now_ms();
                        println!("{:<16} {:<6} {:<32} HEARTBEAT", "GATEWAY", "STATE", "API");
                        for g in store.gateways().await? {
                            let age = now.saturating_sub(g.heartbeat_ms) as f64 / 1000.0;
                            println!(
                                "{:<16} {:<6} {:<32} {age:.1}s ago",
                                g.name, g.state, g.api_url
                            );
                        }
                    }
                }
                store.flush().await
            })
        }
        Cmd::NewToken => {
            use sha2::Digest;
            let token = wardengate_gateway::util::new_token()?;
            let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
            print_lines(&format!("token = {token}\napi_token_sha256 = \"{hash}\"\n"))
        }
        Cmd::HashPassword => {
            let password = read_stdin_line()?;
            print_lines(&format!(
                "password_hash = \"{}\"\nscram_sha_256 = \"{}\"\nnt_hash = \"{}\"\n",
                passwords::hash(&password)?,
                wardengate_protocols::postgres::Verifier::generate(&password),
                hex::encode(passwords::nt_hash(&password))
            ))
        }
    }
}

/// Lines for a script to read, in one write; a reader that stopped early (`| head -1`) is not
/// an error (println! would panic on the closed pipe).
fn print_lines(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Run one store call from a subcommand (the store answers from a thread of its own).
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?
        .block_on(f)
}
