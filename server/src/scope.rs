//! Who is calling, and which households they may read and change.
//!
//! Every request goes through [`Caller`]: the HTTP layer builds it from the request's bearer
//! token (see [`crate::auth`]), the merge engine calls [`may_write`] on every household a push
//! touches (the stored record and the record it would become) and the pull calls [`may_read`]
//! on every household it returns. A user's areas are a [`Scope`]: villages for an enumerator,
//! communes for a supervisor, a province or everything for an administrator. In-process calls
//! ([`crate::AppState::push`], [`crate::AppState::pull`]) act as [`Caller::Unrestricted`].
//!
//! A revoked device is still a caller: its pushes are kept as rejected mutations with
//! [`REVOKED_REASON`] (its unsynced work is evidence), but it may read and change nothing.

use std::net::IpAddr;
use std::sync::Arc;

use protocol::access::Scope;
use protocol::areas::AreaRegistry;
use protocol::fields::{EncodedFields, FieldMap, FieldValue};
use uuid::Uuid;

use crate::store::{PulledHousehold, Registry, StoreError};

/// The reason every mutation of a revoked device is rejected with.
pub const REVOKED_REASON: &str = "thiết bị đã bị thu hồi / this device was revoked: its changes are kept for a supervisor to review but not applied; ask your supervisor";

/// What a user does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Records households in the villages assigned to them, on an enrolled device.
    Enumerator,
    /// Reviews the communes assigned to them.
    Supervisor,
    /// Manages users and devices of one province or of the whole country.
    Administrator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Enumerator, Role::Supervisor, Role::Administrator];

    /// The name in the JSON API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Enumerator => "enumerator",
            Role::Supervisor => "supervisor",
            Role::Administrator => "administrator",
        }
    }

    pub fn label_vi(self) -> &'static str {
        match self {
            Role::Enumerator => "điều tra viên",
            Role::Supervisor => "giám sát viên",
            Role::Administrator => "quản trị viên",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// How a user proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A device token. A revoked device's token is still recognised, so that its last push is
    /// kept for review.
    Device {
        id: Uuid,
        revoked: bool,
        /// When the device last finished a pull, on the server's clock: how far back a pull
        /// looks for households that moved out of the caller's areas.
        caught_up_ms: Option<i64>,
    },
    /// A session token from signing in (supervisors and administrators).
    Session,
}

/// A signed-in user.
#[derive(Clone)]
pub struct Principal {
    pub username: String,
    pub role: Role,
    /// The user's areas as they are now: a reassignment takes effect on the next request.
    pub scope: Scope,
    pub credential: Credential,
    /// Where the request came from, for the audit log.
    pub address: Option<IpAddr>,
    /// The code set that says which province a commune is in.
    pub areas: Arc<AreaRegistry>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("scope", &self.scope)
            .field("credential", &self.credential)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// The device behind a device token, if that is how the caller signed in.
    pub fn device(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Device { id, .. } => Some(id),
            Credential::Session => None,
        }
    }

    pub fn is_revoked(&self) -> bool {
        matches!(self.credential, Credential::Device { revoked: true, .. })
    }

    /// The address for the audit log.
    pub fn address_text(&self) -> String {
        self.address.map_or_else(String::new, |a| a.to_string())
    }

    fn holds(&self, place: &Place<'_>) -> bool {
        !self.is_revoked()
            && self
                .scope
                .contains(place.commune_code, place.village, &self.areas)
    }
}

/// The party behind a request.
#[derive(Clone, Debug)]
pub enum Caller {
    /// In-process calls (tests, simulations, tools): every household.
    Unrestricted,
    /// A signed-in user, through a device token or a session.
    User(Arc<Principal>),
}

impl Caller {
    /// The caller's areas: what a pull page tells the device.
    pub fn scope(&self) -> Scope {
        match self {
            Caller::Unrestricted => Scope::Everything,
            Caller::User(principal) => principal.scope.clone(),
        }
    }

    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Unrestricted => None,
            Caller::User(principal) => Some(principal),
        }
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

    /// Reads the place from encoded fields, in place.
    pub fn of_encoded(fields: &'a EncodedFields) -> Place<'a> {
        Place {
            commune_code: fields.text("commune_code"),
            village: fields.text("village"),
        }
    }
}

/// May `caller` change a household at `place`?
pub fn may_write(caller: &Caller, place: &Place<'_>) -> bool {
    match caller {
        Caller::Unrestricted => true,
        Caller::User(principal) => principal.holds(place),
    }
}

/// May `caller` receive a household at `place`?
pub fn may_read(caller: &Caller, place: &Place<'_>) -> bool {
    match caller {
        Caller::Unrestricted => true,
        Caller::User(principal) => principal.holds(place),
    }
}

/// The reason every mutation of this caller is refused with, whatever it touches: a revoked
/// device's work is kept for review, never applied.
pub fn refusal(caller: &Caller) -> Option<String> {
    match caller {
        Caller::User(principal) if principal.is_revoked() => Some(REVOKED_REASON.to_string()),
        _ => None,
    }
}

/// The reason a mutation of a household outside the caller's areas is rejected with.
pub fn not_allowed(id: Uuid) -> String {
    format!("không có quyền sửa hộ {id} / you may not change household {id}: it is outside the areas assigned to you; the change is kept for your supervisor")
}

/// Slack on "made since the device last caught up": a revision is stamped when its push
/// starts to be applied and lands a little later, so a pull that finished meanwhile may not
/// have seen it.
const CAUGHT_UP_SLACK_MS: i64 = 10 * 60 * 1000;

/// May the calling device still hold `household`, now outside its areas? True when one
/// of its revisions since the device last caught up (and the one current then) was inside
/// them, or when the device created it. A pull sends such households as `left_scope`, so
/// that the device drops a household someone moved to another village.
///
/// Only revisions since the device last caught up are read: most households outside a
/// caller's areas were never inside them, and cost one meta check here.
pub fn may_have_held(
    registry: &Registry,
    caller: &Caller,
    household: &PulledHousehold,
) -> Result<bool, StoreError> {
    let Caller::User(principal) = caller else {
        return Ok(false);
    };
    let Credential::Device {
        id, caught_up_ms, ..
    } = principal.credential
    else {
        return Ok(false);
    };
    if household.created_by == id {
        return Ok(true);
    }
    let since = caught_up_ms.map_or(i64::MIN, |ms| ms.saturating_sub(CAUGHT_UP_SLACK_MS));
    let mut rev = household.rev;
    while rev > 1 {
        rev -= 1;
        let Some(revision) = registry.revision(household.id, rev)? else {
            break;
        };
        let place = Place::of(&revision.fields);
        if principal
            .scope
            .contains(place.commune_code, place.village, &principal.areas)
        {
            return Ok(true);
        }
        if revision.at_ms < since {
            break;
        }
    }
    Ok(false)
}
