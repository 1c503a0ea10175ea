//! The classification rule branch by branch for both standards, the indicator derivations from
//! member and dwelling answers, and properties over arbitrary households.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::b1::B1Tables;
use crate::household::*;
use crate::indicators::{derive, Finding};
use crate::standards::IndicatorId;

/// Xã Thanh Trì, Hà Nội: rural, Red River Delta.
const RURAL: &str = "00640";
/// Phường Ba Đình, Hà Nội: urban.
const URBAN: &str = "00004";

struct Data {
    standards: StandardSet,
    areas: AreaRegistry,
    tables: B1Tables,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| Data {
        standards: StandardSet::embedded().expect("standards load"),
        areas: AreaRegistry::embedded().expect("areas load"),
        tables: B1Tables::sample().expect("sample table loads"),
    })
}

fn day(text: &str) -> Date {
    text.parse().expect("valid date")
}

/// A reference date under ND 07/2021.
fn nd07() -> Date {
    day("2025-09-01")
}

/// A reference date under ND 351/2025.
fn nd351() -> Date {
    day("2027-09-01")
}

fn input(reference_date: Date) -> ClassifyInput<'static> {
    let data = data();
    ClassifyInput {
        reference_date,
        standards: &data.standards,
        areas: &data.areas,
        b1_tables: Some(&data.tables),
    }
}

fn run(household: &Household, reference_date: Date) -> Classification {
    classify(household, &input(reference_date))
}

fn member_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

/// A working adult with every answer given and no deprivation.
fn adult(n: u128, name: &str, born: &str, sex: Sex) -> Member {
    Member {
        id: member_id(n),
        full_name: name.into(),
        sex,
        date_of_birth: day(born),
        personal_id: None,
        relationship: if n == 1 {
            Relationship::Head
        } else {
            Relationship::Other
        },
        ethnicity: Some("Kinh".into()),
        in_school: Some(false),
        qualification: Some(Qualification::UpperSecondary),
        employment: Some(Employment::WageWithContract),
        has_pension: Some(false),
        health_insurance: Some(true),
        disability_or_severe_illness: Some(false),
        child_nutrition: None,
    }
}

/// A child in school, insured, with normal nutrition.
fn child(n: u128, name: &str, born: &str) -> Member {
    Member {
        in_school: Some(true),
        qualification: Some(Qualification::Primary),
        employment: Some(Employment::NotInLabourForce),
        child_nutrition: Some(ChildNutrition::Normal),
        relationship: Relationship::Child,
        ..adult(n, name, born, Sex::Female)
    }
}

/// Two working adults in a good dwelling: no deprivation under either standard.
fn household(commune: &str, income: Option<u64>) -> Household {
    Household {
        id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa),
        round: ReviewRound {
            year: 2025,
            kind: RoundKind::Periodic,
        },
        commune_code: commune.into(),
        village: "Thôn Đông".into(),
        address: "Số 3".into(),
        gps: None,
        head_member_id: Some(member_id(1)),
        members: vec![
            adult(1, "Nguyễn Văn An", "1980-05-02", Sex::Male),
            adult(2, "Trần Thị Bình", "1982-03-10", Sex::Female),
        ],
        flags: HouseholdFlags::default(),
        income: IncomeEvidence {
            estimated_per_person_vnd: income,
            b1_answers: BTreeMap::new(),
        },
        dwelling: Dwelling {
            durability: Some(HouseDurability::Durable),
            floor_area_m2: Some(40),
            water_source: Some(WaterSource::PipedWater),
            latrine: Some(Latrine::FlushOrPourFlush),
            internet_use: Some(true),
            information_devices: vec![InformationDevice::Smartphone],
            waste_handling: Some(WasteHandling::Collected),
            information_devices_asked: true,
            internet_access: Some(true),
            digital_services_use: Some(true),
        },
        causes_of_poverty: PovertyCauses::default(),
        support_needs: Vec::new(),
        void: None,
    }
}

/// Makes the household deprived in `n` (at most 4) dwelling indicators both standards share.
fn deprive(mut h: Household, n: usize) -> Household {
    let steps: [fn(&mut Dwelling); 4] = [
        |d| d.durability = Some(HouseDurability::Makeshift),
        |d| d.water_source = Some(WaterSource::SurfaceWater),
        |d| d.latrine = Some(Latrine::None),
        |d| d.internet_use = Some(false),
    ];
    for step in steps.iter().take(n) {
        step(&mut h.dwelling);
    }
    h
}

/// B1 answers scoring 140 (rural, Red River Delta) / 175 (urban) with the sample table, or one
/// point more with `plus_one`.
fn b1_at_line(plus_one: bool) -> BTreeMap<String, String> {
    let q5 = if plus_one { "1" } else { "2" };
    [
        ("Q1", "2"),
        ("Q2", "2"),
        ("Q3", "2"),
        ("Q4", "2"),
        ("Q5", q5),
    ]
    .into_iter()
    .map(|(q, a)| (q.to_string(), a.to_string()))
    .collect()
}

fn ids(c: &Classification) -> Vec<IndicatorId> {
    c.deprivations.iter().map(|d| d.indicator).collect()
}

const POOR: PovertyClass = PovertyClass::Poor;
const NEAR: PovertyClass = PovertyClass::NearPoor;
const NOT: PovertyClass = PovertyClass::NotPoor;
const AVG: PovertyClass = PovertyClass::AverageLiving {
    policy_subclass: false,
};
const AVG_POLICY: PovertyClass = PovertyClass::AverageLiving {
    policy_subclass: true,
};

