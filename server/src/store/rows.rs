//! Row layouts, written by hand so that the disk format is the registry's own and can change
//! independently of the wire format.
//!
//! Every row starts with a format byte ([`FORMAT`]). Numbers are big-endian. A blob is a u32
//! length and that many bytes. Protocol values inside a row (field maps, review states,
//! conflict fields, mutations, outcomes, classifications) are blobs in the protocol codec,
//! which carries its own version prefix, packed (`protocol::codec::packed`: compressed against
//! a fixed dictionary, a field map to about a seventh).
//!
//! Formats: [`FORMAT`] (3) is what this build writes; an outcome row in it holds the outcomes
//! of a run of one device's consecutive mutations, a revision row the classification made with
//! the revision (tag 2: its decision, whose texts the registry rebuilds on read, see
//! [`decision`]; tag 1, written before: the whole record), and a household row the reference
//! to its current revision. Rows of
//! [`FORMAT_PACKED`] (2), where an outcome row holds one outcome and a revision's first
//! classification has a `k` row of its own, and of [`FORMAT_UNPACKED`] (1), written before
//! values were packed, are read as well.

use protocol::classify::Classification;
use protocol::codec::{self, CodecError};
use protocol::fields::{EncodedFields, FieldMap};
use protocol::merge::ConflictField;
use protocol::reference::ReferenceTexts;
use protocol::sync::{Mutation, MutationOutcome, ReviewState};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use super::in_journal::{Reference, REFERENCE_LEN};
use super::{ClassificationRecord, ConflictRecord, RevisionCause};

mod decision;
pub(super) use decision::Decision;

/// The row format this build writes: protocol values packed, outcomes in runs, a revision's
/// first classification in its row.
pub(super) const FORMAT: u8 = 3;
/// An earlier format, still read: as [`FORMAT`], with one outcome an outcome row and a
/// revision's first classification in a row of its own.
pub(super) const FORMAT_PACKED: u8 = 2;
/// The first format, still read: protocol values as they are, one outcome a row.
pub(super) const FORMAT_UNPACKED: u8 = 1;
/// Most bytes a protocol value in a row may unpack to: the largest message there is.
const VALUE_LIMIT: usize = protocol::sync::MAX_RESPONSE_BYTES;

