//! A push whose mutations travel packed, each as a device's outbox keeps it: the mutation's
//! codec bytes (version included) packed with [`super::packed::pack`].
//!
//! A device packs each mutation once, when the enumerator saves. Sent in a [`PushRequest`],
//! every one was unpacked again on the device and the whole request compressed once more for
//! the wire: a third of the device's work in a first push. Sent packed, they are copied from
//! the outbox as they are, and the server unpacks and decodes each on its own (on as many
//! threads as it has cores) where it read the one request whole on one.
//!
//! ```text
//! message  = version device_id count { length bytes }   bytes = one packed mutation
//! ```
//! The request travels with the `Content-Type` [`CONTENT_TYPE`] and without a
//! `Content-Encoding`: zstd frames do not compress again.

use serde::Deserialize;

use super::{body, CodecError};
use crate::sync::{Mutation, PushRequest, MAX_PUSH_BYTES, MAX_PUSH_MUTATIONS};
use crate::DeviceId;

/// The `Content-Type` of a packed push.
pub const CONTENT_TYPE: &str = "application/x-packed-push";

/// A packed push as read: the device and each mutation's packed bytes, borrowed from the
/// message.
#[derive(Debug, Deserialize)]
pub struct PackedPush<'a> {
    pub device_id: DeviceId,
    #[serde(borrow, deserialize_with = "super::bounded_vec")]
    pub mutations: Vec<&'a [u8]>,
}

/// Encodes a packed push from each mutation's packed bytes, copied as they are.
pub fn encode(device_id: &DeviceId, packed_mutations: &[&[u8]]) -> Vec<u8> {
    let len: usize = packed_mutations.iter().map(|packed| packed.len() + 3).sum();
    let mut out = Vec::with_capacity(len + 32);
    out.extend_from_slice(&crate::sync::PROTOCOL_VERSION.to_le_bytes());
    super::encode_body_into(&mut out, &(device_id, packed_mutations.len() as u64));
    for packed in packed_mutations {
        // A byte string as the codec writes one: its length, then its bytes.
        super::encode_body_into(&mut out, &(packed.len() as u64));
        out.extend_from_slice(packed);
    }
    out
}

/// Reads a packed push of at most `limit` bytes, its mutations left packed. More mutations
/// than [`MAX_PUSH_MUTATIONS`] is an error, as in a [`PushRequest`].
pub fn decode(bytes: &[u8], limit: usize) -> Result<PackedPush<'_>, CodecError> {
    let body = body(bytes, limit)?;
    let push: PackedPush<'_> = super::decode_body(body)?;
    if push.mutations.len() > MAX_PUSH_MUTATIONS {
        return Err(CodecError::Malformed(format!(
            "đẩy {} thay đổi, tối đa {MAX_PUSH_MUTATIONS} / the push holds {} mutations, over the limit of {MAX_PUSH_MUTATIONS}: send fewer at a time",
            push.mutations.len(),
            push.mutations.len()
        )));
    }
    Ok(push)
}

impl PackedPush<'_> {
    /// The bytes the mutations unpack to, all told, as their headers say (nothing is unpacked):
    /// more than [`MAX_PUSH_BYTES`] is refused as a [`PushRequest`] that long would be.
    pub fn unpacked_len(&self) -> Result<usize, CodecError> {
        let mut total = 0usize;
        for (index, packed) in self.mutations.iter().enumerate() {
            let len = super::packed::unpacked_len(packed).map_err(|error| at(index, error))?;
            total = total.saturating_add(len);
            if total > MAX_PUSH_BYTES {
                return Err(CodecError::TooLarge {
                    got: total,
                    limit: MAX_PUSH_BYTES,
                });
            }
        }
        Ok(total)
    }
}

/// Unpacks and decodes the mutation at `index` of a push (for the error's sake): at most
/// `limit` bytes unpacked.
pub fn mutation(index: usize, packed: &[u8], limit: usize) -> Result<Mutation, CodecError> {
    let bytes = super::packed::unpack(packed, limit).map_err(|error| at(index, error))?;
    super::decode(&bytes, limit).map_err(|error| at(index, error))
}

/// The request a packed push stands for, unpacked here and now: for a server in the same
/// process, and for tests.
pub fn request(push: &PackedPush<'_>) -> Result<PushRequest, CodecError> {
    push.unpacked_len()?;
    let mutations = push
        .mutations
        .iter()
        .enumerate()
        .map(|(index, packed)| mutation(index, packed, MAX_PUSH_BYTES))
        .collect::<Result<_, _>>()?;
    Ok(PushRequest {
        device_id: push.device_id,
        mutations,
    })
}

