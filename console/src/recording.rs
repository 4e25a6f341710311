//! `wgctl recording`: list and show through the API; verify, play and export either through the
//! API (by session id) or offline on a recording directory (an auditor's copy).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Subcommand, ValueEnum};
use wardengate_api as api;
use wardengate_recorder::{self as rec, Event, EventKind};

use crate::client::{self, path_segment, Client, ListFilter};
use crate::output::{out, out_raw, print_json, report};
use crate::{frames, shadow, table};

/// A recording directory on this machine, or a session id to fetch through the API.
pub fn is_local(what: &str) -> bool {
    Path::new(what).join("seal.json").exists() || Path::new(what).join("recording.json").exists()
}

/// The trusted public key: `--pubkey` (hex or a file holding hex), else the gateway's.
pub fn pubkey(flag: Option<&str>, client: Option<&Client>) -> Result<rec::VerifyingKey> {
    let text = match flag {
        Some(v) if Path::new(v).is_file() => {
            std::fs::read_to_string(v).with_context(|| format!("cannot read {v}"))?
        }
        Some(v) => v.to_string(),
        None => {
            let c = client.ok_or_else(|| anyhow!("give --pubkey (hex, or a file from `wgctl recording pubkey`) to verify offline"))?;
            c.get::<api::PublicKey>("/api/v1/recordings/pubkey", &[])?
                .public_key
        }
    };
    rec::parse_public_key(&text).map_err(|e| anyhow!("--pubkey: {e}"))
}

pub fn verify_local(dir: &Path, key: &rec::VerifyingKey) -> Result<String> {
    let report = rec::verify(dir, Some(key)).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    if !report.ok() {
        let mut msg = format!("recording {} FAILED verification:", dir.display());
        for p in &report.problems {
            msg.push_str(&format!("\n  - {p}"));
        }
        bail!(msg);
    }
    let s = report.seal.ok_or_else(|| anyhow!("no seal"))?;
    Ok(format!(
        "OK: {} ({}, chunks={}, events={}, bytes={}, sha256={})\n",
        s.session_id,
        s.status.as_str(),
        s.chunks,
        s.events,
        s.raw_bytes,
        short_hash(&s.final_sha256)
    ))
}

pub fn short_hash(h: &str) -> String {
    if h.len() > 12 {
        format!("{}...", &h[..12])
    } else {
        h.to_string()
    }
}

/// Events from a local directory or from the API's event stream.
pub fn load(what: &str, client: Option<&Client>) -> Result<(Option<rec::Seal>, Vec<Event>)> {
    if is_local(what) {
        let r = rec::read(Path::new(what)).map_err(|e| anyhow!("{what}: {e}"))?;
        return Ok((r.seal, r.events));
    }
    let c = client.ok_or_else(|| {
        anyhow!("'{what}' is not a recording directory; to fetch it by id, set WARDENGATE_TOKEN")
    })?;
    // One request (one `recording.accessed` in the audit): the seal comes as a header.
    let (text, seal) = c.get_text_and_header(
        &format!("/api/v1/recordings/{}/events", path_segment(what)),
        "x-wardengate-seal",
    )?;
    let mut events = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("event {i}"))?;
        events.push(
            event_from_json(&v).ok_or_else(|| anyhow!("event {i} is not understood: {line}"))?,
        );
    }
    let seal = seal.and_then(|s| serde_json::from_str(&s).ok());
    Ok((seal, events))
}

fn event_from_json(v: &serde_json::Value) -> Option<Event> {
    let t_us = (v["t"].as_f64()? * 1e6).round() as u64;
    let data = || {
        v["data_hex"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .map(Bytes::from)
    };
    let channel = v["channel"].as_u64().unwrap_or(0) as u32;
    let kind = match v["type"].as_str()? {
        "input" => EventKind::Input {
            channel,
            data: data()?,
        },
        "output" => EventKind::Output {
            channel,
            data: data()?,
            stderr: v["stderr"].as_bool().unwrap_or(false),
        },
        "resize" => EventKind::Resize {
            channel,
            cols: v["cols"].as_u64()? as u32,
            rows: v["rows"].as_u64()? as u32,
        },
        "marker" => EventKind::Marker {
            kind: v["kind"].as_str()?.into(),
            detail: v["detail"].as_str()?.into(),
        },
        "query" => EventKind::Query(Box::new(serde_json::from_value(v.clone()).ok()?)),
        "stream" => EventKind::Stream {
            conn: v["connection"].as_u64()? as u32,
            from_client: v["from"].as_str()? == "client",
            data: data()?,
        },
        _ => return None,
    };
    Some(Event { t_us, kind })
}

/// A duration flag, in the notation of the configuration and policies (`90s`, `5m`, `2h`).
pub fn duration(flag: &str, s: &str) -> Result<Duration> {
    wardengate_policy::duration::parse(s).map_err(|e| anyhow!("{flag}: {e}"))
}

/// `HH:MM:SS`, `MM:SS`, or a duration like `90s`.
pub fn parse_offset(flag: &str, s: &str) -> Result<Duration> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() > 1 {
        let mut secs = 0u64;
        for p in &parts {
            secs = secs * 60
                + p.parse::<u64>()
                    .map_err(|_| anyhow!("{flag} '{s}': expected HH:MM:SS"))?;
        }
        return Ok(Duration::from_secs(secs));
    }
    duration(flag, s)
}

