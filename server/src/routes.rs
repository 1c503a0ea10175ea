//! The HTTP face of the registry.
//!
//! - `GET /healthz`: `ok` while the registry is open and writable.
//! - `POST /v1/sync/push`, `POST /v1/sync/pull`: protocol messages in the protocol codec, as
//!   `application/octet-stream`, both ways. A push may instead come as a packed push
//!   (`protocol::codec::packed_push`, with its own `Content-Type`), its mutations packed as
//!   the device's outbox keeps them. A seq gap is a 409 carrying the encoded
//!   [`PushReply::SeqGap`].
//! - `GET /v1/households/{id}`, `GET /v1/conflicts[?household=ID][&open=true]`: JSON views
//!   for supervisors and tests. A household's view includes its stored classification.
//! - `GET /v1/reference`: the reference data texts in use, for devices (see
//!   [`crate::reference`]). Public, like `/healthz`: it holds published reference data only.
//! - `GET /v1/rejected[?household=ID]`: rejected mutations with their payloads (those of a
//!   revoked device among them), for supervisors.
//! - `/v1/auth/*` and `/v1/admin/*`: accounts, devices, the audit log (see
//!   [`crate::auth::routes`]).
//!
//! Every route but `/healthz`, `/v1/reference` and sign-in needs `Authorization: Bearer
//! TOKEN`, and every household is checked against the caller's areas: the sync endpoints
//! take a device token whose device the request names; a household outside the caller's
//! areas is "not found", and the attempt is in the audit log.
//!
//! Errors are `text/plain; charset=utf-8` (see [`crate::error`]). Every request is logged once,
//! with its method, path, status and latency; bodies are never logged.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::codec;
use protocol::fields::FieldValue;
use protocol::merge::ConflictField;
use protocol::sync::{
    Outcome, PullRequest, PushReply, PushRequest, ReviewState, MAX_PULL_REQUEST_BYTES,
    MAX_PUSH_BYTES,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::auth::routes as auth;
use crate::error::{text, AppError, InternalFailure};
use crate::scope::{may_read, not_allowed, Caller, Place};
use crate::store::{ConflictRecord, Registry, StoreError, StoredHousehold};
use crate::AppState;

/// Most bytes of an oversized body read and thrown away before the 413 goes out, so that the
/// client reads the refusal instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The router, with the request log around every route.
pub fn app(state: AppState) -> Router {
    // The sync handlers read their bodies themselves, to the same limits, so that an
    // oversized body is drained before the 413; the limits are set here too for any extractor
    // added later.
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/v1/sync/push",
            post(push).layer(DefaultBodyLimit::max(MAX_PUSH_BYTES)),
        )
        .route(
            "/v1/sync/pull",
            post(pull).layer(DefaultBodyLimit::max(MAX_PULL_REQUEST_BYTES)),
        )
        .route("/v1/households/{id}", get(household))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/reference", get(crate::reference::serve))
        .route("/v1/rejected", get(rejected))
        .merge(crate::auth::routes::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::limits::time_limit,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Logs one line per request. The detail of an internal failure comes from the response's
/// [`InternalFailure`] extension and is logged here, once.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency = started.elapsed();
    match response.extensions().get::<InternalFailure>() {
        Some(InternalFailure(detail)) => {
            tracing::error!(%method, %path, status, ?latency, error = %detail, "request failed");
        }
        None => tracing::info!(%method, %path, status, ?latency, "request"),
    }
    response
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.registry().is_healthy() {
        text(StatusCode::OK, "ok".to_string())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "sổ hộ gặp lỗi ghi đĩa / the registry failed to write to disk: restart the server"
                .to_string(),
        )
    }
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!(
        "không có địa chỉ này / there is no {method} {}: see the server's README for its endpoints",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "không hỗ trợ phương thức này / {} does not take {method}",
            uri.path()
        ),
    )
}

/// The most [`read_body`] reserves ahead of the bytes arriving.
const BODY_PRESIZE_BYTES: usize = 1 << 20;

