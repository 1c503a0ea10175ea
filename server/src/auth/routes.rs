//! The HTTP face of accounts, and the checks the other routes share.
//!
//! - `POST /v1/auth/login` `{"username","password"}` → `{"token","expires_at_ms","user"}`:
//!   a session for a supervisor or an administrator.
//! - `POST /v1/auth/enrol` `{"username","password","device_id"}` → `{"device_token",
//!   "device_id","user"}`: a device token bound to that user and device.
//! - `POST /v1/auth/logout` (session): ends the session.
//! - `GET /v1/admin/users`, `POST /v1/admin/users` `{"username","password","role","areas"}`,
//!   `POST /v1/admin/users/{name}/password` `{"password"}`,
//!   `POST /v1/admin/users/{name}/areas` `{"assign":[…],"unassign":[…]}`,
//!   `PUT /v1/admin/users/{name}/role` `{"role","areas"}`, `GET /v1/admin/devices`,
//!   `POST /v1/admin/devices/{id}/revoke`, `GET /v1/admin/audit[?after=ID][&limit=N]`:
//!   administrators, signed in with a session.
//!
//! Every other route names its caller with the [`Caller`] extractor: `Authorization: Bearer
//! TOKEN`, a device token or a session token. No token, or one that proves nothing, is 401;
//! a token that may not do what is asked is 403; too many failed sign-ins are 429 with
//! `Retry-After`. Areas are written as in [`super::Area`]. Bodies are JSON of at most
//! [`MAX_JSON_BYTES`]; passwords and tokens are never logged.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{area_texts, vietnam_time, Actor, Area, Auth, AuthError, NewUser};
use crate::error::AppError;
use crate::scope::{Caller, Credential, Principal, Role};
use crate::store::{AuditEntry, DeviceRecord, UserRecord};
use crate::AppState;

/// Most bytes of a JSON body on these routes.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// Most audit entries in one answer.
pub const MAX_AUDIT_PAGE: usize = 5_000;

/// The account and administration routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/enrol", post(enrol))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/admin/users", get(list_users).post(create_user))
        .route("/v1/admin/users/{name}/password", post(set_password))
        .route("/v1/admin/users/{name}/areas", post(change_areas))
        .route("/v1/admin/users/{name}/role", put(set_role))
        .route("/v1/admin/devices", get(list_devices))
        .route("/v1/admin/devices/{id}/revoke", post(revoke_device))
        .route("/v1/admin/audit", get(audit))
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        AppError::from(self).into_response()
    }
}

/// The token in `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let missing = || {
        AuthError::Unauthenticated(
            "cần đăng nhập / sign-in required: send `Authorization: Bearer TOKEN` with a device token (`ho init`) or a session token (POST /v1/auth/login)"
                .to_string(),
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

fn address_of(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, AppError> {
        let token = bearer(&parts.headers)?;
        let principal = state.auth().resolve(token, address_of(parts))?;
        Ok(Caller::User(Arc::new(principal)))
    }
}

/// Where a request came from, for sign-in limits and the audit log.
struct Address(Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Address {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Address, Self::Rejection> {
        Ok(Address(address_of(parts)))
    }
}

/// The signed-in user of a request (the extractor never yields [`Caller::Unrestricted`], but
/// an in-process caller may).
fn principal(caller: &Caller) -> Result<&Principal, AuthError> {
    caller.principal().ok_or_else(|| {
        AuthError::Forbidden("cần một người dùng đã đăng nhập / a signed-in user is needed".into())
    })
}

fn revoked(auth: &Auth, principal: &Principal, route: &str) -> AppError {
    auth.denied(
        principal,
        route,
        "thiết bị đã bị thu hồi / a revoked device".to_string(),
    );
    AuthError::Forbidden(
        "thiết bị đã bị thu hồi / this device was revoked: it receives no data; ask your supervisor. Its unsynced work was kept for review"
            .to_string(),
    )
    .into()
}

/// The device a sync request may act as: the caller's own, enrolled and named in the request.
/// A revoked device may push (its work is kept for review) but not pull.
pub(crate) fn sync_device(
    auth: &Auth,
    caller: &Caller,
    requested: Uuid,
    route: &str,
) -> Result<(), AppError> {
    let Caller::User(principal) = caller else {
        return Ok(());
    };
    let Credential::Device {
        id,
        revoked: is_revoked,
        ..
    } = principal.credential
    else {
        auth.denied(
            principal,
            route,
            "đồng bộ bằng phiên đăng nhập / sync with a session token".to_string(),
        );
        return Err(AuthError::Forbidden(
            "đồng bộ cần mã thiết bị / sync needs a device token: enrol the device with `ho init --server URL --user NAME`"
                .to_string(),
        )
        .into());
    };
    if id != requested {
        auth.denied(
            principal,
            route,
            format!("yêu cầu mang mã thiết bị khác / the request names device {requested}, the token device {id}"),
        );
        return Err(AuthError::Forbidden(format!(
            "mã thiết bị {requested} không khớp mã truy cập / the request names device {requested} but the token belongs to device {id}"
        ))
        .into());
    }
    if is_revoked && route != "/v1/sync/push" {
        return Err(revoked(auth, principal, route));
    }
    Ok(())
}

/// Refuses a revoked device on a read route; anyone else reads within their areas.
pub(crate) fn reader(auth: &Auth, caller: &Caller, route: &str) -> Result<(), AppError> {
    match caller {
        Caller::User(principal) if principal.is_revoked() => Err(revoked(auth, principal, route)),
        _ => Ok(()),
    }
}

/// Records a denied read of a household outside the caller's areas.
pub(crate) fn denied_household(auth: &Auth, caller: &Caller, id: Uuid, route: &str) {
    if let Caller::User(principal) = caller {
        auth.denied(
            principal,
            &id.to_string(),
            format!("{route}: hộ ngoài khu vực được giao / a household outside the caller's areas"),
        );
    }
}

/// Reads a JSON object body.
async fn json_body(body: Body) -> Result<Map<String, Value>, AppError> {
    let bytes = crate::routes::read_body(body, MAX_JSON_BYTES).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AuthError::Invalid(
            "thân yêu cầu phải là một đối tượng JSON / the body must be a JSON object".into(),
        )
        .into()),
        Err(error) => Err(AuthError::Invalid(format!(
            "thân yêu cầu không phải JSON hợp lệ / the body is not valid JSON: {error}"
        ))
        .into()),
    }
}

