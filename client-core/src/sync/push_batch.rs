//! A push batch as the device sends it: each mutation a frame of a packed push
//! (`protocol::codec::packed_push`), copied from the outbox without being unpacked or
//! decoded: a new household's create as its record (its packed field map), any other mutation
//! packed whole. The device neither unpacks its mutations nor compresses the request again,
//! which was a third of its work in a first push.

use protocol::codec::{packed_push, CodecError};
use protocol::sync::{Mutation, PushRequest};
use protocol::{DeviceId, HouseholdId};

/// The mutations of one push, in seq order, with the device that sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushBatch {
    device_id: DeviceId,
    mutations: Vec<EncodedMutation>,
}

/// One mutation of a batch: its seq and household (as its outbox entry says) and its frame
/// of the packed push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EncodedMutation {
    pub(crate) seq: u64,
    pub(crate) household_id: HouseholdId,
    pub(crate) frame: Vec<u8>,
}

impl EncodedMutation {
    /// A mutation's frame: a record for a create made of its record, else the mutation packed.
    pub(crate) fn of(mutation: &Mutation) -> EncodedMutation {
        EncodedMutation {
            seq: mutation.seq,
            household_id: mutation.household_id,
            frame: packed_push::frame_of(mutation),
        }
    }
}

impl PushBatch {
    /// A batch of mutations as they are, each encoded and packed once: for requests made by
    /// hand (tests, the bench's simulated devices).
    pub fn new(device_id: DeviceId, mutations: &[Mutation]) -> PushBatch {
        PushBatch {
            device_id,
            mutations: mutations.iter().map(EncodedMutation::of).collect(),
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

    /// The request as it travels: a packed push, sent with the `Content-Type`
    /// [`packed_push::CONTENT_TYPE`].
    pub fn encode(&self) -> Vec<u8> {
        let frames: Vec<&[u8]> = self
            .mutations
            .iter()
            .map(|mutation| mutation.frame.as_slice())
            .collect();
        packed_push::encode(&self.device_id, &frames)
    }

    /// The request, unpacked and decoded: for a transport that hands it to a server in the
    /// same process.
    pub fn request(&self) -> Result<PushRequest, CodecError> {
        let bytes = self.encode();
        packed_push::request(&packed_push::decode(&bytes, bytes.len())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::fields::FieldChange;
    use protocol::sync::Base;
    use uuid::Uuid;

    #[test]
    fn a_batch_travels_packed_and_reads_back_as_its_request() {
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
        let bytes = batch.encode();
        let push = packed_push::decode(&bytes, bytes.len()).expect("a packed push");
        assert_eq!(push.device_id, request.device_id);
        assert_eq!(push.mutations[0], EncodedMutation::of(&mutations[0]).frame);
        assert_eq!(
            push.mutations[0][0],
            packed_push::RECORD_FRAME,
            "a create is a record"
        );
        assert_eq!(batch.request(), Ok(request));
        assert_eq!(batch.last_seq(), Some(5));
        assert_eq!(
            batch.seqs().collect::<Vec<_>>(),
            vec![(4, Uuid::from_u128(28)), (5, Uuid::from_u128(35))]
        );
    }
}
