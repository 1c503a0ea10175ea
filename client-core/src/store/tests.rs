//! Saves: durability, seq numbering, cumulative changes, warnings and refusals.

use protocol::fields::{self, FieldChange, FieldMap};
use protocol::household::{Relationship, VoidMark, VoidReason};
use protocol::sync::{Base, HouseholdChange, MutationOutcome, Outcome, PullResponse, ReviewState};
use uuid::Uuid;

use super::*;
use crate::test_support::{member, sample, store, text};

/// The outcome of a mutation the server applied as revision `rev`.
fn applied(mutation: &Mutation, rev: u32) -> MutationOutcome {
    MutationOutcome {
        seq: mutation.seq,
        household_id: mutation.household_id,
        outcome: Outcome::Applied { rev },
    }
}

/// Makes the store believe the server applied every pending mutation, one revision each.
fn acknowledge_all(store: &Store) -> u32 {
    let pending = store.pending().expect("pending");
    let outcomes: Vec<MutationOutcome> = pending
        .iter()
        .zip(1..)
        .map(|(m, rev)| applied(m, rev))
        .collect();
    let last = pending.last().map_or(0, |m| m.seq);
    store.record_push_reply(&outcomes, last).expect("ack");
    outcomes.len() as u32
}

/// Makes the store believe the server sent this revision of a household.
fn receive(store: &Store, fields: &FieldMap, id: Uuid, rev: u32) {
    let cursor = store.cursor().expect("cursor");
    store
        .record_pull_page(PullResponse {
            changes: vec![HouseholdChange {
                seq: cursor + 1,
                household_id: id,
                rev,
                fields: protocol::fields::EncodedFields::encode(fields),
                review: ReviewState::Submitted,
                in_conflict: false,
            }],
            next_cursor: cursor + 1,
            more: false,
            outcomes: vec![],
            left_scope: vec![],
            scope: protocol::access::Scope::Everything,
        })
        .expect("page");
}

#[test]
fn saves_are_durable_and_numbered_without_gaps() {
    let dir = tempfile::tempdir().expect("dir");
    let mut household = sample(1);
    {
        let store = Store::open(dir.path()).expect("open");
        store
            .setup("http://10.0.0.2:8080", Uuid::from_u128(9))
            .expect("setup");
        for (expected, address) in [(1, "Số 1"), (2, "Số 2"), (3, "Số 3")] {
            household.address = address.into();
            let receipt = store.save_household(&household).expect("save");
            assert_eq!(receipt.mutation_seq, expected);
            assert_eq!(receipt.household_id, household.id);
            assert!(receipt.warnings.is_empty(), "{:?}", receipt.warnings);
        }
        // Dropped without any shutdown: only what `save` flushed counts.
    }
    let store = crate::test_support::reopen(dir.path());
    let seqs: Vec<u64> = store
        .pending()
        .expect("pending")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.household().expect("a record"), household);
    assert!(local.pending);
    assert_eq!(local.server_rev, None);
    assert_eq!(store.device_id().expect("id"), Some(Uuid::from_u128(9)));
    assert_eq!(
        store.server_url().expect("url").as_deref(),
        Some("http://10.0.0.2:8080")
    );
    // The counter continues after a reopen.
    household.address = "Số 4".into();
    assert_eq!(
        store.save_household(&household).expect("save").mutation_seq,
        4
    );
}

#[test]
fn changes_are_cumulative_against_the_server_base() {
    let (_dir, store) = store();
    let mut household = sample(1);
    store.save_household(&household).expect("create");
    household.address = "Số 9".into();
    store.save_household(&household).expect("edit");
    let pending = store.pending().expect("pending");
    // Without a server revision both are creates carrying the whole record.
    assert_eq!(pending[0].base, Base::New);
    assert_eq!(pending[1].base, Base::New);
    assert_eq!(
        pending[1].changes,
        fields::diff(&FieldMap::new(), &fields::flatten(&household))
    );

    // Once the server's revision with both is received, edits carry only what differs from
    // it, and every edit repeats the earlier ones.
    let rev = acknowledge_all(&store);
    let received = fields::flatten(&household);
    receive(&store, &received, household.id, rev);
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.server_rev, Some(2));
    assert!(!local.pending);
    assert_eq!(local.fields, received);

    household.village = "Thôn Tây".into();
    store.save_household(&household).expect("edit");
    household.income.estimated_per_person_vnd = Some(900_000);
    store.save_household(&household).expect("edit");
    let pending = store.pending().expect("pending");
    let last = pending.last().expect("an edit");
    assert_eq!(last.base, Base::Rev(2));
    assert_eq!(
        last.changes,
        vec![
            FieldChange {
                path: "income.estimated_per_person_vnd".into(),
                value: Some(protocol::fields::FieldValue::Int(900_000)),
            },
            FieldChange {
                path: "village".into(),
                value: Some(text("Thôn Tây")),
            },
        ]
    );
    let mut rebuilt = received;
    fields::apply(&mut rebuilt, &last.changes);
    assert_eq!(rebuilt, fields::flatten(&household));
}

