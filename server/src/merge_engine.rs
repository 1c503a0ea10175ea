//! Applies a push batch to the registry, and reads a pull page from it.
//!
//! A push is checked for shape first ([`validate_push`]): a malformed batch is refused whole
//! and changes nothing. Its creates are then worked out before the writer lock is taken
//! (`prepare_creates`: checked, classified, their rows packed), on every core, since none of
//! that reads the registry. Then, under the server's writer lock, `apply_push` sorts replays from
//! new mutations, merges each new mutation with [`protocol::merge::three_way`] against an
//! in-memory overlay of the registry (so later mutations in the batch see earlier ones),
//! classifies every revision it makes with the server's reference data, and hands everything
//! it decided to `Registry::commit_pending` as one atomic write. Nothing is acknowledged
//! before that write is durable: `AppState::push_as` waits for its flush, shared with the
//! pushes written meanwhile (group commit).

use std::collections::HashSet;
use std::sync::OnceLock;

// A push's tables are keyed by the ids and seqs of at most `MAX_PUSH_MUTATIONS` mutations, so
// a hash without a key is safe: hashing them with the standard one was 3% of the work under
// the writer lock.
use fxhash::FxHashMap;
use protocol::codec::packed_push::{self, KeptRecord, Pushed};
use protocol::fields::{self, FieldChange, FieldMap, FieldValue};
use protocol::household::{Date, Household};
use protocol::merge::{self, ConflictField, MergePlan};
use protocol::reference::ReferenceData;
use protocol::sync::{
    Base, HouseholdChange, Mutation, MutationOutcome, Outcome, PullRequest, PullResponse,
    PushReply, PushRequest, ReviewState, MAX_CHANGES_PER_MUTATION, MAX_PULL_LIMIT,
    MAX_PULL_OUTCOMES, MAX_PUSH_BYTES, MAX_PUSH_MUTATIONS,
};
use protocol::validate::{self, Problem};
use uuid::Uuid;

use crate::error::AppError;
use crate::scope::{self, may_read, may_write, not_allowed, Caller, Place};
use crate::store::{
    ClassificationRecord, Commit, ConflictRecord, NewRevision, Registry, RejectedMutation,
    Revision, RevisionCause, StoreError, StoredHousehold,
};

/// Checks a push's shape: 1 to [`MAX_PUSH_MUTATIONS`] mutations with consecutive seqs from 1
/// on, each with at most [`MAX_CHANGES_PER_MUTATION`] changes to distinct, well-formed fields.
pub fn validate_push(request: &PushRequest) -> Result<(), AppError> {
    let invalid = |message: String| Err(AppError::InvalidRequest(message));
    let count = request.mutations.len();
    if count == 0 {
        return invalid(format!(
            "yêu cầu đẩy không có thay đổi nào / the push carries no mutations: send 1 to {MAX_PUSH_MUTATIONS} per push"
        ));
    }
    if count > MAX_PUSH_MUTATIONS {
        return invalid(format!(
            "yêu cầu đẩy có {count} thay đổi, tối đa {MAX_PUSH_MUTATIONS} / the push carries {count} mutations, at most {MAX_PUSH_MUTATIONS}: send the outbox in smaller pushes"
        ));
    }
    if request.mutations[0].seq == 0 {
        return invalid(
            "số thứ tự thay đổi bắt đầu từ 1 / mutation seqs start at 1, not 0".to_string(),
        );
    }
    for pair in request.mutations.windows(2) {
        if pair[0].seq.checked_add(1) != Some(pair[1].seq) {
            return invalid(format!(
                "số thứ tự thay đổi phải liên tiếp / mutation seqs inside a push must follow each other: seq {} is followed by {}; resend the outbox in order",
                pair[0].seq, pair[1].seq
            ));
        }
    }
    for mutation in &request.mutations {
        let seq = mutation.seq;
        let changes = mutation.changes.len();
        if changes > MAX_CHANGES_PER_MUTATION {
            return invalid(format!(
                "thay đổi số {seq} sửa {changes} trường, tối đa {MAX_CHANGES_PER_MUTATION} / mutation {seq} changes {changes} fields, at most {MAX_CHANGES_PER_MUTATION}"
            ));
        }
        // Devices send changes in path order (`fields::diff`), which no path can repeat in;
        // only changes out of order are hashed to find one twice.
        let in_order = mutation
            .changes
            .windows(2)
            .all(|pair| pair[0].path < pair[1].path);
        let mut seen = HashSet::with_capacity(if in_order { 0 } else { changes });
        for change in &mutation.changes {
            // A removal has no value to check; its path is checked all the same.
            let value = change.value.as_ref().unwrap_or(&FieldValue::Null);
            if let Err(error) = fields::check_leaf(&change.path, value) {
                return invalid(format!("thay đổi số {seq} / mutation {seq}: {error}"));
            }
            if !in_order && !seen.insert(change.path.as_str()) {
                return invalid(format!(
                    "thay đổi số {seq} sửa trường '{path}' hai lần / mutation {seq} changes field '{path}' twice: send each field once",
                    path = change.path
                ));
            }
        }
    }
    Ok(())
}