fn text_field(map: &Map<String, Value>, name: &str) -> Result<String, AppError> {
    match map.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(AuthError::Invalid(format!(
            "'{name}' phải là chuỗi / '{name}' must be a string"
        ))
        .into()),
        None => Err(AuthError::Invalid(format!("thiếu '{name}' / '{name}' is missing")).into()),
    }
}

fn areas_field(auth: &Auth, map: &Map<String, Value>, name: &str) -> Result<Vec<Area>, AppError> {
    match map.get(name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Area::parse(text, auth.areas()).map_err(AppError::from),
                _ => Err(AuthError::Invalid(format!(
                    "'{name}' là danh sách chuỗi / '{name}' is a list of strings such as \"00004/Thôn Đông\""
                ))
                .into()),
            })
            .collect(),
        Some(_) => Err(AuthError::Invalid(format!(
            "'{name}' là danh sách chuỗi / '{name}' is a list of strings such as \"00004/Thôn Đông\""
        ))
        .into()),
    }
}

fn role_field(map: &Map<String, Value>) -> Result<Role, AppError> {
    let text = text_field(map, "role")?;
    Role::parse(&text).ok_or_else(|| {
        AuthError::Invalid(format!(
            "không có vai trò '{text}' / there is no role '{text}': use enumerator, supervisor or administrator"
        ))
        .into()
    })
}

pub fn user_json(user: &UserRecord) -> Value {
    json!({
        "username": user.username,
        "role": user.role.as_str(),
        "areas": area_texts(&user.scope),
        "created_at_ms": user.created_ms,
        "changed_at_ms": user.changed_ms,
    })
}

pub fn device_json(device: &DeviceRecord) -> Value {
    json!({
        "device_id": device.device_id.to_string(),
        "username": device.username,
        "enrolled_at_ms": device.enrolled_ms,
        "revoked": device.revoked.as_ref().map(|r| json!({"at_ms": r.at_ms, "by": r.by})),
    })
}

pub fn audit_json(entry: &AuditEntry) -> Value {
    json!({
        "id": entry.id,
        "at_ms": entry.entry.at_ms,
        "at": vietnam_time(entry.entry.at_ms),
        "event": entry.entry.event.as_str(),
        "actor": entry.entry.actor,
        "address": entry.entry.address,
        "subject": entry.entry.subject,
        "detail": entry.entry.detail,
    })
}

/// Runs an account operation that hashes or verifies a password on a blocking thread.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Auth) -> Result<T, AuthError> + Send + 'static,
) -> Result<T, AppError> {
    let auth = state.auth_handle();
    tokio::task::spawn_blocking(move || work(&auth))
        .await
        .map_err(|error| AppError::Worker(error.to_string()))?
        .map_err(AppError::from)
}

async fn login(
    State(state): State<AppState>,
    Address(address): Address,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let map = json_body(body).await?;
    let username = text_field(&map, "username")?;
    let password = text_field(&map, "password")?;
    let signed_in = blocking(&state, move |auth| {
        auth.login(&username, &password, address)
    })
    .await?;
    Ok(Json(json!({
        "token": signed_in.token,
        "expires_at_ms": signed_in.expires_ms,
        "expires_at": vietnam_time(signed_in.expires_ms),
        "user": user_json(&signed_in.user),
    })))
}

