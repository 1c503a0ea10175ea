//! Unit tests of the push and pull logic in process, and of the HTTP mapping over a real
//! socket. The end-to-end tests with real devices live in the workspace's `tests/` crate.

use protocol::fields::{self, FieldChange, FieldMap, FieldValue};
use protocol::household::{
    Date, Dwelling, Household, HouseholdFlags, IncomeEvidence, Member, PovertyCauses, Relationship,
    ReviewRound, RoundKind, Sex,
};
use protocol::sync::{
    Base, Mutation, Outcome, PullRequest, PullResponse, PushReply, PushRequest, ReviewState,
};
use uuid::Uuid;

use crate::{AppError, AppState, RevisionCause};

fn member(name: &str, relationship: Relationship) -> Member {
    Member {
        id: Uuid::now_v7(),
        full_name: name.to_string(),
        sex: Sex::Female,
        date_of_birth: Date::new(1980, 5, 2).expect("valid date"),
        personal_id: None,
        relationship,
        ethnicity: Some("Kinh".to_string()),
        in_school: None,
        qualification: None,
        employment: None,
        has_pension: None,
        health_insurance: Some(true),
        disability_or_severe_illness: None,
        child_nutrition: None,
    }
}

fn household(head: &str) -> Household {
    let head = member(head, Relationship::Head);
    Household {
        id: Uuid::now_v7(),
        round: ReviewRound {
            year: 2025,
            kind: RoundKind::Periodic,
        },
        commune_code: "00004".to_string(),
        village: "Thôn Đông".to_string(),
        address: "Số 1, đường Làng".to_string(),
        gps: None,
        head_member_id: Some(head.id),
        members: vec![head],
        flags: HouseholdFlags::default(),
        income: IncomeEvidence::default(),
        dwelling: Dwelling::default(),
        causes_of_poverty: PovertyCauses::default(),
        support_needs: Vec::new(),
        void: None,
    }
}

/// The changes from `from` to `to`, as a device would send them.
fn changes(from: Option<&Household>, to: &Household) -> Vec<FieldChange> {
    let old = from.map(fields::flatten).unwrap_or_default();
    fields::diff(&old, &fields::flatten(to))
}

fn mutation(seq: u64, id: Uuid, base: Base, changes: Vec<FieldChange>) -> Mutation {
    Mutation {
        seq,
        household_id: id,
        base,
        changes,
        made_at_ms: 1_700_000_000_000,
    }
}

fn create(seq: u64, record: &Household) -> Mutation {
    mutation(seq, record.id, Base::New, changes(None, record))
}

fn edit(seq: u64, base: u32, from: &Household, to: &Household) -> Mutation {
    mutation(seq, from.id, Base::Rev(base), changes(Some(from), to))
}

struct Fixture {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = AppState::open(dir.path()).expect("open registry");
    Fixture { state, _dir: dir }
}

async fn push(state: &AppState, device: Uuid, mutations: Vec<Mutation>) -> Vec<Outcome> {
    match state
        .push(PushRequest {
            device_id: device,
            mutations,
        })
        .await
        .expect("push succeeds")
    {
        PushReply::Accepted { outcomes, .. } => outcomes.into_iter().map(|o| o.outcome).collect(),
        PushReply::SeqGap { expected } => panic!("unexpected seq gap, expected {expected}"),
    }
}

async fn pull(state: &AppState, device: Uuid, cursor: u64, limit: u32) -> PullResponse {
    state
        .pull(PullRequest {
            device_id: device,
            cursor,
            limit,
            outcomes_from: u64::MAX,
        })
        .await
        .expect("pull succeeds")
}

fn stored(state: &AppState, id: Uuid) -> Household {
    state
        .registry()
        .household(id)
        .expect("read")
        .expect("exists")
        .household()
        .expect("well-formed")
}

#[tokio::test]
async fn a_create_makes_revision_one_and_reaches_a_pull() {
    let Fixture { state, _dir } = fixture();
    let device = Uuid::now_v7();
    let record = household("Nguyễn Thị Lan");
    let outcomes = push(&state, device, vec![create(1, &record)]).await;
    assert_eq!(outcomes, vec![Outcome::Applied { rev: 1 }]);

    let registry = state.registry();
    assert_eq!(stored(&state, record.id), record);
    let history = registry.history(record.id).expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].rev, history[0].why, history[0].device_id),
        (1, RevisionCause::Create, device)
    );
    assert_eq!(registry.household_count().expect("count"), 1);
    assert_eq!(registry.head_seq().expect("head"), 1);
    assert_eq!(registry.device_last_seq(device).expect("seq"), 1);

    let page = pull(&state, Uuid::now_v7(), 0, 100).await;
    assert_eq!((page.next_cursor, page.more), (1, false));
    assert_eq!(page.changes.len(), 1);
    let change = &page.changes[0];
    assert_eq!((change.seq, change.rev, change.in_conflict), (1, 1, false));
    assert_eq!(change.review, ReviewState::Submitted);
    assert_eq!(change.fields.decode(), Ok(fields::flatten(&record)));
}

