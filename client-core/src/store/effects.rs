//! What sync steps do to the store: read the next push batch, record a push reply, a seq gap,
//! a pull page. Each step is one [`Txn`]: one atomic batch and one flush.

use std::collections::BTreeMap;

use protocol::fields::{self, FieldMap};
use protocol::sync::{Base, MutationOutcome, Outcome, PullResponse};
use uuid::Uuid;

use crate::sync::PushBatch;

use super::acknowledged::Acknowledged;
use super::rows::{self, ConflictRow, HouseholdMetaRow, HouseholdRow, RejectionRow, ServerCopy};
use super::{keys, LocalConflict, LocalRejection, Store, StoreError, Txn};

/// An outcome newly recorded in the store.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Recorded {
    Applied,
    Merged,
    Conflict(LocalConflict),
    Rejected(LocalRejection),
}

/// What recording a push reply did.
#[derive(Debug, Default)]
pub(crate) struct AckEffects {
    /// Outbox entries the reply acknowledged.
    pub acknowledged: usize,
    pub recorded: Vec<Recorded>,
}

/// What recording a pull page did.
#[derive(Debug, Default)]
pub(crate) struct PageEffects {
    pub recorded: Vec<Recorded>,
    /// Household changes stored (stale ones skipped).
    pub stored: usize,
    /// Households newly returned by a supervisor, with the comment.
    pub returned: Vec<(Uuid, String)>,
    /// What the page's areas did: households dropped, a pull again from 0.
    pub scope: super::access::ScopeEffects,
}

impl Store {
    /// The outbox entries of the next push batch, as stored, with their seqs: up to
    /// `max_count` from `from_seq` on, consecutive seqs only (the server refuses a batch with
    /// a hole), and after the first at most `max_bytes` encoded. Not decoded, so that a batch
    /// sent ahead can be told to be still the next one by its bytes
    /// (`SyncEngine::next_request_after`).
    pub(crate) fn push_batch_entries(
        &self,
        from_seq: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, sled::IVec)>, StoreError> {
        let mut batch: Vec<(u64, sled::IVec)> = Vec::new();
        let mut bytes = 0usize;
        let read = self.read();
        for item in read.outbox_range(from_seq, u64::MAX) {
            if batch.len() >= max_count {
                break;
            }
            let (key, value) = item?;
            bytes = bytes.saturating_add(value.len());
            if !batch.is_empty() && bytes > max_bytes {
                break;
            }
            let seq = keys::number_of(&key).ok_or_else(|| StoreError::Corrupt {
                what: "outbox",
                problem: format!("a key of {} bytes is not an outbox seq", key.len()),
            })?;
            if batch
                .last()
                .is_some_and(|(last, _)| last.checked_add(1) != Some(seq))
            {
                break;
            }
            batch.push((seq, value));
        }
        Ok(batch)
    }

    /// The push of outbox entries read by [`Store::push_batch_entries`], their mutations
    /// copied as their codec bytes.
    pub(crate) fn push_batch(
        device_id: Uuid,
        entries: &[(u64, sled::IVec)],
    ) -> Result<PushBatch, StoreError> {
        let mutations = entries
            .iter()
            .map(|(_, entry)| rows::encoded_mutation(entry))
            .collect::<Result<_, _>>()?;
        Ok(PushBatch::from_encoded(device_id, mutations))
    }

    /// How many seqs the outbox spans from `from_seq` to its last entry, read from the last key
    /// instead of counted: the number of entries waiting, since entries are consecutive (while
    /// entries the server lost wait to be restored, it can be more). For progress: counting
    /// them all before every batch made a long first push quadratic.
    pub(crate) fn outbox_span_from(&self, from_seq: u64) -> Result<usize, StoreError> {
        let last = self
            .read()
            .outbox_range(from_seq, u64::MAX)
            .next_back()
            .transpose()?
            .and_then(|(key, _)| keys::number_of(&key));
        Ok(last.map_or(0, |last| {
            usize::try_from(last.saturating_sub(from_seq).saturating_add(1)).unwrap_or(usize::MAX)
        }))
    }

