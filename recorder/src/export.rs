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
    }
}

/// The recording as an asciicast v2 file (header line, then `[time, code, data]` lines):
/// output as `o`, input as `i`, resizes as `r`, markers as `m`.
pub fn asciicast(rec: &Recording) -> String {
    let (cols, rows) = rec
        .events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::Resize { cols, rows, .. } if cols > 0 && rows > 0 => Some((cols, rows)),
            _ => None,
        })
        .unwrap_or((80, 24));
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
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}