#[tokio::test]
async fn a_replay_returns_the_stored_outcomes_and_applies_nothing() {
    let Fixture { state, _dir } = fixture();
    let device = Uuid::now_v7();
    let record = household("Trần Văn Bình");
    let mut edited = record.clone();
    edited.address = "Số 9".to_string();
    let batch = vec![create(1, &record), edit(2, 1, &record, &edited)];
    let request = PushRequest {
        device_id: device,
        mutations: batch,
    };
    let first = state.push(request.clone()).await.expect("push");
    let head = state.registry().head_seq().expect("head");
    let again = state.push(request.clone()).await.expect("replay");
    assert_eq!(first, again);
    assert_eq!(state.registry().head_seq().expect("head"), head);
    assert_eq!(
        state.registry().history(record.id).expect("history").len(),
        2
    );

    // A batch that starts with replays and goes on with a new mutation applies only the new one.
    let mut more = edited.clone();
    more.village = "Thôn Tây".to_string();
    let mut mutations = request.mutations;
    mutations.push(edit(3, 2, &edited, &more));
    let outcomes = push(&state, device, mutations).await;
    assert_eq!(outcomes[2], Outcome::Applied { rev: 3 });
    assert_eq!(
        state.registry().history(record.id).expect("history").len(),
        3
    );

    // The outcomes also come with a pull.
    let page = state
        .pull(PullRequest {
            device_id: device,
            cursor: 0,
            limit: 10,
            outcomes_from: 2,
        })
        .await
        .expect("pull");
    let seqs: Vec<u64> = page.outcomes.iter().map(|o| o.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
}

#[tokio::test]
async fn a_gap_is_refused_with_the_seq_expected_and_changes_nothing() {
    let Fixture { state, _dir } = fixture();
    let device = Uuid::now_v7();
    let record = household("Lê Thị Cúc");
    let reply = state
        .push(PushRequest {
            device_id: device,
            mutations: vec![create(3, &record)],
        })
        .await
        .expect("push");
    assert_eq!(reply, PushReply::SeqGap { expected: 1 });
    assert_eq!(state.registry().head_seq().expect("head"), 0);
    assert_eq!(state.registry().device_last_seq(device).expect("seq"), 0);
    assert!(state
        .registry()
        .household(record.id)
        .expect("read")
        .is_none());
}

#[tokio::test]
async fn malformed_batches_are_refused_whole() {
    let Fixture { state, _dir } = fixture();
    let device = Uuid::now_v7();
    let record = household("Phạm Văn Dũng");
    let mut twice = create(1, &record);
    twice.changes.push(twice.changes[0].clone());
    let too_long = mutation(
        1,
        record.id,
        Base::New,
        vec![FieldChange {
            path: "address".to_string(),
            value: Some(FieldValue::Text("x".repeat(5_000))),
        }],
    );
    for (what, mutations, says) in [
        ("empty", Vec::new(), "no mutations"),
        ("duplicate path", vec![twice], "twice"),
        ("oversized text", vec![too_long], "at most"),
        ("seq zero", vec![create(0, &record)], "start at 1"),
        (
            "gap inside",
            vec![create(1, &record), create(3, &household("Ngô Văn Em"))],
            "follow each other",
        ),
    ] {
        let error = state
            .push(PushRequest {
                device_id: device,
                mutations,
            })
            .await
            .expect_err(what);
        assert!(
            matches!(&error, AppError::InvalidRequest(message) if message.contains(says)),
            "{what}: {error}"
        );
    }
    assert_eq!(state.registry().head_seq().expect("head"), 0);
    assert_eq!(state.registry().device_last_seq(device).expect("seq"), 0);
}

#[tokio::test]
async fn different_fields_merge_and_the_same_field_conflicts() {
    let Fixture { state, _dir } = fixture();
    let (lan, minh) = (Uuid::now_v7(), Uuid::now_v7());
    let original = household("Hoàng Văn Giang");
    push(&state, lan, vec![create(1, &original)]).await;

    let mut by_lan = original.clone();
    by_lan.address = "Số 10".to_string();
    assert_eq!(
        push(&state, lan, vec![edit(2, 1, &original, &by_lan)]).await,
        vec![Outcome::Applied { rev: 2 }]
    );

    let mut by_minh = original.clone();
    by_minh.dwelling.floor_area_m2 = Some(18);
    assert_eq!(
        push(&state, minh, vec![edit(1, 1, &original, &by_minh)]).await,
        vec![Outcome::Merged { rev: 3 }]
    );
    let mut expected = by_lan.clone();
    expected.dwelling.floor_area_m2 = Some(18);
    assert_eq!(stored(&state, original.id), expected);

    // Minh edits the address too, still on revision 1: a conflict with Lan's value.
    let mut again = by_minh.clone();
    again.address = "Số 12".to_string();
    again.support_needs = vec!["học nghề".to_string()];
    let outcomes = push(&state, minh, vec![edit(2, 1, &original, &again)]).await;
    let Outcome::Conflict {
        rev,
        conflict_id,
        fields,
    } = &outcomes[0]
    else {
        panic!("expected a conflict, got {outcomes:?}");
    };
    assert_eq!(*rev, 4, "the support need applied as a new revision");
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].path, "address");
    assert_eq!(fields[0].theirs, Some(FieldValue::Text("Số 10".into())));
    assert_eq!(fields[0].mine, Some(FieldValue::Text("Số 12".into())));

    let row = state
        .registry()
        .household(original.id)
        .expect("read")
        .expect("exists");
    assert!(row.in_conflict());
    assert_eq!(row.open_conflicts, vec![*conflict_id]);
    let now = stored(&state, original.id);
    assert_eq!(now.address, "Số 10");
    assert_eq!(now.support_needs, vec!["học nghề".to_string()]);
    let records = state
        .registry()
        .conflicts(Some(original.id))
        .expect("conflicts");
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].device_id,
            records[0].mutation_seq,
            records[0].base_rev
        ),
        (minh, 2, Some(1))
    );
    assert_eq!(records[0].theirs_rev, 3);
    assert_eq!(&records[0].fields, fields);
    assert_eq!(
        state.registry().conflicts(None).expect("all conflicts"),
        records
    );
    let causes: Vec<RevisionCause> = state
        .registry()
        .history(original.id)
        .expect("history")
        .iter()
        .map(|r| r.why)
        .collect();
    assert_eq!(
        causes,
        vec![
            RevisionCause::Create,
            RevisionCause::Mutation,
            RevisionCause::Merge,
            RevisionCause::Conflict
        ]
    );

    // A pull shows only the latest state, once, flagged.
    let page = pull(&state, lan, 0, 100).await;
    assert_eq!(page.changes.len(), 1);
    assert_eq!(page.changes[0].rev, 4);
    assert!(page.changes[0].in_conflict);
}

