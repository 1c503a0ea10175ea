//! The server's one error type for requests, and how each failure becomes an HTTP response.
//!
//! A client's mistake is a 4xx with a message the person behind the device can act on. An
//! internal failure is a 500 with a generic message; its detail travels to the request log in
//! a response extension ([`InternalFailure`]) and is logged there once.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::codec::CodecError;

use crate::auth::AuthError;
use crate::store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Well-formed bytes that break a rule of the protocol (an empty push, a gap inside the
    /// batch, a field over its size limit…). The message says which rule.
    #[error("{0}")]
    InvalidRequest(String),
    /// The body does not decode. The codec's messages are bilingual and say what to do.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The body is over the endpoint's byte limit.
    #[error("thân yêu cầu vượt giới hạn {limit} byte / the request body is over the limit of {limit} bytes: send fewer items per request")]
    TooLarge { limit: usize },
    /// The body could not be received.
    #[error("không đọc được thân yêu cầu / the request body could not be read: {0}")]
    Body(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not signed in, not allowed, locked out, or an account operation refused: 401, 403,
    /// 429 (with `Retry-After`), 400, 404 or 409 (see [`AuthError::status`]).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A blocking worker stopped before it answered (it panicked or the runtime is shutting
    /// down).
    #[error("a request worker stopped: {0}")]
    Worker(String),
}

/// The detail of a 500, carried from the handler to the request log.
#[derive(Clone, Debug)]
pub struct InternalFailure(pub String);

/// What a person sees on a 500.
const INTERNAL_MESSAGE: &str = "lỗi máy chủ / internal server error: the request was not completed. Try again later; if it keeps failing, tell the administrator.";

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::InvalidRequest(_) | AppError::Body(_) => StatusCode::BAD_REQUEST,
            AppError::Codec(CodecError::TooLarge { .. }) | AppError::TooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            AppError::Codec(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Store(_) | AppError::Worker(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Auth(error) => error.status(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            let mut response = text(status, INTERNAL_MESSAGE.to_string());
            response
                .extensions_mut()
                .insert(InternalFailure(self.to_string()));
            response
        } else {
            let mut response = text(status, self.to_string());
            match &self {
                AppError::Auth(AuthError::Unauthenticated(_)) => {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                }
                AppError::Auth(AuthError::Locked {
                    retry_after_secs, ..
                }) => {
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        header::HeaderValue::from(*retry_after_secs),
                    );
                }
                _ => {}
            }
            response
        }
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}
