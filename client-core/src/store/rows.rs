//! The rows of the store, encoded by hand.
//!
//! Store rows are not serde types (only `protocol` types are): each row starts with a layout
//! byte and writes its fields in a fixed order, integers big-endian, byte strings with a u32
//! length in front. Embedded protocol values (field maps, mutations, conflict fields, review
//! states) go through `protocol::codec`, which carries its own version, and are packed
//! (`protocol::codec::packed`: compressed against a fixed dictionary, a household's field map
//! to about a seventh). Rows of layout 1, from before packing, are read as well. A row that
//! does not read back whole is reported as corrupt, never a panic.
//!
//! Two shortcuts keep the device from unpacking what it does not change: a household row read
//! as a [`HouseholdMetaRow`] carries its packed maps and touched paths through byte for byte,
//! and an outbox entry (layout 3) has its household id and seq in front of the packed mutation
//! (layout 5, a new household's create, its time as well, and its record's packed field map,
//! which a push sends as it is).
//! Household rows are written in layout 4, whose touched paths need not repeat the view's.

use crate::sync::push_batch::EncodedMutation;
use std::collections::BTreeSet;

use protocol::codec::{self, packed_push};
use protocol::fields::{EncodedFields, FieldMap};
use protocol::merge::ConflictField;
use protocol::sync::{Mutation, ReviewState};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::StoreError;

/// Layout byte of every row written by this version: embedded values packed.
const ROW_V2: u8 = 2;
/// Layout byte of rows written before embedded values were packed; still read.
const ROW_V1: u8 = 1;
/// Layout byte of outbox and awaiting entries with the household id and seq in front.
const ENTRY_V3: u8 = 3;
/// Layout byte of an outbox or awaiting entry that holds a new household's create as its
/// record: the household id, the seq and the time in front, then the record's field map packed
/// (`protocol::codec::packed_push::packed_record`), which a push carries as it is.
const ENTRY_RECORD: u8 = 5;
/// Layout byte of household rows written by this version: as layout 2, but the touched paths
/// end the row in a form of their own (below) instead of as a list of texts. A new household
/// touches every path of its record, so its row carried ~3,800 bytes of paths that repeated its
/// field map's keys, and a push's reply rewrote them all for each household it acknowledged.
const HOUSEHOLD_V4: u8 = 4;

/// Touched paths in a layout 4 row: none …
const TOUCHED_NONE: u8 = 0;
/// … every path of the row's view, and only those (a new household's create) …
const TOUCHED_EVERY_VIEW_PATH: u8 = 1;
/// … or a list, packed: a u32 count, then each path with a u32 length in front.
const TOUCHED_LIST: u8 = 2;
/// Most bytes an embedded protocol value may take.
const EMBEDDED_LIMIT: usize = protocol::sync::MAX_RESPONSE_BYTES;

/// A household row's first byte after the layout: no server copy (the view follows) …
const NO_SERVER_COPY: u8 = 0;
/// … a server copy, then the view …
const SERVER_COPY: u8 = 1;
/// … or a server copy that is also the view (layout 2 on).
const SERVER_COPY_IS_VIEW: u8 = 2;

/// The registry's copy of a household, as last received.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServerCopy {
    pub rev: u32,
    pub fields: FieldMap,
}

/// One of this device's mutations of a household whose effect the device has not yet seen in
/// a revision received from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unconfirmed {
    pub seq: u64,
    /// The revision the mutation produced, once its outcome is known.
    pub result_rev: Option<u32>,
}

/// Everything the device keeps about one household.
#[derive(Clone, Debug)]
pub(crate) struct HouseholdRow {
    /// The last revision received from the server; `None` until one arrives.
    pub server: Option<ServerCopy>,
    /// What the enumerator sees when it is not the server copy: the server's fields with
    /// pending local changes laid over, or a record not yet on the server. `None` when the
    /// view is the server copy itself, as for most households, so that it is neither copied
    /// nor compared field by field (see [`HouseholdRow::view`]).
    view: Option<FieldMap>,
    pub meta: RowMeta,
    /// Paths changed by the unconfirmed mutations. A new mutation repeats these paths even
    /// where the view is back at the base value, so that undoing an earlier unsynced change
    /// (a member added and removed again) reaches the server instead of being lost.
    pub touched: BTreeSet<String>,
}

/// Rows are equal when they show the same: a view held apart that equals the server copy is
/// the same row as one whose view is the copy.
impl PartialEq for HouseholdRow {
    fn eq(&self, other: &HouseholdRow) -> bool {
        self.server == other.server
            && self.view() == other.view()
            && self.meta == other.meta
            && self.touched == other.touched
    }
}

/// The view of a household with neither a view of its own nor a server copy.
static NO_FIELDS: FieldMap = FieldMap::new();

/// What a household row holds besides its field maps and touched paths.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RowMeta {
    pub review: ReviewState,
    pub in_conflict: bool,
    /// The latest rejection not yet superseded by an accepted mutation: (mutation seq, reason).
    pub rejection: Option<(u64, String)>,
    /// The newest outbox entry of this household, whose cumulative changes rebuild the view.
    pub latest_pending: Option<u64>,
    /// This device's mutations not yet seen in a received revision.
    pub unconfirmed: Vec<Unconfirmed>,
}

