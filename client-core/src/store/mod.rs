//! The offline store: households, the outbox, outcomes, the cursor, the device's identity.
//!
//! A sled tree holds everything but the outbox, under one-byte key prefixes, integers
//! big-endian so that key order is numeric order; the outbox has a tree of its own
//! ([`outbox`]), so that a push's reply clears its entries with one mark instead of removing
//! them one by one:
//!
//! | key | value |
//! |---|---|
//! | `M` + name | meta: `layout`, `device_id`, `server_url`, `next_seq`, `cursor`, `user`, `device_token`, `scope`, `outbox_cleared`, `outbox_generation` |
//! | `H` + household id (16 bytes) | the household: server copy, view, review, flags, rejection |
//! | `O` + mutation seq (u64) | the outbox (in its own tree): a pending `protocol::sync::Mutation` |
//! | `W` + mutation seq (u64) | a mutation acknowledged without its outcome, kept until it arrives |
//! | `C` + conflict id (u64) | a conflict the server reported, until a supervisor resolves it |
//! | `R` + mutation seq (u64) | a rejection, with the rejected mutation |
//! | `S` + household id (16 bytes) | a household kept although it left the user's areas |
//! | `A` + highest seq (u64) | a push reply's applied and merged outcomes, until folded into the household rows |
//! | `F` | the server's reference data texts, once fetched |
//!
//! Every write goes through one transaction helper: under the store's write lock it reads what
//! it needs, stages its writes, applies them as one `apply_batch` (one transaction over both
//! trees when it writes outbox entries) and flushes. A write returns only after the flush, so whatever a
//! caller was told is saved survives a crash. `flush_async` is never used: it deadlocks under
//! concurrency on sled 0.34.
//!
//! # Saves
//! A save (create, edit, void, unvoid) turns the new record into fields and appends a
//! [`Mutation`] whose changes lead from the server's last revision (or from nothing, for a
//! household the server has not sent yet) to the new view: cumulative, so that it never
//! depends on an outcome the device has not seen. Survey-rule problems never stop a save: they
//! come back as warnings in the [`SaveReceipt`].
//!
//! Two details keep an undone change from coming back:
//! - the changes also repeat, at their current value, the fields that this device's
//!   unconfirmed mutations of the household changed (`HouseholdRow::touched`), so a field set
//!   back to its base value, or a member added and removed again, is sent as such;
//! - earlier outbox entries of the household (all but the one that creates it) are rewritten
//!   to carry the same changes as the new one. Seqs stay gap-free, and an entry the server has
//!   already applied is a replay whose new content the server ignores; so the server never
//!   applies a state the enumerator has since corrected.

mod access;
mod acknowledged;
mod effects;
mod export;
mod keys;
mod outbox;
mod reference;
mod rows;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::fields::{self, FieldChange, FieldMap};
use protocol::household::{Household, VoidMark};
use protocol::merge::ConflictField;
use protocol::sync::{Base, Mutation, ReviewState, MAX_CHANGES_PER_MUTATION};
use protocol::validate;
use uuid::Uuid;

pub use access::Enrolment;
#[cfg(test)]
use effects::KeepAccepted;
pub(crate) use effects::Recorded;
pub use export::ExportError;
use rows::{ConflictRow, HouseholdMetaRow, HouseholdRow, RejectionRow, Unconfirmed};

