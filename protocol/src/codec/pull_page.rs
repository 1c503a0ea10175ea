//! The pull page, encoded and decoded with its field maps copied as bytes.
//!
//! A page is the largest message there is, and nearly all of it is field maps, which both
//! ends hold encoded ([`EncodedFields`]). [`encode`] writes exactly the bytes of
//! `codec::encode(&page)`, and [`decode`] reads exactly what `codec::decode` reads, but each
//! map is copied between the page and its `EncodedFields` after a scan, not decoded and
//! encoded again. bincode writes a struct as its fields one after another and a list as its
//! length and its items, so a page is its number of changes, each change's head (seq, id,
//! rev), map and tail (review, in conflict), then the rest of the page, each part written and
//! read on its own. `pages_are_the_bytes_the_generic_codec_writes_and_reads` holds the two
//! paths to the same bytes.

use serde::Deserialize;

use super::{body, bounded_vec, decode_part, encode_body_into, CodecError};
use crate::access::Scope;
use crate::fields::EncodedFields;
use crate::sync::{HouseholdChange, MutationOutcome, PullResponse, ReviewState, PROTOCOL_VERSION};
use crate::HouseholdId;

/// A change's fields before its map.
#[derive(Deserialize)]
struct Head {
    seq: u64,
    household_id: HouseholdId,
    rev: u32,
}

/// A change's fields after its map.
#[derive(Deserialize)]
struct Tail {
    review: ReviewState,
    in_conflict: bool,
}

/// The page's fields after its changes, with the same limits on their lists.
#[derive(Deserialize)]
struct Rest {
    next_cursor: u64,
    more: bool,
    #[serde(deserialize_with = "bounded_vec")]
    outcomes: Vec<MutationOutcome>,
    #[serde(deserialize_with = "bounded_vec")]
    left_scope: Vec<HouseholdId>,
    scope: Scope,
}

/// Encodes a page: the bytes of `codec::encode(page)`.
pub fn encode(page: &PullResponse) -> Vec<u8> {
    let maps: usize = page
        .changes
        .iter()
        .map(|change| change.fields.body().len() + 40)
        .sum();
    let mut out = Vec::with_capacity(maps + 64);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    encode_body_into(&mut out, &(page.changes.len() as u64));
    for change in &page.changes {
        encode_body_into(&mut out, &(&change.seq, &change.household_id, &change.rev));
        out.extend_from_slice(change.fields.body());
        encode_body_into(&mut out, &(&change.review, &change.in_conflict));
    }
    encode_body_into(
        &mut out,
        &(
            &page.next_cursor,
            &page.more,
            &page.outcomes,
            &page.left_scope,
            &page.scope,
        ),
    );
    out
}

/// Decodes a page of at most `limit` bytes: what `codec::decode::<PullResponse>` reads.
pub fn decode(bytes: &[u8], limit: usize) -> Result<PullResponse, CodecError> {
    let mut rest = body(bytes, limit)?;
    let count: u64 = decode_part(&mut rest)?;
    // Room for a few changes up front; the rest as they arrive (see `bounded_vec`).
    let mut changes = Vec::with_capacity(count.min(16) as usize);
    for _ in 0..count {
        let head: Head = decode_part(&mut rest)?;
        let (fields, len) = EncodedFields::read_from(rest)?;
        rest = rest.get(len..).ok_or(CodecError::Truncated)?;
        let tail: Tail = decode_part(&mut rest)?;
        changes.push(HouseholdChange {
            seq: head.seq,
            household_id: head.household_id,
            rev: head.rev,
            fields,
            review: tail.review,
            in_conflict: tail.in_conflict,
        });
    }
    let page: Rest = decode_part(&mut rest)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(PullResponse {
        changes,
        next_cursor: page.next_cursor,
        more: page.more,
        outcomes: page.outcomes,
        left_scope: page.left_scope,
        scope: page.scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::fields::tests_support::sample;
    use crate::fields::{flatten, FieldValue};
    use crate::sync::Outcome;
    use uuid::Uuid;

    /// A page of three changes, each with a whole record or, `small`, three of its fields.
    fn page_of(small: bool) -> PullResponse {
        let change = |n: u128, review: ReviewState| {
            let mut fields = flatten(&sample());
            if small {
                fields.retain(|path, _| {
                    ["commune_code", "village", "gps.lat"].contains(&path.as_str())
                });
            }
            fields.insert("address".into(), FieldValue::Text(format!("Số {n}")));
            HouseholdChange {
                seq: 300 + n as u64,
                household_id: Uuid::from_u128(n),
                rev: n as u32,
                fields: EncodedFields::encode(&fields),
                review,
                in_conflict: n % 2 == 0,
            }
        };
        PullResponse {
            changes: vec![
                change(1, ReviewState::Submitted),
                change(2, ReviewState::Approved),
                change(
                    70_000,
                    ReviewState::Returned {
                        comment: "Thiếu số CCCD của chủ hộ".into(),
                    },
                ),
            ],
            next_cursor: 70_300,
            more: true,
            outcomes: vec![MutationOutcome {
                seq: 9,
                household_id: Uuid::from_u128(1),
                outcome: Outcome::Rejected {
                    reason: "ngoài địa bàn / outside your areas".into(),
                },
            }],
            left_scope: vec![Uuid::from_u128(5)],
            scope: Scope::Communes(vec!["00004".into()]),
        }
    }

    #[test]
    fn pages_are_the_bytes_the_generic_codec_writes_and_reads() {
        let empty = PullResponse {
            changes: Vec::new(),
            ..page_of(true)
        };
        for page in [page_of(false), page_of(true), empty] {
            let bytes = encode(&page);
            assert_eq!(bytes, codec::encode(&page));
            assert_eq!(decode(&bytes, bytes.len()), Ok(page.clone()));
            assert_eq!(
                codec::decode::<PullResponse>(&bytes, bytes.len()),
                Ok(page.clone())
            );
            assert_eq!(
                decode(&bytes, bytes.len() - 1),
                Err(CodecError::TooLarge {
                    got: bytes.len(),
                    limit: bytes.len() - 1
                })
            );
        }
    }

    #[test]
    fn damaged_pages_are_refused_or_read_as_the_generic_codec_reads_them() {
        // Small maps: the scan of a whole map is checked byte by byte in `fields::encoded`.
        let bytes = encode(&page_of(true));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], usize::MAX).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode(&trailing, usize::MAX),
            Err(CodecError::TrailingBytes)
        );
        // Every byte changed, in a few ways: what one decoder reads the other reads alike.
        for at in 2..bytes.len() {
            for byte in [0, 1, 3, 0x7f, 0xfb, 0xfd, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] = byte;
                let generic = codec::decode::<PullResponse>(&damaged, usize::MAX);
                assert_eq!(
                    decode(&damaged, usize::MAX).ok(),
                    generic.ok(),
                    "byte {at} set to {byte}"
                );
            }
        }
    }
}