/// A desktop (RDP) session's recording: its start marker says so.
pub fn is_desktop(events: &[Event]) -> bool {
    kind(events) == Kind::Desktop
}

/// What a recording holds, for the formats that fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Terminal,
    Database,
    Desktop,
    /// A brokered TCP session's byte streams (or, `recording = "metadata"`, its connections).
    Stream,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Terminal => "a terminal (SSH) recording",
            Kind::Database => "a database (PostgreSQL) recording",
            Kind::Desktop => "a desktop (RDP) recording",
            Kind::Stream => "a TCP session's recording",
        }
    }

    /// The export formats that show this kind of recording.
    pub fn formats(self) -> &'static [&'static str] {
        match self {
            Kind::Terminal => &["asciicast", "text", "jsonl"],
            Kind::Database => &["csv", "text", "jsonl"],
            Kind::Desktop => &["png", "frames", "jsonl"],
            Kind::Stream => &["text", "jsonl"],
        }
    }
}

/// The kind of a recording, from its start marker (or its query events).
pub fn kind(events: &[Event]) -> Kind {
    for e in events.iter().take(16) {
        if let EventKind::Marker { kind, detail } = &e.kind {
            if kind == "startup" && detail.starts_with("protocol=rdp") {
                return Kind::Desktop;
            }
            if kind == "startup" && detail.starts_with("database=") {
                return Kind::Database;
            }
            if kind == "connection" {
                return Kind::Stream;
            }
        }
    }
    if rec::is_stream_events(events) {
        return Kind::Stream;
    }
    if events.iter().any(|e| matches!(e.kind, EventKind::Query(_))) {
        Kind::Database
    } else {
        Kind::Terminal
    }
}

/// Refuse a format that shows nothing of this recording, naming the ones that fit.
pub fn check_format(what: &str, events: &[Event], format: &str) -> Result<()> {
    let k = kind(events);
    if k.formats().contains(&format) {
        return Ok(());
    }
    bail!(
        "{what} is {}: --format {format} shows nothing of it; use {}",
        k.name(),
        k.formats().join(", ")
    )
}

/// Replay terminal output with its timing. `speed` scales time; `skip_idle` caps every pause;
/// output before `from` is written at once (so the screen is right when playback starts).
/// A database session plays as its query log: at once, or with its timing when `realtime`.
pub fn play(
    events: &[Event],
    speed: f64,
    skip_idle: Option<Duration>,
    from: Duration,
    realtime: bool,
    out: &mut impl Write,
) -> Result<()> {
    if speed <= 0.0 {
        bail!("--speed must be positive");
    }
    let kind = kind(events);
    let queries = matches!(kind, Kind::Database | Kind::Stream);
    // A log is read, not watched: it prints at once unless the pace is asked for.
    let from = if queries && !realtime {
        Duration::MAX
    } else {
        from
    };
    let from_us = u64::try_from(from.as_micros()).unwrap_or(u64::MAX);
    let mut last = from_us;
    for ev in events {
        let line;
        let data: &[u8] = match &ev.kind {
            EventKind::Output { data, .. } if !queries => data,
            EventKind::Stream { .. } => {
                line = rec::stream_line(ev).unwrap_or_default();
                line.as_bytes()
            }
            EventKind::Marker { .. } if kind == Kind::Stream => {
                line = rec::stream_line(ev).unwrap_or_default();
                line.as_bytes()
            }
            EventKind::Query(q) => {
                line = q.line(ev.t_us) + "\n";
                line.as_bytes()
            }
            EventKind::Marker { kind, detail } if queries => {
                line = format!("-- {kind}: {detail}\n");
                line.as_bytes()
            }
            _ => continue,
        };
        if ev.t_us > last {
            let mut gap = Duration::from_micros(ev.t_us - last);
            if let Some(cap) = skip_idle {
                gap = gap.min(cap);
            }
            out.flush()?;
            std::thread::sleep(gap.div_f64(speed));
            last = ev.t_us;
        }
        out.write_all(data)?;
    }
    out.flush()?;
    Ok(())
}