/// Reads a request body of at most `limit` bytes. An oversized body is read on (up to
/// [`DRAIN_LIMIT`]) and thrown away before the refusal.
pub(crate) async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, AppError> {
    let too_large = AppError::TooLarge { limit };
    if body.size_hint().lower() > limit as u64 {
        drain(body, 0).await;
        return Err(too_large);
    }
    // Sized by the length the request gives (up to a bound): growing a push's body from empty
    // moved it at every doubling.
    // (The length is within `limit`: checked above.)
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(BODY_PRESIZE_BYTES);
    let mut bytes = Vec::with_capacity(expected.min(BODY_PRESIZE_BYTES));
    while let Some(data) = next_data(&mut body).await {
        let data = data.map_err(|error| AppError::Body(error.to_string()))?;
        if let Some(data) = data {
            if bytes.len() + data.len() > limit {
                drain(body, bytes.len() + data.len()).await;
                return Err(too_large);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// The next frame of a body: its data, or `None` for a frame without data (trailers).
async fn next_data(body: &mut Body) -> Option<Result<Option<Bytes>, axum::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .map(|frame| frame.map(|frame| frame.into_data().ok()))
}

async fn drain(mut body: Body, mut read: usize) {
    while read < DRAIN_LIMIT {
        match next_data(&mut body).await {
            Some(Ok(data)) => read += data.map_or(0, |data| data.len()),
            Some(Err(_)) | None => return,
        }
    }
}

/// Bodies at least this long are compressed or decompressed on a blocking thread: zstd takes
/// about a millisecond per 500 KB, too long to hold an async worker.
const BLOCKING_CODING_BYTES: usize = 256 * 1024;

/// Runs zstd work on a blocking thread when the body is long.
async fn zstd_work<T: Send + 'static>(
    length: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    if length < BLOCKING_CODING_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| AppError::Worker(error.to_string()))
}

/// A sync request's body as the codec reads it: decompressed, to `limit`, when it came with
/// `Content-Encoding: zstd`; as it is when it came without one.
async fn sync_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, AppError> {
    let raw = read_body(body, limit).await?;
    decoded_body(headers, raw, limit).await
}

/// A sync request's body as read, decompressed when its `Content-Encoding` says so.
async fn decoded_body(
    headers: &HeaderMap,
    raw: Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, AppError> {
    let Some(content_coding) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(raw);
    };
    let named: String = String::from_utf8_lossy(content_coding.as_bytes())
        .trim()
        .to_ascii_lowercase()
        .chars()
        .take(40)
        .collect();
    match named.as_str() {
        "identity" => Ok(raw),
        codec::CONTENT_CODING => {
            Ok(zstd_work(raw.len(), move || codec::decompress(&raw, limit)).await??)
        }
        _ => Err(AppError::InvalidRequest(format!(
            "mã hoá nội dung '{named}' không được hỗ trợ / Content-Encoding '{named}' is not supported: send the body as it is or as {}",
            codec::CONTENT_CODING
        ))),
    }
}

/// Whether a push's `Content-Type` says its mutations travel packed
/// (`protocol::codec::packed_push`); any other type is read as a [`PushRequest`].
fn is_packed_push(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| {
            media_type
                .trim()
                .eq_ignore_ascii_case(codec::packed_push::CONTENT_TYPE)
        })
}

/// Whether the request's `Accept-Encoding` lists zstd (and does not refuse it with `q=0`).
fn accepts_compressed(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case(codec::CONTENT_CODING) && !refused
        })
}

/// A sync reply: the encoded message, compressed when the device accepts zstd and the
/// message is long enough to gain from it.
async fn sync_reply(
    request: &HeaderMap,
    status: StatusCode,
    message: Vec<u8>,
) -> Result<Response, AppError> {
    let compressible = accepts_compressed(request) && message.len() >= codec::COMPRESS_FROM_BYTES;
    let (body, compressed) = if compressible {
        zstd_work(message.len(), move || {
            match codec::compress_reply(&message) {
                Some(compressed) => (compressed, true),
                None => (message, false),
            }
        })
        .await?
    } else {
        (message, false)
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    if compressible {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if compressed {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(codec::CONTENT_CODING),
        );
    }
    Ok(response)
}

async fn push(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let raw = read_body(body, MAX_PUSH_BYTES).await?;
    // The work on the body starts once it is all here (`AppState::push_work`).
    let work = state.push_work().await?;
    let bytes = decoded_body(&headers, raw, MAX_PUSH_BYTES).await?;
    let (request, packed_records): (PushRequest, _) = if is_packed_push(&headers) {
        tokio::task::spawn_blocking(move || crate::merge_engine::unpack_push(&bytes))
            .await
            .map_err(|error| AppError::Worker(error.to_string()))??
    } else {
        let request = codec::decode(&bytes, MAX_PUSH_BYTES)?;
        // The body is freed before the push is applied.
        drop(bytes);
        (request, Default::default())
    };
    let device = request.device_id;
    auth::sync_device(state.auth(), &caller, device, "/v1/sync/push")?;
    let before = state.registry().device_last_seq(device)?;
    let reply = state
        .push_at_work(caller.clone(), request, packed_records, work)
        .await?;
    if let (Caller::User(principal), PushReply::Accepted { outcomes, .. }) = (&caller, &reply) {
        let fresh = outcomes.iter().filter(|outcome| outcome.seq > before);
        if principal.is_revoked() {
            state
                .auth()
                .revoked_device_pushed(principal, device, fresh.count());
        } else {
            for outcome in fresh {
                if matches!(&outcome.outcome, Outcome::Rejected { reason } if *reason == not_allowed(outcome.household_id))
                {
                    state.auth().denied(
                        principal,
                        &outcome.household_id.to_string(),
                        format!("/v1/sync/push: thay đổi số {} của hộ ngoài khu vực được giao, giữ để xem xét / mutation {} of a household outside the caller's areas, kept for review", outcome.seq, outcome.seq),
                    );
                }
            }
        }
    }
    let status = match reply {
        PushReply::Accepted { .. } => StatusCode::OK,
        PushReply::SeqGap { .. } => StatusCode::CONFLICT,
    };
    sync_reply(&headers, status, codec::encode(&reply)).await
}

async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let bytes = sync_body(&headers, body, MAX_PULL_REQUEST_BYTES).await?;
    let request: PullRequest = codec::decode(&bytes, MAX_PULL_REQUEST_BYTES)?;
    let device = request.device_id;
    auth::sync_device(state.auth(), &caller, device, "/v1/sync/pull")?;
    // Taken before the page is read: every revision stamped before it is in this page or an
    // earlier one.
    let started_ms = crate::now_ms();
    let page = state.pull_as(caller.clone(), request).await?;
    if !page.more && caller.principal().is_some() {
        state.auth().caught_up(device, started_ms);
    }
    sync_reply(&headers, StatusCode::OK, codec::pull_page::encode(&page)).await
}

