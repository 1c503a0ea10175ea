//! A classification kept as its decision: everything but its texts.
//!
//! The classification the merge engine makes with a revision is written this way (tag 2 of a
//! revision row's classification, see [`super::made_with`]). Its texts (the reasons, the
//! rule that decided, what is missing) name the household's members and repeat its numbers, so
//! they are most of its bytes; packing them was a tenth of the server's work in a first push.
//! They are rebuilt on read instead, by classifying the revision's record again with the
//! reference data the decision names, which the registry keeps by fingerprint
//! (`references`). The rebuilt classification is used only when its decision is this one
//! ([`Decision::is_made_by`]); otherwise (a later build classifies differently, or the record
//! or the reference data cannot be had) the decision stands with a text saying why its reasons
//! are missing ([`Decision::without_reasons`]). What was decided is never rebuilt, only how it
//! reads.
//!
//! ```text
//! decision = standard_id (0 | 1 text)  year i32  month u8  day u8
//!            class u8 [policy_subclass u8 when class = 3]
//!            u32 count { indicator u8  u32 count { member uuid } }     deprivations
//!            u32 count { indicator u8 }                                not assessed
//!            score_a (0 | 1 u32)  b1_table_id (0 | 1 text)  score_b u32
//!            income_mode u8  rural_or_urban u8                         0 for none
//! ```

use protocol::areas::Settlement;
use protocol::classify::{Classification, Deprivation, IncomeMode, IndicatorGap, PovertyClass};
use protocol::household::Date;
use protocol::standards::IndicatorId;
use protocol::MemberId;

use super::{RowError, RowReader, RowWriter};

/// What a classification decided, without its texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    standard_id: Option<String>,
    reference_date: Date,
    class: DecidedClass,
    deprivations: Vec<(IndicatorId, Vec<MemberId>)>,
    not_assessed: Vec<IndicatorId>,
    score_a: Option<u32>,
    b1_table_id: Option<String>,
    score_b: u32,
    income_mode: Option<IncomeMode>,
    rural_or_urban: Option<Settlement>,
}

/// A [`PovertyClass`] without the texts of what is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecidedClass {
    Poor,
    NearPoor,
    AverageLiving { policy_subclass: bool },
    NotPoor,
    CannotClassify,
}

impl DecidedClass {
    fn of(class: &PovertyClass) -> DecidedClass {
        match class {
            PovertyClass::Poor => DecidedClass::Poor,
            PovertyClass::NearPoor => DecidedClass::NearPoor,
            PovertyClass::AverageLiving { policy_subclass } => DecidedClass::AverageLiving {
                policy_subclass: *policy_subclass,
            },
            PovertyClass::NotPoor => DecidedClass::NotPoor,
            PovertyClass::CannotClassify { .. } => DecidedClass::CannotClassify,
        }
    }
}

/// Writes a decision.
pub(super) fn write(row: RowWriter, decision: &Decision) -> RowWriter {
    let d = decision;
    let row = optional_text(row, d.standard_id.as_deref())
        .bytes(&d.reference_date.year.to_be_bytes())
        .u8(d.reference_date.month)
        .u8(d.reference_date.day);
    let row = match d.class {
        DecidedClass::Poor => row.u8(1),
        DecidedClass::NearPoor => row.u8(2),
        DecidedClass::AverageLiving { policy_subclass } => row.u8(3).u8(u8::from(policy_subclass)),
        DecidedClass::NotPoor => row.u8(4),
        DecidedClass::CannotClassify => row.u8(5),
    };
    let mut row = row.u32(count(d.deprivations.len()));
    for (indicator, members) in &d.deprivations {
        row = row.u8(indicator_tag(*indicator)).u32(count(members.len()));
        for member in members {
            row = row.uuid(*member);
        }
    }
    row = row.u32(count(d.not_assessed.len()));
    for indicator in &d.not_assessed {
        row = row.u8(indicator_tag(*indicator));
    }
    let row = match d.score_a {
        None => row.u8(0),
        Some(score) => row.u8(1).u32(score),
    };
    optional_text(row, d.b1_table_id.as_deref())
        .u32(d.score_b)
        .u8(match d.income_mode {
            None => 0,
            Some(IncomeMode::Estimated) => 1,
            Some(IncomeMode::ScoreA) => 2,
        })
        .u8(match d.rural_or_urban {
            None => 0,
            Some(Settlement::Rural) => 1,
            Some(Settlement::Urban) => 2,
        })
}