    /// The seq the next save will take.
    pub(crate) fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.read().meta_u64(keys::META_NEXT_SEQ)?.unwrap_or(1))
    }

    /// The lowest seq whose outcome the device has not recorded, or `u64::MAX` for none.
    pub(crate) fn outcomes_from(&self) -> Result<u64, StoreError> {
        let read = self.read();
        let awaiting = first_number(&read, keys::AWAITING)?;
        let pending = read
            .outbox_range(0, u64::MAX)
            .next()
            .transpose()?
            .and_then(|(key, _)| keys::number_of(&key));
        Ok(awaiting
            .into_iter()
            .chain(pending)
            .min()
            .unwrap_or(u64::MAX))
    }

    /// Records a push reply: the outcomes it carries, and every outbox entry up to `last_seq`
    /// as acknowledged (those without an outcome wait for it, kept, under `W`).
    pub(crate) fn record_push_reply(
        &self,
        outcomes: &[MutationOutcome],
        last_seq: u64,
    ) -> Result<AckEffects, StoreError> {
        self.record_push_reply_keeping(outcomes, last_seq, KeepAccepted::Apart)
    }

    /// [`Store::record_push_reply`], with the applied and merged outcomes kept where
    /// `keep_accepted` says: tests compare the two.
    pub(super) fn record_push_reply_keeping(
        &self,
        outcomes: &[MutationOutcome],
        last_seq: u64,
        keep_accepted: KeepAccepted,
    ) -> Result<AckEffects, StoreError> {
        let mut txn = self.begin();
        let mut effects = AckEffects::default();
        let mut conflicts = ConflictIndex::default();
        let mut removed = Vec::with_capacity(outcomes.len());
        let mut pending = PendingEntries::read(&txn, outcomes)?;
        for outcome in outcomes {
            if let Some((recorded, was_pending)) = record_outcome(
                &mut txn,
                outcome,
                &mut pending,
                &mut conflicts,
                keep_accepted,
            )? {
                effects.acknowledged += usize::from(was_pending);
                effects.recorded.push(recorded);
                if was_pending {
                    removed.push(outcome.seq);
                }
            }
        }
        effects.acknowledged += move_to_awaiting(&mut txn, last_seq, removed)?;
        txn.commit()?;
        Ok(effects)
    }

    /// Records a seq gap: the server has applied everything below `expected`, so those outbox
    /// entries wait for their outcomes (which come with the pull) instead of being resent.
    pub(crate) fn record_seq_gap(&self, expected: u64) -> Result<usize, StoreError> {
        let mut txn = self.begin();
        let moved = move_to_awaiting(&mut txn, expected.saturating_sub(1), Vec::new())?;
        txn.commit()?;
        Ok(moved)
    }

    /// Puts mutations kept aside after an acknowledgement, from `from_seq` on, back in the
    /// outbox to be sent again, for a server that lost them. Returns their seqs in order.
    pub(crate) fn restore_awaiting(&self, from_seq: u64) -> Result<Vec<u64>, StoreError> {
        let mut txn = self.begin();
        let kept: Vec<(Vec<u8>, Vec<u8>)> = txn
            .db
            .range(keys::awaiting(from_seq)..=keys::awaiting(u64::MAX))
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()?;
        // Cleared entries from the first one put back on would come back with it.
        if let Some(first) = kept.first().and_then(|(key, _)| keys::number_of(key)) {
            txn.unclear_outbox_from(first)?;
        }
        let mut restored = Vec::new();
        for (key, value) in kept {
            let mutation = rows::decode_mutation(&value)?;
            txn.remove(key);
            txn.put(keys::outbox(mutation.seq), value);
            if let Some(mut row) = txn.household_meta(mutation.household_id)? {
                if row
                    .meta
                    .latest_pending
                    .is_none_or(|latest| latest < mutation.seq)
                {
                    row.meta.latest_pending = Some(mutation.seq);
                    txn.put_household_meta(mutation.household_id, &row);
                }
            }
            restored.push(mutation.seq);
        }
        txn.commit()?;
        Ok(restored)
    }

    /// Records one pull page: outcomes, household revisions (rebasing pending changes over
    /// them), the user's areas (dropping what left them) and the cursor, atomically.
    ///
    /// The page is taken by value: each change's field map moves into its row.
    pub(crate) fn record_pull_page(
        &self,
        mut page: PullResponse,
    ) -> Result<PageEffects, StoreError> {
        let mut txn = self.begin();
        let mut effects = PageEffects::default();
        let mut conflicts = ConflictIndex::load(&txn)?;
        let mut pending = PendingEntries::read(&txn, &page.outcomes)?;
        for outcome in &page.outcomes {
            // A page rewrites its households anyway: their outcomes go straight into them.
            if let Some((recorded, _)) = record_outcome(
                &mut txn,
                outcome,
                &mut pending,
                &mut conflicts,
                KeepAccepted::InTheRow,
            )? {
                effects.recorded.push(recorded);
            }
        }
        for change in &mut page.changes {
            let id = change.household_id;
            // The row's metadata first: a new revision replaces the server copy and the view
            // is rebuilt over it, so the maps held until now are read only when needed.
            let stored = txn.household_meta(id)?;
            let held_rev = stored.as_ref().and_then(|row| row.server_rev);
            if held_rev.is_some_and(|rev| change.rev < rev) {
                continue;
            }
            if let protocol::sync::ReviewState::Returned { comment } = &change.review {
                if stored
                    .as_ref()
                    .is_none_or(|row| row.meta.review != change.review)
                {
                    effects.returned.push((id, comment.clone()));
                }
            }
            let fields = std::mem::take(&mut change.fields);
            // Nothing of the enumerator's to lay over the revision, and a revision not held
            // yet: most of a first pull. The view is the revision, and its map goes from the
            // page into the row packed as it came, never decoded.
            let nothing_to_lay_over = stored.as_ref().is_none_or(|row| {
                row.meta.latest_pending.is_none() && row.meta.rejection.is_none()
            });
            if nothing_to_lay_over && held_rev != Some(change.rev) {
                let mut row = HouseholdMetaRow::server_copy_is_view(change.rev, &fields, stored)?;
                row.meta.review = change.review.clone();
                row.meta.in_conflict = change.in_conflict;
                txn.put_household_meta(id, &row);
            } else {
                let fields = fields
                    .decode()
                    .map_err(|error| StoreError::Invalid(error.to_string()))?;
                let mut row = match stored {
                    // The revision held already (the device's own push, pulled back), compared
                    // field by field rather than assumed from its number, so that a registry
                    // that lost revisions and numbered others the same cannot leave a stale
                    // copy here.
                    Some(_) if held_rev == Some(change.rev) => {
                        txn.household(id)?.unwrap_or_else(HouseholdRow::new_local)
                    }
                    Some(meta_row) => meta_row.without_maps()?,
                    None => HouseholdRow::new_local(),
                };
                let same_revision = row
                    .server
                    .as_ref()
                    .is_some_and(|copy| copy.rev == change.rev && copy.fields == fields);
                let unchanged = same_revision
                    && row.meta.review == change.review
                    && row.meta.in_conflict == change.in_conflict;
                row.meta.review = change.review.clone();
                row.meta.in_conflict = change.in_conflict;
                if !same_revision {
                    row.server = Some(ServerCopy {
                        rev: change.rev,
                        fields,
                    });
                    row.confirm();
                    if !rebuild_view(&txn, &mut row)? {
                        // No mutation to lay over: the view stays what it was.
                        let held = txn.household(id)?.map(HouseholdRow::into_view);
                        row.set_view(held.unwrap_or_default());
                    }
                }
                if !unchanged {
                    txn.put_household(id, &row);
                }
            }
            if !change.in_conflict {
                for conflict_id in conflicts.resolved(id, change.rev) {
                    txn.remove(keys::conflict(conflict_id));
                }
            }
            effects.stored += 1;
        }
        effects.scope = super::access::after_page(&mut txn, &page)?;
        // Areas that grew are pulled again from the start of the change log.
        let cursor = if effects.scope.restart {
            0
        } else {
            page.next_cursor
        };
        txn.put_meta_u64(keys::META_CURSOR, cursor);
        txn.commit()?;
        Ok(effects)
    }
}

