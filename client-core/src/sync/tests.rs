//! The engine driven in process against `FakeServer`: outcomes, batches, seq gaps, lost
//! responses, rebase over newer revisions, rejections, returns, resolved conflicts.

use protocol::fields::{self, FieldValue};
use protocol::household::Relationship;
use protocol::sync::{
    Base, Mutation, MutationOutcome, Outcome, PullResponse, PushReply, ReviewState,
    MAX_PUSH_MUTATIONS,
};

use super::*;
use crate::test_support::{member, run, run_with, sample, store, text, FakeServer};

fn push_of(request: Option<Request>) -> protocol::sync::PushRequest {
    match request {
        Some(Request::Push(push)) => push.request().expect("a batch decodes"),
        other => panic!("expected a push, got {other:?}"),
    }
}

fn pull_of(request: Option<Request>) -> PullRequest {
    match request {
        Some(Request::Pull(pull)) => pull,
        other => panic!("expected a pull, got {other:?}"),
    }
}

#[test]
fn every_kind_of_outcome_is_recorded_and_the_outbox_drains() {
    let (_dir, store) = store();
    let (_other_dir, other) = store_b();
    let mut server = FakeServer::default();

    // Three households known to both devices.
    for n in 1..=3 {
        store.save_household(&sample(n)).expect("save");
    }
    run(&store, &mut server).expect("first sync");
    run(&other, &mut server).expect("other device's first sync");

    // Household 1: a plain edit. Household 2: an edit of one field while the other device
    // edited another (merge). Household 3: the same field on both sides (conflict).
    // Household 4: a new household missing its head (rejected).
    let mut one = sample(1);
    one.address = "Số 100".into();
    store.save_household(&one).expect("save");
    let mut two_there = sample(2);
    two_there.village = "Thôn Tây".into();
    other.save_household(&two_there).expect("save");
    let mut three_there = sample(3);
    three_there.address = "Số 300 (B)".into();
    other.save_household(&three_there).expect("save");
    run(&other, &mut server).expect("other device syncs first");

    let mut two = sample(2);
    two.address = "Số 200".into();
    store.save_household(&two).expect("save");
    let mut three = sample(3);
    three.address = "Số 300 (A)".into();
    store.save_household(&three).expect("save");
    let mut four = sample(4);
    four.head_member_id = None;
    let receipt = store
        .save_household(&four)
        .expect("saved despite the problem");
    assert!(!receipt.warnings.is_empty());

    let report = run(&store, &mut server).expect("sync");
    assert_eq!(report.pushed, 4);
    assert_eq!((report.applied, report.merged), (1, 1));
    assert_eq!(report.conflicts.len(), 1);
    let conflict = &report.conflicts[0];
    assert_eq!(conflict.household_id, three.id);
    assert_eq!(conflict.fields.len(), 1);
    assert_eq!(conflict.fields[0].path, "address");
    assert_eq!(conflict.fields[0].theirs, Some(text("Số 300 (B)")));
    assert_eq!(conflict.fields[0].mine, Some(text("Số 300 (A)")));
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].household_id, four.id);
    assert!(report.rejected[0].reason.contains("head"));

    assert!(store.pending().expect("pending").is_empty());
    assert_eq!(
        store.acknowledged_rows(),
        0,
        "the outcomes kept apart are folded in once the pull is done"
    );
    assert_eq!(store.conflicts().expect("conflicts"), report.conflicts);
    assert_eq!(store.rejections().expect("rejections"), report.rejected);
    assert_eq!(store.outcomes_from().expect("outcomes_from"), u64::MAX);

    // Merged: both edits are in the view. Conflict: the view shows the registry's value and
    // flags it; the enumerator's value is in the conflict.
    let mut merged = sample(2);
    merged.address = "Số 200".into();
    merged.village = "Thôn Tây".into();
    let local_two = store.household(two.id).expect("read").expect("kept");
    assert_eq!(local_two.household().expect("record"), merged);
    let local_three = store.household(three.id).expect("read").expect("kept");
    assert!(local_three.in_conflict);
    assert_eq!(local_three.fields.get("address"), Some(&text("Số 300 (B)")));
    // Rejected: still on the device as typed, with the reason.
    let local_four = store.household(four.id).expect("read").expect("kept");
    assert_eq!(local_four.household().expect("record"), four);
    assert!(local_four.rejection.is_some());
    assert!(!local_four.pending);
    assert_eq!(local_four.server_rev, None);

    // Convergence: with no new edits, every view equals the registry.
    run(&other, &mut server).expect("sync");
    for n in 1..=3 {
        let id = sample(n).id;
        for device in [&store, &other] {
            let local = device.household(id).expect("read").expect("kept");
            assert_eq!(Some(&local.fields), server.latest(id), "household {n}");
            assert!(!local.pending);
        }
    }
}

fn store_b() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    store
        .setup("http://127.0.0.1:1", Uuid::from_u128(0xb))
        .expect("setup");
    (dir, store)
}

