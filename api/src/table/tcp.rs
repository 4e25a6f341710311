//! What `wgctl` prints for brokered TCP sessions: Boundary's blocks.

use std::fmt::Write;

use crate as api;

/// A TCP session's state history as Boundary's `sessions read` shows it: newest first, each
/// with its start (and end) time, and the reason for the last.
pub fn states(list: &[api::StateSpan]) -> String {
    let mut out = String::from("States:\n");
    for st in list.iter().rev() {
        let _ = writeln!(out, "  Status:       {}", st.state);
        if let Some(r) = &st.reason {
            let _ = writeln!(out, "  Reason:       {r}");
        }
        let _ = writeln!(out, "  Start Time:   {}", st.start_time);
        if let Some(e) = &st.end_time {
            let _ = writeln!(out, "  End Time:     {e}");
        }
        out.push('\n');
    }
    out
}

fn limit_text(n: i64) -> String {
    match n {
        -1 => "unlimited (-1)".into(),
        n => n.to_string(),
    }
}

/// `wgctl target authorize`: the block Boundary's `targets authorize-session` prints.
pub fn authorization(a: &api::Authorization) -> String {
    let rows = [
        ("Authorization Token", a.authorization_token.clone()),
        ("Created Time", a.created_at.clone()),
        ("Host ID", a.host_id.clone()),
        ("Session ID", a.session_id.clone()),
        ("Target ID", a.target_id.clone()),
        ("Type", a.kind.clone()),
        ("User ID", a.user_id.clone()),
        ("Expiration", a.expiration.clone()),
        ("Connection Limit", limit_text(a.connection_limit)),
        ("Endpoint", a.endpoint.clone()),
    ];
    let mut out = String::from("Target information:\n");
    for (k, v) in rows {
        let _ = writeln!(out, "  {:<22}{v}", format!("{k}:"));
    }
    out
}

/// `wgctl proxy`: where the local listener is, and the session it serves.
pub fn proxy(addr: &std::net::SocketAddr, c: &api::TokenClaims) -> String {
    let rows = [
        ("Address", addr.ip().to_string()),
        ("Connection Limit", limit_text(c.connection_limit)),
        ("Expiration", c.expiration.clone()),
        ("Port", addr.port().to_string()),
        ("Protocol", "tcp".to_string()),
        ("Session ID", c.sid.clone()),
    ];
    let mut out = String::from("Proxy listening information:\n");
    for (k, v) in rows {
        let _ = writeln!(out, "  {:<19}{v}", format!("{k}:"));
    }
    out
}