/// Applies a validated push. Runs under the writer lock, on a blocking thread: it reads the
/// registry, decides every outcome in memory and writes them in one atomic batch. The caller
/// makes the batch durable (`Registry::make_durable`) before it answers.
///
/// Also returns the field maps of the revisions written, for the caller to free once it has
/// let go of the lock ([`Commit::take_written_fields`]).
pub(crate) fn apply_push(
    registry: &Registry,
    reference: &ReferenceData,
    caller: &Caller,
    request: &PushRequest,
    mut prepared: PreparedCreates,
    now_ms: i64,
) -> Result<(PushReply, Vec<FieldMap>), AppError> {
    registry.check_healthy()?;
    let device = request.device_id;
    let last = registry.device_last_seq(device)?;
    let expected = last.saturating_add(1);
    let mut outcomes = Vec::with_capacity(request.mutations.len());
    let mut fresh: &[Mutation] = &[];
    // Outcomes are stored a push at a time: the replayed ones are read from the store in
    // stretches (`stored_ahead`, from the first replayed seq not yet read), not one by one.
    let mut stored_ahead: Vec<MutationOutcome> = Vec::new();
    for (index, mutation) in request.mutations.iter().enumerate() {
        if mutation.seq > last {
            if mutation.seq != expected {
                return Ok((PushReply::SeqGap { expected }, Vec::new()));
            }
            fresh = &request.mutations[index..];
            break;
        }
        let find = |stored: &[MutationOutcome]| {
            let at = stored
                .binary_search_by_key(&mutation.seq, |outcome| outcome.seq)
                .ok()?;
            stored.get(at).cloned()
        };
        let stored = match find(&stored_ahead) {
            Some(stored) => stored,
            None => {
                let wanted = request.mutations.len() - index;
                stored_ahead = registry.outcomes(device, mutation.seq, wanted)?;
                find(&stored_ahead).ok_or_else(|| {
                    StoreError::Inconsistent(format!(
                        "device {device} is at seq {last} but the outcome of its mutation {} is missing",
                        mutation.seq
                    ))
                })?
            }
        };
        if stored.household_id != mutation.household_id {
            return Err(AppError::InvalidRequest(format!(
                "thay đổi số {seq} đã được nhận cho hộ khác / mutation {seq} was already received for household {}, not {}: this device's counter was reset; set the device up again",
                stored.household_id, mutation.household_id, seq = mutation.seq
            )));
        }
        outcomes.push(stored);
    }
    let Some(newest) = fresh.last() else {
        let reply = PushReply::Accepted {
            outcomes,
            last_seq: last,
        };
        return Ok((reply, Vec::new()));
    };

    let mut batch = Batch::new(registry, reference, caller, device, now_ms, fresh.len())?;
    for mutation in fresh {
        let outcome = MutationOutcome {
            seq: mutation.seq,
            household_id: mutation.household_id,
            outcome: batch.apply(mutation, prepared.take(mutation.seq))?,
        };
        batch.commit.outcomes.push((device, outcome.clone()));
        outcomes.push(outcome);
    }
    batch.commit.device_last.push((device, newest.seq));
    // Durable before the reply goes out: `AppState::push_as` waits for the group flush.
    let mut commit = batch.finish();
    let spent = commit.take_written_fields();
    registry.commit_pending(commit)?;
    let reply = PushReply::Accepted {
        outcomes,
        last_seq: newest.seq,
    };
    Ok((reply, spent))
}

/// Who a push is for and when: everything a revision needs that is not the registry, so that
/// a push's creates can be worked out before the writer lock is taken ([`prepare_creates`])
/// as well as under it.
struct Maker<'r> {
    /// Validates communes and classifies every revision the batch makes.
    reference: &'r ReferenceData,
    reference_id: String,
    caller: &'r Caller,
    device: Uuid,
    now_ms: i64,
    today: Date,
}

impl<'r> Maker<'r> {
    fn new(reference: &'r ReferenceData, caller: &'r Caller, device: Uuid, now_ms: i64) -> Self {
        Maker {
            reference,
            reference_id: reference.fingerprint().to_string(),
            caller,
            device,
            now_ms,
            // Dates of birth are checked against today in Vietnam (UTC+7), as on the device.
            today: Date::in_vietnam_at_ms(now_ms),
        }
    }

    /// Revision `rev` with `fields`, classified. `checked` is the record `check_record`
    /// already built from these fields, when the caller has it: building it is a large share
    /// of a revision's cost.
    ///
    /// The classification is decided without its texts (`ReferenceData::decide`): the row
    /// keeps the decision alone, and a read rebuilds the texts (`store::references`). Writing
    /// them was most of classifying, on every revision of every push.
    fn revision(
        &self,
        rev: u32,
        fields: FieldMap,
        checked: Option<Household>,
        mutation_seq: u64,
        why: RevisionCause,
    ) -> Revision {
        // Every revision the engine makes passed `check_record`, so it rebuilds.
        let classification = checked
            .map(Ok)
            .unwrap_or_else(|| fields::unflatten(&fields))
            .ok()
            .map(|household| ClassificationRecord {
                classification: self.reference.decide(&household),
                at_ms: self.now_ms,
                reference: self.reference_id.clone(),
            });
        Revision {
            rev,
            fields,
            device_id: self.device,
            mutation_seq,
            at_ms: self.now_ms,
            why,
            classification,
        }
    }

    /// The record of `Base::New` mutation `seq` of household `id` as the household's first
    /// revision, or the reason it is refused and the record, for a registry that does not have
    /// the household yet. `finish` turns the revision into what is committed
    /// ([`NewRevision::written`] ahead of the lock).
    fn create(
        &self,
        id: Uuid,
        seq: u64,
        record: FieldMap,
        finish: impl FnOnce(Revision) -> NewRevision,
    ) -> Result<MadeCreate, (String, FieldMap)> {
        let checked = match check_record(&record, id, self.today, self.reference) {
            Ok(household) => household,
            Err(problems) => return Err((validate::reason(&problems), record)),
        };
        if !may_write(self.caller, &Place::of(&record)) {
            return Err((not_allowed(id), record));
        }
        let revision = self.revision(1, record, Some(checked), seq, RevisionCause::Create);
        Ok(MadeCreate {
            revision: finish(revision),
            changes_taken: false,
        })
    }