/// The layout of the store this build writes; a store with another layout is refused.
/// Layout 2 adds the `A` rows, which an older build would not settle into its households.
/// Layout 3 keeps the outbox in a tree of its own (see [`outbox`]), which an older build would
/// not read.
const LAYOUT_VERSION: u64 = 3;
/// The layout before the outbox's own tree: opening moves its entries there.
const LAYOUT_BEFORE_OUTBOX_TREE: u64 = 2;
/// The layout before `A` rows: the same rows without them, so taken up as it is.
const LAYOUT_BEFORE_ACKNOWLEDGED: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("không mở được kho dữ liệu tại {path} / cannot open the data store at {path}: {source}. Check the folder exists and is writable, and that no other `ho` is running on it")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("kho dữ liệu tại {path} có định dạng {found}, bản này dùng {LAYOUT_VERSION} / the data store at {path} has layout {found}, this build uses {LAYOUT_VERSION}: update the field app")]
    Layout { path: PathBuf, found: u64 },
    #[error("lỗi đọc/ghi kho dữ liệu / the data store failed to read or write: {0}. Check free space on the device")]
    Io(#[from] sled::Error),
    #[error("không ghi được xuống đĩa / the data store could not flush to disk: {0}. The last change is not saved; check free space and try again")]
    Flush(#[source] sled::Error),
    #[error("dữ liệu hỏng trong kho ({what}) / corrupt {what} row in the data store: {problem}")]
    Corrupt { what: &'static str, problem: String },
    #[error("không tìm thấy hộ {0} / household {0} is not in this store")]
    NotFound(Uuid),
    #[error("bản ghi không lưu được / the record cannot be saved: {0}")]
    Invalid(String),
    #[error("kho đã được thiết lập cho thiết bị {existing} / the store is already set up for device {existing}: a store keeps one device id; use a new folder for another device")]
    OtherDevice { existing: Uuid },
}

/// What a save tells the enumerator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveReceipt {
    pub household_id: Uuid,
    /// The outbox entry the save appended.
    pub mutation_seq: u64,
    /// Survey-rule problems to show: the household is saved anyway, and the server decides.
    pub warnings: Vec<String>,
}

/// A household as the device holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalHousehold {
    pub id: Uuid,
    /// What the enumerator sees: the server's last revision with pending local changes over it.
    pub fields: FieldMap,
    /// The last revision received from the server; `None` for a household not yet synced.
    pub server_rev: Option<u32>,
    /// Local changes wait in the outbox.
    pub pending: bool,
    pub review: ReviewState,
    /// The server holds an open conflict on this household, waiting for a supervisor.
    pub in_conflict: bool,
    /// Why the server rejected the latest change, until a later change is accepted.
    pub rejection: Option<String>,
    /// The household left the user's areas; it stays only until its unsynced changes are
    /// settled by the server.
    pub out_of_scope: bool,
}

impl LocalHousehold {
    /// The view as a survey record.
    pub fn household(&self) -> Result<Household, fields::FieldError> {
        fields::unflatten(&self.fields)
    }

    pub fn is_voided(&self) -> bool {
        self.fields.keys().any(|path| path.starts_with("void."))
    }
}

/// A conflict the server reported: the enumerator's value is kept in the record on the server,
/// waiting for a supervisor to choose.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalConflict {
    pub conflict_id: u64,
    pub household_id: Uuid,
    pub mutation_seq: u64,
    /// The revision the server made while keeping its values for these fields.
    pub rev: u32,
    pub fields: Vec<ConflictField>,
}

/// A mutation the server rejected; the enumerator's data stays on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRejection {
    pub mutation_seq: u64,
    pub household_id: Uuid,
    pub reason: String,
}