pub fn export(seal: Option<rec::Seal>, events: Vec<Event>, format: &str) -> Result<String> {
    match format {
        "jsonl" => Ok(events
            .iter()
            .map(|e| rec::event_json(e).to_string() + "\n")
            .collect()),
        "csv" => {
            let mut out = String::from(rec::CSV_HEADER);
            out.push('\n');
            for e in &events {
                if let EventKind::Query(q) = &e.kind {
                    out.push_str(&rec::csv_row(e.t_us, q));
                    out.push('\n');
                }
            }
            Ok(out)
        }
        // A database session's transcript is its query log, as `play` prints it.
        "text" if matches!(kind(&events), Kind::Database | Kind::Stream) => {
            let mut out = Vec::new();
            play(&events, 1.0, None, Duration::ZERO, false, &mut out)?;
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        "asciicast" | "text" => {
            let r = rec::Recording {
                dir: Default::default(),
                seal,
                chunks: Vec::new(),
                events,
            };
            Ok(if format == "text" {
                rec::text(&r)
            } else {
                rec::asciicast(&r)
            })
        }
        other => {
            bail!("unknown export format '{other}' (asciicast, text, jsonl, csv, png, frames)")
        }
    }
}

#[derive(Subcommand)]
pub enum RecordingCmd {
    /// Print the gateway's recording public key (hex), for offline verification.
    Pubkey,
    /// List recordings.
    List {
        #[command(flatten)]
        filter: ListFilter,
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
pub enum ExportFormat {
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

pub fn run(mut cmd: RecordingCmd, c: Result<Client>, json: bool) -> Result<()> {
    // A bucket URL becomes a local copy for the whole command.
    let mut _fetched = None;
    if let RecordingCmd::Verify { what, .. }
    | RecordingCmd::Play { what, .. }
    | RecordingCmd::Export { what, .. } = &mut cmd
    {
        if what.starts_with("s3://") {
            let tmp = crate::bucket::fetch(what)?;
            let local = tmp.path().display().to_string();
            _fetched = Some((std::mem::replace(what, local.clone()), local, tmp));
        }
    }
    // Messages name the bucket URL, not the temporary copy.
    let named = |e: anyhow::Error| match &_fetched {
        Some((url, local, _)) => anyhow!(format!("{e:#}").replace(local.as_str(), url)),
        None => e,
    };
    match cmd {
        RecordingCmd::Pubkey => {
            let k: api::PublicKey = c?.get("/api/v1/recordings/pubkey", &[])?;
            if json {
                print_json(&k)
            } else {
                out(&format!("{}\n", k.public_key))
            }
        }
        RecordingCmd::List { filter } => {
            let q = filter.query(vec![]);
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
            report(&r, json, table::recording)
        }
        RecordingCmd::Verify { what, pubkey } => {
            let client = c.ok();
            if is_local(&what) {
                let key = self::pubkey(pubkey.as_deref(), client.as_ref())?;
                return out(&verify_local(std::path::Path::new(&what), &key).map_err(named)?);
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
                .map(|f| parse_offset("--from", &f))
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
            let skip = skip_idle.map(|s| duration("--skip-idle", &s)).transpose()?;
            let client = c.ok();
            let (_, events) = load(&what, client.as_ref())?;
            if is_desktop(&events) {
                bail!(
                    "{what} is a desktop (RDP) recording: play it in a browser with `wgctl recording \
                     play {what} --browser`, or export pictures with `wgctl recording export {what} \
                     --format frames DIR`"
                );
            }
            play(
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
            let (seal, events) = load(&what, client.as_ref())?;
            check_format(&what, &events, format.name())?;
            if format == ExportFormat::Frames {
                let dir = dir.or(file).ok_or_else(|| {
                    anyhow::anyhow!("--format frames writes PNGs into a directory: wgctl recording export ID --format frames DIR")
                })?;
                let every = parse_offset("--every", &every)?;
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
                let at = parse_offset("--at", &at)?;
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
            let text = export(seal, events, format.name())?;
            match file {
                Some(p) => std::fs::write(&p, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display())),
                None => out_raw(&text),
            }
        }
    }
}
