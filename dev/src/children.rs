//! Long-running children of dev mode and of the tests (sshd, postgres, Xvfb, FreeRDP) die with
//! the process that started them, even when it is killed with `kill -9` and has no chance to stop
//! them: each is started through `setpriv --pdeathsig KILL` (util-linux), so the kernel sends it
//! SIGKILL when its parent goes.
//!
//! The kernel sends that signal when the parent *thread* ends, not the process. Tokio's blocking
//! threads end after a few idle seconds, which would take the children with them, so every child
//! is spawned by one thread of this module's that lives as long as the process.

use std::io;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();

fn setpriv() -> Option<&'static str> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// A command for `program` that dies with this process (plain `program` where util-linux's
/// `setpriv` is missing). Add arguments and stdio as usual, then start it with [`spawn`].
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match setpriv() {
        Some(sp) => {
            let mut c = Command::new(sp);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Start `cmd` (from [`command`]) on the process-long spawning thread.
pub fn spawn(cmd: Command) -> io::Result<Child> {
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        let started = std::thread::Builder::new()
            .name("dev-children".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            tracing::error!("cannot start the thread that starts dev children: {e}");
        }
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    tx.lock()
        .map_err(|_| io::Error::other("the spawning thread's lock is poisoned"))?
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the spawning thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawning thread is gone"))?
}

/// Whether process `pid` is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_started_here_runs_and_is_alive() {
        let mut c = command("sleep");
        c.arg("30");
        let mut child = spawn(c).expect("spawn sleep");
        assert!(alive(child.id()));
        child.kill().expect("kill");
        let _ = child.wait();
        assert!(!alive(child.id()));
    }
}
