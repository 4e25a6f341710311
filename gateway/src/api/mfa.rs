//! Security keys over the API: links to enrol a key or prove presence (any person's own token;
//! operators and the admin token for anyone), the list and removal of keys, an administrator's
//! reset, and the page `/mfa` with its two ceremony calls (no token: the link's ticket).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use wardengate_api as api;
use wardengate_api::text::{inert, MAX_NAME, MAX_REASON};

use super::common::{bad, internal, parse_body, query, ApiError, Caller};
use super::state::ApiState;
use crate::config::Perm;
use crate::identity::{CeremonyError, Purpose};

/// Routes for any token: a person's own keys (operators: anyone's).
pub(super) fn user_routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/mfa/enroll", post(enroll))
        .route("/api/v1/mfa/prove", post(prove))
        .route("/api/v1/mfa/keys", get(list))
        .route("/api/v1/mfa/keys/{id}", delete(remove))
}

/// Operators only.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/users/{name}/mfa-reset", post(reset))
}

/// The page and its calls: the ticket is the capability.
pub(super) fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/mfa", get(page))
        .route("/api/v1/mfa/ceremony/start", post(start))
        .route("/api/v1/mfa/ceremony/finish", post(finish))
}

/// Whose keys a call is about: `asked` when the caller may act for them, else the caller.
fn person(st: &ApiState, caller: &Caller, asked: Option<String>) -> Result<String, ApiError> {
    let cfg = st.gw.cfg();
    let name = match asked {
        Some(u) if u != caller.name && !caller.may(Perm::UserAdmin) => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "{}'s token may manage their own security keys only; another person's need \
                     an operator or the admin token",
                    caller.name
                ),
            ))
        }
        Some(u) => u,
        None if cfg.users.contains_key(&caller.name) => caller.name.clone(),
        None => {
            return Err(bad(format!(
                "the {} token belongs to no person: name one (`--user NAME`, {{\"user\": ...}})",
                caller.name
            )))
        }
    };
    if !cfg.users.contains_key(&name) {
        return Err(bad(format!("no user {}", inert(&name, MAX_NAME))));
    }
    Ok(name)
}

fn link(
    l: crate::identity::Link,
    user: String,
    purpose: &str,
    policy: Option<String>,
) -> api::MfaLink {
    api::MfaLink {
        url: l.url,
        expires_in_secs: l.expires_in.as_secs(),
        user,
        purpose: purpose.into(),
        policy,
    }
}

/// A one-time link to enrol a security key or passkey on the gateway's page.
#[utoipa::path(
    post, operation_id = "mfa_enroll", path = "/api/v1/mfa/enroll", tag = "identity",
    request_body = api::MfaEnrollRequest,
    responses((status = 200, body = api::MfaLink), (status = 400, description = "unknown user, or the admin token without a user", body = api::ApiError), (status = 403, description = "another person's keys without an operator token", body = api::ApiError))
)]
async fn enroll(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<api::MfaLink>, ApiError> {
    let req: api::MfaEnrollRequest = parse_body(&body)?;
    let user = person(&st, &caller, req.user)?;
    let name = req
        .name
        .map(|n| inert(n.trim(), 64).into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "security key".into());
    let ttl = st.gw.cfg().config.identity.link_ttl;
    let l = st
        .gw
        .mfa
        .issue(
            &user,
            Purpose::Enroll { name: name.clone() },
            &st.gw.page_origin(),
            ttl,
        )
        .map_err(internal)?;
    st.gw.audit(
        "mfa.enroll_link",
        Some(&user),
        None,
        json!({"by": caller.name, "name": name}),
    );
    Ok(Json(link(l, user, "enroll", None)))
}

/// A one-time link to prove presence with an enrolled key, for the next connection to a target
/// (PostgreSQL and RDP cannot show a prompt).
#[utoipa::path(
    post, operation_id = "mfa_prove", path = "/api/v1/mfa/prove", tag = "identity",
    request_body = api::MfaProveRequest,
    responses((status = 200, body = api::MfaLink), (status = 400, description = "unknown user or target, no policy admits it, or no key enrolled", body = api::ApiError), (status = 403, description = "another person without an operator token", body = api::ApiError))
)]
async fn prove(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<api::MfaLink>, ApiError> {
    let req: api::MfaProveRequest = parse_body(&body)?;
    let user = person(&st, &caller, req.user)?;
    let policy = match &req.target {
        Some(t) => Some(st.gw.policy_for(&user, t).map_err(bad)?),
        None => None,
    };
    let keys = st.gw.store.key_list(Some(&user)).await.map_err(internal)?;
    if keys.is_empty() {
        return Err(bad(format!(
            "{user} has no security key enrolled: enrol one first (`wgctl mfa enroll`)"
        )));
    }
    let ttl = st.gw.cfg().config.identity.link_ttl;
    let purpose = Purpose::Prove {
        policy: policy.clone(),
    };
    let l = st
        .gw
        .mfa
        .issue(&user, purpose, &st.gw.page_origin(), ttl)
        .map_err(internal)?;
    Ok(Json(link(l, user, "prove", policy)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct KeysParams {
    /// Whose keys (operators: anyone's, `*` for everyone's); default the caller's.
    user: Option<String>,
}

fn key_info(k: crate::store::SecurityKeyRow) -> api::SecurityKey {
    api::SecurityKey {
        id: k.id,
        user: k.user,
        name: k.name,
        credential_id: k.credential_id,
        aaguid: k.aaguid,
        counter: k.counter,
        created: crate::util::rfc3339(k.created_ms),
        last_used: k.last_used_ms.map(crate::util::rfc3339),
    }
}

/// Enrolled security keys.
#[utoipa::path(
    get, operation_id = "mfa_list_keys", path = "/api/v1/mfa/keys", tag = "identity",
    params(KeysParams),
    responses((status = 200, body = Vec<api::SecurityKey>), (status = 403, description = "another person's keys without an operator token", body = api::ApiError))
)]
async fn list(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<KeysParams>, QueryRejection>,
) -> Result<Json<Vec<api::SecurityKey>>, ApiError> {
    let p = query(q)?;
    let user = match p.user.as_deref() {
        Some("*") if caller.may(Perm::UserAdmin) => None,
        _ => Some(person(&st, &caller, p.user)?),
    };
    let keys = st
        .gw
        .store
        .key_list(user.as_deref())
        .await
        .map_err(internal)?;
    Ok(Json(keys.into_iter().map(key_info).collect()))
}

/// Remove one of the caller's keys (operators: anyone's).
#[utoipa::path(
    delete, operation_id = "mfa_remove_key", path = "/api/v1/mfa/keys/{id}", tag = "identity",
    params(("id" = String, Path, description = "the key's id (`key_…`)")),
    responses((status = 200, body = api::MfaRemoved), (status = 404, description = "no such key of the caller's", body = api::ApiError))
)]
async fn remove(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::MfaRemoved>, ApiError> {
    let all = st.gw.store.key_list(None).await.map_err(internal)?;
    let key = all
        .into_iter()
        .find(|k| k.id == id && (k.user == caller.name || caller.may(Perm::UserAdmin)))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no security key {} of yours", inert(&id, MAX_NAME)),
            )
        })?;
    st.gw
        .store
        .key_remove(&key.user, Some(&key.id))
        .await
        .map_err(internal)?;
    st.gw.audit(
        "mfa.removed",
        Some(&key.user),
        None,
        json!({"key": key.id, "name": key.name, "by": caller.name}),
    );
    Ok(Json(api::MfaRemoved {
        user: key.user,
        removed: vec![key.id],
    }))
}