#[test]
fn income_mode_every_branch_for_both_standards() {
    // (reference date, commune, income, deprivations, farming flag, class, standard)
    let table: &[(Date, &str, u64, usize, bool, PovertyClass, &str)] = &[
        // ND 07/2021, rural: line 1,500,000, band to 2,250,000.
        (nd07(), RURAL, 0, 0, false, NEAR, "ND07-2021"),
        (nd07(), RURAL, 1_500_000, 3, false, POOR, "ND07-2021"),
        (nd07(), RURAL, 1_500_000, 4, false, POOR, "ND07-2021"),
        (nd07(), RURAL, 1_500_000, 2, false, NEAR, "ND07-2021"),
        (nd07(), RURAL, 1_499_999, 3, false, POOR, "ND07-2021"),
        (nd07(), RURAL, 1_500_001, 3, false, AVG, "ND07-2021"),
        (nd07(), RURAL, 1_500_001, 0, true, AVG_POLICY, "ND07-2021"),
        (nd07(), RURAL, 2_250_000, 0, false, AVG, "ND07-2021"),
        (nd07(), RURAL, 2_250_000, 4, true, AVG_POLICY, "ND07-2021"),
        (nd07(), RURAL, 2_250_001, 4, true, NOT, "ND07-2021"),
        (nd07(), RURAL, 9_000_000, 0, false, NOT, "ND07-2021"),
        // ND 07/2021, urban: line 2,000,000, band to 3,000,000.
        (nd07(), URBAN, 2_000_000, 3, false, POOR, "ND07-2021"),
        (nd07(), URBAN, 2_000_000, 2, false, NEAR, "ND07-2021"),
        (nd07(), URBAN, 1_800_000, 3, false, POOR, "ND07-2021"),
        (nd07(), URBAN, 2_000_001, 3, false, AVG, "ND07-2021"),
        (nd07(), URBAN, 3_000_000, 0, true, AVG_POLICY, "ND07-2021"),
        (nd07(), URBAN, 3_000_001, 0, false, NOT, "ND07-2021"),
        // The same income is average living in a rural commune and poor in an urban one.
        (nd07(), RURAL, 1_800_000, 3, false, AVG, "ND07-2021"),
        // ND 351/2025, rural: line 2,200,000, no band yet.
        (nd351(), RURAL, 2_200_000, 3, false, POOR, "ND351-2025"),
        (nd351(), RURAL, 2_200_000, 2, false, NEAR, "ND351-2025"),
        (nd351(), RURAL, 1_800_000, 3, false, POOR, "ND351-2025"),
        (nd351(), RURAL, 2_200_001, 3, true, NOT, "ND351-2025"),
        // ND 351/2025, urban: line 2,800,000.
        (nd351(), URBAN, 2_800_000, 3, false, POOR, "ND351-2025"),
        (nd351(), URBAN, 2_800_000, 2, false, NEAR, "ND351-2025"),
        (nd351(), URBAN, 2_800_001, 4, false, NOT, "ND351-2025"),
        // The switch between the standards is the reference date.
        (
            day("2026-12-31"),
            RURAL,
            2_000_000,
            3,
            false,
            AVG,
            "ND07-2021",
        ),
        (
            day("2027-01-01"),
            RURAL,
            2_000_000,
            3,
            false,
            POOR,
            "ND351-2025",
        ),
    ];
    for (row, (date, commune, income, deprivations, farming, class, standard)) in
        table.iter().enumerate()
    {
        let mut h = deprive(household(commune, Some(*income)), *deprivations);
        h.flags.farming_forestry_fishery_salt = *farming;
        let c = run(&h, *date);
        assert_eq!(&c.class, class, "row {row}: {}", c.decided_by);
        assert_eq!(c.standard_id.as_deref(), Some(*standard), "row {row}");
        assert_eq!(c.income_mode, Some(IncomeMode::Estimated), "row {row}");
        assert_eq!(c.deprivations.len(), *deprivations, "row {row}");
        assert_eq!(c.score_b, 10 * *deprivations as u32, "row {row}");
        assert_eq!(c.score_a, None, "row {row}");
        let settlement = if *commune == URBAN {
            Settlement::Urban
        } else {
            Settlement::Rural
        };
        assert_eq!(c.rural_or_urban, Some(settlement), "row {row}");
        assert!(c.not_assessed.is_empty(), "row {row}");
    }
}

#[test]
fn score_mode_every_branch_for_both_standards() {
    // (reference date, commune, one point above the line, deprivations, class)
    let table: &[(Date, &str, bool, usize, PovertyClass, u32)] = &[
        (nd07(), RURAL, false, 3, POOR, 140),
        (nd07(), RURAL, false, 2, NEAR, 140),
        (nd07(), RURAL, false, 0, NEAR, 140),
        (nd07(), RURAL, true, 3, NOT, 141),
        (nd07(), URBAN, false, 3, POOR, 175),
        (nd07(), URBAN, false, 2, NEAR, 175),
        (nd07(), URBAN, true, 4, NOT, 176),
        (nd351(), RURAL, false, 3, POOR, 140),
        (nd351(), RURAL, false, 2, NEAR, 140),
        (nd351(), RURAL, true, 3, NOT, 141),
        (nd351(), URBAN, false, 3, POOR, 175),
        (nd351(), URBAN, false, 2, NEAR, 175),
        (nd351(), URBAN, true, 3, NOT, 176),
    ];
    for (row, (date, commune, plus_one, deprivations, class, score)) in table.iter().enumerate() {
        let mut h = deprive(household(commune, None), *deprivations);
        h.income.b1_answers = b1_at_line(*plus_one);
        // The policy subclass belongs to the income band, never to score mode.
        h.flags.farming_forestry_fishery_salt = true;
        let c = run(&h, *date);
        assert_eq!(&c.class, class, "row {row}: {}", c.decided_by);
        assert_eq!(c.income_mode, Some(IncomeMode::ScoreA), "row {row}");
        assert_eq!(c.score_a, Some(*score), "row {row}");
        assert_eq!(c.score_b, 10 * *deprivations as u32, "row {row}");
        assert_eq!(c.b1_table_id.as_deref(), Some("b1-sample"), "row {row}");
        assert!(c.decided_by.contains("SAMPLE B1 table"), "row {row}");
    }
}

