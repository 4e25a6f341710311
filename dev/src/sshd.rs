//! A throwaway OpenSSH `sshd` on a loopback port: the demo target of `wardengate dev` and the SSH
//! target of the end-to-end tests.
//!
//! It runs in the foreground (`-D`) as the invoking user with a generated host key and an
//! `authorized_keys` file of our choosing. Run as root it accepts logins as root; run as another
//! user it can only log that user in, so the target account is always the invoking user.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A running `sshd`, killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// The login name the target accepts (the invoking user).
    pub user: String,
}

/// Where Debian's openssh-server puts sshd.
pub fn sshd_path() -> Result<PathBuf> {
    for p in ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("OpenSSH server (sshd) not found; install it with `apt-get install openssh-server` (scripts/dev and scripts/test do this)")
}

/// The invoking user's login name.
pub fn current_user() -> String {
    if let Ok(out) = Command::new("id").arg("-un").output() {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !name.is_empty() {
            return name;
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// A loopback port that is free right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Sshd {
    /// Start sshd in `dir` (created if needed) on `port` (0: pick one), trusting `authorized_keys`.
    /// The host key at `dir/ssh_host_ed25519_key` is generated when missing, so restarting in the
    /// same directory keeps the same host key.
    pub fn start(dir: &Path, port: u16, authorized_keys: &[String]) -> Result<Sshd> {
        let sshd = sshd_path()?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let host_key = dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            let out = Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "demo target host key",
                    "-f",
                ])
                .arg(&host_key)
                .stdin(Stdio::null())
                .output()
                .context("cannot run ssh-keygen (install openssh-client)")?;
            if !out.status.success() {
                bail!(
                    "ssh-keygen could not make the demo host key {}: {}",
                    host_key.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        std::fs::write(
            dir.join("authorized_keys"),
            authorized_keys.join("\n") + "\n",
        )?;
        let port = if port == 0 { free_port()? } else { port };
        // `SetEnv PYENV_REHASH_TIMEOUT=1` below: sshd runs commands through the account's bash,
        // which reads ~/.bashrc; on machines whose .bashrc runs `pyenv init`, a session killed
        // during startup (terminate tests do that) can leave pyenv's rehash lock behind, and every
        // later command would wait 60 s for it.
        // Privilege separation needs this directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             Subsystem sftp internal-sftp\nAllowTcpForwarding yes\nAcceptEnv LANG LC_* WG_*\n\
             PrintMotd no\nPrintLastLog no\nMaxStartups 4000\nMaxSessions 1000\nLogLevel ERROR\n\
             SetEnv PYENV_REHASH_TIMEOUT=1\n",
            hk = host_key.display(),
            dir = dir.display(),
        );
        let cfg_path = dir.join("sshd_config");
        std::fs::write(&cfg_path, config)?;
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let child = {
            let mut c = crate::children::command(&sshd);
            c.arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            crate::children::spawn(c)
        }
        .with_context(|| format!("cannot start {}", sshd.display()))?;
        let mut me = Sshd {
            child,
            port,
            dir: dir.clone(),
            user: current_user(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = me.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
                bail!(
                    "sshd exited ({status}) before listening on port {port}: {}",
                    log.trim()
                );
            }
            if Instant::now() > deadline {
                bail!("sshd did not listen on port {port} within 10s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop sshd (the port is free again when this returns).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn host_key_pub(&self) -> Result<String> {
        std::fs::read_to_string(self.dir.join("ssh_host_ed25519_key.pub"))
            .map(|s| s.trim().to_string())
            .map_err(|e| anyhow!("cannot read sshd host key: {e}"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