/// The device's offline store. Cheap to clone; clones share one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// The outbox's tree and how far it is cleared (see [`outbox`]).
    outbox: outbox::Outbox,
    /// Serialises read-modify-write operations (saves, sync steps) within the process; sled's
    /// own file lock keeps other processes out.
    write: Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No step is left to read the outbox trees turned from.
        self.outbox.drop_retired(&self.db);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in a folder.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // Refuses a store of another layout, and takes up (and marks) one of a layout before.
        let outbox = outbox::Outbox::open(&db, path)?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                outbox,
                write: Mutex::new(()),
            }),
        };
        Ok(store)
    }

    /// Sets the store up against a server. The device id is kept for the life of the store:
    /// setting up again may change the server address but not the id.
    pub fn setup(&self, server_url: &str, device_id: Uuid) -> Result<(), StoreError> {
        let mut txn = self.begin();
        if let Some(existing) = txn.device_id()? {
            if existing != device_id {
                return Err(StoreError::OtherDevice { existing });
            }
        }
        txn.put(
            keys::meta(keys::META_DEVICE_ID),
            device_id.as_bytes().to_vec(),
        );
        txn.put(
            keys::meta(keys::META_SERVER_URL),
            server_url.as_bytes().to_vec(),
        );
        txn.commit()
    }

    pub fn device_id(&self) -> Result<Option<Uuid>, StoreError> {
        self.read().device_id()
    }

    pub fn server_url(&self) -> Result<Option<String>, StoreError> {
        match self.read().get(&keys::meta(keys::META_SERVER_URL))? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt {
                    what: "server_url",
                    problem: "not UTF-8".into(),
                }),
        }
    }

    /// Saves a whole household: a create if the store does not know it, an edit otherwise.
    /// The survey rules, the commune's code included, are checked against the device's
    /// reference data; what they find comes back as warnings.
    pub fn save_household(&self, household: &Household) -> Result<SaveReceipt, StoreError> {
        let view = record_fields(household)?;
        let today = crate::clock::today();
        let (problems, unchecked) = match crate::reference::load(self) {
            Ok(reference) => (
                validate::check_with_areas(household, today, &reference.areas),
                None,
            ),
            Err(error) => (validate::check(household, today), Some(error.to_string())),
        };
        let warnings = problems
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|problem| problem.0)
            .chain(unchecked)
            .collect();
        let mutation_seq = self.save_view(household.id, view)?;
        Ok(SaveReceipt {
            household_id: household.id,
            mutation_seq,
            warnings,
        })
    }

    /// Voids a household (a duplicate, moved away, recorded by mistake). It stays in the store
    /// and in the registry as a tombstone; [`Store::unvoid_household`] undoes it.
    pub fn void_household(&self, id: Uuid, mark: VoidMark) -> Result<SaveReceipt, StoreError> {
        let mut household = self.current_record(id)?;
        household.void = Some(mark);
        self.save_household(&household)
    }

    pub fn unvoid_household(&self, id: Uuid) -> Result<SaveReceipt, StoreError> {
        let mut household = self.current_record(id)?;
        household.void = None;
        self.save_household(&household)
    }

    pub fn household(&self, id: Uuid) -> Result<Option<LocalHousehold>, StoreError> {
        let out_of_scope = self.read().get(&keys::out_of_scope(id))?.is_some();
        Ok(self
            .read()
            .household(id)?
            .map(|row| local_household(id, row, out_of_scope)))
    }

    /// Every household, in id order (creation order for UUIDv7 ids).
    pub fn households(&self) -> Result<Vec<LocalHousehold>, StoreError> {
        let mut out = Vec::new();
        let out_of_scope = self.out_of_scope()?;
        let read = self.read();
        for item in self.inner.db.scan_prefix([keys::HOUSEHOLD]) {
            let (key, value) = item?;
            let id = keys::household_of(&key).ok_or(StoreError::Corrupt {
                what: "household key",
                problem: format!("{} bytes", key.len()),
            })?;
            out.push(local_household(
                id,
                read.settled(HouseholdRow::decode(&value)?)?,
                out_of_scope.contains(&id),
            ));
        }
        Ok(out)
    }

    /// The outbox, in seq order.
    pub fn pending(&self) -> Result<Vec<Mutation>, StoreError> {
        self.read()
            .outbox_range(0, u64::MAX)
            .map(|item| rows::decode_mutation(&item?.1))
            .collect()
    }

    /// Conflicts reported for this device's mutations that the server has not yet resolved.
    pub fn conflicts(&self) -> Result<Vec<LocalConflict>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.db.scan_prefix([keys::CONFLICT]) {
            let (key, value) = item?;
            let row = ConflictRow::decode(&value)?;
            out.push(LocalConflict {
                conflict_id: number_key(&key, "conflict key")?,
                household_id: row.household_id,
                mutation_seq: row.mutation_seq,
                rev: row.rev,
                fields: row.fields,
            });
        }
        Ok(out)
    }

    /// Every rejection the server sent, in mutation order.
    pub fn rejections(&self) -> Result<Vec<LocalRejection>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.db.scan_prefix([keys::REJECTION]) {
            let (key, value) = item?;
            let row = RejectionRow::decode(&value)?;
            out.push(LocalRejection {
                mutation_seq: number_key(&key, "rejection key")?,
                household_id: row.household_id,
                reason: row.reason,
            });
        }
        Ok(out)
    }

    /// The mutation a rejection refers to, with everything the enumerator had typed.
    pub fn rejected_mutation(&self, mutation_seq: u64) -> Result<Option<Mutation>, StoreError> {
        match self.read().get(&keys::rejection(mutation_seq))? {
            None => Ok(None),
            Some(bytes) => Ok(RejectionRow::decode(&bytes)?.mutation),
        }
    }

    /// The last registry seq received: where the next pull starts.
    pub fn cursor(&self) -> Result<u64, StoreError> {
        Ok(self.read().meta_u64(keys::META_CURSOR)?.unwrap_or(0))
    }

    /// The record as the enumerator sees it, for an edit.
    fn current_record(&self, id: Uuid) -> Result<Household, StoreError> {
        let row = self.read().household(id)?.ok_or(StoreError::NotFound(id))?;
        fields::unflatten(row.view()).map_err(|error| {
            StoreError::Invalid(format!(
                "bản ghi hiện tại của hộ {id} không đọc được / the current record of household {id} does not fit the form: {error}"
            ))
        })
    }

    /// Appends a mutation that takes the household to `view`, and writes the view, atomically.
    fn save_view(&self, id: Uuid, view: FieldMap) -> Result<u64, StoreError> {
        let mut txn = self.begin();
        let mut row = txn.household(id)?.unwrap_or_else(HouseholdRow::new_local);
        let empty = FieldMap::new();
        let base_fields = row.server.as_ref().map_or(&empty, |copy| &copy.fields);
        let changes = cumulative_changes(base_fields, &view, &row.touched);
        if changes.len() > MAX_CHANGES_PER_MUTATION {
            return Err(StoreError::Invalid(format!(
                "thay đổi {} trường một lúc, tối đa {MAX_CHANGES_PER_MUTATION} / {} fields changed at once, at most {MAX_CHANGES_PER_MUTATION}: save the record in smaller steps",
                changes.len(),
                changes.len()
            )));
        }
        let seq = txn.meta_u64(keys::META_NEXT_SEQ)?.unwrap_or(1);
        let mutation = Mutation {
            seq,
            household_id: id,
            base: row
                .server
                .as_ref()
                .map_or(Base::New, |copy| Base::Rev(copy.rev)),
            changes,
            made_at_ms: crate::clock::now_ms(),
        };
        // Earlier outbox entries of this household now carry the same changes, so the server
        // never applies a state the enumerator has since corrected (a member added by mistake
        // and removed again). The create stays as recorded: it is what makes the household.
        let create = match row.server {
            None => row.meta.unconfirmed.first().map(|entry| entry.seq),
            Some(_) => None,
        };
        for entry in &row.meta.unconfirmed {
            if Some(entry.seq) == create {
                continue;
            }
            let key = keys::outbox(entry.seq);
            if let Some(earlier) = txn.mutation(&key)? {
                let superseded = Mutation {
                    seq: earlier.seq,
                    ..mutation.clone()
                };
                txn.put(key, rows::encode_mutation(&superseded));
            }
        }
        row.touched
            .extend(mutation.changes.iter().map(|change| change.path.clone()));
        row.meta.unconfirmed.push(Unconfirmed {
            seq,
            result_rev: None,
        });
        row.meta.latest_pending = Some(seq);
        row.set_view(view);
        txn.put_meta_u64(keys::META_NEXT_SEQ, seq.saturating_add(1));
        txn.put(keys::outbox(seq), rows::encode_mutation(&mutation));
        txn.put_household(id, &row);
        txn.commit()?;
        Ok(seq)
    }

    /// Starts a write: takes the write lock. A lock poisoned by a panic elsewhere is still
    /// usable, since every write is all-or-nothing in sled.
    fn begin(&self) -> Txn<'_> {
        let guard = self
            .inner
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Txn {
            db: &self.inner.db,
            outbox: self.inner.outbox.tree(),
            outbox_state: &self.inner.outbox,
            cleared: self.inner.outbox.cleared(),
            cleared_moved: false,
            staged: BTreeMap::new(),
            acknowledged: Vec::new(),
            _guard: Some(guard),
        }
    }

    /// A read-only view without the lock; each read sees committed data.
    fn read(&self) -> Txn<'_> {
        Txn {
            db: &self.inner.db,
            outbox: self.inner.outbox.tree(),
            outbox_state: &self.inner.outbox,
            cleared: self.inner.outbox.cleared(),
            cleared_moved: false,
            staged: BTreeMap::new(),
            acknowledged: Vec::new(),
            _guard: None,
        }
    }
}

