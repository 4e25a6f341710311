//! What every endpoint shares: the error shape, the caller, body and query parsing.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use wardengate_api as api;

use crate::registry::RegistryError;

#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(api::ApiError { error: self.1 })).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(id) => {
                ApiError(StatusCode::NOT_FOUND, format!("no session {id}"))
            }
            RegistryError::Conflict(id, state) => ApiError(
                StatusCode::CONFLICT,
                format!("session {id} is already {state}"),
            ),
            RegistryError::Internal(e) => internal(e),
        }
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("api: {e}");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: {e}"),
    )
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Who is calling: the admin token (`admin`), or a user's personal token
/// (`users.api_token_sha256`), with what they may do: every permission for the admin token and
/// operators (`users.operator`), else what their `[[roles]]` give.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub can: crate::config::Perms,
}

impl Caller {
    /// The admin token, or an operator: every permission.
    pub fn all(name: &str) -> Caller {
        Caller {
            name: name.into(),
            can: crate::config::Perms::all(),
        }
    }

    pub fn may(&self, p: crate::config::Perm) -> bool {
        self.can.has(p)
    }
}

pub(crate) fn parse_body<T: for<'de> Deserialize<'de> + Default>(
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))
    })
}

/// A query string, or the one 400 that says what is wrong with it.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| bad(format!("bad query: {}", e.body_text())))
}

/// `{id}` of a session's routes, for the OpenAPI document (handlers take `Path<String>`).
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
pub(super) struct SessionId(
    /// The session id (`sess_…`).
    String,
);

/// `{id}` of a recording's routes: the id of the session it recorded.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
pub(super) struct RecordingId(
    /// The recording id: its session's id (`sess_…`).
    String,
);

/// One of the gateway's own pages: HTML that is never cached, framed or sniffed, under a CSP that
/// allows its inline script and style, calls to this origin, and `extra` (`img-src blob:`).
pub(crate) fn html_page(html: &'static str, extra: &str) -> Response {
    use axum::http::header;
    let csp = format!(
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; form-action 'none'; frame-ancestors 'none'{extra}"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".into()),
            (header::REFERRER_POLICY, "no-referrer".into()),
            (header::X_FRAME_OPTIONS, "DENY".into()),
            (header::CONTENT_SECURITY_POLICY, csp),
        ],
        html,
    )
        .into_response()
}