/// A mutation's error, naming it by its place in the push (counted from 1 for people).
fn at(index: usize, error: CodecError) -> CodecError {
    match error {
        CodecError::Malformed(problem) => CodecError::Malformed(format!(
            "thay đổi thứ {} trong lần đẩy / mutation {} of the push: {problem}",
            index + 1,
            index + 1
        )),
        CodecError::TooLarge { .. } | CodecError::UnsupportedVersion { .. } => error,
        other => CodecError::Malformed(format!(
            "thay đổi thứ {} trong lần đẩy / mutation {} of the push: {other}",
            index + 1,
            index + 1
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, packed};
    use crate::fields::{FieldChange, FieldValue};
    use crate::sync::Base;
    use uuid::Uuid;

    fn mutation_numbered(seq: u64) -> Mutation {
        Mutation {
            seq,
            household_id: Uuid::from_u128(u128::from(seq) * 7),
            base: Base::New,
            changes: (0..40)
                .map(|at| FieldChange {
                    path: format!("members.{seq}.answer_{at:02}"),
                    value: Some(FieldValue::Text(format!(
                        "Nguyễn Thị Hoa, thôn Bản Mường {at}"
                    ))),
                })
                .collect(),
            made_at_ms: 1_760_000_000_000,
        }
    }

    fn packed_of(mutation: &Mutation) -> Vec<u8> {
        packed::pack(&codec::encode(mutation))
    }

    #[test]
    fn a_packed_push_reads_back_as_the_request_it_stands_for() {
        let mutations = vec![mutation_numbered(4), mutation_numbered(5)];
        let packed: Vec<Vec<u8>> = mutations.iter().map(packed_of).collect();
        let slices: Vec<&[u8]> = packed.iter().map(Vec::as_slice).collect();
        let device = Uuid::from_u128(3);
        let bytes = encode(&device, &slices);
        let push = decode(&bytes, bytes.len()).expect("decodes");
        assert_eq!(push.device_id, device);
        assert_eq!(
            push.mutations, slices,
            "each mutation's bytes as they were sent"
        );
        let whole: usize = mutations.iter().map(|m| codec::encode(m).len()).sum();
        assert_eq!(push.unpacked_len(), Ok(whole));
        assert_eq!(
            request(&push),
            Ok(PushRequest {
                device_id: device,
                mutations
            })
        );
    }

    #[test]
    fn a_damaged_mutation_is_named_by_its_place() {
        let good = packed_of(&mutation_numbered(1));
        let mut damaged = packed_of(&mutation_numbered(2));
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x5A;
        let bytes = encode(&Uuid::nil(), &[&good, &damaged]);
        let push = decode(&bytes, bytes.len()).expect("the frame list reads");
        let error = request(&push).expect_err("the second mutation is damaged");
        assert!(
            error.to_string().contains("mutation 2 of the push"),
            "{error}"
        );
        // Bytes that are no packed value at all.
        let bytes = encode(&Uuid::nil(), &[&good, &[9, 1, 2]]);
        let push = decode(&bytes, bytes.len()).expect("the frame list reads");
        let error = request(&push).expect_err("tag 9 names no dictionary");
        assert!(error.to_string().contains("mutation 2"), "{error}");
    }

    #[test]
    fn a_push_is_refused_before_unpacking_when_it_would_unpack_past_the_limit() {
        // A frame of zeros that unpacks to a megabyte, sent twenty times: 20 MiB from a few KB.
        let zeros = vec![0u8; 1 << 20];
        let bomb = packed::pack(&zeros);
        assert!(bomb.len() < 1024, "zeros pack small");
        let frames = vec![bomb.as_slice(); 20];
        let bytes = encode(&Uuid::nil(), &frames);
        let push = decode(&bytes, bytes.len()).expect("the frame list reads");
        assert!(matches!(
            push.unpacked_len(),
            Err(CodecError::TooLarge {
                limit: MAX_PUSH_BYTES,
                ..
            })
        ));
        assert!(matches!(request(&push), Err(CodecError::TooLarge { .. })));
    }

    #[test]
    fn more_mutations_than_a_push_may_hold_are_refused() {
        let one = packed_of(&mutation_numbered(1));
        let frames = vec![one.as_slice(); MAX_PUSH_MUTATIONS + 1];
        let bytes = encode(&Uuid::nil(), &frames);
        let error = decode(&bytes, bytes.len()).expect_err("over the limit");
        assert!(error.to_string().contains("over the limit"), "{error}");
        // A count that claims far more than the message holds.
        let mut lying = encode(&Uuid::nil(), &[]);
        assert_eq!(lying.pop(), Some(0), "the count, last");
        lying.extend_from_slice(&[0xFC, 0xFF, 0xFF, 0xFF, 0x7F]);
        assert!(decode(&lying, lying.len()).is_err());
    }
}