#[tokio::test]
async fn a_conflict_that_changes_nothing_else_still_flags_the_household() {
    let Fixture { state, _dir } = fixture();
    let (lan, minh) = (Uuid::now_v7(), Uuid::now_v7());
    let original = household("Vũ Thị Hà");
    push(&state, lan, vec![create(1, &original)]).await;
    let mut by_lan = original.clone();
    by_lan.address = "Số 1A".to_string();
    push(&state, lan, vec![edit(2, 1, &original, &by_lan)]).await;
    let head = state.registry().head_seq().expect("head");

    let mut by_minh = original.clone();
    by_minh.address = "Số 1B".to_string();
    let outcomes = push(&state, minh, vec![edit(1, 1, &original, &by_minh)]).await;
    assert!(matches!(outcomes[0], Outcome::Conflict { rev: 2, .. }));
    assert_eq!(state.registry().history(original.id).expect("h").len(), 2);
    // The flag is a change devices must hear of.
    assert_eq!(state.registry().head_seq().expect("head"), head + 1);
    let page = pull(&state, lan, head, 10).await;
    assert_eq!(page.changes.len(), 1);
    assert!(page.changes[0].in_conflict);
}

#[tokio::test]
async fn a_merge_that_breaks_the_form_becomes_a_conflict_of_every_change() {
    let Fixture { state, _dir } = fixture();
    let (lan, minh) = (Uuid::now_v7(), Uuid::now_v7());
    let mut original = household("Đặng Văn Khoa");
    original
        .members
        .push(member("Đặng Thị Lụa", Relationship::Spouse));
    push(&state, lan, vec![create(1, &original)]).await;

    // Lan removes the spouse; Minh, on revision 1, makes her the head and changes the
    // address. Merged, the head would name a member who is gone.
    let mut by_lan = original.clone();
    by_lan.members.pop();
    push(&state, lan, vec![edit(2, 1, &original, &by_lan)]).await;
    let mut by_minh = original.clone();
    by_minh.head_member_id = Some(by_minh.members[1].id);
    by_minh.members[0].relationship = Relationship::Spouse;
    by_minh.members[1].relationship = Relationship::Head;
    by_minh.address = "Số 5".to_string();
    let outcomes = push(&state, minh, vec![edit(1, 1, &original, &by_minh)]).await;
    let Outcome::Conflict { rev, fields, .. } = &outcomes[0] else {
        panic!("expected a conflict, got {outcomes:?}");
    };
    assert_eq!(*rev, 2, "nothing applied: the record stays well-formed");
    let paths: Vec<&str> = fields.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"address"), "{paths:?}");
    assert!(paths.contains(&"head_member_id"), "{paths:?}");
    assert_eq!(stored(&state, original.id), by_lan);
}

#[tokio::test]
async fn invalid_and_foreign_mutations_are_rejected_kept_and_do_not_block_the_rest() {
    let Fixture { state, _dir } = fixture();
    let (lan, minh) = (Uuid::now_v7(), Uuid::now_v7());
    let mut invalid = household("Bùi Thị Mơ");
    invalid.members[0].date_of_birth = Date::new(2999, 1, 1).expect("valid date");
    let valid = household("Bùi Văn Nam");
    let mut other_id = household("Bùi Văn Ong");
    let claimed = Uuid::now_v7();
    let wrong_id = mutation(3, claimed, Base::New, changes(None, &other_id));
    other_id.id = claimed;

    let outcomes = push(
        &state,
        lan,
        vec![create(1, &invalid), create(2, &valid), wrong_id],
    )
    .await;
    assert!(
        matches!(&outcomes[0], Outcome::Rejected { reason } if reason.contains("Bùi Thị Mơ") && reason.contains("future")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Outcome::Applied { rev: 1 });
    assert!(
        matches!(&outcomes[2], Outcome::Rejected { reason } if reason.contains("is not the household id")),
        "{outcomes:?}"
    );
    assert_eq!(state.registry().device_last_seq(lan).expect("seq"), 3);
    let kept = state.registry().rejected().expect("rejected");
    assert_eq!(kept.len(), 2);
    assert!(kept
        .iter()
        .any(|r| r.mutation.household_id == invalid.id && r.mutation.changes.len() > 5));
    assert_eq!(state.registry().household_count().expect("count"), 1);

    // Another device cannot create over an existing household, nor edit an unknown revision.
    let outcomes = push(
        &state,
        minh,
        vec![
            create(1, &valid),
            edit(2, 9, &valid, &household("Bùi Văn Phúc")),
        ],
    )
    .await;
    assert!(
        matches!(&outcomes[0], Outcome::Rejected { reason } if reason.contains("already exists")),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[1], Outcome::Rejected { reason } if reason.contains("no revision 9")),
        "{outcomes:?}"
    );
    assert_eq!(stored(&state, valid.id), valid);
}