/// Runs a registry read on a blocking thread.
async fn read<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Registry) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let registry = Arc::clone(&state.registry);
    tokio::task::spawn_blocking(move || work(&registry))
        .await
        .map_err(|error| AppError::Worker(error.to_string()))?
}

fn parse_household_id(text: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(text).map_err(|_| {
        AppError::InvalidRequest(format!(
            "'{text}' không phải mã hộ / '{text}' is not a household id: give the household's UUID, e.g. 0190a0b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b"
        ))
    })
}

fn unknown_household(id: Uuid) -> AppError {
    AppError::NotFound(format!(
        "không có hộ {id} / there is no household {id} in the registry"
    ))
}

async fn household(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    auth::reader(state.auth(), &caller, "/v1/households/{id}")?;
    let id = parse_household_id(&id)?;
    let row = read(&state, move |registry| Ok(registry.household(id)?)).await?;
    // A household outside the caller's areas is reported as missing, so that its existence
    // is not revealed either; the attempt is recorded.
    if row
        .as_ref()
        .is_some_and(|row| !may_read(&caller, &Place::of(&row.fields)))
    {
        auth::denied_household(state.auth(), &caller, id, "/v1/households/{id}");
    }
    let row = row
        .filter(|row| may_read(&caller, &Place::of(&row.fields)))
        .ok_or_else(|| unknown_household(id))?;
    Ok(Json(household_json(&row)?))
}

fn household_json(row: &StoredHousehold) -> Result<Value, AppError> {
    let damaged = |problem: String| {
        AppError::Store(StoreError::Inconsistent(format!(
            "household {} at revision {} does not rebuild: {problem}",
            row.id, row.rev
        )))
    };
    let household = row
        .household()
        .map_err(|error| damaged(error.to_string()))?;
    let household = serde_json::to_value(&household).map_err(|error| damaged(error.to_string()))?;
    Ok(json!({
        "id": row.id.to_string(),
        "rev": row.rev,
        "household": household,
        "review": review_json(&row.review),
        "in_conflict": row.in_conflict(),
        "open_conflicts": row.open_conflicts,
        "created_by": row.created_by.to_string(),
        "last_seq": row.last_seq,
        "classification": row.classification,
    }))
}

fn review_json(review: &ReviewState) -> Value {
    match review {
        ReviewState::Submitted => json!({ "status": "submitted" }),
        ReviewState::Approved => json!({ "status": "approved" }),
        ReviewState::Returned { comment } => json!({ "status": "returned", "comment": comment }),
    }
}

