//! The classification: poor, near-poor, average living standard or not poor, with its reasons.
//!
//! [`classify`] is pure and total: the same household and the same reference data give the same
//! [`Classification`] on a device and on the server, and every input gets one, if only
//! [`PovertyClass::CannotClassify`] naming what is missing. It never guesses: an answer the
//! deciding rule needs and does not have is listed, and an answer the rule does not need is
//! not asked for (a household above the income line is classified whatever its indicators).
//!
//! # The rule
//! The standard is the one in force on the review's reference date ([`StandardSet::for_date`]);
//! the commune's rural/urban status on that date picks the lines. Bounds are inclusive where the
//! law says "từ … trở xuống" (≤) and strict where it says "dưới" (<).
//!
//! Income mode (an estimated income per person per month is recorded):
//! - income ≤ line and deprivations ≥ threshold: poor;
//! - income ≤ line and deprivations < threshold: near-poor;
//! - line < income ≤ average-living upper bound: average living standard, in the policy
//!   subclass when the household's main occupation is farming, forestry, fishery or salt;
//! - otherwise not poor. Where a standard has no average-living band yet (ND 351/2025), a
//!   household above the line is not poor and the text says the band was not assessed.
//!
//! Score mode (no estimated income, B1 answers recorded): score A from the region's point
//! table, score B = points per deprivation × deprivations;
//! - A ≤ score line and B ≥ score B threshold: poor;
//! - A ≤ score line and B < threshold: near-poor;
//! - otherwise not poor (the average-living band is defined on income only).
//!
//! A directly estimated income wins over B1 answers when both are recorded: the lines are
//! defined on income, and only income can place a household in the average-living band.
//!
//! Indicators that cannot be derived only block the result when they could change it: with
//! `d` deprivations found and `u` indicators unknown, `d ≥ threshold` is poor and
//! `d + u < threshold` is near-poor; anything between cannot be classified yet.
//!
//! # Example
//! ```
//! use protocol::areas::AreaRegistry;
//! use protocol::classify::{classify, ClassifyInput, PovertyClass};
//! use protocol::household::{Date, Household};
//! use protocol::standards::StandardSet;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let standards = StandardSet::embedded()?;
//! let areas = AreaRegistry::embedded()?;
//! let input = ClassifyInput {
//!     reference_date: Date::new(2025, 9, 1).ok_or("no such day")?,
//!     standards: &standards,
//!     areas: &areas,
//!     b1_tables: None,
//! };
//! // A household of one in xã Thanh Trì (rural), in a makeshift house of 6 m².
//! let household: Household = serde_json::from_str(r#"{
//!     "id": "01900000-0000-7000-8000-000000000001",
//!     "round": {"year": 2025, "kind": "periodic"},
//!     "commune_code": "00640", "village": "Thôn Đông", "address": "Số 3",
//!     "members": [{"id": "01900000-0000-7000-8000-000000000002", "full_name": "Nguyễn Văn A",
//!                  "sex": "male", "date_of_birth": "1991-01-15", "relationship": "head",
//!                  "health_insurance": false}],
//!     "income": {"estimated_per_person_vnd": 1200000},
//!     "dwelling": {"durability": "makeshift", "floor_area_m2": 6}
//! }"#)?;
//!
//! let result = classify(&household, &input);
//! assert_eq!(result.class, PovertyClass::Poor);
//! assert_eq!(result.class.label_vi(), "hộ nghèo");
//! assert_eq!(result.standard_id.as_deref(), Some("ND07-2021"));
//! assert_eq!(
//!     result.deprivations[0].reason,
//!     "thành viên Nguyễn Văn A, 34 tuổi, không có bảo hiểm y tế / member Nguyễn Văn A, 34, no health insurance"
//! );
//! assert_eq!(result.deprivations.len(), 3);
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};

use crate::areas::{AreaRegistry, Settlement};
use crate::b1::{score_a, B1Tables};
use crate::household::{Date, Household};
use crate::indicators::assess_with;
pub use crate::indicators::{Deprivation, IndicatorGap, Texts};
use crate::standards::{Standard, StandardSet};

