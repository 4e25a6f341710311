//! The recording tap every relay feeds (see [`Tap`]).

use tokio::sync::mpsc;
use wardengate_recorder::{Event, EventKind};

/// The recording tap: events go to the session's recorder task through a bounded queue. A full
/// queue makes the sender wait (back-pressure on the session), so nothing is ever dropped; a
/// closed queue means the recording failed, and the relay must stop.
#[derive(Debug, Clone)]
pub struct Tap {
    tx: mpsc::Sender<Event>,
    start: std::time::Instant,
    record_input: bool,
    /// `recording = "metadata"`: markers and sizes only, never the data itself.
    metadata_only: bool,
}

impl Tap {
    pub fn new(tx: mpsc::Sender<Event>, record_input: bool) -> Tap {
        Tap {
            tx,
            start: std::time::Instant::now(),
            record_input,
            metadata_only: false,
        }
    }

    /// A tap that keeps what happened and drops the data (`recording = "metadata"`).
    pub fn metadata_only(mut self) -> Tap {
        self.metadata_only = true;
        self
    }

    /// Whether data events (input, output, streams, queries) are kept.
    pub fn keeps_data(&self) -> bool {
        !self.metadata_only
    }

    /// Record an event; `false` when the recorder is gone.
    pub async fn record(&self, kind: EventKind) -> bool {
        let data = matches!(
            kind,
            EventKind::Input { .. }
                | EventKind::Output { .. }
                | EventKind::Stream { .. }
                | EventKind::Query(_)
        );
        if (self.metadata_only && data)
            || (!self.record_input && matches!(kind, EventKind::Input { .. }))
        {
            return true;
        }
        let t_us = self.start.elapsed().as_micros() as u64;
        self.tx.send(Event { t_us, kind }).await.is_ok()
    }

    pub async fn marker(&self, kind: &str, detail: impl Into<String>) -> bool {
        self.record(EventKind::Marker {
            kind: kind.into(),
            detail: detail.into(),
        })
        .await
    }
}