/// Remove every key of a person (a lost key): they enrol again before the next step-up.
#[utoipa::path(
    post, operation_id = "mfa_reset", path = "/api/v1/users/{name}/mfa-reset", tag = "identity",
    params(("name" = String, Path, description = "the user")),
    request_body = api::MfaResetRequest,
    responses((status = 200, body = api::MfaRemoved), (status = 400, description = "no reason, or unknown user", body = api::ApiError))
)]
async fn reset(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<api::MfaRemoved>, ApiError> {
    let req: api::MfaResetRequest = parse_body(&body)?;
    let reason = inert(req.reason.trim(), MAX_REASON).into_owned();
    if reason.is_empty() {
        return Err(bad(
            "a reason is required to reset a person's security keys: send {\"reason\": \"...\"}",
        ));
    }
    let user = person(&st, &caller, Some(name))?;
    let keys = st.gw.store.key_list(Some(&user)).await.map_err(internal)?;
    st.gw
        .store
        .key_remove(&user, None)
        .await
        .map_err(internal)?;
    st.gw.mfa.forget(&user);
    let removed: Vec<String> = keys.into_iter().map(|k| k.id).collect();
    st.gw.audit(
        "mfa.reset",
        Some(&user),
        None,
        json!({"by": caller.name, "reason": reason, "removed": removed}),
    );
    Ok(Json(api::MfaRemoved { user, removed }))
}

const PAGE: &str = include_str!("mfa.html");

async fn page() -> Response {
    super::common::html_page(PAGE, "")
}

impl From<CeremonyError> for ApiError {
    fn from(e: CeremonyError) -> ApiError {
        let code = match &e {
            CeremonyError::Ticket => StatusCode::UNAUTHORIZED,
            CeremonyError::Refused(_) => StatusCode::FORBIDDEN,
            CeremonyError::Unusable(_) => StatusCode::BAD_REQUEST,
            CeremonyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

/// The page's first call: the WebAuthn options for its ticket.
#[utoipa::path(
    post, operation_id = "mfa_ceremony_start", path = "/api/v1/mfa/ceremony/start", tag = "identity", security(()),
    request_body = api::CeremonyRequest,
    responses((status = 200, description = "kind (enroll or prove), user, and the options for navigator.credentials", body = Object), (status = 401, description = "the ticket was used already, expired or never issued", body = api::ApiError))
)]
async fn start(
    State(st): State<ApiState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: api::CeremonyRequest = parse_body(&body)?;
    Ok(Json(st.gw.mfa_start(&req.ticket).await?))
}

/// The page's second call: the browser's credential, verified; the ticket is spent.
#[utoipa::path(
    post, operation_id = "mfa_ceremony_finish", path = "/api/v1/mfa/ceremony/finish", tag = "identity", security(()),
    request_body = api::CeremonyRequest,
    responses((status = 200, body = api::CeremonyDone), (status = 401, description = "the ticket was used already, expired or never issued", body = api::ApiError), (status = 403, description = "the key's answer was refused (wrong origin or relying party, a counter that went backwards, ...)", body = api::ApiError))
)]
async fn finish(
    State(st): State<ApiState>,
    body: Bytes,
) -> Result<Json<api::CeremonyDone>, ApiError> {
    let req: api::CeremonyRequest = parse_body(&body)?;
    let credential = req
        .credential
        .ok_or_else(|| bad("finish needs the browser's credential"))?;
    let message = st.gw.mfa_finish(&req.ticket, credential).await?;
    Ok(Json(api::CeremonyDone { message }))
}
