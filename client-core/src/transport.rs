//! How sync requests reach the server: the [`Transport`] trait, and [`HttpTransport`] over
//! reqwest.
//!
//! The sync engine never does I/O itself; a transport turns one [`Request`] into one
//! [`Response`]. Tests and simulations implement [`Transport`] in process, with faults.
//!
//! Over HTTP: `POST {base}/v1/sync/push` with a packed push (`protocol::codec::packed_push`,
//! its own `Content-Type`) and `POST {base}/v1/sync/pull` with a pull request encoded with
//! `protocol::codec` as `application/octet-stream`, with the device token as
//! `Authorization: Bearer …`. 200 carries the reply; 409 on a push carries an encoded
//! `PushReply::SeqGap`; 401 and 403 are [`TransportError::Denied`] (not enrolled, enrolled
//! again elsewhere, or revoked); any other status is a refusal whose body is a plain-text
//! message for the person at the device.
//!
//! [`HttpTransport::enrol`] signs a user in once on this device (`POST {base}/v1/auth/enrol`,
//! JSON) and returns the device token the store keeps.

use std::time::Duration;

use protocol::codec::{self, packed_push, CodecError};
use protocol::sync::MAX_RESPONSE_BYTES;

use crate::sync::{Request, Response};

/// How long to wait for a connection to the server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, response included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of a refusal message read from the server.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most characters of a refusal message kept.
const MAX_MESSAGE_CHARS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("địa chỉ máy chủ '{url}' không hợp lệ / the server address '{url}' is invalid: {problem}. Write it like http://192.168.1.10:8080")]
    InvalidUrl { url: String, problem: String },
    #[error("không khởi tạo được kết nối HTTP / could not set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
    #[error("không kết nối được máy chủ {url} / the server at {url} is unreachable: {detail}. Check the network (Wi-Fi or mobile data) and sync again; nothing on the device was lost")]
    Unreachable { url: String, detail: String },
    #[error("máy chủ từ chối (mã {status}) / the server refused the request (status {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("máy chủ không cho phép thiết bị này (mã {status}) / the server denied this device (status {status}): {message}. Dữ liệu trên máy vẫn được giữ / everything on the device is kept; ask your supervisor")]
    Denied { status: u16, message: String },
    #[error("phản hồi từ {url} không đọc được / the response from {url} cannot be read: {source}. The server may run another version; ask the administrator")]
    BadResponse {
        url: String,
        #[source]
        source: CodecError,
    },
}

/// Sends one sync request and returns the server's response.
#[allow(async_fn_in_trait)]
pub trait Transport {
    async fn send(&self, request: &Request) -> Result<Response, TransportError>;
}

/// The production transport: HTTP(S) with rustls on ring.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    /// The server's base address without a trailing slash.
    base: String,
    /// The device token sent with every sync request; never shown.
    token: Option<String>,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish_non_exhaustive()
    }
}

