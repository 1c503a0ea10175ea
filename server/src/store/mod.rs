//! The registry's storage: the only module that opens sled.
//!
//! Everything lives in one sled tree, keyed by hand (the `keys` module documents the layout),
//! except the large rows, which sled refers to in the journal (`in_journal`). Reads go
//! straight to the tree, and follow a reference when they meet one; where a household's row
//! is (its own, or an entry of the run of new households' rows its creating commit wrote),
//! and that the registry does not hold one, are known from memory (`known_households`).
//! Writes come only as a
//! `Commit`, built by the merge engine in memory
//! under the server's single writer lock, applied with one atomic `apply_batch`
//! (`Registry::commit_pending`) and made durable by a flush (`Registry::make_durable`) before
//! the push is answered; pushes that are written while a flush runs share the next one (group
//! commit). A revision's classification is kept as its decision; a read rebuilds its texts
//! with the reference data it names, which the registry keeps by fingerprint (`references`).
//! After a reference-data correction,
//! the recomputed classifications of `Registry::record_classifications` are written in one
//! batch and flushed the same way. A failed write or flush marks the
//! registry failed: from then on every sync request is refused until the server restarts,
//! because what sled holds in memory may no longer be what is on disk.
//!
//! The rest of the server sees only [`Registry`] and the plain structs below, so another
//! backend (a PostgreSQL-protocol database, say) can stand in for sled behind the same methods.
//!
//! Accounts, enrolled devices, sessions and the audit log live in a second tree of the same
//! database, [`Accounts`] (the `accounts` module documents its layout), written on their own.

mod accounts;
mod in_journal;
mod journaled;
mod keys;
mod known_households;
mod references;
mod rows;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fxhash::FxHashMap;
use protocol::classify::Classification;
use protocol::fields::{EncodedFields, FieldError, FieldMap};
use protocol::household::Household;
use protocol::merge::ConflictField;
use protocol::sync::{Mutation, MutationOutcome, ReviewState};
use uuid::Uuid;

pub use accounts::{
    Accounts, AccountsBatch, AuditDraft, AuditEntry, AuditEvent, DeviceRecord, Revocation,
    SessionRecord, TokenHash, UserRecord,
};
use in_journal::Reference;
#[cfg(test)]
pub(crate) use journaled::tests::when_unlocked;
pub use journaled::{check, rebuild, Checked, Digest, Rebuilt};
use known_households::Place;
pub use rows::RowError;
use rows::{HouseholdMeta, RevisionRow};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The causes below are part of each message and not error sources: a chain printed whole
    // (`{:#}`) would say them twice.
    #[error("cannot open the registry at {path}: {error}")]
    Open { path: PathBuf, error: sled::Error },
    #[error("the registry store failed: {0}")]
    Sled(sled::Error),
    #[error("flushing the registry to disk failed: {0}")]
    Flush(sled::Error),
    #[error("an earlier write to the registry failed; restart the server before syncing again")]
    Failed,
    #[error("the registry row {key} is damaged: {problem}")]
    Corrupt { key: String, problem: RowError },
    /// The journal's own message names the journal and what failed; a chain printed whole
    /// (`{:#}`) would say it twice if this wrapped it.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("the registry is inconsistent: {0}")]
    Inconsistent(String),
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> StoreError {
        StoreError::Sled(error)
    }
}

/// A household as the registry holds it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredHousehold {
    pub id: Uuid,
    /// The latest revision; `fields` are that revision's fields.
    pub rev: u32,
    pub fields: FieldMap,
    pub review: ReviewState,
    /// Conflicts waiting for a supervisor, by conflict id. The household is "in conflict"
    /// while this is not empty.
    pub open_conflicts: Vec<u64>,
    /// The device that created the household: a later `Base::New` mutation from the same
    /// device merges against revision 1, from any other device it is refused.
    pub created_by: Uuid,
    /// The change-log seq of the latest change to this household. A change-log entry with a
    /// lower seq is superseded and skipped by pulls.
    pub last_seq: u64,
    /// The classification of revision `rev`: the latest record, made with the revision or by a
    /// recomputation since. `None` for a revision stored before classifications were.
    pub classification: Option<Classification>,
}

impl StoredHousehold {
    pub fn in_conflict(&self) -> bool {
        !self.open_conflicts.is_empty()
    }

    /// The record rebuilt from its fields.
    pub fn household(&self) -> Result<Household, FieldError> {
        protocol::fields::unflatten(&self.fields)
    }

    fn meta(&self) -> HouseholdMeta {
        HouseholdMeta {
            rev: self.rev,
            last_seq: self.last_seq,
            created_by: self.created_by,
            open_conflicts: self.open_conflicts.clone(),
            review: self.review.clone(),
        }
    }
}

/// A household as a pull page carries it: [`StoredHousehold`] with its fields left encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledHousehold {
    pub id: Uuid,
    pub rev: u32,
    pub fields: EncodedFields,
    pub review: ReviewState,
    /// Conflicts wait for a supervisor.
    pub in_conflict: bool,
    pub created_by: Uuid,
}

/// A row read from the registry, with the key that names it in errors.
type KeyedRow = (Vec<u8>, Vec<u8>);

/// A household whose current revision's row is not there.
fn missing_revision(id: Uuid, rev: u32) -> StoreError {
    StoreError::Inconsistent(format!(
        "household {id} is at revision {rev} but that revision is missing"
    ))
}

/// Why a revision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionCause {
    /// A device created the household.
    Create,
    /// A device's change made on the current revision.
    Mutation,
    /// A device's change made on an older revision, merged with others' changes.
    Merge,
    /// A device's change of which some fields applied and some became a conflict.
    Conflict,
    /// A supervisor resolved a conflict.
    Resolution,
    /// A supervisor's review decision.
    Review,
}

/// A classification stored with a revision. A revision's first record is made with it; a
/// recomputation after a reference-data correction appends another, so earlier results stay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassificationRecord {
    pub classification: Classification,
    /// When it was computed, in Unix milliseconds on the server's clock.
    pub at_ms: i64,
    /// The fingerprint of the reference data it was computed with
    /// (`protocol::reference::ReferenceTexts::fingerprint`).
    pub reference: String,
}

/// One revision of a household: every change to the registry is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    pub rev: u32,
    /// The whole record at this revision.
    pub fields: FieldMap,
    /// The device whose mutation made this revision.
    pub device_id: Uuid,
    pub mutation_seq: u64,
    /// When the registry made the revision, in Unix milliseconds on the server's clock.
    pub at_ms: i64,
    pub why: RevisionCause,
    /// The classification of the record at this revision, as last computed. A new revision is
    /// classified when it is made; [`Registry::record_classifications`] adds later results.
    /// The merge engine's new revisions carry the decision alone (texts empty, as
    /// `protocol::classify::decide` leaves them), which is all their rows keep; read back, a
    /// revision has its texts, rebuilt (`references`).
    pub classification: Option<ClassificationRecord>,
}

/// A revision the merge engine made, to be written by [`Registry::commit_pending`]: with its
/// row already encoded and packed when it was made ahead of the writer lock ([`Self::written`]),
/// since that is a large share of a revision's cost and needs nothing from the registry.
#[derive(Debug)]
pub(crate) struct NewRevision {
    revision: Revision,
    /// The revision's row, encoded from `revision` itself (both fields are private, so the
    /// two cannot disagree; once the row is written, `take_written_fields` may leave the
    /// revision's fields empty, the row holding them).
    row: Option<Vec<u8>>,
    /// The revision's fields are in its row only ([`Self::written_packed`]).
    fields_in_row: bool,
}

impl NewRevision {
    /// A revision whose row is encoded when it is committed.
    pub(crate) fn new(revision: Revision) -> NewRevision {
        NewRevision {
            revision,
            row: None,
            fields_in_row: false,
        }
    }

