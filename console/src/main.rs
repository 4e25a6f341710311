//! `wgctl`: the operator's command line, a client of the REST API only.
//!
//! Address and token come from `--addr`/`--token` or `WARDENGATE_ADDR`/`WARDENGATE_TOKEN`. Every
//! command takes `-o json`. Errors are one line on stderr and a non-zero exit.

mod audit;
mod client;
mod frames;
mod policy;
mod recording;
mod shadow;
mod table;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use wardengate_api as api;

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
    Session(SessionCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Session recordings: list, show, verify, play, export.
    #[command(subcommand)]
    Recording(RecordingCmd),
    /// Policies: check files offline, list, explain a decision, reload.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
}

#[derive(Subcommand)]
enum RecordingCmd {
    /// Print the gateway's recording public key (hex), for offline verification.
    Pubkey,
    /// List recordings.
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        protocol: Option<String>,
        /// At most this many recordings, newest first (the rest are counted: "… N more").
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue a list that was cut, from where it stopped (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one recording: its seal and whether it verifies.
    Show { id: String },
    /// Verify a recording directory offline (or a session id through the gateway).
    Verify {
        /// Recording directory, or session id.
        what: String,
        /// Trusted public key: hex, or a file holding it (default: ask the gateway).
        #[arg(long)]
        pubkey: Option<String>,
    },
    /// Replay terminal output with real timing (a database session: its query log).
    Play {
        what: String,
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Cap every pause at this long (e.g. 2s).
        #[arg(long)]
        skip_idle: Option<String>,
        /// Start at this offset (HH:MM:SS).
        #[arg(long)]
        from: Option<String>,
        /// Play a desktop (RDP) recording in a browser: prints a one-time link (valid 60 s) to
        /// the gateway's player.
        #[arg(long)]
        browser: bool,
        /// A database session's query log with its timing (it prints at once by default).
        #[arg(long)]
        realtime: bool,
    },
    /// Export as asciicast v2, a text transcript (rendered by a terminal emulator), JSON lines,
    /// (database sessions) the query log as CSV, or (RDP sessions) the desktop as a PNG
    /// (`--format png --at 00:01:30`) or a directory of PNG frames (`--format frames DIR`).
    Export {
        what: String,
        /// frames: the directory to write the PNGs into.
        dir: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Asciicast)]
        format: ExportFormat,
        /// Write to this file instead of stdout.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// png: the moment to show (HH:MM:SS or 90s into the session; past the end: the last frame).
        #[arg(long)]
        at: Option<String>,
        /// frames: one frame per this much session time in which the desktop changed.
        #[arg(long, default_value = "1s")]
        every: String,
    },
}

/// What `wgctl recording export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    /// asciicast v2 (terminal sessions), for standard players
    Asciicast,
    /// a transcript: the terminal's screens, or a database session's query log
    Text,
    /// every event as a JSON line (any recording)
    Jsonl,
    /// the query log as CSV (database sessions)
    Csv,
    /// the desktop at --at as one PNG (RDP sessions)
    Png,
    /// a directory of PNG frames (RDP sessions)
    Frames,
}

impl ExportFormat {
    fn name(self) -> &'static str {
        match self {
            ExportFormat::Asciicast => "asciicast",
            ExportFormat::Text => "text",
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
            ExportFormat::Png => "png",
            ExportFormat::Frames => "frames",
        }
    }
}

