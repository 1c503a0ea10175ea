//! Sync without conflicts: offline creates, field merges, member lists, replays, seq gaps,
//! pages, and the cost of a sync with nothing new.

use client_core::sync::PushBatch;
use client_core::{Request, Response, Transport};
use protocol::household::{Relationship, Sex};
use protocol::sync::{Base, Mutation, PullRequest, PushReply};

use crate::util::{household, member, registry_household, Device, TestServer};

#[tokio::test]
async fn households_created_offline_on_two_devices_reach_both_and_the_registry_once() {
    let server = TestServer::start().await;
    let (lan, minh) = (Device::new(&server), Device::new(&server));
    let first = household("Nguyễn Văn Ánh", "Thôn Đông");
    let second = household("Trần Thị Bích", "Thôn Tây");
    lan.save(&first);
    minh.save(&second);

    let report = lan.sync().await;
    assert_eq!((report.pushed, report.applied), (1, 1));
    let report = minh.sync().await;
    assert_eq!((report.pushed, report.applied), (1, 1));
    lan.sync().await;

    for device in [&lan, &minh] {
        assert_eq!(device.view(first.id), first);
        assert_eq!(device.view(second.id), second);
        assert!(device.store.pending().expect("outbox").is_empty());
    }
    for created in [&first, &second] {
        let history = server.registry().history(created.id).expect("history");
        assert_eq!(history.len(), 1, "exactly one revision of {}", created.id);
        assert_eq!(history[0].rev, 1);
        assert_eq!(registry_household(&server, created.id), *created);
    }
    assert_eq!(server.registry().household_count().expect("count"), 2);
}

#[tokio::test]
async fn edits_of_different_fields_from_the_same_revision_both_land_as_a_merge() {
    let server = TestServer::start().await;
    let (lan, minh) = (Device::new(&server), Device::new(&server));
    let original = household("Lê Văn Cường", "Thôn Đông");
    lan.save(&original);
    lan.sync().await;
    minh.sync().await;

    let mut by_lan = original.clone();
    by_lan.address = "Số 7, xóm Chùa".to_string();
    lan.save(&by_lan);
    let mut by_minh = original.clone();
    by_minh.dwelling.floor_area_m2 = Some(18);
    minh.save(&by_minh);

    let report = lan.sync().await;
    assert_eq!(report.applied, 1);
    let report = minh.sync().await;
    assert_eq!((report.merged, report.conflicts.len()), (1, 0));
    lan.sync().await;

    let mut expected = original.clone();
    expected.address = by_lan.address.clone();
    expected.dwelling.floor_area_m2 = Some(18);
    assert_eq!(registry_household(&server, original.id), expected);
    assert_eq!(lan.view(original.id), expected);
    assert_eq!(minh.view(original.id), expected);
    let stored = server
        .registry()
        .household(original.id)
        .expect("read")
        .expect("exists");
    assert!(!stored.in_conflict());
    assert!(server
        .registry()
        .conflicts(None)
        .expect("conflicts")
        .is_empty());
}

