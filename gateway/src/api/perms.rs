//! Operator permissions: what each authenticated route needs, and what a caller holds.
//!
//! A caller holds the permissions of every `[[roles]]` entry that names them (`members`: users,
//! or `group:NAME`); `users.operator = true` and the admin token hold all of them. Every person
//! may, without any: list and show their own sessions, hand off, accept and decline their own,
//! manage their own security keys, and see and withdraw their own approval requests. The routes
//! that need a permission are listed in [`needed`]; a route not listed there needs every
//! permission (the admin token or an operator), so a new route is closed until it is placed.

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::common::{ApiError, Caller};
use super::state::ApiState;
pub use crate::config::{Perm, Perms};

/// What an authenticated route needs beyond a valid token: `Ok(None)` for what every person
/// may call (each handler keeps them to their own), `Ok(Some(p))` for one permission, `Err(())`
/// for a route nobody placed (every permission).
pub fn needed(method: &Method, path: &str) -> Result<Option<Perm>, ()> {
    use Perm::*;
    let m = method.as_str();
    Ok(match (m, path) {
        ("GET", "/api/v1/sessions" | "/api/v1/sessions/{id}") => None,
        ("POST", "/api/v1/sessions/{id}/handoff" | "/api/v1/sessions/{id}/accept") => None,
        ("POST", "/api/v1/sessions/{id}/decline") => None,
        // Each keeps the caller to their own sessions (cancel: or the terminate permission).
        ("POST", "/api/v1/targets/{name}/authorize") => None,
        ("POST", "/api/v1/sessions/{id}/cancel" | "/api/v1/sessions/{id}/close") => None,
        // Each keeps the caller to their own (or anyone's with session.read / terminate).
        ("POST", "/api/v1/access-sessions" | "/api/v1/access-sessions/{id}/stop") => None,
        ("GET", "/api/v1/access-sessions" | "/api/v1/access-sessions/{id}") => None,
        ("POST", "/api/v1/mfa/enroll" | "/api/v1/mfa/prove") => None,
        ("GET", "/api/v1/mfa/keys") | ("DELETE", "/api/v1/mfa/keys/{id}") => None,
        ("GET", "/api/v1/approvals") => None,
        ("POST", "/api/v1/approvals/{id}/withdraw") => None,
        ("POST", "/api/v1/logout") => None,
        ("GET", "/api/v1/console/me") | ("POST", "/api/v1/console/logout") => None,
        ("GET", "/api/v1/console/queries") => None,
        ("PUT" | "DELETE", "/api/v1/console/queries/{name}") => None,
        ("GET", "/api/v1/console/events" | "/api/v1/sessions/{id}/timeline") => Some(SessionRead),
        ("GET", "/api/v1/console-sessions") => Some(UserAdmin),
        ("POST", "/api/v1/console-sessions/_invalidate") => Some(UserAdmin),
        ("POST", "/api/v1/approvals/{id}/approve" | "/api/v1/approvals/{id}/deny") => {
            Some(ApprovalDecide)
        }
        ("POST", "/api/v1/sessions/terminate" | "/api/v1/sessions/{id}/terminate") => {
            Some(SessionTerminate)
        }
        ("GET", "/api/v1/sessions/{id}/shadow") => Some(SessionShadow),
        ("POST", "/api/v1/sessions/{id}/shadow/browser") => Some(SessionShadow),
        ("GET", "/api/v1/policies" | "/api/v1/policies/explain") => Some(SessionRead),
        ("POST", "/api/v1/policies/reload") => Some(PolicyReload),
        ("GET", "/api/v1/audit" | "/api/v1/audit/export" | "/api/v1/audit/verify") => {
            Some(AuditRead)
        }
        ("GET", p) if p.starts_with("/api/v1/recordings") => Some(RecordingRead),
        ("POST", "/api/v1/recordings/{id}/replay/browser") => Some(RecordingRead),
        ("POST", "/api/v1/users/{name}/mfa-reset") => Some(UserAdmin),
        _ => return Err(()),
    })
}

/// After [`super::auth::require_token`]: the route's permission, or 403 naming it (audited).
pub(super) async fn require_permission(
    axum::extract::State(st): axum::extract::State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return ApiError(StatusCode::UNAUTHORIZED, "no caller".into()).into_response();
    };
    let missing = match needed(req.method(), &path) {
        Ok(None) => None,
        Ok(Some(p)) if caller.can.has(p) => None,
        Ok(Some(p)) => Some(p.name().to_string()),
        Err(()) if caller.can == Perms::all() => None,
        Err(()) => Some("every permission (an operator or the admin token)".into()),
    };
    let Some(missing) = missing else {
        return next.run(req).await;
    };
    st.gw.audit(
        "api.forbidden",
        Some(&caller.name),
        None,
        json!({"method": req.method().as_str(), "path": path, "missing": missing}),
    );
    ApiError(
        StatusCode::FORBIDDEN,
        format!(
            "{} may not {} {path}: it needs {missing} (a [[roles]] entry whose members name \
             them, with can = [\"{missing}\"])",
            caller.name,
            req.method()
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unplaced_route_needs_everything() {
        assert_eq!(needed(&Method::GET, "/api/v1/new-thing"), Err(()));
        assert_eq!(
            needed(&Method::POST, "/api/v1/sessions/{id}/terminate"),
            Ok(Some(Perm::SessionTerminate))
        );
        assert_eq!(needed(&Method::GET, "/api/v1/sessions"), Ok(None));
    }
}
