//! Recordings of real SSH sessions: sealed on every exit path, verified with the gateway's public
//! key, exported; crash recovery; refusal when the recording cannot be written.

use std::process::{Command, Stdio};
use std::time::Duration;

use wardengate_tests::*;

const T: Duration = Duration::from_secs(60);

fn wgctl_ok(gw: &GatewayProc, args: &[&str]) -> String {
    let out = run(gw.wgctl().args(args), T);
    assert!(
        out.status.success(),
        "wgctl {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Wait until the session's recording is sealed; return its directory.
fn sealed_dir(gw: &GatewayProc, id: &str) -> std::path::PathBuf {
    let dir = gw.data.join("recordings").join(id);
    for _ in 0..200 {
        if dir.join("seal.json").exists() {
            return dir;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("recording {} was never sealed", dir.display());
}

#[test]
fn a_real_session_is_recorded_verified_and_exported() {
    let (env, _sshd, gw) = standard();
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.arg("-tt");
    let out = run_with_input(
        &mut c,
        Some(b"echo recorded-$((20+22))\nexit 0\n".to_vec()),
        T,
    );
    assert_stdout_has(&out, "recorded-42");
    let id = gw.last_closed()["id"].as_str().expect("id").to_string();
    let dir = sealed_dir(&gw, &id);

    // Offline, with the key the gateway publishes.
    let key = wgctl_ok(&gw, &["recording", "pubkey"]);
    let key_file = env.path("recording.pub");
    std::fs::write(&key_file, &key).expect("key");
    let ok = run(
        Command::new(bin("wgctl"))
            .args(["recording", "verify"])
            .arg(&dir)
            .arg("--pubkey")
            .arg(&key_file)
            .env_remove("WARDENGATE_TOKEN"),
        T,
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).starts_with(&format!("OK: {id} (complete")),
        "{}",
        text(&ok.stdout)
    );

    // asciicast v2 with the text the session printed, playable by asciinema.
    let cast = run(
        Command::new(bin("wgctl"))
            .args(["recording", "export", "--format", "asciicast"])
            .arg(&dir)
            .env_remove("WARDENGATE_TOKEN"),
        T,
    );
    assert!(cast.status.success(), "export: {}", text(&cast.stderr));
    let cast = text(&cast.stdout);
    let mut lines = cast.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().expect("header")).expect("json header");
    assert_eq!(header["version"], 2);
    assert!(
        lines
            .clone()
            .any(|l| l.contains("\"o\"") && l.contains("recorded-42")),
        "{cast}"
    );
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
        assert!(v[0].is_f64() || v[0].is_u64(), "{l}");
    }

    // JSON lines through the API carry the keystrokes and the markers too.
    let jsonl = wgctl_ok(&gw, &["recording", "export", &id, "--format", "jsonl"]);
    assert!(jsonl.contains("\"type\":\"input\""), "input recorded");
    assert!(jsonl.contains("\"kind\":\"shell\""), "shell marker");
    assert!(
        jsonl.contains("\"kind\":\"exit-status\""),
        "exit status marker"
    );
    let show = wgctl_ok(&gw, &["recording", "show", &id]);
    assert!(show.contains("verified:     OK"), "{show}");
    assert!(
        !gw.audit("recording.accessed").is_empty(),
        "access is audited"
    );
    let s = gw.get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["recording"]["status"], "complete");
}

#[test]
fn terminate_prints_the_seal_and_tampering_is_detected() {
    let (env, _sshd, gw) = standard();
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.args(["-tt"])
        .arg("for i in $(seq 1 50); do echo line-$i; done; sleep 600");
    let mut client = wardengate_tests::live::Live::spawn(&mut c);
    let id = gw.wait_one_active();
    // Terminate once the output is out (a cold machine starts the target shell slowly).
    client.expect("line-50", T);
    let out = wgctl_ok(
        &gw,
        &["session", "terminate", &id, "--reason", "audit drill"],
    );
    assert!(out.contains("recording sealed (chunks="), "{out}");
    let _ = client.wait(Duration::from_secs(10));
    let dir = sealed_dir(&gw, &id);
    let jsonl = wgctl_ok(&gw, &["recording", "export", &id, "--format", "jsonl"]);
    assert!(
        jsonl.contains("\"kind\":\"terminated\"") && jsonl.contains("audit drill"),
        "terminate marker"
    );
    assert!(jsonl.contains("line-50"));
    // Flip one byte of the last chunk: verification names it.
    let chunk = dir.join("00000000.chunk");
    let mut b = std::fs::read(&chunk).expect("chunk");
    let at = b.len() - 5;
    b[at] ^= 1;
    std::fs::write(&chunk, b).expect("write");
    let bad = run(gw.wgctl().args(["recording", "verify"]).arg(&dir), T);
    assert!(!bad.status.success());
    assert_stderr_has(&bad, "chunk 0 was modified");
}