impl RowMeta {
    /// Forgets this device's mutations that the server copy at `server_rev` already contains.
    /// Once none is left, no path needs repeating in the next mutation: the row's `confirm`
    /// forgets its touched paths then.
    pub fn confirm(&mut self, server_rev: Option<u32>) {
        if let Some(server_rev) = server_rev {
            self.unconfirmed
                .retain(|entry| entry.result_rev.is_none_or(|rev| rev > server_rev));
        }
    }

    /// What an accepted outcome (applied, merged, or kept in conflict) of mutation `seq`, which
    /// made revision `rev`, does: the mutation is no longer pending, it waits for a server copy
    /// at `rev` to be confirmed, and an earlier rejection is superseded. The caller confirms
    /// the row against its server copy after.
    pub fn accepted(&mut self, seq: u64, rev: u32) {
        if self.latest_pending == Some(seq) {
            self.latest_pending = None;
        }
        for entry in self.unconfirmed.iter_mut().filter(|entry| entry.seq == seq) {
            entry.result_rev = Some(rev);
        }
        if self
            .rejection
            .as_ref()
            .is_some_and(|(rejected, _)| *rejected < seq)
        {
            self.rejection = None;
        }
    }

    /// Whether a server copy at `server_rev` contains every unconfirmed mutation: the
    /// complement of what [`RowMeta::confirm`] keeps.
    fn all_confirmed_by(&self, server_rev: u32) -> bool {
        self.unconfirmed
            .iter()
            .all(|entry| entry.result_rev.is_some_and(|rev| rev <= server_rev))
    }

    fn write(&self, w: &mut Writer) {
        w.embedded(&self.review);
        w.bool(self.in_conflict);
        match &self.rejection {
            None => w.u8(0),
            Some((seq, reason)) => {
                w.u8(1);
                w.u64(*seq);
                w.str(reason);
            }
        }
        w.opt_u64(self.latest_pending);
        w.count(self.unconfirmed.len());
        for entry in &self.unconfirmed {
            w.u64(entry.seq);
            match entry.result_rev {
                None => w.u8(0),
                Some(rev) => {
                    w.u8(1);
                    w.u32(rev);
                }
            }
        }
    }

    /// Reads the metadata after a row's field maps; the touched paths follow.
    fn read(r: &mut Reader<'_>) -> Result<RowMeta, StoreError> {
        let review = r.embedded()?;
        let in_conflict = r.flag()?;
        let rejection = match r.flag()? {
            false => None,
            true => Some((r.u64()?, r.string()?)),
        };
        let latest_pending = r.opt_u64()?;
        let mut unconfirmed = Vec::new();
        for _ in 0..r.count(9)? {
            let seq = r.u64()?;
            let result_rev = match r.flag()? {
                false => None,
                true => Some(r.u32()?),
            };
            unconfirmed.push(Unconfirmed { seq, result_rev });
        }
        Ok(RowMeta {
            review,
            in_conflict,
            rejection,
            latest_pending,
            unconfirmed,
        })
    }
}

/// Writes the list of touched paths: a u32 count, then each path.
fn write_path_list(w: &mut Writer, paths: &BTreeSet<String>) {
    w.count(paths.len());
    for path in paths {
        w.str(path);
    }
}

/// Reads a list written by [`write_path_list`], to the reader's end.
fn read_path_list(r: &mut Reader<'_>) -> Result<BTreeSet<String>, StoreError> {
    // Written in order: collected and built in one go, not inserted one by one.
    let n = r.count(4)?;
    let mut paths = Vec::with_capacity(n);
    for _ in 0..n {
        paths.push(r.string()?);
    }
    r.end()?;
    Ok(BTreeSet::from_iter(paths))
}

/// Reads the touched paths that end a layout 4 row, whose view is `view`.
fn read_touched(r: &mut Reader<'_>, view: &FieldMap) -> Result<BTreeSet<String>, StoreError> {
    let touched = match r.u8()? {
        TOUCHED_NONE => BTreeSet::new(),
        TOUCHED_EVERY_VIEW_PATH => view.keys().cloned().collect(),
        TOUCHED_LIST => {
            let packed = r.bytes()?;
            let list = codec::packed::unpack(packed, EMBEDDED_LIMIT)
                .map_err(|error| r.corrupt(error.to_string()))?;
            read_path_list(&mut Reader {
                rest: &list,
                what: r.what,
                packed: true,
            })?
        }
        other => return Err(r.corrupt(format!("unknown touched paths form {other}"))),
    };
    r.end()?;
    Ok(touched)
}

/// Writes the touched paths that end a layout 4 row: a new household's create, which touched
/// every path of its view, in one byte.
fn write_touched(w: &mut Writer, touched: &BTreeSet<String>, view: &FieldMap) {
    if touched.is_empty() {
        w.u8(TOUCHED_NONE);
    } else if touched.len() == view.len() && touched.iter().eq(view.keys()) {
        w.u8(TOUCHED_EVERY_VIEW_PATH);
    } else {
        w.u8(TOUCHED_LIST);
        let mut list = Writer(Vec::new());
        write_path_list(&mut list, touched);
        w.bytes(&codec::packed::pack(&list.0));
    }
}

impl HouseholdRow {
    /// A household first recorded on this device.
    pub fn new_local() -> HouseholdRow {
        HouseholdRow::with_meta(
            RowMeta {
                review: ReviewState::Submitted,
                in_conflict: false,
                rejection: None,
                latest_pending: None,
                unconfirmed: Vec::new(),
            },
            BTreeSet::new(),
        )
    }