#[test]
fn an_undone_change_is_sent_too() {
    let (_dir, store) = store();
    let mut household = sample(1);
    store.save_household(&household).expect("create");
    acknowledge_all(&store);
    receive(&store, &fields::flatten(&household), household.id, 1);

    let spouse = member(7, "Trần Văn Bình", Relationship::Spouse);
    household.members.push(spouse.clone());
    store.save_household(&household).expect("add member");
    household.members.retain(|m| m.id != spouse.id);
    store.save_household(&household).expect("remove member");

    let last = store.pending().expect("pending").pop().expect("an edit");
    let name_path = format!("members.{}.full_name", spouse.id);
    assert!(
        last.changes
            .iter()
            .any(|c| c.path == name_path && c.value.is_none()),
        "the removal of the member added earlier is sent: {:?}",
        last.changes
    );
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.household().expect("record").members.len(), 1);
}

#[test]
fn survey_problems_are_warnings_and_the_household_is_saved() {
    let (_dir, store) = store();
    let mut household = sample(1);
    household.members.clear();
    household.commune_code = "4".into();
    let receipt = store.save_household(&household).expect("saved anyway");
    assert!(receipt
        .warnings
        .iter()
        .any(|w| w.contains("has no members")));
    assert!(receipt.warnings.iter().any(|w| w.contains("5 digits")));
    assert_eq!(store.pending().expect("pending").len(), 1);
}