/// Why a stored row could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("the row ends early")]
    Truncated,
    #[error("the row has {0} bytes after its last field")]
    Trailing(usize),
    #[error("the row format {0} is unknown to this build")]
    Format(u8),
    #[error("the row holds an unknown tag {tag} for {what}")]
    Tag { what: &'static str, tag: u8 },
    #[error("a text in the row is not UTF-8")]
    Utf8,
    #[error("a protocol value in the row does not decode: {0}")]
    Codec(#[from] CodecError),
    #[error("the row kept in the journal is unreadable: {0}")]
    InJournal(String),
    #[error("the run holds no row of household {0} where the registry looks for it")]
    NotInRun(Uuid),
}

/// Builds a row.
pub(super) struct RowWriter(Vec<u8>);

impl RowWriter {
    pub(super) fn new() -> RowWriter {
        RowWriter::with_capacity(64)
    }

    /// A row expected to take about `capacity` bytes, so that it is not grown as it is
    /// written.
    pub(super) fn with_capacity(capacity: usize) -> RowWriter {
        let mut row = Vec::with_capacity(capacity);
        row.push(FORMAT);
        RowWriter(row)
    }

    pub(super) fn u8(mut self, value: u8) -> RowWriter {
        self.0.push(value);
        self
    }

    pub(super) fn u32(mut self, value: u32) -> RowWriter {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub(super) fn u64(mut self, value: u64) -> RowWriter {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub(super) fn i64(mut self, value: i64) -> RowWriter {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub(super) fn uuid(mut self, value: Uuid) -> RowWriter {
        self.0.extend_from_slice(value.as_bytes());
        self
    }

    pub(super) fn bytes(mut self, bytes: &[u8]) -> RowWriter {
        self.0.extend_from_slice(bytes);
        self
    }

    pub(super) fn blob(mut self, bytes: &[u8]) -> RowWriter {
        // Rows hold at most a few megabytes; a blob over 4 GiB cannot come from a request that
        // passed the push size limit.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub(super) fn protocol<T: Serialize>(self, value: &T) -> RowWriter {
        self.blob(&codec::packed::pack(&codec::encode(value)))
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a row, checking every length against the bytes actually there.
pub(super) struct RowReader<'a> {
    rest: &'a [u8],
    format: u8,
}

impl<'a> RowReader<'a> {
    pub(super) fn new(row: &'a [u8]) -> Result<RowReader<'a>, RowError> {
        let mut reader = RowReader {
            rest: row,
            format: 0,
        };
        reader.format = reader.u8()?;
        match reader.format {
            FORMAT | FORMAT_PACKED | FORMAT_UNPACKED => Ok(reader),
            other => Err(RowError::Format(other)),
        }
    }

    /// Whether protocol values are packed (format 2 on).
    fn packed(&self) -> bool {
        self.format != FORMAT_UNPACKED
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RowError> {
        if self.rest.len() < n {
            return Err(RowError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RowError> {
        self.take(N)?.try_into().map_err(|_| RowError::Truncated)
    }

    pub(super) fn u8(&mut self) -> Result<u8, RowError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, RowError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, RowError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn i64(&mut self) -> Result<i64, RowError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub(super) fn uuid(&mut self) -> Result<Uuid, RowError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    pub(super) fn blob(&mut self) -> Result<&'a [u8], RowError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A list's length (u32), of items that take at least `bytes_each` bytes: a length the
    /// bytes left cannot hold is refused before anything is allocated for it.
    fn count(&mut self, bytes_each: usize) -> Result<usize, RowError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(bytes_each) > self.rest.len() {
            return Err(RowError::Truncated);
        }
        Ok(count)
    }

    pub(super) fn text(&mut self) -> Result<String, RowError> {
        let bytes = self.blob()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RowError::Utf8)
    }

    pub(super) fn protocol<T: DeserializeOwned>(&mut self) -> Result<T, RowError> {
        let bytes = self.blob()?;
        if self.packed() {
            let value = codec::packed::unpack(bytes, VALUE_LIMIT)?;
            Ok(codec::decode(&value, value.len())?)
        } else {
            Ok(codec::decode(bytes, bytes.len())?)
        }
    }

    /// A field map, checked but left encoded.
    pub(super) fn encoded_fields(&mut self) -> Result<EncodedFields, RowError> {
        let bytes = self.blob()?;
        let value = if self.packed() {
            codec::packed::unpack(bytes, VALUE_LIMIT)?
        } else {
            bytes.to_vec()
        };
        Ok(EncodedFields::from_codec_bytes(value)?)
    }

    pub(super) fn finish(self) -> Result<(), RowError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(RowError::Trailing(n)),
        }
    }
}

/// The household row: everything about the current state except its fields, which are the
/// fields of revision `rev` and live in that revision's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HouseholdMeta {
    pub(super) rev: u32,
    pub(super) last_seq: u64,
    pub(super) created_by: Uuid,
    pub(super) open_conflicts: Vec<u64>,
    pub(super) review: ReviewState,
}

/// A household row. In format 3 it ends with a flag and, when set, the reference to its current
/// revision's row in the journal (the last [`REFERENCE_LEN`] bytes); without one, the current
/// revision is an `r` row, as every revision was in format 2.
pub(super) fn encode_household(meta: &HouseholdMeta, current: Option<&Reference>) -> Vec<u8> {
    let count = u32::try_from(meta.open_conflicts.len()).unwrap_or(u32::MAX);
    let mut row = RowWriter::new()
        .u32(meta.rev)
        .u64(meta.last_seq)
        .uuid(meta.created_by)
        .u32(count);
    for id in meta.open_conflicts.iter().take(count as usize) {
        row = row.u64(*id);
    }
    let row = row.protocol(&meta.review);
    match current {
        None => row.u8(0),
        Some(reference) => row.u8(1).bytes(reference),
    }
    .finish()
}

/// A household row and the reference to its current revision's row, when it holds one.
/// The format of a run of new households' rows (`n` rows).
const NEW_HOUSEHOLDS_FORMAT: u8 = 1;

/// Builds a run of the rows of the households a commit creates: after a format byte, an entry
/// a household, its id (16 bytes), its row's length (u16) and its row.
pub(super) struct NewHouseholdsRun(Vec<u8>);

impl NewHouseholdsRun {
    pub(super) fn with_capacity(households: usize) -> NewHouseholdsRun {
        // A new household's row is about 70 bytes.
        let mut run = Vec::with_capacity(1 + households * 96);
        run.push(NEW_HOUSEHOLDS_FORMAT);
        NewHouseholdsRun(run)
    }

    /// Adds household `id`'s row. Returns where the row begins in the run, or `None` for a
    /// row too long for an entry (which the caller writes as an `h` row instead).
    pub(super) fn push(&mut self, id: Uuid, row: &[u8]) -> Option<usize> {
        let len = u16::try_from(row.len()).ok()?;
        u32::try_from(self.0.len() + 18 + row.len()).ok()?;
        self.0.extend_from_slice(id.as_bytes());
        self.0.extend_from_slice(&len.to_be_bytes());
        let at = self.0.len();
        self.0.extend_from_slice(row);
        Some(at)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.len() == 1
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// An entry of a run of new households' rows: the household's id, where the entry begins in
/// the run, and the household's row.
pub(super) type RunEntry<'a> = (Uuid, u32, &'a [u8]);

/// The entries of a run of new households' rows.
pub(super) fn new_households_entries(run: &[u8]) -> Result<Vec<RunEntry<'_>>, RowError> {
    let mut rest = run_entries(run)?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let at = u32::try_from(run.len() - rest.len()).map_err(|_| RowError::Truncated)?;
        let (id, row, after) = run_entry(rest)?;
        entries.push((id, at, row));
        rest = after;
    }
    Ok(entries)
}

/// The row of household `id` in a run, from the entry that begins at byte `at`.
pub(super) fn new_household_row(run: &[u8], at: u32, id: Uuid) -> Result<&[u8], RowError> {
    run_entries(run)?;
    let entry = usize::try_from(at)
        .ok()
        .filter(|&at| at > 0)
        .and_then(|at| run.get(at..))
        .ok_or(RowError::NotInRun(id))?;
    match run_entry(entry)? {
        (found, row, _) if found == id => Ok(row),
        _ => Err(RowError::NotInRun(id)),
    }
}

/// A run's entries, after its format byte, checked.
fn run_entries(run: &[u8]) -> Result<&[u8], RowError> {
    match run.split_first() {
        Some((&NEW_HOUSEHOLDS_FORMAT, entries)) => Ok(entries),
        Some((&other, _)) => Err(RowError::Format(other)),
        None => Err(RowError::Truncated),
    }
}

/// An entry's id and row, and the bytes after it.
fn run_entry(bytes: &[u8]) -> Result<(Uuid, &[u8], &[u8]), RowError> {
    // An entry has no format byte of its own: the run's is checked.
    let mut reader = RowReader {
        rest: bytes,
        format: FORMAT,
    };
    let id = reader.uuid()?;
    let len = u16::from_be_bytes(reader.array()?);
    let row = reader.take(usize::from(len))?;
    Ok((id, row, reader.rest))
}

pub(super) fn decode_household_row(
    row: &[u8],
) -> Result<(HouseholdMeta, Option<Reference>), RowError> {
    let mut reader = RowReader::new(row)?;
    let rev = reader.u32()?;
    let last_seq = reader.u64()?;
    let created_by = reader.uuid()?;
    let count = reader.u32()? as usize;
    // Each id takes 8 bytes: a count larger than the row allows is a truncated row, caught
    // before anything is allocated for it.
    if count > reader.rest.len() / 8 {
        return Err(RowError::Truncated);
    }
    let open_conflicts = (0..count).map(|_| reader.u64()).collect::<Result<_, _>>()?;
    let review = reader.protocol()?;
    let current = match reader.format {
        FORMAT => match reader.u8()? {
            0 => None,
            1 => Some(reader.array::<REFERENCE_LEN>()?),
            tag => {
                return Err(RowError::Tag {
                    what: "a household's current revision",
                    tag,
                })
            }
        },
        _ => None,
    };
    reader.finish()?;
    let meta = HouseholdMeta {
        rev,
        last_seq,
        created_by,
        open_conflicts,
        review,
    };
    Ok((meta, current))
}

/// A revision row; the household id and the rev are in its key.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RevisionRow {
    pub(super) fields: FieldMap,
    pub(super) device_id: Uuid,
    pub(super) mutation_seq: u64,
    pub(super) at_ms: i64,
    pub(super) why: RevisionCause,
    /// The classification made with the revision (record 0), which a format-3 row holds after
    /// its fields; earlier rows left it to a `k` row of its own.
    pub(super) classification: Option<MadeWith>,
}

/// The classification made with a revision, as its row holds it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum MadeWith {
    /// The whole record: rows written before decisions were.
    Record(ClassificationRecord),
    /// Its decision ([`Decision`]), whose texts the registry rebuilds on read.
    Decision {
        at_ms: i64,
        reference: String,
        decision: Decision,
    },
}

impl MadeWith {
    /// The decision of `record`, as the merge engine writes a revision's classification.
    pub(super) fn decision_of(record: &ClassificationRecord) -> MadeWith {
        MadeWith::Decision {
            at_ms: record.at_ms,
            reference: record.reference.clone(),
            decision: Decision::of(&record.classification),
        }
    }
}

fn cause_tag(why: RevisionCause) -> u8 {
    match why {
        RevisionCause::Create => 1,
        RevisionCause::Mutation => 2,
        RevisionCause::Merge => 3,
        RevisionCause::Conflict => 4,
        RevisionCause::Resolution => 5,
        RevisionCause::Review => 6,
    }
}

fn cause_of(tag: u8) -> Result<RevisionCause, RowError> {
    Ok(match tag {
        1 => RevisionCause::Create,
        2 => RevisionCause::Mutation,
        3 => RevisionCause::Merge,
        4 => RevisionCause::Conflict,
        5 => RevisionCause::Resolution,
        6 => RevisionCause::Review,
        tag => {
            return Err(RowError::Tag {
                what: "a revision's cause",
                tag,
            })
        }
    })
}

#[cfg(test)]
pub(super) fn encode_revision(row: &RevisionRow) -> Vec<u8> {
    write_revision(
        row.device_id,
        row.mutation_seq,
        row.at_ms,
        row.why,
        RevisionFields::Map(&row.fields),
        row.classification.as_ref(),
    )
}

/// The row of a revision the merge engine made, written from it without copying its fields.
/// `packed_fields`, when given, are its fields already packed as a row holds them
/// (`codec::packed::pack` of the codec bytes of `revision.fields`), written as they are.
pub(super) fn encode_new_revision(
    revision: &super::Revision,
    packed_fields: Option<&[u8]>,
) -> Vec<u8> {
    write_revision(
        revision.device_id,
        revision.mutation_seq,
        revision.at_ms,
        revision.why,
        match packed_fields {
            Some(packed) => RevisionFields::Packed(packed),
            None => RevisionFields::Map(&revision.fields),
        },
        revision
            .classification
            .as_ref()
            .map(MadeWith::decision_of)
            .as_ref(),
    )
}

/// A revision's fields as its row is written from them.
enum RevisionFields<'a> {
    /// To be encoded and packed.
    Map(&'a FieldMap),
    /// Packed already, as [`RowWriter::protocol`] would pack the map.
    Packed(&'a [u8]),
}

/// A revision row: its maker, its fields and, in format 3, a tag and the classification
/// made with it (one row where there were two: sled spends about 240 bytes of disk on every
/// entry). The tag is 0 for none, 1 for a whole record, 2 for a decision.
fn write_revision(
    device_id: Uuid,
    mutation_seq: u64,
    at_ms: i64,
    why: RevisionCause,
    fields: RevisionFields<'_>,
    classification: Option<&MadeWith>,
) -> Vec<u8> {
    // The maker and the tag, the packed fields, and a classification: a whole one packs to
    // about 160 bytes, a decision to about 100 (most of it the deprived members' ids).
    let expected =
        64 + match fields {
            RevisionFields::Map(_) => 640,
            RevisionFields::Packed(packed) => packed.len(),
        } + 256;
    let row = RowWriter::with_capacity(expected)
        .uuid(device_id)
        .u64(mutation_seq)
        .i64(at_ms)
        .u8(cause_tag(why));
    let row = match fields {
        RevisionFields::Map(fields) => row.protocol(fields),
        RevisionFields::Packed(packed) => row.blob(packed),
    };
    match classification {
        None => row.u8(0),
        Some(MadeWith::Record(record)) => write_classification(row.u8(1), record),
        Some(MadeWith::Decision {
            at_ms,
            reference,
            decision,
        }) => decision::write(row.u8(2).i64(*at_ms).blob(reference.as_bytes()), decision),
    }
    .finish()
}

/// Past a revision row's maker (device, mutation seq, time, cause), at its fields.
fn past_revision_maker(row: &[u8]) -> Result<RowReader<'_>, RowError> {
    let mut reader = RowReader::new(row)?;
    reader.take(16 + 8 + 8 + 1)?;
    Ok(reader)
}

/// The classification a revision row holds, read without its fields; `None` for a row that
/// holds none (made before classifications, or before they moved into the row).
pub(super) fn decode_revision_classification(row: &[u8]) -> Result<Option<MadeWith>, RowError> {
    let mut reader = past_revision_maker(row)?;
    reader.blob()?;
    let record = made_with(&mut reader, true)?;
    reader.finish()?;
    Ok(record)
}

/// The classification a format-3 revision row holds after its fields, decoded when `decode`
/// (else skipped, and `None`).
fn made_with(reader: &mut RowReader<'_>, decode: bool) -> Result<Option<MadeWith>, RowError> {
    if reader.format != FORMAT {
        return Ok(None);
    }
    match reader.u8()? {
        0 => Ok(None),
        1 if decode => read_classification(reader).map(|record| Some(MadeWith::Record(record))),
        1 => {
            reader.i64()?;
            reader.blob()?;
            reader.blob()?;
            Ok(None)
        }
        2 => {
            let at_ms = reader.i64()?;
            let reference = reader.text()?;
            let decision = decision::read(reader)?;
            Ok(decode.then_some(MadeWith::Decision {
                at_ms,
                reference,
                decision,
            }))
        }
        tag => Err(RowError::Tag {
            what: "the classification made with a revision",
            tag,
        }),
    }
}

/// The device whose mutation made a revision, read from the front of its row without the
/// field map behind it.
pub(super) fn decode_revision_author(row: &[u8]) -> Result<Uuid, RowError> {
    RowReader::new(row)?.uuid()
}

/// A revision's field map, left encoded, for a pull page to copy.
pub(super) fn decode_revision_fields_encoded(row: &[u8]) -> Result<EncodedFields, RowError> {
    let mut reader = past_revision_maker(row)?;
    let fields = reader.encoded_fields()?;
    made_with(&mut reader, false)?;
    reader.finish()?;
    Ok(fields)
}

pub(super) fn decode_revision(row: &[u8]) -> Result<RevisionRow, RowError> {
    read_revision(row, true)
}

/// A revision row without the classification record it may hold (`None`), which is left
/// undecoded.
pub(super) fn decode_revision_unclassified(row: &[u8]) -> Result<RevisionRow, RowError> {
    read_revision(row, false)
}

fn read_revision(row: &[u8], classified: bool) -> Result<RevisionRow, RowError> {
    let mut reader = RowReader::new(row)?;
    let device_id = reader.uuid()?;
    let mutation_seq = reader.u64()?;
    let at_ms = reader.i64()?;
    let why = cause_of(reader.u8()?)?;
    let fields = reader.protocol()?;
    let classification = made_with(&mut reader, classified)?;
    reader.finish()?;
    Ok(RevisionRow {
        fields,
        device_id,
        mutation_seq,
        at_ms,
        why,
        classification,
    })
}

pub(super) fn encode_conflict(record: &ConflictRecord) -> Vec<u8> {
    let (has_base, base) = match record.base_rev {
        Some(rev) => (1, rev),
        None => (0, 0),
    };
    RowWriter::new()
        .uuid(record.household_id)
        .uuid(record.device_id)
        .u64(record.mutation_seq)
        .u8(has_base)
        .u32(base)
        .u32(record.theirs_rev)
        .i64(record.made_at_ms)
        .i64(record.received_at_ms)
        .u8(u8::from(record.open))
        .protocol(&record.fields)
        .finish()
}

pub(super) fn decode_conflict(id: u64, row: &[u8]) -> Result<ConflictRecord, RowError> {
    let mut reader = RowReader::new(row)?;
    let household_id = reader.uuid()?;
    let device_id = reader.uuid()?;
    let mutation_seq = reader.u64()?;
    let has_base = reader.u8()?;
    let base = reader.u32()?;
    let base_rev = match has_base {
        0 => None,
        1 => Some(base),
        tag => {
            return Err(RowError::Tag {
                what: "a conflict's base",
                tag,
            })
        }
    };
    let theirs_rev = reader.u32()?;
    let made_at_ms = reader.i64()?;
    let received_at_ms = reader.i64()?;
    let open = match reader.u8()? {
        0 => false,
        1 => true,
        tag => {
            return Err(RowError::Tag {
                what: "a conflict's open flag",
                tag,
            })
        }
    };
    let fields: Vec<ConflictField> = reader.protocol()?;
    reader.finish()?;
    Ok(ConflictRecord {
        id,
        household_id,
        device_id,
        mutation_seq,
        base_rev,
        theirs_rev,
        fields,
        made_at_ms,
        received_at_ms,
        open,
    })
}

/// A rejected mutation row; the device id and the seq are in its key.
pub(super) fn encode_rejected(mutation: &Mutation, reason: &str, at_ms: i64) -> Vec<u8> {
    RowWriter::new()
        .i64(at_ms)
        .blob(reason.as_bytes())
        .protocol(mutation)
        .finish()
}

pub(super) fn decode_rejected(row: &[u8]) -> Result<(Mutation, String, i64), RowError> {
    let mut reader = RowReader::new(row)?;
    let at_ms = reader.i64()?;
    let reason = reader.text()?;
    let mutation = reader.protocol()?;
    reader.finish()?;
    Ok((mutation, reason, at_ms))
}

/// The outcomes of a run of one device's consecutive mutations, keyed by the first one's seq:
/// one row a push instead of one a mutation, since sled spends about 240 bytes of disk on every
/// entry however small.
pub(super) fn encode_outcomes(outcomes: &[&MutationOutcome]) -> Vec<u8> {
    RowWriter::new().protocol(&outcomes).finish()
}

/// The outcomes in an outcome row, in seq order: a run, or the one a format-2 row holds.
pub(super) fn decode_outcomes(row: &[u8]) -> Result<Vec<MutationOutcome>, RowError> {
    let mut reader = RowReader::new(row)?;
    let outcomes = if reader.format == FORMAT {
        reader.protocol()?
    } else {
        vec![reader.protocol()?]
    };
    reader.finish()?;
    Ok(outcomes)
}

/// A classification record; the household, the rev and the record's number are in its key.
pub(super) fn encode_classification(record: &ClassificationRecord) -> Vec<u8> {
    write_classification(RowWriter::new(), record).finish()
}

fn write_classification(row: RowWriter, record: &ClassificationRecord) -> RowWriter {
    row.i64(record.at_ms)
        .blob(record.reference.as_bytes())
        .protocol(&record.classification)
}

pub(super) fn decode_classification(row: &[u8]) -> Result<ClassificationRecord, RowError> {
    let mut reader = RowReader::new(row)?;
    let record = read_classification(&mut reader)?;
    reader.finish()?;
    Ok(record)
}

fn read_classification(reader: &mut RowReader<'_>) -> Result<ClassificationRecord, RowError> {
    let at_ms = reader.i64()?;
    let reference = reader.text()?;
    let classification: Classification = reader.protocol()?;
    Ok(ClassificationRecord {
        classification,
        at_ms,
        reference,
    })
}

/// Reference data kept by its fingerprint: its texts, as the codec writes them, packed.
pub(super) fn encode_reference_texts(texts: &ReferenceTexts) -> Vec<u8> {
    RowWriter::new().protocol(texts).finish()
}

pub(super) fn decode_reference_texts(row: &[u8]) -> Result<ReferenceTexts, RowError> {
    let mut reader = RowReader::new(row)?;
    let texts = reader.protocol()?;
    reader.finish()?;
    Ok(texts)
}

pub(super) fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub(super) fn decode_u64(bytes: &[u8]) -> Result<u64, RowError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| RowError::Truncated)?;
    Ok(u64::from_be_bytes(array))
}