/// Open conflicts by household, so a page can drop the ones a newer, conflict-free revision
/// shows resolved.
#[derive(Default)]
struct ConflictIndex(BTreeMap<Uuid, Vec<(u64, u32)>>);

impl ConflictIndex {
    fn load(txn: &Txn<'_>) -> Result<ConflictIndex, StoreError> {
        let mut index = ConflictIndex::default();
        for item in txn.scan_committed(keys::CONFLICT) {
            let (key, value) = item?;
            let row = ConflictRow::decode(&value)?;
            if let Some(conflict_id) = keys::number_of(&key) {
                index.add(row.household_id, conflict_id, row.rev);
            }
        }
        Ok(index)
    }

    fn add(&mut self, household_id: Uuid, conflict_id: u64, rev: u32) {
        self.0
            .entry(household_id)
            .or_default()
            .push((conflict_id, rev));
    }

    /// Conflicts of the household up to a revision the server shows with no open conflict: a
    /// supervisor has resolved them.
    fn resolved(&mut self, household_id: Uuid, rev: u32) -> Vec<u64> {
        let Some(open) = self.0.get_mut(&household_id) else {
            return Vec::new();
        };
        let (done, still): (Vec<_>, Vec<_>) = open.iter().partition(|(_, at)| *at <= rev);
        *open = still;
        done.into_iter()
            .map(|(conflict_id, _)| conflict_id)
            .collect()
    }
}

