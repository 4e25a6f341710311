//! `wg-cluster-bench`: the measuring side of `scripts/bench cluster`, on the test harness's real
//! processes (sshd, PostgreSQL, gateways). Prints one Markdown table.
//!
//! - admissions per second: short SSH sessions (`ssh … true`, and the sftp subsystem closed at
//!   once, which skips the target's login shell; BENCH_CLIENTS=8 clients (the target sshd's MaxStartups is 10) in a loop
//!   for BENCH_SECS=15 s, spread over the gateways) on 1 gateway on SQLite (the baseline), 1 on
//!   PostgreSQL, 3 on PostgreSQL;
//! - the sessions API (`GET /api/v1/sessions`, the first page of 50, and every live session)
//!   p50/p99 on an empty PostgreSQL store (the baseline) and with 1,000 live and 100,000 closed
//!   sessions in it;
//! - terminate p50/p99: a session terminated through the gateway that runs it (the baseline) and
//!   through another gateway (routed to the owner, signed);
//! - recordings in object storage (s3s-fs on loopback): a terminal flood through `ssh -tt`
//!   (BENCH_FLOOD_MIB=512 MiB of numbered text lines, then of random base64, the worst case for
//!   upload volume), its rate with recordings on local disk (the baseline) and in the bucket,
//!   and the upload lag of every chunk: the object's time in the store minus the time the chunk
//!   closed (the recording's start plus its last event's offset).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wardengate_tests::cluster::{cluster, Cluster};
use wardengate_tests::objects::{in_bucket, s3, BUCKET, PREFIX};
use wardengate_tests::*;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Short sessions per second through `gws` (round robin), `clients` at once, for `secs`.
/// With `sftp`, each session is the sftp subsystem closed at once (`ssh -s … sftp` with no
/// input): the target's internal-sftp answers without starting the account's login shell, so
/// the gateway, not the target's shell start, is what is timed.
fn admissions(env: &TestEnv, gws: &[&GatewayProc], clients: usize, secs: u64, sftp: bool) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for c in 0..clients {
            let gw = gws[c % gws.len()];
            let (done, failed) = (done.clone(), failed.clone());
            s.spawn(move || {
                while Instant::now() < until {
                    let mut cmd = gw.ssh(env, "alice#web.test");
                    if sftp {
                        cmd.args(["-s", "sftp"]);
                    } else {
                        cmd.arg("true");
                    }
                    let ok = cmd
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let f = failed.load(Ordering::Relaxed);
    if f > 0 {
        eprintln!("   ({f} sessions failed)");
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

/// p50/p99 in ms of `GET path` on `gw`, `n` times.
fn api_times(gw: &GatewayProc, path: &str, n: usize) -> (f64, f64) {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let (status, _) = gw.get(path);
            assert_eq!(status, 200, "GET {path}");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

/// p50/p99 in ms of terminating, through `via`, `n` sessions that gateway 0 runs.
fn terminate_times(c: &Cluster, via: usize, n: usize) -> (f64, f64) {
    let mut held: Vec<_> = (0..n).map(|_| c.ssh(0, "sleep 120")).collect();
    let live = c.active(0, n);
    let mut v = Vec::new();
    for s in &live {
        let id = s["id"].as_str().expect("id");
        let t = Instant::now();
        let (status, body) = c.gws[via].post(
            &format!("/api/v1/sessions/{id}/terminate"),
            r#"{"reason":"bench"}"#,
        );
        v.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{body}");
    }
    for h in &mut held {
        let _ = wait_timeout(h, Duration::from_secs(10));
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

fn seed(c: &Cluster, live: usize, closed: usize) {
    let row = |state: &str, ended: &str| {
        format!(
            "INSERT INTO sessions (id, state, protocol, actor, client_addr, client_version, target, \
             target_addr, account, account_ref, policy, gateway, started_ms, ended_ms, bytes_in, bytes_out) \
             SELECT 'sess_seed_{state}_' || i, '{state}', 'ssh', 'user' || (i % 50), '10.0.0.1:40000', \
             'SSH-2.0-OpenSSH_9.2', 'web-' || (i % 200), '10.1.0.1:22', 'deploy', 'ref', 'sre-test', \
             'gw-seed', 1700000000000 + i * 1000, {ended}, 1000, 100000 FROM generate_series(1, $N) i;"
        )
    };
    let sql = format!(
        "{}\n{}\nANALYZE sessions;",
        row("closed", "1700000000000 + i * 1000 + 60000").replace("$N", &closed.to_string()),
        row("active", "NULL").replace("$N", &live.to_string())
    );
    c.store.psql("wardengate", &sql).expect("seed the store");
}

/// A terminal flood through `gw` (`ssh -tt`); MiB/s of the remote command's own timing.
fn flood(env: &TestEnv, gw: &GatewayProc, source: &str, mib: u64) -> f64 {
    let t0 = env.path("t0");
    let t1 = env.path("t1");
    // The output is made first, so the flood is `cat` of a file: the pty and the gateway are
    // what is measured, not the generator.
    let file = env.path("flood.txt");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{source} | head -c {bytes} > {f}",
            bytes = mib << 20,
            f = file.display()
        ))
        .status()
        .expect("sh");
    assert!(made.success(), "cannot make the flood's output");
    let cmd = format!(
        "date +%s.%N > {t0}; cat {f}; date +%s.%N > {t1}",
        t0 = t0.display(),
        t1 = t1.display(),
        f = file.display()
    );
    let status = std::process::Command::new("ssh")
        .args(["-tt", "-o", "BatchMode=yes"])
        .args(gw.ssh_opts(env))
        .args([
            "-p",
            &gw.ssh_port.to_string(),
            "alice#web.test@127.0.0.1",
            &cmd,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ssh");
    assert!(status.success(), "the flood's ssh failed");
    let read = |p: &std::path::Path| -> f64 {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .expect("a timestamp")
    };
    mib as f64 / (read(&t1) - read(&t0))
}

/// Upload lag (ms) of each chunk of recording `id` in the bucket's directory `dir`.
fn upload_lags(dir: &std::path::Path) -> Vec<f64> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("recording.json")).expect("recording.json"))
            .expect("recording.json parses");
    let started = meta["started_at_ms"].as_u64().expect("started_at_ms") as f64;
    let mut lags = Vec::new();
    for e in std::fs::read_dir(dir)
        .expect("the bucket directory")
        .flatten()
    {
        if !e.file_name().to_string_lossy().ends_with(".chunk") {
            continue;
        }
        let bytes = std::fs::read(e.path()).expect("chunk");
        let h = wardengate_recorder::ChunkHeader::decode(&bytes).expect("chunk header");
        let stored = e
            .metadata()
            .and_then(|m| m.modified())
            .expect("mtime")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
            * 1000.0;
        lags.push(stored - (started + h.last_t_us as f64 / 1000.0));
    }
    lags
}

/// Rows for recordings in object storage: flood rate on local disk vs in the bucket, and the
/// lag of each chunk's upload.
fn object_store_rows(mib: u64) -> Vec<String> {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let store = s3(&env.path("s3"));
    let local = env
        .gateway()
        .named("local")
        .target("web.test", &sshd)
        .start();
    let bucket = in_bucket(
        env.gateway().named("bucket").target("web.test", &sshd),
        &store,
        "",
    )
    .start();
    let mut rows = Vec::new();
    for (what, source) in [
        (
            "numbered text lines",
            "head -c 100000000000 /dev/zero | tr '\\0' a | fold -w 120 | nl",
        ),
        ("random base64", "base64 -w 120 /dev/urandom"),
    ] {
        eprintln!("== recordings in object storage: {mib} MiB of {what}");
        let base = flood(&env, &local, source, mib);
        let rate = flood(&env, &bucket, source, mib);
        let id = bucket.last_closed()["id"].as_str().expect("id").to_string();
        let dir = store.root.join(BUCKET).join(PREFIX).join(&id);
        let sealed = poll(
            Duration::from_secs(120),
            Duration::from_millis(100),
            || dir.join("seal.json").exists(),
            |done| *done,
        );
        assert!(sealed, "the recording was not uploaded whole");
        let mut lags = upload_lags(&dir);
        let n = lags.len();
        let (p50, p99) = (pct(&mut lags, 0.5), pct(&mut lags, 0.99));
        let max = lags.iter().copied().fold(0.0, f64::max);
        eprintln!("   local {base:.0} MiB/s, bucket {rate:.0} MiB/s; lag p50 {p50:.0} p99 {p99:.0} max {max:.0} ms over {n} chunks");
        rows.push(format!(
            "| terminal flood ({what}, {mib} MiB), MiB/s | {base:.0} (recordings on local disk) | {rate:.0} (in the bucket) | {:.2} |",
            rate / base
        ));
        rows.push(format!(
            "| upload lag per chunk ({what}; {n} chunks), p50 / p99 / max ms | - | {p50:.0} / {p99:.0} / {max:.0} | - |"
        ));
    }
    rows
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let flood_mib: u64 = std::env::var("BENCH_FLOOD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let mut rows = Vec::new();
    if std::env::var("BENCH_ONLY").as_deref() == Ok("objects") {
        rows.extend(object_store_rows(flood_mib));
        print_rows(rows);
        return;
    }

    eprintln!("== admissions: 1 gateway on SQLite");
    let env = TestEnv::new();
    let sshd = env.sshd();
    let single = env
        .gateway()
        .target("web.test", &sshd)
        .security_lines("max_unauthenticated_per_source = 500\nmax_unauthenticated = 500\n")
        .start();
    let base = admissions(&env, &[&single], clients, secs, false);
    let base_s = admissions(&env, &[&single], clients, secs, true);
    drop(single);
    eprintln!("   {base:.1}/s (shell), {base_s:.1}/s (sftp subsystem)");
    eprintln!("== admissions: 1 gateway on PostgreSQL");
    let one = cluster(1, "15s", "");
    let pg1 = admissions(&one.env, &[&one.gws[0]], clients, secs, false);
    let pg1_s = admissions(&one.env, &[&one.gws[0]], clients, secs, true);
    eprintln!("   {pg1:.1}/s (shell), {pg1_s:.1}/s (sftp subsystem)");
    if std::env::var("BENCH_ONLY").as_deref() == Ok("admissions") {
        drop(one);
        let three = cluster(3, "15s", "");
        let gws: Vec<&GatewayProc> = three.gws.iter().collect();
        let pg3_s = admissions(&three.env, &gws, clients, secs, true);
        eprintln!("   3 gateways: {pg3_s:.1}/s (sftp subsystem)");
        rows.push(admission_row(
            "sftp subsystem",
            clients,
            secs,
            base_s,
            pg1_s,
            pg3_s,
        ));
        print_rows(rows);
        return;
    }

    eprintln!("== sessions API on PostgreSQL: empty, then 1,000 live + 100,000 closed");
    let (e50, e99) = api_times(&one.gws[0], "/api/v1/sessions?limit=50", 200);
    let (el50, el99) = api_times(&one.gws[0], "/api/v1/sessions?live=true&limit=2000", 200);
    seed(&one, 1000, 100_000);
    let (s50, s99) = api_times(&one.gws[0], "/api/v1/sessions?limit=50", 200);
    let (sl50, sl99) = api_times(&one.gws[0], "/api/v1/sessions?live=true&limit=2000", 200);
    drop(one);

    eprintln!("== admissions: 3 gateways on PostgreSQL");
    let three = cluster(3, "15s", "");
    let gws: Vec<&GatewayProc> = three.gws.iter().collect();
    let pg3 = admissions(&three.env, &gws, clients, secs, false);
    let pg3_s = admissions(&three.env, &gws, clients, secs, true);
    eprintln!("   {pg3:.1}/s (shell), {pg3_s:.1}/s (sftp subsystem)");

    eprintln!("== terminate: through the owner, then through a peer");
    let (l50, l99) = terminate_times(&three, 0, 20);
    let (r50, r99) = terminate_times(&three, 1, 20);

    rows.push(admission_row("`ssh … true`", clients, secs, base, pg1, pg3));
    rows.push(admission_row(
        "sftp subsystem",
        clients,
        secs,
        base_s,
        pg1_s,
        pg3_s,
    ));
    rows.push(format!(
        "| `GET /api/v1/sessions?limit=50`, p50 / p99 ms | {e50:.1} / {e99:.1} (empty) | {s50:.1} / {s99:.1} (1,000 live + 100,000 closed) | p99 {:.2} |",
        s99 / e99
    ));
    rows.push(format!(
        "| `GET /api/v1/sessions?live=true&limit=2000`, p50 / p99 ms | {el50:.1} / {el99:.1} (empty) | {sl50:.1} / {sl99:.1} (1,000 live) | p99 {:.2} |",
        sl99 / el99
    ));
    rows.push(format!(
        "| terminate, API call until the session has ended, p50 / p99 ms | {l50:.0} / {l99:.0} (via the owner) | {r50:.0} / {r99:.0} (via a peer, signed) | p99 {:.2} |",
        r99 / l99
    ));
    drop(three);
    rows.extend(object_store_rows(flood_mib));
    print_rows(rows);
}

fn admission_row(what: &str, clients: usize, secs: u64, base: f64, pg1: f64, pg3: f64) -> String {
    format!(
        "| admissions/s, short SSH sessions ({what}, {clients} clients, {secs} s) | {base:.1} (1 gw, SQLite) | {pg1:.1} (1 gw, PostgreSQL); {pg3:.1} (3 gw, PostgreSQL) | {:.2}; {:.2} |",
        pg1 / base,
        pg3 / base
    )
}

fn print_rows(rows: Vec<String>) {
    println!("| cluster | baseline | measured | ratio |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
