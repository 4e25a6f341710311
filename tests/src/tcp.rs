//! Brokered TCP sessions from a test: `wgctl target authorize` and `wgctl proxy` as a person
//! runs them (with that person's own token), and a raw RESP client for connections a test holds
//! open.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{bin, run, GatewayProc};

/// `wgctl` as the person whose API token is `token`.
pub fn wgctl_as(gw: &GatewayProc, token: &str) -> Command {
    let mut c = Command::new(bin("wgctl"));
    c.env("WARDENGATE_ADDR", &gw.api)
        .env("WARDENGATE_TOKEN", token);
    c
}

/// `wgctl target authorize TARGET -o json [more]` as `token`'s person.
pub fn authorize(gw: &GatewayProc, token: &str, target: &str, more: &[&str]) -> Output {
    run(
        wgctl_as(gw, token)
            .args(["target", "authorize", target, "-o", "json"])
            .args(more),
        Duration::from_secs(30),
    )
}

/// The authorization of a successful `authorize`, as JSON.
#[track_caller]
pub fn authorized(gw: &GatewayProc, token: &str, target: &str, more: &[&str]) -> serde_json::Value {
    let out = authorize(gw, token, target, more);
    crate::assert_success(&out, "wgctl target authorize");
    serde_json::from_slice(&out.stdout).expect("authorization JSON")
}

/// A running `wgctl proxy`: its local port, and what it says on stderr.
pub struct Proxy {
    child: Child,
    pub port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Proxy {
    /// `wgctl proxy --authz AUTHZ -o json` as `token`'s person; waits for its listener.
    #[track_caller]
    pub fn start(gw: &GatewayProc, token: &str, authz: &str) -> Proxy {
        Self::try_start(gw, token, authz).unwrap_or_else(|e| panic!("wgctl proxy: {e}"))
    }

    /// [`start`](Self::start), or what the proxy said when it stopped without a listener.
    pub fn try_start(gw: &GatewayProc, token: &str, authz: &str) -> Result<Proxy, String> {
        let mut child = wgctl_as(gw, token)
            .args(["proxy", "--authz", authz, "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wgctl proxy");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut json = String::new();
        let mut line = String::new();
        while out.read_line(&mut line).unwrap_or(0) > 0 {
            json.push_str(&line);
            if line.trim_end() == "}" {
                break;
            }
            line.clear();
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) else {
            let _ = crate::wait_timeout(&mut child, Duration::from_secs(10));
            // The reader thread has what the proxy said before it stopped.
            std::thread::sleep(Duration::from_millis(100));
            return Err(stderr.lock().map(|s| s.clone()).unwrap_or_default());
        };
        let port = v["port"].as_u64().expect("port") as u16;
        Ok(Proxy {
            child,
            port,
            stderr,
        })
    }

    /// What the proxy said on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait for the proxy to stop on its own (up to `timeout`): whether it did.
    pub fn exited_within(&mut self, timeout: Duration) -> bool {
        crate::wait_timeout(&mut self.child, timeout).is_some()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli -p PORT ARGS` (a real client, through whatever listens on `port`).
pub fn redis_cli(port: u16, args: &[&str]) -> Output {
    run(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        Duration::from_secs(30),
    )
}

/// A RESP connection a test holds open.
pub struct Resp(pub TcpStream);

impl Resp {
    pub fn connect(port: u16) -> Resp {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Resp(s)
    }

    /// Send one command; the reply's first line (`+PONG`, `$3`, `-ERR ...`), or `None` when
    /// the connection was closed instead.
    pub fn command(&mut self, args: &[&str]) -> Option<String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.0.write_all(req.as_bytes()).ok()?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match self.0.read(&mut b) {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) => line.push(b[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&line).trim_end().to_string())
    }

    /// Whether the other side closes the connection within `limit` (reads return 0 or fail).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let _ = self.0.set_read_timeout(Some(limit));
        let mut b = [0u8; 64];
        match self.0.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// One connection to the gateway's `[tcp]` listener as a client other than wgctl would make
/// it (`openssl s_client`, no certificate check): the hello line with `authz` and `token`,
/// and the gateway's answer (`TcpReply` as JSON; `null` when it closed without one).
pub fn hello(gw: &GatewayProc, authz: &str, token: &str) -> serde_json::Value {
    let port = gw.tcp_port.expect("the gateway's [tcp] listener");
    let line = serde_json::json!({"authz": authz, "token": token}).to_string() + "\n";
    let out = crate::run_with_input(
        Command::new("openssl").args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ]),
        Some(line.into_bytes()),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or(serde_json::Value::Null)
}
