//! `wardengate dev` as a newcomer runs it: the demo targets work, the demo database account
//! only reads, a second start does not break the first, and `kill -9` takes every demo process
//! down with the gateway.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wardengate_dev::sshd::free_port;
use wardengate_tests::*;

const T: Duration = Duration::from_secs(120);

struct Ports {
    ssh: u16,
    api: u16,
    pg: u16,
    rdp: u16,
    tcp: u16,
    web: u16,
}

fn ports() -> Ports {
    Ports {
        ssh: low_port(),
        api: low_port(),
        pg: low_port(),
        rdp: low_port(),
        tcp: low_port(),
        web: free_port().expect("port"),
    }
}

/// A port free now, and free 10 above (a second dev gateway's), below the ephemeral range the
/// demo peers' own ports come from (so a peer started later cannot take a gateway's port).
fn low_port() -> u16 {
    use std::net::TcpListener;
    loop {
        let mut b = [0u8; 2];
        getrandom_port(&mut b);
        let p = 20_000 + u16::from_le_bytes(b) % 10_000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10)).is_ok()
        {
            return p;
        }
    }
}

/// Two random bytes (the clock's nanoseconds and the process id are enough for a test).
fn getrandom_port(b: &mut [u8; 2]) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = nanos ^ (std::process::id() << 7);
    *b = [(mixed >> 3) as u8, (mixed >> 11) as u8];
}