/// The record's fields, checked to survive the round trip through fields intact, so that what
/// the enumerator typed is exactly what is stored and sent.
fn record_fields(household: &Household) -> Result<FieldMap, StoreError> {
    let mut seen = BTreeSet::new();
    for member in &household.members {
        if !seen.insert(member.id) {
            return Err(StoreError::Invalid(format!(
                "mã thành viên {} bị trùng / member id {} appears twice: every member needs its own id",
                member.id, member.id
            )));
        }
    }
    for key in household.income.b1_answers.keys() {
        if key.is_empty() || key.contains('.') {
            return Err(StoreError::Invalid(format!(
                "mã câu hỏi B1 '{key}' không hợp lệ / B1 question code '{key}' is invalid: it must be non-empty and contain no '.'"
            )));
        }
    }
    let view = fields::flatten(household);
    if view.len() > validate::MAX_FIELDS {
        return Err(StoreError::Invalid(format!(
            "bản ghi có {} trường, tối đa {} / the record has {} fields, at most {}",
            view.len(),
            validate::MAX_FIELDS,
            view.len(),
            validate::MAX_FIELDS
        )));
    }
    for (path, value) in &view {
        fields::check_leaf(path, value).map_err(|error| StoreError::Invalid(error.to_string()))?;
    }
    let back = fields::unflatten(&view).map_err(|error| StoreError::Invalid(error.to_string()))?;
    let mut expected = household.clone();
    expected
        .members
        .sort_by_cached_key(|member| member.id.to_string());
    if back != expected {
        return Err(StoreError::Invalid(
            "bản ghi có giá trị không lưu được nguyên vẹn (số quá lớn, tọa độ không hữu hạn…) / the record has a value that cannot be stored exactly (a number too large, a coordinate that is not finite …)".to_string(),
        ));
    }
    Ok(view)
}