#[test]
fn an_estimated_income_wins_over_b1_answers() {
    let mut h = deprive(household(RURAL, Some(2_000_000)), 3);
    h.income.b1_answers = b1_at_line(false);
    let c = run(&h, nd07());
    assert_eq!(c.income_mode, Some(IncomeMode::Estimated));
    assert_eq!(c.class, AVG);
    assert_eq!(c.score_a, None);
}

#[test]
fn decided_by_names_the_rule_and_its_numbers() {
    let c = run(&deprive(household(RURAL, Some(1_500_000)), 3), nd07());
    assert_eq!(
        c.decided_by,
        "ND07-2021: thu nhập 1.500.000 đ ≤ chuẩn nghèo nông thôn 1.500.000 đ và thiếu hụt 3 chỉ số ≥ 3 → hộ nghèo / ND07-2021: income 1,500,000 VND ≤ rural line 1,500,000 VND and 3 deprivations ≥ 3 → poor"
    );
    let c = run(&household(URBAN, Some(2_500_000)), nd07());
    assert!(
        c.decided_by
            .contains("urban line 2,000,000 VND < income 2,500,000 VND ≤ 3,000,000 VND"),
        "{}",
        c.decided_by
    );
    let c = run(&household(RURAL, Some(2_300_000)), nd351());
    assert!(
        c.decided_by.contains("no average-living band yet"),
        "{}",
        c.decided_by
    );
    let mut h = deprive(household(URBAN, None), 2);
    h.income.b1_answers = b1_at_line(false);
    let c = run(&h, nd07());
    assert!(
        c.decided_by.contains(
            "score A 175 ≤ 175 (urban) [SAMPLE B1 table] and score B 20 < 30 → near-poor"
        ),
        "{}",
        c.decided_by
    );
}

#[test]
fn class_labels_are_the_official_names() {
    assert_eq!(POOR.label_vi(), "hộ nghèo");
    assert_eq!(NEAR.label_vi(), "hộ cận nghèo");
    assert_eq!(AVG.label_vi(), "hộ có mức sống trung bình");
    assert_eq!(AVG_POLICY.label_vi(), "hộ có mức sống trung bình");
    assert_eq!(NOT.label_vi(), "hộ không nghèo");
}

fn missing(c: &Classification) -> &[String] {
    match &c.class {
        PovertyClass::CannotClassify { missing } => missing,
        other => panic!("expected cannot classify, got {other:?}: {}", c.decided_by),
    }
}

#[test]
fn missing_income_evidence_cannot_be_classified() {
    let c = run(&household(RURAL, None), nd07());
    assert!(
        missing(&c)[0].contains("an estimated income per person or the form B1 answers"),
        "{:?}",
        c.class
    );
    assert_eq!(c.income_mode, None);
    assert_eq!(c.standard_id.as_deref(), Some("ND07-2021"));
}

#[test]
fn an_unknown_or_malformed_commune_cannot_be_classified() {
    for code in ["99999", "4", ""] {
        let c = run(&household(code, Some(1_000_000)), nd07());
        assert!(
            missing(&c)[0].contains(&format!("'{code}'")),
            "{code}: {:?}",
            c.class
        );
        assert_eq!(c.rural_or_urban, None);
    }
}

#[test]
fn no_standard_on_the_date_cannot_be_classified() {
    let c = run(&household(RURAL, Some(1_000_000)), day("2021-06-30"));
    assert_eq!(c.standard_id, None);
    assert!(missing(&c)[0].contains("a poverty standard in force on 2021-06-30"));
}

#[test]
fn score_mode_without_tables_or_answers_names_what_is_missing() {
    let mut h = household(RURAL, None);
    h.income.b1_answers = b1_at_line(false);
    let c = classify(
        &h,
        &ClassifyInput {
            b1_tables: None,
            ..input(nd07())
        },
    );
    assert!(missing(&c)[0].contains("the form B1 point tables"));

    h.income.b1_answers.remove("Q3");
    let c = run(&h, nd07());
    assert!(
        missing(&c)[0].contains("B1 answer missing for question Q3"),
        "{:?}",
        c.class
    );
    h.income.b1_answers.insert("Q3".into(), "7".into());
    let c = run(&h, nd07());
    assert!(missing(&c)[0].contains("answer '7' is not in the point table"));
    assert_eq!(c.score_a, None);
}