#[test]
fn the_outbox_goes_in_batches_in_seq_order() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    for n in 1..=7 {
        store.save_household(&sample(n)).expect("save");
    }
    let options = SyncOptions {
        push_batch: 3,
        pull_limit: 2,
    };
    let mut engine = SyncEngine::with_options(&store, options).expect("engine");
    let mut firsts = Vec::new();
    let mut pulls = 0;
    while let Some(request) = engine.next_request(&store).expect("request") {
        match &request {
            Request::Push(push) => {
                assert!(push.len() <= 3);
                firsts.push(push.seqs().next().map_or(0, |(seq, _)| seq));
            }
            Request::Pull(_) => pulls += 1,
        }
        let response = server.respond(&request);
        engine.handle(&store, response).expect("handle");
        let progress = engine.progress();
        assert!(progress.pushed <= progress.to_push);
    }
    assert_eq!(firsts, vec![1, 4, 7]);
    assert_eq!(pulls, 4, "7 changes in pages of 2");
    let report = engine.report();
    assert_eq!((report.pushed, report.applied, report.pulled), (7, 7, 7));
    assert_eq!(store.cursor().expect("cursor"), 7);
    assert_eq!(engine.progress().phase, Phase::Done);
    assert!(engine.next_request(&store).expect("done").is_none());
    // Batch sizes are capped by the protocol.
    let engine = SyncEngine::with_options(
        &store,
        SyncOptions {
            push_batch: 10_000,
            pull_limit: 0,
        },
    )
    .expect("engine");
    assert_eq!(engine.options.push_batch, MAX_PUSH_MUTATIONS);
    assert_eq!(engine.options.pull_limit, 1);
}

#[test]
fn a_seq_gap_resumes_from_the_expected_seq_and_outcomes_arrive_with_the_pull() {
    let (_dir, store) = store();
    for n in 1..=5 {
        store.save_household(&sample(n)).expect("save");
    }
    let mut engine = SyncEngine::new(&store).expect("engine");
    let push = push_of(engine.next_request(&store).expect("request"));
    assert_eq!(push.mutations.len(), 5);
    // The server already has 1 and 2 (their outcomes were lost with an earlier response).
    engine
        .handle(&store, Response::Push(PushReply::SeqGap { expected: 3 }))
        .expect("gap");
    assert_eq!(
        store
            .pending()
            .expect("pending")
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        vec![3, 4, 5],
        "1 and 2 are kept aside, not dropped"
    );
    let push = push_of(engine.next_request(&store).expect("request"));
    assert_eq!(push.mutations.first().map(|m| m.seq), Some(3));
    let outcome = |m: &Mutation, rev| MutationOutcome {
        seq: m.seq,
        household_id: m.household_id,
        outcome: Outcome::Applied { rev },
    };
    engine
        .handle(
            &store,
            Response::Push(PushReply::Accepted {
                outcomes: push.mutations.iter().map(|m| outcome(m, 1)).collect(),
                last_seq: 5,
            }),
        )
        .expect("accepted");
    let pull = pull_of(engine.next_request(&store).expect("request"));
    assert_eq!(
        pull.outcomes_from, 1,
        "the outcomes of 1 and 2 are still awaited"
    );
    let first_two: Vec<MutationOutcome> = (1..=2)
        .map(|n| MutationOutcome {
            seq: n as u64,
            household_id: sample(n).id,
            outcome: Outcome::Applied { rev: 1 },
        })
        .collect();
    engine
        .handle(
            &store,
            Response::Pull(PullResponse {
                changes: vec![],
                next_cursor: 0,
                more: false,
                // Outcomes from the push reply arrive again: recorded once only.
                outcomes: first_two
                    .into_iter()
                    .chain(std::iter::once(MutationOutcome {
                        seq: 3,
                        household_id: sample(3).id,
                        outcome: Outcome::Applied { rev: 1 },
                    }))
                    .collect(),
                left_scope: vec![],
                scope: protocol::access::Scope::Everything,
            }),
        )
        .expect("page");
    let report = engine.report();
    assert_eq!((report.pushed, report.applied), (5, 5));
    assert_eq!(store.outcomes_from().expect("outcomes_from"), u64::MAX);
    assert!(engine.next_request(&store).expect("done").is_none());
}

#[test]
fn seq_gaps_that_cannot_be_resolved_are_errors_not_loops() {
    let (_dir, store) = store();
    for n in 1..=3 {
        store.save_household(&sample(n)).expect("save");
    }
    let mut engine = SyncEngine::new(&store).expect("engine");
    push_of(engine.next_request(&store).expect("request"));
    assert!(matches!(
        engine.handle(&store, Response::Push(PushReply::SeqGap { expected: 9 })),
        Err(SyncError::DeviceBehindServer {
            expected: 9,
            made: 3
        })
    ));
    push_of(engine.next_request(&store).expect("request"));
    assert!(matches!(
        engine.handle(&store, Response::Push(PushReply::SeqGap { expected: 1 })),
        Err(SyncError::ContradictoryReply(_))
    ));
    assert_eq!(
        store.pending().expect("pending").len(),
        3,
        "nothing dropped"
    );
}