/// The reference data a classification is made with.
#[derive(Clone, Copy, Debug)]
pub struct ClassifyInput<'a> {
    /// The review's reference date: selects the standard, the rural/urban status, and the date
    /// ages are counted at.
    pub reference_date: Date,
    pub standards: &'a StandardSet,
    pub areas: &'a AreaRegistry,
    /// The B1 point tables, needed only for households without an estimated income.
    pub b1_tables: Option<&'a B1Tables>,
}

/// The computed class. It is a proposal: the legal class is the one the commune approves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PovertyClass {
    Poor,
    NearPoor,
    AverageLiving {
        /// The household's main occupation is farming, forestry, fishery or salt making.
        policy_subclass: bool,
    },
    NotPoor,
    /// The rule needs answers or reference data the record does not have; each entry says
    /// which, Vietnamese / English.
    CannotClassify {
        missing: Vec<String>,
    },
}

impl PovertyClass {
    pub fn label_vi(&self) -> &'static str {
        match self {
            PovertyClass::Poor => "hộ nghèo",
            PovertyClass::NearPoor => "hộ cận nghèo",
            PovertyClass::AverageLiving { .. } => "hộ có mức sống trung bình",
            PovertyClass::NotPoor => "hộ không nghèo",
            PovertyClass::CannotClassify { .. } => "chưa phân loại được",
        }
    }

    pub fn label_en(&self) -> &'static str {
        match self {
            PovertyClass::Poor => "poor",
            PovertyClass::NearPoor => "near-poor",
            PovertyClass::AverageLiving { .. } => "average living standard",
            PovertyClass::NotPoor => "not poor",
            PovertyClass::CannotClassify { .. } => "cannot classify",
        }
    }
}

/// How income was evidenced for the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncomeMode {
    /// A directly estimated income per person per month.
    Estimated,
    /// Score A from the B1 answers.
    ScoreA,
}

/// The result, stored beside each revision of a household.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// The standard it was classified under; `None` when no standard applies on the date.
    pub standard_id: Option<String>,
    pub reference_date: Date,
    pub class: PovertyClass,
    /// The indicators the household is deprived in, with reasons, in the standard's order.
    pub deprivations: Vec<Deprivation>,
    /// The indicators that could not be derived, with the answers they need.
    pub not_assessed: Vec<IndicatorGap>,
    /// Score A, when the B1 answers decided.
    pub score_a: Option<u32>,
    /// The B1 table file that computed score A, so a recomputation can tell what changed.
    pub b1_table_id: Option<String>,
    /// Points per deprivation × the deprivations found.
    pub score_b: u32,
    pub income_mode: Option<IncomeMode>,
    /// The commune's status on the reference date; `None` for an unknown commune.
    pub rural_or_urban: Option<Settlement>,
    /// The rule that decided, with the numbers, Vietnamese / English.
    pub decided_by: String,
}

/// Classifies a household. Pure and total: see the module documentation for the rule.
pub fn classify(household: &Household, input: &ClassifyInput<'_>) -> Classification {
    classify_with(household, input, Texts::Written)
}

/// [`classify`] without its texts: every reason, missing answer and the rule that decided left
/// empty (lists keep their lengths), everything else the same. For a store that keeps only
/// the decision and rebuilds the texts with [`classify`] when they are read: writing the texts
/// is most of classifying.
pub fn decide(household: &Household, input: &ClassifyInput<'_>) -> Classification {
    classify_with(household, input, Texts::Left)
}

