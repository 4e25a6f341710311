//! The bearer token, or the console's session cookie, in front of every authenticated endpoint
//! (what each route needs beyond it is `perms.rs`'s to say). A request carried by the cookie
//! that changes anything must also carry the session's `X-CSRF-Token`.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::common::{ApiError, Caller};
use super::state::ApiState;

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The one answer to a request without a valid token, whatever is wrong with it.
const BAD_TOKEN: &str =
    "missing or invalid bearer token (Authorization: Bearer <admin token or your API token>)";

pub(super) async fn require_token(
    State(st): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = crate::http::client(&st.gw.cfg(), &req).ip();
    let refuse = || ApiError(StatusCode::UNAUTHORIZED, BAD_TOKEN.into()).into_response();
    // A source that keeps guessing tokens is refused without a check, like a wrong password.
    if !st.gw.api_throttle.allow("", ip) {
        return refuse();
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let digest: Option<[u8; 32]> = presented.map(|t| Sha256::digest(t.trim().as_bytes()).into());
    let caller = match digest {
        Some(d) if same(&d, &st.token_hash) => Some(Caller::all("admin")),
        Some(d) => {
            let cfg = st.gw.cfg();
            let named = cfg.config.api_tokens.iter().find(|t| {
                hex::decode(t.sha256.trim())
                    .ok()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .is_some_and(|h| same(&h, &d))
            });
            if let Some(t) = named {
                st.gw.api_throttle.record("", ip, true);
                req.extensions_mut().insert(Caller {
                    name: format!("token:{}", t.name),
                    can: t.perms(),
                });
                return next.run(req).await;
            }
            let person = st.gw.person_of(&d).await;
            person
                .and_then(|p| cfg.users.get(&p))
                .map(|u| caller_of(&cfg, u))
        }
        None => match crate::identity::cookie::cookie_of(req.headers()) {
            Some(cookie) => return with_cookie(st, req, next, &cookie).await,
            None => None,
        },
    };
    let Some(caller) = caller else {
        // Only a wrong token counts as a failure: a request without one is a client that has not
        // been configured yet, not a guess.
        if presented.is_some() {
            let events = st.gw.api_throttle.record("", ip, false);
            st.gw.audit_throttle("api", events);
        } else {
            st.gw.api_throttle.abandon("", ip);
        }
        return refuse();
    };
    st.gw.api_throttle.record("", ip, true);
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// What a person may do: everything for an operator, else what their roles give.
fn caller_of(cfg: &crate::config::Loaded, u: &crate::config::Identity) -> Caller {
    match u.operator {
        true => Caller::all(&u.name),
        false => Caller {
            name: u.name.clone(),
            can: crate::config::perms_of(&u.name, &u.groups, &cfg.config.roles),
        },
    }
}

/// The console's own requests: the cookie names a console session (both halves there, not
/// expired), and a request that changes anything carries that session's CSRF token.
async fn with_cookie(st: ApiState, mut req: Request, next: Next, cookie: &str) -> Response {
    const SIGNED_OUT: &str =
        "signed out: the console session has expired or was invalidated; sign in again at /console";
    // The live stream is the page's, not the person's: it does not keep them signed in.
    let background = req.uri().path() == "/api/v1/console/events";
    let ip = crate::http::client(&st.gw.cfg(), &req).ip();
    let row = st.gw.console_session(cookie, !background).await;
    let cfg = st.gw.cfg();
    let user = row.as_ref().and_then(|r| cfg.users.get(&r.username));
    let (Some(row), Some(user)) = (row, user) else {
        // A stale cookie (expired, invalidated) is the everyday way to be signed out, not a
        // guess (the cookie is sealed: it cannot be guessed): the attempt is settled, not
        // counted.
        st.gw.api_throttle.abandon("", ip);
        return ApiError(StatusCode::UNAUTHORIZED, SIGNED_OUT.into()).into_response();
    };
    st.gw.api_throttle.record("", ip, true);
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !safe {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        use subtle::ConstantTimeEq;
        if !bool::from(sent.ct_eq(row.csrf.as_bytes())) {
            st.gw.audit(
                "api.csrf_refused",
                Some(&row.username),
                None,
                serde_json::json!({"method": req.method().as_str(),
                    "path": wardengate_api::text::inert(req.uri().path(), 200),
                    "client": crate::http::peer(&req).to_string()}),
            );
            return ApiError(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token: the console sends it with every change; a \
                 request from another page cannot"
                    .into(),
            )
            .into_response();
        }
    }
    req.extensions_mut().insert(caller_of(&cfg, user));
    req.extensions_mut().insert(row);
    next.run(req).await
}