#[test]
fn a_server_that_lost_acknowledged_mutations_gets_them_again() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    for n in 1..=3 {
        store.save_household(&sample(n)).expect("save");
    }
    // Acknowledged without outcomes, then the server is restored from an older backup.
    let mut engine = SyncEngine::new(&store).expect("engine");
    push_of(engine.next_request(&store).expect("request"));
    engine
        .handle(
            &store,
            Response::Push(PushReply::Accepted {
                outcomes: vec![],
                last_seq: 3,
            }),
        )
        .expect("ack");
    assert!(store.pending().expect("pending").is_empty());
    store.save_household(&sample(4)).expect("save");
    let report = run(&store, &mut server).expect("sync against the restored server");
    assert_eq!(report.applied, 4);
    assert_eq!(server.revisions.len(), 4);
    assert_eq!(store.outcomes_from().expect("outcomes_from"), u64::MAX);
}

#[test]
fn a_lost_response_is_harmless_and_the_next_sync_resumes() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    let mut household = sample(1);
    store.save_household(&household).expect("save");
    household.address = "Số 2".into();
    store.save_household(&household).expect("save");

    // The server applies the push, but the response never arrives.
    let mut engine = SyncEngine::new(&store).expect("engine");
    let request = engine
        .next_request(&store)
        .expect("request")
        .expect("a push");
    server.respond(&request);
    assert_eq!(server.revisions[&household.id].len(), 2);
    drop(engine);

    // The next sync resends; the replay returns the stored outcomes and applies nothing again.
    let report = run(&store, &mut server).expect("sync");
    assert_eq!((report.pushed, report.applied), (2, 2));
    assert_eq!(server.revisions[&household.id].len(), 2);
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.household().expect("record"), household);
    assert_eq!(local.server_rev, Some(2));
    // A sync with nothing new is one pull.
    let report = run(&store, &mut server).expect("sync");
    assert_eq!(report, SyncReport::default());
}

#[test]
fn a_pending_edit_survives_a_pull_of_a_newer_revision() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    let household = sample(1);
    store.save_household(&household).expect("save");
    run(&store, &mut server).expect("sync");

    // Someone else changes the village on the server.
    server.edit(household.id, |f| {
        f.insert("village".into(), text("Thôn Bắc"));
    });
    // A sync starts with an empty outbox, so it goes straight to the pull...
    let mut engine = SyncEngine::new(&store).expect("engine");
    let pull = pull_of(engine.next_request(&store).expect("request"));
    let page = server.pull(&pull);
    // ...and the enumerator saves an edit before the page is processed.
    let mut edited = household.clone();
    edited.address = "Số 9, xóm Mới".into();
    store.save_household(&edited).expect("save");
    engine.handle(&store, Response::Pull(page)).expect("page");

    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.server_rev, Some(2));
    assert!(local.pending);
    let mut expected = edited.clone();
    expected.village = "Thôn Bắc".into();
    assert_eq!(
        local.household().expect("record"),
        expected,
        "the server's change and the pending edit are both in view"
    );

    // The pending edit was made on revision 1; it merges on push and the views converge.
    let report = run(&store, &mut server).expect("sync");
    assert_eq!(report.merged, 1);
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(Some(&local.fields), server.latest(household.id));
    assert_eq!(local.household().expect("record"), expected);
}

#[test]
fn a_rejection_keeps_the_local_view_and_a_later_fix_goes_through_as_a_create() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    let mut household = sample(1);
    household.commune_code = "123".into();
    store
        .save_household(&household)
        .expect("saved with a warning");
    let report = run(&store, &mut server).expect("sync");
    assert_eq!(report.rejected.len(), 1);
    assert!(report.rejected[0].reason.contains("5 digits"));
    let rejected = store
        .rejected_mutation(report.rejected[0].mutation_seq)
        .expect("read")
        .expect("the payload is kept");
    assert_eq!(rejected.household_id, household.id);

    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.household().expect("record"), household);
    assert!(local
        .rejection
        .as_deref()
        .is_some_and(|r| r.contains("5 digits")));

    // Other traffic does not disturb it.
    store.save_household(&sample(2)).expect("save");
    run(&store, &mut server).expect("sync");
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.household().expect("record"), household);

    // The fix is a fresh create of the whole record.
    household.commune_code = "00004".into();
    let receipt = store.save_household(&household).expect("save");
    let fix = store.pending().expect("pending").pop().expect("the fix");
    assert_eq!(fix.seq, receipt.mutation_seq);
    assert_eq!(fix.base, Base::New);
    assert_eq!(
        fix.changes,
        fields::diff(&Default::default(), &fields::flatten(&household))
    );
    let report = run(&store, &mut server).expect("sync");
    assert_eq!((report.applied, report.rejected.len()), (1, 0));
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(
        local.rejection, None,
        "an accepted change supersedes the rejection"
    );
    assert_eq!(local.server_rev, Some(1));
    assert_eq!(local.household().expect("record"), household);
}

