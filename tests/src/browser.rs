//! A real browser in the end-to-end tests: Debian's headless Chromium, driven over the Chrome
//! DevTools Protocol (a WebSocket; only `Runtime.evaluate` and `Page.navigate` are used).

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// What the desktop shadow/replay page shows (its `window.wgShadow`), for [`Chromium::eval`].
pub const PAGE_STATUS: &str =
    "(() => { const s = window.wgShadow || {}; return {whole: s.whole || 0, \
    frames: s.frames || 0, state: s.state || null, size: s.size || null, \
    end: s.end === undefined ? null : s.end, position: s.position || null, \
    duration: s.duration || null, observer: s.attached ? s.attached.observer : null}; })()";

/// A headless Chromium showing one page; killed when dropped.
pub struct Chromium {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromium {
    /// Start Chromium on `url`, its profile in `dir` (a new directory).
    pub fn open(url: &str, dir: &Path) -> Chromium {
        std::fs::create_dir_all(dir).expect("the browser's profile directory");
        let log = std::fs::File::create(dir.join("chromium.log")).expect("chromium.log");
        // As root Chromium needs --no-sandbox; the networking flags keep it from calling out
        // (this machine has no outside network, and every refused call is a delay).
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chromium (Debian package chromium; scripts/test installs it)");
        let mut child = child;
        // Chromium writes the port it chose into the profile directory.
        let deadline = Instant::now() + Duration::from_secs(60);
        let port: u16 = loop {
            let found = std::fs::read_to_string(dir.join("DevToolsActivePort"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
            if let Some(p) = found {
                break p;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "chromium exited ({status}) before it was ready: {}",
                    std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "chromium did not start in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        };
        let page = loop {
            let list = reqwest::blocking::get(format!("http://127.0.0.1:{port}/json/list"))
                .and_then(|r| r.json::<Value>())
                .unwrap_or(Value::Null);
            let page = list.as_array().and_then(|l| {
                l.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            });
            if let Some(p) = page {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium shows no page: {list}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (ws, _) = tungstenite::connect(page.as_str()).expect("the DevTools WebSocket");
        Chromium {
            child,
            ws,
            next_id: 1,
        }
    }

    /// One DevTools call (`WebAuthn.addVirtualAuthenticator`, ...); its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("a DevTools call");
        loop {
            let m = self.ws.read().expect("a DevTools answer");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises are awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluate `expression` every 200 ms until `done` accepts its value or `timeout` passes;
    /// the last value.
    pub fn eval_until(
        &mut self,
        expression: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        crate::poll(
            timeout,
            Duration::from_millis(200),
            || self.eval(expression),
            done,
        )
    }

    /// Load `url` afresh (a new document even when only the fragment differs).
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": "about:blank"}));
        self.call("Page.navigate", json!({"url": url}));
    }

    /// A canvas's pixels as PNG (`HTMLCanvasElement.toDataURL`).
    pub fn canvas_png(&mut self, selector: &str) -> Vec<u8> {
        use base64::Engine;
        let url = self.eval(&format!(
            "document.querySelector({}).toDataURL('image/png')",
            json!(selector)
        ));
        let data = url
            .as_str()
            .and_then(|u| u.strip_prefix("data:image/png;base64,"))
            .unwrap_or_else(|| panic!("not a PNG data URL: {url}"));
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG")
    }

    /// What the browser window shows, as PNG (`Page.captureScreenshot`).
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = r["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG")
    }

    /// Chromium's own log (for failure messages).
    pub fn log(dir: &Path) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(dir.join("chromium.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}