#[test]
fn unknown_indicators_block_only_when_they_could_change_the_class() {
    // Two deprivations and one unknown: it could be 3, so it cannot be classified.
    let mut h = deprive(household(RURAL, Some(1_000_000)), 2);
    h.dwelling.latrine = None;
    let c = run(&h, nd07());
    let items = missing(&c);
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(items[0].contains("household – latrine"), "{items:?}");
    assert_eq!(c.not_assessed.len(), 1);
    assert_eq!(c.not_assessed[0].indicator, IndicatorId::Latrine);

    // Three found: poor whatever the unknown one says.
    let mut h = deprive(household(RURAL, Some(1_000_000)), 3);
    h.dwelling.floor_area_m2 = None;
    assert_eq!(run(&h, nd07()).class, POOR);

    // None found and two unknown: near-poor even if both were deprived.
    let mut h = household(RURAL, Some(1_000_000));
    h.dwelling.water_source = None;
    h.members[1].health_insurance = None;
    let c = run(&h, nd07());
    assert_eq!(c.class, NEAR, "{}", c.decided_by);
    assert!(c
        .decided_by
        .contains("even if the 2 unassessed indicators were deprived"));
    assert_eq!(c.not_assessed.len(), 2);
    assert_eq!(
        c.not_assessed[0].missing,
        vec!["thành viên Trần Thị Bình, 43 tuổi – bảo hiểm y tế / member Trần Thị Bình, 43 – health insurance"]
    );

    // Above the line the indicators do not matter at all.
    let mut h = household(RURAL, Some(2_000_000));
    h.dwelling = Dwelling::default();
    assert_eq!(run(&h, nd07()).class, AVG);

    // In score mode the same bounds apply to score B.
    let mut h = deprive(household(RURAL, None), 2);
    h.income.b1_answers = b1_at_line(false);
    h.dwelling.latrine = None;
    let c = run(&h, nd07());
    assert!(missing(&c)[0].contains("latrine"));
    assert_eq!(c.score_a, Some(140));
}

#[test]
fn missing_income_also_lists_the_answers_the_indicators_need() {
    let mut h = household(RURAL, None);
    h.members[0].health_insurance = None;
    let c = run(&h, nd07());
    let items = missing(&c);
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        items[1].contains("member Nguyễn Văn An, 45 – health insurance"),
        "{items:?}"
    );
}

// Indicator derivations.

fn finding(h: &Household, date: Date, indicator: IndicatorId) -> Finding {
    let standard = data().standards.for_date(date).expect("a standard");
    let spec = standard
        .indicators
        .iter()
        .find(|s| s.rule.id() == indicator)
        .expect("the standard has the indicator");
    derive(h, spec, &standard.working_age, date)
}

fn deprived(h: &Household, indicator: IndicatorId) -> bool {
    match finding(h, nd07(), indicator) {
        Finding::Deprived(_) => true,
        Finding::NotDeprived => false,
        Finding::Unknown(gap) => panic!("{indicator:?} unknown: {:?}", gap.missing),
    }
}

fn with_member(member: Member) -> Household {
    let mut h = household(RURAL, Some(1_000_000));
    h.members.push(member);
    h
}

#[test]
fn health_insurance_counts_from_the_sixth_birthday() {
    // Born 2019-09-01: 6 on the reference date 2025-09-01.
    let six = Member {
        health_insurance: Some(false),
        ..child(3, "Lê Minh Châu", "2019-09-01")
    };
    assert!(deprived(
        &with_member(six.clone()),
        IndicatorId::HealthInsurance
    ));
    // Born a day later: still 5.
    let five = Member {
        date_of_birth: day("2019-09-02"),
        ..six
    };
    assert!(!deprived(&with_member(five), IndicatorId::HealthInsurance));
}

#[test]
fn a_deprivation_reason_names_the_member_and_age() {
    let mut h = household(RURAL, Some(1_000_000));
    h.members[0].full_name = "Nguyễn Văn A".into();
    h.members[0].date_of_birth = day("1991-01-15");
    h.members[0].health_insurance = Some(false);
    let Finding::Deprived(d) = finding(&h, nd07(), IndicatorId::HealthInsurance) else {
        panic!("deprived");
    };
    assert_eq!(
        d.reason,
        "thành viên Nguyễn Văn A, 34 tuổi, không có bảo hiểm y tế / member Nguyễn Văn A, 34, no health insurance"
    );
    assert_eq!(d.members, vec![member_id(1)]);
    // Two members: each named in turn, in member-id order, in both languages.
    h.members[1].health_insurance = Some(false);
    h.members.reverse();
    let Finding::Deprived(d) = finding(&h, nd07(), IndicatorId::HealthInsurance) else {
        panic!("deprived");
    };
    assert_eq!(
        d.reason,
        "thành viên Nguyễn Văn A, 34 tuổi, không có bảo hiểm y tế; thành viên Trần Thị Bình, 43 tuổi, không có bảo hiểm y tế / member Nguyễn Văn A, 34, no health insurance; member Trần Thị Bình, 43, no health insurance"
    );
    assert_eq!(d.members, vec![member_id(1), member_id(2)]);
}