fn first_number(txn: &Txn<'_>, prefix: u8) -> Result<Option<u64>, StoreError> {
    match txn.scan_committed(prefix).next() {
        None => Ok(None),
        Some(item) => Ok(keys::number_of(&item?.0)),
    }
}

/// Moves outbox entries with seq up to `through` to the awaiting-outcome rows. `removed`
/// holds the seqs whose entries this step already took out of the outbox (a reply's recorded
/// outcomes): the scan goes around them, since they are still in the tree until the commit.
fn move_to_awaiting(
    txn: &mut Txn<'_>,
    through: u64,
    mut removed: Vec<u64>,
) -> Result<usize, StoreError> {
    removed.sort_unstable();
    removed.dedup();
    let mut moved = 0;
    // The stretches of seqs between the removed ones: after a push's reply, usually none.
    let mut stretches = Vec::new();
    let mut from = 0u64;
    for &seq in removed.iter().take_while(|&&seq| seq <= through) {
        if seq > from {
            stretches.push(from..=seq - 1);
        }
        from = seq.saturating_add(1);
    }
    if from <= through {
        stretches.push(from..=through);
    }
    let mut acknowledged: Vec<(sled::IVec, sled::IVec)> = Vec::new();
    for stretch in stretches {
        for item in txn.outbox_range(*stretch.start(), *stretch.end()) {
            acknowledged.push(item?);
        }
    }
    for (key, value) in acknowledged {
        // Entries whose outcome this step already recorded are gone from the staged view.
        if txn.get(&key)?.is_none() {
            continue;
        }
        let mutation = rows::decode_mutation(&value)?;
        txn.remove(key.to_vec());
        txn.put(keys::awaiting(mutation.seq), value.to_vec());
        if let Some(mut row) = txn.household_meta(mutation.household_id)? {
            if row.meta.latest_pending == Some(mutation.seq) {
                row.meta.latest_pending = None;
                txn.put_household_meta(mutation.household_id, &row);
            }
        }
        moved += 1;
    }
    // Every entry up to `through` is now recorded or awaiting: cleared, not removed one by one.
    txn.clear_outbox_through(through);
    Ok(moved)
}