#[test]
fn a_rejected_edit_stays_in_view_over_newer_revisions() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    let household = sample(1);
    store.save_household(&household).expect("save");
    run(&store, &mut server).expect("sync");

    let mut bad = household.clone();
    bad.members[0].personal_id = Some("12".into());
    store.save_household(&bad).expect("save");
    server.edit(household.id, |f| {
        f.insert("village".into(), text("Thôn Bắc"));
    });
    let report = run(&store, &mut server).expect("sync");
    assert_eq!(report.rejected.len(), 1);
    let local = store.household(household.id).expect("read").expect("kept");
    let mut expected = bad.clone();
    expected.village = "Thôn Bắc".into();
    assert_eq!(local.household().expect("record"), expected);
    assert!(local.rejection.is_some());
    assert_eq!(local.server_rev, Some(2));
}

#[test]
fn a_member_added_and_removed_before_the_first_sync_does_not_come_back() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    let mut household = sample(1);
    store.save_household(&household).expect("create");
    let child = member(77, "Ngô Văn Bé", Relationship::Child);
    household.members.push(child.clone());
    store.save_household(&household).expect("add");
    household.members.retain(|m| m.id != child.id);
    store.save_household(&household).expect("remove");
    let report = run(&store, &mut server).expect("sync");
    assert!(report.conflicts.is_empty() && report.rejected.is_empty());
    let on_server = fields::unflatten(server.latest(household.id).expect("on the server"))
        .expect("a well-formed record");
    assert_eq!(on_server, household);
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.household().expect("record"), household);
}

#[test]
fn returned_households_and_resolved_conflicts_reach_the_device() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    let household = sample(1);
    store.save_household(&household).expect("save");
    run(&store, &mut server).expect("sync");

    server.edit(household.id, |f| {
        f.insert("address".into(), text("Số 5 (máy chủ)"));
    });
    let mut mine = household.clone();
    mine.address = "Số 5 (thiết bị)".into();
    store.save_household(&mine).expect("save");
    let report = run(&store, &mut server).expect("sync");
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(store.conflicts().expect("conflicts").len(), 1);
    assert!(
        store
            .household(household.id)
            .expect("read")
            .expect("kept")
            .in_conflict
    );

    server.resolve(household.id);
    server.return_household(household.id, "Thiếu số CCCD của chủ hộ");
    let report = run(&store, &mut server).expect("sync");
    assert_eq!(
        report.returned,
        vec![(household.id, "Thiếu số CCCD của chủ hộ".to_string())]
    );
    let local = store.household(household.id).expect("read").expect("kept");
    assert!(!local.in_conflict);
    assert_eq!(
        local.review,
        ReviewState::Returned {
            comment: "Thiếu số CCCD của chủ hộ".into()
        }
    );
    assert!(store.conflicts().expect("conflicts").is_empty());
    // The same return is not reported twice.
    let report = run(&store, &mut server).expect("sync");
    assert!(report.returned.is_empty());
}

#[test]
fn responses_that_make_no_progress_are_errors() {
    let (_dir, store) = store();
    store.save_household(&sample(1)).expect("save");
    let mut engine = SyncEngine::new(&store).expect("engine");
    assert!(matches!(
        engine.handle(
            &store,
            Response::Pull(PullResponse {
                changes: vec![],
                next_cursor: 0,
                more: false,
                outcomes: vec![],
                left_scope: vec![],
                scope: protocol::access::Scope::Everything,
            })
        ),
        Err(SyncError::UnexpectedResponse { .. })
    ));
    push_of(engine.next_request(&store).expect("request"));
    assert!(matches!(
        engine.handle(
            &store,
            Response::Push(PushReply::Accepted {
                outcomes: vec![],
                last_seq: 0
            })
        ),
        Err(SyncError::NothingAcknowledged { .. })
    ));
    push_of(engine.next_request(&store).expect("request"));
    engine
        .handle(
            &store,
            Response::Push(PushReply::Accepted {
                outcomes: vec![],
                last_seq: 1,
            }),
        )
        .expect("ack");
    let pull = pull_of(engine.next_request(&store).expect("request"));
    assert!(matches!(
        engine.handle(
            &store,
            Response::Pull(PullResponse {
                changes: vec![],
                next_cursor: pull.cursor,
                more: true,
                outcomes: vec![],
                left_scope: vec![],
                scope: protocol::access::Scope::Everything,
            })
        ),
        Err(SyncError::CursorStuck { .. })
    ));
}

#[test]
fn a_store_that_is_not_set_up_cannot_sync() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    assert!(matches!(SyncEngine::new(&store), Err(SyncError::NotSetUp)));
}

/// A transport over the fake server that can fail the n-th request, before or after the
/// server has seen it.
struct Flaky {
    server: std::cell::RefCell<FakeServer>,
    calls: std::cell::Cell<usize>,
    fail_at: Option<(usize, bool)>,
}

impl Transport for Flaky {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let call = self.calls.get() + 1;
        self.calls.set(call);
        let unreachable = || TransportError::Unreachable {
            url: "http://fake".into(),
            detail: "connection reset".into(),
        };
        match self.fail_at {
            Some((at, false)) if at == call => Err(unreachable()),
            Some((at, true)) if at == call => {
                self.server.borrow_mut().respond(request);
                Err(unreachable())
            }
            _ => Ok(self.server.borrow_mut().respond(request)),
        }
    }
}