#[test]
fn adult_education_by_age_band() {
    let teen = |born: &str, q: Qualification, in_school: bool| Member {
        qualification: Some(q),
        in_school: Some(in_school),
        ..adult(3, "Phạm Văn Dũng", born, Sex::Male)
    };
    // 17, out of school, without lower secondary: deprived.
    let h = with_member(teen("2008-01-01", Qualification::Primary, false));
    assert!(deprived(&h, IndicatorId::AdultEducation));
    let Finding::Deprived(d) = finding(&h, nd07(), IndicatorId::AdultEducation) else {
        panic!("deprived");
    };
    assert!(
        d.reason.contains(
            "member Phạm Văn Dũng, 17, not studying and has not completed lower secondary school"
        ),
        "{}",
        d.reason
    );
    // 17 with lower secondary, or still studying: not deprived.
    assert!(!deprived(
        &with_member(teen("2008-01-01", Qualification::LowerSecondary, false)),
        IndicatorId::AdultEducation
    ));
    assert!(!deprived(
        &with_member(teen("2008-01-01", Qualification::Primary, true)),
        IndicatorId::AdultEducation
    ));
    // 18 to 30 need upper secondary or vocational training.
    assert!(deprived(
        &with_member(teen("2007-01-01", Qualification::LowerSecondary, false)),
        IndicatorId::AdultEducation
    ));
    assert!(!deprived(
        &with_member(teen("2007-01-01", Qualification::Vocational, false)),
        IndicatorId::AdultEducation
    ));
    assert!(deprived(
        &with_member(teen("1995-01-01", Qualification::None, false)),
        IndicatorId::AdultEducation
    ));
    // 31: outside the indicator.
    assert!(!deprived(
        &with_member(teen("1994-01-01", Qualification::None, false)),
        IndicatorId::AdultEducation
    ));
    // 15: a child's schooling, not adult education.
    assert!(!deprived(
        &with_member(teen("2010-01-01", Qualification::Primary, false)),
        IndicatorId::AdultEducation
    ));
    // An unanswered question is named only when the other answer does not decide.
    let unknown = Member {
        in_school: None,
        ..teen("2008-01-01", Qualification::Primary, false)
    };
    let Finding::Unknown(gap) = finding(&with_member(unknown), nd07(), IndicatorId::AdultEducation)
    else {
        panic!("unknown");
    };
    assert_eq!(
        gap.missing,
        vec!["thành viên Phạm Văn Dũng, 17 tuổi – đang đi học / member Phạm Văn Dũng, 17 – in school"]
    );
    let decided = Member {
        in_school: None,
        ..teen("2008-01-01", Qualification::UpperSecondary, false)
    };
    assert!(!deprived(
        &with_member(decided),
        IndicatorId::AdultEducation
    ));
}

#[test]
fn child_schooling_from_three_to_under_sixteen() {
    let out_of_school = |born: &str| Member {
        in_school: Some(false),
        ..child(3, "Lê Thị Em", born)
    };
    assert!(deprived(
        &with_member(out_of_school("2022-09-01")),
        IndicatorId::ChildSchooling
    ));
    assert!(!deprived(
        &with_member(out_of_school("2022-09-02")),
        IndicatorId::ChildSchooling
    ));
    assert!(deprived(
        &with_member(out_of_school("2009-09-02")),
        IndicatorId::ChildSchooling
    ));
    assert!(!deprived(
        &with_member(out_of_school("2009-09-01")),
        IndicatorId::ChildSchooling
    ));
}

#[test]
fn dependents_more_than_half_exactly_half_is_not() {
    let mut h = household(RURAL, Some(1_000_000));
    h.members.push(child(3, "Con Một", "2015-01-01"));
    h.members.push(child(4, "Con Hai", "2017-01-01"));
    // Two of four: exactly 50%.
    assert!(!deprived(&h, IndicatorId::Dependents));
    // Three of five: 60%.
    h.members.push(child(5, "Con Ba", "2019-01-01"));
    assert!(deprived(&h, IndicatorId::Dependents));
    let Finding::Deprived(d) = finding(&h, nd07(), IndicatorId::Dependents) else {
        panic!("deprived");
    };
    assert!(
        d.reason
            .contains("3 of 5 members are dependents, more than 50%"),
        "{}",
        d.reason
    );
    assert_eq!(d.members.len(), 3);

    // Past working age: a man at 60, a woman at 55; a disability counts too.
    let pair = |a: Member, b: Member| {
        let mut h = household(RURAL, Some(1_000_000));
        h.members = vec![a, b];
        h.members.push(adult(9, "Ba", "1990-01-01", Sex::Male));
        h
    };
    let man = |born: &str| adult(3, "Ông", born, Sex::Male);
    let woman = |born: &str| adult(4, "Bà", born, Sex::Female);
    assert!(deprived(
        &pair(man("1965-09-01"), woman("1970-09-01")),
        IndicatorId::Dependents
    ));
    assert!(!deprived(
        &pair(man("1965-09-02"), woman("1970-09-01")),
        IndicatorId::Dependents
    ));
    assert!(!deprived(
        &pair(man("1965-09-01"), woman("1970-09-02")),
        IndicatorId::Dependents
    ));
    let disabled = Member {
        disability_or_severe_illness: Some(true),
        ..woman("1990-01-01")
    };
    assert!(deprived(
        &pair(man("1950-01-01"), disabled),
        IndicatorId::Dependents
    ));

    // No working capacity: every member is a dependent.
    let mut h = household(RURAL, Some(1_000_000));
    h.flags.no_working_capacity = true;
    assert!(deprived(&h, IndicatorId::Dependents));

    // An unanswered disability question matters only at the margin.
    let unknown = Member {
        disability_or_severe_illness: None,
        ..adult(9, "Ba", "1990-01-01", Sex::Male)
    };
    let margin = pair(man("1950-01-01"), unknown.clone());
    assert!(matches!(
        finding(&margin, nd07(), IndicatorId::Dependents),
        Finding::Unknown(gap) if gap.missing[0].contains("member Ba, 35 – disability or severe illness")
    ));
    let mut clear = household(RURAL, Some(1_000_000));
    clear.members.push(unknown);
    assert!(!deprived(&clear, IndicatorId::Dependents));
}

