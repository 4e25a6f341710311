//! Where policies come from (policy files and directories named in the config) and which
//! concurrency limits apply to a request (the most specific configured value at each level).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wardengate_policy::{Entry, Policy};

use super::model::{Config, Identity, Loaded, Target};

impl Loaded {
    /// The limits that apply to `user` opening a session to `target` under `policy`: the most
    /// specific configured value at each level.
    pub fn limits(
        &self,
        user: &Identity,
        target: &Target,
        policy: &Policy,
    ) -> wardengate_policy::Limits {
        wardengate_policy::Limits {
            actor: user.max_sessions,
            target: target
                .max_sessions
                .or(self.config.limits.max_sessions_per_target),
            policy: policy.concurrency.max,
            pool: self.config.gateway.max_active,
            on_actor_limit: self.config.limits.on_limit,
        }
    }
}

/// Read the policy files listed in the config (files, or directories of `*.toml`).
pub(crate) fn load(config: &Config, base: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for listed in &config.gateway.policy_files {
        let path = if listed.is_absolute() {
            listed.clone()
        } else {
            base.join(listed)
        };
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .with_context(|| format!("cannot read policy directory {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            files
        } else {
            vec![path]
        };
        for f in files {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read policy file {}", f.display()))?;
            out.extend(wardengate_policy::parse_file(
                &text,
                &f.display().to_string(),
            )?);
        }
    }
    Ok(out)
}