/// A list's length as a row writes it; a classification's lists hold at most a household's
/// members or a standard's indicators.
fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn optional_text(row: RowWriter, text: Option<&str>) -> RowWriter {
    match text {
        None => row.u8(0),
        Some(text) => row.u8(1).blob(text.as_bytes()),
    }
}

/// Reads a decision [`write`] wrote.
pub(super) fn read(reader: &mut RowReader<'_>) -> Result<Decision, RowError> {
    let standard_id = optional_text_of(reader, "a decision's standard")?;
    let year = i32::from_be_bytes(reader.array()?);
    let (month, day) = (reader.u8()?, reader.u8()?);
    let reference_date = Date::new(year, month, day).ok_or(if (1..=12).contains(&month) {
        RowError::Tag {
            what: "a decision's reference day",
            tag: day,
        }
    } else {
        RowError::Tag {
            what: "a decision's reference month",
            tag: month,
        }
    })?;
    let class = match reader.u8()? {
        1 => DecidedClass::Poor,
        2 => DecidedClass::NearPoor,
        3 => DecidedClass::AverageLiving {
            policy_subclass: flag(reader.u8()?, "a decision's policy subclass")?,
        },
        4 => DecidedClass::NotPoor,
        5 => DecidedClass::CannotClassify,
        tag => {
            return Err(RowError::Tag {
                what: "a decision's class",
                tag,
            })
        }
    };
    // Counts are checked against the bytes left before anything is allocated for them.
    let deprivations_count = reader.count(1 + 4)?;
    let mut deprivations = Vec::with_capacity(deprivations_count);
    for _ in 0..deprivations_count {
        let indicator = indicator_of(reader.u8()?)?;
        let members_count = reader.count(16)?;
        let members = (0..members_count)
            .map(|_| reader.uuid())
            .collect::<Result<Vec<_>, _>>()?;
        deprivations.push((indicator, members));
    }
    let gaps_count = reader.count(1)?;
    let not_assessed = (0..gaps_count)
        .map(|_| indicator_of(reader.u8()?))
        .collect::<Result<Vec<_>, _>>()?;
    let score_a = match reader.u8()? {
        0 => None,
        1 => Some(reader.u32()?),
        tag => {
            return Err(RowError::Tag {
                what: "a decision's score A",
                tag,
            })
        }
    };
    let b1_table_id = optional_text_of(reader, "a decision's B1 table")?;
    let score_b = reader.u32()?;
    let income_mode = match reader.u8()? {
        0 => None,
        1 => Some(IncomeMode::Estimated),
        2 => Some(IncomeMode::ScoreA),
        tag => {
            return Err(RowError::Tag {
                what: "a decision's income mode",
                tag,
            })
        }
    };
    let rural_or_urban = match reader.u8()? {
        0 => None,
        1 => Some(Settlement::Rural),
        2 => Some(Settlement::Urban),
        tag => {
            return Err(RowError::Tag {
                what: "a decision's rural or urban status",
                tag,
            })
        }
    };
    Ok(Decision {
        standard_id,
        reference_date,
        class,
        deprivations,
        not_assessed,
        score_a,
        b1_table_id,
        score_b,
        income_mode,
        rural_or_urban,
    })
}

fn optional_text_of(
    reader: &mut RowReader<'_>,
    what: &'static str,
) -> Result<Option<String>, RowError> {
    match reader.u8()? {
        0 => Ok(None),
        1 => reader.text().map(Some),
        tag => Err(RowError::Tag { what, tag }),
    }
}

fn flag(tag: u8, what: &'static str) -> Result<bool, RowError> {
    match tag {
        0 => Ok(false),
        1 => Ok(true),
        tag => Err(RowError::Tag { what, tag }),
    }
}

/// An indicator's tag in a decision. Tags are kept for good: a new indicator takes a new one.
fn indicator_tag(indicator: IndicatorId) -> u8 {
    match indicator {
        IndicatorId::Employment => 1,
        IndicatorId::Dependents => 2,
        IndicatorId::Nutrition => 3,
        IndicatorId::HealthInsurance => 4,
        IndicatorId::AdultEducation => 5,
        IndicatorId::ChildSchooling => 6,
        IndicatorId::HousingQuality => 7,
        IndicatorId::FloorArea => 8,
        IndicatorId::Water => 9,
        IndicatorId::Latrine => 10,
        IndicatorId::TelecomUse => 11,
        IndicatorId::InformationDevices => 12,
        IndicatorId::InternetAccess => 13,
        IndicatorId::DigitalServices => 14,
        IndicatorId::HouseholdWaste => 15,
    }
}

