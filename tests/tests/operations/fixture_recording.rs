//! The committed sample recording (fixtures/recordings) stays verifiable and replayable, offline,
//! with nothing but wgctl and the public key.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

fn fixture() -> (PathBuf, PathBuf) {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/recordings");
    (base.join("sample"), base.join("sample.pub"))
}

fn wgctl_offline(args: &[&str]) -> std::process::Output {
    run(
        Command::new(bin("wgctl"))
            .args(args)
            .env_remove("WARDENGATE_TOKEN")
            .env("WARDENGATE_ADDR", "http://127.0.0.1:9"),
        T,
    )
}

#[test]
fn sample_verifies_offline_and_a_wrong_key_does_not() {
    let (dir, key) = fixture();
    let d = dir.to_string_lossy().to_string();
    let out = wgctl_offline(&[
        "recording",
        "verify",
        &d,
        "--pubkey",
        &key.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("OK: sess_"),
        "{}",
        text(&out.stdout)
    );
    let other = "0".repeat(63) + "1";
    let out = wgctl_offline(&["recording", "verify", &d, "--pubkey", &other]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--pubkey") || err.contains("signature does not verify"),
        "{err}"
    );
    // With a valid but different key: the signature check names it.
    let k = wardengate_recorder::public_key_hex(
        &wardengate_recorder::SigningKey::from_bytes(&[7; 32]).verifying_key(),
    );
    let out = wgctl_offline(&["recording", "verify", &d, "--pubkey", &k]);
    assert!(!out.status.success());
    assert_stderr_has(&out, "signature does not verify with this key");
}

#[test]
fn sample_exports_as_text_asciicast_and_jsonl_and_plays() {
    let (dir, _) = fixture();
    let d = dir.to_string_lossy().to_string();
    let t = wgctl_offline(&["recording", "export", &d, "--format", "text"]);
    assert!(t.status.success(), "{}", text(&t.stderr));
    let transcript = text(&t.stdout);
    assert!(
        transcript.contains("Wardengate sample recording"),
        "{transcript}"
    );
    assert!(
        transcript.contains("progress 100%") && transcript.contains("step-3"),
        "{transcript}"
    );
    let cast = text(&wgctl_offline(&["recording", "export", &d, "--format", "asciicast"]).stdout);
    assert!(
        cast.lines()
            .next()
            .unwrap_or_default()
            .contains("\"version\":2"),
        "{cast}"
    );
    let jsonl = text(&wgctl_offline(&["recording", "export", &d, "--format", "jsonl"]).stdout);
    assert!(
        jsonl.lines().count() > 5 && jsonl.contains("\"kind\":\"exit-status\""),
        "{jsonl}"
    );
    let bad = wgctl_offline(&["recording", "export", &d, "--format", "pdf"]);
    assert!(!bad.status.success());
    assert_stderr_has(&bad, "invalid value 'pdf' for '--format <FORMAT>'");
    assert_stderr_has(
        &bad,
        "[possible values: asciicast, text, jsonl, csv, png, frames]",
    );
    // Real timing, sped up; idle gaps capped; starting at an offset.
    let play = wgctl_offline(&[
        "recording",
        "play",
        &d,
        "--speed",
        "20",
        "--skip-idle",
        "100ms",
        "--from",
        "00:00:00",
    ]);
    assert!(play.status.success(), "{}", text(&play.stderr));
    assert!(text(&play.stdout).contains("step-2"));
    let bad = wgctl_offline(&["recording", "play", &d, "--from", "soon"]);
    assert!(!bad.status.success());
}
