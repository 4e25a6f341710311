//! `wgctl`: the operator's command line, a client of the REST API only.
//!
//! Address and token come from `--addr`/`--token` or `WARDENGATE_ADDR`/`WARDENGATE_TOKEN`. Every
//! command takes `-o json`. Errors are one line on stderr and a non-zero exit.
#![forbid(unsafe_code)]

mod audit;
mod client;
#[cfg(feature = "desktop")]
mod frames;
#[cfg(not(feature = "desktop"))]
#[path = "frames_absent.rs"]
mod frames;
mod mfa;
mod output;
mod policy;
mod recording;
mod session;
mod shadow;
mod table;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use client::Client;

#[derive(Parser)]
#[command(name = "wgctl", version, about = "Operate a Wardengate gateway")]
struct Cli {
    /// Gateway API address.
    #[arg(
        long,
        global = true,
        env = "WARDENGATE_ADDR",
        default_value = "http://127.0.0.1:8080"
    )]
    addr: String,
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
    /// Sessions: list, show, terminate, shadow, handoff, accept, decline.
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
    /// Approval requests: list, approve, deny, withdraw.
    #[command(subcommand)]
    Approval(mfa::ApprovalCmd),
    /// People: reset a person's security keys.
    #[command(subcommand)]
    User(mfa::UserCmd),
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
        eprintln!("wgctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.output == Output::Json;
    // Offline commands (recording verify/play/export of a directory, policy check, audit verify
    // --file) work without a gateway: the client is optional for them.
    let c = Client::new(&cli.addr, cli.token.as_deref(), cli.ca_file.as_deref());
    match cli.cmd {
        Cmd::Recording(cmd) => recording::run(cmd, c, json),
        Cmd::Policy(cmd) => policy::run(cmd, c, json),
        Cmd::Audit(cmd) => audit::run(cmd, c, json),
        Cmd::Session(cmd) => session::run(cmd, c?, json),
        Cmd::Mfa(cmd) => mfa::run(cmd, c?, json),
        Cmd::User(cmd) => mfa::run_user(cmd, c?, json),
        Cmd::Approval(cmd) => mfa::run_approval(cmd, c?, json),
    }
}
