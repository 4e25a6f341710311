//! Shadow streams for tests: an observer that reads (and keeps every event), and one that
//! never reads (a stalled operator's connection).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;

use crate::GatewayProc;

/// How often the observer's events are looked at while waiting for one.
const POLL: Duration = Duration::from_millis(25);

/// An observer reading `GET /api/v1/sessions/{id}/shadow` in a thread.
pub struct Watcher {
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    pub status: u16,
    pub error: String,
    socket: Option<TcpStream>,
}

/// The terminal output in a raw shadow response (HTTP framing and all): every `data` field,
/// decoded and joined.
pub fn decode_raw(body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for part in text.split("\"data\":\"").skip(1) {
        if let Some(end) = part.find('"') {
            if let Ok(d) = b64.decode(&part[..end]) {
                out.push_str(&String::from_utf8_lossy(&d));
            }
        }
    }
    out
}

impl Watcher {
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Terminal output seen so far (screens and diffs, decoded), and query-log lines.
    pub fn text(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = String::new();
        for e in self.events() {
            if let Some(d) = e["data"].as_str() {
                out.push_str(&String::from_utf8_lossy(&b64.decode(d).unwrap_or_default()));
            }
            if let Some(t) = e["text"].as_str() {
                out.push_str(t);
                out.push('\n');
            }
        }
        out
    }

    /// Wait until an event satisfies `pred`.
    #[track_caller]
    pub fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) {
        let events = crate::poll(timeout, POLL, || self.events(), |e| e.iter().any(&pred));
        assert!(
            events.iter().any(&pred),
            "observer never got {what} within {timeout:?}: {events:?}"
        );
    }

    /// Wait until the decoded output contains `needle`.
    #[track_caller]
    pub fn expect(&self, needle: &str, timeout: Duration) {
        crate::wait_for_text("the observer", needle, timeout, POLL, || self.text());
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing our end ends the stream at the gateway: the observer detaches.
        if let Some(s) = &self.socket {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Read an HTTP/1.1 chunked body's chunks from `r` into newline-separated JSON events.
fn read_chunked(r: &mut impl BufRead, sink: &Mutex<Vec<serde_json::Value>>) -> Option<()> {
    let mut pending = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(());
        }
        let mut chunk = vec![0u8; n + 2];
        std::io::Read::read_exact(r, &mut chunk).ok()?;
        pending.extend_from_slice(&chunk[..n]);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            if let Ok(v) = serde_json::from_slice(&line) {
                sink.lock().ok()?.push(v);
            }
        }
    }
}

impl GatewayProc {
    /// Attach an observer with `token` (the admin token when `None`).
    pub fn watch(&self, id: &str, token: Option<&str>) -> Watcher {
        let addr = self.api.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect api");
        let req = format!(
            "GET /api/v1/sessions/{id}/shadow HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
            token.unwrap_or(&self.token)
        );
        s.write_all(req.as_bytes()).expect("send request");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut status_line = String::new();
        r.read_line(&mut status_line).expect("status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let mut length = None;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).expect("header");
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        if status != 200 {
            let mut body = vec![0u8; length.unwrap_or(0)];
            let _ = std::io::Read::read_exact(&mut r, &mut body);
            return Watcher {
                events,
                status,
                error: String::from_utf8_lossy(&body).into_owned(),
                socket: None,
            };
        }
        let sink = events.clone();
        std::thread::spawn(move || read_chunked(&mut r, &sink));
        Watcher {
            events,
            status,
            error: String::new(),
            socket: Some(s),
        }
    }

    /// An observer that sends its request and then never reads: its socket buffers fill up.
    pub fn stalled_watch(&self, id: &str) -> TcpStream {
        let addr = self.api.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect api");
        let req = format!(
            "GET /api/v1/sessions/{id}/shadow HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.token
        );
        s.write_all(req.as_bytes()).expect("send request");
        s
    }
}
