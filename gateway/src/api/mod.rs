//! The REST API under `/api/v1` (axum on hyper), authenticated with the admin bearer token.
//!
//! Every error is a JSON body `{"error": "..."}` with one actionable sentence and the status code
//! that matches it: 400 for bad input (including a missing terminate reason), 401 for a missing or
//! wrong token, 404 for an unknown session, 409 for a session that is already over.

mod access;
mod approvals;
mod audit;
mod auth;
mod browser;
mod common;
mod console;
mod handoff;
mod live;
mod login;
mod mfa;
mod openapi;
mod peers;
mod perms;
mod policy;
mod recordings;
mod replay;
mod routed;
mod saved_views;
mod sessions;
mod state;
mod tcp;
mod tickets;
mod timeline;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use wardengate_api as api;

pub use common::{ApiError, Caller};
pub use state::ApiState;
pub use tickets::Tickets;

pub fn router(state: ApiState) -> Router {
    // Every authenticated route: a valid token first, then the permission the route needs
    // (`perms.rs`: what every person may call, one permission, or, for a route not placed
    // there, every permission).
    let authed = Router::new()
        .merge(sessions::user_routes())
        .merge(tcp::routes())
        .merge(access::routes())
        .merge(handoff::user_routes())
        .merge(mfa::user_routes())
        .merge(approvals::user_routes())
        .merge(login::user_routes())
        .merge(console::user_routes())
        .merge(saved_views::user_routes())
        .merge(console::routes())
        .merge(timeline::routes())
        .merge(sessions::routes())
        .merge(live::routes())
        .merge(browser::routes())
        .merge(replay::routes())
        .merge(audit::routes())
        .merge(recordings::routes())
        .merge(policy::routes())
        .merge(mfa::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            perms::require_permission,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .merge(browser::open_routes())
        .merge(replay::open_routes())
        .merge(mfa::open_routes())
        .merge(login::open_routes())
        .merge(console::open_routes())
        .merge(peers::routes(state.clone()))
        .merge(authed)
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/openapi.json".into(),
            )
        })
        .layer(middleware::map_response(harden))
        .with_state(state)
}

/// Largest request body the API reads (axum's default limit).
const MAX_BODY: usize = 2 << 20;

/// Every response: `X-Content-Type-Options: nosniff` (a browser never guesses a type), and a
/// body that was too large answered in the API's JSON error shape.
async fn harden(r: Response) -> Response {
    let mut r = if r.status() == StatusCode::PAYLOAD_TOO_LARGE
        && !r
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is too large: the API reads at most {} MiB",
                MAX_BODY >> 20
            ),
        )
        .into_response()
    } else {
        r
    };
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Liveness: the gateway is up, and how many sessions are live.
#[utoipa::path(
    get, path = "/healthz", tag = "sessions", security(()),
    responses((status = 200, body = api::Health))
)]
async fn healthz(State(st): State<ApiState>) -> Json<api::Health> {
    Json(api::Health {
        status: "ok".into(),
        gateway: st.gw.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        active_sessions: st.gw.registry.live_count(),
    })
}
