//! A real `wardengate` process for a test: started from a written config, its ready line read
//! for the listeners' addresses, its log kept for failure messages, and helpers that drive it
//! as a user and an operator would (ssh, psql, wgctl, the REST API).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::*;

/// A running `wardengate run` process.
pub struct GatewayProc {
    child: Option<Child>,
    pub config: PathBuf,
    pub data: PathBuf,
    pub ssh_port: u16,
    /// The PostgreSQL front's port, when it is on.
    pub pg_port: Option<u16>,
    /// The RDP front's port, when it is on.
    pub rdp_port: Option<u16>,
    /// The brokered-TCP listener's port (`[tcp]`), when it is on.
    pub tcp_port: Option<u16>,
    pub api: String,
    pub token: String,
    pub log: Arc<Mutex<String>>,
}

impl GatewayProc {
    pub fn spawn(config: PathBuf, data: PathBuf) -> GatewayProc {
        let mut child = Command::new(bin("wardengate"))
            .args(["run", "--config"])
            .arg(&config)
            .env(
                "RUST_LOG",
                // Benchmarks log less (`WG_GATEWAY_LOG=info`).
                std::env::var("WG_GATEWAY_LOG")
                    .unwrap_or_else(|_| "debug,russh=info,hyper=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wardengate");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                }
                line.clear();
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut ready = String::new();
        stdout.read_line(&mut ready).expect("read ready line");
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
        });
        let log_now = log.lock().map(|l| l.clone()).unwrap_or_default();
        assert!(
            ready.starts_with("wardengate ready:"),
            "gateway did not start: {ready}\n{log_now}"
        );
        // "wardengate ready: ssh=127.0.0.1:PORT api=http://127.0.0.1:PORT"
        let ssh = ready
            .split("ssh=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("ssh addr");
        let api = ready
            .split("api=")
            .nth(1)
            .map(str::trim)
            .expect("api addr")
            .to_string();
        let ssh_port = ssh
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let port_of = |name: &str| {
            ready
                .split(&format!("{name}="))
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
        };
        let pg_port = port_of("postgres");
        let rdp_port = port_of("rdp");
        let tcp_port = port_of("tcp");
        let token = std::fs::read_to_string(data.join("admin.token"))
            .expect("token")
            .trim()
            .to_string();
        GatewayProc {
            child: Some(child),
            config,
            data,
            ssh_port,
            pg_port,
            rdp_port,
            tcp_port,
            api,
            token,
            log,
        }
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// An OpenSSH client command for `login`, with alice's key and non-interactive options.
    pub fn ssh(&self, env: &TestEnv, login: &str) -> Command {
        self.ssh_with(env, login, true)
    }

    /// Like [`ssh`](Self::ssh) without BatchMode, as a person at a terminal runs it: keyboard-
    /// interactive messages are shown, and passwords come from `SSH_ASKPASS` (set by the caller).
    /// (OpenSSH keeps the first value of an option, so BatchMode cannot be overridden later.)
    pub fn ssh_interactive(&self, env: &TestEnv, login: &str) -> Command {
        self.ssh_with(env, login, false)
    }

    fn ssh_with(&self, env: &TestEnv, login: &str, batch: bool) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-o",
            if batch {
                "BatchMode=yes"
            } else {
                "BatchMode=no"
            },
        ]);
        c.args(self.ssh_opts(env))
            .args(["-p", &self.ssh_port.to_string()]);
        c.arg(format!("{login}@127.0.0.1"));
        c
    }

    /// Options shared by ssh, scp, sftp and rsync's `-e` (BatchMode is left to the caller; the
    /// ssh helpers set it, scp/sftp/rsync run without a terminal and never prompt).
    pub fn ssh_opts(&self, env: &TestEnv) -> Vec<String> {
        vec![
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-i".into(),
            env.alice_key.display().to_string(),
        ]
    }

    /// `wgctl` pointed at this gateway.
    /// `psql` through the gateway as `login` (`alice#billing.test`) with alice's password:
    /// `conninfo` adds settings (`sslmode=require`); psql's own arguments follow.
    pub fn psql(&self, login: &str, conninfo: &str) -> Command {
        let port = self.pg_port.expect("the gateway's PostgreSQL front is on");
        let mut c = Command::new("psql");
        c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!(
                "host=127.0.0.1 port={port} user={login} dbname=billing connect_timeout=10 {conninfo}"
            ))
            .env("PGPASSWORD", ALICE_PASSWORD)
            .env_remove("PGPASSFILE")
            .env_remove("PGSERVICE");
        c
    }

    pub fn wgctl(&self) -> Command {
        let mut c = Command::new(bin("wgctl"));
        c.env("WARDENGATE_ADDR", &self.api)
            .env("WARDENGATE_TOKEN", &self.token);
        c
    }

    fn http() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client")
    }

    /// `wgctl policy explain --actor ACTOR --target TARGET`, then `more` arguments
    /// (`--protocol ssh`, `-o json`).
    pub fn policy_explain(&self, actor: &str, target: &str, more: &[&str]) -> Output {
        run(
            self.wgctl()
                .args(["policy", "explain", "--actor", actor, "--target", target])
                .args(more),
            Duration::from_secs(30),
        )
    }

    /// `wgctl session terminate ID --reason REASON` with the admin token.
    pub fn terminate(&self, id: &str, reason: &str) -> Output {
        run(
            self.wgctl()
                .args(["session", "terminate", id, "--reason", reason]),
            Duration::from_secs(60),
        )
    }

    /// GET an API path with the admin token: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &self.token, "")
    }

    /// `method` an API path with `token` (a JSON body unless empty): (status, body).
    pub fn request(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = Self::http()
            .request(method.clone(), format!("{}{path}", self.api))
            .bearer_auth(token);
        if !body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let r = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (r.status().as_u16(), r.text().unwrap_or_default())
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("json")
    }

    /// POST JSON with the admin token: (status, body).
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let r = Self::http()
            .post(format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("POST");
        (r.status().as_u16(), r.text().unwrap_or_default())
    }

    pub fn sessions(&self, query: &str) -> Vec<serde_json::Value> {
        self.get_json(&format!("/api/v1/sessions{query}"))["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn audit(&self, kind: &str) -> Vec<serde_json::Value> {
        self.get_json(&format!("/api/v1/audit?kind={kind}"))["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Wait until `pred` holds for the session list (live sessions), up to `timeout`.
    pub fn wait_sessions(
        &self,
        query: &str,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        poll(
            timeout,
            Duration::from_millis(50),
            || self.sessions(query),
            |s| pred(s),
        )
    }

    /// The most recent closed session, once there is one (a client's exit reaches the registry a
    /// moment after the client process ends).
    #[track_caller]
    pub fn last_closed(&self) -> serde_json::Value {
        let s = self.wait_sessions("?state=closed", Duration::from_secs(20), |s| !s.is_empty());
        s.first().cloned().expect("a closed session")
    }

    /// The most recent closed session, asserting that it ended with `end_reason` and
    /// `end_detail` (`"terminated"`, the operator's reason).
    #[track_caller]
    pub fn last_closed_with(&self, end_reason: &str, end_detail: &str) -> serde_json::Value {
        let s = self.last_closed();
        assert_eq!(
            (s["end_reason"].as_str(), s["end_detail"].as_str()),
            (Some(end_reason), Some(end_detail)),
            "{s}"
        );
        s
    }

    /// What `wgctl recording export ID --format FORMAT` prints (its stdout, as text).
    pub fn recording_export(&self, id: &str, format: &str) -> String {
        let out = run(
            self.wgctl()
                .args(["recording", "export", id, "--format", format]),
            Duration::from_secs(30),
        );
        text(&out.stdout)
    }

    /// The session once it is over and its recording sealed (the seal is written by the
    /// recorder task after the session ends).
    #[track_caller]
    pub fn wait_sealed(&self, id: &str) -> serde_json::Value {
        let s = poll(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || self.get_json(&format!("/api/v1/sessions/{id}")),
            |s| s["recording"].is_object(),
        );
        assert!(s["recording"].is_object(), "not sealed: {s}");
        s
    }

    /// Wait for exactly one active session and return its id.
    #[track_caller]
    pub fn wait_one_active(&self) -> String {
        let live = self.wait_sessions("?state=active", Duration::from_secs(20), |s| s.len() == 1);
        assert_eq!(live.len(), 1, "expected one active session: {live:?}");
        live[0]["id"].as_str().expect("id").to_string()
    }

    /// The API's port (from its address, `http://127.0.0.1:PORT`).
    pub fn api_port(&self) -> u16 {
        self.api
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("api port")
    }

    /// The gateway's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("gateway running")
    }

    /// Wait for the first audit event of `kind`.
    #[track_caller]
    pub fn wait_audit(&self, kind: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.audit(kind).into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} audit event within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send SIGTERM and wait for the process to exit.
    /// `kill -9`: the gateway dies without a word (no shutdown, no flush).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        wait_timeout(&mut child, Duration::from_secs(20))
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- last gateway log lines ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