#[test]
fn floor_area_below_eight_square_metres_per_person() {
    let mut h = household(RURAL, Some(1_000_000));
    h.members.push(adult(3, "Ba", "1990-01-01", Sex::Male));
    h.dwelling.floor_area_m2 = Some(24);
    assert!(!deprived(&h, IndicatorId::FloorArea));
    h.dwelling.floor_area_m2 = Some(23);
    let Finding::Deprived(d) = finding(&h, nd07(), IndicatorId::FloorArea) else {
        panic!("deprived");
    };
    assert_eq!(
        d.reason,
        "diện tích nhà ở 23 m² cho 3 người, 7,6 m²/người, dưới 8 m²/người / floor area 23 m² for 3 people, 7.6 m² per person, below 8"
    );
    h.dwelling.floor_area_m2 = None;
    assert!(matches!(
        finding(&h, nd07(), IndicatorId::FloorArea),
        Finding::Unknown(_)
    ));
}

#[test]
fn nutrition_of_children_under_sixteen() {
    let stunted = |born: &str| Member {
        child_nutrition: Some(ChildNutrition::Stunted),
        ..child(3, "Bé", born)
    };
    assert!(deprived(
        &with_member(stunted("2009-09-02")),
        IndicatorId::Nutrition
    ));
    assert!(!deprived(
        &with_member(stunted("2009-09-01")),
        IndicatorId::Nutrition
    ));
    let unanswered = Member {
        child_nutrition: None,
        ..child(3, "Bé", "2020-01-01")
    };
    assert!(matches!(
        finding(&with_member(unanswered), nd07(), IndicatorId::Nutrition),
        Finding::Unknown(_)
    ));
}

#[test]
fn employment_of_working_age_members() {
    let worker = |born: &str, sex: Sex, employment: Employment| Member {
        employment: Some(employment),
        ..adult(3, "Lao Động", born, sex)
    };
    assert!(deprived(
        &with_member(worker(
            "1995-01-01",
            Sex::Male,
            Employment::WageWithoutContract
        )),
        IndicatorId::Employment
    ));
    assert!(deprived(
        &with_member(worker("1971-01-01", Sex::Female, Employment::Unemployed)),
        IndicatorId::Employment
    ));
    // Past working age (a woman of 55, a man of 60) or under 15: not counted.
    assert!(!deprived(
        &with_member(worker("1970-01-01", Sex::Female, Employment::Unemployed)),
        IndicatorId::Employment
    ));
    assert!(!deprived(
        &with_member(worker("1965-01-01", Sex::Male, Employment::Unemployed)),
        IndicatorId::Employment
    ));
    assert!(!deprived(
        &with_member(worker(
            "2012-01-01",
            Sex::Male,
            Employment::WageWithoutContract
        )),
        IndicatorId::Employment
    ));
    assert!(!deprived(
        &with_member(worker("1995-01-01", Sex::Male, Employment::SelfEmployed)),
        IndicatorId::Employment
    ));
}

#[test]
fn dwelling_indicators() {
    let mut h = household(RURAL, Some(1_000_000));
    for (durability, expected) in [
        (HouseDurability::Durable, false),
        (HouseDurability::SemiDurable, false),
        (HouseDurability::LessDurable, true),
        (HouseDurability::Makeshift, true),
    ] {
        h.dwelling.durability = Some(durability);
        assert_eq!(
            deprived(&h, IndicatorId::HousingQuality),
            expected,
            "{durability:?}"
        );
    }
    h.dwelling.water_source = Some(WaterSource::UnprotectedWell);
    assert!(deprived(&h, IndicatorId::Water));
    h.dwelling.water_source = Some(WaterSource::Rainwater);
    assert!(!deprived(&h, IndicatorId::Water));
    h.dwelling.latrine = Some(Latrine::UnhygienicPit);
    assert!(deprived(&h, IndicatorId::Latrine));
    h.dwelling.internet_use = Some(false);
    assert!(deprived(&h, IndicatorId::TelecomUse));
}

#[test]
fn information_devices_none_and_no_loudspeaker() {
    let mut h = household(RURAL, Some(1_000_000));
    h.dwelling.information_devices = vec![InformationDevice::VillageLoudspeaker];
    assert!(!deprived(&h, IndicatorId::InformationDevices));
    h.dwelling.information_devices = Vec::new();
    assert!(deprived(&h, IndicatorId::InformationDevices));
    // An empty list that was never asked is not "none".
    h.dwelling.information_devices_asked = false;
    assert!(matches!(
        finding(&h, nd07(), IndicatorId::InformationDevices),
        Finding::Unknown(_)
    ));
}

#[test]
fn each_standard_uses_its_own_indicators() {
    let mut h = household(RURAL, Some(1_000_000));
    h.dwelling.information_devices = Vec::new();
    h.dwelling.waste_handling = Some(WasteHandling::Dumped);
    h.dwelling.internet_access = Some(false);
    h.dwelling.digital_services_use = Some(false);
    let c07 = run(&h, nd07());
    assert_eq!(ids(&c07), vec![IndicatorId::InformationDevices]);
    assert_eq!(c07.class, NEAR);
    let c351 = run(&h, nd351());
    assert_eq!(
        ids(&c351),
        vec![
            IndicatorId::HouseholdWaste,
            IndicatorId::InternetAccess,
            IndicatorId::DigitalServices
        ]
    );
    assert_eq!(c351.class, POOR);
    // Answers only the 2027 standard asks do not block a 2025 classification.
    let mut h = household(RURAL, Some(1_000_000));
    h.dwelling.waste_handling = None;
    h.dwelling.internet_access = None;
    h.dwelling.digital_services_use = None;
    assert!(run(&h, nd07()).not_assessed.is_empty());
    assert_eq!(run(&h, nd351()).not_assessed.len(), 3);
}