#[test]
fn records_that_cannot_be_stored_are_refused_and_change_nothing() {
    let (_dir, store) = store();
    let mut twins = sample(1);
    twins.members.push(twins.members[0].clone());
    assert!(matches!(
        store.save_household(&twins),
        Err(StoreError::Invalid(message)) if message.contains("appears twice")
    ));
    let mut dotted = sample(2);
    dotted.income.b1_answers.insert("Q.1".into(), "2".into());
    assert!(matches!(
        store.save_household(&dotted),
        Err(StoreError::Invalid(_))
    ));
    let mut huge = sample(3);
    huge.address = "x".repeat(5_000);
    assert!(matches!(
        store.save_household(&huge),
        Err(StoreError::Invalid(_))
    ));
    let mut too_rich = sample(4);
    too_rich.income.estimated_per_person_vnd = Some(u64::MAX);
    assert!(matches!(
        store.save_household(&too_rich),
        Err(StoreError::Invalid(_))
    ));
    assert!(store.pending().expect("pending").is_empty());
    assert!(store.households().expect("list").is_empty());
    assert!(matches!(
        store.void_household(
            Uuid::from_u128(1),
            VoidMark {
                reason: VoidReason::Other,
                note: String::new()
            }
        ),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn members_in_any_order_are_accepted() {
    let (_dir, store) = store();
    let mut household = sample(1);
    household
        .members
        .insert(0, member(50, "Lê Văn C", Relationship::Child));
    household
        .members
        .push(member(1, "Lê Thị D", Relationship::Child));
    store.save_household(&household).expect("save");
    let back = store
        .household(household.id)
        .expect("read")
        .expect("kept")
        .household()
        .expect("record");
    assert_eq!(back.members.len(), 3);
}

#[test]
fn void_and_unvoid_are_saves() {
    let (_dir, store) = store();
    let household = sample(1);
    store.save_household(&household).expect("create");
    let mark = VoidMark {
        reason: VoidReason::Duplicate,
        note: "trùng với hộ bên cạnh".into(),
    };
    let receipt = store
        .void_household(household.id, mark.clone())
        .expect("void");
    assert_eq!(receipt.mutation_seq, 2);
    let local = store.household(household.id).expect("read").expect("kept");
    assert!(local.is_voided());
    assert_eq!(local.household().expect("record").void, Some(mark));
    store.unvoid_household(household.id).expect("unvoid");
    let local = store.household(household.id).expect("read").expect("kept");
    assert!(!local.is_voided());
    assert_eq!(store.pending().expect("pending").len(), 3);
}

#[test]
fn a_store_keeps_its_device_id() {
    let (dir, store) = store();
    let id = store.device_id().expect("id").expect("set");
    store.setup("http://10.0.0.9:80", id).expect("same id");
    assert!(matches!(
        store.setup("http://10.0.0.9:80", Uuid::from_u128(1)),
        Err(StoreError::OtherDevice { .. })
    ));
    drop(store);
    let store = crate::test_support::reopen(dir.path());
    assert_eq!(
        store.server_url().expect("url").as_deref(),
        Some("http://10.0.0.9:80")
    );
}

#[test]
fn clones_share_one_store_and_concurrent_saves_get_distinct_seqs() {
    let (_dir, store) = store();
    let threads: Vec<_> = (0..4u128)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..5u128)
                    .map(|i| {
                        store
                            .save_household(&sample(t * 10 + i))
                            .expect("save")
                            .mutation_seq
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    assert_eq!(store.households().expect("list").len(), 20);
}

#[test]
fn a_reply_with_some_outcomes_keeps_the_rest_of_what_it_acknowledged_awaiting_them() {
    let (_dir, store) = store();
    for n in 1..=6 {
        store.save_household(&sample(n)).expect("save");
    }
    let pending = store.pending().expect("pending");
    assert_eq!(pending.len(), 6);
    // Outcomes for seqs 2, 3 and 5 only, and everything through seq 5 acknowledged.
    let outcomes: Vec<MutationOutcome> = pending
        .iter()
        .filter(|m| [2, 3, 5].contains(&m.seq))
        .map(|m| applied(m, 1))
        .collect();
    let effects = store.record_push_reply(&outcomes, 5).expect("reply");
    assert_eq!(effects.acknowledged, 5);
    assert_eq!(effects.recorded.len(), 3);
    let still: Vec<u64> = store
        .pending()
        .expect("pending")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        still,
        vec![6],
        "the entry after the acknowledged ones stays in the outbox"
    );
    let awaiting: Vec<u64> = store
        .inner
        .db
        .scan_prefix([keys::AWAITING])
        .map(|item| keys::number_of(&item.expect("read").0).expect("seq"))
        .collect();
    assert_eq!(
        awaiting,
        vec![1, 4],
        "acknowledged without an outcome: kept awaiting it"
    );
    assert_eq!(store.outcomes_from().expect("from"), 1);
}

#[test]
fn a_reply_records_each_outcome_once_however_its_seqs_lie() {
    let awaiting_seqs = |store: &Store| -> Vec<u64> {
        awaiting(store)
            .iter()
            .map(|mutation| mutation.seq)
            .collect()
    };
    let (_dir, store) = store();
    for n in 1..=4 {
        store.save_household(&sample(n)).expect("save");
    }
    // Outcomes in reverse, one of them twice: the outbox is walked once and each entry is
    // taken by the first outcome that names it.
    let pending = store.pending().expect("pending");
    let mut outcomes: Vec<MutationOutcome> = pending.iter().rev().map(|m| applied(m, 1)).collect();
    outcomes.push(applied(&pending[1], 1));
    let effects = store.record_push_reply(&outcomes, 4).expect("reply");
    assert_eq!(effects.acknowledged, 4);
    assert_eq!(effects.recorded.len(), 4, "seq 2 is recorded once");
    assert_eq!(store.pending().expect("pending"), Vec::new());
    assert_eq!(awaiting_seqs(&store), Vec::<u64>::new());

    // Seqs too far apart for one walk: each outcome reads its own entry, to the same effect.
    for n in 5..=40 {
        store.save_household(&sample(n)).expect("save");
    }
    let pending = store.pending().expect("pending");
    assert_eq!(pending.len(), 36);
    let (first, last) = (&pending[0], &pending[35]);
    let outcomes = [applied(last, 1), applied(first, 1), applied(first, 1)];
    let effects = store.record_push_reply(&outcomes, last.seq).expect("reply");
    assert_eq!(effects.acknowledged, 36);
    assert_eq!(effects.recorded.len(), 2);
    assert_eq!(awaiting_seqs(&store), (6..=39).collect::<Vec<u64>>());
}

/// The household rows as stored, byte for byte.
fn household_rows(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .inner
        .db
        .scan_prefix([keys::HOUSEHOLD])
        .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read"))
        .collect()
}

/// What the enumerator sees of the store (the outbox without the times of the saves).
fn seen(store: &Store) -> (Vec<LocalHousehold>, Vec<Mutation>, Vec<LocalConflict>) {
    let pending = store.pending().expect("pending");
    (
        store.households().expect("households"),
        pending
            .into_iter()
            .map(|mutation| Mutation {
                made_at_ms: 0,
                ..mutation
            })
            .collect(),
        store.conflicts().expect("conflicts"),
    )
}

#[test]
fn outcomes_kept_apart_read_and_fold_as_outcomes_written_into_the_rows() {
    // Two stores with the same work: one records a push reply (applied outcomes kept in an `A`
    // row), the other the same outcomes from a pull page (written into the rows).
    let (_a, apart) = store();
    let (_b, in_rows) = store();
    let mut first = sample(1);
    for store in [&apart, &in_rows] {
        store.save_household(&first).expect("save");
        store.save_household(&sample(2)).expect("save");
        store.save_household(&sample(3)).expect("save");
        first.address = "Số 9, thôn Đông".into();
        store.save_household(&first).expect("edit");
        first.address = sample(1).address;
    }
    let pending = apart.pending().expect("pending");
    assert_eq!(pending.len(), 4);
    let mut outcomes: Vec<MutationOutcome> = pending[..3]
        .iter()
        .zip(1..)
        .map(|(m, rev)| applied(m, rev))
        .collect();
    // The edit of the first household, after its applied create in the same reply: kept in
    // conflict, which is written into the row, over the outcome kept apart.
    outcomes.push(MutationOutcome {
        seq: pending[3].seq,
        household_id: pending[3].household_id,
        outcome: Outcome::Conflict {
            rev: 4,
            conflict_id: 77,
            fields: Vec::new(),
        },
    });
    let before = household_rows(&apart);
    apart.record_push_reply(&outcomes, 4).expect("reply");
    let after = household_rows(&apart);
    assert_eq!(apart.acknowledged_rows(), 1);
    assert_eq!(
        after.iter().filter(|row| before.contains(row)).count(),
        2,
        "the rows of households with only applied outcomes are not rewritten"
    );
    in_rows
        .record_pull_page(PullResponse {
            changes: vec![],
            next_cursor: 0,
            more: false,
            outcomes,
            left_scope: vec![],
            scope: protocol::access::Scope::Everything,
        })
        .expect("page");
    assert_eq!(seen(&apart), seen(&in_rows));
    assert!(apart.households().expect("read").iter().all(|h| !h.pending));

    // Later steps read the rows settled: an edit, and a revision received.
    for store in [&apart, &in_rows] {
        let mut second = sample(2);
        second.address = "Số 12, thôn Tây".into();
        store.save_household(&second).expect("edit");
        receive(store, &fields::flatten(&sample(3)), sample(3).id, 3);
    }
    assert_eq!(seen(&apart), seen(&in_rows));

    // Folding writes what is still apart into the rows: the same rows, byte for byte.
    assert_eq!(
        apart.fold_acknowledged().expect("fold"),
        0,
        "every row was rewritten since"
    );
    assert_eq!(apart.acknowledged_rows(), 0);
    assert_eq!(household_rows(&apart), household_rows(&in_rows));
    assert_eq!(seen(&apart), seen(&in_rows));
}

#[test]
fn folding_writes_the_rows_still_unsettled_and_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(dir.path()).expect("open");
        store
            .setup("http://127.0.0.1:1", Uuid::from_u128(5))
            .expect("setup");
        for n in 1..=3 {
            store.save_household(&sample(n)).expect("save");
        }
        acknowledge_all(&store);
    }
    let store = crate::test_support::reopen(dir.path());
    assert!(store.households().expect("read").iter().all(|h| !h.pending));
    assert_eq!(store.acknowledged_rows(), 1);
    let seen_before = seen(&store);
    assert_eq!(store.fold_acknowledged().expect("fold"), 3);
    assert_eq!(store.acknowledged_rows(), 0);
    assert_eq!(seen(&store), seen_before);
    assert_eq!(store.fold_acknowledged().expect("again"), 0);
}

#[test]
fn folding_many_replies_takes_them_a_step_at_a_time_and_misses_none() {
    let (_dir, store) = store();
    for n in 1..=70 {
        store.save_household(&sample(n)).expect("save");
    }
    // One reply a household: more `A` rows than one fold step takes.
    for mutation in store.pending().expect("pending") {
        store
            .record_push_reply(&[applied(&mutation, 1)], mutation.seq)
            .expect("reply");
    }
    assert_eq!(store.acknowledged_rows(), 70);
    let before = seen(&store);
    assert_eq!(store.fold_acknowledged().expect("fold"), 70);
    assert_eq!(store.acknowledged_rows(), 0);
    assert_eq!(seen(&store), before);
    assert!(before.0.iter().all(|household| !household.pending));
}

#[test]
fn a_store_of_the_layout_before_acknowledged_rows_is_taken_up() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(dir.path()).expect("open");
        store.save_household(&sample(1)).expect("save");
        let mut txn = store.begin();
        txn.put_meta_u64(keys::META_LAYOUT, LAYOUT_BEFORE_ACKNOWLEDGED);
        txn.commit().expect("commit");
    }
    let store = crate::test_support::reopen(dir.path());
    assert_eq!(store.households().expect("read").len(), 1);
    assert_eq!(
        store.read().meta_u64(keys::META_LAYOUT).expect("layout"),
        Some(LAYOUT_VERSION)
    );
    drop(store);
    {
        let store = crate::test_support::reopen(dir.path());
        let mut txn = store.begin();
        txn.put_meta_u64(keys::META_LAYOUT, 7);
        txn.commit().expect("commit");
    }
    assert!(matches!(
        crate::test_support::try_reopen(dir.path()),
        Err(StoreError::Layout { found: 7, .. })
    ));
}