/// Where an applied or merged outcome is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeepAccepted {
    /// In the step's `A` row, not in the household's row (see [`super::acknowledged`]).
    Apart,
    InTheRow,
}

/// The outbox entries a reply's outcomes name, read in one walk of the outbox before the
/// outcomes are recorded. A read of each was a search of sled's tree each: half of what a
/// device spent recording a reply.
enum PendingEntries {
    /// The entries with seqs from the outcomes' lowest to their highest, as committed; each is
    /// taken when its outcome is recorded, as the outcome removes it.
    Walked(BTreeMap<u64, sled::IVec>),
    /// Seqs too far apart for one walk to pay (no device's push has them): each outcome reads
    /// its own entry.
    EachRead,
}

impl PendingEntries {
    fn read(txn: &Txn<'_>, outcomes: &[MutationOutcome]) -> Result<PendingEntries, StoreError> {
        let seqs = || outcomes.iter().map(|outcome| outcome.seq);
        let (Some(first), Some(last)) = (seqs().min(), seqs().max()) else {
            return Ok(PendingEntries::Walked(BTreeMap::new()));
        };
        if last - first > 2 * outcomes.len() as u64 + 16 {
            return Ok(PendingEntries::EachRead);
        }
        let mut entries = BTreeMap::new();
        for item in txn.outbox_range(first, last) {
            let (key, entry) = item?;
            let seq = keys::number_of(&key).ok_or_else(|| StoreError::Corrupt {
                what: "outbox",
                problem: format!("a key of {} bytes is not an outbox seq", key.len()),
            })?;
            entries.insert(seq, entry);
        }
        Ok(PendingEntries::Walked(entries))
    }

    /// The outbox entry of `seq`, taken: the caller removes it.
    fn take(&mut self, txn: &Txn<'_>, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            PendingEntries::Walked(entries) => Ok(entries.remove(&seq).map(|entry| entry.to_vec())),
            PendingEntries::EachRead => txn.get(&keys::outbox(seq)),
        }
    }
}

