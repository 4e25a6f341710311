//! Plain TCP services for brokered TCP sessions (`protocol = "tcp"` targets): a real
//! `redis-server` and a real HTTP server (Python's `http.server` serving a directory), each on a
//! loopback port, killed on drop.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running service, killed on drop.
pub struct Service {
    child: Option<Child>,
    pub port: u16,
    pub name: &'static str,
}

impl Service {
    /// `host:port` of the service.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop it now.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start `cmd` (its log in `log`) and wait until `port` accepts connections.
fn start(
    name: &'static str,
    mut cmd: std::process::Command,
    port: u16,
    log: &Path,
) -> Result<Service> {
    let file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let mut child = crate::children::spawn(cmd).with_context(|| format!("cannot start {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!(
                "{name} exited ({status}) before listening on {port}: {}",
                log.trim()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{name} did not listen on port {port} within 10s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Service {
        child: Some(child),
        port,
        name,
    })
}

/// A throwaway `redis-server` in `dir` (no persistence) on `port` (0: pick one).
pub fn redis(dir: &Path, port: u16) -> Result<Service> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let port = match port {
        0 => crate::sshd::free_port()?,
        p => p,
    };
    let bin = which("redis-server").context(
        "redis-server is not installed (scripts/test and scripts/dev install the redis-server package)",
    )?;
    let mut c = crate::children::command(bin);
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir);
    start("redis-server", c, port, &dir.join("redis.log"))
}

/// A throwaway HTTP server serving the files of `root` on `port` (0: pick one): Python's
/// `http.server`, a real HTTP/1.0 server.
pub fn http(root: &Path, port: u16) -> Result<Service> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let port = match port {
        0 => crate::sshd::free_port()?,
        p => p,
    };
    let bin = which("python3").context("python3 is not installed (scripts/test installs it)")?;
    let mut c = crate::children::command(bin);
    c.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--directory")
    .arg(root);
    let log = root.with_extension("log");
    start("http.server", c, port, &log)
}

/// A program on `PATH` (or in /usr/sbin, /usr/bin).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
