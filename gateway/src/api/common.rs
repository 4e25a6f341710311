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

    /// The caller is a person (`[[users]]`), not the admin token or a named API token: `what`
    /// (an access session, a TCP session) is for someone.
    pub fn person(&self, cfg: &crate::config::Loaded, what: &str) -> Result<(), ApiError> {
        match cfg.users.contains_key(&self.name) {
            true => Ok(()),
            false => Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is not a person: {what} is for someone, with their own token \
                     (`wgctl login`, or a user's api_token_sha256)",
                    self.name
                ),
            )),
        }
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
/// allows scripts from this origin only (the embedded assets; no inline script), its inline
/// style, calls to this origin, and `extra` (`; img-src blob:`).
pub(crate) fn html_page(html: &'static str, extra: &str) -> Response {
    use axum::http::header;
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'{extra}"
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

#[cfg(test)]
mod page_tests {
    /// Every page's scripts are embedded assets: a page with inline script would not run under
    /// the pages' CSP, and the CSP never allows inline script.
    #[test]
    fn no_page_runs_inline_script() {
        let pages = [
            ("mfa", include_str!("mfa.html")),
            ("login", include_str!("login.html")),
            ("desktop", include_str!("shadow.html")),
            ("console", include_str!("console/console.html")),
            ("console sign-in", include_str!("console/login.html")),
        ];
        for (name, html) in pages {
            let scripts = html.matches("<script").count();
            let embedded = html.matches("<script src=\"/console/assets/").count();
            assert!(
                scripts > 0 && scripts == embedded,
                "{name}: {scripts} scripts, {embedded} from the assets"
            );
        }
        let r = super::html_page("", "");
        let csp = r
            .headers()
            .get(axum::http::header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let script = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src"))
            .unwrap_or_default();
        assert_eq!(script, "script-src 'self'", "{csp}");
    }
}
