//! The OpenAPI document, derived from the API's types (`wardengate-api`'s `ToSchema`) and each
//! handler's `#[utoipa::path]`: a field added to a wire type, or a route annotated, is in the
//! document without anyone writing it twice. Tests hold it to the router both ways: every route
//! served is documented (here), every documented route is served (end to end).

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use wardengate_api as api;

use super::{
    access, approvals, audit, browser, console, handoff, live, login, mfa, policy, recordings,
    replay, saved_views, sessions, tcp, timeline,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wardengate API",
        version = "1",
        description = "Sessions, live operations, recordings, policies and the audit log of a \
                       Wardengate privileged-access gateway. Every /api/v1 endpoint but this \
                       document and the browser WebSockets (which take a one-time ticket) needs \
                       `Authorization: Bearer <token>`: the admin token, or a user's own token \
                       for the routes a user may call (list and show their sessions, hand off, \
                       accept, decline). Errors are `{\"error\": \"...\"}` with one sentence a \
                       person can act on."
    ),
    paths(
        super::healthz,
        sessions::list_sessions,
        sessions::get_session,
        sessions::terminate,
        sessions::bulk_terminate,
        live::shadow,
        handoff::handoff,
        handoff::accept,
        handoff::decline,
        browser::link,
        browser::socket,
        replay::replay_link,
        replay::replay_socket,
        audit::audit,
        audit::audit_export,
        audit::audit_verify,
        recordings::recording_pubkey,
        recordings::list_recordings,
        recordings::get_recording,
        recordings::recording_events,
        policy::list,
        policy::reload,
        policy::explain,
        mfa::enroll,
        mfa::prove,
        mfa::list,
        mfa::remove,
        mfa::reset,
        mfa::start,
        mfa::finish,
        approvals::list,
        approvals::approve,
        approvals::deny,
        approvals::withdraw,
        login::device,
        login::poll,
        login::password,
        login::logout,
        console::login,
        console::open,
        console::me,
        console::logout,
        console::events,
        console::list,
        console::invalidate,
        timeline::timeline,
        saved_views::queries,
        saved_views::save_query,
        saved_views::remove_query,
        tcp::authorize,
        tcp::cancel,
        tcp::close,
        access::start,
        access::list,
        access::show,
        access::stop,
    ),
    components(schemas(api::SessionState, api::Protocol)),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "sessions", description = "List, show and terminate sessions"),
        (name = "live", description = "Shadow and hand off live sessions"),
        (name = "recordings", description = "Recordings, their verification and replay"),
        (name = "audit", description = "The hash-chained, signed audit log"),
        (name = "policies", description = "Loaded policies, reload and explain"),
        (name = "identity", description = "Security keys (enrolment, proofs, removal, reset) and approvals"),
        (name = "access", description = "Network access sessions: time-bound allow rules for the caller's address on network resources"),
        (name = "console", description = "The operator console: sign-in, its live stream, and console sessions (Kibana's model)"),
    )
)]
pub(super) struct ApiDoc;

/// The `bearer` security scheme every operation refers to.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as served, built once.
fn document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
            format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}")
        })
    })
}

pub(super) async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The other half of the end-to-end route test (which checks that every documented route is
    /// served): every route the router declares is in the OpenAPI document, with its method.
    /// The routes are read from the sources of the files that declare them: one route call a
    /// line, path then method, as rustfmt leaves them.
    #[test]
    fn every_declared_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("the document parses");
        let sources = [
            include_str!("mod.rs"),
            include_str!("sessions.rs"),
            include_str!("tcp.rs"),
            include_str!("access.rs"),
            include_str!("live.rs"),
            include_str!("browser.rs"),
            include_str!("replay.rs"),
            include_str!("audit.rs"),
            include_str!("recordings.rs"),
            include_str!("policy.rs"),
            include_str!("mfa.rs"),
            include_str!("approvals.rs"),
            include_str!("login.rs"),
            include_str!("console.rs"),
            include_str!("timeline.rs"),
            include_str!("saved_views.rs"),
        ];
        // Pages for a browser, not API endpoints (they serve HTML behind a one-time ticket).
        let pages = [
            "/shadow/{id}",
            "/replay/{id}",
            "/api/v1/openapi.json",
            "/mfa",
            "/login",
            "/console",
            "/console/login",
            "/console/recordings",
            "/console/audit",
            "/console/approvals",
            "/console/access",
            "/console/assets/{name}",
        ];
        let mut found = 0;
        for line in sources.iter().flat_map(|s| s.lines()) {
            let Some((_, rest)) = line.split_once(".route(\"") else {
                continue;
            };
            let Some((path, after)) = rest.split_once("\", ") else {
                continue;
            };
            let method = after.split('(').next().unwrap_or_default();
            if pages.contains(&path) {
                continue;
            }
            found += 1;
            assert!(
                doc["paths"][path][method].is_object(),
                "{} {path} is served but not in the OpenAPI document",
                method.to_uppercase()
            );
        }
        assert!(found >= 23, "only {found} routes found in the sources");
    }

    /// The schemas come from the wire types: a field of `api::Session` is in the document, and
    /// so are the states a session can be in.
    #[test]
    fn schemas_are_the_wire_types() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("the document parses");
        let session = &doc["components"]["schemas"]["Session"]["properties"];
        for field in [
            "id",
            "state",
            "previous_owners",
            "relay_latency",
            "decision",
        ] {
            assert!(
                session[field].is_object(),
                "Session.{field} is not documented"
            );
        }
        let states = doc["components"]["schemas"]["SessionState"]["enum"].to_string();
        for s in ["awaiting_approval", "paused", "failed"] {
            assert!(states.contains(s), "state {s} missing: {states}");
        }
        let list = &doc["paths"]["/api/v1/sessions"]["get"]["parameters"];
        let names = list.to_string();
        for p in ["cursor", "idle_gt", "shadowed", "live"] {
            assert!(
                names.contains(&format!("\"{p}\"")),
                "parameter {p} missing: {names}"
            );
        }
        // A browser WebSocket takes its one-time ticket instead of a bearer token.
        let ws = &doc["paths"]["/api/v1/sessions/{id}/shadow/ws"]["get"];
        let ticket = ws["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "ticket"))
            .expect("the ticket parameter");
        assert_eq!(
            (&ticket["in"], &ticket["required"]),
            (&"query".into(), &true.into())
        );
        assert_eq!(ws["security"], serde_json::json!([{}]), "no bearer token");
    }
}
