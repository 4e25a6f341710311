//! A client process kept running while the test acts: feed its stdin, watch its output, kill it.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often [`Live::expect`] looks at the output.
const POLL: Duration = Duration::from_millis(25);

/// A running client (usually `ssh -tt`), stdout and stderr collected together.
pub struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Live {
    pub fn spawn(cmd: &mut Command) -> Live {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn client");
        let out = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut o) = out.lock() {
                        o.extend_from_slice(&buf[..n]);
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Live { child, stdin, out }
    }

    /// Everything printed so far (stdout and stderr), lossily decoded.
    pub fn output(&self) -> String {
        self.out
            .lock()
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .unwrap_or_default()
    }

    /// Type `text`.
    pub fn send(&mut self, text: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = s.write_all(text.as_bytes());
            let _ = s.flush();
        }
    }

    /// Wait until the output contains `needle`; panics with the output when it does not in time.
    #[track_caller]
    pub fn expect(&self, needle: &str, timeout: Duration) {
        crate::wait_for_text("the client's output", needle, timeout, POLL, || {
            self.output()
        });
    }

    /// Wait for the client to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::wait_timeout(&mut self.child, timeout)
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL: the client vanishes without a goodbye, as when a laptop loses its network.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
