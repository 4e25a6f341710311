//! A real terminal for a test: a tmux server on a private socket, one window per program, and
//! the screen read back with `capture-pane` (what a person would see, scrollback included).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{assert_success, GatewayProc, TestEnv};

/// A command line as tmux runs it.
pub fn argv(c: &Command) -> Vec<String> {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// An interactive `ssh -t LOGIN` through the gateway in tmux window `win`, prompt set to `$ `;
/// returns the id of the session it opened.
pub fn shell(tmux: &Tmux, gw: &GatewayProc, env: &TestEnv, win: &str, login: &str) -> String {
    let t = Duration::from_secs(20);
    let before: Vec<String> = gw
        .sessions("?state=active")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    let mut c = gw.ssh(env, login);
    c.arg("-t");
    tmux.spawn(win, &[], &argv(&c));
    let fresh = |s: &serde_json::Value| {
        s["pty"].is_object() && !before.iter().any(|b| s["id"] == b.as_str())
    };
    let live = gw.wait_sessions("?state=active", t, |s| s.iter().any(fresh));
    let id = live
        .iter()
        .find(|s| fresh(s))
        .and_then(|s| s["id"].as_str())
        .expect("a new session with a terminal")
        .to_string();
    tmux.line(win, "PS1='$ '");
    id
}

pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// A tmux server whose socket lives in `dir`.
    pub fn new(dir: &std::path::Path) -> Tmux {
        Tmux {
            socket: dir.join("tmux.sock"),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).env_remove("TMUX");
        c
    }

    /// Run `argv` (with `env`) in a new 100x30 window named `name`.
    pub fn spawn(&self, name: &str, env: &[(&str, &str)], argv: &[String]) {
        let mut c = self.cmd();
        c.args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "-s",
            name,
        ]);
        for (k, v) in env {
            c.arg("-e").arg(format!("{k}={v}"));
        }
        // The window stays after the program exits, so its last words can be read.
        let script = format!(
            "{}; echo; echo '[exited]'; sleep 600",
            argv.iter()
                .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
                .collect::<Vec<_>>()
                .join(" ")
        );
        c.arg(script);
        let out = c.output().expect("tmux new-session");
        assert_success(&out, "tmux");
    }

    /// Type `keys` (tmux key names allowed, e.g. `Enter`, `C-]`) into window `name`.
    pub fn keys(&self, name: &str, keys: &[&str]) {
        let out = self
            .cmd()
            .args(["send-keys", "-t", name])
            .args(keys)
            .output()
            .expect("tmux send-keys");
        assert_success(&out, "tmux");
    }

    /// Type `text` literally, then Enter.
    pub fn line(&self, name: &str, text: &str) {
        let out = self
            .cmd()
            .args(["send-keys", "-t", name, "-l", text])
            .output()
            .expect("tmux send-keys");
        assert!(out.status.success());
        self.keys(name, &["Enter"]);
    }

    /// The window's screen and scrollback as text.
    pub fn screen(&self, name: &str) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-J", "-S", "-2000", "-t", name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Only what is on the window's screen now.
    pub fn visible(&self, name: &str) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until window `name` shows `needle` (scrollback included).
    #[track_caller]
    pub fn expect(&self, name: &str, needle: &str, timeout: Duration) -> String {
        crate::wait_for_text(
            &format!("window {name}"),
            needle,
            timeout,
            Duration::from_millis(50),
            || self.screen(name),
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}