    /// [`Self::create`] ahead of the lock. The record is made of the mutation's changes
    /// themselves, taken from it, when they can be given back exactly (in path order, each a
    /// value, as a device sends a create): copying every path and value was a tenth of a
    /// create's cost. A refused create gives them back at once; a made one holds them in its
    /// revision until the batch either commits it or gives them back
    /// ([`PreparedCreate::given_back`]).
    ///
    /// `kept` is the mutation's record when it came packed as the codec writes it
    /// ([`PackedRecords`]; the mutation then came without its changes): the revision's row
    /// keeps those bytes instead of encoding and packing the record again, and no map of the
    /// record is built at all ([`Self::create_kept`]). An error is a kept record whose changes
    /// do not decode back, which its read had checked.
    fn prepare(
        &self,
        mutation: &mut Mutation,
        kept: Option<Box<KeptRecord>>,
    ) -> Result<PreparedCreate, AppError> {
        if let Some(kept) = kept {
            return self.create_kept(mutation, kept);
        }
        let exact = mutation.changes.iter().all(|change| change.value.is_some())
            && mutation
                .changes
                .windows(2)
                .all(|pair| pair[0].path < pair[1].path);
        if !exact {
            return Ok(
                match self.create_from_copy(mutation, NewRevision::written) {
                    Ok(made) => PreparedCreate::Made(Box::new(made)),
                    Err(reason) => PreparedCreate::Refused(reason),
                },
            );
        }
        let record = std::mem::take(&mut mutation.changes)
            .into_iter()
            .filter_map(|change| Some((change.path, change.value?)))
            .collect();
        let made = self.create(
            mutation.household_id,
            mutation.seq,
            record,
            NewRevision::written,
        );
        Ok(match made {
            Ok(made) => PreparedCreate::Made(Box::new(MadeCreate {
                changes_taken: true,
                ..made
            })),
            Err((reason, record)) => {
                mutation.changes = changes_of(&record);
                PreparedCreate::Refused(reason)
            }
        })
    }

    /// [`Self::prepare`] for a create whose record came packed as the codec writes it
    /// ([`PackedRecords`]): the record was read from the map with the push, the revision's row
    /// keeps the packed map as its fields, and the revision itself holds no map
    /// ([`NewRevision::written_packed`]). The mutation came without its changes: a create
    /// refused gives them back at once, a made one leaves them in its row until the batch
    /// either commits it or gives them back ([`PreparedCreate::given_back`]). With 50 devices
    /// pushing, the server spent 50.5–62.5 µs a household this way where it spent 64–70.5
    /// decoding the changes (four A/B rounds).
    fn create_kept(
        &self,
        mutation: &mut Mutation,
        kept: Box<KeptRecord>,
    ) -> Result<PreparedCreate, AppError> {
        if let Some(reason) = self.refusal_of(&kept, mutation.household_id) {
            give_changes_back(mutation, &kept)?;
            return Ok(PreparedCreate::Refused(reason));
        }
        let (record, packed) = (*kept).into_parts();
        let revision = self.revision(
            1,
            FieldMap::new(),
            record.ok(),
            mutation.seq,
            RevisionCause::Create,
        );
        Ok(PreparedCreate::Made(Box::new(MadeCreate {
            revision: NewRevision::written_packed(revision, &packed),
            // Empty unless the caller gave the mutation its changes (a push decoded whole).
            changes_taken: mutation.changes.is_empty(),
        })))
    }

    /// Why the create of household `id` from `kept` is refused, as [`Self::create`] words it,
    /// if it is.
    fn refusal_of(&self, kept: &KeptRecord, id: Uuid) -> Option<String> {
        let household = match &kept.record {
            Ok(household) => household,
            Err(error) => return Some(validate::reason(&[Problem(error.to_string())])),
        };
        let checked = validate::check_with_areas(household, self.today, &self.reference.areas)
            .and_then(|()| is_named(household, id));
        if let Err(problems) = checked {
            return Some(validate::reason(&problems));
        }
        // The record's place, as `Place::of` reads it from the record's fields: the checked
        // record has both as the texts its fields hold.
        let place = Place {
            commune_code: Some(&household.commune_code),
            village: Some(&household.village),
        };
        (!may_write(self.caller, &place)).then(|| not_allowed(id))
    }

    /// [`Self::create`] with a record copied from the mutation's changes, which stay as they
    /// are: the reason it is refused, if it is.
    fn create_from_copy(
        &self,
        mutation: &Mutation,
        finish: impl FnOnce(Revision) -> NewRevision,
    ) -> Result<MadeCreate, String> {
        let mut record = FieldMap::new();
        fields::apply(&mut record, &mutation.changes);
        self.create(mutation.household_id, mutation.seq, record, finish)
            .map_err(|(reason, _)| reason)
    }
}

/// A record's entries as changes from nothing, in path order: the changes a create's record
/// was made of, when `Maker::prepare` took them.
fn changes_of(record: &FieldMap) -> Vec<FieldChange> {
    record
        .iter()
        .map(|(path, value)| FieldChange {
            path: path.clone(),
            value: Some(value.clone()),
        })
        .collect()
}

/// A create worked out by [`Maker::create`].
enum PreparedCreate {
    Made(Box<MadeCreate>),
    Refused(String),
}

