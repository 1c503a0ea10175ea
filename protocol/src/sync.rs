//! The sync messages: push (device → server) and pull (server → device).
//!
//! # Flow
//! 1. The device pushes its outbox in order, in batches of at most [`MAX_PUSH_MUTATIONS`].
//!    Each [`Mutation`] carries the device's `mutation_seq`, the household, the [`Base`] it was
//!    made on and the field changes from that base to the device's current view (cumulative:
//!    a later mutation of a household repeats the earlier ones' changes, so it never depends on
//!    an outcome the device has not seen yet).
//! 2. The server applies the batch in one transaction, flushes, and answers
//!    [`PushReply::Accepted`] with an [`Outcome`] per mutation. A mutation at or below the
//!    device's last applied seq is a replay and gets its stored outcome. A gap gets
//!    [`PushReply::SeqGap`] with the seq the server expects; nothing is applied.
//! 3. The device pulls from its cursor until `more` is false, receiving household revisions in
//!    `seq` order and the outcomes of its own mutations from `outcomes_from` on (so an outcome
//!    lost with a push response still arrives).
//! 4. **Access.** Every request carries the device's token (see the server's `auth` module):
//!    a push is applied only to households in the user's areas, the rest is rejected and kept
//!    for review; a pull returns only households in the user's areas, with the areas
//!    themselves ([`PullResponse::scope`]) and the households that moved out of them
//!    ([`PullResponse::left_scope`]).
//!
//! Every message starts with the protocol version (see [`crate::codec`]).

use serde::{Deserialize, Serialize};

use crate::access::Scope;
use crate::fields::{EncodedFields, FieldChange};
use crate::merge::ConflictField;
use crate::{DeviceId, HouseholdId};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Most mutations in one push.
pub const MAX_PUSH_MUTATIONS: usize = 500;
/// Most field changes in one mutation.
pub const MAX_CHANGES_PER_MUTATION: usize = 2_000;
/// Most bytes of an encoded push request.
pub const MAX_PUSH_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of an encoded pull request.
pub const MAX_PULL_REQUEST_BYTES: usize = 1024;
/// Most bytes of an encoded pull or push response a device accepts.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Most household changes in one pull page.
pub const MAX_PULL_LIMIT: u32 = 2_000;
/// Most outcomes returned with one pull page.
pub const MAX_PULL_OUTCOMES: usize = 2_000;

/// What a mutation was made on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Base {
    /// The household was recorded on this device and the device has not yet received any
    /// revision of it from the server. A later `New` mutation of a household the same device
    /// created is merged against revision 1, which that create produced.
    New,
    /// The revision the device last received from the server.
    Rev(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    /// The device's counter: 1, 2, 3 … without gaps.
    pub seq: u64,
    pub household_id: HouseholdId,
    pub base: Base,
    #[serde(deserialize_with = "crate::codec::bounded_vec")]
    pub changes: Vec<FieldChange>,
    /// When the enumerator saved, in Unix milliseconds on the device's clock.
    pub made_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    pub device_id: DeviceId,
    #[serde(deserialize_with = "crate::codec::bounded_vec")]
    pub mutations: Vec<Mutation>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushReply {
    Accepted {
        #[serde(deserialize_with = "crate::codec::bounded_vec")]
        outcomes: Vec<MutationOutcome>,
        /// The device's last mutation seq the server has applied.
        last_seq: u64,
    },
    /// The batch did not start right after the last applied seq; resend from `expected`.
    SeqGap { expected: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutationOutcome {
    pub seq: u64,
    pub household_id: HouseholdId,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Made on the current revision (or a create): applied as it is.
    Applied { rev: u32 },
    /// Made on an older revision; every field it changed was untouched since, and others'
    /// changes to other fields were kept.
    Merged { rev: u32 },
    /// Some fields were changed on both sides. Every other field was applied; for these the
    /// registry kept its value and the device's value is kept in the conflict record.
    Conflict {
        rev: u32,
        conflict_id: u64,
        #[serde(deserialize_with = "crate::codec::bounded_vec")]
        fields: Vec<ConflictField>,
    },
    /// Invalid or not allowed. Nothing was applied; the payload is kept on the server for
    /// supervisors and the reason is for the enumerator.
    Rejected { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub device_id: DeviceId,
    /// The last registry `seq` the device has; 0 for a first sync.
    pub cursor: u64,
    /// Most household changes wanted in this page (capped by [`MAX_PULL_LIMIT`]).
    pub limit: u32,
    /// Return this device's outcomes from this mutation seq on (the lowest the device still
    /// waits for), or `u64::MAX` for none.
    pub outcomes_from: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Changed households in `seq` order, each at its latest revision within the page.
    #[serde(deserialize_with = "crate::codec::bounded_vec")]
    pub changes: Vec<HouseholdChange>,
    /// The cursor to send next.
    pub next_cursor: u64,
    /// More changes wait beyond `next_cursor`.
    pub more: bool,
    #[serde(deserialize_with = "crate::codec::bounded_vec")]
    pub outcomes: Vec<MutationOutcome>,
    /// Households changed in this page that have left the caller's areas (moved to a village
    /// the caller does not hold) and that the device may still hold: the device drops them
    /// from its view, keeping any of its own work on them that is not yet synced.
    #[serde(deserialize_with = "crate::codec::bounded_vec")]
    pub left_scope: Vec<HouseholdId>,
    /// The caller's areas as of this page. A device drops the households it holds outside
    /// them, and when they hold a place its previous areas did not, it pulls again from
    /// cursor 0: a reassignment takes effect on the next sync.
    pub scope: Scope,
}

/// A household as the registry holds it at one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdChange {
    pub seq: u64,
    pub household_id: HouseholdId,
    pub rev: u32,
    /// The revision's field map, carried encoded: both ends keep maps encoded, and a page
    /// copies them (`codec::pull_page`).
    pub fields: EncodedFields,
    pub review: ReviewState,
    /// Open conflicts wait for a supervisor.
    pub in_conflict: bool,
}

/// Where a household stands in review.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReviewState {
    Submitted,
    Approved,
    Returned { comment: String },
}
