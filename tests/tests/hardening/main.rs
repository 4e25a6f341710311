//! The attacks and faults of issue #14, each reproduced against a real gateway process: password
//! guessing (memory, throttling, the real user still getting in), stalled connections on every
//! listener, user enumeration, hostile strings, file permissions, a crash mid-session, a hijacked
//! target account, port forwarding, PostgreSQL cancel-key guessing, and audit tampering.

mod auth;
mod data;
mod listeners;
mod network;

use std::process::Command;
use std::time::Duration;

use wardengate_tests::*;

pub const T: Duration = Duration::from_secs(60);

/// An askpass script answering every prompt with `password` and noting each prompt in
/// `NAME.prompts` (so a test can see what it was asked).
pub fn askpass(env: &TestEnv, name: &str, password: &str) -> std::path::PathBuf {
    let p = env.path(name);
    let log = env.path(&format!("{name}.prompts"));
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\necho '{password}'\n",
            log.display()
        ),
    )
    .expect("askpass");
    let _ = Command::new("chmod").arg("+x").arg(&p).status();
    p
}

/// `ssh` as a person at a terminal would run it, with passwords from `askpass`.
pub fn ssh_with_password(
    gw: &GatewayProc,
    env: &TestEnv,
    login: &str,
    askpass: &std::path::Path,
) -> Command {
    let mut c = gw.ssh_interactive(env, login);
    c.args(["-o", "PreferredAuthentications=keyboard-interactive"])
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force");
    c
}