/// A household's first revision.
struct MadeCreate {
    revision: NewRevision,
    /// The revision's fields are the mutation's changes, taken from it (`Maker::prepare`).
    changes_taken: bool,
}

impl PreparedCreate {
    /// The mutation as it came, for a batch that does not commit this create: with the changes
    /// the create took given back, if it took them (from its revision's fields, or its row's
    /// for a record kept packed).
    fn given_back(self, mutation: &Mutation) -> Result<Option<Mutation>, StoreError> {
        match self {
            PreparedCreate::Made(made) if made.changes_taken => Ok(Some(Mutation {
                changes: changes_of(&made.revision.fields(mutation.household_id)?),
                ..mutation.clone()
            })),
            _ => Ok(None),
        }
    }
}

/// The creates of a push worked out ahead of the writer lock, by mutation seq. The batch
/// uses one only where the registry turns out not to have the household (the outcome does
/// not depend on anything else); any other mutation, or one not prepared, is worked out
/// under the lock as before.
#[derive(Default)]
pub(crate) struct PreparedCreates {
    first_seq: u64,
    creates: Vec<Option<PreparedCreate>>,
}

impl PreparedCreates {
    fn take(&mut self, seq: u64) -> Option<PreparedCreate> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.creates.get_mut(index)?.take()
    }
}

/// Works out ahead of the writer lock what each `Base::New` mutation after `last_seq` (the
/// device's last applied seq as read before the lock) would make as a new household: its
/// record checked, classified, and its revision's row encoded and packed. That is most of a
/// first push's work on the server, and none of it reads the registry, so it runs outside the
/// lock (concurrent pushes do it side by side) and on as many threads as the machine has (a
/// single device's push is spread over them). `now_ms` must be the time `apply_push` is given.
pub(crate) fn prepare_creates(
    reference: &ReferenceData,
    caller: &Caller,
    request: &mut PushRequest,
    mut packed_records: PackedRecords,
    last_seq: u64,
    now_ms: i64,
) -> Result<PreparedCreates, AppError> {
    if scope::refusal(caller).is_some() {
        packed_records.give_back(request)?;
        return Ok(PreparedCreates::default());
    }
    let maker = Maker::new(reference, caller, request.device_id, now_ms);
    let from = request
        .mutations
        .iter()
        .position(|mutation| mutation.seq > last_seq)
        .unwrap_or(request.mutations.len());
    let (replayed, fresh) = request.mutations.split_at_mut(from);
    for mutation in replayed.iter_mut() {
        if let Some(kept) = packed_records.take(mutation.seq) {
            give_changes_back(mutation, &kept)?;
        }
    }
    let Some(first_seq) = fresh.first().map(|mutation| mutation.seq) else {
        return Ok(PreparedCreates::default());
    };
    // Each fresh mutation with its record, if it came as one; a record that is not made into
    // a create gives its mutation its changes back (`Maker::prepare`).
    let mut work: Vec<(&mut Mutation, Option<Box<KeptRecord>>)> = fresh
        .iter_mut()
        .map(|mutation| {
            let kept = packed_records.take(mutation.seq);
            (mutation, kept)
        })
        .collect();
    let prepare = |part: &mut [(&mut Mutation, Option<Box<KeptRecord>>)]| {
        part.iter_mut()
            .map(|(mutation, kept)| match mutation.base {
                Base::New => maker.prepare(mutation, kept.take()).map(Some),
                Base::Rev(_) => Ok(None),
            })
            .collect::<Vec<Result<Option<PreparedCreate>, AppError>>>()
    };
    let creates = on_threads(&mut work, "prepare a push's creates", |_, part| {
        prepare(part)
    })?
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    // A record the work above did not take (none: every record is a create) gives its
    // mutation its changes back all the same.
    for (mutation, kept) in &mut work {
        if let Some(kept) = kept.take() {
            give_changes_back(mutation, &kept)?;
        }
    }
    Ok(PreparedCreates { first_seq, creates })
}

/// The machine's cores, asked once: the standard library reads the process's cgroup files to
/// tell, on every call.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many calls of [`on_threads`] are running, this one included, while it lives.
struct Busy {
    /// The calls running when this one began.
    others: usize,
}

static BUSY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Busy {
    fn enter() -> Busy {
        Busy {
            others: BUSY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Items per thread below which [`on_threads`] does not start another.
const ITEMS_PER_THREAD: usize = 32;

/// Runs `work` over `items` split into runs, one a thread, on as many threads as the machine
/// has cores that no other call is using (fewer for fewer than [`ITEMS_PER_THREAD`] items a
/// thread), this thread among them. A push alone gets every core; pushes from many devices at
/// once run one a thread, since threads started for each only took turns with the others (7%
/// less server CPU a household with 50 devices, `bench/examples/push_cpu.rs`).
/// `work` gets the index of its run's first item. The results come back in the items' order.
fn on_threads<T: Send, R: Send>(
    items: &mut [T],
    what: &str,
    work: impl Fn(usize, &mut [T]) -> Vec<R> + Sync,
) -> Result<Vec<R>, AppError> {
    let busy = Busy::enter();
    let spare = cores().saturating_sub(busy.others).max(1);
    let threads = spare.min(items.len() / ITEMS_PER_THREAD).max(1);
    if threads == 1 {
        return Ok(work(0, items));
    }
    let per_thread = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = items.chunks_mut(per_thread);
        let here = parts.next().unwrap_or_default();
        let work = &work;
        // A thread that cannot start, or that fails, may leave its run half done: the caller
        // fails the push whole, before anything is written, and the device sends it again.
        let others = parts
            .enumerate()
            .map(|(run, part)| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || work((run + 1) * per_thread, part))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| AppError::Worker(format!("starting a thread to {what}: {error}")))?;
        let mut results = work(0, here);
        for other in others {
            results.extend(
                other
                    .join()
                    .map_err(|_| AppError::Worker(format!("a thread failed to {what}")))?,
            );
        }
        Ok(results)
    })
}