/// One step of [`outcomes_kept_apart_are_never_seen_apart`], done to both stores.
#[derive(Clone, Debug)]
enum Step {
    /// The enumerator saves household `n` with an address of variant `variant`.
    Save { n: u128, variant: u8 },
    /// A push's reply for the next entries of the outbox, one outcome kind each: applied,
    /// merged, conflict, rejected, or none (acknowledged, its outcome to come with a pull).
    Reply { kinds: Vec<u8> },
    /// A page with a revision of household `n` made elsewhere, and the outcomes of every
    /// mutation awaiting one.
    Pull { n: u128, variant: u8 },
    /// Outcomes kept apart go into their rows.
    Fold,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (1..=4u128, 0..3u8).prop_map(|(n, variant)| Step::Save { n, variant }),
        3 => proptest::collection::vec(0..5u8, 1..=4).prop_map(|kinds| Step::Reply { kinds }),
        2 => (1..=4u128, 0..3u8).prop_map(|(n, variant)| Step::Pull { n, variant }),
        1 => Just(Step::Fold),
    ]
}

/// The server's side of the comparison: revisions numbered per household, conflict ids.
#[derive(Default)]
struct Registry {
    revs: BTreeMap<Uuid, u32>,
    last_conflict: u64,
}

impl Registry {
    fn next_rev(&mut self, id: Uuid) -> u32 {
        let rev = self.revs.entry(id).or_default();
        *rev += 1;
        *rev
    }