#[tokio::test]
async fn the_driver_stops_on_a_dropped_connection_and_the_next_sync_finishes_the_work() {
    // Seeded, so a failing case replays: fail each request in turn, before and after the
    // server saw it, and check the store converges on the next sync.
    for fail_at in 1..=8 {
        for server_saw_it in [false, true] {
            let (_dir, store) = store();
            for n in 1..=5 {
                store.save_household(&sample(n)).expect("save");
            }
            let mut seed_server = FakeServer::default();
            seed_server.edit(sample(9).id, |f| {
                *f = fields::flatten(&sample(9));
            });
            let flaky = Flaky {
                server: std::cell::RefCell::new(seed_server),
                calls: std::cell::Cell::new(0),
                fail_at: Some((fail_at, server_saw_it)),
            };
            let mut seen = Vec::new();
            let first = sync(&store, &flaky, |p| seen.push(*p)).await;
            let calls = flaky.calls.get();
            let flaky = Flaky {
                fail_at: None,
                ..flaky
            };
            let second = sync(&store, &flaky, |_| {})
                .await
                .expect("the retry succeeds");
            if fail_at <= calls {
                assert!(matches!(first, Err(SyncError::Transport(_))), "{fail_at}");
            }
            let server = flaky.server.borrow();
            assert!(store.pending().expect("pending").is_empty());
            assert_eq!(store.outcomes_from().expect("outcomes_from"), u64::MAX);
            assert_eq!(store.households().expect("list").len(), 6);
            for local in store.households().expect("list") {
                assert_eq!(
                    Some(&local.fields),
                    server.latest(local.id),
                    "case {fail_at}"
                );
            }
            assert_eq!(server.revisions.len(), 6);
            assert!(server.revisions.values().all(|revs| revs.len() == 1));
            let _ = second;
            assert!(seen.iter().all(|p| p.pushed <= p.to_push));
        }
    }
}

#[test]
fn run_with_small_pages_converges_on_many_households() {
    let (_dir, store) = store();
    let (_other_dir, other) = store_b();
    let mut server = FakeServer::default();
    for n in 1..=40 {
        store.save_household(&sample(n)).expect("save");
    }
    let options = SyncOptions {
        push_batch: 7,
        pull_limit: 9,
    };
    run_with(&store, &mut server, options).expect("sync");
    let report = run_with(&other, &mut server, options).expect("sync");
    assert_eq!(report.pulled, 40);
    assert_eq!(other.households().expect("list").len(), 40);
    let _ = FieldValue::Null;
}

#[test]
fn a_change_undone_before_sync_leaves_no_trace_and_no_conflict() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    let household = sample(1);
    store.save_household(&household).expect("create");
    run(&store, &mut server).expect("sync");

    // Voided by mistake and restored; an address typed and set back; a member added and
    // removed again: all offline, before the next sync.
    store
        .void_household(
            household.id,
            protocol::household::VoidMark {
                reason: protocol::household::VoidReason::CreatedByMistake,
                note: String::new(),
            },
        )
        .expect("void");
    store.unvoid_household(household.id).expect("unvoid");
    let mut edited = household.clone();
    edited.address = "Số 99".into();
    store.save_household(&edited).expect("edit");
    let spouse = member(5, "Trần Văn Bình", Relationship::Spouse);
    edited.members.push(spouse.clone());
    store.save_household(&edited).expect("add");
    edited.address = household.address.clone();
    edited.members.retain(|m| m.id != spouse.id);
    store.save_household(&edited).expect("undo both");

    let pending = store.pending().expect("pending");
    assert_eq!(pending.len(), 5);
    assert!(
        pending.windows(2).all(|w| w[0].changes == w[1].changes),
        "earlier entries carry the latest changes"
    );
    let report = run(&store, &mut server).expect("sync");
    assert_eq!(report.pushed, 5);
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    assert_eq!(server.revisions[&household.id].len(), 1, "nothing changed");
    let local = store.household(household.id).expect("read").expect("kept");
    assert_eq!(local.household().expect("record"), household);
    assert!(!local.in_conflict);
}

#[test]
fn the_create_is_kept_as_recorded_and_later_edits_follow_it() {
    let (_dir, store) = store();
    let mut server = FakeServer::default();
    let mut household = sample(1);
    store.save_household(&household).expect("create");
    let create = store.pending().expect("pending").remove(0);
    household.address = "Số 2".into();
    store.save_household(&household).expect("edit");
    household.address = "Số 3".into();
    store.save_household(&household).expect("edit");
    let pending = store.pending().expect("pending");
    assert_eq!(pending[0], create, "the create is not rewritten");
    assert_eq!(pending[1].changes, pending[2].changes);
    run(&store, &mut server).expect("sync");
    assert_eq!(server.revisions[&household.id].len(), 2);
    assert_eq!(
        server.latest(household.id),
        Some(&fields::flatten(&household))
    );
}

/// A transport over the fake server with pages of at most `cap` households, recording the
/// cursor of every pull; after the `grow_after`-th request the user's areas become `grown`.
struct Paged {
    server: std::cell::RefCell<FakeServer>,
    cap: u32,
    cursors: std::cell::RefCell<Vec<u64>>,
    grow_after: Option<(usize, protocol::access::Scope)>,
}