#[tokio::test]
async fn later_mutations_in_a_batch_see_the_earlier_ones() {
    let Fixture { state, _dir } = fixture();
    let device = Uuid::now_v7();
    let record = household("Cao Văn Quý");
    let mut edited = record.clone();
    edited.address = "Số 77".to_string();
    // Both made before the device heard of revision 1: cumulative changes on Base::New.
    let outcomes = push(
        &state,
        device,
        vec![
            create(1, &record),
            mutation(2, record.id, Base::New, changes(None, &edited)),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![Outcome::Applied { rev: 1 }, Outcome::Applied { rev: 2 }]
    );
    assert_eq!(stored(&state, edited.id), edited);
    assert_eq!(state.registry().head_seq().expect("head"), 2);
    let page = pull(&state, device, 0, 10).await;
    assert_eq!(page.changes.len(), 1, "the superseded entry is skipped");
    assert_eq!((page.changes[0].seq, page.changes[0].rev), (2, 2));
}

#[tokio::test]
async fn a_new_based_edit_from_the_creator_merges_against_revision_one() {
    let Fixture { state, _dir } = fixture();
    let (lan, minh) = (Uuid::now_v7(), Uuid::now_v7());
    let mut original = household("Lâm Văn Tú");
    original
        .members
        .push(member("Lâm Thị Vân", Relationship::Spouse));
    push(&state, lan, vec![create(1, &original)]).await;

    // Minh, who has revision 1, changes the address.
    let mut by_minh = original.clone();
    by_minh.address = "Số 20".to_string();
    push(&state, minh, vec![edit(1, 1, &original, &by_minh)]).await;

    // Lan has not heard back yet: her next save is still based on nothing, with every field
    // repeated and the removed member simply absent.
    let mut by_lan = original.clone();
    by_lan.members.pop();
    let outcomes = push(
        &state,
        lan,
        vec![mutation(2, original.id, Base::New, changes(None, &by_lan))],
    )
    .await;
    assert_eq!(outcomes, vec![Outcome::Merged { rev: 3 }]);
    let mut expected = by_lan.clone();
    expected.address = by_minh.address.clone();
    assert_eq!(stored(&state, original.id), expected);
    assert!(state
        .registry()
        .conflicts(None)
        .expect("conflicts")
        .is_empty());
}

/// Creates worked out ahead of the writer lock (`prepare_creates`, on as many threads as
/// there are) make the same registry, byte for byte, as the same batch worked out wholly
/// under the lock: valid creates, an invalid one, a later edit of one of them in the same
/// batch, a create of a household another device made first and a repeated create of one
/// this device made in an earlier push (both prepared and unused: the changes the prepared
/// creates took are given back, and the rejected mutation is kept whole), and a create whose
/// changes are out of order. The same batch sent as a packed push, its creates as records
/// whose packed maps the revisions keep as they came, makes it too.
#[test]
fn creates_prepared_ahead_make_the_registry_the_batch_would_make_itself() {
    use crate::merge_engine::{apply_push, prepare_creates, unpack_push, PreparedCreates};
    use crate::scope::Caller;
    use protocol::codec::packed_push;

    let (first, second) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let now_ms = 1_760_000_000_000;
    let taken = household("Đặng Thị Hoa");
    let mine = household("Đặng Văn Lâm");
    let mut mine_edited = mine.clone();
    mine_edited.village = "Thôn Tây".to_string();
    let records: Vec<Household> = (0..80).map(|n| household(&format!("Hộ số {n}"))).collect();
    let mut invalid = household("Đặng Văn Sai");
    invalid.members[0].date_of_birth = Date::new(2999, 1, 1).expect("valid date");
    let mut edited = records[3].clone();
    edited.address = "Số 9, ngõ 4".to_string();
    let mut mutations: Vec<Mutation> = vec![create(1, &taken)];
    mutations.extend(records.iter().map(|record| create(0, record)));
    mutations.push(create(0, &invalid));
    // An edit of a household this batch creates: with the create's record kept packed, the
    // edit reads the revision's fields back from its row (`NewRevision::fields`).
    mutations.push(mutation(0, edited.id, Base::New, changes(None, &edited)));
    mutations.push(mutation(0, mine.id, Base::New, changes(None, &mine_edited)));
    let mut shuffled = create(0, &household("Đặng Thị Xuân"));
    shuffled.changes.reverse();
    mutations.push(shuffled);
    for (seq, mutation) in mutations.iter_mut().enumerate() {
        mutation.seq = seq as u64 + 2;
    }
    let batch = PushRequest {
        device_id: second,
        mutations,
    };

    let (unpacked, packed_records) =
        unpack_push(&packed_push::encode_request(&batch)).expect("a packed push");
    // Every mutation but the shuffled create came as a record that may be kept (the two
    // edits made on nothing carry their whole records too), and waits without its changes.
    assert_eq!(packed_records.len(), 84);
    assert_eq!(
        unpacked
            .mutations
            .iter()
            .filter(|mutation| mutation.changes.is_empty())
            .count(),
        84
    );
    let mut whole = unpacked.clone();
    packed_records
        .clone()
        .give_back(&mut whole)
        .expect("changes decode");
    assert_eq!(whole, batch, "given back, they are the push as sent");

    let apply = |prepare: bool, packed: bool| {
        let Fixture { state, _dir } = fixture();
        let registry = state.registry();
        let reference = state.reference();
        let caller = Caller::Unrestricted;
        for (device, record) in [(first, &taken), (second, &mine)] {
            let earlier = PushRequest {
                device_id: device,
                mutations: vec![create(1, record)],
            };
            let prepared = PreparedCreates::default();
            apply_push(registry, &reference, &caller, &earlier, prepared, now_ms)
                .expect("an earlier push");
        }
        // Read from the packed push, the kept records' mutations come without their changes.
        let (mut batch, kept) = if packed {
            (unpacked.clone(), packed_records.clone())
        } else {
            (batch.clone(), Default::default())
        };
        let prepared = if prepare {
            prepare_creates(&reference, &caller, &mut batch, kept, 1, now_ms).expect("prepared")
        } else {
            PreparedCreates::default()
        };
        let (reply, _) =
            apply_push(registry, &reference, &caller, &batch, prepared, now_ms).expect("push");
        (reply, registry.digest().expect("digest"), _dir)
    };
    let (under_lock, under_lock_digest, _one) = apply(false, false);
    let (ahead, ahead_digest, _two) = apply(true, false);
    assert_eq!(ahead, under_lock);
    assert_eq!(ahead_digest, under_lock_digest);
    let (kept, kept_digest, _three) = apply(true, true);
    assert_eq!(kept, under_lock);
    assert_eq!(
        kept_digest, under_lock_digest,
        "the kept maps are the bytes packed here"
    );
    let PushReply::Accepted { outcomes, .. } = ahead else {
        panic!("accepted: {ahead:?}");
    };
    let outcomes: Vec<&Outcome> = outcomes.iter().map(|o| &o.outcome).collect();
    assert!(
        matches!(outcomes[0], Outcome::Rejected { reason } if reason.contains("already exists")),
        "{outcomes:?}"
    );
    assert!(outcomes[1..=80]
        .iter()
        .all(|outcome| **outcome == Outcome::Applied { rev: 1 }));
    assert!(
        matches!(outcomes[81], Outcome::Rejected { reason } if reason.contains("future")),
        "{outcomes:?}"
    );
    assert_eq!(*outcomes[82], Outcome::Applied { rev: 2 });
    assert_eq!(*outcomes[83], Outcome::Applied { rev: 2 });
    assert_eq!(*outcomes[84], Outcome::Applied { rev: 1 });
}

#[test]
fn a_record_kept_packed_gets_its_changes_back_wherever_its_create_is_not_made() {
    use crate::merge_engine::{apply_push, prepare_creates, unpack_push, PreparedCreates};
    use crate::scope::{Caller, Credential, Principal};
    use protocol::codec::packed_push;

    let (first, second) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let now_ms = 1_760_000_000_000;
    let taken = household("Đặng Thị Hoa");
    let fresh = household("Đặng Văn Lâm");
    let mut invalid = household("Đặng Văn Sai");
    invalid.members[0].date_of_birth = Date::new(2999, 1, 1).expect("valid date");
    let batch = PushRequest {
        device_id: second,
        mutations: vec![create(1, &taken), create(2, &fresh), create(3, &invalid)],
    };
    let (unpacked, kept) =
        unpack_push(&packed_push::encode_request(&batch)).expect("a packed push");
    assert_eq!(kept.len(), 3);
    assert!(unpacked.mutations.iter().all(|m| m.changes.is_empty()));

    let Fixture { state, _dir } = fixture();
    let registry = state.registry();
    let reference = state.reference();
    let unrestricted = Caller::Unrestricted;
    let revoked = Caller::User(std::sync::Arc::new(Principal {
        username: "bi.thu.hoi".into(),
        role: crate::scope::Role::Enumerator,
        scope: protocol::access::Scope::Everything,
        credential: Credential::Device {
            id: second,
            revoked: true,
            caught_up_ms: None,
        },
        address: None,
        areas: std::sync::Arc::new(reference.areas.clone()),
    }));
    // Replayed (the registry is past them), or from a revoked device (kept for review): no
    // create is made, and every mutation is whole again.
    for (caller, last_seq) in [(&unrestricted, 3), (&revoked, 0)] {
        let mut request = unpacked.clone();
        prepare_creates(
            &reference,
            caller,
            &mut request,
            kept.clone(),
            last_seq,
            now_ms,
        )
        .expect("prepared");
        assert_eq!(request, batch);
    }
    // Made, the creates wait without their changes; refused, it has them back at once.
    let mut request = unpacked.clone();
    let prepared = prepare_creates(&reference, &unrestricted, &mut request, kept, 0, now_ms)
        .expect("prepared");
    assert!(request.mutations[0].changes.is_empty());
    assert!(request.mutations[1].changes.is_empty());
    assert_eq!(request.mutations[2], batch.mutations[2]);
    // Another device recorded the first household meanwhile: the batch does not make that
    // create, and the rejection it keeps holds the changes, read back from the row.
    let earlier = PushRequest {
        device_id: first,
        mutations: vec![create(1, &taken)],
    };
    apply_push(
        registry,
        &reference,
        &unrestricted,
        &earlier,
        PreparedCreates::default(),
        now_ms,
    )
    .expect("an earlier push");
    let (reply, _) = apply_push(
        registry,
        &reference,
        &unrestricted,
        &request,
        prepared,
        now_ms,
    )
    .expect("push");
    let PushReply::Accepted { outcomes, .. } = reply else {
        panic!("accepted: {reply:?}");
    };
    assert!(
        matches!(&outcomes[0].outcome, Outcome::Rejected { reason } if reason.contains("already exists"))
    );
    assert_eq!(outcomes[1].outcome, Outcome::Applied { rev: 1 });
    assert!(
        matches!(&outcomes[2].outcome, Outcome::Rejected { reason } if reason.contains("future"))
    );
    let mut rejected: Vec<Mutation> = registry
        .rejected()
        .expect("rejected")
        .into_iter()
        .map(|rejected| rejected.mutation)
        .collect();
    rejected.sort_by_key(|mutation| mutation.seq);
    assert_eq!(
        rejected,
        vec![batch.mutations[0].clone(), batch.mutations[2].clone()]
    );
    let stored = registry
        .revision_fields(fresh.id, 1)
        .expect("read")
        .expect("made");
    assert_eq!(stored, fields::flatten(&fresh));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_from_many_devices_keep_the_change_log_gap_free() {
    let Fixture { state, _dir } = fixture();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let device = Uuid::now_v7();
            let mut ids = Vec::new();
            for round in 0..4u64 {
                let batch: Vec<Household> = (0..5).map(|n| household(&format!("Hộ {n}"))).collect();
                ids.extend(batch.iter().map(|h| h.id));
                let mutations = batch
                    .iter()
                    .enumerate()
                    .map(|(n, h)| create(round * 5 + n as u64 + 1, h))
                    .collect();
                push(&state, device, mutations).await;
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let registry = state.registry();
    assert_eq!(registry.household_count().expect("count"), all.len() as u64);
    assert_eq!(registry.head_seq().expect("head"), all.len() as u64);
    let page = pull(&state, Uuid::now_v7(), 0, 1_000).await;
    let seqs: Vec<u64> = page.changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn pulls_come_in_pages_in_seq_order() {
    let Fixture { state, _dir } = fixture();
    let device = Uuid::now_v7();
    let records: Vec<Household> = (0..5).map(|n| household(&format!("Hộ {n}"))).collect();
    let mutations = records
        .iter()
        .enumerate()
        .map(|(n, r)| create(n as u64 + 1, r))
        .collect();
    push(&state, device, mutations).await;

    let mut cursor = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = pull(&state, device, cursor, 2).await;
        pages += 1;
        seen.extend(page.changes.iter().map(|c| c.household_id));
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(cursor, 5);
    assert_eq!(seen, records.iter().map(|r| r.id).collect::<Vec<_>>());
    let empty = pull(&state, device, 5, 0).await;
    assert!(empty.changes.is_empty() && !empty.more && empty.next_cursor == 5);
    let ahead = state
        .pull(PullRequest {
            device_id: device,
            cursor: 6,
            limit: 10,
            outcomes_from: u64::MAX,
        })
        .await;
    assert!(matches!(ahead, Err(AppError::InvalidRequest(m)) if m.contains("ahead")));
}

#[tokio::test]
async fn acknowledged_pushes_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let device = Uuid::now_v7();
    let record = household("Đinh Thị Sen");
    {
        let state = AppState::open(dir.path()).expect("open");
        push(&state, device, vec![create(1, &record)]).await;
    }
    let state = crate::store::when_unlocked(|| AppState::open(dir.path())).expect("reopen");
    assert_eq!(stored(&state, record.id), record);
    assert_eq!(state.registry().device_last_seq(device).expect("seq"), 1);
    assert_eq!(state.registry().head_seq().expect("head"), 1);
    let empty: FieldMap = FieldMap::new();
    assert_ne!(
        state
            .registry()
            .revision(record.id, 1)
            .expect("read")
            .expect("exists")
            .fields,
        empty
    );
}

mod http {
    //! The HTTP mapping, over a real socket with hand-written HTTP/1.1.

    use super::*;
    use std::io::{Read, Write};

    struct Running {
        addr: std::net::SocketAddr,
        state: AppState,
        /// An enrolled device of an administrator of everything, and its token.
        device: Uuid,
        token: String,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        served: tokio::task::JoinHandle<std::io::Result<()>>,
        _dir: tempfile::TempDir,
    }

    impl Running {
        /// Stops the server and checks that it shut down cleanly.
        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            (&mut self.served)
                .await
                .expect("server task")
                .expect("clean shutdown");
        }
    }

    async fn start() -> Running {
        let Fixture { state, _dir } = fixture();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(crate::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let auth = state.auth();
        auth.create_user(
            &crate::auth::Actor::command_line(),
            crate::auth::NewUser {
                username: "quan.tri".to_string(),
                password: "mật khẩu thử nghiệm".to_string(),
                role: crate::scope::Role::Administrator,
                areas: vec![crate::auth::Area::Everything],
            },
        )
        .expect("create the administrator");
        let device = Uuid::now_v7();
        let token = auth
            .enrol("quan.tri", "mật khẩu thử nghiệm", device, None)
            .expect("enrol")
            .token;
        Running {
            addr,
            state,
            device,
            token,
            stop: Some(stop),
            served,
            _dir,
        }
    }

    /// Sends one request and returns the status, the content type and the body. Blocking std
    /// I/O on a blocking thread keeps the test free of an HTTP client.
    async fn send(
        addr: std::net::SocketAddr,
        token: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let (status, head, body) = send_with(addr, token, method, path, "", body).await;
        let content_type = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_string)
            })
            .unwrap_or_default();
        (status, content_type, body)
    }

    /// Sends one request with `extra` header lines (each ending in `\r\n`) and returns the
    /// status, the whole response head and the body.
    async fn send_with(
        addr: std::net::SocketAddr,
        token: &str,
        method: &str,
        path: &str,
        extra: &str,
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let authorization = if token.is_empty() {
            String::new()
        } else {
            format!("authorization: Bearer {token}\r\n")
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n{authorization}{extra}content-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let body = body.to_vec();
        let response = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.write_all(head.as_bytes()).expect("write head");
            stream.write_all(&body).expect("write body");
            let mut response = Vec::new();
            stream.read_to_end(&mut response).expect("read");
            response
        })
        .await
        .expect("client thread");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        let status = head[9..12].parse().expect("status code");
        (
            status,
            head.to_ascii_lowercase(),
            response[split + 4..].to_vec(),
        )
    }

    #[tokio::test]
    async fn sync_bodies_travel_compressed_when_the_device_says_so() {
        let server = start().await;
        let (addr, device) = (server.addr, server.device);
        let token = server.token.clone();
        let token = token.as_str();
        let compressed = "content-encoding: zstd\r\n";
        let records: Vec<Household> = ["Đinh Văn Hùng", "Mùa A Sùng", "Hà Thị Nguyệt"]
            .iter()
            .map(|head| household(head))
            .collect();
        let request = protocol::codec::encode(&PushRequest {
            device_id: device,
            mutations: (1u64..)
                .zip(&records)
                .map(|(seq, record)| create(seq, record))
                .collect(),
        });
        let body = protocol::codec::compress(&request).expect("a push of households compresses");
        assert!(
            body.len() * 2 < request.len(),
            "{} of {}",
            body.len(),
            request.len()
        );

        // A coding the server does not speak, a corrupt frame and a bomb change nothing.
        let bomb = protocol::codec::compress(&vec![0u8; 64 * 1024 * 1024]).expect("compresses");
        let mut corrupt = body.clone();
        corrupt.truncate(body.len() / 2);
        let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
            (
                "gzip",
                "content-encoding: gzip\r\n",
                &body,
                400,
                "Content-Encoding 'gzip' is not supported",
            ),
            ("corrupt", compressed, &corrupt, 400, "zstd body is corrupt"),
            ("bomb", compressed, &bomb, 413, "over the limit"),
        ];
        for (what, header, body, want, says) in cases {
            let (status, _, message) =
                send_with(addr, token, "POST", "/v1/sync/push", header, body).await;
            let message = String::from_utf8_lossy(&message).to_string();
            assert_eq!(status, want, "{what}: {message}");
            assert!(message.contains(says), "{what}: {message}");
        }
        assert_eq!(server.state.registry().head_seq().expect("head"), 0);

        let (status, head, reply) =
            send_with(addr, token, "POST", "/v1/sync/push", compressed, &body).await;
        assert_eq!(status, 200, "{head}");
        assert!(
            !head.contains("content-encoding"),
            "a short reply travels as it is: {head}"
        );
        let reply: PushReply = protocol::codec::decode(&reply, 1024).expect("decodes");
        assert!(matches!(reply, PushReply::Accepted { last_seq: 3, .. }));
        assert_eq!(server.state.registry().head_seq().expect("head"), 3);

        let pull = protocol::codec::encode(&PullRequest {
            device_id: device,
            cursor: 0,
            limit: 10,
            outcomes_from: 4,
        });
        let (status, head, plain) =
            send_with(addr, token, "POST", "/v1/sync/pull", "", &pull).await;
        assert_eq!(status, 200);
        assert!(!head.contains("content-encoding"), "{head}");
        let (status, head, body) = send_with(
            addr,
            token,
            "POST",
            "/v1/sync/pull",
            "accept-encoding: gzip, zstd;q=0.9\r\n",
            &pull,
        )
        .await;
        assert_eq!(status, 200);
        assert!(head.contains("content-encoding: zstd"), "{head}");
        assert!(
            body.len() < plain.len(),
            "{} of {}",
            body.len(),
            plain.len()
        );
        let page = protocol::codec::decompress(&body, protocol::sync::MAX_RESPONSE_BYTES)
            .expect("decompresses");
        assert_eq!(page, plain);
        let page: PullResponse =
            protocol::codec::pull_page::decode(&page, protocol::sync::MAX_RESPONSE_BYTES)
                .expect("decodes");
        assert_eq!(page.changes.len(), 3);
        let (_, head, _) = send_with(
            addr,
            token,
            "POST",
            "/v1/sync/pull",
            "accept-encoding: zstd;q=0\r\n",
            &pull,
        )
        .await;
        assert!(
            !head.contains("content-encoding"),
            "refused with q=0: {head}"
        );

        server.stop().await;
    }

    #[tokio::test]
    async fn sync_endpoints_speak_the_codec_and_refuse_bad_input_plainly() {
        let server = start().await;
        let addr = server.addr;
        let (status, _, body) = send(addr, "", "GET", "/healthz", b"").await;
        assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));

        let device = server.device;
        let token = server.token.clone();
        let token = token.as_str();
        let record = household("Lý Văn Tài");
        let request = protocol::codec::encode(&PushRequest {
            device_id: device,
            mutations: vec![create(1, &record)],
        });
        let (status, content_type, body) =
            send(addr, token, "POST", "/v1/sync/push", &request).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "application/octet-stream")
        );
        let reply: PushReply =
            protocol::codec::decode(&body, protocol::sync::MAX_RESPONSE_BYTES).expect("decodes");
        assert!(matches!(reply, PushReply::Accepted { last_seq: 1, .. }));

        let gap = protocol::codec::encode(&PushRequest {
            device_id: device,
            mutations: vec![create(5, &household("Lý Thị Uyên"))],
        });
        let (status, _, body) = send(addr, token, "POST", "/v1/sync/push", &gap).await;
        assert_eq!(status, 409);
        assert_eq!(
            protocol::codec::decode::<PushReply>(&body, 1024),
            Ok(PushReply::SeqGap { expected: 2 })
        );

        let mut future = request.clone();
        future[0] = 99;
        let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            (
                "truncated",
                request[..request.len() / 2].to_vec(),
                400,
                "truncated",
            ),
            ("unknown version", future, 400, "version 99"),
            (
                "oversized",
                vec![0; protocol::sync::MAX_PUSH_BYTES + 1],
                413,
                "limit",
            ),
            ("empty", Vec::new(), 400, "empty"),
        ];
        for (what, body, want, says) in cases {
            let (status, content_type, message) =
                send(addr, token, "POST", "/v1/sync/push", &body).await;
            let message = String::from_utf8(message).expect("utf-8 message");
            assert_eq!(status, want, "{what}: {message}");
            assert_eq!(content_type, "text/plain; charset=utf-8", "{what}");
            assert!(message.contains(says), "{what}: {message}");
        }
        let (status, _, _) = send(addr, token, "POST", "/v1/sync/pull", &[0; 2_000]).await;
        assert_eq!(status, 413);

        let pull = protocol::codec::encode(&PullRequest {
            device_id: device,
            cursor: 0,
            limit: 10,
            outcomes_from: 1,
        });
        let (status, _, body) = send(addr, token, "POST", "/v1/sync/pull", &pull).await;
        assert_eq!(status, 200);
        let page: PullResponse =
            protocol::codec::pull_page::decode(&body, protocol::sync::MAX_RESPONSE_BYTES)
                .expect("decodes");
        assert_eq!((page.changes.len(), page.outcomes.len()), (1, 1));

        let (status, content_type, body) = send(
            addr,
            token,
            "GET",
            &format!("/v1/households/{}", record.id),
            b"",
        )
        .await;
        assert_eq!((status, content_type.as_str()), (200, "application/json"));
        let view: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(view["rev"], 1);
        assert_eq!(view["household"]["address"], "Số 1, đường Làng");
        assert_eq!(view["review"]["status"], "submitted");
        assert_eq!(view["in_conflict"], false);
        let (status, _, _) = send(addr, token, "GET", "/v1/households/not-a-uuid", b"").await;
        assert_eq!(status, 400);
        let (status, _, _) = send(
            addr,
            token,
            "GET",
            &format!("/v1/households/{}", Uuid::now_v7()),
            b"",
        )
        .await;
        assert_eq!(status, 404);
        let (status, _, body) = send(addr, token, "GET", "/v1/conflicts?open=true", b"").await;
        assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));
        let (status, _, _) = send(addr, token, "GET", "/v1/conflicts?colour=red", b"").await;
        assert_eq!(status, 400);
        let (status, _, _) = send(addr, token, "GET", "/nowhere", b"").await;
        assert_eq!(status, 404);
        let (status, _, _) = send(addr, "", "POST", "/v1/sync/pull", &pull).await;
        assert_eq!(status, 401, "no token, no data");

        assert_eq!(server.state.registry().head_seq().expect("head"), 1);
        server.stop().await;
    }
}

