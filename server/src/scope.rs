//! Who is calling, and which households they may read and change.
//!
//! This is the one place accounts plug in. Every sync request goes through [`Caller`]: the
//! HTTP layer extracts it from the request, and the merge engine calls [`may_write`] on every
//! household a push touches (the stored record and the record it would become) and the pull
//! calls [`may_read`] on every household it returns. Accounts, device tokens and area
//! assignments do not exist yet, so every caller is [`Caller::Unrestricted`] and both checks
//! allow everything; when they land, the extractor verifies the device's token and the two
//! functions compare a household's [`Place`] with the user's assigned communes and villages.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use protocol::fields::{FieldMap, FieldValue};

use crate::error::AppError;

/// The party behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No accounts exist yet: a caller may read and write every household. In-process calls
    /// ([`crate::AppState::push`], [`crate::AppState::pull`]) act as this caller too.
    Unrestricted,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Caller, AppError> {
        Ok(Caller::Unrestricted)
    }
}

/// Where a household is, which is what access is decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place<'a> {
    pub commune_code: Option<&'a str>,
    pub village: Option<&'a str>,
}

impl<'a> Place<'a> {
    /// Reads the place straight from a record's fields, without rebuilding the record.
    pub fn of(fields: &'a FieldMap) -> Place<'a> {
        let text = |path: &str| match fields.get(path) {
            Some(FieldValue::Text(text)) => Some(text.as_str()),
            _ => None,
        };
        Place {
            commune_code: text("commune_code"),
            village: text("village"),
        }
    }
}

/// May `caller` change a household at `place`?
pub fn may_write(caller: &Caller, _place: &Place<'_>) -> bool {
    match caller {
        Caller::Unrestricted => true,
    }
}

/// May `caller` receive a household at `place`?
pub fn may_read(caller: &Caller, _place: &Place<'_>) -> bool {
    match caller {
        Caller::Unrestricted => true,
    }
}