    /// A revision with its row encoded now.
    pub(crate) fn written(revision: Revision) -> NewRevision {
        let row = rows::encode_new_revision(&revision, None);
        NewRevision {
            revision,
            row: Some(row),
            fields_in_row: false,
        }
    }

    /// A revision whose fields are `packed_fields` alone, written into its row now:
    /// `revision.fields` is left empty, and [`Self::fields`] reads them back from the row when
    /// they are asked for (a later mutation of the same household in the same push, which is
    /// rare). `packed_fields` must unpack to the codec bytes of a field map (a record a device
    /// sent packed and the merge engine checked).
    pub(crate) fn written_packed(revision: Revision, packed_fields: &[u8]) -> NewRevision {
        let row = rows::encode_new_revision(&revision, Some(packed_fields));
        NewRevision {
            revision: Revision {
                fields: FieldMap::new(),
                ..revision
            },
            row: Some(row),
            fields_in_row: true,
        }
    }

    /// The revision, with empty fields when they are in its row only ([`Self::fields`]).
    pub(crate) fn revision(&self) -> &Revision {
        &self.revision
    }

    /// The fields of this revision of household `id`, from its row when they are kept there
    /// only.
    pub(crate) fn fields(&self, id: Uuid) -> Result<FieldMap, StoreError> {
        match (&self.row, self.fields_in_row) {
            (Some(row), true) => rows::decode_revision_unclassified(row)
                .map(|row| row.fields)
                .map_err(Registry::corrupt(&keys::revision(id, self.revision.rev))),
            _ => Ok(self.revision.fields.clone()),
        }
    }

    /// The fields of a revision whose row is written already, taken out of it: the row holds
    /// them, and the caller can free them after it lets go of the writer lock.
    fn take_written_fields(&mut self) -> Option<FieldMap> {
        self.row
            .is_some()
            .then(|| std::mem::take(&mut self.revision.fields))
    }

    fn into_row(self) -> Vec<u8> {
        match self.row {
            Some(row) => row,
            None => rows::encode_new_revision(&self.revision, None),
        }
    }
}

/// A device's values that collided with someone else's, kept for a supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictRecord {
    pub id: u64,
    pub household_id: Uuid,
    pub device_id: Uuid,
    pub mutation_seq: u64,
    /// The revision the device's change was made on; `None` for the device's own create,
    /// merged against revision 1.
    pub base_rev: Option<u32>,
    /// The registry's revision the change was merged into.
    pub theirs_rev: u32,
    pub fields: Vec<ConflictField>,
    /// When the enumerator saved, on the device's clock.
    pub made_at_ms: i64,
    /// When the registry received it, on the server's clock.
    pub received_at_ms: i64,
    /// Waiting for a supervisor.
    pub open: bool,
}

/// A mutation the registry refused, kept with its payload for supervisors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedMutation {
    pub device_id: Uuid,
    pub mutation: Mutation,
    /// The reason sent back to the device.
    pub reason: String,
    pub at_ms: i64,
}

/// Everything one push writes, applied atomically by `Registry::commit_pending`.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    /// Household rows to write. Their fields and classification are not written here: they are
    /// those of the revision `rev`, which is either stored already or in `revisions` (and then
    /// the row's own `fields` are left empty and its `classification` `None`, as the merge
    /// engine gives both to the revision).
    pub(crate) households: Vec<StoredHousehold>,
    pub(crate) revisions: Vec<(Uuid, NewRevision)>,
    /// New change-log entries: seq and household.
    pub(crate) changes: Vec<(u64, Uuid)>,
    /// New or updated conflict records.
    pub(crate) conflicts: Vec<ConflictRecord>,
    pub(crate) rejected: Vec<RejectedMutation>,
    pub(crate) outcomes: Vec<(Uuid, MutationOutcome)>,
    /// Each device's new last applied mutation seq.
    pub(crate) device_last: Vec<(Uuid, u64)>,
    pub(crate) head_seq: u64,
    pub(crate) last_conflict: u64,
    pub(crate) household_count: u64,
}

impl Commit {
    /// The field maps of the revisions whose rows are written already, taken out to be freed
    /// after the writer lock is let go: freeing a push's 200 maps was 5% of a push's time, all
    /// of it under the lock.
    pub(crate) fn take_written_fields(&mut self) -> Vec<FieldMap> {
        self.revisions
            .iter_mut()
            .filter_map(|(_, revision)| revision.take_written_fields())
            .collect()
    }
}

/// A page of the change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangePage {
    /// Change-log entries in seq order: seq and household.
    pub entries: Vec<(u64, Uuid)>,
    /// More entries follow the last one.
    pub more: bool,
}

/// sled's page cache. Its default (1 GiB) is what the server's memory grows to with a large
/// registry; reads that miss it are served by the operating system's file cache, so a smaller
/// one costs little (`bench` measures the server's peak memory at each registry size).
const CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The layout of the registry tree this build writes: 2 adds the runs of new households' rows
/// (`n`, see `keys`), 3 the classifications kept as decisions and the reference data they
/// were made with (`e`, see `references`). A registry that a later layout was written to is
/// refused at open, since this build would miss what it cannot read. (Builds before layout 2
/// do not check.)
const LAYOUT: u64 = 3;