/// The request a packed push stands for (`protocol::codec::packed_push`): its mutations
/// unpacked and decoded side by side on the machine's cores, once their headers show that
/// together they unpack to no more than a [`PushRequest`] may be long. With it, the records
/// that came packed as the codec writes them ([`PackedRecords`]): each of their mutations is
/// in the request with no changes until `prepare_creates` either makes its create or gives
/// them back.
pub fn unpack_push(bytes: &[u8]) -> Result<(PushRequest, PackedRecords), AppError> {
    let mut push = packed_push::decode(bytes, MAX_PUSH_BYTES)?;
    push.unpacked_len()?;
    let read = on_threads(&mut push.mutations, "unpack a push", |first, part| {
        part.iter()
            .enumerate()
            .map(|(at, frame)| {
                packed_push::read_keeping(
                    first + at,
                    frame,
                    MAX_PUSH_BYTES,
                    MAX_CHANGES_PER_MUTATION,
                )
            })
            .collect()
    })?;
    let mut mutations = Vec::with_capacity(read.len());
    let mut packed_records = PackedRecords {
        by_seq: FxHashMap::with_capacity_and_hasher(read.len(), Default::default()),
    };
    for read in read {
        match read? {
            Pushed::Mutation(mutation) => mutations.push(mutation),
            Pushed::Kept(kept) => {
                mutations.push(Mutation {
                    seq: kept.seq,
                    household_id: kept.household_id,
                    base: Base::New,
                    changes: Vec::new(),
                    made_at_ms: kept.made_at_ms,
                });
                packed_records.by_seq.insert(kept.seq, kept);
            }
        }
    }
    Ok((
        PushRequest {
            device_id: push.device_id,
            mutations,
        },
        packed_records,
    ))
}

/// The records of a packed push that came packed as the codec writes them, by mutation seq
/// (`protocol::codec::packed_push::KeptRecord`): each read into the household it makes, with
/// its packed map, which a create made from it keeps as its revision's fields. Their
/// mutations wait in the request without their changes ([`unpack_push`]), which
/// `prepare_creates` decodes back for every one it does not make into a create.
#[derive(Clone, Debug, Default)]
pub struct PackedRecords {
    /// Boxed: a record holds its household, and moving it by value (into the map, as the map
    /// grew, and out) was a copy of several hundred bytes each time.
    by_seq: FxHashMap<u64, Box<KeptRecord>>,
}

impl PackedRecords {
    fn take(&mut self, seq: u64) -> Option<Box<KeptRecord>> {
        self.by_seq.remove(&seq)
    }

    /// How many records came so.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Gives every mutation of `request` whose record is still here its changes back.
    pub fn give_back(mut self, request: &mut PushRequest) -> Result<(), AppError> {
        for mutation in &mut request.mutations {
            if let Some(kept) = self.take(mutation.seq) {
                give_changes_back(mutation, &kept)?;
            }
        }
        Ok(())
    }
}

/// The changes of `kept`'s record, put back in its mutation (which came without them).
fn give_changes_back(mutation: &mut Mutation, kept: &KeptRecord) -> Result<(), AppError> {
    if mutation.changes.is_empty() {
        mutation.changes = kept.mutation()?.changes;
    }
    Ok(())
}

/// One push being decided: the registry as it will be after the mutations so far, and what
/// to write.
struct Batch<'r> {
    registry: &'r Registry,
    /// Who the batch is for and when: it validates, classifies and makes revisions.
    maker: Maker<'r>,
    /// Households read or changed in this batch; `None` when the registry does not have one.
    rows: FxHashMap<Uuid, Option<StoredHousehold>>,
    /// Households changed in this batch, in the order first changed.
    touched: Vec<Uuid>,
    /// Revisions made in this batch, by household and rev, as indices into `commit.revisions`.
    made: FxHashMap<(Uuid, u32), usize>,
    commit: Commit,
}