    fn outcome(&mut self, mutation: &Mutation, kind: u8) -> Option<MutationOutcome> {
        let outcome = match kind {
            0 => Outcome::Applied {
                rev: self.next_rev(mutation.household_id),
            },
            1 => Outcome::Merged {
                rev: self.next_rev(mutation.household_id),
            },
            2 => {
                self.last_conflict += 1;
                Outcome::Conflict {
                    rev: self.next_rev(mutation.household_id),
                    conflict_id: self.last_conflict,
                    fields: Vec::new(),
                }
            }
            3 => Outcome::Rejected {
                reason: "thiếu chủ hộ / no head".into(),
            },
            _ => return None,
        };
        Some(MutationOutcome {
            seq: mutation.seq,
            household_id: mutation.household_id,
            outcome,
        })
    }
}

fn awaiting(store: &Store) -> Vec<Mutation> {
    store
        .inner
        .db
        .scan_prefix([keys::AWAITING])
        .map(|item| rows::decode_mutation(&item.expect("read").1).expect("a mutation"))
        .collect()
}

fn with_address(n: u128, variant: u8, by: &str) -> protocol::household::Household {
    let mut household = sample(n);
    household.address = format!("Số {n}{variant}, {by}");
    household
}

fn do_step(
    step: &Step,
    apart: &Store,
    in_rows: &Store,
    registry: &mut Registry,
) -> Result<(), String> {
    match step {
        Step::Save { n, variant } => {
            for store in [apart, in_rows] {
                store
                    .save_household(&with_address(*n, *variant, "thôn Đông"))
                    .map_err(|e| e.to_string())?;
            }
        }
        Step::Reply { kinds } => {
            let pending = apart.pending().map_err(|e| e.to_string())?;
            let taken = &pending[..kinds.len().min(pending.len())];
            let Some(last) = taken.last() else {
                return Ok(());
            };
            let outcomes: Vec<MutationOutcome> = taken
                .iter()
                .zip(kinds)
                .filter_map(|(mutation, kind)| registry.outcome(mutation, *kind))
                .collect();
            apart
                .record_push_reply_keeping(&outcomes, last.seq, KeepAccepted::Apart)
                .map_err(|e| e.to_string())?;
            in_rows
                .record_push_reply_keeping(&outcomes, last.seq, KeepAccepted::InTheRow)
                .map_err(|e| e.to_string())?;
        }
        Step::Pull { n, variant } => {
            let outcomes: Vec<MutationOutcome> = awaiting(apart)
                .iter()
                .filter_map(|mutation| registry.outcome(mutation, 0))
                .collect();
            let id = sample(*n).id;
            let rev = registry.next_rev(id);
            let fields = fields::flatten(&with_address(*n, *variant, "ngõ Tây"));
            for store in [apart, in_rows] {
                let cursor = store.cursor().map_err(|e| e.to_string())?;
                store
                    .record_pull_page(PullResponse {
                        changes: vec![HouseholdChange {
                            seq: cursor + 1,
                            household_id: id,
                            rev,
                            fields: protocol::fields::EncodedFields::encode(&fields),
                            review: ReviewState::Submitted,
                            in_conflict: false,
                        }],
                        next_cursor: cursor + 1,
                        more: false,
                        outcomes: outcomes.clone(),
                        left_scope: vec![],
                        scope: protocol::access::Scope::Everything,
                    })
                    .map_err(|e| e.to_string())?;
            }
        }
        Step::Fold => {
            apart.fold_acknowledged().map_err(|e| e.to_string())?;
            if household_rows(apart) != household_rows(in_rows) {
                return Err("folded rows differ from rows written at once".into());
            }
        }
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 48,
        ..proptest::test_runner::Config::default()
    })]

    /// Saves, push replies of every outcome, pulls and folds, done to a store that keeps
    /// applied and merged outcomes apart and to one that writes them into the rows: after
    /// every step the enumerator sees the same in both, and after a fold the rows are the
    /// same byte for byte.
    #[test]
    fn outcomes_kept_apart_are_never_seen_apart(
        steps in proptest::collection::vec(step(), 1..24)
    ) {
        let (_a, apart) = store();
        let (_b, in_rows) = store();
        let mut registry = Registry::default();
        for (at, step) in steps.iter().enumerate() {
            do_step(step, &apart, &in_rows, &mut registry)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("step {at} {step:?}: {e}")))?;
            proptest::prop_assert!(
                seen(&apart) == seen(&in_rows)
                    && apart.rejections().ok() == in_rows.rejections().ok(),
                "step {} {:?}: the stores show different things",
                at,
                step
            );
        }
        do_step(&Step::Fold, &apart, &in_rows, &mut registry)
            .map_err(proptest::test_runner::TestCaseError::fail)?;
        proptest::prop_assert_eq!(apart.acknowledged_rows(), 0);
    }
}