/// A change-log row: the households of a run of consecutive seqs, keyed by the first seq (16
/// bytes each, no format byte). A row of one is what builds before runs wrote for every seq.
pub(super) fn encode_uuid_run(values: impl Iterator<Item = Uuid>) -> Vec<u8> {
    values.flat_map(Uuid::into_bytes).collect()
}

pub(super) fn decode_uuid_run(bytes: &[u8]) -> Result<Vec<Uuid>, RowError> {
    if bytes.is_empty() || bytes.len() % 16 != 0 {
        return Err(RowError::Truncated);
    }
    Ok(bytes
        .chunks_exact(16)
        .map(|chunk| Uuid::from_bytes(std::array::from_fn(|i| chunk[i])))
        .collect())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use protocol::fields::{FieldChange, FieldValue};
    use protocol::sync::{Base, Outcome};

    fn fields() -> FieldMap {
        [
            ("address".to_string(), FieldValue::Text("Số 3".into())),
            ("dwelling.floor_area_m2".to_string(), FieldValue::Int(24)),
            ("gps.lat".to_string(), FieldValue::Float(21.5)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn household_rows_round_trip() {
        let meta = HouseholdMeta {
            rev: 7,
            last_seq: 1_000_000,
            created_by: Uuid::from_u128(3),
            open_conflicts: vec![4, 9],
            review: ReviewState::Returned {
                comment: "thiếu ngày sinh".into(),
            },
        };
        let reference: Reference = std::array::from_fn(|i| (i as u8).wrapping_add(0xF0));
        for current in [None, Some(reference)] {
            let row = encode_household(&meta, current.as_ref());
            assert_eq!(
                decode_household_row(&row).ok(),
                Some((meta.clone(), current))
            );
            for cut in 0..row.len() {
                assert!(decode_household_row(&row[..cut]).is_err(), "cut at {cut}");
            }
        }
        // Format 2 rows end after the review state and refer to nothing.
        let row = encode_household(&meta, None);
        let mut format_2 = row[..row.len() - 1].to_vec();
        format_2[0] = FORMAT_PACKED;
        assert_eq!(decode_household_row(&format_2).ok(), Some((meta, None)));
    }

    #[test]
    fn a_revision_written_from_packed_fields_keeps_those_bytes() {
        // Long enough for `pack` to compress it.
        let mut fields = fields();
        fields.insert(
            "dwelling.note".to_string(),
            FieldValue::Text("nhà tạm, mái lá, vách đất; ".repeat(8)),
        );
        let revision = super::super::Revision {
            rev: 1,
            fields,
            device_id: Uuid::from_u128(5),
            mutation_seq: 12,
            at_ms: 7,
            why: RevisionCause::Create,
            classification: None,
        };
        // The map's codec bytes kept plain: not what `pack` writes, but what it stands for.
        let mut as_sent = vec![codec::packed::PLAIN];
        as_sent.extend(codec::encode(&revision.fields));
        let kept = encode_new_revision(&revision, Some(&as_sent));
        let packed_here = encode_new_revision(&revision, None);
        assert_ne!(kept, packed_here);
        assert!(kept.windows(as_sent.len()).any(|part| part == as_sent));
        for row in [&kept, &packed_here] {
            let read = decode_revision(row).expect("reads");
            assert_eq!(read.fields, revision.fields);
            assert_eq!((read.mutation_seq, read.at_ms), (12, 7));
        }
    }

    #[test]
    fn revision_conflict_rejected_and_outcome_rows_round_trip() {
        let revision = RevisionRow {
            fields: fields(),
            device_id: Uuid::from_u128(5),
            mutation_seq: 12,
            at_ms: -3,
            why: RevisionCause::Conflict,
            classification: None,
        };
        assert_eq!(
            decode_revision(&encode_revision(&revision)).ok(),
            Some(revision)
        );

        let conflict = ConflictRecord {
            id: 11,
            household_id: Uuid::from_u128(1),
            device_id: Uuid::from_u128(2),
            mutation_seq: 3,
            base_rev: None,
            theirs_rev: 2,
            fields: vec![ConflictField {
                path: "address".into(),
                base: None,
                theirs: Some(FieldValue::Text("a".into())),
                mine: Some(FieldValue::Null),
            }],
            made_at_ms: 1,
            received_at_ms: 2,
            open: true,
        };
        assert_eq!(
            decode_conflict(11, &encode_conflict(&conflict)).ok(),
            Some(conflict)
        );

        let mutation = Mutation {
            seq: 4,
            household_id: Uuid::from_u128(8),
            base: Base::Rev(2),
            changes: vec![FieldChange {
                path: "address".into(),
                value: None,
            }],
            made_at_ms: 99,
        };
        let (back, reason, at) =
            decode_rejected(&encode_rejected(&mutation, "lý do / reason", 5)).expect("decodes");
        assert_eq!((back, reason.as_str(), at), (mutation, "lý do / reason", 5));

        let outcome = MutationOutcome {
            seq: 4,
            household_id: Uuid::from_u128(8),
            outcome: Outcome::Merged { rev: 3 },
        };
        let next = MutationOutcome {
            seq: 5,
            household_id: Uuid::from_u128(9),
            outcome: Outcome::Rejected {
                reason: "lý do / reason".into(),
            },
        };
        let run = encode_outcomes(&[&outcome, &next]);
        assert_eq!(
            decode_outcomes(&run).ok(),
            Some(vec![outcome.clone(), next])
        );
        for cut in 0..run.len() {
            assert!(decode_outcomes(&run[..cut]).is_err(), "cut at {cut}");
        }
        // A format-2 row holds one outcome.
        let mut one = vec![FORMAT_PACKED];
        let value = codec::packed::pack(&codec::encode(&outcome));
        one.extend_from_slice(&(value.len() as u32).to_be_bytes());
        one.extend_from_slice(&value);
        assert_eq!(decode_outcomes(&one).ok(), Some(vec![outcome]));

        let ids = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        let run = encode_uuid_run(ids.into_iter());
        assert_eq!(decode_uuid_run(&run).ok(), Some(ids.to_vec()));
        assert_eq!(
            decode_uuid_run(ids[0].as_bytes()).ok(),
            Some(vec![ids[0]]),
            "a row of one, as earlier builds wrote every change"
        );
        for cut in 0..run.len() {
            assert_eq!(
                decode_uuid_run(&run[..cut]).is_ok(),
                cut > 0 && cut % 16 == 0,
                "cut at {cut}"
            );
        }
    }

    /// A household of two members, as a device would send it: rural, income 1,200,000, the
    /// head without health insurance in a makeshift house.
    pub(in crate::store) fn two_member_household() -> protocol::household::Household {
        serde_json::from_str(
            r#"{"id": "01900000-0000-7000-8000-000000000001",
                "round": {"year": 2025, "kind": "periodic"},
                "commune_code": "00640", "village": "Thôn Đông", "address": "Số 3, ngõ 12",
                "members": [{"id": "01900000-0000-7000-8000-000000000002",
                             "full_name": "Nguyễn Văn An", "sex": "male",
                             "date_of_birth": "1991-01-15", "relationship": "head",
                             "health_insurance": false},
                            {"id": "01900000-0000-7000-8000-000000000003",
                             "full_name": "Lò Thị Bình", "sex": "female",
                             "date_of_birth": "1993-06-02", "relationship": "spouse",
                             "health_insurance": true}],
                "income": {"estimated_per_person_vnd": 1200000},
                "dwelling": {"durability": "makeshift", "floor_area_m2": 16}}"#,
        )
        .expect("valid household")
    }

    /// The revision row that created `household`, holding `classification`.
    fn created(
        household: &protocol::household::Household,
        classification: Option<MadeWith>,
    ) -> RevisionRow {
        RevisionRow {
            fields: protocol::fields::flatten(household),
            device_id: Uuid::from_u128(5),
            mutation_seq: 12,
            at_ms: 1_764_000_000_000,
            why: RevisionCause::Create,
            classification,
        }
    }

    #[test]
    fn a_whole_record_packs_small_and_unpacked_rows_still_read() {
        let household = two_member_household();
        let revision = created(&household, None);
        let packed = encode_revision(&revision);
        let unpacked_value = codec::encode(&revision.fields);
        assert!(
            packed.len() * 3 < unpacked_value.len(),
            "{} bytes packed, {} as it is",
            packed.len(),
            unpacked_value.len()
        );
        assert_eq!(decode_revision(&packed).ok(), Some(revision.clone()));
        let encoded = EncodedFields::encode(&revision.fields);
        assert_eq!(
            decode_revision_fields_encoded(&packed).ok(),
            Some(encoded.clone())
        );
        for cut in 0..packed.len() {
            assert!(
                decode_revision_fields_encoded(&packed[..cut]).is_err(),
                "cut at {cut}"
            );
        }

        // The same row as a build before packing wrote it.
        let mut old = vec![FORMAT_UNPACKED];
        old.extend_from_slice(revision.device_id.as_bytes());
        old.extend_from_slice(&12u64.to_be_bytes());
        old.extend_from_slice(&1_764_000_000_000i64.to_be_bytes());
        old.push(cause_tag(RevisionCause::Create));
        old.extend_from_slice(&(unpacked_value.len() as u32).to_be_bytes());
        old.extend_from_slice(&unpacked_value);
        assert_eq!(decode_revision_fields_encoded(&old).ok(), Some(encoded));
        assert_eq!(decode_revision(&old).ok(), Some(revision));
    }

    #[test]
    fn classification_rows_round_trip_and_refuse_damage() {
        let areas = protocol::areas::AreaRegistry::embedded().expect("areas");
        let standards = protocol::standards::StandardSet::embedded().expect("standards");
        let household = two_member_household();
        let input = protocol::classify::ClassifyInput {
            reference_date: protocol::household::Date::new(2026, 1, 1).expect("valid"),
            standards: &standards,
            areas: &areas,
            b1_tables: None,
        };
        let record = ClassificationRecord {
            classification: protocol::classify::classify(&household, &input),
            at_ms: 1_764_000_000_000,
            reference: "0123456789abcdef".into(),
        };
        let row = encode_classification(&record);
        assert_eq!(decode_classification(&row).ok(), Some(record.clone()));
        for cut in 0..row.len() {
            assert!(decode_classification(&row[..cut]).is_err(), "cut at {cut}");
        }

        // Every reader refuses a revision row cut short.
        let refuses_every_cut = |row: &[u8]| {
            for cut in 0..row.len() {
                assert!(decode_revision(&row[..cut]).is_err(), "cut at {cut}");
                assert!(
                    decode_revision_classification(&row[..cut]).is_err(),
                    "cut at {cut}"
                );
                assert!(
                    decode_revision_fields_encoded(&row[..cut]).is_err(),
                    "cut at {cut}"
                );
            }
        };

        // A revision row holding the record made with it.
        let revision = created(&household, Some(MadeWith::Record(record.clone())));
        let row = encode_revision(&revision);
        assert_eq!(decode_revision(&row).ok(), Some(revision.clone()));
        assert_eq!(
            decode_revision_classification(&row).ok(),
            Some(Some(MadeWith::Record(record.clone())))
        );
        let unclassified = RevisionRow {
            classification: None,
            ..revision.clone()
        };
        assert_eq!(
            decode_revision_unclassified(&row).ok(),
            Some(unclassified.clone())
        );
        assert_eq!(
            decode_revision_fields_encoded(&row).ok(),
            Some(EncodedFields::encode(&revision.fields))
        );
        refuses_every_cut(&row);
        // The same revision as format 2 wrote it: the record was in a row of its own.
        let without = encode_revision(&unclassified);
        let mut format_2 = without[..without.len() - 1].to_vec();
        format_2[0] = FORMAT_PACKED;
        assert_eq!(decode_revision(&format_2).ok(), Some(unclassified.clone()));
        assert_eq!(decode_revision_classification(&format_2).ok(), Some(None));

        // The same revision as the merge engine writes it: the classification kept as its
        // decision, a fraction of the bytes.
        let decided = MadeWith::decision_of(&record);
        let row = encode_new_revision(
            &super::super::Revision {
                rev: 1,
                fields: revision.fields.clone(),
                device_id: revision.device_id,
                mutation_seq: revision.mutation_seq,
                at_ms: revision.at_ms,
                why: revision.why,
                classification: Some(record.clone()),
            },
            None,
        );
        let whole = encode_revision(&revision);
        assert!(
            row.len() + 80 < whole.len(),
            "a decision takes {} bytes of the row, a whole record {}",
            row.len() - without.len(),
            whole.len() - without.len()
        );
        let with_decision = RevisionRow {
            classification: Some(decided.clone()),
            ..unclassified.clone()
        };
        assert_eq!(decode_revision(&row).ok(), Some(with_decision));
        assert_eq!(
            decode_revision_classification(&row).ok(),
            Some(Some(decided.clone()))
        );
        assert_eq!(decode_revision_unclassified(&row).ok(), Some(unclassified));
        assert_eq!(
            decode_revision_fields_encoded(&row).ok(),
            Some(EncodedFields::encode(&revision.fields))
        );
        refuses_every_cut(&row);
        let MadeWith::Decision { decision, .. } = decided else {
            panic!("a decision");
        };
        assert!(decision.is_made_by(&record.classification));
        let mut other = record.classification.clone();
        other.score_b += 10;
        assert!(!decision.is_made_by(&other));
        let mut other = record.classification.clone();
        other.deprivations[0].members.pop();
        assert!(!decision.is_made_by(&other));
        // Texts are not part of the decision.
        let mut reworded = record.classification.clone();
        reworded.decided_by = "khác / other".into();
        assert!(decision.is_made_by(&reworded));
        let stand_in = decision.clone().without_reasons("lý do", "why");
        assert!(decision.is_made_by(&stand_in));
        assert!(
            stand_in.decided_by.contains("why"),
            "{}",
            stand_in.decided_by
        );
        // An unknown class or indicator tag is an error, not a guess.
        // Past the tag (where an unclassified row ends), the time and the reference, the
        // decision starts with the standard (a flag and a text) and the date (6 bytes), then
        // its class.
        let decision_at = without.len() + 8 + 4 + record.reference.len();
        let standard = record.classification.standard_id.as_deref().unwrap_or("");
        let day_at = decision_at + 1 + 4 + standard.len() + 5;
        let mut damaged = row.clone();
        damaged[day_at] = 0;
        assert!(matches!(
            decode_revision(&damaged),
            Err(RowError::Tag {
                what: "a decision's reference day",
                tag: 0
            })
        ));
        let class_at = day_at + 1;
        let mut damaged = row.clone();
        damaged[class_at] = 9;
        assert!(
            matches!(
                decode_revision(&damaged),
                Err(RowError::Tag {
                    what: "a decision's class",
                    tag: 9
                })
            ),
            "{:?}",
            decode_revision(&damaged)
        );
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let row = encode_revision(&RevisionRow {
            fields: fields(),
            device_id: Uuid::from_u128(5),
            mutation_seq: 12,
            at_ms: 0,
            why: RevisionCause::Create,
            classification: None,
        });
        for cut in 0..row.len() {
            assert!(decode_revision(&row[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = row.clone();
        long.push(0);
        assert!(matches!(decode_revision(&long), Err(RowError::Trailing(1))));
        let mut future = row;
        future[0] = 200;
        assert!(matches!(
            decode_revision(&future),
            Err(RowError::Format(200))
        ));
        // A household row claiming four billion open conflicts in a few bytes.
        let mut lying = vec![FORMAT];
        lying.extend_from_slice(&[0; 4 + 8 + 16]);
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_household_row(&lying),
            Err(RowError::Truncated)
        ));
    }

    /// A run of new households' rows reads back entry by entry; a damaged one, or a place in
    /// it that holds no entry of the household asked for, is an error and never another
    /// household's row.
    #[test]
    fn runs_of_new_households_round_trip_and_refuse_damage() {
        let ids = [1, 2, 3].map(Uuid::from_u128);
        let rows_of: [&[u8]; 3] = [b"first row", b"", b"third"];
        let mut run = NewHouseholdsRun::with_capacity(3);
        assert!(run.is_empty());
        let row_at: Vec<usize> = ids
            .iter()
            .zip(rows_of)
            .map(|(id, row)| run.push(*id, row).expect("an entry"))
            .collect();
        assert!(NewHouseholdsRun::with_capacity(1)
            .push(ids[0], &vec![0; usize::from(u16::MAX) + 1])
            .is_none());
        let run = run.finish();
        let entries = new_households_entries(&run).expect("entries");
        assert_eq!(entries.len(), 3);
        for (((id, at, row), expected), row_at) in entries.iter().zip(rows_of).zip(&row_at) {
            assert_eq!(*row, expected);
            assert_eq!(*at as usize + 18, *row_at);
            assert_eq!(new_household_row(&run, *at, *id).expect("read"), expected);
        }
        let first_at = entries[0].1;
        assert!(matches!(
            new_household_row(&run, first_at, ids[1]),
            Err(RowError::NotInRun(_))
        ));
        for at in [0, 2, run.len() as u32, u32::MAX] {
            assert!(new_household_row(&run, at, ids[0]).is_err(), "at {at}");
        }
        // Cut between entries, a run is a shorter run; cut inside one, it is damaged.
        let ends: Vec<usize> = std::iter::once(1)
            .chain(row_at.iter().zip(rows_of).map(|(at, row)| at + row.len()))
            .collect();
        for cut in 1..run.len() {
            let read = new_households_entries(&run[..cut]);
            match ends.iter().position(|end| *end == cut) {
                Some(whole) => assert_eq!(read.expect("a shorter run").len(), whole),
                None => assert!(read.is_err(), "cut at {cut}"),
            }
        }
        let mut future = run.clone();
        future[0] = 9;
        assert!(matches!(
            new_households_entries(&future),
            Err(RowError::Format(9))
        ));
        assert!(matches!(
            new_household_row(&future, first_at, ids[0]),
            Err(RowError::Format(9))
        ));
        assert!(new_households_entries(&[]).is_err());
    }
}