/// The changes from `base` to `view`, plus every path in `touched` that is back at its base
/// value, so that an earlier unconfirmed change to it is undone on the server too.
fn cumulative_changes(
    base: &FieldMap,
    view: &FieldMap,
    touched: &BTreeSet<String>,
) -> Vec<FieldChange> {
    let mut changes = fields::diff(base, view);
    let changed: BTreeSet<&str> = changes.iter().map(|change| change.path.as_str()).collect();
    let undone: Vec<FieldChange> = touched
        .iter()
        .filter(|path| !changed.contains(path.as_str()))
        .map(|path| FieldChange {
            path: path.clone(),
            value: view.get(path).cloned(),
        })
        .collect();
    changes.extend(undone);
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

fn local_household(id: Uuid, row: HouseholdRow, out_of_scope: bool) -> LocalHousehold {
    let server_rev = row.server.as_ref().map(|copy| copy.rev);
    let (fields, meta) = row.into_view_and_meta();
    LocalHousehold {
        id,
        fields,
        server_rev,
        pending: meta.latest_pending.is_some(),
        review: meta.review,
        in_conflict: meta.in_conflict,
        rejection: meta.rejection.map(|(_, reason)| reason),
        out_of_scope,
    }
}

fn number_key(key: &[u8], what: &'static str) -> Result<u64, StoreError> {
    keys::number_of(key).ok_or(StoreError::Corrupt {
        what,
        problem: format!("{} bytes", key.len()),
    })
}

/// Reads through staged writes, stages writes, and commits them as one batch plus a flush.
struct Txn<'a> {
    db: &'a sled::Db,
    /// The outbox's tree (see [`outbox`]): keys under [`keys::OUTBOX`] are read and written
    /// there.
    outbox: sled::Tree,
    outbox_state: &'a outbox::Outbox,
    /// Outbox entries with seqs up to here are cleared: as committed, or as this step moved it.
    cleared: u64,
    /// The step moved `cleared`, and the commit writes it.
    cleared_moved: bool,
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Outcomes this step keeps out of their household rows, written as one `A` row at the
    /// commit (see [`acknowledged`]).
    acknowledged: Vec<acknowledged::Acknowledged>,
    _guard: Option<MutexGuard<'a, ()>>,
}