#[test]
fn a_household_poor_with_three_reasons() {
    let mut h = household(RURAL, Some(1_200_000));
    h.members[0].health_insurance = Some(false);
    h.members.push(Member {
        in_school: Some(false),
        ..child(3, "Lê Thị Em", "2015-02-01")
    });
    h.dwelling.durability = Some(HouseDurability::LessDurable);
    let c = run(&h, nd07());
    assert_eq!(c.class, POOR);
    assert_eq!(c.class.label_vi(), "hộ nghèo");
    assert_eq!(
        ids(&c),
        vec![
            IndicatorId::HealthInsurance,
            IndicatorId::ChildSchooling,
            IndicatorId::HousingQuality
        ]
    );
    assert_eq!(
        c.deprivations[1].reason,
        "thành viên Lê Thị Em, 10 tuổi, không đi học / member Lê Thị Em, 10, not in school"
    );
    assert_eq!(
        c.deprivations[2].reason,
        "nhà ở thiếu kiên cố / the dwelling is less durable"
    );
}

// Properties.

fn any_date() -> impl Strategy<Value = Date> {
    (1890i32..2100, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| Date {
        year: y,
        month: m,
        day: d,
    })
}

fn raw_date() -> impl Strategy<Value = Date> {
    (any::<i32>(), any::<u8>(), any::<u8>()).prop_map(|(year, month, day)| Date {
        year,
        month,
        day,
    })
}

fn any_member(n: u128, date: BoxedStrategy<Date>) -> impl Strategy<Value = Member> {
    (
        (date, any::<bool>(), "[A-Za-zÀ-ỹ ]{0,12}"),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(prop_oneof![
                Just(Qualification::None),
                Just(Qualification::Primary),
                Just(Qualification::LowerSecondary),
                Just(Qualification::UpperSecondary),
                Just(Qualification::Vocational),
                Just(Qualification::CollegeOrUniversity),
            ]),
            proptest::option::of(prop_oneof![
                Just(Employment::WageWithContract),
                Just(Employment::WageWithoutContract),
                Just(Employment::SelfEmployed),
                Just(Employment::Unemployed),
                Just(Employment::NotInLabourForce),
            ]),
        ),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(prop_oneof![
                Just(ChildNutrition::Normal),
                Just(ChildNutrition::Stunted),
                Just(ChildNutrition::Underweight),
            ]),
        ),
    )
        .prop_map(
            move |(
                (born, male, name),
                (in_school, qualification, employment),
                (insured, disabled, nutrition),
            )| {
                Member {
                    id: member_id(n),
                    full_name: name,
                    sex: if male { Sex::Male } else { Sex::Female },
                    date_of_birth: born,
                    personal_id: None,
                    relationship: if n == 0 {
                        Relationship::Head
                    } else {
                        Relationship::Child
                    },
                    ethnicity: None,
                    in_school,
                    qualification,
                    employment,
                    has_pension: None,
                    health_insurance: insured,
                    disability_or_severe_illness: disabled,
                    child_nutrition: nutrition,
                }
            },
        )
}

