//! A push batch as the device sends it: each mutation as its codec bytes, read from the outbox
//! without being decoded. Encoding the request copies them (`codec::encode_push`); decoding
//! each mutation and encoding it again cost the device about 20 µs a household.

use protocol::codec::{self, CodecError};
use protocol::sync::{Mutation, PushRequest};
use protocol::{DeviceId, HouseholdId};

/// The mutations of one push, in seq order, with the device that sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushBatch {
    device_id: DeviceId,
    mutations: Vec<EncodedMutation>,
}

/// One mutation of a batch: its seq and household (read from the front of its bytes) and its
/// codec body (its bytes after the protocol version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EncodedMutation {
    pub(crate) seq: u64,
    pub(crate) household_id: HouseholdId,
    pub(crate) body: Vec<u8>,
}

impl EncodedMutation {
    /// A mutation's codec bytes (with their version), checked to start with `seq` and
    /// `household_id` as the outbox entry that held them says.
    pub(crate) fn from_codec_bytes(bytes: &[u8]) -> Result<EncodedMutation, CodecError> {
        let (seq, household_id): (u64, HouseholdId) = codec::decode_head(bytes, bytes.len())?;
        Ok(EncodedMutation {
            seq,
            household_id,
            body: codec::body_of(bytes)?.to_vec(),
        })
    }
}

impl PushBatch {
    /// A batch of mutations as they are, each encoded once: for requests made by hand (tests,
    /// the bench's simulated devices).
    pub fn new(device_id: DeviceId, mutations: &[Mutation]) -> PushBatch {
        let mutations = mutations
            .iter()
            .map(|mutation| {
                let bytes = codec::encode(mutation);
                EncodedMutation {
                    seq: mutation.seq,
                    household_id: mutation.household_id,
                    // This build's own encoding: its version is one this build reads.
                    body: codec::body_of(&bytes).unwrap_or_default().to_vec(),
                }
            })
            .collect();
        PushBatch {
            device_id,
            mutations,
        }
    }

    pub(crate) fn from_encoded(device_id: DeviceId, mutations: Vec<EncodedMutation>) -> PushBatch {
        PushBatch {
            device_id,
            mutations,
        }
    }

    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// Each mutation's seq and household, in order.
    pub fn seqs(&self) -> impl Iterator<Item = (u64, HouseholdId)> + '_ {
        self.mutations
            .iter()
            .map(|mutation| (mutation.seq, mutation.household_id))
    }

    /// The seq of the batch's last mutation.
    pub fn last_seq(&self) -> Option<u64> {
        self.mutations.last().map(|mutation| mutation.seq)
    }

    pub fn len(&self) -> usize {
        self.mutations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }

    /// The request's codec bytes: what `codec::encode` writes for [`PushBatch::request`].
    pub fn encode(&self) -> Vec<u8> {
        let bodies: Vec<&[u8]> = self
            .mutations
            .iter()
            .map(|mutation| mutation.body.as_slice())
            .collect();
        codec::encode_push(&self.device_id, &bodies)
    }

    /// The request, decoded: for a transport that hands it to a server in the same process.
    pub fn request(&self) -> Result<PushRequest, CodecError> {
        let bytes = self.encode();
        codec::decode(&bytes, bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::fields::FieldChange;
    use protocol::sync::Base;
    use uuid::Uuid;

    #[test]
    fn a_batch_encodes_as_its_request_and_decodes_back() {
        let mutation = |seq: u64| Mutation {
            seq,
            household_id: Uuid::from_u128(u128::from(seq) * 7),
            base: Base::New,
            changes: vec![FieldChange {
                path: "address".into(),
                value: Some(protocol::fields::FieldValue::Text(format!("Số {seq}"))),
            }],
            made_at_ms: 1,
        };
        let mutations = vec![mutation(4), mutation(5)];
        let request = PushRequest {
            device_id: Uuid::from_u128(3),
            mutations: mutations.clone(),
        };
        let batch = PushBatch::new(request.device_id, &mutations);
        assert_eq!(batch.encode(), codec::encode(&request));
        assert_eq!(batch.request(), Ok(request));
        assert_eq!(batch.last_seq(), Some(5));
        assert_eq!(
            batch.seqs().collect::<Vec<_>>(),
            vec![(4, Uuid::from_u128(28)), (5, Uuid::from_u128(35))]
        );
        let from_bytes = EncodedMutation::from_codec_bytes(&codec::encode(&mutations[0]));
        assert_eq!(from_bytes.as_ref().map(|m| m.seq), Ok(4));
        assert!(EncodedMutation::from_codec_bytes(&[1, 0, 200]).is_err());
    }
}
