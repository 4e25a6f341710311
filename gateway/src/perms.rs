//! File permissions of what holds secrets: the config (password hashes, SCRAM verifiers and NT
//! hashes, which log in like the password itself), the data directory (store, vault key, host
//! and recording keys, admin token, recordings) and dev mode's demo files.
//!
//! The daemon runs with umask 077, so everything it creates is 0600 (directories 0700); at start
//! it tightens a data directory left looser by an older version, and refuses to start when the
//! config or a key file can be read by other users (`--allow-insecure-permissions` turns the
//! refusal into a loud warning).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Files and directories the daemon creates are its owner's only.
pub fn restrict_umask() {
    #[cfg(unix)]
    {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
}

/// A permission problem of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loose {
    pub path: PathBuf,
    pub mode: u32,
}

impl std::fmt::Display for Loose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is mode {:04o}: other users can {}",
            self.path.display(),
            self.mode & 0o7777,
            if self.mode & 0o022 != 0 {
                "change it"
            } else {
                "read it"
            }
        )
    }
}

/// `path` when other users (group or world) can read or write it.
pub fn loose(path: &Path) -> Option<Loose> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then(|| Loose {
            path: path.to_path_buf(),
            mode,
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Refuse (or, when `allow`, warn loudly) when any of `files` is open to other users.
pub fn check_private(files: &[PathBuf], allow: bool) -> Result<()> {
    let problems: Vec<Loose> = files.iter().filter_map(|f| loose(f)).collect();
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    let fix: Vec<String> = problems
        .iter()
        .map(|p| p.path.display().to_string())
        .collect();
    if allow {
        tracing::warn!(
            "INSECURE: files holding secrets are open to other users (started anyway because of \
             --allow-insecure-permissions):\n{}",
            list.join("\n")
        );
        return Ok(());
    }
    bail!(
        "files holding secrets are open to other users:\n{}\nfix with: chmod go= {}\n(or start \
         with --allow-insecure-permissions to run anyway)",
        list.join("\n"),
        fix.join(" ")
    )
}

/// Make the data directory 0700 and everything in it its owner's only (0600 files, 0700
/// directories). Returns how many entries were tightened.
pub fn tighten_data_dir(dir: &Path) -> Result<usize> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    anyhow::anyhow!("cannot create data directory {}: {e}", dir.display())
                })?;
        }
        let mut n = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if let Ok(m) = std::fs::symlink_metadata(&d) {
                if m.is_dir() && m.permissions().mode() & 0o077 != 0 {
                    let mode = m.permissions().mode() & 0o700 | 0o700;
                    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| anyhow::anyhow!("cannot restrict {}: {e}", d.display()))?;
                    n += 1;
                }
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(m) = e.path().symlink_metadata() else {
                    continue;
                };
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.is_file() && m.permissions().mode() & 0o077 != 0 {
                    let mode = m.permissions().mode() & 0o700;
                    std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode))
                        .map_err(|err| {
                            anyhow::anyhow!("cannot restrict {}: {err}", e.path().display())
                        })?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)?;
        Ok(0)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn loose_files_refuse_start_unless_allowed() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("gw.toml");
        std::fs::write(&cfg, "x").expect("write");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = check_private(std::slice::from_ref(&cfg), false).expect_err("world-readable");
        let e = e.to_string();
        assert!(e.contains("mode 0644: other users can read it"), "{e}");
        assert!(e.contains("chmod go="), "{e}");
        check_private(std::slice::from_ref(&cfg), true).expect("allowed with the flag");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        check_private(&[cfg], false).expect("0600 is fine");
    }

    #[test]
    fn data_dir_is_tightened() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("recordings/sess_1")).expect("mkdir");
        for d in [
            &data,
            &data.join("recordings"),
            &data.join("recordings/sess_1"),
        ] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let db = data.join("wardengate.db");
        let chunk = data.join("recordings/sess_1/00000000.chunk");
        for f in [&db, &chunk] {
            std::fs::write(f, "x").expect("write");
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let n = tighten_data_dir(&data).expect("tighten");
        assert_eq!(n, 5);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("recordings/sess_1")), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&chunk), 0o600);
        assert_eq!(tighten_data_dir(&data).expect("again"), 0);
    }
}