/// What enrolling a device returned.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub user: String,
    pub role: String,
    /// The user's areas as the server writes them (`00004/Thôn Đông`, `00004`, `01`, `*`).
    pub areas: Vec<String>,
    /// The device token; never printed.
    pub token: String,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("user", &self.user)
            .field("role", &self.role)
            .field("areas", &self.areas)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport to the server at `base_url` (`http://host:port` or `https://…`, optionally
    /// with a path prefix).
    pub fn new(base_url: &str) -> Result<HttpTransport, TransportError> {
        let base = check_base_url(base_url)?;
        // reqwest is built without a default crypto provider; install ring once per process.
        // A provider installed earlier (by us or by the embedding app) is fine as it is.
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ho/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TransportError::Setup)?;
        Ok(HttpTransport {
            client,
            base,
            token: None,
        })
    }

    /// The same transport, sending `token` as the device's bearer token.
    pub fn with_token(mut self, token: &str) -> HttpTransport {
        self.token = Some(token.to_string());
        self
    }

    /// Enrols this device for `username`: the server checks the password and returns a
    /// device token bound to the user and `device_id`.
    pub async fn enrol(
        &self,
        username: &str,
        password: &str,
        device_id: uuid::Uuid,
    ) -> Result<Enrolled, TransportError> {
        let url = format!("{}/v1/auth/enrol", self.base);
        let body = serde_json::json!({
            "username": username,
            "password": password,
            "device_id": device_id.to_string(),
        })
        .to_string();
        let mut response = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| unreachable(&url, &error))?;
        let status = response.status().as_u16();
        if status != 200 {
            let bytes = read_body(&url, &mut response, MAX_MESSAGE_BYTES, true).await?;
            return Err(TransportError::Refused {
                status,
                message: refusal_message(&bytes, status),
            });
        }
        let bytes = read_body(&url, &mut response, MAX_MESSAGE_BYTES, false).await?;
        let bad = |problem: &str| TransportError::BadResponse {
            url: url.clone(),
            source: CodecError::Malformed(problem.to_string()),
        };
        let reply: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|error| bad(&error.to_string()))?;
        let text = |value: &serde_json::Value| value.as_str().map(str::to_string);
        Ok(Enrolled {
            token: text(&reply["device_token"]).ok_or_else(|| bad("no device_token"))?,
            user: text(&reply["user"]["username"]).ok_or_else(|| bad("no user"))?,
            role: text(&reply["user"]["role"]).unwrap_or_default(),
            areas: reply["user"]["areas"]
                .as_array()
                .map(|areas| areas.iter().filter_map(text).collect())
                .unwrap_or_default(),
        })
    }

    /// The server's base address, as used.
    pub fn base_url(&self) -> &str {
        &self.base
    }
}

/// Checks a server address and returns it without a trailing slash.
pub fn check_base_url(base_url: &str) -> Result<String, TransportError> {
    let invalid = |problem: &str| TransportError::InvalidUrl {
        url: base_url.chars().take(200).collect(),
        problem: problem.to_string(),
    };
    let trimmed = base_url.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "chỉ dùng http hoặc https / only http and https are supported",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("thiếu tên máy chủ / the host is missing"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "không dùng ? hoặc # trong địa chỉ / the address takes no '?' or '#' part",
        ));
    }
    Ok(trimmed.to_string())
}

impl Transport for HttpTransport {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        // Sync messages travel compressed both ways: a slow link is the usual limit in the field.
        // A push's mutations are packed already, each as the outbox keeps it, so a push goes as
        // it is; a pull request is compressed when it is long enough to gain.
        let (endpoint, content_type, body, coding) = match request {
            Request::Push(push) => ("push", packed_push::CONTENT_TYPE, push.encode(), None),
            Request::Pull(pull) => {
                let body = codec::encode(pull);
                let (body, coding) = match codec::compress(&body) {
                    Some(compressed) => (compressed, Some(codec::CONTENT_CODING)),
                    None => (body, None),
                };
                ("pull", "application/octet-stream", body, coding)
            }
        };
        let url = format!("{}/v1/sync/{endpoint}", self.base);
        let mut post = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::ACCEPT_ENCODING, codec::CONTENT_CODING);
        if let Some(coding) = coding {
            post = post.header(reqwest::header::CONTENT_ENCODING, coding);
        }
        if let Some(token) = &self.token {
            post = post.bearer_auth(token);
        }
        let mut response = post
            .body(body)
            .send()
            .await
            .map_err(|error| unreachable(&url, &error))?;
        let status = response.status().as_u16();
        let is_reply = match request {
            Request::Push(_) => status == 200 || status == 409,
            Request::Pull(_) => status == 200,
        };
        if !is_reply {
            let bytes = read_body(&url, &mut response, MAX_MESSAGE_BYTES, true).await?;
            let message = refusal_message(&bytes, status);
            return Err(match status {
                401 | 403 => TransportError::Denied { status, message },
                _ => TransportError::Refused { status, message },
            });
        }
        let compressed = response
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .is_some_and(|coding| {
                coding
                    .as_bytes()
                    .eq_ignore_ascii_case(codec::CONTENT_CODING.as_bytes())
            });
        let bytes = read_body(&url, &mut response, MAX_RESPONSE_BYTES, false).await?;
        let bad = |source| TransportError::BadResponse {
            url: url.clone(),
            source,
        };
        let bytes = if compressed {
            codec::decompress(&bytes, MAX_RESPONSE_BYTES).map_err(bad)?
        } else {
            bytes
        };
        match request {
            Request::Push(_) => codec::decode(&bytes, MAX_RESPONSE_BYTES)
                .map(Response::Push)
                .map_err(bad),
            Request::Pull(_) => codec::pull_page::decode(&bytes, MAX_RESPONSE_BYTES)
                .map(Response::Pull)
                .map_err(bad),
        }
    }
}