/// The canonical household registry.
pub struct Registry {
    db: sled::Db,
    tree: sled::Tree,
    /// Set when a write or a flush failed.
    failed: AtomicBool,
    /// Group commit: batches applied so far (each push's batch takes the next number, under
    /// the server's writer lock), and how many of them a finished flush has made durable. A
    /// flush covers every batch applied before it began, so pushes that arrive while one flush
    /// runs share the next one.
    applied: AtomicU64,
    durable: AtomicU64,
    /// One flush at a time.
    flushing: std::sync::Mutex<()>,
    /// Every batch written to `tree` is appended here first (see `journaled`).
    journal: std::sync::Mutex<crate::journal::Journal>,
    /// Reads the large rows, which sled refers to in the journal (see `in_journal`).
    rows_in_journal: in_journal::JournalRows,
    /// Which households have a row, and where, without asking the tree (see
    /// `known_households`).
    known_households: known_households::KnownHouseholds,
    /// The reference data classifications were made with, by fingerprint (see `references`).
    references: references::KeptReferences,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("failed", &self.failed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens the registry under `dir`, creating it if it is not there.
    pub fn open(dir: &Path) -> Result<Registry, StoreError> {
        let open_error = |source| StoreError::Open {
            path: dir.to_path_buf(),
            error: source,
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(open_error)?;
        let tree = db.open_tree("registry").map_err(open_error)?;
        // Before the journal's replay, which would write to it.
        if let Some(layout) = tree.get(keys::LAYOUT).map_err(StoreError::Sled)? {
            let layout = rows::decode_u64(&layout).map_err(Self::corrupt(keys::LAYOUT))?;
            if layout > LAYOUT {
                return Err(StoreError::Inconsistent(format!(
                    "the registry at {} was written by a later build (layout {layout}; this build reads up to {LAYOUT}): run that build or a later one",
                    dir.display()
                )));
            }
        }
        let journal = journaled::open_journal(dir, &db, &tree)?;
        let rows_in_journal = in_journal::JournalRows::open(journal.path())?;
        // After the journal's replay: the rows it brought back are in the tree.
        let known_households = known_households::KnownHouseholds::read(&tree)?;
        let references = references::KeptReferences::read(&tree)?;
        Ok(Registry {
            db,
            tree,
            failed: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            flushing: std::sync::Mutex::new(()),
            journal: std::sync::Mutex::new(journal),
            rows_in_journal,
            known_households,
            references,
        })
    }

    /// False once a write or a flush has failed.
    pub fn is_healthy(&self) -> bool {
        !self.failed.load(Ordering::SeqCst)
    }

    /// Refuses when an earlier write failed.
    pub fn check_healthy(&self) -> Result<(), StoreError> {
        if self.is_healthy() {
            Ok(())
        } else {
            Err(StoreError::Failed)
        }
    }

    /// The row under `key`, read from the journal when sled holds a reference to it.
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        match self.tree.get(key)? {
            None => Ok(None),
            Some(stored) => self.rows_in_journal.resolve(key, stored).map(Some),
        }
    }

    /// The rows of a scan, each read from the journal when sled holds a reference to it.
    fn rows(
        &self,
        scan: sled::Iter,
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_ {
        scan.map(|entry| {
            let (key, stored) = entry?;
            let row = self.rows_in_journal.resolve(&key, stored)?;
            Ok((key, row))
        })
    }

    fn corrupt(key: &[u8]) -> impl FnOnce(RowError) -> StoreError + '_ {
        move |source| StoreError::Corrupt {
            key: keys::show(key),
            problem: source,
        }
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.get(key)? {
            None => Ok(0),
            Some(bytes) => rows::decode_u64(&bytes).map_err(Self::corrupt(key)),
        }
    }

    /// A household's row, and the reference to its current revision's row when it holds one.
    fn household_row(
        &self,
        id: Uuid,
    ) -> Result<Option<(HouseholdMeta, Option<Reference>)>, StoreError> {
        let key = keys::household(id);
        match self.known_households.place(id) {
            None => {
                debug_assert!(
                    matches!(self.tree.get(&key), Ok(None)),
                    "household {id} has a row, and the known households lack it"
                );
                Ok(None)
            }
            Some(Place::Row) => self
                .get(&key)?
                .map(|row| rows::decode_household_row(&row).map_err(Self::corrupt(&key)))
                .transpose(),
            Some(Place::InRun { run, at }) => {
                let key = keys::new_households(run);
                // None for a household noted for a batch that then failed.
                let Some(run) = self.tree.get(&key)? else {
                    return Ok(None);
                };
                let row = rows::new_household_row(&run, at, id).map_err(Self::corrupt(&key))?;
                rows::decode_household_row(row)
                    .map(Some)
                    .map_err(Self::corrupt(&key))
            }
        }
    }

    /// The row of a household's current revision `rev`, with the key to name in errors: where
    /// its household row refers to, or, for a household row that refers to none (format 2),
    /// its `r` row.
    fn current_revision_bytes(
        &self,
        id: Uuid,
        rev: u32,
        current: Option<&Reference>,
    ) -> Result<KeyedRow, StoreError> {
        match current {
            Some(reference) => {
                let key = keys::household(id);
                let row = self.rows_in_journal.read_for(&key, reference)?;
                Ok((key, row))
            }
            None => {
                let key = keys::revision(id, rev);
                let row = self.get(&key)?.ok_or_else(|| missing_revision(id, rev))?;
                Ok((key, row.to_vec()))
            }
        }
    }

    /// The row of any revision, with the key to name in errors: an `r` row, or the current
    /// revision's, which its household row refers to.
    fn revision_bytes(&self, id: Uuid, rev: u32) -> Result<Option<KeyedRow>, StoreError> {
        let key = keys::revision(id, rev);
        if let Some(row) = self.get(&key)? {
            return Ok(Some((key, row.to_vec())));
        }
        match self.household_row(id)? {
            Some((meta, Some(current))) if meta.rev == rev => self
                .current_revision_bytes(id, rev, Some(&current))
                .map(Some),
            _ => Ok(None),
        }
    }

    /// A revision's row, with the classification record it holds only when `classified`.
    fn revision_row(
        &self,
        id: Uuid,
        rev: u32,
        classified: bool,
    ) -> Result<Option<RevisionRow>, StoreError> {
        self.revision_bytes(id, rev)?
            .map(|(key, row)| Self::decode_revision_row(&key, &row, classified))
            .transpose()
    }

    fn decode_revision_row(
        key: &[u8],
        row: &[u8],
        classified: bool,
    ) -> Result<RevisionRow, StoreError> {
        let decode = if classified {
            rows::decode_revision
        } else {
            rows::decode_revision_unclassified
        };
        decode(row).map_err(Self::corrupt(key))
    }

    /// The household with the fields of its current revision, and its classification when
    /// `classified` (a range scan, which a pull does not need).
    fn with_fields(
        &self,
        id: Uuid,
        meta: HouseholdMeta,
        current: Option<Reference>,
        classified: bool,
    ) -> Result<StoredHousehold, StoreError> {
        let (key, row) = self.current_revision_bytes(id, meta.rev, current.as_ref())?;
        let revision = Self::decode_revision_row(&key, &row, classified)?;
        let classification = if classified {
            self.latest_classification(id, meta.rev, revision.classification, &revision.fields)?
                .map(|record| record.classification)
        } else {
            None
        };
        Ok(StoredHousehold {
            id,
            rev: meta.rev,
            fields: revision.fields,
            review: meta.review,
            open_conflicts: meta.open_conflicts,
            created_by: meta.created_by,
            last_seq: meta.last_seq,
            classification,
        })
    }

    /// The household's current state.
    pub fn household(&self, id: Uuid) -> Result<Option<StoredHousehold>, StoreError> {
        self.household_read(id, true)
    }

    /// The household's current state without its classification (`None`): the merge engine
    /// classifies every revision it makes, and a range scan per household would be waste.
    pub(crate) fn household_unclassified(
        &self,
        id: Uuid,
    ) -> Result<Option<StoredHousehold>, StoreError> {
        self.household_read(id, false)
    }

    fn household_read(
        &self,
        id: Uuid,
        classified: bool,
    ) -> Result<Option<StoredHousehold>, StoreError> {
        match self.household_row(id)? {
            None => Ok(None),
            Some((meta, current)) => self.with_fields(id, meta, current, classified).map(Some),
        }
    }

    /// The fields of one revision of a household, without the rest of it.
    pub(crate) fn revision_fields(
        &self,
        id: Uuid,
        rev: u32,
    ) -> Result<Option<FieldMap>, StoreError> {
        Ok(self.revision_row(id, rev, false)?.map(|row| row.fields))
    }

    /// The household as a pull page carries it, if its latest change is the change-log entry
    /// `seq`; `None` when a later entry supersedes it. Its fields are read only then, and left
    /// encoded for the page to copy (`codec::pull_page`); its classification is not read: a
    /// pull does not carry it, devices classify the records they hold themselves.
    pub fn pulled_household(
        &self,
        id: Uuid,
        seq: u64,
    ) -> Result<Option<PulledHousehold>, StoreError> {
        let (meta, current) = self.household_row(id)?.ok_or_else(|| {
            StoreError::Inconsistent(format!(
                "change-log entry {seq} names household {id}, which is missing"
            ))
        })?;
        if meta.last_seq != seq {
            return Ok(None);
        }
        let (key, row) = self.current_revision_bytes(id, meta.rev, current.as_ref())?;
        let fields = rows::decode_revision_fields_encoded(&row).map_err(Self::corrupt(&key))?;
        Ok(Some(PulledHousehold {
            id,
            rev: meta.rev,
            fields,
            review: meta.review,
            in_conflict: !meta.open_conflicts.is_empty(),
            created_by: meta.created_by,
        }))
    }

    /// The device whose mutation made one revision of a household, without reading the
    /// revision's fields.
    pub(crate) fn revision_author(&self, id: Uuid, rev: u32) -> Result<Option<Uuid>, StoreError> {
        self.revision_bytes(id, rev)?
            .map(|(key, row)| rows::decode_revision_author(&row).map_err(Self::corrupt(&key)))
            .transpose()
    }

    /// One revision of a household.
    pub fn revision(&self, id: Uuid, rev: u32) -> Result<Option<Revision>, StoreError> {
        self.revision_row(id, rev, true)?
            .map(|row| self.revision_of(id, rev, row))
            .transpose()
    }

    /// A revision from its row, with its latest classification record.
    fn revision_of(&self, id: Uuid, rev: u32, row: RevisionRow) -> Result<Revision, StoreError> {
        let classification =
            self.latest_classification(id, rev, row.classification, &row.fields)?;
        Ok(Revision {
            rev,
            fields: row.fields,
            device_id: row.device_id,
            mutation_seq: row.mutation_seq,
            at_ms: row.at_ms,
            why: row.why,
            classification,
        })
    }

    /// The latest classification record of a revision.
    pub fn classification(
        &self,
        id: Uuid,
        rev: u32,
    ) -> Result<Option<ClassificationRecord>, StoreError> {
        if let Some(latest) = self.latest_recomputed(id, rev)? {
            return Ok(Some(latest));
        }
        self.classification_made_with(id, rev)
    }

    /// The latest recomputed record of a revision (a `k` row), or else the record its row
    /// holds (`made_with`), rebuilt from `fields` when it is kept as a decision.
    fn latest_classification(
        &self,
        id: Uuid,
        rev: u32,
        made_with: Option<rows::MadeWith>,
        fields: &FieldMap,
    ) -> Result<Option<ClassificationRecord>, StoreError> {
        if let Some(latest) = self.latest_recomputed(id, rev)? {
            return Ok(Some(latest));
        }
        made_with
            .map(|made_with| self.classification_record(made_with, fields))
            .transpose()
    }

    /// The latest `k` row of a revision: the last recomputation's record.
    fn latest_recomputed(
        &self,
        id: Uuid,
        rev: u32,
    ) -> Result<Option<ClassificationRecord>, StoreError> {
        let Some(entry) = self
            .rows(self.tree.scan_prefix(keys::classifications_of(id, rev)))
            .next_back()
        else {
            return Ok(None);
        };
        let (key, row) = entry?;
        rows::decode_classification(&row)
            .map(Some)
            .map_err(Self::corrupt(&key))
    }

    /// The classification record a revision's row holds (record 0), its fields read only to
    /// rebuild the texts of a decision.
    fn classification_made_with(
        &self,
        id: Uuid,
        rev: u32,
    ) -> Result<Option<ClassificationRecord>, StoreError> {
        let Some((key, row)) = self.revision_bytes(id, rev)? else {
            return Ok(None);
        };
        match rows::decode_revision_classification(&row).map_err(Self::corrupt(&key))? {
            None => Ok(None),
            Some(rows::MadeWith::Record(record)) => Ok(Some(record)),
            Some(decision) => {
                let fields = Self::decode_revision_row(&key, &row, false)?.fields;
                self.classification_record(decision, &fields).map(Some)
            }
        }
    }

    /// Whether a revision's row holds a classification (record 0), read without its fields.
    fn has_classification_made_with(&self, id: Uuid, rev: u32) -> Result<bool, StoreError> {
        match self.revision_bytes(id, rev)? {
            None => Ok(false),
            Some((key, row)) => Ok(rows::decode_revision_classification(&row)
                .map_err(Self::corrupt(&key))?
                .is_some()),
        }
    }

    /// Every classification record of a revision, oldest first: the one its row holds, then
    /// the `k` rows (which start at 0 for a revision whose row holds none).
    pub fn classifications(
        &self,
        id: Uuid,
        rev: u32,
    ) -> Result<Vec<ClassificationRecord>, StoreError> {
        let mut out: Vec<_> = self
            .classification_made_with(id, rev)?
            .into_iter()
            .collect();
        for entry in self.rows(self.tree.scan_prefix(keys::classifications_of(id, rev))) {
            let (key, row) = entry?;
            out.push(rows::decode_classification(&row).map_err(Self::corrupt(&key))?);
        }
        Ok(out)
    }

    /// Appends a classification record to each named revision, in one durable write: what a
    /// recomputation after a reference-data correction stores. Revisions, the change log and
    /// devices are untouched.
    pub fn record_classifications(
        &self,
        records: &[(Uuid, u32, ClassificationRecord)],
    ) -> Result<(), StoreError> {
        self.check_healthy()?;
        let mut batch = journaled::JournaledBatch::default();
        for (id, rev, record) in records {
            let next = match self
                .tree
                .scan_prefix(keys::classifications_of(*id, *rev))
                .next_back()
            {
                // Record 0 is the one made with the revision, in its row when it has one.
                None => u32::from(self.has_classification_made_with(*id, *rev)?),
                Some(entry) => {
                    let (key, _) = entry?;
                    let last = keys::u32_at(&key, 21).ok_or_else(|| StoreError::Corrupt {
                        key: keys::show(&key),
                        problem: RowError::Truncated,
                    })?;
                    last.checked_add(1).ok_or_else(|| {
                        StoreError::Inconsistent(format!(
                            "household {id} revision {rev} has no room for another classification"
                        ))
                    })?
                }
            };
            batch.insert(
                keys::classification(*id, *rev, next),
                rows::encode_classification(record),
            );
        }
        self.apply_journaled(batch)?;
        self.flush()
    }

    /// The id of every household in the registry, in id order.
    pub fn household_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut ids: Vec<Uuid> = known_households::places_in(&self.tree)?
            .into_keys()
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Every revision of a household, oldest first.
    pub fn history(&self, id: Uuid) -> Result<Vec<Revision>, StoreError> {
        let mut out = Vec::new();
        for entry in self.rows(self.tree.scan_prefix(keys::revisions_of(id))) {
            let (key, row) = entry?;
            let rev = keys::u32_at(&key, 17).ok_or_else(|| StoreError::Corrupt {
                key: keys::show(&key),
                problem: RowError::Truncated,
            })?;
            let row = Self::decode_revision_row(&key, &row, true)?;
            out.push(self.revision_of(id, rev, row)?);
        }
        // The current revision, where its household row refers to (superseded ones are `r`
        // rows, as every revision is in a format-2 registry).
        if let Some((meta, Some(current))) = self.household_row(id)? {
            let (key, row) = self.current_revision_bytes(id, meta.rev, Some(&current))?;
            let row = Self::decode_revision_row(&key, &row, true)?;
            out.push(self.revision_of(id, meta.rev, row)?);
        }
        Ok(out)
    }

    /// One conflict record.
    pub fn conflict(&self, id: u64) -> Result<Option<ConflictRecord>, StoreError> {
        let key = keys::conflict(id);
        self.get(&key)?
            .map(|row| rows::decode_conflict(id, &row).map_err(Self::corrupt(&key)))
            .transpose()
    }

    /// Conflict records, open and resolved, oldest first: of one household, or of all.
    pub fn conflicts(&self, household: Option<Uuid>) -> Result<Vec<ConflictRecord>, StoreError> {
        let mut out = Vec::new();
        match household {
            Some(household) => {
                for entry in self.tree.scan_prefix(keys::conflicts_of(household)) {
                    let (key, _) = entry?;
                    let id = keys::u64_at(&key, 17).ok_or_else(|| StoreError::Corrupt {
                        key: keys::show(&key),
                        problem: RowError::Truncated,
                    })?;
                    let record = self.conflict(id)?.ok_or_else(|| {
                        StoreError::Inconsistent(format!(
                            "household {household} lists conflict {id}, which is missing"
                        ))
                    })?;
                    out.push(record);
                }
            }
            None => {
                for entry in self.rows(self.tree.scan_prefix([keys::CONFLICT])) {
                    let (key, row) = entry?;
                    let id = keys::u64_at(&key, 1).ok_or_else(|| StoreError::Corrupt {
                        key: keys::show(&key),
                        problem: RowError::Truncated,
                    })?;
                    out.push(rows::decode_conflict(id, &row).map_err(Self::corrupt(&key))?);
                }
            }
        }
        Ok(out)
    }

    /// Every rejected mutation, by device and then seq.
    pub fn rejected(&self) -> Result<Vec<RejectedMutation>, StoreError> {
        let mut out = Vec::new();
        for entry in self.rows(self.tree.scan_prefix([keys::REJECTED])) {
            let (key, row) = entry?;
            let device_id = keys::uuid_at(&key, 1).ok_or_else(|| StoreError::Corrupt {
                key: keys::show(&key),
                problem: RowError::Truncated,
            })?;
            let (mutation, reason, at_ms) =
                rows::decode_rejected(&row).map_err(Self::corrupt(&key))?;
            out.push(RejectedMutation {
                device_id,
                mutation,
                reason,
                at_ms,
            });
        }
        Ok(out)
    }

    pub fn household_count(&self) -> Result<u64, StoreError> {
        self.counter(keys::HOUSEHOLDS)
    }

    /// The last change-log seq; 0 for an empty registry.
    pub fn head_seq(&self) -> Result<u64, StoreError> {
        self.counter(keys::HEAD_SEQ)
    }

    /// The last conflict id handed out; 0 before the first conflict.
    pub fn last_conflict_id(&self) -> Result<u64, StoreError> {
        self.counter(keys::LAST_CONFLICT)
    }

    /// The device's last applied mutation seq; 0 for a device never seen.
    pub fn device_last_seq(&self, device: Uuid) -> Result<u64, StoreError> {
        self.counter(&keys::device(device))
    }

    /// The stored outcome of one of a device's mutations.
    pub fn outcome(&self, device: Uuid, seq: u64) -> Result<Option<MutationOutcome>, StoreError> {
        let first = self.outcomes(device, seq, 1)?.into_iter().next();
        Ok(first.filter(|outcome| outcome.seq == seq))
    }

    /// A device's stored outcomes from mutation seq `from` on, at most `max`, ascending.
    pub fn outcomes(
        &self,
        device: Uuid,
        from: u64,
        max: usize,
    ) -> Result<Vec<MutationOutcome>, StoreError> {
        // Outcomes are stored in runs keyed by their first seq: the run holding `from` starts
        // at or before it.
        let start = self.run_holding(keys::outcome(device, 0), keys::outcome(device, from))?;
        let mut out = Vec::new();
        let scan = self.tree.range(start..=keys::outcome(device, u64::MAX));
        for entry in self.rows(scan) {
            let (key, row) = entry?;
            for outcome in rows::decode_outcomes(&row).map_err(Self::corrupt(&key))? {
                if out.len() == max {
                    return Ok(out);
                }
                if outcome.seq >= from {
                    out.push(outcome);
                }
            }
        }
        Ok(out)
    }

    /// The key of the run that holds `key`, for keys whose rows hold runs from the one named
    /// by the key on: the last key from `lowest` up to `key`, or `key` itself when there is
    /// none.
    fn run_holding(&self, lowest: Vec<u8>, key: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match self.tree.range(lowest..=key.clone()).next_back() {
            Some(entry) => Ok(entry?.0.to_vec()),
            None => Ok(key),
        }
    }

    /// At most `limit` change-log entries after `cursor`, in seq order.
    pub fn changes_after(&self, cursor: u64, limit: usize) -> Result<ChangePage, StoreError> {
        let Some(from) = cursor.checked_add(1) else {
            return Ok(ChangePage {
                entries: Vec::new(),
                more: false,
            });
        };
        // The log is stored in runs of consecutive seqs keyed by their first seq.
        let start = self.run_holding(keys::change(0), keys::change(from))?;
        let mut entries = Vec::with_capacity(limit.min(4_096));
        for entry in self.tree.range(start..=keys::change(u64::MAX)) {
            let (key, value) = entry?;
            let first = keys::u64_at(&key, 1).ok_or_else(|| StoreError::Corrupt {
                key: keys::show(&key),
                problem: RowError::Truncated,
            })?;
            let households = rows::decode_uuid_run(&value).map_err(Self::corrupt(&key))?;
            for (offset, household) in households.into_iter().enumerate() {
                let seq = first.checked_add(offset as u64).ok_or_else(|| {
                    StoreError::Inconsistent(format!(
                        "the change-log run at seq {first} runs past the last seq"
                    ))
                })?;
                if seq < from {
                    continue;
                }
                if entries.len() == limit {
                    return Ok(ChangePage {
                        entries,
                        more: true,
                    });
                }
                entries.push((seq, household));
            }
        }
        Ok(ChangePage {
            entries,
            more: false,
        })
    }

    /// Writes a commit atomically without waiting for the flush, and returns its ticket:
    /// nothing it wrote may be acknowledged before [`Registry::make_durable`] of that ticket
    /// returns.
    pub(crate) fn commit_pending(&self, commit: Commit) -> Result<u64, StoreError> {
        self.check_healthy()?;
        // A revision keeps its classification as a decision whose texts are rebuilt with the
        // reference data it names: that data must be kept first (`references`).
        let mut checked: Option<&str> = None;
        for (id, revision) in &commit.revisions {
            let Some(record) = &revision.revision().classification else {
                continue;
            };
            if checked != Some(record.reference.as_str()) {
                if !self.keeps_reference(&record.reference) {
                    return Err(StoreError::Inconsistent(format!(
                        "household {id} was classified with reference data {} that the registry does not keep: keep it first (Registry::keep_reference)",
                        record.reference
                    )));
                }
                checked = Some(record.reference.as_str());
            }
        }
        let mut batch = journaled::JournaledBatch::default();
        // A household's current revision goes to the journal only, and its household row
        // refers to it there; a revision superseded within this commit is an `r` row. Either
        // row holds the revision's first classification record too.
        let current_revs: FxHashMap<Uuid, u32> = commit
            .households
            .iter()
            .map(|household| (household.id, household.rev))
            .collect();
        let mut current_writes: FxHashMap<Uuid, usize> =
            FxHashMap::with_capacity_and_hasher(commit.revisions.len(), Default::default());
        for (id, revision) in commit.revisions {
            let rev = revision.revision().rev;
            let row = revision.into_row();
            if current_revs.get(&id) == Some(&rev) {
                let write = batch.insert(keys::current_revision(id, rev), row);
                current_writes.insert(id, write);
            } else {
                batch.insert(keys::revision(id, rev), row);
            }
        }
        // A household whose first revision this commit writes is new.
        let is_created = |household: &StoredHousehold| {
            household.rev == 1 && current_writes.contains_key(&household.id)
        };
        // The run of the households this commit creates, keyed by the change seq of the first
        // (a seq names one change of one household, so no other run has it), and the
        // references its rows hold: where in the run, and to which write.
        let created_count = commit.households.iter().filter(|h| is_created(h)).count();
        let run_key = (commit.households.iter())
            .find(|h| is_created(h))
            .map(|first| keys::new_households(first.last_seq));
        let mut new_run = rows::NewHouseholdsRun::with_capacity(created_count);
        let mut run_references: Vec<(usize, usize)> = Vec::with_capacity(created_count);
        for household in &commit.households {
            let key = keys::household(household.id);
            // What the household row refers to now, if anything (a format-2 row refers to
            // nothing: its current revision is an `r` row already). A new household has no
            // row to read.
            let created = is_created(household);
            let before = if created {
                None
            } else {
                self.household_row(household.id)?
                    .and_then(|(meta, current)| current.map(|reference| (meta.rev, reference)))
            };
            match current_writes.get(&household.id) {
                Some(&write) => {
                    // A new current revision: the one it supersedes moves to an `r` row,
                    // still referring to where it lies.
                    if let Some((rev, reference)) = before {
                        batch.insert(keys::revision(household.id, rev), reference.to_vec());
                    }
                    let placeholder = [0u8; in_journal::REFERENCE_LEN];
                    let row = rows::encode_household(&household.meta(), Some(&placeholder));
                    let at = row.len() - placeholder.len();
                    // A household created here joins the commit's run (one sled entry for
                    // them all); a row too long for a run's entry is written on its own.
                    let in_run = if created {
                        new_run.push(household.id, &row)
                    } else {
                        None
                    };
                    match in_run {
                        Some(row_at) => run_references.push((row_at + at, write)),
                        None => batch.insert_referring(key, row, at, write),
                    }
                }
                None => {
                    // The same revision: the row keeps referring to it.
                    if let Some((rev, _)) = before.filter(|(rev, _)| *rev != household.rev) {
                        return Err(StoreError::Inconsistent(format!(
                            "household {} moves from revision {rev} to {} without the revision",
                            household.id, household.rev
                        )));
                    }
                    let current = before.map(|(_, reference)| reference);
                    batch.insert(
                        key,
                        rows::encode_household(&household.meta(), current.as_ref()),
                    );
                }
            }
        }
        if let (Some(run_key), false) = (run_key, new_run.is_empty()) {
            let index = batch.insert(run_key, new_run.finish());
            for (at, write) in run_references {
                batch.refer(index, at, write);
            }
            batch.insert(keys::LAYOUT, &rows::encode_u64(LAYOUT)[..]);
        }
        // One row for each run of consecutive seqs (a push's changes are one run).
        for run in commit
            .changes
            .chunk_by(|a, b| Some(b.0) == a.0.checked_add(1))
        {
            batch.insert(
                keys::change(run[0].0),
                rows::encode_uuid_run(run.iter().map(|(_, id)| *id)),
            );
        }
        for record in &commit.conflicts {
            batch.insert(keys::conflict(record.id), rows::encode_conflict(record));
            batch.insert(
                keys::conflict_by_household(record.household_id, record.id),
                &[][..],
            );
        }
        for rejected in &commit.rejected {
            batch.insert(
                keys::rejected(rejected.device_id, rejected.mutation.seq),
                rows::encode_rejected(&rejected.mutation, &rejected.reason, rejected.at_ms),
            );
        }
        // One row for each run of a device's consecutive mutations (a push is one run).
        let outcome_runs = commit.outcomes.chunk_by(|(a_device, a), (b_device, b)| {
            a_device == b_device && Some(b.seq) == a.seq.checked_add(1)
        });
        for run in outcome_runs {
            let (device, first) = &run[0];
            let outcomes: Vec<&MutationOutcome> = run.iter().map(|(_, outcome)| outcome).collect();
            batch.insert(
                keys::outcome(*device, first.seq),
                rows::encode_outcomes(&outcomes),
            );
        }
        for (device, seq) in &commit.device_last {
            batch.insert(keys::device(*device), &rows::encode_u64(*seq)[..]);
        }
        batch.insert(keys::HEAD_SEQ, &rows::encode_u64(commit.head_seq)[..]);
        batch.insert(
            keys::LAST_CONFLICT,
            &rows::encode_u64(commit.last_conflict)[..],
        );
        batch.insert(
            keys::HOUSEHOLDS,
            &rows::encode_u64(commit.household_count)[..],
        );

        self.apply_journaled(batch)?;
        Ok(self.applied.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// The ticket of the last batch applied: making it durable makes everything written so
    /// far durable.
    pub(crate) fn applied_ticket(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Returns once the batch with `ticket` and every batch before it are durable: one flush
    /// at a time, and a caller whose batch an earlier flush covered returns without flushing
    /// (group commit: one flush for every push that arrived while the last one ran).
    pub(crate) fn make_durable(&self, ticket: u64) -> Result<(), StoreError> {
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _one_at_a_time = self
            .flushing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        self.check_healthy()?;
        self.flush()
    }

    /// Makes every write so far durable. A failure marks the registry failed.
    pub fn flush(&self) -> Result<(), StoreError> {
        // Every batch applied before the flush begins is durable when it ends.
        let covered = self.applied.load(Ordering::SeqCst);
        // `flush_async` deadlocks under concurrency in sled 0.34: the blocking flush is the
        // only one used.
        match self.db.flush() {
            Ok(_) => {
                self.durable.fetch_max(covered, Ordering::SeqCst);
                Ok(())
            }
            Err(error) => {
                self.fail("flushing", &error);
                Err(StoreError::Flush(error))
            }
        }
    }

    fn fail(&self, doing: &str, error: &sled::Error) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            tracing::error!(
                %error,
                "{doing} the registry failed; sync is refused until the server restarts"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::sync::Outcome;

    fn outcome(seq: u64) -> MutationOutcome {
        MutationOutcome {
            seq,
            household_id: Uuid::from_u128(u128::from(seq)),
            outcome: Outcome::Applied { rev: 1 },
        }
    }

    /// The change log and outcomes read the same from runs, from rows of one (as earlier builds
    /// wrote them) and from a mix, at every cursor and limit.
    #[test]
    fn runs_read_like_one_row_an_entry_at_every_cursor_and_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(dir.path()).expect("open");
        let (device, other) = (Uuid::from_u128(7), Uuid::from_u128(8));
        // Seqs 1–3 and 6 as earlier builds wrote them, a row each.
        for seq in [1u64, 2, 3, 6] {
            let id = Uuid::from_u128(u128::from(100 + seq));
            registry
                .tree
                .insert(keys::change(seq), &id.into_bytes()[..])
                .expect("insert");
            let mut row = vec![rows::FORMAT_PACKED];
            let value = protocol::codec::packed::pack(&protocol::codec::encode(&outcome(seq)));
            row.extend_from_slice(&(value.len() as u32).to_be_bytes());
            row.extend_from_slice(&value);
            registry
                .tree
                .insert(keys::outcome(device, seq), row)
                .expect("insert");
        }
        // Seqs 4–5 and 7–11 in two commits; one of them also holds another device's outcome
        // and a run broken by a gap.
        let commit = |changes: Vec<u64>, outcomes: Vec<(Uuid, u64)>| Commit {
            changes: changes
                .into_iter()
                .map(|seq| (seq, Uuid::from_u128(u128::from(100 + seq))))
                .collect(),
            outcomes: outcomes
                .into_iter()
                .map(|(device, seq)| (device, outcome(seq)))
                .collect(),
            ..Commit::default()
        };
        registry
            .commit_pending(commit(vec![4, 5], vec![(device, 4), (device, 5)]))
            .expect("commit");
        registry
            .commit_pending(commit(
                vec![7, 8, 9, 10, 11],
                vec![
                    (device, 7),
                    (device, 8),
                    (other, 1),
                    (device, 9),
                    (device, 11),
                ],
            ))
            .expect("commit");
        registry.flush().expect("flush");

        let all: Vec<(u64, Uuid)> = (1..=11)
            .map(|seq| (seq, Uuid::from_u128(u128::from(100 + seq))))
            .collect();
        for cursor in 0..=12u64 {
            for limit in 0..=12usize {
                let after: Vec<_> = all
                    .iter()
                    .filter(|(seq, _)| *seq > cursor)
                    .copied()
                    .collect();
                let page = registry.changes_after(cursor, limit).expect("page");
                assert_eq!(
                    page.entries,
                    after[..limit.min(after.len())],
                    "{cursor} {limit}"
                );
                assert_eq!(page.more, after.len() > limit, "{cursor} {limit}");
            }
        }
        let stored = [1u64, 2, 3, 4, 5, 6, 7, 8, 9, 11];
        for from in 0..=12u64 {
            for max in 0..=12usize {
                let expected: Vec<_> = stored
                    .iter()
                    .filter(|seq| **seq >= from)
                    .take(max)
                    .map(|seq| outcome(*seq))
                    .collect();
                assert_eq!(
                    registry.outcomes(device, from, max).expect("outcomes"),
                    expected,
                    "{from} {max}"
                );
            }
            assert_eq!(
                registry.outcome(device, from).expect("outcome"),
                stored.contains(&from).then(|| outcome(from)),
                "{from}"
            );
        }
        assert_eq!(
            registry.outcomes(other, 0, 10).expect("outcomes"),
            vec![outcome(1)]
        );
        assert_eq!(registry.outcome(other, 2).expect("outcome"), None);
    }

    fn classification_record(at_ms: i64) -> ClassificationRecord {
        ClassificationRecord {
            classification: Classification {
                standard_id: None,
                reference_date: protocol::household::Date::new(2026, 1, 1).expect("a date"),
                class: protocol::classify::PovertyClass::CannotClassify {
                    missing: vec![format!("thu nhập / income {at_ms}")],
                },
                deprivations: Vec::new(),
                not_assessed: Vec::new(),
                score_a: None,
                b1_table_id: None,
                score_b: 0,
                income_mode: None,
                rural_or_urban: None,
                decided_by: "kiểm tra / test".into(),
            },
            at_ms,
            reference: "fingerprint".into(),
        }
    }

    /// A revision's first classification record is in its row; one stored in a `k` row of its
    /// own (as format 2 did) reads the same, and recomputations number on from either.
    #[test]
    fn the_first_classification_reads_from_the_revision_row_or_a_row_of_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(dir.path()).expect("open");
        let (in_row, own_row) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let revision = |classification| rows::RevisionRow {
            fields: FieldMap::new(),
            device_id: Uuid::from_u128(9),
            mutation_seq: 1,
            at_ms: 0,
            why: RevisionCause::Create,
            classification,
        };
        let mut batch = journaled::JournaledBatch::default();
        batch.insert(
            keys::revision(in_row, 1),
            rows::encode_revision(&revision(Some(rows::MadeWith::Record(
                classification_record(10),
            )))),
        );
        // Format 2: the revision row without the record, the record under `k` number 0.
        let mut old = rows::encode_revision(&revision(None));
        old.pop();
        old[0] = rows::FORMAT_PACKED;
        batch.insert(keys::revision(own_row, 1), old);
        batch.insert(
            keys::classification(own_row, 1, 0),
            rows::encode_classification(&classification_record(20)),
        );
        registry.apply_journaled(batch).expect("write");

        for (id, first) in [(in_row, 10), (own_row, 20)] {
            assert_eq!(
                registry.classifications(id, 1).expect("read"),
                vec![classification_record(first)]
            );
            assert_eq!(
                registry.classification(id, 1).expect("read"),
                Some(classification_record(first))
            );
            let stored = registry.revision(id, 1).expect("read").expect("there");
            assert_eq!(stored.classification, Some(classification_record(first)));
            registry
                .record_classifications(&[(id, 1, classification_record(first + 1))])
                .expect("recompute");
            assert_eq!(
                registry.classifications(id, 1).expect("read"),
                vec![
                    classification_record(first),
                    classification_record(first + 1)
                ]
            );
            assert_eq!(
                registry.classification(id, 1).expect("read"),
                Some(classification_record(first + 1))
            );
            assert!(registry
                .tree
                .get(keys::classification(id, 1, 1))
                .expect("read")
                .is_some());
        }
    }

    /// The reference data the merge engine would classify with, parsed once.
    fn embedded_reference() -> std::sync::Arc<protocol::reference::ReferenceData> {
        static REFERENCE: std::sync::OnceLock<std::sync::Arc<protocol::reference::ReferenceData>> =
            std::sync::OnceLock::new();
        std::sync::Arc::clone(REFERENCE.get_or_init(|| {
            std::sync::Arc::new(
                protocol::reference::ReferenceData::embedded().expect("embedded reference"),
            )
        }))
    }

    /// A registry that keeps the embedded reference data, as `AppState` opens one: the
    /// revisions of these tests are classified with it.
    fn open_keeping(dir: &Path) -> Registry {
        let registry = Registry::open(dir).expect("open");
        registry
            .keep_reference(&embedded_reference())
            .expect("keep the reference data");
        registry
    }

    /// A household of two at address number `n` (`rows`' household of two).
    fn household_numbered(n: u32) -> Household {
        Household {
            address: format!("Số {n}, thôn Đông"),
            ..rows::tests::two_member_household()
        }
    }

    /// Revision `rev` of a household, classified with the embedded reference data as the merge
    /// engine classifies (its row keeps the decision; a read rebuilds the rest).
    fn revision_numbered(rev: u32) -> Revision {
        let household = household_numbered(rev);
        let reference = embedded_reference();
        Revision {
            rev,
            fields: protocol::fields::flatten(&household),
            device_id: Uuid::from_u128(9),
            mutation_seq: u64::from(rev),
            at_ms: i64::from(rev),
            why: RevisionCause::Mutation,
            classification: Some(ClassificationRecord {
                classification: reference.classify(&household),
                at_ms: i64::from(rev),
                reference: reference.fingerprint().to_string(),
            }),
        }
    }

    fn stored_at(id: Uuid, rev: u32, seq: u64) -> StoredHousehold {
        StoredHousehold {
            id,
            rev,
            fields: revision_numbered(rev).fields,
            review: ReviewState::Submitted,
            open_conflicts: Vec::new(),
            created_by: Uuid::from_u128(9),
            last_seq: seq,
            classification: None,
        }
    }

    /// One commit: the household at `rev` with the revisions `made` (the last of them `rev`,
    /// or none for a change of its row alone).
    fn commit_revisions(registry: &Registry, id: Uuid, rev: u32, made: &[u32], seq: u64) {
        let commit = Commit {
            households: vec![stored_at(id, rev, seq)],
            revisions: made
                .iter()
                .map(|rev| (id, NewRevision::new(revision_numbered(*rev))))
                .collect(),
            changes: vec![(seq, id)],
            head_seq: seq,
            ..Commit::default()
        };
        registry.commit_pending(commit).expect("commit");
    }

    /// A household's current revision is not an entry of sled: its row refers to where the
    /// revision lies in the journal, until a later revision supersedes it and the reference
    /// moves to an `r` row. Every reader finds every revision, before and after a reopen and a
    /// rebuild, in registries of this layout and of format 2.
    #[test]
    fn the_current_revision_is_referred_to_by_its_household_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = open_keeping(dir.path());
        let id = Uuid::from_u128(1);
        let check = |registry: &Registry, revs: u32| {
            let history = registry.history(id).expect("history");
            assert_eq!(
                history,
                (1..=revs).map(revision_numbered).collect::<Vec<_>>(),
                "history"
            );
            for rev in 1..=revs {
                assert_eq!(
                    registry.revision(id, rev).expect("read"),
                    Some(revision_numbered(rev))
                );
                assert_eq!(
                    registry.revision_author(id, rev).expect("read"),
                    Some(Uuid::from_u128(9))
                );
            }
            assert_eq!(registry.revision(id, revs + 1).expect("read"), None);
            let stored = registry.household(id).expect("read").expect("there");
            assert_eq!(
                (stored.rev, &stored.fields),
                (revs, &revision_numbered(revs).fields)
            );
            let pulled = registry
                .pulled_household(id, stored.last_seq)
                .expect("read")
                .expect("current");
            assert_eq!(
                pulled.fields,
                EncodedFields::encode(&revision_numbered(revs).fields)
            );
        };

        commit_revisions(&registry, id, 1, &[1], 1);
        assert!(registry
            .tree
            .scan_prefix(keys::revisions_of(id))
            .next()
            .is_none());
        check(&registry, 1);
        // Two revisions in one commit: the first is superseded at once.
        commit_revisions(&registry, id, 3, &[2, 3], 2);
        check(&registry, 3);
        let superseded: Vec<_> = registry
            .tree
            .scan_prefix(keys::revisions_of(id))
            .map(|entry| entry.expect("read").1.len())
            .collect();
        assert_eq!(superseded, vec![in_journal::REFERENCE_LEN; 2]);
        // A change of the household row alone keeps the reference.
        commit_revisions(&registry, id, 3, &[], 3);
        check(&registry, 3);
        registry.flush().expect("flush");
        let digest = registry.digest().expect("digest");
        drop(registry);

        let registry = super::journaled::tests::open(dir.path()).expect("reopen");
        check(&registry, 3);
        drop(registry);
        let out = tempfile::tempdir().expect("temp dir");
        let rebuilt = rebuild(dir.path(), out.path()).expect("rebuild");
        assert_eq!(rebuilt.digest, digest);
        let registry = super::journaled::tests::open(out.path()).expect("open rebuilt");
        check(&registry, 3);

        // A household as format 2 stored it: every revision an `r` row, the household row
        // referring to none. A new revision moves it to this layout; the old rows stay.
        let old = Uuid::from_u128(2);
        let mut batch = journaled::JournaledBatch::default();
        for rev in 1..=2 {
            batch.insert(
                keys::revision(old, rev),
                rows::encode_new_revision(&revision_numbered(rev), None),
            );
        }
        let mut row = rows::encode_household(&stored_at(old, 2, 10).meta(), None);
        row.pop();
        row[0] = rows::FORMAT_PACKED;
        batch.insert(keys::household(old), row);
        registry.apply_journaled(batch).expect("write");
        let id = old;
        let check_old = |registry: &Registry, revs: u32| {
            let history = registry.history(id).expect("history");
            assert_eq!(
                history,
                (1..=revs).map(revision_numbered).collect::<Vec<_>>()
            );
            let stored = registry.household(id).expect("read").expect("there");
            assert_eq!(stored.rev, revs);
        };
        check_old(&registry, 2);
        commit_revisions(&registry, id, 2, &[], 11);
        check_old(&registry, 2);
        commit_revisions(&registry, id, 3, &[3], 12);
        check_old(&registry, 3);
        commit_revisions(&registry, id, 4, &[4], 13);
        check_old(&registry, 4);
    }

    /// A revision's classification is kept as its decision. It reads back whole when its
    /// record, classified again with the reference data it names, decides the same (the
    /// tests above read every revision so); otherwise the decision stands and its texts say why
    /// its reasons are missing. A commit classified with reference data the registry does
    /// not keep is refused, and writes nothing.
    #[test]
    fn a_decision_reads_back_whole_or_says_why_its_reasons_are_missing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = open_keeping(dir.path());
        let id = Uuid::from_u128(1);
        let whole = revision_numbered(1)
            .classification
            .expect("classified")
            .classification;
        let mut unknown = revision_numbered(1);
        if let Some(record) = unknown.classification.as_mut() {
            record.reference = "00000000deadbeef".into();
        }
        let commit = Commit {
            households: vec![stored_at(id, 1, 1)],
            revisions: vec![(id, NewRevision::new(unknown.clone()))],
            changes: vec![(1, id)],
            head_seq: 1,
            household_count: 1,
            ..Commit::default()
        };
        let refused = registry.commit_pending(commit).expect_err("refused");
        assert!(
            refused.to_string().contains("00000000deadbeef"),
            "{refused}"
        );
        assert_eq!(registry.household(id).expect("read"), None);
        assert!(registry.is_healthy());

        // Rows written around the check: one names reference data that is not kept, one holds
        // a decision that classifying the record now does not make.
        let mut changed = revision_numbered(2);
        if let Some(record) = changed.classification.as_mut() {
            record.classification.score_b += 10;
        }
        let mut batch = journaled::JournaledBatch::default();
        batch.insert(
            keys::revision(id, 1),
            rows::encode_new_revision(&unknown, None),
        );
        batch.insert(
            keys::revision(id, 2),
            rows::encode_new_revision(&changed, None),
        );
        registry.apply_journaled(batch).expect("write");
        let read = |rev| {
            registry
                .revision(id, rev)
                .expect("read")
                .expect("there")
                .classification
                .expect("classified")
        };
        let not_kept = read(1);
        assert_eq!(not_kept.reference, "00000000deadbeef");
        let reasons_missing = |classification: &Classification, why: &str| {
            assert!(
                classification.decided_by.contains(why),
                "{}",
                classification.decided_by
            );
            for deprivation in &classification.deprivations {
                assert!(deprivation.reason.contains(why), "{}", deprivation.reason);
            }
        };
        reasons_missing(&not_kept.classification, "is not kept");
        let decision = |c: &Classification| {
            (
                c.class.label_en(),
                c.deprivations
                    .iter()
                    .map(|d| (d.indicator, d.members.clone()))
                    .collect::<Vec<_>>(),
                c.score_b,
                c.standard_id.clone(),
            )
        };
        assert_eq!(decision(&not_kept.classification), decision(&whole));
        assert!(!whole.deprivations.is_empty());

        let differs = read(2);
        reasons_missing(&differs.classification, "classifies the record differently");
        assert_eq!(differs.classification.score_b, whole.score_b + 10);
        assert_eq!(
            registry.classifications(id, 2).expect("read"),
            vec![differs.clone()]
        );
        assert_eq!(registry.classification(id, 2).expect("read"), Some(differs));
    }

    /// The households a commit creates share one sled entry, an `n` run of their rows, and each
    /// is read from it until it changes and gets an `h` row of its own, which wins. Where each
    /// row is survives a reopen and a rebuild, and a registry a later layout was written to is
    /// refused at open.
    #[test]
    fn households_created_together_share_one_run_until_each_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = open_keeping(dir.path());
        let ids: Vec<Uuid> = (1..=5).map(Uuid::from_u128).collect();
        let seqs = 1..=ids.len() as u64;
        let commit = Commit {
            households: ids
                .iter()
                .zip(seqs.clone())
                .map(|(id, seq)| stored_at(*id, 1, seq))
                .collect(),
            revisions: ids
                .iter()
                .map(|id| (*id, NewRevision::new(revision_numbered(1))))
                .collect(),
            changes: seqs.clone().zip(ids.iter().copied()).collect(),
            head_seq: 5,
            household_count: 5,
            ..Commit::default()
        };
        registry.commit_pending(commit).expect("commit");
        let entries = |registry: &Registry, prefix: u8| registry.tree.scan_prefix([prefix]).count();
        assert_eq!(entries(&registry, keys::HOUSEHOLD), 0);
        assert_eq!(entries(&registry, keys::NEW_HOUSEHOLDS), 1);
        let check = |registry: &Registry, revs: [u32; 5]| {
            assert_eq!(registry.household_ids().expect("ids"), ids);
            for (id, rev) in ids.iter().zip(revs) {
                let stored = registry.household(*id).expect("read").expect("there");
                assert_eq!(
                    (stored.rev, &stored.fields),
                    (rev, &revision_numbered(rev).fields)
                );
                let history = registry.history(*id).expect("history");
                assert_eq!(
                    history,
                    (1..=rev).map(revision_numbered).collect::<Vec<_>>()
                );
            }
            assert_eq!(registry.household(Uuid::from_u128(99)).expect("read"), None);
        };
        check(&registry, [1; 5]);
        // The third changes: its own row wins over its entry, which stays as it was.
        commit_revisions(&registry, ids[2], 2, &[2], 6);
        assert_eq!(entries(&registry, keys::HOUSEHOLD), 1);
        assert_eq!(entries(&registry, keys::NEW_HOUSEHOLDS), 1);
        check(&registry, [1, 1, 2, 1, 1]);
        registry.flush().expect("flush");
        let digest = registry.digest().expect("digest");
        drop(registry);

        let registry = super::journaled::tests::open(dir.path()).expect("reopen");
        check(&registry, [1, 1, 2, 1, 1]);
        assert_eq!(registry.digest().expect("digest"), digest);
        drop(registry);
        let out = tempfile::tempdir().expect("temp dir");
        let rebuilt = rebuild(dir.path(), out.path()).expect("rebuild");
        assert_eq!(rebuilt.digest, digest);
        let registry = super::journaled::tests::open(out.path()).expect("open rebuilt");
        check(&registry, [1, 1, 2, 1, 1]);

        // A layout this build does not know: refused, whatever else the registry holds.
        registry
            .tree
            .insert(keys::LAYOUT, &rows::encode_u64(LAYOUT + 1)[..])
            .expect("write");
        registry.flush().expect("flush");
        drop(registry);
        let refused = super::journaled::tests::open(out.path()).expect_err("a later layout");
        assert!(refused.to_string().contains("later build"), "{refused}");
    }
}
