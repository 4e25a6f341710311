//! `wgctl login` / `wgctl logout`: sign in through the gateway's page (password and security
//! key) and keep the short-lived token in `~/.config/wardengate/credentials` (mode 0600), which
//! later commands use when no `--token` / `WARDENGATE_TOKEN` is given.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wardengate_api as api;

use crate::client::Client;

/// What `wgctl login` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub addr: String,
    pub user: String,
    pub token: String,
    pub expires_ms: u64,
}

/// `$XDG_CONFIG_HOME/wardengate/credentials`, else `~/.config/wardengate/credentials`.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("wardengate").join("credentials"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The kept credentials, unless absent; an expired sign-in is an error that says so.
pub fn load() -> Result<Option<Credentials>> {
    let Some(p) = path() else { return Ok(None) };
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(None);
    };
    let c: Credentials = serde_json::from_str(&text)
        .with_context(|| format!("{} is not wgctl's credentials file", p.display()))?;
    if c.expires_ms <= now_ms() {
        bail!("your sign-in as {} has expired: run `wgctl login`", c.user);
    }
    Ok(Some(c))
}

fn save(c: &Credentials) -> Result<PathBuf> {
    let p =
        path().ok_or_else(|| anyhow!("no HOME or XDG_CONFIG_HOME to keep the credentials in"))?;
    if let Some(dir) = p.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        // An older file keeps its mode on open: tighten it.
        if let Ok(m) = std::fs::metadata(&p) {
            let mut perm = m.permissions();
            perm.set_mode(0o600);
            let _ = std::fs::set_permissions(&p, perm);
        }
    }
    let mut f = o
        .open(&p)
        .with_context(|| format!("cannot write {}", p.display()))?;
    std::io::Write::write_all(&mut f, serde_json::to_string_pretty(c)?.as_bytes())
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(p)
}

pub fn login(c: Client) -> Result<()> {
    let s: api::LoginStarted = c.post("/api/v1/login/device", &json!({}))?;
    crate::output::note(&format!(
        "Open this link in a browser and check that it shows the code {}:\n\n  {}\n\n\
         Sign in there with your password and security key (within {}). Waiting…",
        s.user_code,
        s.url,
        wardengate_recorder::time::human_secs(s.expires_in_secs)
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(s.expires_in_secs);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(s.interval_secs.max(1)));
        let p: api::LoginPoll = c.post(
            "/api/v1/login/poll",
            &json!({ "device_code": s.device_code }),
        )?;
        if p.status == "ok" {
            let creds = Credentials {
                addr: c.base().to_string(),
                user: p.user.unwrap_or_default(),
                token: p
                    .token
                    .ok_or_else(|| anyhow!("the gateway sent no token"))?,
                expires_ms: p.expires_ms.unwrap_or(0),
            };
            let file = save(&creds)?;
            std::io::Write::write_all(
                &mut std::io::stdout(),
                format!(
                    "signed in to {} as {} for {} (token in {})\n",
                    creds.addr,
                    creds.user,
                    // To the minute: the poll came a moment after the token was made.
                    wardengate_recorder::time::human_secs(
                        (creds.expires_ms.saturating_sub(now_ms()) / 1000 + 30) / 60 * 60
                    ),
                    file.display()
                )
                .as_bytes(),
            )?;
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("nobody signed in within the time; run wgctl login again");
        }
    }
}

pub fn logout(c: Client) -> Result<()> {
    let _: serde_json::Value = c.post("/api/v1/logout", &json!({})).or_else(|e| {
        // An expired or revoked token is signed out already.
        if e.to_string().contains("HTTP 401") {
            Ok(serde_json::Value::Null)
        } else {
            Err(e)
        }
    })?;
    if let Some(p) = path() {
        let _ = std::fs::remove_file(&p);
    }
    println!("signed out");
    Ok(())
}
