//! Recomputing the stored classifications after a reference-data correction.
//!
//! The merge engine classifies every revision when it makes it (see
//! [`crate::merge_engine`]). When an official corrects a reference file (an income line, a
//! rural/urban override, a B1 table), [`recompute`] classifies every household's current
//! revision again with the corrected data and, where the result differs from the stored one,
//! appends a new classification record to that revision. No revision is made and nothing
//! reaches the change log: the record itself did not change, devices recompute with the
//! reference data they fetch at their next sync, and the earlier result stays in the revision's
//! history of records.
//!
//! The command is `server recompute --data-dir DIR [--reference-dir DIR]`, run while the
//! server is stopped (the registry's files are locked while it runs); a running server swaps
//! its reference data and recomputes with [`crate::AppState::replace_reference`].

use protocol::reference::ReferenceData;

use crate::store::{ClassificationRecord, Registry, StoreError};

/// What a recomputation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecomputeReport {
    /// Households looked at.
    pub households: usize,
    /// Households whose stored classification changed (including ones that had none).
    pub changed: usize,
    /// Households whose record does not rebuild into a household and so cannot be classified.
    pub skipped: usize,
}

/// Classifies every household's current revision with `reference` and stores each result that
/// differs from the stored one, in one durable write.
pub fn recompute(
    registry: &Registry,
    reference: &ReferenceData,
    now_ms: i64,
) -> Result<RecomputeReport, StoreError> {
    registry.check_healthy()?;
    let fingerprint = reference.texts().fingerprint();
    let mut report = RecomputeReport::default();
    let mut records = Vec::new();
    for id in registry.household_ids()? {
        let Some(row) = registry.household(id)? else {
            continue;
        };
        report.households += 1;
        let Ok(household) = row.household() else {
            report.skipped += 1;
            continue;
        };
        let classification = reference.classify(&household);
        if row.classification.as_ref() == Some(&classification) {
            continue;
        }
        report.changed += 1;
        records.push((
            id,
            row.rev,
            ClassificationRecord {
                classification,
                at_ms: now_ms,
                reference: fingerprint.clone(),
            },
        ));
    }
    if !records.is_empty() {
        registry.record_classifications(&records)?;
    }
    Ok(report)
}

