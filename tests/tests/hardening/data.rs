//! What is kept: files with secrets, recordings through a crash, the target account's secret,
//! the audit trail.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wardengate_tests::pg::pg_standard;
use wardengate_tests::*;

use super::T;

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

/// Everything under `dir` that other users could read.
fn open_to_others(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if mode(&d) & 0o077 != 0 {
            out.push(format!("{} {:o}", d.display(), mode(&d)));
        }
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() && mode(&p) & 0o077 != 0 {
                out.push(format!("{} {:o}", p.display(), mode(&p)));
            }
        }
    }
    out
}

/// The data directory and every file in it are the owner's only; a config other users can read
/// stops the gateway from starting, unless the operator says otherwise.
#[test]
fn secrets_are_private_files() {
    let (env, _sshd, mut gw) = standard();
    let out = run(gw.ssh(&env, "alice:web-01.test").arg("echo recorded"), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    gw.wait_sealed(gw.last_closed()["id"].as_str().expect("id"));
    let loose = open_to_others(&gw.data);
    assert!(loose.is_empty(), "open to other users: {loose:#?}");
    assert_eq!(mode(&gw.data), 0o700);
    gw.stop();

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gw.config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = run(
        Command::new(bin("wardengate"))
            .args(["run", "--config"])
            .arg(&gw.config),
        T,
    );
    assert!(
        !out.status.success(),
        "started with a world-readable config"
    );
    assert_stderr_has(&out, "other users can read it");
    assert_stderr_has(&out, "chmod go=");
    // With the flag it starts, and says so loudly.
    let mut child = Command::new(bin("wardengate"))
        .args(["run", "--allow-insecure-permissions", "--config"])
        .arg(&gw.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(line.starts_with("wardengate ready:"), "{line}");
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    assert_stderr_has(&out, "INSECURE");
}

/// `kill -9` a moment after a session printed 283 lines: what the user saw is in the recording
/// (the write-ahead log made it the last chunk), which is sealed `truncated` and verifies.
#[test]
fn a_crash_loses_at_most_the_write_ahead_interval() {
    let (env, _sshd, gw) = standard();
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.arg("for i in $(seq 1 283); do echo crash-line-$i; done; sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("ssh");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + T;
    loop {
        let l = lines.next().expect("output").expect("line");
        if l == "crash-line-283" {
            break;
        }
        assert!(Instant::now() < deadline, "no output");
    }
    let id = gw.wait_one_active();
    // Well past the write-ahead interval (200 ms), well short of a chunk's age (10 s).
    std::thread::sleep(Duration::from_millis(800));
    let dir = gw.data.join("recordings").join(&id);
    assert!(!dir.join("00000000.chunk").exists(), "no chunk was due yet");
    let (config, data) = (gw.config.clone(), gw.data.clone());
    drop(gw); // kill -9
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    let gw2 = GatewayProc::spawn(config, data);
    let r = gw2.get_json(&format!("/api/v1/recordings/{id}"));
    assert_eq!(r["seal"]["status"], "truncated", "{r}");
    assert_eq!(r["verified"], true, "{r}");
    let out = run(
        gw2.wgctl()
            .args(["recording", "export", &id, "--format", "text"]),
        T,
    );
    let shown = text(&out.stdout);
    assert!(
        shown.contains("crash-line-283"),
        "lost output: {}",
        text(&out.stderr)
    );
}

/// alice changes the injected account's password through the gateway: the statement is an
/// alert in the query log and the audit, and the next session is told that the account's secret
/// no longer matches the vault (audited `vault.secret_rejected`), with the target's SQLSTATE.
#[test]
fn a_hijacked_account_password_is_detected() {
    let (_env, _pg, gw) = pg_standard();
    let out = run(
        gw.psql("alice#billing.test", "")
            .args(["-c", "ALTER ROLE billing_ro PASSWORD 'taken-over'"]),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alert = gw.wait_audit("session.alert", T);
    assert!(alert.to_string().contains("password change"), "{alert}");
    let id = alert["session_id"].as_str().expect("session").to_string();
    gw.wait_sealed(&id);
    let log = run(gw.wgctl().args(["recording", "play", &id]), T);
    assert_stdout_has(&log, "ALERT (password change)");

    let out = run(
        gw.psql("alice#billing.test", "").args(["-c", "select 1"]),
        T,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no longer matches the vault"), "{err}");
    let ev = gw.wait_audit("vault.secret_rejected", T);
    assert_eq!(ev["detail"]["target"], "billing.test", "{ev}");
    assert_eq!(ev["detail"]["account"], "billing_ro", "{ev}");
    let failed = gw.wait_sessions("?state=failed", T, |s| !s.is_empty());
    assert_eq!(failed[0]["end_reason"], "secret_rejected", "{failed:?}");
    // Refused before it opened, it recorded nothing: no (empty) recording is kept.
    let id = failed[0]["id"].as_str().expect("id");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !gw.data.join("recordings").join(id).exists(),
        "an empty recording was kept"
    );
}

/// The audit trail is signed: an export verifies with the gateway's public key, and deleting the
/// newest events, editing one, or editing one and re-chaining every hash is caught and named.
#[test]
fn audit_tampering_is_named() {
    let (env, _sshd, mut gw) = standard();
    for i in 0..3 {
        let out = run(
            gw.ssh(&env, "alice:web-01.test").arg(format!("echo {i}")),
            T,
        );
        assert!(out.status.success());
    }
    let key = text(&run(gw.wgctl().args(["recording", "pubkey"]), T).stdout)
        .trim()
        .to_string();
    gw.stop(); // a checkpoint at shutdown covers everything
    let data = gw.data.clone();
    let gw = GatewayProc::spawn(gw.config.clone(), data);
    let export = env.path("audit.jsonl");
    let out = run(
        gw.wgctl().args(["audit", "export", "--file"]).arg(&export),
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verify = |file: &std::path::Path| {
        run(
            Command::new(bin("wgctl"))
                .args(["audit", "verify", "--pubkey", &key, "--file"])
                .arg(file),
            T,
        )
    };
    let ok = verify(&export);
    assert!(
        ok.status.success(),
        "{}{}",
        text(&ok.stdout),
        text(&ok.stderr)
    );
    assert!(text(&ok.stdout).starts_with("OK:"), "{}", text(&ok.stdout));
    let through_api = run(gw.wgctl().args(["audit", "verify"]), T);
    assert!(
        through_api.status.success(),
        "{}",
        text(&through_api.stdout)
    );

    let lines: Vec<String> = std::fs::read_to_string(&export)
        .expect("export")
        .lines()
        .map(String::from)
        .collect();
    let events: Vec<(usize, serde_json::Value)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .map(|v| (i, v))
        })
        .filter(|(_, v)| v["type"] == "event")
        .collect();
    let write = |name: &str, lines: &[String]| {
        let p = env.path(name);
        std::fs::write(&p, lines.join("\n")).expect("write");
        p
    };
    // The newest events deleted (an earlier checkpoint signed them).
    let last_cp = lines
        .iter()
        .rposition(|l| l.contains("\"type\":\"checkpoint\""))
        .expect("a checkpoint");
    let mut cut = lines.clone();
    cut.drain(last_cp - 2..last_cp);
    let out = verify(&write("cut.jsonl", &cut));
    assert_eq!(out.status.code(), Some(1));
    assert_stdout_has(&out, "deleted");
    // One event edited.
    let (i, mut e) = events[3].clone();
    e["actor"] = "mallory".into();
    let mut edited = lines.clone();
    edited[i] = e.to_string();
    let out = verify(&write("edited.jsonl", &edited));
    assert_eq!(out.status.code(), Some(1));
    assert_stdout_has(&out, &format!("event #{} ", e["seq"]));
    assert_stdout_has(&out, "edited");
    // Edited, and every hash after it recomputed: only the signature catches it.
    let mut prev = String::new();
    let mut rechained = lines.clone();
    for (i, e) in &events {
        let mut ev: wardengate_recorder::audit::AuditEvent =
            serde_json::from_value(e.clone()).expect("event");
        if *i == events[3].0 {
            ev.actor = Some("mallory".into());
        }
        ev.prev_hash = prev.clone();
        ev.hash = wardengate_recorder::audit::event_hash(&prev, &ev);
        prev = ev.hash.clone();
        rechained[*i] = serde_json::to_string(&wardengate_recorder::audit::ExportLine::Event(ev))
            .expect("json");
    }
    let out = verify(&write("rechained.jsonl", &rechained));
    assert_eq!(out.status.code(), Some(1));
    assert_stdout_has(&out, "re-chained");

    // Behind the gateway's back: the newest events deleted from the store, with the
    // checkpoint rows that signed them. The checkpoint file beside the recordings still
    // holds them, so the gateway's own verification names the deletion.
    let mut gw = gw;
    gw.stop();
    let db = rusqlite::Connection::open(gw.data.join("wardengate.db")).expect("db");
    let top: i64 = db
        .query_row("SELECT max(seq) FROM audit_checkpoints", [], |r| r.get(0))
        .expect("a checkpoint");
    db.execute("DELETE FROM audit WHERE seq > ?1 - 3", [top])
        .expect("delete");
    db.execute("DELETE FROM audit_checkpoints", [])
        .expect("delete");
    drop(db);
    let gw = GatewayProc::spawn(gw.config.clone(), gw.data.clone());
    let out = run(gw.wgctl().args(["audit", "verify"]), T);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_stdout_has(&out, "deleted");
}
