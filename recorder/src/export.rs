//! Exporters: events as JSON lines, terminal output as asciicast v2.

use serde_json::{json, Value};

use crate::event::{Event, EventKind};
use crate::reader::Recording;

/// One event as a JSON object (`t` in seconds). Data is UTF-8 text where it is text, with
/// invalid bytes replaced; `data_hex` carries the exact bytes.
pub fn event_json(ev: &Event) -> Value {
    let t = ev.t_us as f64 / 1e6;
    match &ev.kind {
        EventKind::Input { channel, data } => json!({
            "t": t, "type": "input", "channel": channel,
            "data": String::from_utf8_lossy(data), "data_hex": hex::encode(data),
        }),
        EventKind::Output {
            channel,
            data,
            stderr,
        } => json!({
            "t": t, "type": "output", "channel": channel, "stderr": stderr,
            "data": String::from_utf8_lossy(data), "data_hex": hex::encode(data),
        }),
        EventKind::Resize {
            channel,
            cols,
            rows,
        } => json!({
            "t": t, "type": "resize", "channel": channel, "cols": cols, "rows": rows,
        }),
        EventKind::Marker { kind, detail } => json!({
            "t": t, "type": "marker", "kind": kind, "detail": detail,
        }),
        EventKind::Query(q) => {
            let mut v = json!({"t": t, "type": "query"});
            if let (Some(o), Ok(Value::Object(q))) = (v.as_object_mut(), serde_json::to_value(q)) {
                o.extend(q);
            }
            v
        }
        EventKind::Stream {
            conn,
            from_client,
            data,
        } => json!({
            "t": t, "type": "stream", "connection": conn,
            "from": if *from_client { "client" } else { "target" },
            "data": String::from_utf8_lossy(data), "data_hex": hex::encode(data),
        }),
    }
}

/// Whether the recording is a brokered TCP session's (its bytes are streams, not a terminal).
pub fn is_stream(rec: &Recording) -> bool {
    is_stream_events(&rec.events)
}

/// [`is_stream`] of a list of events.
pub fn is_stream_events(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Stream { .. }))
}

/// A TCP session as a human reads it: one line per piece of data, with its time, its connection
/// and its direction (`>` from the client, `<` from the target), control bytes escaped
/// (`\r\n`, `\x00`); markers (connections opened and closed) as `--` lines.
pub fn stream_transcript(rec: &Recording) -> String {
    rec.events.iter().filter_map(stream_line).collect()
}

/// One event of a TCP session as a line of its transcript (`None` for events it does not show).
pub fn stream_line(ev: &Event) -> Option<String> {
    let t = ev.t_us as f64 / 1e6;
    match &ev.kind {
        EventKind::Stream {
            conn,
            from_client,
            data,
        } => {
            let dir = if *from_client { '>' } else { '<' };
            Some(format!("{t:>10.3}s #{conn} {dir} {}\n", escape(data)))
        }
        EventKind::Marker { kind, detail } => Some(format!("{t:>10.3}s -- {kind} {detail}\n")),
        _ => None,
    }
}

/// Bytes as one line of text: printable ASCII as it is, the rest escaped.
pub fn escape(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len());
    for &b in data {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// The terminal size at the start: the first resize (pty-req), else 80x24.
fn initial_size(rec: &Recording) -> (u32, u32) {
    rec.events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::Resize { cols, rows, .. } if cols > 0 && rows > 0 => Some((cols, rows)),
            _ => None,
        })
        .unwrap_or((80, 24))
}

/// The recording as an asciicast v2 file (header line, then `[time, code, data]` lines):
/// output as `o`, input as `i`, resizes as `r`, markers as `m`.
pub fn asciicast(rec: &Recording) -> String {
    let (cols, rows) = initial_size(rec);
    let session = rec
        .seal
        .as_ref()
        .map(|s| s.session_id.clone())
        .or_else(|| rec.chunks.first().map(|c| c.session_id.clone()))
        .unwrap_or_default();
    let mut header = json!({ "version": 2, "width": cols, "height": rows, "title": session });
    if let Some(s) = &rec.seal {
        header["timestamp"] = json!(s.started_at_ms / 1000);
    }
    let mut out = header.to_string();
    out.push('\n');
    let mut first_resize = true;
    for ev in &rec.events {
        let t = ev.t_us as f64 / 1e6;
        let line = match &ev.kind {
            EventKind::Output { data, .. } => json!([t, "o", String::from_utf8_lossy(data)]),
            EventKind::Input { data, .. } => json!([t, "i", String::from_utf8_lossy(data)]),
            EventKind::Resize { cols, rows, .. } => {
                if std::mem::take(&mut first_resize) {
                    continue; // already the header's size
                }
                json!([t, "r", format!("{cols}x{rows}")])
            }
            EventKind::Marker { kind, detail } => {
                json!([t, "m", format!("{kind} {detail}").trim_end()])
            }
            EventKind::Query(q) => json!([t, "m", format!("query {}", q.line(ev.t_us))]),
            EventKind::Stream {
                from_client, data, ..
            } => json!([
                t,
                if *from_client { "i" } else { "o" },
                String::from_utf8_lossy(data)
            ]),
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// Scrollback kept by the text exporter (lines beyond it are dropped from the top).
const TEXT_SCROLLBACK: usize = 200_000;

/// A terminal dimension for `vt100` (which wants non-zero sizes): `v`, or `default` when 0.
pub fn term_dim(v: u32, default: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(u16::try_from(v).unwrap_or(u16::MAX))
        .or(std::num::NonZeroU16::new(default))
        .unwrap_or(std::num::NonZeroU16::MIN)
}

/// The session as a human reads it: terminal output rendered through a terminal emulator
/// (`vt100`), so cursor movement, erases and carriage returns are applied, then the scrollback
/// and the final screen as plain text.
pub fn text(rec: &Recording) -> String {
    if is_stream(rec) {
        return stream_transcript(rec);
    }
    let (cols, rows) = initial_size(rec);
    let mut term = vt100::Parser::new(term_dim(rows, 24), term_dim(cols, 80), TEXT_SCROLLBACK);
    for ev in &rec.events {
        match &ev.kind {
            EventKind::Output { data, .. } => term.process(data),
            EventKind::Resize { cols, rows, .. } => {
                term.set_size(term_dim(*rows, 24), term_dim(*cols, 80))
            }
            _ => {}
        }
    }
    let screen = term.screen_mut();
    let height = screen.size().0.get() as usize;
    let width = screen.size().1.get();
    screen.set_scrollback(usize::MAX);
    let total = screen.scrollback();
    let mut lines: Vec<String> = Vec::new();
    let mut offset = total;
    loop {
        screen.set_scrollback(offset);
        for (r, row) in screen.rows(0, width).enumerate() {
            if total - offset + r == lines.len() {
                lines.push(row.trim_end().to_string());
            }
        }
        if offset == 0 {
            break;
        }
        offset = offset.saturating_sub(height);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}