/// `server recompute`: loads the reference data, opens the registry, recomputes, and says what
/// changed.
pub fn run_command(config: &crate::config::RecomputeConfig) -> anyhow::Result<RecomputeReport> {
    use anyhow::Context;
    let (reference, loaded) =
        crate::reference::load(&config.data_dir, config.reference_dir.as_deref())?;
    let registry = Registry::open(&config.data_dir)
        .with_context(|| format!("opening the registry in {}", config.data_dir.display()))?;
    let report = recompute(&registry, &reference, crate::now_ms())?;
    let source = match &loaded.dir {
        Some(dir) if !loaded.files.is_empty() => {
            format!("{} ({})", dir.display(), loaded.files.join(", "))
        }
        _ => "dữ liệu có sẵn / embedded defaults".to_string(),
    };
    println!(
        "Đã tính lại {} hộ, {} hộ thay đổi phân loại, {} hộ không đọc được / recomputed {} households: {} changed, {} skipped",
        report.households, report.changed, report.skipped, report.households, report.changed, report.skipped
    );
    println!(
        "Dữ liệu tham chiếu / reference data: {source}, {}",
        loaded.fingerprint
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use protocol::classify::PovertyClass;
    use protocol::fields::{self, FieldChange};
    use protocol::household::Household;
    use protocol::reference::{ReferenceData, ReferenceTexts};
    use protocol::sync::{Base, Mutation, Outcome, PushReply, PushRequest};
    use uuid::Uuid;

    use crate::{AppState, RevisionCause};

    /// Rural (xã Thanh Trì), two members, income 1,600,000, and three deprivations: the head
    /// has no health insurance, the house is makeshift, 10 m² for two.
    fn household() -> Household {
        serde_json::from_value(serde_json::json!({
            "id": Uuid::now_v7(),
            "round": {"year": 2025, "kind": "periodic"},
            "commune_code": "00640", "village": "Thôn Đông", "address": "Số 3",
            "head_member_id": "01900000-0000-7000-8000-000000000001",
            "members": [
                {"id": "01900000-0000-7000-8000-000000000001", "full_name": "Nguyễn Văn A",
                 "sex": "male", "date_of_birth": "1991-01-15", "relationship": "head",
                 "health_insurance": false, "in_school": false,
                 "qualification": "upper_secondary", "employment": "self_employed"},
                {"id": "01900000-0000-7000-8000-000000000002", "full_name": "Trần Thị Bình",
                 "sex": "female", "date_of_birth": "1993-03-02", "relationship": "spouse",
                 "health_insurance": true, "in_school": false,
                 "qualification": "upper_secondary", "employment": "self_employed"}
            ],
            "income": {"estimated_per_person_vnd": 1_600_000},
            "dwelling": {"durability": "makeshift", "floor_area_m2": 10}
        }))
        .expect("valid household")
    }

    fn changes(from: Option<&Household>, to: &Household) -> Vec<FieldChange> {
        let old = from.map(fields::flatten).unwrap_or_default();
        fields::diff(&old, &fields::flatten(to))
    }

    async fn push(state: &AppState, device: Uuid, mutation: Mutation) -> Outcome {
        let reply = state
            .push(PushRequest {
                device_id: device,
                mutations: vec![mutation],
            })
            .await
            .expect("push");
        match reply {
            PushReply::Accepted { mut outcomes, .. } => outcomes.remove(0).outcome,
            PushReply::SeqGap { expected } => panic!("seq gap, expected {expected}"),
        }
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

    #[tokio::test]
    async fn every_revision_is_classified_and_a_correction_recomputes_without_a_revision() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = AppState::open(dir.path()).expect("open");
        let registry = state.registry();
        let (lan, minh) = (Uuid::now_v7(), Uuid::now_v7());
        let created = household();
        let id = created.id;
        let reference = state.reference();

        let outcome = push(
            &state,
            lan,
            mutation(1, id, Base::New, changes(None, &created)),
        )
        .await;
        assert_eq!(outcome, Outcome::Applied { rev: 1 });
        let first = registry.revision(id, 1).expect("read").expect("rev 1");
        let record = first.classification.expect("classified with the revision");
        assert_eq!(record.classification, reference.classify(&created));
        assert_eq!(record.reference, reference.texts().fingerprint());
        assert!(matches!(
            record.classification.class,
            PovertyClass::AverageLiving { .. }
        ));

        // Lan lowers the income; Minh, still on revision 1, changes the address and the
        // floor area to something Lan also changed: a merge with a conflict.
        let mut lans = created.clone();
        lans.income.estimated_per_person_vnd = Some(1_200_000);
        lans.dwelling.floor_area_m2 = Some(9);
        push(
            &state,
            lan,
            mutation(2, id, Base::Rev(1), changes(Some(&created), &lans)),
        )
        .await;
        let mut minhs = created.clone();
        minhs.address = "Số 5".into();
        minhs.dwelling.floor_area_m2 = Some(40);
        let outcome = push(
            &state,
            minh,
            mutation(1, id, Base::Rev(1), changes(Some(&created), &minhs)),
        )
        .await;
        assert!(
            matches!(outcome, Outcome::Conflict { rev: 3, .. }),
            "{outcome:?}"
        );
        let third = registry.revision(id, 3).expect("read").expect("rev 3");
        assert_eq!(third.why, RevisionCause::Conflict);
        let merged = crate::store::StoredHousehold {
            fields: third.fields.clone(),
            ..registry.household(id).expect("read").expect("row")
        }
        .household()
        .expect("rebuilds");
        assert_eq!(merged.address, "Số 5");
        let row = registry.household(id).expect("read").expect("row");
        assert_eq!(row.classification, Some(reference.classify(&merged)));
        assert_eq!(
            row.classification.as_ref().map(|c| &c.class),
            Some(&PovertyClass::Poor)
        );

        // Unchanged data changes nothing; a corrected income line changes the class of a
        // household at 1,600,000.
        let report = super::recompute(registry, &reference, 5).expect("recompute");
        assert_eq!((report.households, report.changed), (1, 0));
        let mut back = lans.clone();
        back.income.estimated_per_person_vnd = Some(1_600_000);
        push(
            &state,
            lan,
            mutation(3, id, Base::Rev(3), changes(Some(&merged), &back.clone())),
        )
        .await;
        let row = registry.household(id).expect("read").expect("row");
        assert!(matches!(
            row.classification.as_ref().map(|c| &c.class),
            Some(PovertyClass::AverageLiving { .. })
        ));
        let corrected = ReferenceData::from_texts(ReferenceTexts {
            standards: protocol::standards::STANDARDS_JSON.replacen("1500000", "1800000", 1),
            ..ReferenceTexts::embedded()
        })
        .expect("corrected data parses");
        let report = state
            .replace_reference(corrected.clone())
            .await
            .expect("recompute");
        assert_eq!(
            (report.households, report.changed, report.skipped),
            (1, 1, 0)
        );
        let after = registry.household(id).expect("read").expect("row");
        assert_eq!(after.rev, row.rev);
        assert_eq!(after.last_seq, row.last_seq, "nothing for devices to pull");
        assert_eq!(
            after.classification.as_ref().map(|c| &c.class),
            Some(&PovertyClass::Poor)
        );
        assert_eq!(
            registry.classifications(id, after.rev).expect("read").len(),
            2
        );
        assert_eq!(
            registry.history(id).expect("history")[3]
                .classification
                .as_ref()
                .map(|r| &r.classification),
            after.classification.as_ref()
        );

        // The record made with the revision reads as it was made, with the earlier data: its
        // row keeps the decision, and its texts are rebuilt with the data it names, which the
        // registry keeps. So too after a restart that loads only the corrected data.
        let made_with = |registry: &crate::store::Registry| {
            registry
                .classifications(id, after.rev)
                .expect("read")
                .swap_remove(0)
        };
        let first = made_with(registry);
        assert_eq!(first.reference, reference.fingerprint());
        assert_eq!(first.classification, reference.classify(&back));
        assert!(matches!(
            first.classification.class,
            PovertyClass::AverageLiving { .. }
        ));
        drop(state);
        let state = AppState::open_with(dir.path(), corrected).expect("reopen");
        assert_eq!(made_with(state.registry()), first);
    }

    #[tokio::test]
    async fn an_unknown_commune_is_rejected_with_its_code() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = AppState::open(dir.path()).expect("open");
        let mut record = household();
        record.commune_code = "99999".into();
        let outcome = push(
            &state,
            Uuid::now_v7(),
            mutation(1, record.id, Base::New, changes(None, &record)),
        )
        .await;
        let Outcome::Rejected { reason } = outcome else {
            panic!("accepted: {outcome:?}");
        };
        assert!(
            reason.contains("commune code '99999' is not in the 2025 code set"),
            "{reason}"
        );
    }
}