/// A device sends its next push before the answer to the last: when the later one reaches
/// the writer lock first, it waits for the earlier one instead of answering a seq gap.
#[tokio::test]
async fn a_push_that_overtakes_its_devices_earlier_push_waits_for_it() {
    let Fixture { state, _dir } = fixture();
    let device = Uuid::now_v7();
    let (first, second) = (household("Lê Thị Cúc"), household("Trần Văn Dũng"));
    // Pushes wait at the lock, in the order they reach it: the later push first.
    let held = std::sync::Arc::clone(&state.writer).lock_owned().await;
    let pushing = |mutation: Mutation| {
        let state = state.clone();
        tokio::spawn(async move {
            state
                .push(PushRequest {
                    device_id: device,
                    mutations: vec![mutation],
                })
                .await
        })
    };
    let later = pushing(create(2, &second));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let earlier = pushing(create(1, &first));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(held);
    let later = later.await.expect("joined").expect("the later push");
    let earlier = earlier.await.expect("joined").expect("the earlier push");
    let accepted = |reply: &PushReply, seq: u64| {
        matches!(reply, PushReply::Accepted { last_seq, outcomes }
            if *last_seq == seq && matches!(outcomes[..], [protocol::sync::MutationOutcome { outcome: Outcome::Applied { rev: 1 }, .. }]))
    };
    assert!(accepted(&earlier, 1), "{earlier:?}");
    assert!(accepted(&later, 2), "{later:?}");
    assert_eq!(state.registry().device_last_seq(device).expect("seq"), 2);
    // Without an earlier push under way, a gap is still answered at once.
    let reply = state
        .push(PushRequest {
            device_id: device,
            mutations: vec![create(4, &household("Phạm Thị Én"))],
        })
        .await
        .expect("push");
    assert_eq!(reply, PushReply::SeqGap { expected: 3 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_past_the_permits_wait_their_turn_and_all_land() {
    let Fixture { state, _dir } = fixture();
    let permits = super::pushes_worked_at_once();
    // Pushes keep their permits while they wait for the lock.
    let held = std::sync::Arc::clone(&state.writer).lock_owned().await;
    let pushes: Vec<_> = (0..permits + 3)
        .map(|n| {
            let state = state.clone();
            let mutation = create(1, &household(&format!("Hộ số {n}")));
            tokio::spawn(async move {
                let device_id = Uuid::now_v7();
                let reply = state
                    .push(PushRequest {
                        device_id,
                        mutations: vec![mutation],
                    })
                    .await;
                (device_id, reply)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(state.push_work.available_permits(), 0);
    drop(held);
    for push in pushes {
        let (device, reply) = push.await.expect("joined");
        assert!(
            matches!(reply, Ok(PushReply::Accepted { last_seq: 1, .. })),
            "{reply:?}"
        );
        assert_eq!(state.registry().device_last_seq(device).expect("seq"), 1);
    }
    assert_eq!(state.push_work.available_permits(), permits);
}