impl Transport for Paged {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let response = match request {
            Request::Pull(pull) => {
                self.cursors.borrow_mut().push(pull.cursor);
                let capped = PullRequest {
                    limit: pull.limit.min(self.cap),
                    ..pull.clone()
                };
                Response::Pull(self.server.borrow().pull(&capped))
            }
            Request::Push(_) => self.server.borrow_mut().respond(request),
        };
        if let Some((after, grown)) = &self.grow_after {
            if self.cursors.borrow().len() == *after {
                self.server.borrow_mut().scope = Some(grown.clone());
            }
        }
        Ok(response)
    }
}

fn villages(names: &[&str]) -> protocol::access::Scope {
    protocol::access::Scope::Villages(
        names
            .iter()
            .map(|name| protocol::areas::Village {
                commune_code: "00004".into(),
                name: (*name).into(),
            })
            .collect(),
    )
}

/// 40 households on a fake server, odd ones in Thôn Tây and even ones in Thôn Đông.
fn forty_on_a_server() -> FakeServer {
    let (_dir, author) = store_b();
    let mut server = FakeServer::default();
    for n in 1..=40 {
        let mut household = sample(n);
        if n % 2 == 1 {
            household.village = "Thôn Tây".into();
        }
        author.save_household(&household).expect("save");
    }
    run(&author, &mut server).expect("the author syncs");
    server
}

#[tokio::test]
async fn a_driver_reading_pages_ahead_asks_for_each_page_once() {
    let (_dir, store) = store();
    let paged = Paged {
        server: std::cell::RefCell::new(forty_on_a_server()),
        cap: 9,
        cursors: std::cell::RefCell::new(Vec::new()),
        grow_after: None,
    };
    let report = sync(&store, &paged, |_| {}).await.expect("sync");
    assert_eq!(report.pulled, 40);
    assert_eq!(store.households().expect("list").len(), 40);
    assert_eq!(store.cursor().expect("cursor"), 40);
    // Every page read ahead was used: none was asked for twice. (That the reading overlaps
    // the writing is the benchmark's to show: `bench --only commune`.)
    assert_eq!(*paged.cursors.borrow(), vec![0, 9, 18, 27, 36]);
}

#[tokio::test]
async fn a_page_read_ahead_is_not_used_when_the_areas_grew_and_the_pull_starts_again() {
    let (_dir, store) = store();
    let mut server = forty_on_a_server();
    server.scope = Some(villages(&["Thôn Đông"]));
    let paged = Paged {
        server: std::cell::RefCell::new(server),
        cap: 9,
        cursors: std::cell::RefCell::new(Vec::new()),
        grow_after: Some((3, villages(&["Thôn Đông", "Thôn Tây"]))),
    };
    let report = sync(&store, &paged, |_| {}).await.expect("sync");
    assert!(report.areas_grew);
    assert_eq!(store.households().expect("list").len(), 40);
    assert_eq!(store.cursor().expect("cursor"), 40);
    // The page at 27 came with the larger areas: the pull went back to 0, and nothing was
    // read ahead of a page whose areas differed from the device's.
    assert_eq!(
        *paged.cursors.borrow(),
        vec![0, 9, 18, 27, 0, 9, 18, 27, 36]
    );
}

/// Runs a sync against `server` step by step, checking that every request the engine offers
/// to send ahead is the one it then makes. Returns each request sent with the one offered
/// ahead of its answer, and the report.
fn drive_checking_aheads(
    store: &Store,
    server: &mut FakeServer,
    options: SyncOptions,
) -> (Vec<(Request, Option<Request>)>, SyncReport) {
    let mut engine = SyncEngine::with_options(store, options).expect("engine");
    let mut steps = Vec::new();
    let mut request = engine.next_request(store).expect("request");
    while let Some(sent) = request {
        let response = server.respond(&sent);
        let ahead = engine.ahead(store, &sent, &response).expect("ahead");
        let offered = ahead.as_ref().map(|ahead| ahead.request().clone());
        engine.handle(store, response).expect("handle");
        request = match ahead {
            Some(ahead) => {
                let next = engine.next_request_after(store, ahead).expect("next");
                assert!(
                    next.as_ref().is_some_and(|(_, same)| *same),
                    "the request sent ahead is the next one"
                );
                next.map(|(request, _)| request)
            }
            None => engine.next_request(store).expect("next"),
        };
        // Read again from the store, the next request is the same.
        assert_eq!(request, engine.next_request(store).expect("again"));
        steps.push((sent, offered));
    }
    (steps, engine.report())
}

#[test]
fn the_pull_ahead_is_the_request_the_engine_makes_next_or_none() {
    let (_dir, store) = store();
    let mut server = forty_on_a_server();
    let options = SyncOptions {
        push_batch: 200,
        pull_limit: 9,
    };
    let (steps, _) = drive_checking_aheads(&store, &mut server, options);
    let aheads: Vec<Option<u64>> = steps
        .into_iter()
        .map(|(_, ahead)| ahead.map(|ahead| pull_of(Some(ahead)).cursor))
        .collect();
    // No page ahead of the first (the device holds no areas yet) nor after the last.
    assert_eq!(aheads, vec![None, Some(18), Some(27), Some(36), None]);
    assert_eq!(store.households().expect("list").len(), 40);
}