fn unreachable(url: &str, error: &reqwest::Error) -> TransportError {
    let detail = if error.is_timeout() {
        format!(
            "hết thời gian chờ / timed out (connect {} s, request {} s)",
            CONNECT_TIMEOUT.as_secs(),
            REQUEST_TIMEOUT.as_secs()
        )
    } else {
        // The innermost cause says the most ("Connection refused", "dns error" …); the outer
        // layers repeat the URL.
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            detail = cause.to_string();
            source = cause.source();
        }
        detail
    };
    TransportError::Unreachable {
        url: url.to_string(),
        detail,
    }
}

/// Reads a body of at most `limit` bytes; a longer one is an error, or cut short when
/// `truncate` (for refusal messages, where the start is what matters).
async fn read_body(
    url: &str,
    response: &mut reqwest::Response,
    limit: usize,
    truncate: bool,
) -> Result<Vec<u8>, TransportError> {
    let too_large = |got: usize| TransportError::BadResponse {
        url: url.to_string(),
        source: CodecError::TooLarge { got, limit },
    };
    if let Some(length) = response.content_length() {
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > limit && !truncate {
            return Err(too_large(length));
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| unreachable(url, &error))?
    {
        if body.len() + chunk.len() > limit {
            if truncate {
                body.extend_from_slice(&chunk[..limit - body.len()]);
                break;
            }
            return Err(too_large(body.len() + chunk.len()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn refusal_message(bytes: &[u8], status: u16) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return match status {
            401 | 403 => "thiết bị chưa được đăng ký hoặc đã bị thu hồi / this device is not enrolled or was revoked: ask your supervisor".to_string(),
            404 => "máy chủ không có địa chỉ đồng bộ này / the server has no sync endpoint here: check the server address".to_string(),
            _ => "máy chủ không nói lý do / the server gave no reason".to_string(),
        };
    }
    let mut message: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    if text.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::sync::{PullRequest, PullResponse, PushReply};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// Answers one request per canned response, then stops; returns what it was sent.
    fn canned(responses: Vec<(u16, Vec<u8>)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        canned_with(
            responses
                .into_iter()
                .map(|(status, body)| (status, "", body))
                .collect(),
        )
    }

    /// As [`canned`], each response with extra header lines (ending in `\r\n`).
    fn canned_with(
        responses: Vec<(u16, &'static str, Vec<u8>)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, extra, body) in responses {
                let Ok((stream, _)) = listener.accept() else {
                    break;
                };
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut request_body = vec![0u8; length];
                let _ = reader.read_exact(&mut request_body);
                seen.push(head);
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
            seen
        });
        (url, handle)
    }

    fn push() -> Request {
        Request::Push(crate::sync::PushBatch::new(uuid::Uuid::from_u128(1), &[]))
    }

    fn pull() -> Request {
        Request::Pull(PullRequest {
            device_id: uuid::Uuid::from_u128(1),
            cursor: 0,
            limit: 10,
            outcomes_from: u64::MAX,
        })
    }

    /// An empty last page.
    fn last_page() -> PullResponse {
        PullResponse {
            changes: vec![],
            next_cursor: 3,
            more: false,
            outcomes: vec![],
            left_scope: vec![],
            scope: protocol::access::Scope::Everything,
        }
    }

    #[tokio::test]
    async fn compressed_replies_are_read_within_the_response_limit() {
        let page = last_page();
        let mut padded = codec::encode(&page);
        padded.extend(std::iter::repeat_n(0u8, 4096));
        let zstd = "content-encoding: zstd\r\n";
        let bomb = codec::compress(&vec![0u8; MAX_RESPONSE_BYTES + 1]).expect("compresses");
        let (url, server) = canned_with(vec![
            (
                200,
                zstd,
                zstd::bulk::compress(&codec::encode(&page), 3).expect("compress"),
            ),
            (200, zstd, codec::compress(&padded).expect("compresses")),
            (200, zstd, bomb),
            (200, zstd, b"plain bytes, said to be zstd".to_vec()),
        ]);
        let transport = HttpTransport::new(&url).expect("transport");
        assert_eq!(
            transport
                .send(&pull())
                .await
                .expect("decompressed and decoded"),
            Response::Pull(page)
        );
        for what in ["trailing bytes", "over the limit", "corrupt"] {
            let error = transport.send(&pull()).await.expect_err(what);
            assert!(
                matches!(error, TransportError::BadResponse { .. }),
                "{what}: {error}"
            );
        }
        let seen = server.join().expect("server thread");
        assert!(
            seen[0].to_lowercase().contains("accept-encoding: zstd"),
            "{}",
            seen[0]
        );
    }

    #[tokio::test]
    async fn statuses_map_to_replies_and_errors() {
        let page = last_page();
        let (url, server) = canned(vec![
            (409, codec::encode(&PushReply::SeqGap { expected: 4 })),
            (200, codec::encode(&page)),
            (
                403,
                "thiết bị đã bị thu hồi / device revoked"
                    .as_bytes()
                    .to_vec(),
            ),
            (200, b"not a protocol message".to_vec()),
            (500, Vec::new()),
        ]);
        let transport = HttpTransport::new(&url)
            .expect("transport")
            .with_token("hod_abc");
        assert!(!format!("{transport:?}").contains("hod_abc"));
        assert_eq!(
            transport.send(&push()).await.ok(),
            Some(Response::Push(PushReply::SeqGap { expected: 4 }))
        );
        assert_eq!(
            transport.send(&pull()).await.ok(),
            Some(Response::Pull(page))
        );
        match transport.send(&push()).await {
            Err(TransportError::Denied {
                status: 403,
                message,
            }) => {
                assert_eq!(message, "thiết bị đã bị thu hồi / device revoked");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(
            transport.send(&pull()).await,
            Err(TransportError::BadResponse { .. })
        ));
        assert!(matches!(
            transport.send(&pull()).await,
            Err(TransportError::Refused { status: 500, message }) if !message.is_empty()
        ));
        let seen = server.join().expect("server thread");
        assert!(
            seen[0].starts_with("POST /v1/sync/push HTTP/1.1"),
            "{}",
            seen[0]
        );
        assert!(
            seen[1].starts_with("POST /v1/sync/pull HTTP/1.1"),
            "{}",
            seen[1]
        );
        let push_head = seen[0].to_lowercase();
        assert!(push_head.contains(&format!("content-type: {}", packed_push::CONTENT_TYPE)));
        assert!(
            !push_head.contains("content-encoding"),
            "packed mutations are not compressed again"
        );
        assert!(seen[1]
            .to_lowercase()
            .contains("content-type: application/octet-stream"));
        assert!(seen[0]
            .to_lowercase()
            .contains("authorization: bearer hod_abc"));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let transport = HttpTransport::new(&url).expect("transport");
        assert!(matches!(
            transport.send(&pull()).await,
            Err(TransportError::Unreachable { .. })
        ));
    }

    #[test]
    fn server_addresses_are_checked() {
        assert_eq!(
            check_base_url("http://10.0.0.2:8080/").ok().as_deref(),
            Some("http://10.0.0.2:8080")
        );
        assert_eq!(
            check_base_url(" https://ho.example.vn/api ")
                .ok()
                .as_deref(),
            Some("https://ho.example.vn/api")
        );
        for bad in ["", "10.0.0.2:8080", "ftp://x", "http://", "http://x/?a=1"] {
            assert!(
                matches!(check_base_url(bad), Err(TransportError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn refusal_messages_are_kept_short_and_never_empty() {
        assert_eq!(refusal_message(b"  sai mat khau \n", 401), "sai mat khau");
        assert!(refusal_message(b"", 403).contains("not enrolled"));
        let long = vec![b'x'; MAX_MESSAGE_CHARS + 10];
        assert_eq!(
            refusal_message(&long, 500).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
        assert!(refusal_message(&[0xff, 0xfe], 500).contains('\u{fffd}'));
    }
}