async fn enrol(
    State(state): State<AppState>,
    Address(address): Address,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let map = json_body(body).await?;
    let username = text_field(&map, "username")?;
    let password = text_field(&map, "password")?;
    let device = text_field(&map, "device_id")?;
    let device_id = Uuid::parse_str(device.trim()).map_err(|_| {
        AuthError::Invalid(format!(
            "'{device}' không phải mã thiết bị / '{device}' is not a device id (a UUID)"
        ))
    })?;
    let enrolled = blocking(&state, move |auth| {
        auth.enrol(&username, &password, device_id, address)
    })
    .await?;
    Ok(Json(json!({
        "device_token": enrolled.token,
        "device_id": enrolled.device.device_id.to_string(),
        "user": user_json(&enrolled.user),
    })))
}

async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let principal = principal(&caller)?;
    if principal.credential != Credential::Session {
        return Err(AuthError::Forbidden(
            "chỉ phiên đăng nhập mới đăng xuất được / only a session signs out; a device is revoked by an administrator"
                .to_string(),
        )
        .into());
    }
    state.auth().logout(principal, bearer(&headers)?)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The administrator behind a request, or a 403 recorded in the audit log.
fn admin(state: &AppState, caller: &Caller, route: &str) -> Result<Actor, AppError> {
    let principal = principal(caller)?;
    Actor::of(principal).map_err(|error| {
        state.auth().denied(principal, route, error.to_string());
        AppError::from(error)
    })
}

async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, AppError> {
    let actor = admin(&state, &caller, "/v1/admin/users")?;
    let users = state.auth().users(&actor)?;
    Ok(Json(Value::Array(users.iter().map(user_json).collect())))
}

async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, AppError> {
    let actor = admin(&state, &caller, "/v1/admin/users")?;
    let map = json_body(body).await?;
    let new = NewUser {
        username: text_field(&map, "username")?,
        password: text_field(&map, "password")?,
        role: role_field(&map)?,
        areas: areas_field(state.auth(), &map, "areas")?,
    };
    let user = blocking(&state, move |auth| auth.create_user(&actor, new)).await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let actor = admin(&state, &caller, "/v1/admin/users/{name}/password")?;
    let map = json_body(body).await?;
    let password = text_field(&map, "password")?;
    let user = blocking(&state, move |auth| {
        auth.set_password(&actor, &name, &password)
    })
    .await?;
    Ok(Json(user_json(&user)))
}

async fn change_areas(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let actor = admin(&state, &caller, "/v1/admin/users/{name}/areas")?;
    let map = json_body(body).await?;
    let assign = areas_field(state.auth(), &map, "assign")?;
    let unassign = areas_field(state.auth(), &map, "unassign")?;
    if assign.is_empty() && unassign.is_empty() {
        return Err(AuthError::Invalid(
            "không có gì để đổi / nothing to change: give \"assign\" or \"unassign\", lists of areas"
                .to_string(),
        )
        .into());
    }
    let user = state
        .auth()
        .change_areas(&actor, &name, &assign, &unassign)?;
    Ok(Json(user_json(&user)))
}

async fn set_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let actor = admin(&state, &caller, "/v1/admin/users/{name}/role")?;
    let map = json_body(body).await?;
    let role = role_field(&map)?;
    let areas = areas_field(state.auth(), &map, "areas")?;
    let user = state.auth().set_role(&actor, &name, role, &areas)?;
    Ok(Json(user_json(&user)))
}

async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, AppError> {
    let actor = admin(&state, &caller, "/v1/admin/devices")?;
    let devices = state.auth().devices(&actor)?;
    Ok(Json(Value::Array(
        devices.iter().map(device_json).collect(),
    )))
}

async fn revoke_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let actor = admin(&state, &caller, "/v1/admin/devices/{id}/revoke")?;
    let device_id = Uuid::parse_str(id.trim()).map_err(|_| {
        AuthError::Invalid(format!(
            "'{id}' không phải mã thiết bị / '{id}' is not a device id (a UUID)"
        ))
    })?;
    let device = state.auth().revoke_device(&actor, device_id)?;
    Ok(Json(device_json(&device)))
}

async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let actor = admin(&state, &caller, "/v1/admin/audit")?;
    let number = |name: &str, default: u64| -> Result<u64, AppError> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| {
                AuthError::Invalid(format!(
                    "'{name}' phải là số / '{name}' must be a whole number, not '{text}'"
                ))
                .into()
            }),
        }
    };
    if let Some(other) = query
        .keys()
        .find(|k| !["after", "limit"].contains(&k.as_str()))
    {
        return Err(AuthError::Invalid(format!(
            "không biết tham số '{other}' / unknown query parameter '{other}': use after=ID and limit=N"
        ))
        .into());
    }
    let after = number("after", 0)?;
    let limit = usize::try_from(number("limit", 500)?)
        .unwrap_or(MAX_AUDIT_PAGE)
        .clamp(1, MAX_AUDIT_PAGE);
    let entries = state.auth().audit(&actor, after, limit)?;
    Ok(Json(Value::Array(entries.iter().map(audit_json).collect())))
}
