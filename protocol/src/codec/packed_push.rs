//! A push whose mutations travel packed, each as a device's outbox keeps it: the mutation's
//! codec bytes (version included) packed with [`super::packed::pack`].
//!
//! A device packs each mutation once, when the enumerator saves. Sent in a [`PushRequest`],
//! every one was unpacked again on the device and the whole request compressed once more for
//! the wire: a third of the device's work in a first push. Sent packed, they are copied from
//! the outbox as they are, and the server unpacks and decodes each on its own (on as many
//! threads as it has cores) where it read the one request whole on one.
//!
//! A new household's create (made on nothing, every field a value, in path order: what a
//! device sends for a household it recorded) travels as a *record*: its seq, household and
//! time, and its field map packed as both stores keep maps. The server checks the map and,
//! when it came as the codec writes it, keeps those packed bytes as the revision's own instead
//! of encoding and packing the map again (a sixth of its work in a first push).
//!
//! ```text
//! message  = version device_id count { length frame }
//! frame    = packed mutation                    starts with a packed value's tag (0, 1, 2)
//!          | RECORD_FRAME seq household_id made_at_ms packed_field_map
//! ```
//! The request travels with the `Content-Type` [`CONTENT_TYPE`] and without a
//! `Content-Encoding`: zstd frames do not compress again.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Deserialize;

use super::{body, packed, CodecError};
use crate::fields::{
    check_leaf_ref, decode_entries, read_household_as_written, unflatten_checked_entries,
    FieldChange, FieldError,
};
use crate::household::Household;
use crate::sync::{Base, Mutation, PushRequest, MAX_PUSH_BYTES, MAX_PUSH_MUTATIONS};
use crate::{DeviceId, HouseholdId};

/// The `Content-Type` of a packed push.
pub const CONTENT_TYPE: &str = "application/x-packed-push";

/// The first byte of a record frame. A packed mutation starts with its packed value's tag
/// (`packed::PLAIN`, `DICTIONARY_1` or `DICTIONARY_2`), never with this.
pub const RECORD_FRAME: u8 = b'R';

/// A packed push as read: the device and each mutation's frame, borrowed from the message.
#[derive(Debug, Deserialize)]
pub struct PackedPush<'a> {
    pub device_id: DeviceId,
    #[serde(borrow, deserialize_with = "super::bounded_vec")]
    pub mutations: Vec<&'a [u8]>,
}

/// Encodes a packed push from each mutation's frame, copied as it is.
pub fn encode(device_id: &DeviceId, frames: &[&[u8]]) -> Vec<u8> {
    let len: usize = frames.iter().map(|frame| frame.len() + 3).sum();
    let mut out = Vec::with_capacity(len + 32);
    out.extend_from_slice(&crate::sync::PROTOCOL_VERSION.to_le_bytes());
    super::encode_body_into(&mut out, &(device_id, frames.len() as u64));
    for frame in frames {
        // A byte string as the codec writes one: its length, then its bytes.
        super::encode_body_into(&mut out, &(frame.len() as u64));
        out.extend_from_slice(frame);
    }
    out
}

/// Reads a packed push of at most `limit` bytes, its frames left as they are. More mutations
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
        for (index, bytes) in self.mutations.iter().enumerate() {
            let len = frame(bytes)
                .and_then(|frame| match frame {
                    Frame::Mutation(packed) => packed::unpacked_len(packed),
                    Frame::Record { fields, .. } => packed::unpacked_len(fields),
                })
                .map_err(|error| at(index, error))?;
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

/// One frame of a packed push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame<'a> {
    /// A mutation's codec bytes, packed.
    Mutation(&'a [u8]),
    /// A new household's create: its field map, packed.
    Record {
        seq: u64,
        household_id: HouseholdId,
        made_at_ms: i64,
        fields: &'a [u8],
    },
}

/// Reads a frame's kind and, for a record, its header.
fn frame(bytes: &[u8]) -> Result<Frame<'_>, CodecError> {
    match bytes.split_first() {
        Some((&RECORD_FRAME, mut rest)) => {
            let (seq, household_id, made_at_ms) = super::decode_part(&mut rest)?;
            Ok(Frame::Record {
                seq,
                household_id,
                made_at_ms,
                fields: rest,
            })
        }
        _ => Ok(Frame::Mutation(bytes)),
    }
}

/// A request as a packed push, each mutation made a frame here ([`frame_of`]): for requests
/// made by hand (tests, fuzzing). A device copies its frames from its outbox.
pub fn encode_request(request: &PushRequest) -> Vec<u8> {
    let frames: Vec<Vec<u8>> = request.mutations.iter().map(frame_of).collect();
    let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    encode(&request.device_id, &frames)
}