impl<'r> Batch<'r> {
    fn new(
        registry: &'r Registry,
        reference: &'r ReferenceData,
        caller: &'r Caller,
        device: Uuid,
        now_ms: i64,
        mutations: usize,
    ) -> Result<Batch<'r>, StoreError> {
        // Sized for a mutation a household, as in a first push: growing them moved every
        // revision made so far.
        let commit = Commit {
            households: Vec::with_capacity(mutations),
            revisions: Vec::with_capacity(mutations),
            changes: Vec::with_capacity(mutations),
            outcomes: Vec::with_capacity(mutations),
            head_seq: registry.head_seq()?,
            last_conflict: registry.last_conflict_id()?,
            household_count: registry.household_count()?,
            ..Commit::default()
        };
        Ok(Batch {
            registry,
            maker: Maker::new(reference, caller, device, now_ms),
            rows: FxHashMap::with_capacity_and_hasher(mutations, Default::default()),
            touched: Vec::with_capacity(mutations),
            made: FxHashMap::with_capacity_and_hasher(mutations, Default::default()),
            commit,
        })
    }

    fn current(&mut self, id: Uuid) -> Result<Option<StoredHousehold>, StoreError> {
        if let Some(row) = self.rows.get(&id) {
            let mut row = row.clone();
            // A row revised in this batch lent its fields to the revision (`new_revision`).
            if let Some(row) = &mut row {
                let made = self.made.get(&(row.id, row.rev));
                if let Some((_, revision)) = made.and_then(|&at| self.commit.revisions.get(at)) {
                    row.fields = revision.fields(row.id)?;
                }
            }
            return Ok(row);
        }
        let row = self.registry.household_unclassified(id)?;
        self.rows.insert(id, row.clone());
        Ok(row)
    }

    fn revision_fields(&self, id: Uuid, rev: u32) -> Result<Option<FieldMap>, StoreError> {
        if let Some(index) = self.made.get(&(id, rev)) {
            return self
                .commit
                .revisions
                .get(*index)
                .map(|(_, revision)| revision.fields(id))
                .transpose();
        }
        self.registry.revision_fields(id, rev)
    }

    fn put(&mut self, row: StoredHousehold) {
        if !self.touched.contains(&row.id) {
            self.touched.push(row.id);
        }
        self.rows.insert(row.id, Some(row));
    }

    /// Appends a change-log entry for the household.
    fn log_change(&mut self, row: &mut StoredHousehold) {
        self.commit.head_seq += 1;
        row.last_seq = self.commit.head_seq;
        self.commit.changes.push((row.last_seq, row.id));
    }

    /// Records a new revision of the household with `fields`, classified ([`Maker::revision`]).
    fn new_revision(
        &mut self,
        row: &mut StoredHousehold,
        fields: FieldMap,
        checked: Option<Household>,
        mutation: &Mutation,
        why: RevisionCause,
    ) {
        row.rev += 1;
        let revision = self
            .maker
            .revision(row.rev, fields, checked, mutation.seq, why);
        self.add_revision(row, NewRevision::new(revision));
    }

    /// Adds a revision made for `row`, whose `rev` it already is.
    fn add_revision(&mut self, row: &mut StoredHousehold, revision: NewRevision) {
        // The fields and the classification are the revision's, and the row keeps neither: a
        // household row is written without them, and `current` reads the fields back from the
        // revision for a later mutation of the same household in this batch. (Cloning and
        // dropping a second copy of every map was a tenth of a first push's CPU on the server.)
        row.fields = FieldMap::new();
        row.classification = None;
        self.made
            .insert((row.id, row.rev), self.commit.revisions.len());
        self.commit.revisions.push((row.id, revision));
    }

    fn reject(&mut self, mutation: &Mutation, reason: String) -> Outcome {
        self.commit.rejected.push(RejectedMutation {
            device_id: self.maker.device,
            mutation: mutation.clone(),
            reason: reason.clone(),
            at_ms: self.maker.now_ms,
        });
        Outcome::Rejected { reason }
    }

    fn apply(
        &mut self,
        mutation: &Mutation,
        prepared: Option<PreparedCreate>,
    ) -> Result<Outcome, StoreError> {
        let id = mutation.household_id;
        let refusal = scope::refusal(self.maker.caller);
        let current = match refusal {
            None => self.current(id)?,
            Some(_) => None,
        };
        if refusal.is_none() && matches!(mutation.base, Base::New) && current.is_none() {
            return Ok(self.create(mutation, prepared));
        }
        // Anything but a create is decided on the mutation as it came, with the changes a
        // create prepared ahead of the lock took given back.
        let given_back = match prepared {
            Some(prepared) => prepared.given_back(mutation)?,
            None => None,
        };
        let mutation = given_back.as_ref().unwrap_or(mutation);
        // A revoked device's work is kept for review, whatever it touches.
        if let Some(reason) = refusal {
            return Ok(self.reject(mutation, reason));
        }
        let outcome = match (mutation.base, current) {
            (Base::New, None) => self.create(mutation, None),
            (Base::New, Some(row)) if row.created_by == self.maker.device => {
                self.update(mutation, row, 1)?
            }
            (Base::New, Some(_)) => self.reject(
                mutation,
                format!(
                    "mã hộ {id} đã có trên máy chủ / household id {id} already exists on the server, recorded by another device: record this household again as a new one"
                ),
            ),
            (Base::Rev(base), None) => self.reject(
                mutation,
                format!(
                    "hộ {id} không có trên máy chủ / household {id} is not on the server, though the change was made on its revision {base}: sync again before editing it"
                ),
            ),
            (Base::Rev(base), Some(row)) => self.update(mutation, row, base)?,
        };
        Ok(outcome)
    }

    /// A household new to the registry, from the work [`prepare_creates`] did ahead of the
    /// lock when it did it.
    fn create(&mut self, mutation: &Mutation, prepared: Option<PreparedCreate>) -> Outcome {
        let id = mutation.household_id;
        let revision = match prepared {
            Some(PreparedCreate::Made(made)) => made.revision,
            Some(PreparedCreate::Refused(reason)) => return self.reject(mutation, reason),
            None => match self.maker.create_from_copy(mutation, NewRevision::new) {
                Ok(made) => made.revision,
                Err(reason) => return self.reject(mutation, reason),
            },
        };
        let mut row = StoredHousehold {
            id,
            rev: revision.revision().rev,
            fields: FieldMap::new(),
            review: ReviewState::Submitted,
            open_conflicts: Vec::new(),
            created_by: self.maker.device,
            last_seq: 0,
            classification: None,
        };
        self.add_revision(&mut row, revision);
        self.log_change(&mut row);
        self.commit.household_count += 1;
        let rev = row.rev;
        self.put(row);
        Outcome::Applied { rev }
    }

    fn update(
        &mut self,
        mutation: &Mutation,
        mut row: StoredHousehold,
        base_rev: u32,
    ) -> Result<Outcome, StoreError> {
        let id = row.id;
        let Some(base) = self.revision_fields(id, base_rev)? else {
            return Ok(self.reject(
                mutation,
                format!(
                    "hộ {id} không có phiên bản {base_rev} / household {id} has no revision {base_rev} (the latest is {}): sync again before editing it",
                    row.rev
                ),
            ));
        };
        if !may_write(self.maker.caller, &Place::of(&row.fields)) {
            return Ok(self.reject(mutation, not_allowed(id)));
        }
        // The device's record as it meant it, and its changes restated against the merge
        // base. A `Base::Rev` mutation's changes are made on that revision; a `Base::New`
        // mutation's changes are made on the empty record (cumulative from the create), so
        // fields it left as the create had them, which it must repeat, are not changes
        // against revision 1, and fields it removed since the create are.
        let mut intended = match mutation.base {
            Base::New => FieldMap::new(),
            Base::Rev(_) => base.clone(),
        };
        fields::apply(&mut intended, &mutation.changes);
        let base = self.seen_by_device(id, base_rev, row.rev, &row.fields, base)?;
        let changes = fields::diff(&base, &intended);
        let (plan, result, checked) = match self.plan(id, &base, &row.fields, &changes, &intended) {
            Ok(planned) => planned,
            Err(reason) => return Ok(self.reject(mutation, reason)),
        };
        if !may_write(self.maker.caller, &Place::of(&result)) {
            return Ok(self.reject(mutation, not_allowed(id)));
        }

        // A device's later mutations repeat its earlier changes (they are cumulative), so a
        // field already waiting in one of its open conflicts with the same values is not a new
        // conflict: it points at the one on record instead of filing a duplicate.
        let mut plan = plan;
        let mut known = Vec::new();
        let mut fresh = Vec::new();
        for field in std::mem::take(&mut plan.conflicts) {
            match self.open_conflict_with(&row, &field)? {
                Some(conflict_id) => known.push((conflict_id, field)),
                None => fresh.push(field),
            }
        }
        plan.conflicts = fresh;

        let theirs_rev = row.rev;
        let was_in_conflict = row.in_conflict();
        let changes_fields = !plan.apply.is_empty();
        let why = if !plan.conflicts.is_empty() {
            RevisionCause::Conflict
        } else if plan.others_changed {
            RevisionCause::Merge
        } else {
            RevisionCause::Mutation
        };
        if changes_fields {
            self.new_revision(&mut row, result, checked, mutation, why);
            // An edit sends the household back to review.
            row.review = ReviewState::Submitted;
        }
        let outcome = if plan.conflicts.is_empty() && !known.is_empty() {
            // The fields of the conflict named; those held by other open conflicts of this
            // device were reported with those conflicts' own outcomes.
            let named = known[0].0;
            Outcome::Conflict {
                rev: row.rev,
                conflict_id: named,
                fields: known
                    .into_iter()
                    .filter(|(conflict_id, _)| *conflict_id == named)
                    .map(|(_, field)| field)
                    .collect(),
            }
        } else if plan.conflicts.is_empty() {
            if plan.others_changed {
                Outcome::Merged { rev: row.rev }
            } else {
                Outcome::Applied { rev: row.rev }
            }
        } else {
            self.commit.last_conflict += 1;
            let conflict_id = self.commit.last_conflict;
            self.commit.conflicts.push(ConflictRecord {
                id: conflict_id,
                household_id: id,
                device_id: self.maker.device,
                mutation_seq: mutation.seq,
                base_rev: match mutation.base {
                    Base::New => None,
                    Base::Rev(rev) => Some(rev),
                },
                theirs_rev,
                fields: plan.conflicts.clone(),
                made_at_ms: mutation.made_at_ms,
                received_at_ms: self.maker.now_ms,
                open: true,
            });
            row.open_conflicts.push(conflict_id);
            Outcome::Conflict {
                rev: row.rev,
                conflict_id,
                fields: plan.conflicts,
            }
        };
        if changes_fields || was_in_conflict != row.in_conflict() {
            self.log_change(&mut row);
            self.put(row);
        } else if matches!(outcome, Outcome::Conflict { .. }) {
            // A further conflict on a household already in conflict: no change a device can
            // see, but the row lists the new conflict.
            self.put(row);
        }
        Ok(outcome)
    }

    /// The id of an open conflict of this household, filed by this device, that already holds
    /// `field` with the same base, server and device values.
    fn open_conflict_with(
        &self,
        row: &StoredHousehold,
        field: &ConflictField,
    ) -> Result<Option<u64>, StoreError> {
        for conflict_id in &row.open_conflicts {
            let pending = self
                .commit
                .conflicts
                .iter()
                .find(|c| c.id == *conflict_id)
                .cloned();
            let record = match pending {
                Some(record) => Some(record),
                None => self.registry.conflict(*conflict_id)?,
            };
            if record.is_some_and(|record| {
                record.open
                    && record.device_id == self.maker.device
                    && record.fields.iter().any(|known| {
                        known.path == field.path
                            && known.theirs == field.theirs
                            && known.mine == field.mine
                    })
            }) {
                return Ok(Some(*conflict_id));
            }
        }
        Ok(None)
    }

    /// The merge base as the device saw it: revision `base_rev` with this device's own later
    /// revisions laid over it. Those are its earlier mutations, applied but not yet received
    /// back as a revision; its cumulative changes repeat them, so their values are its own and
    /// not someone else's. Without this, a field set and then set back to its base value
    /// keeps the first value (the second change is no change against the base), and a value
    /// of its own that someone else has since replaced comes back.
    ///
    /// `current` holds the fields of `current_rev`, read already: a revision's fields are read
    /// only when a later revision is to be compared with them, or when this device made it.
    fn seen_by_device(
        &self,
        id: Uuid,
        base_rev: u32,
        current_rev: u32,
        current: &FieldMap,
        base: FieldMap,
    ) -> Result<FieldMap, StoreError> {
        let mut seen = base.clone();
        let mut before = base;
        for rev in base_rev.saturating_add(1)..=current_rev {
            let Some(author) = self.revision_author(id, rev)? else {
                break;
            };
            if rev == current_rev {
                if author == self.maker.device {
                    fields::apply(&mut seen, &fields::diff(&before, current));
                }
                break;
            }
            let Some(fields) = self.revision_fields(id, rev)? else {
                break;
            };
            if author == self.maker.device {
                fields::apply(&mut seen, &fields::diff(&before, &fields));
            }
            before = fields;
        }
        Ok(seen)
    }

    /// The device whose mutation made a revision.
    fn revision_author(&self, id: Uuid, rev: u32) -> Result<Option<Uuid>, StoreError> {
        if let Some(index) = self.made.get(&(id, rev)) {
            return Ok(self
                .commit
                .revisions
                .get(*index)
                .map(|(_, revision)| revision.revision().device_id));
        }
        self.registry.revision_author(id, rev)
    }

    /// Plans the merge of the device's `changes` (made on `base`, leading to `intended`) over
    /// the current record `theirs`, and returns the plan with the record it leads to (and that
    /// record built, when it was checked), or the reason to reject the mutation.
    fn plan(
        &self,
        id: Uuid,
        base: &FieldMap,
        theirs: &FieldMap,
        changes: &[FieldChange],
        intended: &FieldMap,
    ) -> Result<(MergePlan, FieldMap, Option<Household>), String> {
        let plan = merge::three_way(base, theirs, changes);
        let mut result = theirs.clone();
        fields::apply(&mut result, &plan.apply);
        if let Ok(checked) = check_record(&result, id, self.maker.today, self.maker.reference) {
            return Ok((plan, result, Some(checked)));
        }
        // The merge does not fit the form. If the device's own record does not either, the
        // mutation is invalid; otherwise the record stays as it is and every change the device
        // made waits for a supervisor as a conflict.
        if let Err(problems) = check_record(intended, id, self.maker.today, self.maker.reference) {
            return Err(validate::reason(&problems));
        }
        let plan = merge::everything_conflicts(base, theirs, changes);
        let mut result = theirs.clone();
        fields::apply(&mut result, &plan.apply);
        Ok((plan, result, None))
    }

    fn finish(mut self) -> Commit {
        for id in &self.touched {
            if let Some(Some(row)) = self.rows.remove(id) {
                self.commit.households.push(row);
            }
        }
        self.commit
    }
}