fn dev(dir: &Path, p: &Ports) -> Command {
    let mut c = Command::new(bin("wardengate"));
    c.args(["dev", "--data-dir"])
        .arg(dir)
        .args(["--ssh-port", &p.ssh.to_string()])
        .args(["--api-port", &p.api.to_string()])
        .args(["--pg-port", &p.pg.to_string()])
        .args(["--rdp-port", &p.rdp.to_string()])
        .args(["--tcp-port", &p.tcp.to_string()])
        .args(["--web-port", &p.web.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    c
}

/// Start dev mode and wait for its banner; the demo desktop's X display (`:N`).
fn start(dir: &Path, p: &Ports) -> (Child, String) {
    let mut child = dev(dir, p)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wardengate dev");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let deadline = Instant::now() + T;
    let mut line = String::new();
    let mut display = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read");
        assert!(n > 0, "dev mode exited before it was ready");
        if let Some(rest) = line.split("Xvfb display ").nth(1) {
            display = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        if line.contains("demo target    win-dc01.dev") {
            break;
        }
        assert!(Instant::now() < deadline, "dev mode never became ready");
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    (child, display)
}

fn psql(dir: &Path, p: &Ports, sql: &str) -> std::process::Output {
    let password = std::fs::read_to_string(dir.join("alice.password")).expect("password");
    run(
        Command::new("psql")
            .args(["-X", "-A", "-t", "-c", sql])
            .arg(format!(
                "host=127.0.0.1 port={} user=alice#billing-ro.dev dbname=billing connect_timeout=10",
                p.pg
            ))
            .env("PGPASSWORD", password.trim()),
        T,
    )
}

/// Processes whose command line mentions `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    wardengate_dev::children::alive(pid)
}

#[test]
fn dev_mode_runs_once_reads_only_and_dies_whole() {
    let env = TestEnv::new();
    let dir = env.path("dev");
    let p = ports();
    let (mut first, display) = start(&dir, &p);
    assert!(
        display.starts_with(':'),
        "the banner names the X display: {display:?}"
    );

    let out = psql(&dir, &p, "select count(*) from invoices");
    assert_eq!(text(&out.stdout).trim(), "50", "{}", text(&out.stderr));
    // The injected account only reads (the data belongs to a role nobody logs in as).
    let out = psql(
        &dir,
        &p,
        "insert into invoices (customer, amount) values ('x', 1)",
    );
    assert!(!out.status.success());
    assert_stderr_has(&out, "permission denied");
    // The TCP demo as the banner shows it: redis through `wgctl connect`, alice's own token.
    let token = std::fs::read_to_string(dir.join("alice.token")).expect("alice's token");
    let out = run(
        Command::new(bin("wgctl"))
            .env("WARDENGATE_ADDR", format!("http://127.0.0.1:{}", p.api))
            .env("WARDENGATE_TOKEN", token.trim())
            .args(["connect", "redis", "cache.dev", "--", "INCR", "visits"]),
        T,
    );
    assert_eq!(text(&out.stdout).trim(), "1", "{}", text(&out.stderr));
    // The network-access demo: alice's address on bastion.dev's allow-list (a file), for an hour.
    let out = run(
        Command::new(bin("wgctl"))
            .env("WARDENGATE_ADDR", format!("http://127.0.0.1:{}", p.api))
            .env("WARDENGATE_TOKEN", token.trim())
            .args(["access", "start", "--duration", "1h"]),
        T,
    );
    assert_stdout_has(&out, "ACTIVE");
    let listed = std::fs::read_to_string(dir.join("access-allowlist.txt")).expect("allow-list");
    assert_eq!(listed.trim(), "bastion.dev 127.0.0.1");

    // A second start on the same directory is refused before it touches anything.
    let other = ports();
    let out = run(&mut dev(&dir, &other), T);
    assert!(!out.status.success());
    assert_stderr_has(
        &out,
        &format!("dev mode is already running (pid {})", first.id()),
    );
    let out = psql(&dir, &p, "select count(*) from invoices");
    assert_eq!(
        text(&out.stdout).trim(),
        "50",
        "the first instance still works: {}",
        text(&out.stderr)
    );
    // Another directory on the same ports: told which port and which flag.
    let out = run(&mut dev(&env.path("dev2"), &p), T);
    assert!(!out.status.success());
    assert_stderr_has(
        &out,
        &format!(
            "port {} on 127.0.0.1 is in use (dev mode's --ssh-port)",
            p.ssh
        ),
    );

    // kill -9: every demo process goes with it.
    let dir_s = dir.display().to_string();
    let mut children: Vec<u32> = pids_with(&dir_s)
        .into_iter()
        .filter(|&pid| pid != first.id())
        .collect();
    assert!(
        children.len() >= 3,
        "sshd, postgres and the RDP server: {children:?}"
    );
    let xvfb = pids_with(&format!("Xvfb {display} "));
    assert_eq!(xvfb.len(), 1, "the demo desktop's Xvfb: {xvfb:?}");
    children.extend(xvfb);
    let _ = first.kill();
    let _ = first.wait();
    let deadline = Instant::now() + Duration::from_secs(15);
    while children.iter().any(|&c| alive(c)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = children.into_iter().filter(|&c| alive(c)).collect();
    assert!(left.is_empty(), "outlived the gateway: {left:?}");

    // The next start finds the stale lock and a dead postmaster: it starts cleanly.
    let (mut again, _) = start(&dir, &p);
    let out = psql(&dir, &p, "select count(*) from invoices");
    assert_eq!(text(&out.stdout).trim(), "50", "{}", text(&out.stderr));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(again.id().to_string())
        .status();
    assert!(wait_timeout(&mut again, Duration::from_secs(30)).is_some());
}

/// The object store's endpoint in a dev gateway's configuration.
fn endpoint_in(dir: &std::path::Path) -> String {
    let cfg = std::fs::read_to_string(dir.join("wardengate.toml")).expect("the dev config");
    cfg.lines()
        .find_map(|l| l.strip_prefix("endpoint = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("an endpoint in [recording]")
        .to_string()
}

/// `wardengate dev --cluster 2` as a newcomer tries it: two gateways on one store; a session
/// through the second is listed, shown and terminated through the first, and its recording is
/// in the dev cluster's object store.
#[test]
fn dev_mode_runs_a_cluster_of_two_gateways_on_one_store() {
    let env = TestEnv::new();
    let dir = env.path("devc");
    let p = ports();
    let mut child = dev(&dir, &p)
        .args(["--cluster", "2"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(env.path("devc.err")).expect("stderr file"))
        .spawn()
        .expect("wardengate dev --cluster 2");
    // Lines arrive through a thread, so that a gateway that never becomes ready fails the test
    // at the deadline (with what dev mode said) instead of blocking it.
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut line = String::new();
        while out.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = tx.send(std::mem::take(&mut line));
        }
    });
    let (mut banner, mut second) = (false, String::new());
    let deadline = Instant::now() + T;
    while !banner || second.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let err = std::fs::read_to_string(env.path("devc.err")).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            panic!(
                "the cluster never became ready (or dev mode exited); it said:\n{}",
                tail.join("\n")
            );
        };
        banner |= line.contains("A cluster of 2 gateways");
        if line.starts_with("dev-gw-2 is ready:") {
            second = line;
        }
    }
    // "dev-gw-2 is ready: SSH 127.0.0.1:P, PostgreSQL …, API http://127.0.0.1:Q (admin token …)"
    let ssh2 = second
        .split("SSH 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("gateway 2's SSH port")
        .to_string();
    assert_eq!(ssh2, (p.ssh + 10).to_string(), "{second}");
    let mut alice = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-i"])
        .arg(dir.join("alice_ed25519"))
        .args(["-p", &ssh2, "alice:web-01.dev@127.0.0.1", "sleep 60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh through gateway 2");
    let token = std::fs::read_to_string(dir.join("admin.token")).expect("gateway 1's token");
    let wgctl = || {
        let mut c = Command::new(bin("wgctl"));
        c.env("WARDENGATE_ADDR", format!("http://127.0.0.1:{}", p.api))
            .env("WARDENGATE_TOKEN", token.trim());
        c
    };
    let listed = poll(
        T,
        Duration::from_millis(300),
        || text(&run(wgctl().args(["session", "list"]), T).stdout),
        |t| t.contains("dev-gw-2"),
    );
    assert!(
        listed.contains("dev-gw-2") && listed.contains("web-01.dev"),
        "{listed}"
    );
    let id = listed
        .split_whitespace()
        .find(|w| w.starts_with("sess_"))
        .expect("a session id")
        .to_string();
    let shown = run(wgctl().args(["session", "show", &id]), T);
    assert_has_all(
        &text(&shown.stdout),
        &["gateway:      dev-gw-2", "channels:     1"],
    );
    let out = run(
        wgctl().args(["session", "terminate", &id, "--reason", "dev cluster demo"]),
        T,
    );
    assert_success(&out, "terminate through gateway 1");
    assert!(wait_timeout(&mut alice, Duration::from_secs(10)).is_some());
    assert!(stderr_of(&mut alice).contains("dev cluster demo"));
    // Its recording went to the dev cluster's object store, and verifies from the bucket.
    let sealed = dir.join("s3/recordings/dev").join(&id).join("seal.json");
    let uploaded = poll(T, Duration::from_millis(200), || sealed.exists(), |e| *e);
    assert!(uploaded, "{} is in the bucket", sealed.display());
    let pubkey = text(&run(wgctl().args(["recording", "pubkey"]), T).stdout);
    let verified = run(
        Command::new(bin("wgctl"))
            .env("AWS_ENDPOINT_URL", endpoint_in(&dir))
            .env("AWS_ACCESS_KEY_ID", wardengate_dev::s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", wardengate_dev::s3::SECRET_KEY)
            .args(["recording", "verify", &format!("s3://recordings/dev/{id}")])
            .args(["--pubkey", pubkey.trim()]),
        T,
    );
    assert_stdout_has(&verified, &format!("OK: {id} (complete"));
    let status = run(
        Command::new(bin("wardengate"))
            .args(["cluster", "-c"])
            .arg(dir.join("wardengate.toml"))
            .arg("status"),
        T,
    );
    assert_has_all(&text(&status.stdout), &["dev-gw-1", "dev-gw-2", "up"]);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(
        wait_timeout(&mut child, Duration::from_secs(60)).is_some(),
        "dev mode stops on Ctrl-C"
    );
}
