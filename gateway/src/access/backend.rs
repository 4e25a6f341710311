//! The two ways a resource's allow rule is put in place and removed: an element of an nftables
//! set (through `nft`, in the gateway's network namespace or a named one), or the operator's own
//! programs. Every call has a deadline; a failure carries the program's stderr, capped and made
//! inert, for the session's rule and the audit.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::config::{BackendKind, Resource};

/// Most of a program's stderr kept in an error.
const MAX_ERROR: usize = 1024;

/// What to do with a resource's rule for one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Apply,
    Revoke,
    /// Whether the rule is in place (exit 0: yes).
    Check,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Apply => "apply",
            Op::Revoke => "revoke",
            Op::Check => "check",
        }
    }
}

/// A child with none of the gateway's environment (its tokens and keys may be there): a
/// `PATH`, `LANG=C`, and what the caller adds.
fn clean(cmd: &mut Command) {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    cmd.env_clear().env("PATH", path).env("LANG", "C");
}

/// Run `op` for `ip` on resource `r` (for `session`). `Ok(false)` only for a check that found
/// the rule missing; `Ok(true)` when a command resource has no `check` (cannot tell).
pub async fn run(
    r: &Resource,
    op: Op,
    ip: IpAddr,
    session: &str,
    timeout: Duration,
) -> Result<bool, String> {
    let ip = ip.to_canonical();
    let (mut cmd, stdin) = match r.backend {
        BackendKind::Nftables => nft(r, op, ip),
        BackendKind::Command => {
            let argv = match op {
                Op::Apply => &r.apply,
                Op::Revoke => &r.revoke,
                Op::Check if r.check.is_empty() => return Ok(true),
                Op::Check => &r.check,
            };
            let Some((program, args)) = argv.split_first() else {
                return Err(format!("resource {} has no {} program", r.name, op.verb()));
            };
            let mut c = Command::new(program);
            c.args(args)
                .args([r.name.as_str(), &ip.to_string(), session]);
            (c, None)
        }
    };
    clean(&mut cmd);
    if r.backend == BackendKind::Command {
        cmd.env("WARDENGATE_RESOURCE", &r.name)
            .env("WARDENGATE_ADDRESS", ip.to_string())
            .env("WARDENGATE_SESSION", session)
            .env("WARDENGATE_OP", op.verb());
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let what = || match r.backend {
        BackendKind::Nftables => "nft".to_string(),
        BackendKind::Command => format!("{} program", op.verb()),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the {}: {e}", what()))?;
    let done = async {
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await?;
            drop(pipe);
        }
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(timeout, done).await {
        Err(_) => {
            return Err(format!(
                "the {} did not finish within {} (access.command_timeout)",
                what(),
                wardengate_policy::Dur(timeout)
            ))
        }
        Ok(Err(e)) => return Err(format!("the {} failed: {e}", what())),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(true);
    }
    if op == Op::Check {
        return Ok(false);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let err = wardengate_api::text::inert(err.trim(), MAX_ERROR);
    let status = out
        .status
        .code()
        .map_or("was killed".to_string(), |c| format!("exited with {c}"));
    Err(match err.is_empty() {
        true => format!("the {} {status}", what()),
        false => format!("the {} {status}: {err}", what()),
    })
}

/// How a batch failed: `nft` refused it (try the rules one by one to learn which), or it did
/// not answer in time (then none is tried again: each would wait as long).
#[derive(Debug)]
pub enum BatchError {
    Refused(String),
    TimedOut(String),
}

/// Several nftables rules of one namespace in one `nft` batch (one transaction, one commit,
/// where one call per rule pays the kernel's commit each time): all applied or removed, or none.
pub async fn nft_batch(
    ops: &[(&Resource, IpAddr)],
    op: Op,
    timeout: Duration,
) -> Result<(), BatchError> {
    let Some((first, _)) = ops.first() else {
        return Ok(());
    };
    let (mut cmd, _) = nft(first, op, ops[0].1);
    clean(&mut cmd);
    let mut batch = String::new();
    for (r, ip) in ops {
        batch.push_str(&script(r, op, ip.to_canonical()));
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| BatchError::Refused(format!("cannot run the nft: {e}")))?;
    let done = async {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(batch.as_bytes()).await?;
            drop(pipe);
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, done).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(BatchError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
        Ok(Err(e)) => Err(BatchError::Refused(e.to_string())),
        Err(_) => Err(BatchError::TimedOut(format!(
            "the nft did not finish within {} (access.command_timeout)",
            wardengate_policy::Dur(timeout)
        ))),
    }
}

/// `nft -f -` (inside the namespace with `ip netns exec`) and its batch, applied atomically:
/// the table and the sets are created when missing, so a fresh host works; a revoke adds the
/// element before deleting it, so removing a rule someone already deleted by hand succeeds.
fn nft(r: &Resource, op: Op, ip: IpAddr) -> (Command, Option<String>) {
    let table = r.table();
    let set = match ip {
        IpAddr::V4(_) => r.set(),
        IpAddr::V6(_) => format!("{}_v6", r.set()),
    };
    let mut cmd = match &r.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    if op == Op::Check {
        cmd.args([
            "get",
            "element",
            "inet",
            table,
            &set,
            "{",
            &ip.to_string(),
            "}",
        ]);
        return (cmd, None);
    }
    cmd.args(["-f", "-"]);
    (cmd, Some(script(r, op, ip)))
}

/// The batch lines that apply or remove `ip` on `r`.
fn script(r: &Resource, op: Op, ip: IpAddr) -> String {
    let table = r.table();
    let (set, ty) = match ip {
        IpAddr::V4(_) => (r.set(), "ipv4_addr"),
        IpAddr::V6(_) => (format!("{}_v6", r.set()), "ipv6_addr"),
    };
    let mut batch = format!(
        "add table inet {table}\nadd set inet {table} {set} {{ type {ty}; }}\nadd element inet {table} {set} {{ {ip} }}\n"
    );
    if op == Op::Revoke {
        batch.push_str(&format!("delete element inet {table} {set} {{ {ip} }}\n"));
    }
    batch
}
