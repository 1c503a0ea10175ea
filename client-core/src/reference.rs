//! The reference data the device classifies with, and how it follows the server's.
//!
//! A new device classifies with the data built into the app
//! ([`protocol::reference::ReferenceData::embedded`]). Each sync of the field app then fetches
//! the server's reference texts (`GET {server}/v1/reference`, see [`update`]), checks that they
//! parse, and stores them; from then on the device classifies with exactly the texts the server
//! classifies with, so a corrected income line reaches the field without a new app.
//!
//! [`classify`] is the device's classification of a household: the one the field app shows
//! after every save and in `show`, and the one the server stores for the same record. Both go
//! through [`protocol::reference::ReferenceData::classify`], which dates the household by its
//! review round.

use std::sync::{Arc, Mutex};

use protocol::classify::Classification;
use protocol::household::Household;
use protocol::reference::{ReferenceData, ReferenceError, ReferenceTexts};

use crate::store::{Store, StoreError};
use crate::transport::{check_base_url, TransportError, CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// Most bytes of reference data accepted from a server.
pub const MAX_REFERENCE_BYTES: usize = 8 * 1024 * 1024;

/// Loading the device's reference data failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("dữ liệu tham chiếu trên máy không đọc được / the reference data on the device cannot be used: {0}. Sync again to fetch it from the server")]
    Invalid(#[from] ReferenceError),
}

/// Fetching the server's reference data failed. The device keeps what it had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(
        "dữ liệu tham chiếu từ máy chủ bị từ chối / the server's reference data was refused: {0}"
    )]
    Invalid(#[from] ReferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The last reference data parsed in this process, by fingerprint: parsing the code set of
/// 3,321 communes on every save would be wasted work.
static PARSED: Mutex<Option<(String, Arc<ReferenceData>)>> = Mutex::new(None);

fn parse(texts: ReferenceTexts) -> Result<Arc<ReferenceData>, ReferenceError> {
    let fingerprint = texts.fingerprint();
    let mut cache = PARSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((cached, data)) = cache.as_ref() {
        if *cached == fingerprint {
            return Ok(Arc::clone(data));
        }
    }
    let data = Arc::new(ReferenceData::from_texts(texts)?);
    *cache = Some((fingerprint, Arc::clone(&data)));
    Ok(data)
}

/// The reference data the device classifies with: the server's, once fetched, else the data
/// built into the app.
pub fn load(store: &Store) -> Result<Arc<ReferenceData>, LoadError> {
    let texts = store
        .reference_texts()?
        .unwrap_or_else(ReferenceTexts::embedded);
    Ok(parse(texts)?)
}

/// The device's classification of a household.
pub fn classify(store: &Store, household: &Household) -> Result<Classification, LoadError> {
    Ok(load(store)?.classify(household))
}

/// What [`update`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The device had other reference data before.
    pub changed: bool,
    /// The fingerprint of the data now in use.
    pub fingerprint: String,
}

/// Fetches the server's reference texts and stores them if they parse.
pub async fn update(store: &Store, base_url: &str) -> Result<Update, FetchError> {
    let texts = fetch(base_url).await?;
    parse(texts.clone())?;
    let fingerprint = texts.fingerprint();
    let before = store
        .reference_texts()?
        .unwrap_or_else(ReferenceTexts::embedded)
        .fingerprint();
    if before != fingerprint {
        store.save_reference_texts(&texts)?;
    }
    Ok(Update {
        changed: before != fingerprint,
        fingerprint,
    })
}

/// `GET {base_url}/v1/reference`.
pub async fn fetch(base_url: &str) -> Result<ReferenceTexts, FetchError> {
    let base = check_base_url(base_url)?;
    let url = format!("{base}/v1/reference");
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ho/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(TransportError::Setup)?;
    let unreachable = |error: reqwest::Error| TransportError::Unreachable {
        url: url.clone(),
        detail: error.to_string(),
    };
    let mut response = client.get(&url).send().await.map_err(unreachable)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_REFERENCE_BYTES {
            return Err(ReferenceError::Json(format!(
                "quá {MAX_REFERENCE_BYTES} byte / over {MAX_REFERENCE_BYTES} bytes"
            ))
            .into());
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(TransportError::Refused {
            status: status.as_u16(),
            message: text.chars().take(2_000).collect(),
        }
        .into());
    }
    Ok(ReferenceTexts::from_json(&text)?)
}
