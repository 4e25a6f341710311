//! `wardengate`: the daemon's command line.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
mod dev;

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
                println!(
                    "wardengate ready: ssh={}{pg}{rdp} api={scheme}://{}",
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
            let (store, vault) = server::open_state(&cfg, true)?;
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
                    block_on(vault.put(&*store, &reference, kind, &value))?;
                    println!("stored {} secret '{reference}'", kind.as_str());
                }
                VaultCmd::List => {
                    for (r, kind, ms) in block_on(store.vault_list())? {
                        println!("{r}\t{kind}\t{}", wardengate_gateway::util::rfc3339(ms));
                    }
                }
            }
            Ok(())
        }
        Cmd::Hostkey { config, cmd } => {
            let cfg = config::load(&config)?;
            let (store, _) = server::open_state(&cfg, true)?;
            match cmd {
                HostkeyCmd::Forget { target } => {
                    let n = block_on(store.hostkey_forget(&target))?;
                    println!("forgot {n} pinned host key(s) of {target}; the next connection pins the key it sees");
                }
            }
            Ok(())
        }
        Cmd::NewToken => {
            use sha2::Digest;
            let token = wardengate_gateway::util::new_token()?;
            println!("token = {token}");
            println!(
                "api_token_sha256 = \"{}\"",
                hex::encode(sha2::Sha256::digest(token.as_bytes()))
            );
            Ok(())
        }
        Cmd::HashPassword => {
            let password = read_stdin_line()?;
            println!("password_hash = \"{}\"", passwords::hash(&password)?);
            println!(
                "scram_sha_256 = \"{}\"",
                wardengate_protocols::postgres::Verifier::generate(&password)
            );
            println!(
                "nt_hash = \"{}\"",
                hex::encode(passwords::nt_hash(&password))
            );
            Ok(())
        }
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
        .build()
        .context("cannot start a runtime")?
        .block_on(f)
}
