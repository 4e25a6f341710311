//! A refused access-session start or stop, as the API answers it.

use axum::http::StatusCode;
use wardengate_policy::LimitDenial;

/// A refused start or stop: the status, one sentence, and for a full limit the structured
/// denial the other limits give.
#[derive(Debug)]
pub struct AccessRefusal {
    pub status: StatusCode,
    pub message: String,
    pub limit: Option<LimitDenial>,
    /// What the person is asked for, as a key of the answer: `mfa` (the link that proves
    /// presence: `url`, its `ticket` for a page that runs the ceremony itself, `policy`,
    /// `expires_in_secs`) or `approval` (the requests to wait on: `request`, `policy`,
    /// `approvers`).
    pub asks: Option<(&'static str, Box<serde_json::Value>)>,
}

pub(super) fn refuse(status: StatusCode, message: String) -> AccessRefusal {
    AccessRefusal {
        status,
        message,
        limit: None,
        asks: None,
    }
}
