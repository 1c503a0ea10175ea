//! Conflicts: the same field changed on two devices, and a void against an edit. Nothing is
//! lost and nothing is silently overwritten; the household is flagged for a supervisor.

use protocol::fields::FieldValue;
use protocol::household::{VoidMark, VoidReason};

use crate::util::{household, registry_household, Device, TestServer};

#[tokio::test]
async fn the_same_field_changed_on_two_devices_is_a_conflict_with_both_values_kept() {
    let server = TestServer::start().await;
    let (lan, minh) = (Device::new(&server), Device::new(&server));
    let original = household("Nguyễn Thị Mai", "Thôn Đông");
    lan.save(&original);
    lan.sync().await;
    minh.sync().await;

    let mut by_lan = original.clone();
    by_lan.address = "Số 10, xóm Giữa".to_string();
    by_lan.support_needs = vec!["học nghề".to_string()];
    lan.save(&by_lan);
    let mut by_minh = original.clone();
    by_minh.address = "Số 12, xóm Giữa".to_string();
    by_minh.dwelling.floor_area_m2 = Some(22);
    minh.save(&by_minh);

    assert_eq!(lan.sync().await.applied, 1);
    let report = minh.sync().await;
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    let conflict = &report.conflicts[0];
    assert_eq!(conflict.fields.len(), 1);
    let field = &conflict.fields[0];
    assert_eq!(field.path, "address");
    assert_eq!(field.base, Some(FieldValue::Text(original.address.clone())));
    assert_eq!(field.theirs, Some(FieldValue::Text(by_lan.address.clone())));
    assert_eq!(field.mine, Some(FieldValue::Text(by_minh.address.clone())));

    // The registry kept the first value, applied the non-conflicting field, and flags it.
    let stored = server
        .registry()
        .household(original.id)
        .expect("read")
        .expect("exists");
    assert!(stored.in_conflict());
    let merged = registry_household(&server, original.id);
    assert_eq!(merged.address, by_lan.address);
    assert_eq!(merged.dwelling.floor_area_m2, Some(22));
    assert_eq!(merged.support_needs, by_lan.support_needs);
    let records = server
        .registry()
        .conflicts(Some(original.id))
        .expect("conflicts");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].device_id, minh.id);
    assert_eq!(records[0].fields, conflict.fields);
    assert!(records[0].open);

    // The device that lost sees the server's value, and its own value is still on the device.
    assert_eq!(minh.view(original.id), merged);
    let kept = minh.store.conflicts().expect("local conflicts");
    assert!(kept
        .iter()
        .any(|c| c.fields.iter().any(|f| f.mine == field.mine)));
    let local = minh
        .store
        .household(original.id)
        .expect("read")
        .expect("exists");
    assert!(local.in_conflict);

    // The winner converges to the same record and learns of the flag.
    lan.sync().await;
    assert_eq!(lan.view(original.id), merged);
    assert!(
        lan.store
            .household(original.id)
            .expect("read")
            .expect("exists")
            .in_conflict
    );
}

#[tokio::test]
async fn a_household_voided_on_one_device_while_edited_on_another_is_a_visible_conflict() {
    let server = TestServer::start().await;
    let (lan, minh) = (Device::new(&server), Device::new(&server));
    let original = household("Đặng Văn Nam", "Thôn Tây");
    lan.save(&original);
    lan.sync().await;
    minh.sync().await;

    lan.store
        .void_household(
            original.id,
            VoidMark {
                reason: VoidReason::MovedAway,
                note: String::new(),
            },
        )
        .expect("void");
    let mut by_minh = original.clone();
    by_minh.address = "Số 4, xóm Mới".to_string();
    minh.save(&by_minh);

    lan.sync().await;
    let report = minh.sync().await;
    assert_eq!(
        report.conflicts.len(),
        1,
        "an edit of a voided household is not applied silently"
    );
    assert!(report.conflicts[0]
        .fields
        .iter()
        .any(|f| f.path == "address" && f.mine == Some(FieldValue::Text(by_minh.address.clone()))));

    // Not a silent resurrection: still voided. Not a silent loss: the edit is in the conflict.
    let stored = registry_household(&server, original.id);
    assert!(stored.is_voided());
    assert_eq!(stored.address, original.address);
    assert!(server
        .registry()
        .household(original.id)
        .expect("read")
        .expect("exists")
        .in_conflict());
    assert_eq!(
        server
            .registry()
            .conflicts(Some(original.id))
            .expect("conflicts")
            .len(),
        1
    );
    assert!(minh.view(original.id).is_voided());

    // The other order: edited first, voided second.
    let other = household("Đặng Thị Oanh", "Thôn Tây");
    lan.save(&other);
    lan.sync().await;
    minh.sync().await;
    let mut by_lan = other.clone();
    by_lan.village = "Thôn Bắc".to_string();
    lan.save(&by_lan);
    minh.store
        .void_household(
            other.id,
            VoidMark {
                reason: VoidReason::Duplicate,
                note: String::new(),
            },
        )
        .expect("void");
    lan.sync().await;
    let report = minh.sync().await;
    assert_eq!(report.conflicts.len(), 1);
    let stored = registry_household(&server, other.id);
    assert!(!stored.is_voided(), "the void waits for a supervisor");
    assert_eq!(stored.village, "Thôn Bắc");
}

/// Found by following the README walk-through: two saves of the losing device repeated the
/// same conflicting value (mutations are cumulative) and filed it as two conflicts.
#[tokio::test]
async fn regression_two_saves_of_one_conflicting_value_file_one_conflict() {
    let server = TestServer::start().await;
    let (lan, minh) = (Device::new(&server), Device::new(&server));
    let original = household("Nguyễn Văn Ánh", "Tổ dân phố 3");
    lan.save(&original);
    lan.sync().await;
    minh.sync().await;

    let mut by_lan = original.clone();
    by_lan.address = "Số 7, ngõ Núi Trúc".to_string();
    lan.save(&by_lan);
    let mut by_minh = original.clone();
    by_minh.address = "Số 11, ngõ Núi Trúc".to_string();
    minh.save(&by_minh);
    by_minh.dwelling.floor_area_m2 = Some(18);
    minh.save(&by_minh);

    lan.sync().await;
    let report = minh.sync().await;
    let ids: std::collections::BTreeSet<u64> =
        report.conflicts.iter().map(|c| c.conflict_id).collect();
    assert_eq!(ids.len(), 1, "{report:?}");
    assert_eq!(
        server
            .registry()
            .conflicts(Some(original.id))
            .expect("conflicts")
            .len(),
        1
    );
    let merged = registry_household(&server, original.id);
    assert_eq!(merged.address, by_lan.address);
    assert_eq!(merged.dwelling.floor_area_m2, Some(18));
}