/// The outbox trees in the store, by name.
fn outbox_trees(store: &Store) -> Vec<String> {
    store
        .inner
        .db
        .tree_names()
        .into_iter()
        .filter(|name| name.starts_with(b"outbox-"))
        .map(|name| String::from_utf8_lossy(&name).into_owned())
        .collect()
}

fn pending_seqs(store: &Store) -> Vec<u64> {
    store
        .pending()
        .expect("pending")
        .iter()
        .map(|m| m.seq)
        .collect()
}

#[test]
fn a_reply_clears_its_entries_and_the_store_turns_to_an_empty_outbox_tree() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(dir.path()).expect("open");
        for n in 1..=3 {
            store.save_household(&sample(n)).expect("save");
        }
        assert_eq!(outbox_trees(&store), vec!["outbox-0"]);
        assert_eq!(acknowledge_all(&store), 3);
        assert!(store.pending().expect("pending").is_empty());
        // The cleared tree stays until no step can read it: the store's close.
        assert_eq!(outbox_trees(&store), vec!["outbox-0", "outbox-1"]);
        assert_eq!(store.inner.outbox.tree().len(), 0);
        assert_eq!(
            store.save_household(&sample(4)).expect("save").mutation_seq,
            4
        );
        assert_eq!(pending_seqs(&store), vec![4]);
    }
    let store = crate::test_support::reopen(dir.path());
    assert_eq!(outbox_trees(&store), vec!["outbox-1"]);
    assert_eq!(pending_seqs(&store), vec![4]);
    let households = store.households().expect("households");
    assert_eq!(households.len(), 4);
    assert_eq!(households.iter().filter(|h| h.pending).count(), 1);
}

/// Saves households 1 to `saved` and records a reply through seq 3 with an outcome for seq 2
/// only: 1 and 3 then wait for theirs.
fn reply_through_3_with_an_outcome_for_2(store: &Store, saved: u128) {
    for n in 1..=saved {
        store.save_household(&sample(n)).expect("save");
    }
    let pending = store.pending().expect("pending");
    store
        .record_push_reply(&[applied(&pending[1], 1)], 3)
        .expect("reply");
}

