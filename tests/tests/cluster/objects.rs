//! Recordings in a real S3-compatible object store (s3s-fs): uploaded as chunks close and
//! sealed last, read back through any gateway and offline from the bucket URL; an outage fills
//! the spool and loses nothing; a full spool refuses sessions that require recording; a dead
//! gateway's recording is sealed `truncated` by a peer from what reached the bucket.

use std::time::Duration;

use wardengate_tests::objects::{in_bucket, s3, url, wgctl_offline, BUCKET, PREFIX};
use wardengate_tests::*;

use crate::cluster_with;

fn pubkey(gw: &GatewayProc) -> String {
    let out = run(
        gw.wgctl().args(["recording", "pubkey"]),
        Duration::from_secs(30),
    );
    assert_success(&out, "wgctl recording pubkey");
    text(&out.stdout).trim().to_string()
}

/// The bucket's objects for a recording, once `want` holds.
#[track_caller]
fn objects_when(
    s3: &wardengate_tests::objects::S3,
    id: &str,
    timeout: Duration,
    want: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let objects = poll(
        timeout,
        Duration::from_millis(100),
        || s3.objects(BUCKET, PREFIX, id),
        |o| want(o),
    );
    assert!(want(&objects), "not in the bucket yet: {objects:?}");
    objects
}

#[test]
fn recordings_go_to_the_bucket_and_are_read_back_from_it() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let store = s3(&env.path("s3"));
    let gw = in_bucket(env.gateway().target("web.test", &sshd), &store, "").start();
    let out = run(
        gw.ssh(&env, "alice#web.test")
            .arg("echo hello-from-the-bucket; seq 1 3000"),
        Duration::from_secs(60),
    );
    assert_success(&out, "ssh through the gateway");
    let id = gw.last_closed()["id"].as_str().expect("id").to_string();
    gw.wait_sealed(&id);
    let objects = objects_when(&store, &id, Duration::from_secs(30), |o| {
        o.iter().any(|n| n == "seal.json")
    });
    assert_eq!(
        objects,
        ["00000000.chunk", "recording.json", "seal.json"],
        "the recording's files are in the bucket"
    );
    // The spool keeps only the seal (for lists and summaries) and the mark of a whole upload.
    // (Right after the seal's upload.)
    let spool = gw.data.join("recordings").join(&id);
    let left = poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let mut left: Vec<String> = std::fs::read_dir(&spool)
                .expect("the spool directory")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            left
        },
        |l| l.len() == 2,
    );
    assert_eq!(left, [".uploaded", "seal.json"]);

    // Through the gateway: verified and exported from the bucket's copy.
    let v = run(
        gw.wgctl().args(["recording", "verify", &id]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&v, "verified by the gateway");
    assert!(gw
        .recording_export(&id, "text")
        .contains("hello-from-the-bucket"));

    // Offline, from the bucket URL, with only the public key.
    let key = pubkey(&gw);
    let off = run(
        wgctl_offline(&store).args(["recording", "verify", &url(&id), "--pubkey", &key]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&off, &format!("OK: {id} (complete, chunks=1"));
    let played = run(
        wgctl_offline(&store).args(["recording", "export", &url(&id), "--format", "text"]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&played, "hello-from-the-bucket");

    // A chunk changed in the bucket is caught, and the message names the bucket URL.
    let chunk = store
        .root
        .join(BUCKET)
        .join(PREFIX)
        .join(&id)
        .join("00000000.chunk");
    let mut bytes = std::fs::read(&chunk).expect("the chunk object");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&chunk, bytes).expect("tamper");
    let bad = run(
        wgctl_offline(&store).args(["recording", "verify", &url(&id), "--pubkey", &key]),
        Duration::from_secs(30),
    );
    assert!(!bad.status.success());
    assert_stderr_has(&bad, &format!("recording {} FAILED verification", url(&id)));
    assert_stderr_has(&bad, "chunk 0 was modified");
    // And a recording that is not there says so.
    let none = run(
        wgctl_offline(&store).args(["recording", "verify", &url("s-nope"), "--pubkey", &key]),
        Duration::from_secs(30),
    );
    assert_stderr_has(&none, "no such recording in the bucket");
}

#[test]
fn an_outage_fills_the_spool_refuses_when_full_and_loses_nothing() {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let mut store = s3(&env.path("s3"));
    let gw = in_bucket(
        env.gateway().target("web.test", &sshd),
        &store,
        "spool_max_mb = 1\n",
    )
    .start();
    store.stop();
    // About 2.7 MB of random text: more than the 1 MiB spool once compressed.
    let out = run(
        gw.ssh(&env, "alice#web.test")
            .arg("echo during-the-outage; head -c 2000000 /dev/urandom | base64 -w0; echo"),
        Duration::from_secs(60),
    );
    assert_success(&out, "a session while the object store is down");
    let id = gw.last_closed()["id"].as_str().expect("id").to_string();
    let sealed = gw.wait_sealed(&id);
    let chunks = sealed["recording"]["chunks"].as_u64().expect("chunks");
    assert!(chunks >= 2, "{sealed}");
    let down = gw.wait_audit("recording.store_unavailable", Duration::from_secs(30));
    assert!(down["detail"]["bucket"]
        .as_str()
        .is_some_and(|b| b.ends_with("recordings/wg")));
    assert!(store.objects(BUCKET, PREFIX, &id).is_empty());

    // The spool is full: a session that must be recorded is refused, and says why.
    let refused = poll(
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            run(
                gw.ssh(&env, "alice#web.test").arg("echo admitted"),
                Duration::from_secs(30),
            )
        },
        |o| !o.status.success(),
    );
    assert_stderr_has(&refused, "the recording spool is full");
    assert_stderr_has(&refused, "spool_max_mb = 1");

    // The store comes back: everything is uploaded, the seal last, and it verifies.
    store.resume().expect("restart s3s-fs");
    let objects = objects_when(&store, &id, Duration::from_secs(60), |o| {
        o.iter().any(|n| n == "seal.json")
    });
    assert_eq!(
        objects.iter().filter(|n| n.ends_with(".chunk")).count() as u64,
        chunks,
        "{objects:?}"
    );
    gw.wait_audit("recording.store_resumed", Duration::from_secs(30));
    let off = run(
        wgctl_offline(&store).args(["recording", "verify", &url(&id), "--pubkey", &pubkey(&gw)]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&off, &format!("OK: {id} (complete, chunks={chunks}"));
    // And sessions are admitted again.
    let again = poll(
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            run(
                gw.ssh(&env, "alice#web.test").arg("echo admitted"),
                Duration::from_secs(30),
            )
        },
        |o| o.status.success(),
    );
    assert_stdout_has(&again, "admitted");
}