/// A mutation's frame: a record for a create made of its record ([`record_of`]), else the
/// mutation packed.
pub fn frame_of(mutation: &Mutation) -> Vec<u8> {
    record_of(mutation).unwrap_or_else(|| packed::pack(&super::encode(mutation)))
}

/// A create made on nothing whose changes are its record (every one a value, paths strictly
/// ascending) as a record frame, its map packed; `None` for any other mutation.
pub fn record_of(mutation: &Mutation) -> Option<Vec<u8>> {
    let fields = packed_record(mutation)?;
    Some(record_frame(
        mutation.seq,
        &mutation.household_id,
        mutation.made_at_ms,
        &fields,
    ))
}

/// The packed field map of a create made on nothing whose changes are its record, as a record
/// frame carries it: `packed::pack` of the bytes `codec::encode` writes for that map.
pub fn packed_record(mutation: &Mutation) -> Option<Vec<u8>> {
    let is_record = matches!(mutation.base, Base::New)
        && mutation.changes.iter().all(|change| change.value.is_some())
        && mutation
            .changes
            .windows(2)
            .all(|pair| pair[0].path < pair[1].path);
    is_record.then(|| packed::pack(&super::encode(&AsMap(&mutation.changes))))
}

/// A record frame from its parts, `fields` packed as [`packed_record`] packs them.
pub fn record_frame(
    seq: u64,
    household_id: &HouseholdId,
    made_at_ms: i64,
    fields: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.len() + 32);
    out.push(RECORD_FRAME);
    super::encode_body_into(&mut out, &(seq, household_id, made_at_ms));
    out.extend_from_slice(fields);
    out
}

/// Changes that are all values, in path order, written as the codec writes the map they make.
struct AsMap<'a>(&'a [FieldChange]);

impl Serialize for AsMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for change in self.0 {
            if let Some(value) = &change.value {
                map.serialize_entry(&change.path, value)?;
            }
        }
        map.end()
    }
}

/// Reads the frame at `index` of a push (for the error's sake): its mutation, at most `limit`
/// bytes unpacked.
pub fn read(index: usize, bytes: &[u8], limit: usize) -> Result<Mutation, CodecError> {
    read_frame(bytes, limit).map_err(|error| at(index, error))
}

/// [`read`], its error not yet naming the frame's place.
fn read_frame(bytes: &[u8], limit: usize) -> Result<Mutation, CodecError> {
    match frame(bytes)? {
        Frame::Mutation(packed) => super::decode(&packed::unpack(packed, limit)?, limit),
        Frame::Record {
            seq,
            household_id,
            made_at_ms,
            fields,
        } => read_record(seq, household_id, made_at_ms, fields, limit),
    }
}

/// A frame of a packed push as a server that keeps records reads it ([`read_keeping`]).
#[derive(Debug)]
pub enum Pushed {
    /// Decoded whole.
    Mutation(Mutation),
    /// A record whose packed map the server may keep as it is, read without its changes.
    Kept(Box<KeptRecord>),
}

/// A record frame whose map came packed with this build's dictionary, exactly as the codec
/// writes it, within every limit a push's changes are held to (at most `max_changes` of
/// them, each path and value as `fields::check_leaf` allows): the record it stands for, read
/// from the map, and the packed map itself, which a store may keep as it is.
///
/// Its create's changes are not decoded: a server keeps the packed map and checks the record,
/// and needs the changes only for a create it does not make (`Self::mutation`). Not copying
/// every path and value of a pushed record into changes (and not freeing them) took a tenth
/// or more off the server's work in a first push.
#[derive(Clone, Debug)]
pub struct KeptRecord {
    pub seq: u64,
    pub household_id: HouseholdId,
    pub made_at_ms: i64,
    /// The record the map makes (`fields::unflatten`), or why it does not make one.
    pub record: Result<Household, FieldError>,
    packed: Vec<u8>,
}

impl KeptRecord {
    /// The packed map as sent: it unpacks to the codec bytes of the record's map.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// The record and the packed map, for a create made from them.
    pub fn into_parts(self) -> (Result<Household, FieldError>, Vec<u8>) {
        (self.record, self.packed)
    }

    /// The create the record stands for, its changes decoded from the packed map.
    pub fn mutation(&self) -> Result<Mutation, CodecError> {
        read_record(
            self.seq,
            self.household_id,
            self.made_at_ms,
            &self.packed,
            MAX_PUSH_BYTES,
        )
    }
}