#[test]
fn mutations_put_back_for_a_server_that_lost_them_bring_back_no_cleared_entry() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    // 4 is still to send, so the tree is not turned from and the cleared entries 1–3 are
    // still in it.
    reply_through_3_with_an_outcome_for_2(&store, 4);
    assert_eq!(pending_seqs(&store), vec![4]);
    assert_eq!(store.inner.outbox.tree().len(), 4);
    assert_eq!(store.restore_awaiting(1).expect("restore"), vec![1, 3]);
    assert_eq!(pending_seqs(&store), vec![1, 3, 4]);
    assert!(awaiting(&store).is_empty());
    drop(store);
    let store = crate::test_support::reopen(dir.path());
    assert_eq!(pending_seqs(&store), vec![1, 3, 4]);
    // Sent and acknowledged again, all of them: the tree empties and is turned from.
    let pending = store.pending().expect("pending");
    let outcomes: Vec<_> = pending.iter().map(|m| applied(m, 1)).collect();
    store.record_push_reply(&outcomes, 4).expect("reply");
    assert!(store.pending().expect("pending").is_empty());
    assert_eq!(store.inner.outbox.tree().len(), 0);
}

#[test]
fn a_store_that_kept_its_outbox_among_its_rows_is_taken_up() {
    // Layout 2, and a store older than the layout mark.
    for layout in [Some(2), None] {
        let dir = tempfile::tempdir().expect("dir");
        let before;
        {
            let store = Store::open(dir.path()).expect("open");
            for n in 1..=2 {
                store.save_household(&sample(n)).expect("save");
            }
            before = store.pending().expect("pending");
            // As those kept them: the entries among the other rows, no outbox tree.
            let tree = store.inner.outbox.tree();
            for item in tree.iter() {
                let (key, value) = item.expect("read");
                store.inner.db.insert(key, value).expect("write");
            }
            tree.clear().expect("clear");
            let mark = keys::meta(keys::META_LAYOUT);
            match layout {
                Some(layout) => store.inner.db.insert(mark, rows::encode_u64(layout)),
                None => store.inner.db.remove(mark),
            }
            .expect("write");
            store.inner.db.flush().expect("flush");
        }
        let store = crate::test_support::reopen(dir.path());
        assert_eq!(
            store.pending().expect("pending"),
            before,
            "layout {layout:?}"
        );
        assert_eq!(store.inner.db.scan_prefix([keys::OUTBOX]).count(), 0);
        assert_eq!(store.inner.outbox.tree().len(), 2);
        assert_eq!(
            store.read().meta_u64(keys::META_LAYOUT).expect("layout"),
            Some(LAYOUT_VERSION)
        );
    }
}

#[test]
fn an_outbox_tree_left_by_a_crash_is_dropped_and_its_entries_stay_gone() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(dir.path()).expect("open");
        // The tree is all cleared and turned from.
        reply_through_3_with_an_outcome_for_2(&store, 3);
        assert_eq!(outbox_trees(&store), vec!["outbox-0", "outbox-1"]);
        // Put back for a server that lost them: the mark goes below the entries of the tree
        // turned from, which the store has not dropped yet.
        assert_eq!(store.restore_awaiting(1).expect("restore"), vec![1, 3]);
        assert_eq!(pending_seqs(&store), vec![1, 3]);
        // As a crash leaves it: the old tree not dropped as the store closes.
        store.inner.outbox.retired.lock().expect("lock").clear();
    }
    let store = crate::test_support::reopen(dir.path());
    assert_eq!(outbox_trees(&store), vec!["outbox-1"]);
    assert_eq!(pending_seqs(&store), vec![1, 3]);
}

/// One step of [`the_outbox_holds_what_is_pending_whatever_the_replies`].
#[derive(Clone, Debug)]
enum OutboxStep {
    /// A save of household `n` (an earlier pending entry of it is rewritten).
    Save {
        n: u128,
    },
    /// A reply for the first `count` pending entries, `with` of them with an outcome (the
    /// rest wait for theirs).
    Reply {
        count: usize,
        with: usize,
    },
    /// A seq gap: the server says it has everything below the `past`-th pending entry.
    Gap {
        past: usize,
    },
    /// The outcomes of every awaiting mutation, with a pull.
    Outcomes,
    /// Awaiting mutations from the `from`-th on go back to the outbox.
    Restore {
        from: usize,
    },
    Reopen,
    /// A reopen after a crash: the trees turned from are not dropped as the store closes.
    Crash,
}