fn indicator_of(tag: u8) -> Result<IndicatorId, RowError> {
    Ok(match tag {
        1 => IndicatorId::Employment,
        2 => IndicatorId::Dependents,
        3 => IndicatorId::Nutrition,
        4 => IndicatorId::HealthInsurance,
        5 => IndicatorId::AdultEducation,
        6 => IndicatorId::ChildSchooling,
        7 => IndicatorId::HousingQuality,
        8 => IndicatorId::FloorArea,
        9 => IndicatorId::Water,
        10 => IndicatorId::Latrine,
        11 => IndicatorId::TelecomUse,
        12 => IndicatorId::InformationDevices,
        13 => IndicatorId::InternetAccess,
        14 => IndicatorId::DigitalServices,
        15 => IndicatorId::HouseholdWaste,
        tag => {
            return Err(RowError::Tag {
                what: "a decision's indicator",
                tag,
            })
        }
    })
}

impl Decision {
    /// What `classification` decided.
    pub fn of(classification: &Classification) -> Decision {
        let c = classification;
        Decision {
            standard_id: c.standard_id.clone(),
            reference_date: c.reference_date,
            class: DecidedClass::of(&c.class),
            deprivations: c
                .deprivations
                .iter()
                .map(|deprivation| (deprivation.indicator, deprivation.members.clone()))
                .collect(),
            not_assessed: c.not_assessed.iter().map(|gap| gap.indicator).collect(),
            score_a: c.score_a,
            b1_table_id: c.b1_table_id.clone(),
            score_b: c.score_b,
            income_mode: c.income_mode,
            rural_or_urban: c.rural_or_urban,
        }
    }

    /// Whether `classification` decided exactly this: the same standard, date, class,
    /// deprivations (and their members), indicators not assessed, scores and statuses. Texts
    /// are not compared.
    pub fn is_made_by(&self, classification: &Classification) -> bool {
        let c = classification;
        self.standard_id == c.standard_id
            && self.reference_date == c.reference_date
            && self.class == DecidedClass::of(&c.class)
            && self.deprivations.len() == c.deprivations.len()
            && self.deprivations.iter().zip(&c.deprivations).all(
                |((indicator, members), deprivation)| {
                    *indicator == deprivation.indicator && *members == deprivation.members
                },
            )
            && self.not_assessed.len() == c.not_assessed.len()
            && self
                .not_assessed
                .iter()
                .zip(&c.not_assessed)
                .all(|(indicator, gap)| *indicator == gap.indicator)
            && self.score_a == c.score_a
            && self.b1_table_id == c.b1_table_id
            && self.score_b == c.score_b
            && self.income_mode == c.income_mode
            && self.rural_or_urban == c.rural_or_urban
    }

    /// The decision as a classification whose texts say only why its reasons are missing
    /// (`why_vi`, `why_en`).
    pub fn without_reasons(self, why_vi: &str, why_en: &str) -> Classification {
        let note = format!(
            "lý do không dựng lại được: {why_vi} / the reasons could not be rebuilt: {why_en}"
        );
        let class = match self.class {
            DecidedClass::Poor => PovertyClass::Poor,
            DecidedClass::NearPoor => PovertyClass::NearPoor,
            DecidedClass::AverageLiving { policy_subclass } => {
                PovertyClass::AverageLiving { policy_subclass }
            }
            DecidedClass::NotPoor => PovertyClass::NotPoor,
            DecidedClass::CannotClassify => PovertyClass::CannotClassify {
                missing: vec![note.clone()],
            },
        };
        Classification {
            standard_id: self.standard_id,
            reference_date: self.reference_date,
            class,
            deprivations: self
                .deprivations
                .into_iter()
                .map(|(indicator, members)| Deprivation {
                    indicator,
                    reason: note.clone(),
                    members,
                })
                .collect(),
            not_assessed: self
                .not_assessed
                .into_iter()
                .map(|indicator| IndicatorGap {
                    indicator,
                    missing: vec![note.clone()],
                })
                .collect(),
            score_a: self.score_a,
            b1_table_id: self.b1_table_id,
            score_b: self.score_b,
            income_mode: self.income_mode,
            rural_or_urban: self.rural_or_urban,
            decided_by: note,
        }
    }
}