/// [`read`] for a server that keeps records: a record frame that may be kept as it is comes
/// as a [`KeptRecord`], anything else decoded whole. The same frames are refused, for the same
/// faults, and each is unpacked and decoded once.
pub fn read_keeping(
    index: usize,
    bytes: &[u8],
    limit: usize,
    max_changes: usize,
) -> Result<Pushed, CodecError> {
    let read_kept = |bytes: &[u8]| -> Result<Pushed, CodecError> {
        let Frame::Record {
            seq,
            household_id,
            made_at_ms,
            fields,
        } = frame(bytes)?
        else {
            return read_frame(bytes, limit).map(Pushed::Mutation);
        };
        let map = packed::unpack(fields, limit)?;
        let keepable = fields.first() == Some(&packed::DICTIONARY_2);
        // A new household's record as a device writes it, read in one pass; anything else is
        // read below, entry by entry, for the same household or the error.
        if let Some(record) = keepable
            .then(|| read_household_as_written(&map, limit, max_changes))
            .flatten()
        {
            return Ok(Pushed::Kept(Box::new(KeptRecord {
                seq,
                household_id,
                made_at_ms,
                record: Ok(record),
                packed: fields.to_vec(),
            })));
        }
        let (entries, as_encode_writes) = decode_entries(&map, limit, |path, value| (path, value))?;
        let kept = as_encode_writes
            && keepable
            && entries.len() <= max_changes
            && entries
                .iter()
                .all(|(path, value)| check_leaf_ref(path, value.as_ref()).is_ok());
        if !kept {
            let changes = entries
                .into_iter()
                .map(|(path, value)| FieldChange {
                    path: path.to_owned(),
                    value: Some(value.into_owned()),
                })
                .collect();
            return Ok(Pushed::Mutation(create(
                seq,
                household_id,
                made_at_ms,
                changes,
            )));
        }
        Ok(Pushed::Kept(Box::new(KeptRecord {
            seq,
            household_id,
            made_at_ms,
            // Every leaf was checked above.
            record: unflatten_checked_entries(
                entries.iter().map(|(path, value)| (*path, value.as_ref())),
            ),
            packed: fields.to_vec(),
        })))
    };
    read_kept(bytes).map_err(|error| at(index, error))
}

/// The create a record stands for (its seq, household, time and packed field map, as a record
/// frame or a device's outbox holds them).
pub fn read_record(
    seq: u64,
    household_id: HouseholdId,
    made_at_ms: i64,
    fields: &[u8],
    limit: usize,
) -> Result<Mutation, CodecError> {
    let map = packed::unpack(fields, limit)?;
    let (changes, _) = decode_entries(&map, limit, |path, value| FieldChange {
        path: path.to_owned(),
        value: Some(value.into_owned()),
    })?;
    Ok(create(seq, household_id, made_at_ms, changes))
}

/// A create made on nothing with `changes`.
fn create(
    seq: u64,
    household_id: HouseholdId,
    made_at_ms: i64,
    changes: Vec<FieldChange>,
) -> Mutation {
    Mutation {
        seq,
        household_id,
        base: Base::New,
        changes,
        made_at_ms,
    }
}