/// Records one outcome, once: an outcome for a mutation neither pending nor awaiting was
/// recorded before (a replay) and changes nothing. Returns what was recorded and whether the
/// mutation was still in the outbox (not yet acknowledged).
fn record_outcome(
    txn: &mut Txn<'_>,
    outcome: &MutationOutcome,
    pending: &mut PendingEntries,
    conflicts: &mut ConflictIndex,
    keep_accepted: KeepAccepted,
) -> Result<Option<(Recorded, bool)>, StoreError> {
    let seq = outcome.seq;
    // A mutation is in the outbox or awaiting its outcome, never both (each move between
    // them is one transaction), so only the key it was found under is removed: removing an
    // absent key still costs sled a search of its tree.
    let outbox_key = keys::outbox(seq);
    let (key, entry, was_pending) = match pending.take(txn, seq)? {
        Some(entry) => (outbox_key, entry, true),
        None => {
            let awaiting_key = keys::awaiting(seq);
            match txn.get(&awaiting_key)? {
                Some(entry) => (awaiting_key, entry, false),
                None => return Ok(None),
            }
        }
    };
    txn.remove(key);
    let id = rows::entry_household(&entry)?;
    if id != outcome.household_id {
        tracing::warn!(
            seq,
            mine = %id,
            theirs = %outcome.household_id,
            "the server's outcome names another household than the mutation"
        );
    }
    if keep_accepted == KeepAccepted::Apart {
        let kept = match outcome.outcome {
            Outcome::Applied { rev } => Some((rev, Recorded::Applied)),
            Outcome::Merged { rev } => Some((rev, Recorded::Merged)),
            Outcome::Conflict { .. } | Outcome::Rejected { .. } => None,
        };
        if let Some((rev, recorded)) = kept {
            txn.acknowledged.push(Acknowledged {
                seq,
                household_id: id,
                rev,
            });
            return Ok(Some((recorded, was_pending)));
        }
    }
    // Only the row's metadata changes: its packed field maps are carried over as they are.
    let mut row = match txn.household_meta(id)? {
        Some(row) => row,
        None => HouseholdMetaRow::new_local()?,
    };
    if row.meta.latest_pending == Some(seq) {
        row.meta.latest_pending = None;
    }
    let recorded = match &outcome.outcome {
        Outcome::Applied { rev } | Outcome::Merged { rev } | Outcome::Conflict { rev, .. } => {
            row.meta.accepted(seq, *rev);
            row.confirm();
            match &outcome.outcome {
                Outcome::Conflict {
                    rev,
                    conflict_id,
                    fields,
                } => {
                    row.meta.in_conflict = true;
                    let conflict = ConflictRow {
                        household_id: id,
                        mutation_seq: seq,
                        rev: *rev,
                        fields: fields.clone(),
                    };
                    txn.put(keys::conflict(*conflict_id), conflict.encode());
                    conflicts.add(id, *conflict_id, *rev);
                    Recorded::Conflict(LocalConflict {
                        conflict_id: *conflict_id,
                        household_id: id,
                        mutation_seq: seq,
                        rev: *rev,
                        fields: fields.clone(),
                    })
                }
                Outcome::Merged { .. } => Recorded::Merged,
                _ => Recorded::Applied,
            }
        }
        Outcome::Rejected { reason } => {
            row.meta.unconfirmed.retain(|entry| entry.seq != seq);
            row.confirm();
            if row
                .meta
                .rejection
                .as_ref()
                .is_none_or(|(rejected, _)| *rejected < seq)
            {
                row.meta.rejection = Some((seq, reason.clone()));
            }
            let rejection = RejectionRow {
                household_id: id,
                reason: reason.clone(),
                mutation: Some(rows::decode_mutation(&entry)?),
            };
            txn.put(keys::rejection(seq), rejection.encode());
            Recorded::Rejected(LocalRejection {
                mutation_seq: seq,
                household_id: id,
                reason: reason.clone(),
            })
        }
    };
    txn.put_household_meta(id, &row);
    Ok(Some((recorded, was_pending)))
}

/// The view after a new server revision: the revision with the latest pending mutation's
/// cumulative changes laid over it; without one, with the changes of a rejection not yet
/// superseded (the enumerator's values stay in view); otherwise the revision itself.
///
/// Returns false, the view untouched, when the mutation to lay over is missing.
fn rebuild_view(txn: &Txn<'_>, row: &mut HouseholdRow) -> Result<bool, StoreError> {
    let Some(copy) = &row.server else {
        return Ok(false);
    };
    let overlay = if let Some(seq) = row.meta.latest_pending {
        txn.mutation(&keys::outbox(seq))?
    } else if let Some((seq, _)) = &row.meta.rejection {
        match txn.get(&keys::rejection(*seq))? {
            Some(bytes) => RejectionRow::decode(&bytes)?.mutation,
            None => None,
        }
    } else {
        row.view_the_server_copy();
        return Ok(true);
    };
    // Without the mutation to lay over (it should always be there), the view stays as it is:
    // losing the enumerator's values is worse than missing a server change until the next pull.
    // A `Base::New` mutation's changes are the whole record, cumulative from nothing (no
    // removals): laid over a revision they would keep that revision's other paths beside the
    // enumerator's (someone's `void.note` next to this record's `void: null`), a record that
    // does not fit the form. Its view is the enumerator's record itself until the server has
    // merged it.
    let Some(mutation) = overlay else {
        return Ok(false);
    };
    let mut view: FieldMap = match mutation.base {
        Base::New => FieldMap::new(),
        Base::Rev(_) => copy.fields.clone(),
    };
    fields::apply(&mut view, &mutation.changes);
    row.set_view(view);
    Ok(true)
}
