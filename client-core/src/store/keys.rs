//! The sled key layout: a one-byte prefix per kind of row, integers big-endian so that key
//! order is numeric order. The outbox's `O` rows live in a tree of their own (`outbox-` and
//! a generation number, see `super::outbox`); everything else in the store's main tree.
//!
//! | key | value |
//! |---|---|
//! | `M` + name | meta: `layout` (u32), `device_id` (16 bytes), `server_url` (UTF-8), `next_seq` (u64), `cursor` (u64), `user` (UTF-8), `device_token` (UTF-8, never shown), `scope` (`protocol::access::Scope`, codec-encoded), `outbox_cleared` (u64: outbox entries up to this seq are cleared), `outbox_generation` (u64: the outbox tree in use) |
//! | `H` + household id (16 bytes) | [`super::rows::HouseholdRow`] |
//! | `O` + mutation seq (u64) | in the outbox tree: a pending `protocol::sync::Mutation`, its household id and seq in front of it packed (`super::rows::encode_mutation`); cleared, as if removed, once its seq is at most `outbox_cleared` |
//! | `W` + mutation seq (u64) | a mutation the server acknowledged without sending its outcome yet |
//! | `C` + conflict id (u64) | [`super::rows::ConflictRow`] |
//! | `R` + mutation seq (u64) | [`super::rows::RejectionRow`] |
//! | `S` + household id (16 bytes) | empty: a household kept although it left the user's areas, for its unsynced work |
//! | `A` + highest seq (u64) | applied and merged outcomes of one push reply, not yet folded into their household rows (`super::acknowledged`) |
//! | `F` | the server's reference texts (`protocol::reference::ReferenceTexts`, codec-encoded) |
//!
//! A save or a sync step is one `apply_batch` on the main tree, or, when it writes outbox
//! entries, one transaction over both trees.

use uuid::Uuid;

pub(crate) const META: u8 = b'M';
pub(crate) const HOUSEHOLD: u8 = b'H';
pub(crate) const OUTBOX: u8 = b'O';
pub(crate) const AWAITING: u8 = b'W';
pub(crate) const CONFLICT: u8 = b'C';
pub(crate) const REJECTION: u8 = b'R';
pub(crate) const OUT_OF_SCOPE: u8 = b'S';
pub(crate) const ACKNOWLEDGED: u8 = b'A';
/// The one reference-data row.
pub(crate) const REFERENCE: &[u8] = b"F";

pub(crate) const META_LAYOUT: &str = "layout";
pub(crate) const META_DEVICE_ID: &str = "device_id";
pub(crate) const META_SERVER_URL: &str = "server_url";
pub(crate) const META_NEXT_SEQ: &str = "next_seq";
pub(crate) const META_CURSOR: &str = "cursor";
pub(crate) const META_USER: &str = "user";
pub(crate) const META_DEVICE_TOKEN: &str = "device_token";
pub(crate) const META_SCOPE: &str = "scope";
/// Outbox entries with seqs up to this one are cleared (see `super::outbox`).
pub(crate) const META_OUTBOX_CLEARED: &str = "outbox_cleared";
/// The generation of the outbox's tree (see `super::outbox`).
pub(crate) const META_OUTBOX_GENERATION: &str = "outbox_generation";

pub(crate) fn meta(name: &str) -> Vec<u8> {
    let mut key = vec![META];
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) fn household(id: Uuid) -> Vec<u8> {
    let mut key = vec![HOUSEHOLD];
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn out_of_scope(id: Uuid) -> Vec<u8> {
    let mut key = vec![OUT_OF_SCOPE];
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn numbered(prefix: u8, number: u64) -> Vec<u8> {
    let mut key = vec![prefix];
    key.extend_from_slice(&number.to_be_bytes());
    key
}

pub(crate) fn outbox(seq: u64) -> Vec<u8> {
    numbered(OUTBOX, seq)
}

pub(crate) fn awaiting(seq: u64) -> Vec<u8> {
    numbered(AWAITING, seq)
}

pub(crate) fn conflict(conflict_id: u64) -> Vec<u8> {
    numbered(CONFLICT, conflict_id)
}

pub(crate) fn rejection(seq: u64) -> Vec<u8> {
    numbered(REJECTION, seq)
}

pub(crate) fn acknowledged(highest_seq: u64) -> Vec<u8> {
    numbered(ACKNOWLEDGED, highest_seq)
}

/// The number after a one-byte prefix, if the key is exactly that shape.
pub(crate) fn number_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The seq of an outbox entry's key; `None` for any other key.
pub(crate) fn outbox_seq(key: &[u8]) -> Option<u64> {
    match key.first() {
        Some(&OUTBOX) => number_of(key),
        _ => None,
    }
}

/// The household id after the prefix, if the key is exactly that shape.
pub(crate) fn household_of(key: &[u8]) -> Option<Uuid> {
    let bytes: [u8; 16] = key.get(1..)?.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_keys_sort_numerically() {
        assert!(outbox(2) < outbox(10));
        assert!(outbox(255) < outbox(256));
        assert_eq!(number_of(&outbox(300)), Some(300));
        assert_eq!(number_of(&[OUTBOX, 1]), None);
        let id = Uuid::from_u128(42);
        assert_eq!(household_of(&household(id)), Some(id));
    }
}
