//! The time limit on a request. Body and batch sizes are limited where the bodies are read
//! (`routes`, `protocol::sync`), failed sign-ins in `auth::throttle`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::text;
use crate::AppState;

/// How long a request may take by default, body included: enough for a push of the largest
/// batch over a slow mobile link.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Answers 408 when a request takes longer than the configured limit. A push whose work has
/// started finishes and is durable all the same (its writer runs on a blocking thread); the
/// device's next sync receives its outcomes.
pub async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.auth().request_timeout();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => text(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "yêu cầu quá thời gian {} giây / the request took longer than {} seconds: check the connection and sync again; nothing on the device was lost",
                limit.as_secs(),
                limit.as_secs()
            ),
        ),
    }
}