    /// A row with these metadata and touched paths, and neither maps nor view yet.
    pub fn with_meta(meta: RowMeta, touched: BTreeSet<String>) -> HouseholdRow {
        HouseholdRow {
            server: None,
            view: None,
            meta,
            touched,
        }
    }

    /// What the enumerator sees.
    pub fn view(&self) -> &FieldMap {
        match (&self.view, &self.server) {
            (Some(view), _) => view,
            (None, Some(copy)) => &copy.fields,
            (None, None) => &NO_FIELDS,
        }
    }

    pub fn set_view(&mut self, view: FieldMap) {
        self.view = Some(view);
    }

    /// The view is the server copy (no pending change over it).
    pub fn view_the_server_copy(&mut self) {
        self.view = None;
    }

    pub fn into_view(self) -> FieldMap {
        self.into_view_and_meta().0
    }

    pub fn into_view_and_meta(self) -> (FieldMap, RowMeta) {
        let view = match (self.view, self.server) {
            (Some(view), _) => view,
            (None, Some(copy)) => copy.fields,
            (None, None) => FieldMap::new(),
        };
        (view, self.meta)
    }

    /// Forgets the mutations the server copy already contains (see [`RowMeta::confirm`]).
    pub fn confirm(&mut self) {
        let server_rev = self.server.as_ref().map(|copy| copy.rev);
        self.meta.confirm(server_rev);
        if self.meta.unconfirmed.is_empty() {
            self.touched.clear();
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(vec![HOUSEHOLD_V4]);
        match &self.server {
            None => {
                w.u8(NO_SERVER_COPY);
                w.embedded(self.view());
            }
            // Most households have no pending change: the view is written once, not twice
            // (half the packing a pulled household costs). A view set apart that is back at
            // the server copy is written the same way.
            Some(copy) => match self.view.as_ref().filter(|view| **view != copy.fields) {
                None => {
                    w.u8(SERVER_COPY_IS_VIEW);
                    w.u32(copy.rev);
                    w.embedded(&copy.fields);
                }
                Some(view) => {
                    w.u8(SERVER_COPY);
                    w.u32(copy.rev);
                    w.embedded(&copy.fields);
                    w.embedded(view);
                }
            },
        }
        self.meta.write(&mut w);
        write_touched(&mut w, &self.touched, self.view());
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<HouseholdRow, StoreError> {
        let mut r = Reader::household(bytes)?;
        let (server, view) = match r.u8()? {
            NO_SERVER_COPY => (None, Some(r.embedded()?)),
            SERVER_COPY => (Some(r.server_copy()?), Some(r.embedded()?)),
            SERVER_COPY_IS_VIEW if r.packed => (Some(r.server_copy()?), None),
            other => return Err(r.corrupt(format!("unknown server copy tag {other}"))),
        };
        let meta = RowMeta::read(&mut r)?;
        let mut row = HouseholdRow {
            server,
            view,
            meta,
            touched: BTreeSet::new(),
        };
        row.touched = match bytes.first() {
            Some(&HOUSEHOLD_V4) => read_touched(&mut r, row.view())?,
            _ => read_path_list(&mut r)?,
        };
        Ok(row)
    }
}

/// A household row read without its field maps, for the steps that change only the rest of it
/// (an outcome, an acknowledgement): the packed maps and the touched paths are written back
/// byte for byte, neither unpacked nor packed again. For a pulled household that was most of
/// the cost of recording its outcome.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HouseholdMetaRow {
    /// The row from its layout byte to the end of its field maps, as stored (layout 4).
    maps: Vec<u8>,
    /// The revision of the server copy among the maps.
    pub server_rev: Option<u32>,
    pub meta: RowMeta,
    /// The touched paths that end the row, as stored.
    touched: Vec<u8>,
}

impl HouseholdMetaRow {
    /// A household first recorded on this device.
    pub fn new_local() -> Result<HouseholdMetaRow, StoreError> {
        HouseholdMetaRow::decode(&HouseholdRow::new_local().encode())
    }

    /// The row a pull makes of `stored` (or of nothing) with a server copy received encoded
    /// as its view: the map is packed as it came, never decoded (a pulled household with no
    /// pending change over it).
    pub fn server_copy_is_view(
        rev: u32,
        fields: &EncodedFields,
        stored: Option<HouseholdMetaRow>,
    ) -> Result<HouseholdMetaRow, StoreError> {
        let mut row = match stored {
            Some(row) => row,
            None => HouseholdMetaRow::new_local()?,
        };
        if row.touched_follow_view() && !row.meta.all_confirmed_by(rev) {
            // Paths written as the view's outlive the view: listed while it is still here.
            let touched = row.touched_paths()?;
            let mut w = Writer(Vec::new());
            write_touched(&mut w, &touched, &NO_FIELDS);
            row.touched = w.0;
        }
        let mut w = Writer(vec![HOUSEHOLD_V4]);
        w.u8(SERVER_COPY_IS_VIEW);
        w.u32(rev);
        w.bytes(&codec::packed::pack(fields.codec_bytes()));
        row.maps = w.0;
        row.server_rev = Some(rev);
        row.confirm();
        Ok(row)
    }

    /// The row with its metadata and touched paths and neither maps nor view, for a step
    /// that replaces them.
    pub fn without_maps(self) -> Result<HouseholdRow, StoreError> {
        let touched = self.touched_paths()?;
        Ok(HouseholdRow::with_meta(self.meta, touched))
    }