fn classify_with(household: &Household, input: &ClassifyInput<'_>, texts: Texts) -> Classification {
    let date = input.reference_date;
    let Some(standard) = input.standards.for_date(date) else {
        return Classification {
            standard_id: None,
            reference_date: date,
            class: PovertyClass::CannotClassify {
                missing: vec![texts.make(|| {
                    text!("chuẩn nghèo áp dụng cho ngày {date} / a poverty standard in force on {date}")
                })],
            },
            deprivations: Vec::new(),
            not_assessed: Vec::new(),
            score_a: None,
            b1_table_id: None,
            score_b: 0,
            income_mode: None,
            rural_or_urban: None,
            decided_by: texts.make(|| text!(
                "không có chuẩn nghèo nào áp dụng cho ngày {date} / no poverty standard applies on {date}"
            )),
        };
    };
    let assessment = assess_with(household, standard, date, texts);
    let found = assessment.deprivations.len();
    let unknown = assessment.gaps.len();
    let points = standard.field_scoring.points_per_deprivation;
    let settlement = input.areas.settlement(&household.commune_code, date);
    let estimated = household.income.estimated_per_person_vnd;
    let income_mode = match (estimated, household.income.b1_answers.is_empty()) {
        (Some(_), _) => Some(IncomeMode::Estimated),
        (None, false) => Some(IncomeMode::ScoreA),
        (None, true) => None,
    };
    let out = Classification {
        standard_id: Some(standard.id.clone()),
        reference_date: date,
        class: PovertyClass::NotPoor,
        deprivations: assessment.deprivations,
        not_assessed: assessment.gaps,
        score_a: None,
        b1_table_id: None,
        score_b: points.saturating_mul(count(found)),
        income_mode,
        rural_or_urban: settlement.as_ref().ok().copied(),
        decided_by: String::new(),
    };
    let sid = standard.id.as_str();

    // The rule needs the commune's status and some income evidence before anything else.
    let settlement = match (settlement, income_mode) {
        (Ok(settlement), Some(_)) => settlement,
        (settlement, mode) => {
            let mut missing = Vec::new();
            if let Err(error) = settlement {
                missing.push(texts.make(|| error.to_string()));
            }
            if mode.is_none() {
                missing.push(texts.make(|| {
                    "thu nhập bình quân đầu người ước tính hoặc câu trả lời phiếu B1 / an estimated income per person or the form B1 answers"
                        .to_string()
                }));
            }
            // The indicators matter too, unless the income is above every line.
            let above_every_line = estimated.is_some_and(|income| {
                income > standard.income_line_vnd.rural && income > standard.income_line_vnd.urban
            });
            if !above_every_line {
                missing.extend(gap_items(&out.not_assessed, texts));
            }
            let decided_by = texts.make(|| {
                text!("{sid}: thiếu dữ liệu mà quy tắc cần / {sid}: data the rule needs is missing")
            });
            return cannot(out, missing, decided_by);
        }
    };
    let counts = Counts {
        found,
        unknown,
        texts,
    };
    match estimated {
        Some(income) => by_income(out, household, standard, settlement, income, counts),
        None => by_score_a(out, household, input, standard, settlement, counts),
    }
}

/// The deprivations found and the indicators not assessed, and whether texts are written.
#[derive(Clone, Copy)]
struct Counts {
    found: usize,
    unknown: usize,
    texts: Texts,
}