impl Txn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(staged) = self.staged.get(key) {
            return Ok(staged.clone());
        }
        if let Some(seq) = keys::outbox_seq(key) {
            if seq <= self.cleared {
                return Ok(None);
            }
            return Ok(self.outbox.get(key)?.map(|value| value.to_vec()));
        }
        Ok(self.db.get(key)?.map(|value| value.to_vec()))
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.staged.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.staged.insert(key, None);
    }

    /// Keys and values under a one-byte prefix, as committed (staged writes not included).
    fn scan_committed(
        &self,
        prefix: u8,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.db.scan_prefix([prefix]).map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    fn meta_u64(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.get(&keys::meta(name))?
            .map(|bytes| rows::decode_u64(&bytes, "meta number"))
            .transpose()
    }

    fn put_meta_u64(&mut self, name: &str, value: u64) {
        self.put(keys::meta(name), rows::encode_u64(value));
    }

    fn device_id(&self) -> Result<Option<Uuid>, StoreError> {
        match self.get(&keys::meta(keys::META_DEVICE_ID))? {
            None => Ok(None),
            Some(bytes) => Uuid::from_slice(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt {
                    what: "device_id",
                    problem: format!("{} bytes", bytes.len()),
                }),
        }
    }

    /// The household's row, with the outcomes kept apart settled into it.
    fn household(&self, id: Uuid) -> Result<Option<HouseholdRow>, StoreError> {
        match self.get(&keys::household(id))? {
            None => Ok(None),
            Some(bytes) => self.settled(HouseholdRow::decode(&bytes)?).map(Some),
        }
    }

    /// A row read from the tree, with the outcomes kept apart settled into it: every reader of
    /// household rows goes through here.
    fn settled(&self, mut row: HouseholdRow) -> Result<HouseholdRow, StoreError> {
        if self.settle_acknowledged(&mut row.meta)? {
            row.confirm();
        }
        Ok(row)
    }

    fn put_household(&mut self, id: Uuid, row: &HouseholdRow) {
        self.put(keys::household(id), row.encode());
    }

    /// The household's row without its field maps (see [`HouseholdMetaRow`]).
    fn household_meta(&self, id: Uuid) -> Result<Option<HouseholdMetaRow>, StoreError> {
        match self.get(&keys::household(id))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(
                self.settled_meta(HouseholdMetaRow::decode(&bytes)?)?.0,
            )),
        }
    }

    /// [`Txn::settled`] for a row read without its maps; also says whether anything was
    /// settled, which folding needs to know.
    fn settled_meta(
        &self,
        mut row: HouseholdMetaRow,
    ) -> Result<(HouseholdMetaRow, bool), StoreError> {
        let settled = self.settle_acknowledged(&mut row.meta)?;
        if settled {
            row.confirm();
        }
        Ok((row, settled))
    }

    fn put_household_meta(&mut self, id: Uuid, row: &HouseholdMetaRow) {
        self.put(keys::household(id), row.encode());
    }

    fn mutation(&self, key: &[u8]) -> Result<Option<Mutation>, StoreError> {
        self.get(key)?
            .map(|bytes| rows::decode_mutation(&bytes))
            .transpose()
    }

    /// Applies the staged writes atomically and flushes; only then is anything acknowledged.
    /// A step that writes outbox entries writes both trees in one transaction; one that does
    /// not, one batch. Removing a cleared entry writes nothing (see [`outbox`]).
    fn commit(mut self) -> Result<(), StoreError> {
        if let Some(highest) = self.acknowledged.iter().map(|entry| entry.seq).max() {
            let row = acknowledged::encode(&mut self.acknowledged);
            self.put(keys::acknowledged(highest), row);
        }
        let turn = self.outbox_turn()?;
        if self.cleared_moved {
            self.put_meta_u64(keys::META_OUTBOX_CLEARED, self.cleared);
        }
        if let Some(generation) = turn {
            self.put_meta_u64(keys::META_OUTBOX_GENERATION, generation);
        }
        let cleared = self.cleared;
        let (outbox, main): (Vec<_>, Vec<_>) = std::mem::take(&mut self.staged)
            .into_iter()
            .filter(|(key, value)| {
                // A cleared entry is as good as removed.
                !(value.is_none() && keys::outbox_seq(key).is_some_and(|seq| seq <= cleared))
            })
            .partition(|(key, _)| key.first() == Some(&keys::OUTBOX));
        if main.is_empty() && outbox.is_empty() {
            return Ok(());
        }
        if outbox.is_empty() {
            let mut batch = sled::Batch::default();
            for (key, value) in main {
                match value {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            self.db.apply_batch(batch)?;
        } else {
            self.commit_with_outbox(main, outbox)?;
        }
        self.db.flush().map_err(StoreError::Flush)?;
        if self.cleared_moved {
            self.outbox_state.set_cleared(cleared);
        }
        if let Some(generation) = turn {
            self.outbox_state.turn_to(self.db, generation)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