#[derive(Subcommand)]
enum SessionCmd {
    /// List live sessions (all sessions with --all).
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        protocol: Option<String>,
        /// Only sessions in this state (implies --all).
        #[arg(long)]
        state: Option<String>,
        /// Only sessions idle longer than this (90s, 5m, 2h).
        #[arg(long)]
        idle_gt: Option<String>,
        /// Only sessions to targets with this tag (key=value).
        #[arg(long)]
        target_tag: Option<String>,
        /// Include ended sessions (closed, denied, failed).
        #[arg(long)]
        all: bool,
        /// Only sessions someone is shadowing now.
        #[arg(long)]
        shadowed: bool,
        /// At most this many sessions, newest first (the rest are counted: "… N more").
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue a list that was cut, from where it stopped (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one session.
    Show { id: String },
    /// Watch a live session read-only (Ctrl-] q detaches). A PostgreSQL session shows its
    /// query log as statements complete; a desktop (RDP) session is watched in a browser.
    Shadow {
        id: String,
        /// Watch a desktop (RDP) session in a browser: prints a one-time link (valid 60 s) to
        /// open.
        #[arg(long)]
        browser: bool,
    },
    /// Offer your session (or, as an operator, anyone's) to another user; they take it over
    /// with `wgctl session accept ID`, then `ssh USER:ID@gateway`.
    Handoff {
        id: String,
        /// The user who takes the session over.
        #[arg(long)]
        to: String,
        /// Why (shown to the owner, recorded in the audit log and the recording).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Accept a session handed off to you (then connect: ssh YOU:ID@gateway).
    Accept { id: String },
    /// Decline a handoff offered to you (or withdraw your own offer).
    Decline {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Terminate one session by id, or every live session matching selectors.
    Terminate {
        id: Option<String>,
        /// Why (shown to the user and recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        target_tag: Option<String>,
        #[arg(long)]
        protocol: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// List audit events, oldest first.
    List {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        session: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only events older than this sequence number (the page before; printed when cut).
        #[arg(long)]
        before: Option<i64>,
    },
    /// Export the whole audit log with its signed checkpoints (JSON lines), for safekeeping and
    /// offline verification.
    Export {
        /// Write to this file instead of stdout.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Verify the audit log: every hash and every signed checkpoint. With --file, an export
    /// offline (with --pubkey, the key from `wgctl recording pubkey`); without, the gateway's
    /// log through the API. Names the first bad event: edited, deleted, inserted, reordered,
    /// re-chained or truncated. Exits 1 when it does not verify.
    Verify {
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The gateway's public key (hex), or a file holding it.
        #[arg(long)]
        pubkey: Option<String>,
    },
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

/// `recording sealed (chunks=7, bytes=918644, sha256=3f0b...)`, when the session was recorded.
fn sealed_line(s: &api::Session) -> String {
    s.recording
        .as_ref()
        .map(|r| {
            format!(
                "recording sealed (chunks={}, bytes={}, sha256={})\n",
                r.chunks,
                r.raw_bytes,
                recording::short_hash(&r.final_sha256)
            )
        })
        .unwrap_or_default()
}

/// Write a report to stdout, returning errors (a closed pipe) instead of panicking like
/// `print!`. Every character a terminal would act on, but newline and tab, is shown as an escape:
/// what a report prints (names, reasons, statements) came from users and clients.
pub(crate) fn out(text: &str) -> Result<()> {
    let safe: String = text
        .split_inclusive('\n')
        .map(|line| {
            let (body, nl) = match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            };
            let body: String = body
                .split('\t')
                .map(|p| api::text::inert(p, usize::MAX).into_owned())
                .collect::<Vec<_>>()
                .join("\t");
            body + nl
        })
        .collect();
    out_raw(&safe)
}

/// Write data to stdout as it is (an export the user asked for).
pub(crate) fn out_raw(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    out(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.output == Output::Json;
    if let Cmd::Recording(cmd) = cli.cmd {
        // Offline commands must work without a gateway; the client is optional for them.
        let c = Client::new(&cli.addr, cli.token.as_deref());
        return run_recording(cmd, c, json);
    }
    if let Cmd::Policy(cmd) = cli.cmd {
        let c = Client::new(&cli.addr, cli.token.as_deref());
        return policy::run(cmd, c, json);
    }
    if let Cmd::Audit(cmd) = cli.cmd {
        let c = Client::new(&cli.addr, cli.token.as_deref());
        return run_audit(cmd, c, json);
    }
    let c = Client::new(&cli.addr, cli.token.as_deref())?;
    match cli.cmd {
        Cmd::Recording(_) | Cmd::Policy(_) | Cmd::Audit(_) => unreachable!("handled above"),
        Cmd::Session(SessionCmd::List {
            actor,
            target,
            protocol,
            state,
            idle_gt,
            target_tag,
            all,
            shadowed,
            limit,
            cursor,
        }) => {
            if let Some(d) = &idle_gt {
                humantime::parse_duration(d).map_err(|e| {
                    anyhow::anyhow!("--idle-gt '{d}' is not a duration like 90s, 5m or 2h: {e}")
                })?;
            }
            let all = all || state.is_some();
            let mut q = vec![];
            for (k, v) in [
                ("actor", actor),
                ("target", target),
                ("protocol", protocol),
                ("state", state),
                ("idle_gt", idle_gt),
                ("target_tag", target_tag),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            if shadowed {
                q.push(("shadowed", "true".into()));
            }
            if !all {
                q.push(("live", "true".into()));
            }
            q.push(("limit", limit.to_string()));
            if let Some(c) = cursor {
                q.push(("cursor", c));
            }
            let list: api::SessionList = c.get("/api/v1/sessions", &q)?;
            if json {
                print_json(&list)
            } else {
                let mut text = table::sessions(&list.sessions, all);
                let next = list.next_cursor.as_deref();
                text.push_str(&table::more(list.more, "session", next, "--cursor"));
                out(&text)
            }
        }
        Cmd::Session(SessionCmd::Show { id }) => {
            let s: api::Session = c.get(
                &format!("/api/v1/sessions/{}", client::path_segment(&id)),
                &[],
            )?;
            if json {
                print_json(&s)
            } else {
                out(&table::session(&s))
            }
        }
        Cmd::Session(SessionCmd::Shadow { id, browser: true }) => shadow::browser(&c, &id, json),
        Cmd::Session(SessionCmd::Shadow { id, browser: false }) => shadow::run(&c, &id),
        Cmd::Session(SessionCmd::Handoff { id, to, reason }) => {
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                bail!("--reason is required: say why the session changes hands (it is recorded)");
            };
            let h: api::Handoff = c.post(
                &format!("/api/v1/sessions/{}/handoff", client::path_segment(&id)),
                &api::HandoffRequest {
                    to,
                    reason: Some(reason),
                },
            )?;
            if json {
                print_json(&h)
            } else {
                out(&format!(
                    "offered {id} to {}; it changes hands when {} runs `wgctl session accept {id}` (before {})\n",
                    h.to, h.to, h.expires_at
                ))
            }
        }
        Cmd::Session(SessionCmd::Accept { id }) => {
            let s: api::Session = c.post(
                &format!("/api/v1/sessions/{}/accept", client::path_segment(&id)),
                &serde_json::json!({}),
            )?;
            if json {
                print_json(&s)
            } else {
                out(&format!(
                    "{} is yours now (policy {}); take it over with: ssh {}:{}@GATEWAY\n",
                    s.id,
                    s.policy.as_deref().unwrap_or("-"),
                    s.actor,
                    s.id
                ))
            }
        }
        Cmd::Session(SessionCmd::Decline { id, reason }) => {
            let h: api::Handoff = c.post(
                &format!("/api/v1/sessions/{}/decline", client::path_segment(&id)),
                &api::TerminateRequest { reason },
            )?;
            if json {
                print_json(&h)
            } else {
                out(&format!(
                    "declined the handoff of {id} to {}; nothing changed\n",
                    h.to
                ))
            }
        }
        Cmd::Session(SessionCmd::Terminate {
            id,
            reason,
            actor,
            target,
            target_tag,
            protocol,
        }) => {
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                bail!("--reason is required: say why the session is terminated (the user sees it)");
            };
            let selectors =
                actor.is_some() || target.is_some() || target_tag.is_some() || protocol.is_some();
            match (id, selectors) {
                (Some(id), false) => {
                    let s: api::Session = c.post(
                        &format!("/api/v1/sessions/{}/terminate", client::path_segment(&id)),
                        &api::TerminateRequest { reason: Some(reason) },
                    )?;
                    if json {
                        print_json(&s)
                    } else {
                        out(&format!("terminated {} ({} on {}): {}\n{}", s.id, s.actor, s.target, s.state.as_str(), sealed_line(&s)))
                    }
                }
                (None, true) => {
                    let r: api::TerminateResult = c.post(
                        "/api/v1/sessions/terminate",
                        &api::BulkTerminateRequest { reason: Some(reason), actor, target, target_tag, protocol },
                    )?;
                    if json {
                        print_json(&r)
                    } else {
                        let mut text = String::new();
                        for s in &r.terminated {
                            text.push_str(&format!("terminated {} ({} on {})\n", s.id, s.actor, s.target));
                        }
                        text.push_str(&format!("{} session(s) terminated\n", r.terminated.len()));
                        out(&text)
                    }
                }
                (Some(_), true) => bail!("give either a session id or selectors (--actor, --target, --target-tag, --protocol), not both"),
                (None, false) => bail!("give a session id, or selectors (--actor, --target, --target-tag, --protocol) for a bulk terminate"),
            }
        }
    }
}

/// `wgctl audit ...`; `verify --file` works offline, without a gateway or a token.
fn run_audit(cmd: AuditCmd, c: Result<Client>, json: bool) -> Result<()> {
    match cmd {
        AuditCmd::List {
            kind,
            session,
            limit,
            before,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(b) = before {
                q.push(("before", b.to_string()));
            }
            if let Some(k) = kind {
                q.push(("kind", k));
            }
            if let Some(s) = session {
                q.push(("session", s));
            }
            let list: api::AuditList = c?.get("/api/v1/audit", &q)?;
            if json {
                print_json(&list)
            } else {
                let mut text = table::audit(&list);
                let before = list.next_before.map(|b| b.to_string());
                text.push_str(&table::more(
                    list.older,
                    "older event",
                    before.as_deref(),
                    "--before",
                ));
                out(&text)
            }
        }
        AuditCmd::Export { file } => {
            let text = c?.get_text("/api/v1/audit/export")?;
            match file {
                Some(p) => {
                    std::fs::write(&p, &text)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
                    out(&format!(
                        "wrote {} lines to {}\n",
                        text.lines().count(),
                        p.display()
                    ))
                }
                None => out_raw(&text),
            }
        }
        AuditCmd::Verify { file, pubkey } => {
            let report = match file {
                Some(f) => audit::verify_file(&f, pubkey.as_deref())?,
                None => {
                    c?.get::<wardengate_recorder::audit::AuditReport>("/api/v1/audit/verify", &[])?
                }
            };
            if json {
                print_json(&report)?;
            } else {
                out(&format!("{}\n", report.message))?;
            }
            if !report.ok() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn run_recording(cmd: RecordingCmd, c: Result<Client>, json: bool) -> Result<()> {
    match cmd {
        RecordingCmd::Pubkey => {
            let k: api::PublicKey = c?.get("/api/v1/recordings/pubkey", &[])?;
            if json {
                print_json(&k)
            } else {
                out(&format!("{}\n", k.public_key))
            }
        }
        RecordingCmd::List {
            actor,
            target,
            protocol,
            limit,
            cursor,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("actor", actor),
                ("target", target),
                ("protocol", protocol),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let list: api::RecordingList = c?.get("/api/v1/recordings", &q)?;
            if json {
                print_json(&list)
            } else {
                let mut text = table::recordings(&list);
                let next = list.next_cursor.as_deref();
                text.push_str(&table::more(list.more, "recording", next, "--cursor"));
                out(&text)
            }
        }
        RecordingCmd::Show { id } => {
            let r: api::Recording = c?.get(
                &format!("/api/v1/recordings/{}", client::path_segment(&id)),
                &[],
            )?;
            if json {
                print_json(&r)
            } else {
                out(&table::recording(&r))
            }
        }
        RecordingCmd::Verify { what, pubkey } => {
            let client = c.ok();
            if recording::is_local(&what) {
                let key = recording::pubkey(pubkey.as_deref(), client.as_ref())?;
                return out(&recording::verify_local(std::path::Path::new(&what), &key)?);
            }
            let client = client.ok_or_else(|| {
                anyhow::anyhow!(
                    "'{what}' is not a recording directory; to verify by id, set WARDENGATE_TOKEN"
                )
            })?;
            let r: api::Recording = client.get(
                &format!("/api/v1/recordings/{}", client::path_segment(&what)),
                &[],
            )?;
            if r.verified == Some(true) {
                out(&format!("OK: {what} verified by the gateway\n"))
            } else {
                bail!(
                    "recording {what} FAILED verification:\n  - {}",
                    r.problems.join("\n  - ")
                )
            }
        }
        RecordingCmd::Play {
            what,
            speed,
            skip_idle,
            from,
            browser,
            realtime,
        } => {
            let from = from
                .map(|f| recording::parse_offset("--from", &f))
                .transpose()?
                .unwrap_or_default();
            if browser {
                if skip_idle.is_some() {
                    bail!("--skip-idle is for terminal playback; the browser player keeps the session's pace (use --speed)");
                }
                let c =
                    c.map_err(|e| anyhow::anyhow!("--browser plays through the gateway: {e}"))?;
                let link: api::ShadowLink = c.post(
                    &format!(
                        "/api/v1/recordings/{}/replay/browser",
                        client::path_segment(&what)
                    ),
                    &api::ReplayRequest {
                        speed: Some(speed),
                        from_ms: Some(from.as_millis() as u64),
                    },
                )?;
                return shadow::open_link(
                    &format!("[replay] play {what} in a browser"),
                    &link,
                    json,
                );
            }
            let skip = skip_idle
                .map(|s| {
                    humantime::parse_duration(&s)
                        .map_err(|e| anyhow::anyhow!("--skip-idle '{s}': {e}"))
                })
                .transpose()?;
            let client = c.ok();
            let (_, events) = recording::load(&what, client.as_ref())?;
            if recording::is_desktop(&events) {
                bail!(
                    "{what} is a desktop (RDP) recording: play it in a browser with `wgctl recording \
                     play {what} --browser`, or export pictures with `wgctl recording export {what} \
                     --format frames DIR`"
                );
            }
            recording::play(
                &events,
                speed,
                skip,
                from,
                realtime,
                &mut std::io::stdout().lock(),
            )
        }
        RecordingCmd::Export {
            what,
            dir,
            format,
            file,
            at,
            every,
        } => {
            let client = c.ok();
            let (seal, events) = recording::load(&what, client.as_ref())?;
            recording::check_format(&what, &events, format.name())?;
            if format == ExportFormat::Frames {
                let dir = dir.or(file).ok_or_else(|| {
                    anyhow::anyhow!("--format frames writes PNGs into a directory: wgctl recording export ID --format frames DIR")
                })?;
                let every = recording::parse_offset("--every", &every)?;
                let n = frames::frames(&events, &dir, every)?;
                return out(&format!("wrote {n} frame(s) to {}\n", dir.display()));
            }
            if let Some(d) = dir {
                bail!(
                    "unexpected argument '{}': only --format frames takes a directory",
                    d.display()
                );
            }
            if format == ExportFormat::Png {
                let at = at.ok_or_else(|| {
                    anyhow::anyhow!("--format png needs --at (HH:MM:SS into the session)")
                })?;
                let at = recording::parse_offset("--at", &at)?;
                let png = frames::png_at(&events, at)?;
                return match file {
                    Some(p) => std::fs::write(&p, png)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display())),
                    None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
                        bail!("a PNG is binary: give --file F.png or redirect the output")
                    }
                    None => std::io::Write::write_all(&mut std::io::stdout().lock(), &png)
                        .map_err(|e| anyhow::anyhow!("cannot write the PNG: {e}")),
                };
            }
            if at.is_some() {
                bail!("--at is for --format png");
            }
            let text = recording::export(seal, events, format.name())?;
            match file {
                Some(p) => std::fs::write(&p, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display())),
                None => out_raw(&text),
            }
        }
    }
}