/// The schema rules, the commune must be in the code set, and the record's id must be the
/// household the mutation names.
fn check_record(
    fields: &FieldMap,
    id: Uuid,
    today: Date,
    reference: &ReferenceData,
) -> Result<Household, Vec<Problem>> {
    let household = validate::household_from_fields_with_areas(fields, today, &reference.areas)?;
    is_named(&household, id)?;
    Ok(household)
}

/// Whether the record's id is the household `id` the mutation names.
fn is_named(household: &Household, id: Uuid) -> Result<(), Vec<Problem>> {
    if household.id != id {
        return Err(vec![Problem(format!(
            "mã hộ trong bản ghi ({}) khác mã hộ của thay đổi ({id}) / the record's id {} is not the household id {id} the change names",
            household.id, household.id
        ))]);
    }
    Ok(())
}

/// Reads a pull page: the households changed after the cursor, each at its latest state, and
/// the device's stored outcomes.
pub fn pull(
    registry: &Registry,
    caller: &Caller,
    request: &PullRequest,
) -> Result<PullResponse, AppError> {
    registry.check_healthy()?;
    let head = registry.head_seq()?;
    if request.cursor > head {
        return Err(AppError::InvalidRequest(format!(
            "con trỏ đồng bộ {} vượt quá máy chủ ({head}) / the sync cursor {} is ahead of the registry, whose last change is {head}: the registry was replaced; reset the device's sync state and pull from 0",
            request.cursor, request.cursor
        )));
    }
    let limit = request.limit.clamp(1, MAX_PULL_LIMIT) as usize;
    let page = registry.changes_after(request.cursor, limit)?;
    let mut changes = Vec::new();
    let mut left_scope = Vec::new();
    for &(seq, id) in &page.entries {
        let Some(row) = registry.pulled_household(id, seq)? else {
            continue;
        };
        if !may_read(caller, &Place::of_encoded(&row.fields)) {
            if scope::may_have_held(registry, caller, &row)? {
                left_scope.push(id);
            }
            continue;
        }
        changes.push(HouseholdChange {
            seq,
            household_id: id,
            rev: row.rev,
            in_conflict: row.in_conflict,
            fields: row.fields,
            review: row.review,
        });
    }
    let next_cursor = page.entries.last().map_or(request.cursor, |(seq, _)| *seq);
    let outcomes = if request.outcomes_from == u64::MAX {
        Vec::new()
    } else {
        registry.outcomes(request.device_id, request.outcomes_from, MAX_PULL_OUTCOMES)?
    };
    Ok(PullResponse {
        changes,
        next_cursor,
        more: page.more,
        outcomes,
        left_scope,
        scope: caller.scope(),
    })
}
