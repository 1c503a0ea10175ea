//! Sled keys, built by hand. Every key starts with a one-byte prefix naming its kind; numbers
//! are big-endian, so that the tree's byte order is the order the registry scans in.
//!
//! | prefix | rest of the key                 | value                                   |
//! |--------|---------------------------------|-----------------------------------------|
//! | `h`    | household id (16)               | household row (without its fields)      |
//! | `n`    | seq (u64)                       | the rows of the households a commit created, a run keyed by the change seq of its first household; an `h` row of the same household, written when it changes, supersedes its entry |
//! | `r`    | household id (16), rev (u32)    | revision row (with the full field map)  |
//! | `c`    | seq (u64)                       | household ids (16 each) of that seq and the next ones: the change log, a run a commit |
//! | `d`    | device id (16)                  | last applied mutation seq (u64)         |
//! | `o`    | device id (16), seq (u64)       | the stored outcomes of that mutation and the device's next ones in the same commit |
//! | `x`    | conflict id (u64)               | conflict row                            |
//! | `y`    | household id (16), conflict id  | empty: conflicts by household           |
//! | `j`    | device id (16), seq (u64)       | rejected mutation row                   |
//! | `k`    | household id (16), rev (u32), n (u32) | classification record `n` of that revision, 1… by recomputations (record 0, made with it, is in the revision row; format-2 registries have it here) |
//! | `m`    | counter name                    | u64                                     |
//! | `e`    | reference-data fingerprint (16 hex) | the reference texts: kept for the decisions made with them, whose texts are rebuilt on read |
//! | `v`    | household id (16), rev (u32)    | journal only, never in sled: the row of a household's current revision, which its `h` row refers to |
//!
//! sled spends about 240 bytes of disk on every entry, however small, and about 10 µs of CPU
//! on every insert (more in a larger tree), so the households a commit creates share one
//! entry: their rows in an `n` run, each referring to its first revision's row in the journal
//! (written under `v`). A household gets an `h` row of its own when it changes; when a
//! revision is superseded, its reference moves to an `r` row. The change log and outcomes are
//! stored in runs too. The rows under `r`, `k`, `x`, `j` and
//! `o` are kept in the journal; sled holds a reference to each (see `in_journal`).

use uuid::Uuid;

pub(super) const HOUSEHOLD: u8 = b'h';
pub(super) const NEW_HOUSEHOLDS: u8 = b'n';
pub(super) const REVISION: u8 = b'r';
pub(super) const CHANGE: u8 = b'c';
pub(super) const DEVICE: u8 = b'd';
pub(super) const OUTCOME: u8 = b'o';
pub(super) const CONFLICT: u8 = b'x';
pub(super) const CONFLICT_BY_HOUSEHOLD: u8 = b'y';
pub(super) const REJECTED: u8 = b'j';
pub(super) const CLASSIFICATION: u8 = b'k';
pub(super) const REFERENCE_DATA: u8 = b'e';
pub(super) const CURRENT_REVISION: u8 = b'v';

// Counters live under the prefix `m`.

/// The last change-log seq handed out.
pub(super) const HEAD_SEQ: &[u8] = b"mhead_seq";
/// The last conflict id handed out.
pub(super) const LAST_CONFLICT: &[u8] = b"mlast_conflict";
/// How many households the registry holds.
pub(super) const HOUSEHOLDS: &[u8] = b"mhouseholds";
/// The newest layout of the tree that a build wrote to it ([`super::LAYOUT`]).
pub(super) const LAYOUT: &[u8] = b"mlayout";

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|part| part.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(prefix);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The texts of the reference data of `fingerprint`.
pub(super) fn reference_data(fingerprint: &str) -> Vec<u8> {
    key(REFERENCE_DATA, &[fingerprint.as_bytes()])
}

pub(super) fn household(id: Uuid) -> Vec<u8> {
    key(HOUSEHOLD, &[id.as_bytes()])
}

