//! `wgctl`: the operator's command line, a client of the REST API only.
//!
//! Address and token come from `--addr`/`--token` or `WARDENGATE_ADDR`/`WARDENGATE_TOKEN`. Every
//! command takes `-o json`. Errors are one line on stderr and a non-zero exit.
#![forbid(unsafe_code)]

mod access;
mod audit;
mod bucket;
mod client;
mod console_session;
#[cfg(feature = "desktop")]
mod frames;
#[cfg(not(feature = "desktop"))]
#[path = "frames_absent.rs"]
mod frames;
mod login;
mod mfa;
mod output;
mod pin;
mod policy;
mod proxy;
mod recording;
mod session;
mod shadow;
mod tcp;
use wardengate_api::table;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use client::Client;

#[derive(Parser)]
#[command(name = "wgctl", version, about = "Operate a Wardengate gateway")]
struct Cli {
    /// Gateway API address (default: where `wgctl login` signed in, else
    /// http://127.0.0.1:8080).
    #[arg(long, global = true, env = "WARDENGATE_ADDR")]
    addr: Option<String>,
    /// Bearer token: the admin token, or your own API token (`users.api_token_sha256`).
    #[arg(long, global = true, env = "WARDENGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for an https gateway besides the system's: a gateway's
    /// self-signed `api_tls.crt`.
    #[arg(long, global = true, env = "WARDENGATE_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sessions: list, show, terminate, cancel, shadow, handoff, accept, decline.
    #[command(subcommand)]
    Session(session::SessionCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Session recordings: list, show, verify, play, export.
    #[command(subcommand)]
    Recording(recording::RecordingCmd),
    /// Policies: check files offline, list, explain a decision, reload.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Security keys: enrol, list, remove, prove presence before a connection.
    #[command(subcommand)]
    Mfa(mfa::MfaCmd),
    /// Sign in through the gateway's page (password and security key); the token is kept in
    /// ~/.config/wardengate/credentials (0600) for the next commands.
    Login,
    /// Revoke the kept sign-in and forget it.
    Logout,
    /// Approval requests: list, approve, deny, withdraw.
    #[command(subcommand)]
    Approval(mfa::ApprovalCmd),
    /// People: reset a person's security keys.
    #[command(subcommand)]
    User(mfa::UserCmd),
    /// The operator console's sign-in sessions: list, invalidate.
    #[command(subcommand)]
    ConsoleSession(console_session::ConsoleSessionCmd),
    /// Targets: authorize a TCP session (`protocol = "tcp"` targets).
    #[command(subcommand)]
    Target(tcp::TargetCmd),
    /// Carry local connections to an authorized TCP session (`--authz TOKEN`).
    Proxy(tcp::ProxyArgs),
    /// Network access sessions: allow your address on network resources for a while (start,
    /// list, show, stop).
    #[command(subcommand)]
    Access(access::AccessCmd),
    /// Authorize a TCP session, proxy it, and run a client against it until the client exits:
    /// `wgctl connect TARGET -- CLIENT ARGS` ({port}, {host}, {addr} are filled in), or
    /// `wgctl connect ssh|psql|redis|http TARGET`.
    Connect(tcp::ConnectArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // A reader that went away (`wgctl ... | head`) is not an error worth a message.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            std::process::exit(0);
        }
        output::note(&format!("wgctl: {e:#}"));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.output == Output::Json;
    // Offline commands (recording verify/play/export of a directory, policy check, audit verify
    // --file) work without a gateway: the client is optional for them.
    // A token given wins; else the kept sign-in (and its address, unless another is given).
    let kept = if cli.token.is_none() {
        login::load()
    } else {
        Ok(None)
    };
    let kept_ref = kept.as_ref().ok().and_then(Option::as_ref);
    let addr = cli
        .addr
        .clone()
        .or_else(|| kept_ref.map(|k| k.addr.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let ca = cli.ca_file.as_deref();
    match cli.cmd {
        Cmd::Login => return login::login(Client::anonymous(&addr, ca)?),
        Cmd::Logout => {
            let token = kept?.map(|k| k.token);
            return login::logout(Client::new(&addr, token.as_deref(), ca)?);
        }
        _ => {}
    }
    let token = match (&cli.token, kept) {
        (Some(t), _) => Some(t.clone()),
        (None, Ok(k)) => k.map(|k| k.token),
        (None, Err(e)) => return Err(e),
    };
    let c = Client::new(&addr, token.as_deref(), ca);
    match cli.cmd {
        Cmd::Recording(cmd) => recording::run(cmd, c, json),
        Cmd::Policy(cmd) => policy::run(cmd, c, json),
        Cmd::Audit(cmd) => audit::run(cmd, c, json),
        Cmd::Session(cmd) => session::run(cmd, c?, json),
        Cmd::Mfa(cmd) => mfa::run(cmd, c?, json),
        Cmd::User(cmd) => mfa::run_user(cmd, c?, json),
        Cmd::Approval(cmd) => mfa::run_approval(cmd, c?, json),
        Cmd::ConsoleSession(cmd) => console_session::run(cmd, c?, json),
        Cmd::Target(cmd) => tcp::run_target(cmd, c?, json),
        Cmd::Proxy(args) => tcp::run_proxy(args, c?, json),
        Cmd::Connect(args) => tcp::run_connect(args, c?),
        Cmd::Access(cmd) => access::run(cmd, c?, json),
        Cmd::Login | Cmd::Logout => Ok(()),
    }
}