#[test]
fn a_peer_seals_a_dead_gateways_recording_from_the_bucket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = s3(dir.path());
    let mut c = cluster_with(2, "2s", "", |b, _| {
        in_bucket(b, &store, "chunk_age = \"1s\"\n")
    });
    let mut held = c.ssh(
        0,
        "for i in $(seq 1 100); do echo line-$i; sleep 0.1; done; sleep 120",
    );
    let live = c.active(1, 1);
    let id = live[0]["id"].as_str().expect("id").to_string();
    // Chunks close every second and are uploaded while the session runs (the first holds the
    // exec alone: the target's shell takes a moment to start).
    objects_when(&store, &id, Duration::from_secs(30), |o| {
        o.iter().any(|n| n == "00000002.chunk")
    });

    c.gws[0].kill9();
    assert!(wait_timeout(&mut held, Duration::from_secs(10)).is_some());
    // gw-2 declares gw-1 lost and seals its recording from the bucket, as truncated.
    let objects = objects_when(&store, &id, Duration::from_secs(60), |o| {
        o.iter().any(|n| n == "seal.json")
    });
    assert!(objects.contains(&"00000000.chunk".to_string()));
    let recovered = c.gws[1].wait_audit("recording.recovered", Duration::from_secs(10));
    assert_eq!(recovered["session_id"], id.as_str());
    assert_eq!(recovered["detail"]["gateway"], "gw-1");
    assert_eq!(recovered["detail"]["sealed_by"], "gw-2");
    let key = pubkey(&c.gws[1]);
    let off = run(
        wgctl_offline(&store).args(["recording", "verify", &url(&id), "--pubkey", &key]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&off, &format!("OK: {id} (truncated"));
    // gw-2 lists, shows and replays it, though gw-1 ran it: from the bucket.
    let list = c.gws[1].get_json("/api/v1/recordings");
    assert!(
        list["recordings"]
            .as_array()
            .is_some_and(|l| l.iter().any(|r| r["id"] == id.as_str())),
        "{list}"
    );
    let s = c.gws[1].get_json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["state"], "failed");
    assert_eq!(s["recording"]["status"], "truncated", "{s}");
    let v = run(
        c.gws[1].wgctl().args(["recording", "verify", &id]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&v, "verified by the gateway");
    let t = run(
        c.gws[1]
            .wgctl()
            .args(["recording", "export", &id, "--format", "text"]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&t, "line-1");

    // gw-1 comes back with its own copy, which it seals truncated from its disk: the peer's
    // seal in the bucket stands, nothing more of it is uploaded, and its copy is kept aside.
    let sealed_by_peer = std::fs::read(
        store
            .root
            .join(BUCKET)
            .join(PREFIX)
            .join(&id)
            .join("seal.json"),
    )
    .expect("the peer's seal");
    let back = GatewayProc::spawn(c.gws[0].config.clone(), c.gws[0].data.clone());
    let spool = back.data.join("recordings");
    let aside = poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            std::fs::read_dir(&spool)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!(".superseded-{id}"))
                })
        },
        |a| *a,
    );
    assert!(aside, "gw-1 keeps its copy aside");
    let now = std::fs::read(
        store
            .root
            .join(BUCKET)
            .join(PREFIX)
            .join(&id)
            .join("seal.json"),
    )
    .expect("the seal");
    assert_eq!(now, sealed_by_peer, "the peer's seal stands");
    let off = run(
        wgctl_offline(&store).args(["recording", "verify", &url(&id), "--pubkey", &key]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&off, &format!("OK: {id} (truncated"));
}