fn any_dwelling() -> impl Strategy<Value = Dwelling> {
    (
        (
            proptest::option::of(prop_oneof![
                Just(HouseDurability::Durable),
                Just(HouseDurability::SemiDurable),
                Just(HouseDurability::LessDurable),
                Just(HouseDurability::Makeshift),
            ]),
            proptest::option::of(prop_oneof![Just(0u32), 1u32..200, Just(u32::MAX)]),
            proptest::option::of(prop_oneof![
                Just(WaterSource::PipedWater),
                Just(WaterSource::SurfaceWater),
                Just(WaterSource::Other),
            ]),
            proptest::option::of(prop_oneof![
                Just(Latrine::FlushOrPourFlush),
                Just(Latrine::UnhygienicPit),
                Just(Latrine::None),
            ]),
        ),
        (
            proptest::option::of(any::<bool>()),
            proptest::collection::vec(
                prop_oneof![
                    Just(InformationDevice::Phone),
                    Just(InformationDevice::Radio),
                    Just(InformationDevice::VillageLoudspeaker),
                ],
                0..3,
            ),
            proptest::option::of(prop_oneof![
                Just(WasteHandling::Collected),
                Just(WasteHandling::Dumped),
            ]),
            any::<bool>(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(
                (durability, floor_area_m2, water_source, latrine),
                (
                    internet_use,
                    information_devices,
                    waste_handling,
                    information_devices_asked,
                    internet_access,
                    digital_services_use,
                ),
            )| Dwelling {
                durability,
                floor_area_m2,
                water_source,
                latrine,
                internet_use,
                information_devices,
                waste_handling,
                information_devices_asked,
                internet_access,
                digital_services_use,
            },
        )
}

fn any_household(date: fn() -> BoxedStrategy<Date>) -> impl Strategy<Value = Household> {
    let members = (0usize..6).prop_flat_map(move |n| {
        (0..n)
            .map(|i| any_member(i as u128, date()).boxed())
            .collect::<Vec<_>>()
    });
    let income = proptest::option::of(prop_oneof![
        Just(1_500_000u64),
        Just(1_500_001),
        Just(2_000_000),
        Just(2_200_000),
        Just(2_250_000),
        Just(2_800_000),
        Just(3_000_000),
        // The field map carries integers as i64.
        0..=i64::MAX as u64,
    ]);
    let answers = proptest::collection::btree_map(
        prop_oneof![
            Just("Q1"),
            Just("Q2"),
            Just("Q3"),
            Just("Q4"),
            Just("Q5"),
            Just("Q9")
        ]
        .prop_map(String::from),
        prop_oneof![Just("1"), Just("2"), Just("3"), Just("x")].prop_map(String::from),
        0..6,
    );
    let commune = prop_oneof![
        Just(RURAL),
        Just(URBAN),
        Just("31078"),
        Just("99999"),
        Just("0064"),
        Just(""),
    ];
    (
        members,
        any_dwelling(),
        income,
        answers,
        commune,
        any::<[bool; 4]>(),
    )
        .prop_map(|(members, dwelling, income, answers, commune, flags)| {
            let mut h = household(commune, income);
            h.head_member_id = members.first().map(|m| m.id);
            h.members = members;
            h.dwelling = dwelling;
            h.income.b1_answers = answers;
            h.flags = HouseholdFlags {
                revolutionary_contributor: flags[0],
                social_protection_beneficiary: flags[1],
                no_working_capacity: flags[2],
                farming_forestry_fishery_salt: flags[3],
            };
            h
        })
}

fn reference_date() -> impl Strategy<Value = Date> {
    prop_oneof![
        Just(nd07()),
        Just(nd351()),
        Just(day("2026-12-31")),
        Just(day("2027-01-01")),
        any_date(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Total, deterministic, and consistent with its own rule.
    #[test]
    fn classify_is_total_deterministic_and_consistent(
        h in any_household(|| any_date().boxed()),
        date in reference_date(),
        with_tables in any::<bool>(),
    ) {
        let data = data();
        let input = ClassifyInput {
            b1_tables: with_tables.then_some(&data.tables),
            ..input(date)
        };
        let c = classify(&h, &input);
        prop_assert_eq!(&c, &classify(&h, &input));
        let Some(standard) = data.standards.for_date(date) else {
            let cannot = matches!(c.class, PovertyClass::CannotClassify { .. });
            prop_assert!(cannot);
            return Ok(());
        };
        prop_assert!(c.deprivations.len() + c.not_assessed.len() <= standard.indicators.len());
        prop_assert_eq!(c.score_b, 10 * c.deprivations.len() as u32);
        match &c.class {
            PovertyClass::Poor => prop_assert!(c.deprivations.len() >= 3),
            PovertyClass::NearPoor => prop_assert!(c.deprivations.len() + c.not_assessed.len() < 3),
            PovertyClass::AverageLiving { policy_subclass } => {
                prop_assert_eq!(c.income_mode, Some(IncomeMode::Estimated));
                prop_assert_eq!(*policy_subclass, h.flags.farming_forestry_fishery_salt);
            }
            PovertyClass::NotPoor => {}
            PovertyClass::CannotClassify { missing } => prop_assert!(!missing.is_empty()),
        }
        if let (Some(income), Some(settlement)) = (h.income.estimated_per_person_vnd, c.rural_or_urban) {
            let poor_or_near = matches!(c.class, PovertyClass::Poor | PovertyClass::NearPoor);
            if !matches!(c.class, PovertyClass::CannotClassify { .. }) {
                prop_assert_eq!(poor_or_near, income <= standard.income_line_vnd.get(settlement));
            }
        }
    }

    /// What the server decodes from a device classifies the same as on the device, and the
    /// stored classification survives the codec.
    #[test]
    fn device_and_server_agree(
        h in any_household(|| any_date().boxed()),
        date in reference_date(),
    ) {
        let on_device = classify(&h, &input(date));
        let fields = crate::fields::flatten(&h);
        let on_server = crate::fields::unflatten(&fields).expect("a flattened record unflattens");
        prop_assert_eq!(&on_device, &classify(&on_server, &input(date)));
        let bytes = crate::codec::encode(&h);
        let decoded: Household = crate::codec::decode(&bytes, usize::MAX).expect("decodes");
        prop_assert_eq!(&on_device, &classify(&decoded, &input(date)));
        let stored = crate::codec::encode(&on_device);
        let back: Classification = crate::codec::decode(&stored, usize::MAX).expect("decodes");
        prop_assert_eq!(on_device, back);
    }

    /// Deciding is classifying without the texts: every text empty, every list as long, and
    /// everything else the same.
    #[test]
    fn decide_is_classify_without_its_texts(
        h in any_household(|| any_date().boxed()),
        date in reference_date(),
        with_tables in any::<bool>(),
    ) {
        let data = data();
        let input = ClassifyInput {
            b1_tables: with_tables.then_some(&data.tables),
            ..input(date)
        };
        let mut whole = classify(&h, &input);
        let blank = |texts: &mut Vec<String>| texts.iter_mut().for_each(String::clear);
        whole.decided_by.clear();
        if let PovertyClass::CannotClassify { missing } = &mut whole.class {
            blank(missing);
        }
        for deprivation in &mut whole.deprivations {
            deprivation.reason.clear();
        }
        for gap in &mut whole.not_assessed {
            blank(&mut gap.missing);
        }
        prop_assert_eq!(decide(&h, &input), whole);
    }

    /// Nonsense dates (any year, month 0 or 200) never panic.
    #[test]
    fn nonsense_dates_never_panic(
        h in any_household(|| raw_date().boxed()),
        date in raw_date(),
    ) {
        let c = classify(&h, &input(date));
        prop_assert_eq!(&c, &classify(&h, &input(date)));
    }
}