#[test]
fn a_killed_gateway_leaves_a_truncated_recording_that_verifies() {
    let (env, _sshd, gw) = standard_with(|gw| gw.extra("[recording]\nchunk_bytes = 2048\n"));
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.arg("for i in $(seq 1 2000); do echo crash-line-$i; done; sleep 600");
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("ssh");
    let id = gw.wait_one_active();
    let dir = gw.data.join("recordings").join(&id);
    // Up to 30 s: on a loaded 2-core machine the first chunks can take a while.
    for _ in 0..1200 {
        if dir.join("00000002.chunk").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        dir.join("00000002.chunk").exists(),
        "chunks are written while the session runs"
    );
    let (config, data) = (gw.config.clone(), gw.data.clone());
    drop(gw); // kill -9
    let _ = wait_timeout(&mut child, Duration::from_secs(10));
    assert!(!dir.join("seal.json").exists());
    let gw2 = GatewayProc::spawn(config, data);
    let r = gw2.get_json(&format!("/api/v1/recordings/{id}"));
    assert_eq!(r["seal"]["status"], "truncated", "{r}");
    assert_eq!(r["verified"], true, "{r}");
    assert!(!gw2.audit("recording.recovered").is_empty());
}

#[test]
fn an_unwritable_recording_store_refuses_the_session() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    // A file where the recordings directory should be.
    let blocker = env.path("not-a-directory");
    std::fs::write(&blocker, b"x").expect("file");
    let gw = env
        .gateway()
        .target("web-01.test", &sshd)
        .extra(&format!(
            "[recording]\ndir = \"{}\"\n",
            blocker.join("recordings").display()
        ))
        .start();
    let out = run(
        gw.ssh(&env, "alice:web-01.test").arg("echo must-not-run"),
        T,
    );
    assert!(!text(&out.stdout).contains("must-not-run"));
    assert_stderr_has(&out, "requires this session to be recorded");
    assert_eq!(
        gw.sessions("?state=denied")[0]["end_reason"],
        "recording_unavailable"
    );
    // recording = "off" in a policy records nothing and lets the session through.
    let gw_off = {
        let env2 = TestEnv::new();
        let sshd2 = env2.sshd();
        let gw = env2
            .gateway()
            .target("web-01.test", &sshd2)
            .policies(
                "[[policies]]\nname = \"unrecorded\"\ngroups = [\"sre\"]\nrecording = \"off\"\n",
            )
            .start();
        let out = run(gw.ssh(&env2, "alice:web-01.test").arg("echo free"), T);
        assert_eq!(text(&out.stdout).trim(), "free");
        let id = gw.sessions("")[0]["id"].as_str().expect("id").to_string();
        assert!(!gw.data.join("recordings").join(&id).exists());
        (env2, sshd2, gw)
    };
    drop(gw_off);
}

#[test]
fn input_can_be_left_out_of_recordings() {
    let (env, _sshd, gw) = standard_with(|gw| gw.extra("[recording]\ninput = false\n"));
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.arg("-tt");
    let out = run_with_input(
        &mut c,
        Some(b"echo typed-secret-$((1+1))\nexit\n".to_vec()),
        T,
    );
    assert!(text(&out.stdout).contains("typed-secret-2"));
    let id = gw.last_closed()["id"].as_str().expect("id").to_string();
    sealed_dir(&gw, &id);
    let jsonl = wgctl_ok(&gw, &["recording", "export", &id, "--format", "jsonl"]);
    assert!(
        !jsonl.contains("\"type\":\"input\""),
        "input must not be recorded"
    );
    assert!(jsonl.contains("typed-secret-2"), "output still is");
}

#[test]
fn a_recording_that_fails_mid_session_ends_the_session_with_a_message() {
    let (env, _sshd, gw) = standard_with(|gw| gw.extra("[recording]\nchunk_bytes = 1024\n"));
    let mut c = gw.ssh(&env, "alice:web-01.test");
    c.args(["-o", "LogLevel=INFO"])
        .arg("while true; do echo still-running; sleep 0.05; done");
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("ssh");
    let id = gw.wait_one_active();
    // The storage goes away under a running session (a lost mount, an operator mistake).
    std::fs::remove_dir_all(gw.data.join("recordings").join(&id)).expect("rm");
    let status = wait_timeout(&mut child, Duration::from_secs(20))
        .expect("the session must end, not run unrecorded");
    assert_eq!(status.code(), Some(255));
    let err = stderr_of(&mut child);
    assert!(
        err.contains("the session recording could not be written"),
        "{err}"
    );
    // The client may see the end a moment before the registry has recorded it.
    let s = gw.wait_sessions("?state=closed", Duration::from_secs(10), |s| !s.is_empty());
    assert_eq!(s[0]["id"], id.as_str());
    assert_eq!(s[0]["end_reason"], "terminated");
    assert_eq!(s[0]["terminated_by"], "wardengate");
}
