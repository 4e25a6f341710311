//! End-to-end harness: starts real peers and a real `wardengate` process, then drives real clients.
//!
//! ```ignore
//! let env = TestEnv::new();                 // temp dir, alice's key, the target account key
//! let sshd = env.sshd();                    // OpenSSH sshd on a free loopback port
//! let gw = env.gateway().target("web-01.test", &sshd).start();
//! let out = gw.ssh("alice:web-01.test").arg("id -un").output();
//! ```
//!
//! Binaries come from the same target directory as the test executable; `scripts/test` builds
//! them first (`cargo build --bins`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod builder;
mod gateway;
pub mod live;
pub mod observe;
mod peers;
pub use builder::*;
pub use gateway::*;
pub mod pg;
pub mod rdp;
pub use peers::*;
pub mod browser;
pub mod cluster;
pub mod hostile;
pub mod ledger;
pub mod netns;
pub mod objects;
pub mod russh_client;
pub mod secrets;
pub mod tcp;
pub mod tmux;

use wardengate_dev::sshd::Sshd;
use wardengate_gateway::keys;

/// Path of a workspace binary built next to this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // A test runs from `target/PROFILE/deps`, a harness binary from `target/PROFILE`.
    let dir = match exe.parent() {
        Some(d) if d.join(name).exists() => d,
        _ => exe.parent().and_then(Path::parent).expect("target dir"),
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (`cargo build --bins`, as scripts/test does)",
        p.display()
    );
    p
}

/// A temp directory with the keys every test needs.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    /// alice's client key (private key file path).
    pub alice_key: PathBuf,
    pub alice_pub: String,
    /// The target account's key: its public half goes to sshd, its private half to the vault only.
    pub account_key_pem: String,
    pub account_pub: String,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let alice = keys::generate_ed25519("alice@test").expect("key");
        let alice_key = dir.path().join("alice_ed25519");
        keys::write_keypair(&alice_key, &alice).expect("write key");
        let account = keys::generate_ed25519("account@target").expect("key");
        TestEnv {
            alice_pub: keys::public_openssh(&alice).expect("pub"),
            alice_key,
            account_key_pem: keys::private_openssh(&account).expect("pem"),
            account_pub: keys::public_openssh(&account).expect("pub"),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A real sshd trusting the target account key, in its own directory `name`.
    pub fn sshd_named(&self, name: &str, port: u16) -> Sshd {
        Sshd::start(
            &self.path(name),
            port,
            std::slice::from_ref(&self.account_pub),
        )
        .expect("sshd")
    }

    pub fn sshd(&self) -> Sshd {
        self.sshd_named("sshd", 0)
    }

    pub fn gateway(&self) -> GatewayBuilder<'_> {
        GatewayBuilder {
            env: self,
            targets: Vec::new(),
            pg_targets: Vec::new(),
            rdp_targets: Vec::new(),
            postgres: None,
            extra: String::new(),
            policies: None,
            gateway_lines: String::new(),
            // Plain HTTP on loopback, as dev mode runs (`api_tls()` for the TLS listener).
            api_lines: "plain_http = true\n".into(),
            security_lines: String::new(),
            rejection_time: "10ms".into(),
            ssh_lines: String::new(),
            alice_token: None,
            name: "gw-test".into(),
        }
    }
}

/// Call `probe` until `done` accepts what it returns or `timeout` has passed, sleeping `every`
/// between calls; the last value `probe` returned (the caller checks it: `done` may not hold).
pub fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let v = probe();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(every);
    }
}

/// Read a text with `read` every `every` until it contains `needle`, and return that text;
/// panics after `timeout` with the last text read, called `what` ("the client's output").
#[track_caller]
pub fn wait_for_text(
    what: &str,
    needle: &str,
    timeout: Duration,
    every: Duration,
    read: impl FnMut() -> String,
) -> String {
    let seen = poll(timeout, every, read, |t| t.contains(needle));
    assert!(
        seen.contains(needle),
        "{what} never showed {needle:?} within {timeout:?}; it shows:\n{seen}"
    );
    seen
}

/// Wait for a child with a timeout; kill it when the timeout passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run a command with a timeout, capturing output. Panics on timeout with what was captured.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_with_input(cmd, None, timeout)
}

/// Run with `input` on stdin (then EOF), capturing output.
pub fn run_with_input(cmd: &mut Command, input: Option<Vec<u8>>, timeout: Duration) -> Output {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let out_pipe = child.stdout.take().expect("stdout");
    let err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || read_all(out_pipe));
    let err_t = std::thread::spawn(move || read_all(err_pipe));
    let status = wait_timeout(&mut child, timeout);
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "command timed out after {timeout:?}: {cmd:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The usual scenario: a temp env, one sshd, a gateway with target `web-01.test` on it.
/// Keep the `Sshd` alive for the test's duration.
pub fn standard() -> (TestEnv, Sshd, GatewayProc) {
    standard_with(|gw| gw)
}

/// [`standard`] with the gateway's configuration adjusted by `configure` before it starts:
/// `standard_with(|gw| gw.extra("[recording]\ninput = false\n"))`.
pub fn standard_with(
    configure: impl for<'a> FnOnce(GatewayBuilder<'a>) -> GatewayBuilder<'a>,
) -> (TestEnv, Sshd, GatewayProc) {
    with_gateway(|env, sshd| configure(env.gateway().target("web-01.test", sshd)).start())
}

/// A temp env and one sshd, and the gateway `start` makes for them (often a test file's own
/// `gateway(&env, &sshd)`). Keep the `Sshd` alive for the test's duration.
pub fn with_gateway(
    start: impl FnOnce(&TestEnv, &Sshd) -> GatewayProc,
) -> (TestEnv, Sshd, GatewayProc) {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let gw = start(&env, &sshd);
    (env, sshd, gw)
}

/// A gateway whose only target, `slow.test`, sits behind a proxy that waits `delay` before it
/// connects to the sshd: sessions are admitted at once but their target leg is slow to come up.
pub fn slow_target(delay: Duration) -> (TestEnv, Sshd, GatewayProc) {
    let env = TestEnv::new();
    let sshd = env.sshd();
    let slow = delayed_proxy(sshd.address(), delay);
    let gw = env
        .gateway()
        .target_at("slow.test", &format!("127.0.0.1:{slow}"), &sshd.user)
        .start();
    (env, sshd, gw)
}

/// Everything a child that has exited wrote to its stderr (which must have been piped).
pub fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("the child's stderr is piped")
        .read_to_string(&mut err);
    err
}

/// Assert that a command's stderr contains `needle`, showing the stderr when it does not.
#[track_caller]
pub fn assert_stderr_has(out: &Output, needle: &str) {
    assert_text_has("stderr", &text(&out.stderr), needle);
}

/// Assert that a command's stdout contains `needle`, showing the stdout when it does not.
#[track_caller]
pub fn assert_stdout_has(out: &Output, needle: &str) {
    assert_text_has("stdout", &text(&out.stdout), needle);
}

/// Assert that `haystack` contains every one of `needles`, showing it when one is missing.
#[track_caller]
pub fn assert_has_all(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert_text_has("the text", haystack, needle);
    }
}

#[track_caller]
fn assert_text_has(what: &str, haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in {what}:\n{haystack}"
    );
}

/// Assert that a command exited 0, showing its stderr (after `what`) when it did not.
#[track_caller]
pub fn assert_success(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
}