fn outbox_step() -> impl proptest::strategy::Strategy<Value = OutboxStep> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0u128..4).prop_map(|n| OutboxStep::Save { n }),
        2 => (1usize..4, 0usize..4).prop_map(|(count, with)| OutboxStep::Reply { count, with }),
        1 => (0usize..3).prop_map(|past| OutboxStep::Gap { past }),
        1 => Just(OutboxStep::Outcomes),
        1 => (0usize..3).prop_map(|from| OutboxStep::Restore { from }),
        1 => Just(OutboxStep::Reopen),
        1 => Just(OutboxStep::Crash),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 64,
        ..proptest::test_runner::Config::default()
    })]

    /// Saves, replies with and without outcomes, seq gaps, outcomes with a pull, mutations
    /// put back, reopens and crashes: after every step the outbox holds exactly the seqs a model says
    /// are pending, and the awaiting rows the ones it says await an outcome. Cleared entries
    /// never come back, and the store turns from an outbox tree only once all its entries are
    /// cleared.
    #[test]
    fn the_outbox_holds_what_is_pending_whatever_the_replies(
        steps in proptest::collection::vec(outbox_step(), 1..32)
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = Store::open(dir.path()).expect("open");
        let mut pending: Vec<u64> = Vec::new();
        let mut waiting: Vec<u64> = Vec::new();
        for (at, step) in steps.iter().enumerate() {
            match step {
                OutboxStep::Save { n } => {
                    let seq = store.save_household(&with_address(*n, at as u8, "lưu")).expect("save");
                    pending.push(seq.mutation_seq);
                }
                OutboxStep::Reply { count, with } => {
                    let Some(&last) = pending.get(count.min(&pending.len()).saturating_sub(1)) else {
                        continue;
                    };
                    let mutations = store.pending().expect("pending");
                    let outcomes: Vec<_> = mutations
                        .iter()
                        .take((*count).min(*with))
                        .map(|m| applied(m, 1))
                        .collect();
                    store.record_push_reply(&outcomes, last).expect("reply");
                    let answered: Vec<u64> = outcomes.iter().map(|o| o.seq).collect();
                    waiting.extend(pending.iter().filter(|&&s| s <= last && !answered.contains(&s)));
                    pending.retain(|&s| s > last);
                }
                OutboxStep::Gap { past } => {
                    let Some(&expected) = pending.get(*past) else { continue };
                    store.record_seq_gap(expected).expect("gap");
                    waiting.extend(pending.iter().filter(|&&s| s < expected));
                    pending.retain(|&s| s >= expected);
                }
                OutboxStep::Outcomes => {
                    let outcomes: Vec<_> = awaiting(&store).iter().map(|m| applied(m, 1)).collect();
                    let cursor = store.cursor().expect("cursor");
                    store
                        .record_pull_page(PullResponse {
                            changes: vec![],
                            next_cursor: cursor,
                            more: false,
                            outcomes,
                            left_scope: vec![],
                            scope: protocol::access::Scope::Everything,
                        })
                        .expect("page");
                    waiting.clear();
                }
                OutboxStep::Restore { from } => {
                    waiting.sort_unstable();
                    let Some(&first) = waiting.get(*from) else { continue };
                    let restored = store.restore_awaiting(first).expect("restore");
                    let back: Vec<u64> = waiting.iter().copied().filter(|&s| s >= first).collect();
                    proptest::prop_assert_eq!(&restored, &back);
                    waiting.retain(|&s| s < first);
                    pending.extend(back);
                }
                OutboxStep::Reopen | OutboxStep::Crash => {
                    if matches!(step, OutboxStep::Crash) {
                        store.inner.outbox.retired.lock().expect("lock").clear();
                    }
                    drop(store);
                    store = crate::test_support::reopen(dir.path());
                }
            }
            pending.sort_unstable();
            waiting.sort_unstable();
            let mut awaited: Vec<u64> = awaiting(&store).iter().map(|m| m.seq).collect();
            awaited.sort_unstable();
            proptest::prop_assert_eq!(&pending_seqs(&store), &pending, "step {} {:?}: pending", at, step);
            proptest::prop_assert_eq!(&awaited, &waiting, "step {} {:?}: awaiting", at, step);
            // A tree is turned from only when nothing in it is pending.
            let in_tree = store.inner.outbox.tree().len();
            proptest::prop_assert!(in_tree >= pending.len(), "step {} {:?}: {} in the tree", at, step, in_tree);
        }
    }
}