    /// The touched paths, decoded; read with the whole row when they are written as its
    /// view's.
    fn touched_paths(&self) -> Result<BTreeSet<String>, StoreError> {
        if self.touched_follow_view() {
            return Ok(HouseholdRow::decode(&self.encode())?.touched);
        }
        read_touched(
            &mut Reader {
                rest: &self.touched,
                what: "household",
                packed: true,
            },
            &NO_FIELDS,
        )
    }

    fn touched_follow_view(&self) -> bool {
        self.touched.first() == Some(&TOUCHED_EVERY_VIEW_PATH)
    }

    /// Forgets the mutations the server copy already contains (see [`RowMeta::confirm`]).
    pub fn confirm(&mut self) {
        self.meta.confirm(self.server_rev);
        if self.meta.unconfirmed.is_empty() {
            self.touched = vec![TOUCHED_NONE];
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<HouseholdMetaRow, StoreError> {
        if bytes.first() != Some(&HOUSEHOLD_V4) {
            // A row of an earlier layout: read whole and written in today's.
            return HouseholdMetaRow::decode(&HouseholdRow::decode(bytes)?.encode());
        }
        let mut r = Reader::household(bytes)?;
        let server_rev = match r.u8()? {
            NO_SERVER_COPY => {
                r.bytes()?;
                None
            }
            SERVER_COPY => {
                let rev = r.u32()?;
                r.bytes()?;
                r.bytes()?;
                Some(rev)
            }
            SERVER_COPY_IS_VIEW => {
                let rev = r.u32()?;
                r.bytes()?;
                Some(rev)
            }
            other => return Err(r.corrupt(format!("unknown server copy tag {other}"))),
        };
        let maps = bytes[..bytes.len() - r.rest.len()].to_vec();
        let meta = RowMeta::read(&mut r)?;
        let touched = r.rest.to_vec();
        // Checked, not decoded: the form, and a list's length.
        match r.u8()? {
            TOUCHED_NONE | TOUCHED_EVERY_VIEW_PATH => {}
            TOUCHED_LIST => {
                r.bytes()?;
            }
            other => return Err(r.corrupt(format!("unknown touched paths form {other}"))),
        }
        r.end()?;
        Ok(HouseholdMetaRow {
            maps,
            server_rev,
            meta,
            touched,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(self.maps.clone());
        self.meta.write(&mut w);
        w.0.extend_from_slice(&self.touched);
        w.finish()
    }
}

/// A conflict the server reported for one of this device's mutations.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConflictRow {
    pub household_id: Uuid,
    pub mutation_seq: u64,
    pub rev: u32,
    pub fields: Vec<ConflictField>,
}

impl ConflictRow {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uuid(self.household_id);
        w.u64(self.mutation_seq);
        w.u32(self.rev);
        w.embedded(&self.fields);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<ConflictRow, StoreError> {
        let mut r = Reader::new(bytes, "conflict")?;
        let row = ConflictRow {
            household_id: r.uuid()?,
            mutation_seq: r.u64()?,
            rev: r.u32()?,
            fields: r.embedded()?,
        };
        r.end()?;
        Ok(row)
    }
}

/// A mutation the server rejected, kept with its payload so nothing the enumerator typed is lost.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RejectionRow {
    pub household_id: Uuid,
    pub reason: String,
    pub mutation: Option<Mutation>,
}

impl RejectionRow {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uuid(self.household_id);
        w.str(&self.reason);
        match &self.mutation {
            None => w.u8(0),
            Some(mutation) => {
                w.u8(1);
                w.embedded(mutation);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<RejectionRow, StoreError> {
        let mut r = Reader::new(bytes, "rejection")?;
        let household_id = r.uuid()?;
        let reason = r.string()?;
        let mutation = match r.flag()? {
            false => None,
            true => Some(r.embedded()?),
        };
        r.end()?;
        Ok(RejectionRow {
            household_id,
            reason,
            mutation,
        })
    }
}

/// Encodes an outbox or awaiting entry: the layout byte, the household id and the seq, then
/// the packed mutation. The id in front lets an outcome be recorded without unpacking the
/// mutation, which for a new household is the whole record. A create made of its record (a
/// household recorded on this device and not yet received back) is kept as that record
/// ([`ENTRY_RECORD`]): the server may keep its packed map as it is.
pub(crate) fn encode_mutation(mutation: &Mutation) -> Vec<u8> {
    if let Some(fields) = packed_push::packed_record(mutation) {
        let mut writer = Writer(vec![ENTRY_RECORD]);
        writer.uuid(mutation.household_id);
        writer.u64(mutation.seq);
        // The time's bits, read back as an i64.
        writer.u64(mutation.made_at_ms as u64);
        writer.bytes(&fields);
        return writer.finish();
    }
    let mut writer = Writer(vec![ENTRY_V3]);
    writer.uuid(mutation.household_id);
    writer.u64(mutation.seq);
    writer.embedded(mutation);
    writer.finish()
}

/// Decodes an outbox or awaiting entry. Entries of layout 2 hold only the packed mutation; an
/// entry written before packing is the bare encoded mutation, which starts with protocol
/// version 1 (`01 00`), never with [`ROW_V2`] or [`ENTRY_V3`].
pub(crate) fn decode_mutation(bytes: &[u8]) -> Result<Mutation, StoreError> {
    match bytes.first() {
        Some(&ENTRY_RECORD) => {
            let mut reader = Reader::entry(bytes);
            let (household_id, seq, made_at_ms, fields) = reader.record()?;
            packed_push::read_record(seq, household_id, made_at_ms, fields, EMBEDDED_LIMIT)
                .map_err(|error| reader.corrupt(error.to_string()))
        }
        Some(&ENTRY_V3) => {
            let mut reader = Reader::entry(bytes);
            let (household_id, seq) = (reader.uuid()?, reader.u64()?);
            let mutation: Mutation = reader.embedded()?;
            reader.end()?;
            if (mutation.household_id, mutation.seq) != (household_id, seq) {
                return Err(reader.corrupt(format!(
                    "the entry is for household {household_id} seq {seq} but holds household {} seq {}",
                    mutation.household_id, mutation.seq
                )));
            }
            Ok(mutation)
        }
        Some(&ROW_V2) => {
            let mut reader = Reader::new(bytes, "mutation")?;
            let mutation = reader.embedded()?;
            reader.end()?;
            Ok(mutation)
        }
        _ => codec::decode(bytes, EMBEDDED_LIMIT).map_err(|error| StoreError::Corrupt {
            what: "mutation",
            problem: error.to_string(),
        }),
    }
}

/// An outbox or awaiting entry's mutation as a push sends it ([`PushBatch`](crate::sync::PushBatch)):
/// packed, copied as the entry holds it, neither unpacked nor decoded. The seq and household
/// are the entry's front, which [`encode_mutation`] wrote from the same mutation; the server
/// reads the mutation's own, and answers by them. An entry of an earlier layout is decoded,
/// encoded and packed.
pub(crate) fn encoded_mutation(bytes: &[u8]) -> Result<EncodedMutation, StoreError> {
    if bytes.first() == Some(&ENTRY_RECORD) {
        let mut reader = Reader::entry(bytes);
        let (household_id, seq, made_at_ms, fields) = reader.record()?;
        return Ok(EncodedMutation {
            seq,
            household_id,
            frame: packed_push::record_frame(seq, &household_id, made_at_ms, fields),
        });
    }
    if bytes.first() != Some(&ENTRY_V3) {
        return Ok(EncodedMutation::of(&decode_mutation(bytes)?));
    }
    let mut reader = Reader::entry(bytes);
    let (household_id, seq) = (reader.uuid()?, reader.u64()?);
    let packed = reader.bytes()?.to_vec();
    reader.end()?;
    Ok(EncodedMutation {
        seq,
        household_id,
        frame: packed,
    })
}

/// The household an outbox or awaiting entry is for, read from its front when the entry has
/// the id there (layout 3) and decoded otherwise.
pub(crate) fn entry_household(bytes: &[u8]) -> Result<Uuid, StoreError> {
    if matches!(bytes.first(), Some(&ENTRY_V3 | &ENTRY_RECORD)) {
        return Reader::entry(bytes).uuid();
    }
    Ok(decode_mutation(bytes)?.household_id)
}

pub(crate) fn encode_u64(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub(crate) fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what,
        problem: format!("{} bytes where 8 were expected", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![ROW_V2])
    }

    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn bool(&mut self, value: bool) {
        self.0.push(u8::from(value));
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn opt_u64(&mut self, value: Option<u64>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.u64(value);
            }
        }
    }

    fn count(&mut self, n: usize) {
        // Rows are built from in-memory values far below 4 GiB; saturate rather than wrap.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    fn uuid(&mut self, id: Uuid) {
        self.0.extend_from_slice(id.as_bytes());
    }

    fn embedded<T: serde::Serialize>(&mut self, value: &T) {
        self.bytes(&codec::packed::pack(&codec::encode(value)));
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
    /// Whether embedded values are packed (layout 2 on).
    packed: bool,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Result<Reader<'a>, StoreError> {
        let mut reader = Reader {
            rest: bytes,
            what,
            packed: true,
        };
        match reader.u8()? {
            ROW_V2 => Ok(reader),
            ROW_V1 => {
                reader.packed = false;
                Ok(reader)
            }
            other => Err(reader.corrupt(format!("unknown row layout {other}"))),
        }
    }

    /// A reader after a household row's layout byte, which may be [`HOUSEHOLD_V4`] too.
    fn household(bytes: &'a [u8]) -> Result<Reader<'a>, StoreError> {
        match bytes.split_first() {
            Some((&HOUSEHOLD_V4, rest)) => Ok(Reader {
                rest,
                what: "household",
                packed: true,
            }),
            _ => Reader::new(bytes, "household"),
        }
    }

    /// A reader after an entry's layout byte ([`ENTRY_V3`]), whose mutation is packed.
    fn entry(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            rest: bytes.get(1..).unwrap_or_default(),
            what: "mutation",
            packed: true,
        }
    }

    /// A record entry's front and its packed map, the whole of what is left.
    fn record(&mut self) -> Result<(Uuid, u64, i64, &'a [u8]), StoreError> {
        let (household_id, seq) = (self.uuid()?, self.u64()?);
        let made_at_ms = self.u64()? as i64;
        let fields = self.bytes()?;
        self.end()?;
        Ok((household_id, seq, made_at_ms, fields))
    }

    fn corrupt(&self, problem: String) -> StoreError {
        StoreError::Corrupt {
            what: self.what,
            problem,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(self.corrupt(format!(
                "truncated: {n} bytes wanted, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let bytes = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    fn flag(&mut self) -> Result<bool, StoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.corrupt(format!("flag byte {other}"))),
        }
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, StoreError> {
        Ok(match self.flag()? {
            false => None,
            true => Some(self.u64()?),
        })
    }

    /// A count of items, each taking at least `min_item_bytes`, checked against what is left
    /// so a corrupt count cannot make a loop run for billions of rounds.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, StoreError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes) > self.rest.len() {
            return Err(self.corrupt(format!("count {n} exceeds the row")));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.count(1)?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("text is not UTF-8".into()))
    }

    fn uuid(&mut self) -> Result<Uuid, StoreError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    fn embedded<T: DeserializeOwned>(&mut self) -> Result<T, StoreError> {
        let bytes = self.bytes()?;
        let decoded = if self.packed {
            codec::packed::unpack(bytes, EMBEDDED_LIMIT)
                .and_then(|value| codec::decode(&value, EMBEDDED_LIMIT))
        } else {
            codec::decode(bytes, EMBEDDED_LIMIT)
        };
        decoded.map_err(|error| self.corrupt(error.to_string()))
    }

    fn server_copy(&mut self) -> Result<ServerCopy, StoreError> {
        Ok(ServerCopy {
            rev: self.u32()?,
            fields: self.embedded()?,
        })
    }

    fn end(&self) -> Result<(), StoreError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt(format!("{} trailing bytes", self.rest.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::fields::{FieldChange, FieldValue};

    fn row() -> HouseholdRow {
        let mut fields = FieldMap::new();
        fields.insert("address".into(), FieldValue::Text("Số 3".into()));
        HouseholdRow {
            server: Some(ServerCopy {
                rev: 4,
                fields: fields.clone(),
            }),
            view: Some(fields),
            meta: RowMeta {
                review: ReviewState::Returned {
                    comment: "thiếu CCCD".into(),
                },
                in_conflict: true,
                rejection: Some((7, "sai".into())),
                latest_pending: Some(9),
                unconfirmed: vec![
                    Unconfirmed {
                        seq: 8,
                        result_rev: Some(5),
                    },
                    Unconfirmed {
                        seq: 9,
                        result_rev: None,
                    },
                ],
            },
            touched: ["address".to_string()].into(),
        }
    }

    #[test]
    fn rows_round_trip() {
        let row = row();
        assert_eq!(HouseholdRow::decode(&row.encode()).ok(), Some(row.clone()));
        let mut edited = row.clone();
        let mut view = edited.view().clone();
        view.insert("village".into(), FieldValue::Text("Thôn Đông".into()));
        edited.set_view(view);
        assert!(edited.encode().len() > row.encode().len());
        assert_eq!(HouseholdRow::decode(&edited.encode()).ok(), Some(edited));
        let local = HouseholdRow {
            server: None,
            ..row
        };
        assert_eq!(HouseholdRow::decode(&local.encode()).ok(), Some(local));
        let conflict = ConflictRow {
            household_id: Uuid::from_u128(3),
            mutation_seq: 2,
            rev: 6,
            fields: vec![ConflictField {
                path: "address".into(),
                base: None,
                theirs: Some(FieldValue::Int(1)),
                mine: Some(FieldValue::Int(2)),
            }],
        };
        assert_eq!(ConflictRow::decode(&conflict.encode()).ok(), Some(conflict));
        let rejection = RejectionRow {
            household_id: Uuid::from_u128(3),
            reason: "không hợp lệ".into(),
            mutation: None,
        };
        assert_eq!(
            RejectionRow::decode(&rejection.encode()).ok(),
            Some(rejection)
        );
    }

    #[test]
    fn metadata_changes_keep_the_packed_maps_byte_for_byte() {
        let row = row();
        let mut edited_view = row.clone();
        let mut view = edited_view.view().clone();
        view.insert("village".into(), FieldValue::Text("Thôn Đông".into()));
        edited_view.set_view(view);
        let local = HouseholdRow {
            server: None,
            ..row.clone()
        };
        for row in [row, edited_view, local] {
            let bytes = row.encode();
            let mut meta_row = HouseholdMetaRow::decode(&bytes).expect("meta");
            assert_eq!(
                meta_row.server_rev,
                row.server.as_ref().map(|copy| copy.rev)
            );
            assert_eq!(meta_row.meta, row.meta);
            assert_eq!(meta_row.encode(), bytes, "read and written unchanged");
            meta_row.meta.latest_pending = None;
            meta_row.meta.in_conflict = false;
            meta_row.meta.rejection = None;
            meta_row.confirm();
            let back = HouseholdRow::decode(&meta_row.encode()).expect("whole");
            let mut expected = row.clone();
            expected.meta.latest_pending = None;
            expected.meta.in_conflict = false;
            expected.meta.rejection = None;
            expected.confirm();
            assert_eq!(back, expected);
            for cut in 0..bytes.len() {
                assert!(
                    HouseholdMetaRow::decode(&bytes[..cut]).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn a_server_copy_received_encoded_is_the_row_a_decoded_one_makes() {
        let row = row();
        let copy = row.server.clone().expect("a server copy");
        let received = EncodedFields::encode(&copy.fields);
        let mut expected = row.clone();
        expected.view_the_server_copy();
        // Over nothing stored, and over a stored row of another view whose touched paths are
        // a list.
        let mut elsewhere = row.clone();
        elsewhere.server = None;
        elsewhere.set_view(FieldMap::from([(
            "village".to_string(),
            FieldValue::Text("Thôn Đông".into()),
        )]));
        let stored = HouseholdMetaRow::decode(&elsewhere.encode()).expect("meta");
        let meta_row =
            HouseholdMetaRow::server_copy_is_view(copy.rev, &received, Some(stored)).expect("made");
        assert_eq!(meta_row.server_rev, Some(copy.rev));
        assert_eq!(
            HouseholdRow::decode(&meta_row.encode()).ok(),
            Some(expected)
        );
        let fresh = HouseholdMetaRow::server_copy_is_view(copy.rev, &received, None).expect("made");
        let mut expected = HouseholdRow::new_local();
        expected.server = Some(copy);
        assert_eq!(fresh.encode(), expected.encode());
    }

    /// A new household's create touches every path of its record: its row says so in a byte
    /// instead of listing them, and the paths follow the view through every later step.
    #[test]
    fn touched_paths_of_a_whole_view_are_written_in_a_byte_and_outlive_the_view() {
        let view: FieldMap = (0..90)
            .map(|i| {
                (
                    format!("members.0193a1b2-0000-7000-8000-{i:012}.full_name"),
                    FieldValue::Text(format!("Nguyễn Thị Hoa {i}")),
                )
            })
            .collect();
        let mut local = HouseholdRow::new_local();
        local.touched = view.keys().cloned().collect();
        local.set_view(view.clone());
        local.meta.unconfirmed.push(Unconfirmed {
            seq: 1,
            result_rev: Some(1),
        });
        let bytes = local.encode();
        let mut listed = local.clone();
        listed.touched.insert("members.removed.full_name".into());
        assert!(
            bytes.len() + 200 < listed.encode().len(),
            "{} bytes against {}",
            bytes.len(),
            listed.encode().len()
        );
        assert_eq!(HouseholdRow::decode(&bytes).ok(), Some(local.clone()));
        assert_eq!(
            HouseholdRow::decode(&listed.encode()).ok(),
            Some(listed.clone())
        );
        // Carried byte for byte through a metadata change, and read out whole when the maps go.
        let mut meta_row = HouseholdMetaRow::decode(&bytes).expect("meta");
        meta_row.meta.latest_pending = Some(3);
        let mut expected = local.clone();
        expected.meta.latest_pending = Some(3);
        assert_eq!(
            HouseholdRow::decode(&meta_row.encode()).ok(),
            Some(expected)
        );
        assert_eq!(
            meta_row.clone().without_maps().ok().map(|row| row.touched),
            Some(local.touched.clone())
        );
        // A server copy from before the create's revision replaces the view: the paths stay,
        // now as a list. One at the create's revision confirms it, and none stay.
        let other = EncodedFields::encode(&FieldMap::from([(
            "address".to_string(),
            FieldValue::Text("Số 3".into()),
        )]));
        for (rev, kept) in [(0, local.touched.clone()), (1, BTreeSet::new())] {
            let pulled = HouseholdMetaRow::server_copy_is_view(rev, &other, Some(meta_row.clone()))
                .expect("made");
            let whole = HouseholdRow::decode(&pulled.encode()).expect("whole");
            assert_eq!(whole.touched, kept, "at rev {rev}");
            assert_eq!(whole.view().len(), 1);
        }
    }

    #[test]
    fn a_row_from_before_packing_reads_without_its_maps_and_is_written_packed() {
        let mut row = row();
        row.meta = HouseholdRow::new_local().meta;
        row.touched.clear();
        let copy = row.server.clone().expect("server copy");
        let mut v1 = Writer(vec![ROW_V1]);
        v1.u8(SERVER_COPY);
        v1.u32(copy.rev);
        v1.bytes(&codec::encode(&copy.fields));
        v1.bytes(&codec::encode(row.view()));
        v1.bytes(&codec::encode(&row.meta.review));
        // Not in conflict, no rejection, nothing pending, no unconfirmed, no touched paths.
        v1.0.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let v1 = v1.finish();
        assert_eq!(HouseholdRow::decode(&v1).ok(), Some(row.clone()));
        let meta_row = HouseholdMetaRow::decode(&v1).expect("meta");
        assert_eq!(meta_row.server_rev, Some(copy.rev));
        let written = meta_row.encode();
        assert_eq!(written[0], HOUSEHOLD_V4);
        assert_eq!(HouseholdRow::decode(&written).ok(), Some(row));
    }

    #[test]
    fn a_row_with_touched_paths_listed_in_its_metadata_reads_and_is_written_in_layout_4() {
        let mut row = row();
        row.touched = ["address".to_string(), "members.x.full_name".to_string()].into();
        let copy = row.server.clone().expect("server copy");
        let mut v2 = Writer::new();
        v2.u8(SERVER_COPY_IS_VIEW);
        v2.u32(copy.rev);
        v2.embedded(&copy.fields);
        row.meta.write(&mut v2);
        write_path_list(&mut v2, &row.touched);
        let v2 = v2.finish();
        assert_eq!(v2[0], ROW_V2);
        assert_eq!(HouseholdRow::decode(&v2).ok(), Some(row.clone()));
        let meta_row = HouseholdMetaRow::decode(&v2).expect("meta");
        let written = meta_row.encode();
        assert_eq!(written[0], HOUSEHOLD_V4);
        assert_eq!(written, row.encode());
        for cut in 0..v2.len() {
            assert!(
                HouseholdMetaRow::decode(&v2[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_create_made_of_its_record_is_kept_as_the_record_a_push_carries() {
        let changes: Vec<FieldChange> = (0..30)
            .map(|i| FieldChange {
                path: format!("members.0193a1b2-0000-7000-8000-0000000000{i:02}.full_name"),
                value: Some(FieldValue::Text(format!("Nguyễn Thị Hoa {i}"))),
            })
            .collect();
        let create = Mutation {
            seq: 9,
            household_id: Uuid::from_u128(5),
            base: protocol::sync::Base::New,
            changes,
            // Before 1970 on a clock set wrong: the time's bits come back as they went.
            made_at_ms: -1_000,
        };
        let entry = encode_mutation(&create);
        assert_eq!(entry[0], ENTRY_RECORD);
        assert_eq!(decode_mutation(&entry).ok(), Some(create.clone()));
        assert_eq!(entry_household(&entry).ok(), Some(create.household_id));
        let encoded = encoded_mutation(&entry).expect("reads");
        assert_eq!(
            (encoded.seq, encoded.household_id),
            (9, create.household_id)
        );
        assert_eq!(
            encoded.frame,
            packed_push::record_of(&create).expect("a record")
        );
        let read = packed_push::read(0, &encoded.frame, EMBEDDED_LIMIT).expect("the frame reads");
        assert_eq!(read, create);
        assert!(
            matches!(
                packed_push::read_keeping(0, &encoded.frame, EMBEDDED_LIMIT, 2_000),
                Ok(packed_push::Pushed::Kept(_))
            ),
            "the server may keep the map"
        );
        for cut in 0..entry.len() {
            assert!(decode_mutation(&entry[..cut]).is_err(), "cut at {cut}");
            assert!(encoded_mutation(&entry[..cut]).is_err(), "cut at {cut}");
        }
        // An edit, or a create with a removal in it, is kept whole as before.
        let mut edit = create.clone();
        edit.base = protocol::sync::Base::Rev(2);
        assert_eq!(encode_mutation(&edit)[0], ENTRY_V3);
        let mut with_removal = create;
        with_removal.changes[3].value = None;
        assert_eq!(encode_mutation(&with_removal)[0], ENTRY_V3);
        assert_eq!(
            decode_mutation(&encode_mutation(&with_removal)).ok(),
            Some(with_removal)
        );
    }

    #[test]
    fn mutations_pack_and_entries_from_before_packing_still_read() {
        let changes: Vec<FieldChange> = (0..30)
            .map(|i| FieldChange {
                path: format!(
                    "members.0193a1b2-0000-7000-8000-00000000000{}.full_name",
                    i % 5
                ),
                value: Some(FieldValue::Text(format!("Nguyễn Thị Hoa {i}"))),
            })
            .collect();
        let mutation = Mutation {
            seq: 4,
            household_id: Uuid::from_u128(3),
            base: protocol::sync::Base::New,
            changes,
            made_at_ms: 1_764_000_000_000,
        };
        let packed = encode_mutation(&mutation);
        let bare = codec::encode(&mutation);
        assert_eq!(packed[0], ENTRY_V3);
        assert!(
            packed.len() * 3 < bare.len(),
            "{} of {}",
            packed.len(),
            bare.len()
        );
        assert_eq!(decode_mutation(&packed).ok(), Some(mutation.clone()));
        assert_eq!(entry_household(&packed).ok(), Some(mutation.household_id));
        // Layout 2: the packed mutation without the id in front.
        let mut v2 = Writer::new();
        v2.embedded(&mutation);
        let v2 = v2.finish();
        assert_eq!(decode_mutation(&v2).ok(), Some(mutation.clone()));
        assert_eq!(entry_household(&v2).ok(), Some(mutation.household_id));
        assert_eq!(decode_mutation(&bare).ok(), Some(mutation.clone()));
        assert_eq!(entry_household(&bare).ok(), Some(mutation.household_id));
        for cut in 0..packed.len() {
            assert!(decode_mutation(&packed[..cut]).is_err(), "cut at {cut}");
        }
        for cut in 0..17 {
            assert!(entry_household(&packed[..cut]).is_err(), "cut at {cut}");
        }
        // Read for a push, each layout gives the mutation packed; a layout 3 entry gives the
        // bytes it holds, copied.
        for entry in [&packed, &v2, &bare] {
            let encoded = encoded_mutation(entry).expect("reads");
            assert_eq!(
                (encoded.seq, encoded.household_id),
                (mutation.seq, mutation.household_id)
            );
            assert_eq!(
                codec::packed::unpack(&encoded.frame, EMBEDDED_LIMIT).ok(),
                Some(bare.clone())
            );
        }
        let copied = encoded_mutation(&packed).expect("reads").frame;
        assert!(packed.ends_with(&copied), "copied as the entry holds it");
        for cut in 0..packed.len() {
            assert!(encoded_mutation(&packed[..cut]).is_err(), "cut at {cut}");
        }
        // An id in front that is not the mutation's is damage, not a different household.
        let mut mislabelled = packed;
        mislabelled[1] ^= 1;
        assert!(decode_mutation(&mislabelled).is_err());
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let bytes = row().encode();
        for cut in 0..bytes.len() {
            assert!(HouseholdRow::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(HouseholdRow::decode(&long).is_err());
        let mut future = bytes;
        future[0] = 9;
        assert!(HouseholdRow::decode(&future).is_err());
        // A count claiming four billion items in a few bytes.
        assert!(HouseholdRow::decode(&[ROW_V1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