/// The run of the households a commit created, the first of them changed at `seq`.
pub(super) fn new_households(seq: u64) -> Vec<u8> {
    key(NEW_HOUSEHOLDS, &[&seq.to_be_bytes()])
}

pub(super) fn revision(id: Uuid, rev: u32) -> Vec<u8> {
    key(REVISION, &[id.as_bytes(), &rev.to_be_bytes()])
}

/// The journal-only key of a household's current revision row (see the table above).
pub(super) fn current_revision(id: Uuid, rev: u32) -> Vec<u8> {
    key(CURRENT_REVISION, &[id.as_bytes(), &rev.to_be_bytes()])
}

/// Every revision key of one household starts with this.
pub(super) fn revisions_of(id: Uuid) -> Vec<u8> {
    key(REVISION, &[id.as_bytes()])
}

pub(super) fn change(seq: u64) -> Vec<u8> {
    key(CHANGE, &[&seq.to_be_bytes()])
}

pub(super) fn device(id: Uuid) -> Vec<u8> {
    key(DEVICE, &[id.as_bytes()])
}

pub(super) fn outcome(device: Uuid, seq: u64) -> Vec<u8> {
    key(OUTCOME, &[device.as_bytes(), &seq.to_be_bytes()])
}

pub(super) fn conflict(id: u64) -> Vec<u8> {
    key(CONFLICT, &[&id.to_be_bytes()])
}

pub(super) fn conflict_by_household(household: Uuid, id: u64) -> Vec<u8> {
    key(
        CONFLICT_BY_HOUSEHOLD,
        &[household.as_bytes(), &id.to_be_bytes()],
    )
}

pub(super) fn conflicts_of(household: Uuid) -> Vec<u8> {
    key(CONFLICT_BY_HOUSEHOLD, &[household.as_bytes()])
}

pub(super) fn rejected(device: Uuid, seq: u64) -> Vec<u8> {
    key(REJECTED, &[device.as_bytes(), &seq.to_be_bytes()])
}

pub(super) fn classification(id: Uuid, rev: u32, n: u32) -> Vec<u8> {
    key(
        CLASSIFICATION,
        &[id.as_bytes(), &rev.to_be_bytes(), &n.to_be_bytes()],
    )
}

/// Every classification record key of one revision starts with this.
pub(super) fn classifications_of(id: Uuid, rev: u32) -> Vec<u8> {
    key(CLASSIFICATION, &[id.as_bytes(), &rev.to_be_bytes()])
}

/// Reads a big-endian u64 at `at` in a key.
pub(super) fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Reads a big-endian u32 at `at` in a key.
pub(super) fn u32_at(key: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = key.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Reads a uuid at `at` in a key.
pub(super) fn uuid_at(key: &[u8], at: usize) -> Option<Uuid> {
    let bytes: [u8; 16] = key.get(at..at + 16)?.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

/// Shows a key in errors: the prefix as a letter, the rest in hex.
pub(super) fn show(key: &[u8]) -> String {
    match key.split_first() {
        None => "(empty key)".to_string(),
        Some((prefix, rest)) => {
            let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}:{hex}", char::from(*prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_parts_sort_in_numeric_order() {
        assert!(change(255) < change(256));
        assert!(change(1) < change(u64::MAX));
        let id = Uuid::from_u128(42);
        assert!(revision(id, 9) < revision(id, 10));
        assert!(revision(id, 10).starts_with(&revisions_of(id)));
        assert_eq!(u32_at(&revision(id, 10), 17), Some(10));
        assert_eq!(u64_at(&outcome(id, 77), 17), Some(77));
        assert_eq!(uuid_at(&outcome(id, 77), 1), Some(id));
        assert_eq!(show(&change(1)), "c:0000000000000001");
        assert!(classification(id, 1, 9) < classification(id, 1, 10));
        assert!(classification(id, 1, u32::MAX) < classification(id, 2, 0));
        assert!(classification(id, 3, 2).starts_with(&classifications_of(id, 3)));
        assert_eq!(u32_at(&classification(id, 3, 2), 21), Some(2));
    }
}