/// The request a packed push stands for, unpacked here and now: for a server in the same
/// process, and for tests.
pub fn request(push: &PackedPush<'_>) -> Result<PushRequest, CodecError> {
    push.unpacked_len()?;
    let mutations = push
        .mutations
        .iter()
        .enumerate()
        .map(|(index, frame)| read(index, frame, MAX_PUSH_BYTES))
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
    fn a_create_travels_as_a_record_whose_packed_map_can_be_kept_as_it_is() {
        let create = mutation_numbered(6);
        let record = record_of(&create).expect("a create made of its record");
        assert_eq!(record[0], RECORD_FRAME);
        assert_eq!(read(0, &record, MAX_PUSH_BYTES), Ok(create.clone()));
        let kept = kept_bytes(&record).expect("a map as the codec writes it is kept");
        assert_eq!(Some(kept.clone()), packed_record(&create));
        // The kept bytes are the packed codec bytes of the map the changes make.
        let map: crate::fields::FieldMap = create
            .changes
            .iter()
            .map(|change| (change.path.clone(), change.value.clone().expect("a value")))
            .collect();
        assert_eq!(
            packed::unpack(&kept, MAX_PUSH_BYTES),
            Ok(codec::encode(&map))
        );

        // In a push beside a mutation that is not a record, each reads back as it was.
        let mut edit = mutation_numbered(7);
        edit.base = Base::Rev(2);
        assert_eq!(record_of(&edit), None, "an edit is not a record");
        let edit_packed = packed_of(&edit);
        let bytes = encode(&Uuid::nil(), &[&record, &edit_packed]);
        let push = decode(&bytes, bytes.len()).expect("decodes");
        let whole = codec::encode(&map).len() + codec::encode(&edit).len();
        assert_eq!(push.unpacked_len(), Ok(whole));
        assert_eq!(
            request(&push).map(|request| request.mutations),
            Ok(vec![create, edit])
        );
    }

    #[test]
    fn a_record_not_as_the_codec_writes_it_is_read_but_not_kept() {
        // Paths out of order: the same entries, but not the bytes `codec::encode` writes.
        let mut create = mutation_numbered(8);
        create.changes.reverse();
        let fields = packed::pack(&codec::encode(&AsMap(&create.changes)));
        let frame = record_frame(8, &create.household_id, create.made_at_ms, &fields);
        let got = read(0, &frame, MAX_PUSH_BYTES).expect("reads");
        assert_eq!(got, create, "the changes as they came");
        assert_eq!(kept_bytes(&frame), None);
        assert_eq!(decoded_whole(&frame, 2_000), Some(create));
        // Nor a map sent plain, which a store would keep four times as long.
        let mut create = mutation_numbered(9);
        let plain = {
            let mut plain = vec![packed::PLAIN];
            plain.extend(codec::encode(&AsMap(&create.changes)));
            plain
        };
        let frame = record_frame(9, &create.household_id, create.made_at_ms, &plain);
        assert_eq!(read(0, &frame, MAX_PUSH_BYTES), Ok(create.clone()));
        assert_eq!(kept_bytes(&frame), None);
        // A record frame cut short, or whose map is no map, is an error naming it.
        create.changes.clear();
        let frame = record_of(&create).expect("an empty record");
        for cut in 1..frame.len() {
            assert!(read_err(&frame[..cut]), "cut at {cut}");
        }
        let mut garbage = record_frame(9, &create.household_id, 0, &[packed::PLAIN, 1, 0, 3]);
        assert!(read_err(&garbage));
        garbage.truncate(1);
        assert!(read_err(&garbage));
    }

    #[test]
    fn a_record_whose_texts_or_yes_no_values_do_not_read_is_refused() {
        // Laid out as a map, as the codec writes one, but a text is not UTF-8 or a yes/no
        // byte is neither: the pass that decodes the record and judges its form refuses both.
        let create = mutation_numbered(10);
        let good = codec::encode(&AsMap(&create.changes));
        let text = "Nguyễn".as_bytes();
        let at = good
            .windows(text.len())
            .position(|window| window == text)
            .expect("the record holds the name");
        let mut not_utf8 = good.clone();
        not_utf8[at + 1] = 0xFF;
        let frame = record_frame(10, &create.household_id, 0, &packed::pack(&not_utf8));
        assert!(read_err(&frame), "a text that is not UTF-8");

        let flag = vec![FieldChange {
            path: "flags.no_working_capacity".into(),
            value: Some(FieldValue::Bool(true)),
        }];
        let mut not_yes_no = codec::encode(&AsMap(&flag));
        let last = not_yes_no.len() - 1;
        assert_eq!(not_yes_no[last], 1, "the map ends with its yes");
        not_yes_no[last] = 2;
        let frame = record_frame(10, &create.household_id, 0, &packed::pack(&not_yes_no));
        assert!(read_err(&frame), "a yes/no byte that is neither");
        not_yes_no[last] = 1;
        let frame = record_frame(10, &create.household_id, 0, &packed::pack(&not_yes_no));
        assert!(read(4, &frame, MAX_PUSH_BYTES).is_ok(), "mended, it reads");
    }

    #[test]
    fn a_record_whose_path_is_not_utf8_in_any_part_is_refused() {
        // The one-pass read of a record checks no path as UTF-8 apart: each part is a name it
        // knows, a member's id or a B1 question, and it checks the last two itself.
        let (household, create) = sample_create(13);
        let good = codec::encode(&AsMap(&create.changes));
        let frame_of = |map: &[u8]| record_frame(13, &create.household_id, 0, &packed::pack(map));
        assert!(matches!(
            read_keeping(0, &frame_of(&good), MAX_PUSH_BYTES, 2_000),
            Ok(Pushed::Kept(kept)) if kept.record == Ok(household.clone())
        ));
        let member_key = household.members[0].id.to_string();
        for (part, what) in [
            ("b1_answers.Q1", "a B1 question"),
            (
                &format!("members.{member_key}.full_name")[..],
                "a member's id",
            ),
            ("village", "a name"),
        ] {
            let at = good
                .windows(part.len())
                .position(|window| window == part.as_bytes())
                .expect("the record holds the path");
            // The last byte of the part: the question, the id's last digit, the name's end.
            let byte = match what {
                "a member's id" => at + "members.".len() + member_key.len() - 1,
                _ => at + part.len() - 1,
            };
            let mut map = good.clone();
            map[byte] = 0xFF;
            let frame = frame_of(&map);
            let error = read_keeping(4, &frame, MAX_PUSH_BYTES, 2_000).map(|_| ());
            assert!(
                error
                    .as_ref()
                    .is_err_and(|error| error.to_string().contains("UTF-8")
                        && error.to_string().contains("mutation 5 of the push")),
                "{what}: {error:?}"
            );
            assert_eq!(read(4, &frame, MAX_PUSH_BYTES).map(|_| ()), error, "{what}");
        }
    }

    #[test]
    fn a_record_the_server_may_keep_is_read_into_its_household() {
        let (household, create) = sample_create(11);
        let frame = record_of(&create).expect("a record");
        let Ok(Pushed::Kept(kept)) = read_keeping(0, &frame, MAX_PUSH_BYTES, 2_000) else {
            panic!("kept");
        };
        assert_eq!(kept.record, Ok(household.clone()));
        assert_eq!(kept.mutation(), Ok(create.clone()));
        assert_eq!(Some(kept.packed().to_vec()), packed_record(&create));
        // A record that does not make a household is kept all the same, with why.
        let not_a_household = mutation_numbered(12);
        let frame = record_of(&not_a_household).expect("a record");
        let Ok(Pushed::Kept(kept)) = read_keeping(0, &frame, MAX_PUSH_BYTES, 2_000) else {
            panic!("kept");
        };
        assert!(kept.record.is_err());
        assert_eq!(kept.mutation(), Ok(not_a_household.clone()));
        // Past a push's limits (more changes than allowed, a text too long), or not as the
        // codec writes it, a record is decoded whole, for the push's checks to refuse.
        let whole = decoded_whole;
        let frame = record_of(&create).expect("a record");
        assert_eq!(
            whole(&frame, create.changes.len() - 1),
            Some(create.clone())
        );
        let mut long = create.clone();
        long.changes[0].value = Some(FieldValue::Text("ắ".repeat(1_000)));
        let frame = record_of(&long).expect("a record");
        assert_eq!(whole(&frame, 2_000), Some(long));
        let mut shuffled = create.clone();
        shuffled.changes.reverse();
        let fields = packed::pack(&codec::encode(&AsMap(&shuffled.changes)));
        let frame = record_frame(11, &create.household_id, create.made_at_ms, &fields);
        assert_eq!(whole(&frame, 2_000), Some(shuffled));
        // A frame that is no mutation at all is refused as `read` refuses it, with the same
        // error naming its place.
        for bad in [&[RECORD_FRAME, 1][..], &[9, 1, 2][..]] {
            let error = read(4, bad, MAX_PUSH_BYTES).expect_err("no mutation");
            assert_eq!(
                error.to_string().matches("mutation 5 of the push").count(),
                1
            );
            assert_eq!(
                read_keeping(4, bad, MAX_PUSH_BYTES, 2_000).map(|_| ()),
                Err(error)
            );
        }
    }

    /// The sample household and the create, numbered `seq`, that records it whole.
    fn sample_create(seq: u64) -> (crate::household::Household, Mutation) {
        let household = crate::fields::tests_support::sample();
        let create = Mutation {
            seq,
            household_id: household.id,
            base: Base::New,
            changes: crate::fields::diff(&Default::default(), &crate::fields::flatten(&household)),
            made_at_ms: 1_760_000_000_000,
        };
        (household, create)
    }

    /// The packed map a server would keep of `frame`, if it keeps it.
    fn kept_bytes(frame: &[u8]) -> Option<Vec<u8>> {
        match read_keeping(0, frame, MAX_PUSH_BYTES, 2_000) {
            Ok(Pushed::Kept(kept)) => Some(kept.packed().to_vec()),
            _ => None,
        }
    }

    /// The mutation a server reads of `frame` when it does not keep it.
    fn decoded_whole(frame: &[u8], max_changes: usize) -> Option<Mutation> {
        match read_keeping(0, frame, MAX_PUSH_BYTES, max_changes) {
            Ok(Pushed::Mutation(mutation)) => Some(mutation),
            _ => None,
        }
    }

    fn read_err(frame: &[u8]) -> bool {
        read(4, frame, MAX_PUSH_BYTES)
            .is_err_and(|error| error.to_string().contains("mutation 5 of the push"))
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