#[tokio::test]
async fn members_added_on_two_devices_to_one_household_both_survive() {
    let server = TestServer::start().await;
    let (lan, minh) = (Device::new(&server), Device::new(&server));
    let original = household("Phạm Văn Dũng", "Bản Mường");
    lan.save(&original);
    lan.sync().await;
    minh.sync().await;

    let mut by_lan = original.clone();
    by_lan.members.push(member(
        "Phạm Thị Hoa",
        "1984-02-11",
        Sex::Female,
        Relationship::Spouse,
    ));
    lan.save(&by_lan);
    let mut by_minh = original.clone();
    by_minh.members.push(member(
        "Phạm Minh Khôi",
        "2015-09-30",
        Sex::Male,
        Relationship::Child,
    ));
    minh.save(&by_minh);
    lan.sync().await;
    let report = minh.sync().await;
    assert_eq!(report.merged, 1);
    lan.sync().await;

    let merged = registry_household(&server, original.id);
    let names: Vec<&str> = merged
        .members
        .iter()
        .map(|m| m.full_name.as_str())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in ["Phạm Văn Dũng", "Phạm Thị Hoa", "Phạm Minh Khôi"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert_eq!(lan.view(original.id), merged);
    assert_eq!(minh.view(original.id), merged);
}

fn push_of(device: &Device) -> PushBatch {
    PushBatch::new(device.id, &device.store.pending().expect("outbox"))
}

#[tokio::test]
async fn a_push_sent_again_after_its_response_was_lost_applies_nothing_twice() {
    let server = TestServer::start().await;
    let lan = Device::new(&server);
    let created = household("Hoàng Thị Én", "Thôn Bắc");
    lan.save(&created);
    let mut edited = created.clone();
    edited.address = "Số 2".to_string();
    lan.save(&edited);

    let request = Request::Push(push_of(&lan));
    // The first response is "lost": the device never records it.
    let Response::Push(first) = lan
        .transport
        .inner
        .send(&request)
        .await
        .expect("first send")
    else {
        panic!("a push gets a push reply");
    };
    let head_after_first = server.registry().head_seq().expect("head");
    let Response::Push(again) = lan.transport.inner.send(&request).await.expect("resend") else {
        panic!("a push gets a push reply");
    };
    assert_eq!(first, again, "a replay returns the stored outcomes");
    assert_eq!(
        server.registry().head_seq().expect("head"),
        head_after_first
    );
    assert_eq!(
        server
            .registry()
            .history(created.id)
            .expect("history")
            .len(),
        2
    );

    // The device's own sync resends once more and converges without a third revision.
    let report = lan.sync().await;
    assert!(report.rejected.is_empty() && report.conflicts.is_empty());
    assert_eq!(
        server
            .registry()
            .history(created.id)
            .expect("history")
            .len(),
        2
    );
    assert_eq!(registry_household(&server, created.id), edited);
    assert_eq!(lan.view(created.id), edited);
    assert!(lan.store.pending().expect("outbox").is_empty());
}

#[tokio::test]
async fn a_push_with_a_gap_in_mutation_seqs_is_refused_with_the_seq_expected() {
    let server = TestServer::start().await;
    let lan = Device::new(&server);
    let created = household("Vũ Văn Giang", "Thôn Nam");
    let mutation = Mutation {
        seq: 5,
        household_id: created.id,
        base: Base::New,
        changes: protocol::fields::diff(&Default::default(), &protocol::fields::flatten(&created)),
        made_at_ms: 0,
    };
    let request = Request::Push(PushBatch::new(lan.id, &[mutation]));
    let Response::Push(reply) = lan.transport.inner.send(&request).await.expect("send") else {
        panic!("a push gets a push reply");
    };
    assert_eq!(reply, PushReply::SeqGap { expected: 1 });
    assert_eq!(server.registry().household_count().expect("count"), 0);
    assert_eq!(server.registry().head_seq().expect("head"), 0);
}

#[tokio::test]
async fn an_invalid_household_is_rejected_with_a_reason_kept_and_later_work_goes_through() {
    let server = TestServer::start().await;
    let lan = Device::new(&server);
    let mut invalid = household("Đỗ Thị Hạnh", "Thôn Đông");
    invalid.members[0].date_of_birth = "2999-01-01".parse().expect("date");
    let mut headless = household("Ngô Văn Ích", "Thôn Đông");
    headless.head_member_id = None;
    let receipt = lan
        .store
        .save_household(&invalid)
        .expect("saving never refuses the work");
    assert!(!receipt.warnings.is_empty(), "the device warns before sync");
    lan.save(&headless);

    let report = lan.sync().await;
    assert_eq!(report.rejected.len(), 2);
    let reasons: Vec<&str> = report.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons[0].contains("Đỗ Thị Hạnh") && reasons[0].contains("future"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("head"), "{reasons:?}");

    // The payloads are kept on the server for supervisors.
    let kept = server.registry().rejected().expect("rejected");
    assert_eq!(kept.len(), 2);
    // Whole: the changes kept make exactly the records the enumerator saved.
    for (sent, rejected) in [(&invalid, &kept[0]), (&headless, &kept[1])] {
        let mut record = protocol::fields::FieldMap::new();
        protocol::fields::apply(&mut record, &rejected.mutation.changes);
        assert_eq!(rejected.mutation.household_id, sent.id);
        assert_eq!(record, protocol::fields::flatten(sent));
    }
    assert_eq!(server.registry().household_count().expect("count"), 0);

    // The enumerator's data stays on the device, with the reason.
    let local = lan
        .store
        .household(invalid.id)
        .expect("read")
        .expect("still on the device");
    assert!(local
        .rejection
        .as_deref()
        .is_some_and(|r| r.contains("future")));
    assert_eq!(local.household().expect("view"), invalid);

    // The next mutations still go through, including the fixed household.
    let valid = household("Bùi Văn Khánh", "Thôn Đông");
    lan.save(&valid);
    let mut fixed = invalid.clone();
    fixed.members[0].date_of_birth = "1979-01-01".parse().expect("date");
    lan.save(&fixed);
    let report = lan.sync().await;
    assert_eq!((report.applied, report.rejected.len()), (2, 0));
    assert_eq!(registry_household(&server, valid.id), valid);
    assert_eq!(registry_household(&server, fixed.id), fixed);
}

#[tokio::test]
async fn a_first_pull_of_thousands_arrives_in_pages_and_a_sync_with_nothing_new_is_one_round_trip()
{
    let server = TestServer::start().await;
    let writer = Device::new(&server);
    let total = 3_000;
    let mut ids = Vec::with_capacity(total);
    for n in 0..total {
        let created = household(&format!("Chủ hộ số {n}"), "Thôn Đông");
        ids.push(created.id);
        writer.save(&created);
    }
    let report = writer.sync().await;
    assert_eq!(report.applied, total);

    let fresh = Device::new(&server);
    let report = fresh.sync().await;
    let (pushes, pulls) = fresh.transport.counts();
    assert_eq!(pushes, 0);
    assert!(
        pulls >= 2,
        "a first sync of {total} households comes in pages, got {pulls} page(s)"
    );
    assert!(report.pulled >= total);
    assert_eq!(fresh.store.households().expect("list").len(), total);
    for id in ids.iter().step_by(97) {
        assert_eq!(fresh.view(*id), registry_household(&server, *id));
    }

    fresh.transport.reset();
    let report = fresh.sync().await;
    assert_eq!(
        fresh.transport.counts(),
        (0, 1),
        "nothing new: one pull, no push"
    );
    assert_eq!(report.pulled, 0);

    // And the one round trip is small: no households, a cursor, no outcomes.
    let request = Request::Pull(PullRequest {
        device_id: fresh.id,
        cursor: fresh.store.cursor().expect("cursor"),
        limit: 1_000,
        outcomes_from: u64::MAX,
    });
    let Response::Pull(page) = fresh.transport.inner.send(&request).await.expect("pull") else {
        panic!("a pull gets a pull response");
    };
    assert!(page.changes.is_empty() && page.outcomes.is_empty() && !page.more);
    assert!(protocol::codec::encode(&page).len() < 32);
}

#[tokio::test]
async fn a_voided_household_syncs_as_a_tombstone_and_can_be_undone() {
    let server = TestServer::start().await;
    let (lan, minh) = (Device::new(&server), Device::new(&server));
    let created = household("Trịnh Văn Lộc", "Thôn Đông");
    lan.save(&created);
    lan.sync().await;
    minh.sync().await;

    lan.store
        .void_household(
            created.id,
            protocol::household::VoidMark {
                reason: protocol::household::VoidReason::Duplicate,
                note: "trùng với hộ ông Lộc ở thôn Tây".to_string(),
            },
        )
        .expect("void");
    lan.sync().await;
    minh.sync().await;
    assert!(registry_household(&server, created.id).is_voided());
    assert!(minh.view(created.id).is_voided());
    assert_eq!(
        server
            .registry()
            .history(created.id)
            .expect("history")
            .len(),
        2
    );

    minh.store.unvoid_household(created.id).expect("undo");
    minh.sync().await;
    lan.sync().await;
    assert_eq!(registry_household(&server, created.id), created);
    assert_eq!(lan.view(created.id), created);
    assert_eq!(
        server
            .registry()
            .history(created.id)
            .expect("history")
            .len(),
        3
    );
    let outcomes: Vec<_> = server.registry().history(created.id).expect("history");
    assert!(outcomes
        .iter()
        .any(|rev| protocol::fields::unflatten(&rev.fields).is_ok_and(|h| h.is_voided())));
}