fn by_income(
    mut out: Classification,
    household: &Household,
    standard: &Standard,
    settlement: Settlement,
    income: u64,
    counts: Counts,
) -> Classification {
    let texts = counts.texts;
    let sid = standard.id.as_str();
    let (area_vi, area_en) = (settlement.label_vi(), settlement.label_en());
    let line = standard.income_line_vnd.get(settlement);
    let (income_vi, income_en) = (texts.make(|| vnd_vi(income)), texts.make(|| vnd_en(income)));
    let (line_vi, line_en) = (texts.make(|| vnd_vi(line)), texts.make(|| vnd_en(line)));
    if income <= line {
        let premise_vi =
            texts.make(|| text!("{sid}: thu nhập {income_vi} ≤ chuẩn nghèo {area_vi} {line_vi}"));
        let premise_en =
            texts.make(|| text!("{sid}: income {income_en} ≤ {area_en} line {line_en}"));
        return decide_by_deprivations(
            out,
            counts,
            standard.deprivation_threshold.count,
            (premise_vi, premise_en),
            Counted::Deprivations,
        );
    }
    match standard.average_living_upper_vnd.get(settlement) {
        Some(upper) if income <= upper => {
            let policy = household.flags.farming_forestry_fishery_salt;
            out.class = PovertyClass::AverageLiving {
                policy_subclass: policy,
            };
            let (extra_vi, extra_en) = if policy {
                (
                    ", làm nông, lâm, ngư, diêm nghiệp",
                    ", farming, forestry, fishery or salt making",
                )
            } else {
                ("", "")
            };
            out.decided_by = texts.make(|| text!(
                "{sid}: chuẩn nghèo {area_vi} {line_vi} < thu nhập {income_vi} ≤ {} → hộ có mức sống trung bình{extra_vi} / {sid}: {area_en} line {line_en} < income {income_en} ≤ {} → average living standard{extra_en}",
                vnd_vi(upper),
                vnd_en(upper),
            ));
        }
        Some(upper) => {
            out.class = PovertyClass::NotPoor;
            out.decided_by = texts.make(|| text!(
                "{sid}: thu nhập {income_vi} > mức sống trung bình {area_vi} {} → hộ không nghèo / {sid}: income {income_en} > {area_en} average-living bound {} → not poor",
                vnd_vi(upper),
                vnd_en(upper),
            ));
        }
        None => {
            out.class = PovertyClass::NotPoor;
            out.decided_by = texts.make(|| text!(
                "{sid}: thu nhập {income_vi} > chuẩn nghèo {area_vi} {line_vi}; chuẩn này chưa có mức sống trung bình nên không xét → hộ không nghèo / {sid}: income {income_en} > {area_en} line {line_en}; this standard has no average-living band yet, so it was not assessed → not poor"
            ));
        }
    }
    out
}

fn by_score_a(
    mut out: Classification,
    household: &Household,
    input: &ClassifyInput<'_>,
    standard: &Standard,
    settlement: Settlement,
    counts: Counts,
) -> Classification {
    let texts = counts.texts;
    let sid = standard.id.as_str();
    let Some(tables) = input.b1_tables else {
        let mut missing =
            vec![texts.make(|| "bảng điểm phiếu B1 / the form B1 point tables".to_string())];
        missing.extend(gap_items(&out.not_assessed, texts));
        return cannot(
            out,
            missing,
            texts.make(|| text!("{sid}: chưa có bảng điểm B1 để tính điểm A / {sid}: no B1 point tables to compute score A")),
        );
    };
    let province = input
        .areas
        .commune(&household.commune_code)
        .map(|c| c.province_code.clone())
        .unwrap_or_default();
    let score = tables
        .region_for(&household.commune_code, &province, settlement)
        .and_then(|region| score_a(&household.income.b1_answers, tables, region));
    let score = match score {
        Ok(score) => score,
        Err(error) => {
            let mut missing = vec![texts.make(|| error.to_string())];
            missing.extend(gap_items(&out.not_assessed, texts));
            return cannot(
                out,
                missing,
                texts.make(|| {
                    text!("{sid}: chưa tính được điểm A / {sid}: score A cannot be computed")
                }),
            );
        }
    };
    out.score_a = Some(score);
    out.b1_table_id = Some(tables.id.clone());
    let (sample_vi, sample_en) = if tables.sample {
        (" [bảng điểm B1 MẪU]", " [SAMPLE B1 table]")
    } else {
        ("", "")
    };
    let scoring = &standard.field_scoring;
    let line = scoring.score_a_line.get(settlement);
    let (area_vi, area_en) = (settlement.label_vi(), settlement.label_en());
    if score > line {
        out.class = PovertyClass::NotPoor;
        out.decided_by = texts.make(|| text!(
            "{sid}: điểm A {score} > {line} ({area_vi}){sample_vi} → hộ không nghèo / {sid}: score A {score} > {line} ({area_en}){sample_en} → not poor"
        ));
        return out;
    }
    let points = scoring.points_per_deprivation;
    // Score B ≥ threshold is "at least this many deprivations": ⌈threshold / points⌉.
    let needed = scoring.score_b_threshold.div_ceil(points.max(1));
    let premise_vi = texts.make(|| text!("{sid}: điểm A {score} ≤ {line} ({area_vi}){sample_vi}"));
    let premise_en = texts.make(|| text!("{sid}: score A {score} ≤ {line} ({area_en}){sample_en}"));
    decide_by_deprivations(
        out,
        counts,
        needed,
        (premise_vi, premise_en),
        Counted::ScoreB {
            points,
            threshold: scoring.score_b_threshold,
        },
    )
}