async fn conflicts(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    auth::reader(state.auth(), &caller, "/v1/conflicts")?;
    let Query(query) = query.map_err(|rejection| {
        AppError::InvalidRequest(format!(
            "tham số không hợp lệ / the query is malformed: {}",
            rejection.body_text()
        ))
    })?;
    let mut household = None;
    let mut only_open = false;
    for (key, value) in &query {
        match key.as_str() {
            "household" => household = Some(parse_household_id(value)?),
            "open" => {
                only_open = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(AppError::InvalidRequest(format!(
                            "'open' nhận true hoặc false / 'open' takes true or false, not '{value}'"
                        )))
                    }
                }
            }
            other => {
                return Err(AppError::InvalidRequest(format!(
                    "không biết tham số '{other}' / unknown query parameter '{other}': use household=ID and open=true|false"
                )))
            }
        }
    }
    let records = read(&state, move |registry| {
        let mut readable: HashMap<Uuid, bool> = HashMap::new();
        let mut out = Vec::new();
        for record in registry.conflicts(household)? {
            if only_open && !record.open {
                continue;
            }
            let allowed = match readable.get(&record.household_id) {
                Some(allowed) => *allowed,
                None => {
                    let allowed = registry
                        .household(record.household_id)?
                        .is_some_and(|row| may_read(&caller, &Place::of(&row.fields)));
                    readable.insert(record.household_id, allowed);
                    allowed
                }
            };
            if allowed {
                out.push(conflict_json(&record));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(Value::Array(records)))
}

fn conflict_json(record: &ConflictRecord) -> Value {
    json!({
        "id": record.id,
        "household_id": record.household_id.to_string(),
        "device_id": record.device_id.to_string(),
        "mutation_seq": record.mutation_seq,
        "base_rev": record.base_rev,
        "theirs_rev": record.theirs_rev,
        "made_at_ms": record.made_at_ms,
        "received_at_ms": record.received_at_ms,
        "open": record.open,
        "fields": record.fields.iter().map(conflict_field_json).collect::<Vec<_>>(),
    })
}

/// A conflicting field; a side where the field is absent has no key.
fn conflict_field_json(field: &ConflictField) -> Value {
    let mut out = Map::new();
    out.insert("path".to_string(), Value::String(field.path.clone()));
    for (side, value) in [
        ("base", &field.base),
        ("theirs", &field.theirs),
        ("mine", &field.mine),
    ] {
        if let Some(value) = value {
            out.insert(side.to_string(), field_json(value));
        }
    }
    Value::Object(out)
}

fn field_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Null => Value::Null,
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Int(n) => Value::from(*n),
        FieldValue::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
        FieldValue::Text(s) => Value::String(s.clone()),
        FieldValue::List(items) => Value::Array(items.iter().map(field_json).collect()),
    }
}

/// `GET /v1/rejected[?household=ID]`: rejected mutations with everything the enumerator typed,
/// for a supervisor to review: those of households in the caller's areas, and of creates
/// whose own place is in them.
async fn rejected(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    auth::reader(state.auth(), &caller, "/v1/rejected")?;
    let Query(query) = query.map_err(|rejection| {
        AppError::InvalidRequest(format!(
            "tham số không hợp lệ / the query is malformed: {}",
            rejection.body_text()
        ))
    })?;
    let mut household = None;
    for (key, value) in &query {
        match key.as_str() {
            "household" => household = Some(parse_household_id(value)?),
            other => {
                return Err(AppError::InvalidRequest(format!(
                    "không biết tham số '{other}' / unknown query parameter '{other}': use household=ID"
                )))
            }
        }
    }
    let records = read(&state, move |registry| {
        let mut readable: HashMap<Uuid, bool> = HashMap::new();
        let mut out = Vec::new();
        for record in registry.rejected()? {
            let id = record.mutation.household_id;
            if household.is_some_and(|wanted| wanted != id) {
                continue;
            }
            let stored = match readable.get(&id) {
                Some(allowed) => *allowed,
                None => {
                    let allowed = registry
                        .household(id)?
                        .is_some_and(|row| may_read(&caller, &Place::of(&row.fields)));
                    readable.insert(id, allowed);
                    allowed
                }
            };
            // A rejected create has no stored household: its own place decides.
            let mut own = protocol::fields::FieldMap::new();
            protocol::fields::apply(&mut own, &record.mutation.changes);
            if stored || may_read(&caller, &Place::of(&own)) {
                out.push(rejected_json(&record));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(Value::Array(records)))
}

fn rejected_json(record: &crate::store::RejectedMutation) -> Value {
    let mutation = &record.mutation;
    let changes: Vec<Value> = mutation
        .changes
        .iter()
        .map(|change| {
            json!({
                "path": change.path,
                "value": change.value.as_ref().map_or(Value::Null, field_json),
                "removed": change.value.is_none(),
            })
        })
        .collect();
    json!({
        "device_id": record.device_id.to_string(),
        "mutation_seq": mutation.seq,
        "household_id": mutation.household_id.to_string(),
        "base": match mutation.base {
            protocol::sync::Base::New => Value::String("new".to_string()),
            protocol::sync::Base::Rev(rev) => Value::from(rev),
        },
        "made_at_ms": mutation.made_at_ms,
        "received_at_ms": record.at_ms,
        "reason": record.reason,
        "changes": changes,
    })
}
