//! A throwaway Windows-like RDP target: FreeRDP's shadow server (`freerdp-shadow-cli`) sharing an
//! Xvfb desktop with something on it (`xlogo`, red), NLA required with an account kept in a SAM
//! file. The demo RDP target of `wardengate dev` and the RDP target of the end-to-end tests.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A virtual X display, killed on drop.
pub struct Xvfb {
    child: Child,
    /// The display number (`:N`).
    pub display: u32,
}

impl Xvfb {
    /// Start Xvfb on a free display with one screen of `width`×`height`, 24-bit.
    ///
    /// Displays are taken by racing for them: the display is ours only once Xvfb's lock file
    /// names the Xvfb we started (a socket alone may belong to a concurrent start that won).
    pub fn start(width: u32, height: u32) -> Result<Xvfb> {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let spread = std::process::id()
            .wrapping_mul(7)
            .wrapping_add(STARTS.fetch_add(1, Ordering::Relaxed));
        let first = 100 + spread % 500;
        for n in (first..700).chain(100..first) {
            // A lock left by a killed Xvfb is stale: the X server replaces it itself.
            let lock = Path::new(&format!("/tmp/.X{n}-lock")).exists();
            if lock && lock_owner(n).is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
                continue;
            }
            let mut child = { let mut c = crate::children::command("Xvfb"); c
                .arg(format!(":{n}"))
                .args(["-screen", "0", &format!("{width}x{height}x24"), "-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()); crate::children::spawn(c) }
                .context("cannot start Xvfb; install it with `apt-get install xvfb` (scripts/dev and scripts/test do this)")?;
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if socket.exists() && lock_owner(n) == Some(child.id()) {
                    return Ok(Xvfb { child, display: n });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost a race for this display: try the next
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("cannot start Xvfb on any display from :100 to :699")
    }

    /// `:N`, for `DISPLAY`.
    pub fn name(&self) -> String {
        format!(":{}", self.display)
    }
}

/// The pid written in display `n`'s lock file (Xvfb writes it, right-aligned, on creation).
fn lock_owner(n: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/tmp/.X{n}-lock")).ok()?;
    text.trim().parse().ok()
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The desktop and its RDP server, killed on drop.
pub struct Desktop {
    server: Child,
    logo: Child,
    pub xvfb: Xvfb,
    pub port: u16,
    /// The Windows account and its password (in the SAM file).
    pub user: String,
    pub password: String,
    pub dir: PathBuf,
}

impl Desktop {
    /// Start a 1024×768 desktop in `dir` (the SAM file) served on `port` (0: pick one).
    pub fn start(dir: &Path, port: u16, user: &str, password: &str) -> Result<Desktop> {
        Self::start_sized(dir, port, user, password, (1024, 768))
    }

    /// [`Desktop::start`] with a desktop of `size` (width, height).
    pub fn start_sized(
        dir: &Path,
        port: u16,
        user: &str,
        password: &str,
        size: (u16, u16),
    ) -> Result<Desktop> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let port = if port == 0 {
            crate::sshd::free_port()?
        } else {
            port
        };
        let sam = dir.join("sam");
        // The NT hash (MD4 of the UTF-16LE password) logs in like the password (pass-the-hash into
        // the desktop): the file is its owner's only.
        let utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let hash = hex::encode(<md4::Md4 as md4::Digest>::digest(&utf16));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&sam)
                .and_then(|mut f| f.write_all(format!("{user}:::{hash}:::\n").as_bytes()))
                .with_context(|| format!("cannot write {}", sam.display()))?;
        }
        let xvfb = Xvfb::start(u32::from(size.0), u32::from(size.1))?;
        let logo = {
            let mut c = crate::children::command("xlogo");
            c.args(["-geometry", "400x300+100+80", "-bg", "red", "-fg", "white"])
                .env("DISPLAY", xvfb.name())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            crate::children::spawn(c)
        }
        .context("cannot start xlogo; install it with `apt-get install x11-apps`")?;
        let log = std::fs::File::create(dir.join("shadow.log"))?;
        let server = { let mut c = crate::children::command("freerdp-shadow-cli"); c
            .arg(format!("/port:{port}"))
            .arg("/bind-address:127.0.0.1")
            .arg(format!("/sam-file:{}", sam.display()))
            .args(["+auth", "/sec:nla"])
            .env("DISPLAY", xvfb.name())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log); crate::children::spawn(c) }
            .context("cannot start freerdp-shadow-cli; install it with `apt-get install freerdp2-shadow-x11`")?;
        let mut d = Desktop {
            server,
            logo,
            xvfb,
            port,
            user: user.into(),
            password: password.into(),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || matches!(d.server.try_wait(), Ok(Some(_))) {
                let log = std::fs::read_to_string(dir.join("shadow.log")).unwrap_or_default();
                bail!("freerdp-shadow-cli did not start on port {port}: {log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(d)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for c in [&mut self.server, &mut self.logo] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