/// How the deprivation side of the rule is written out.
enum Counted {
    Deprivations,
    ScoreB { points: u32, threshold: u32 },
}

/// Poor or near-poor once income (or score A) is at or below the line.
fn decide_by_deprivations(
    mut out: Classification,
    counts: Counts,
    needed: u32,
    (premise_vi, premise_en): (String, String),
    counted: Counted,
) -> Classification {
    let Counts {
        found,
        unknown,
        texts,
    } = counts;
    let (found32, most) = (count(found), count(found.saturating_add(unknown)));
    if found32 >= needed {
        out.class = PovertyClass::Poor;
        out.decided_by = texts.make(|| {
            let (vi, en) = comparison(&counted, found32, "≥", needed);
            text!("{premise_vi} và {vi} → hộ nghèo / {premise_en} and {en} → poor")
        });
    } else if most < needed {
        out.class = PovertyClass::NearPoor;
        out.decided_by = texts.make(|| {
            let (vi, en) = comparison(&counted, found32, "<", needed);
            let (note_vi, note_en) = if unknown > 0 {
                (
                    text!(" (kể cả khi {unknown} chỉ số chưa đánh giá đều thiếu hụt)"),
                    text!(" (even if the {unknown} unassessed indicators were deprived)"),
                )
            } else {
                (String::new(), String::new())
            };
            text!(
                "{premise_vi} và {vi}{note_vi} → hộ cận nghèo / {premise_en} and {en}{note_en} → near-poor"
            )
        });
    } else {
        let missing = gap_items(&out.not_assessed, texts);
        let decided_by = texts.make(|| text!(
            "{premise_vi}; có {found} chỉ số thiếu hụt và {unknown} chỉ số chưa đánh giá được, nên chưa xác định nghèo hay cận nghèo / {premise_en}; {found} deprivations found and {unknown} indicators cannot be assessed, so poor versus near-poor is undecided"
        ));
        return cannot(out, missing, decided_by);
    }
    out
}

/// "thiếu hụt 3 chỉ số ≥ 3" or "điểm B 30 ≥ 30", and the English.
fn comparison(counted: &Counted, n: u32, op: &str, needed: u32) -> (String, String) {
    match counted {
        Counted::Deprivations => (
            text!("thiếu hụt {n} chỉ số {op} {needed}"),
            text!("{n} deprivations {op} {needed}"),
        ),
        Counted::ScoreB { points, threshold } => {
            let b = points.saturating_mul(n);
            (
                text!("điểm B {b} {op} {threshold}"),
                text!("score B {b} {op} {threshold}"),
            )
        }
    }
}

fn cannot(mut out: Classification, missing: Vec<String>, decided_by: String) -> Classification {
    out.class = PovertyClass::CannotClassify { missing };
    out.decided_by = decided_by;
    out
}

/// The missing answers of the unassessed indicators, each prefixed with its indicator.
fn gap_items(gaps: &[IndicatorGap], texts: Texts) -> Vec<String> {
    gaps.iter()
        .flat_map(|gap| {
            gap.missing.iter().map(move |item| {
                texts.make(|| {
                    text!(
                        "[{} / {}] {item}",
                        gap.indicator.label_vi(),
                        gap.indicator.label_en()
                    )
                })
            })
        })
        .collect()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// "1.500.000 đ".
fn vnd_vi(amount: u64) -> String {
    text!("{} đ", group(amount, '.'))
}

/// "1,500,000 VND".
fn vnd_en(amount: u64) -> String {
    text!("{} VND", group(amount, ','))
}

fn group(amount: u64, separator: char) -> String {
    let digits = amount.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(separator);
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests;