#[test]
fn the_push_ahead_is_the_next_batch_and_none_after_a_partial_acknowledgement() {
    let (_dir, store) = store();
    for n in 1..=25 {
        store.save_household(&sample(n)).expect("save");
    }
    let mut server = FakeServer::default();
    let options = SyncOptions {
        push_batch: 10,
        pull_limit: 500,
    };
    let (steps, report) = drive_checking_aheads(&store, &mut server, options);
    let aheads: Vec<Option<u64>> = steps
        .into_iter()
        .filter(|(sent, _)| matches!(sent, Request::Push(_)))
        .map(|(_, ahead)| ahead.map(|ahead| push_of(Some(ahead)).mutations[0].seq))
        .collect();
    // After the last batch the next request is a pull, which needs the outcomes recorded.
    assert_eq!(aheads, vec![Some(11), Some(21), None]);
    assert_eq!(report.applied, 25);

    // A reply that acknowledges only part of the batch: the engine decides what follows.
    let (_other_dir, other) = crate::test_support::store();
    for n in 1..=5 {
        other.save_household(&sample(n)).expect("save");
    }
    let engine = SyncEngine::with_options(&other, options).expect("engine");
    let sent = engine_request(&other, options);
    let partial = Response::Push(PushReply::Accepted {
        outcomes: vec![],
        last_seq: 3,
    });
    assert!(engine
        .ahead(&other, &sent, &partial)
        .expect("ahead")
        .is_none());
}

#[test]
fn a_push_sent_ahead_that_a_save_made_stale_is_not_the_next_request() {
    let (_dir, store) = store();
    for n in 1..=15 {
        store.save_household(&sample(n)).expect("save");
    }
    let mut server = FakeServer::default();
    let options = SyncOptions {
        push_batch: 10,
        pull_limit: 500,
    };
    let mut engine = SyncEngine::with_options(&store, options).expect("engine");
    let sent = engine
        .next_request(&store)
        .expect("request")
        .expect("a push");
    let response = server.respond(&sent);
    // The batch sent ahead is the last five: the outbox ends there.
    let ahead = engine
        .ahead(&store, &sent, &response)
        .expect("ahead")
        .expect("a push ahead");
    assert_eq!(push_of(Some(ahead.request().clone())).mutations.len(), 5);
    engine.handle(&store, response).expect("handle");
    // A save while the answer was written: the next batch has six.
    store.save_household(&sample(16)).expect("save");
    let (next, same) = engine
        .next_request_after(&store, ahead)
        .expect("next")
        .expect("a push");
    assert!(!same, "the batch sent ahead is stale");
    let mutations = push_of(Some(next)).mutations;
    assert_eq!(
        mutations.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (11..=16).collect::<Vec<_>>()
    );
}

fn engine_request(store: &Store, options: SyncOptions) -> Request {
    let mut engine = SyncEngine::with_options(store, options).expect("engine");
    engine
        .next_request(store)
        .expect("request")
        .expect("a push")
}

/// A transport over the fake server recording the first seq of every push it carries.
struct CountedPushes {
    server: std::cell::RefCell<FakeServer>,
    firsts: std::cell::RefCell<Vec<u64>>,
}

impl Transport for CountedPushes {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        if let Request::Push(push) = request {
            self.firsts
                .borrow_mut()
                .push(push.seqs().next().map_or(0, |(seq, _)| seq));
        }
        Ok(self.server.borrow_mut().respond(request))
    }
}

#[tokio::test]
async fn a_driver_sending_pushes_ahead_sends_each_batch_once() {
    let (_dir, store) = store();
    let batch = SyncOptions::default().push_batch;
    let count = 2 * batch + 7;
    for n in 1..=count {
        store.save_household(&sample(n as u128)).expect("save");
    }
    let transport = CountedPushes {
        server: std::cell::RefCell::new(FakeServer::default()),
        firsts: std::cell::RefCell::new(Vec::new()),
    };
    let report = sync(&store, &transport, |_| {}).await.expect("sync");
    assert_eq!((report.pushed, report.applied), (count, count));
    assert!(store.pending().expect("pending").is_empty());
    let step = batch as u64;
    assert_eq!(*transport.firsts.borrow(), vec![1, 1 + step, 1 + 2 * step]);
}

#[test]
fn a_seq_gap_for_seqs_accepted_since_is_stale_once_and_real_twice() {
    let (_dir, store) = store();
    for n in 1..=4 {
        store.save_household(&sample(n)).expect("save");
    }
    let options = SyncOptions {
        push_batch: 2,
        ..SyncOptions::default()
    };
    let mut engine = SyncEngine::with_options(&store, options).expect("engine");
    let first = push_of(engine.next_request(&store).expect("request"));
    assert_eq!(first.mutations[0].seq, 1);
    engine
        .handle(
            &store,
            Response::Push(PushReply::Accepted {
                outcomes: vec![],
                last_seq: 2,
            }),
        )
        .expect("accepted");
    // The second batch overtook the first on the way: told to wait for seq 1.
    let second = push_of(engine.next_request(&store).expect("request"));
    assert_eq!(second.mutations[0].seq, 3);
    let gap = Response::Push(PushReply::SeqGap { expected: 1 });
    engine.handle(&store, gap.clone()).expect("a stale gap");
    assert_eq!(store.pending().expect("pending").len(), 2, "nothing moved");
    // Sent again; no batch follows another on its way from now on.
    let again = push_of(engine.next_request(&store).expect("request"));
    assert_eq!(again.mutations[0].seq, 3);
    assert!(engine.follower().is_none());
    // The same gap a second time is the server's word: it lost seqs 1 and 2, which wait for
    // their outcomes here and go again.
    engine.handle(&store, gap).expect("resent");
    let restored = push_of(engine.next_request(&store).expect("request"));
    assert_eq!(restored.mutations[0].seq, 1);
}

