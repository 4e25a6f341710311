//! The bearer token in front of every authenticated endpoint (what each route needs beyond it
//! is `perms.rs`'s to say).

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
    let ip = crate::http::peer(&req).ip();
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
            let signed_in = st.gw.logins.user_of(&d);
            cfg.users
                .values()
                .filter(|u| {
                    u.api_token.is_some_and(|t| same(&t, &d))
                        || signed_in.as_deref() == Some(u.name.as_str())
                })
                .last()
                .map(|u| match u.operator {
                    true => Caller::all(&u.name),
                    false => Caller {
                        name: u.name.clone(),
                        can: crate::config::perms_of(&u.name, &u.groups, &cfg.config.roles),
                    },
                })
        }
        None => None,
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