/// Saves `count` sample households and syncs them over `transport` in batches of `batch`:
/// every one pushed and applied, and the outbox empty.
async fn sync_saved_in_batches<T: Transport>(
    store: &Store,
    transport: &T,
    count: usize,
    batch: usize,
) {
    for n in 1..=count {
        store.save_household(&sample(n as u128)).expect("save");
    }
    let options = SyncOptions {
        push_batch: batch,
        ..SyncOptions::default()
    };
    let report = sync_with(store, transport, options, |_| {})
        .await
        .expect("sync");
    assert_eq!((report.pushed, report.applied), (count, count));
    assert!(store.pending().expect("pending").is_empty());
}

/// A transport over the fake server that holds one push until the push after it has been
/// answered, as two connections can deliver them.
struct Overtaking {
    server: std::cell::RefCell<FakeServer>,
    held_first: u64,
    released: std::cell::Cell<bool>,
    firsts: std::cell::RefCell<Vec<u64>>,
}

impl Transport for Overtaking {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let first = match request {
            Request::Push(push) => push.seqs().next().map(|(seq, _)| seq),
            Request::Pull(_) => None,
        };
        if first == Some(self.held_first) && !self.released.get() {
            while !self.released.get() {
                tokio::task::yield_now().await;
            }
        }
        let response = self.server.borrow_mut().respond(request);
        if let Some(first) = first {
            self.firsts.borrow_mut().push(first);
            if first > self.held_first {
                self.released.set(true);
            }
        }
        Ok(response)
    }
}

#[tokio::test]
async fn two_pushes_on_their_way_that_arrive_out_of_order_are_applied_once_each() {
    let (_dir, store) = store();
    let batch = 3;
    let count = 5 * batch;
    let transport = Overtaking {
        server: std::cell::RefCell::new(FakeServer::default()),
        held_first: 1 + batch as u64,
        released: std::cell::Cell::new(false),
        firsts: std::cell::RefCell::new(Vec::new()),
    };
    sync_saved_in_batches(&store, &transport, count, batch).await;
    assert_eq!(transport.server.borrow().revisions.len(), count);
    // The third batch was sent beside the second, reached the server first, was told to wait
    // and went again; from then on one push at a time.
    let step = batch as u64;
    let firsts = transport.firsts.borrow().clone();
    assert_eq!(&firsts[..3], &[1, 1 + 2 * step, 1 + step]);
    assert_eq!(
        firsts
            .iter()
            .filter(|first| **first == 1 + 2 * step)
            .count(),
        2,
        "{firsts:?}"
    );
    assert_eq!(store.outcomes_from().expect("outcomes_from"), u64::MAX);
}

/// A transport over the fake server that answers a push only after a while, counting the
/// pushes on their way at once.
struct Slow {
    server: std::cell::RefCell<FakeServer>,
    on_their_way: std::cell::Cell<usize>,
    most_at_once: std::cell::Cell<usize>,
    firsts: std::cell::RefCell<Vec<u64>>,
}

impl Transport for Slow {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let Request::Push(push) = request else {
            return Ok(self.server.borrow_mut().respond(request));
        };
        self.on_their_way.set(self.on_their_way.get() + 1);
        self.most_at_once
            .set(self.most_at_once.get().max(self.on_their_way.get()));
        // Longer than writing an answer takes: the next push goes out meanwhile.
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        self.firsts
            .borrow_mut()
            .push(push.seqs().next().map_or(0, |(seq, _)| seq));
        self.on_their_way.set(self.on_their_way.get() - 1);
        Ok(self.server.borrow_mut().respond(request))
    }
}

#[tokio::test]
async fn a_driver_keeps_two_pushes_on_their_way() {
    let (_dir, store) = store();
    let batch = 4;
    let count = 4 * batch + 1;
    let transport = Slow {
        server: std::cell::RefCell::new(FakeServer::default()),
        on_their_way: std::cell::Cell::new(0),
        most_at_once: std::cell::Cell::new(0),
        firsts: std::cell::RefCell::new(Vec::new()),
    };
    sync_saved_in_batches(&store, &transport, count, batch).await;
    assert_eq!(transport.most_at_once.get(), 2);
    let step = batch as u64;
    assert_eq!(
        *transport.firsts.borrow(),
        (0..5).map(|k| 1 + k * step).collect::<Vec<_>>(),
        "each batch once, in order"
    );
}
