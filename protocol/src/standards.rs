//! The poverty standards, as versioned reference data.
//!
//! A [`Standard`] is one legal instrument's rule: when it applies, its income lines, the
//! average-living band, the deprivation indicators with their thresholds, and the field-scoring
//! parameters (score A line, points per deprivation, score B threshold). Nothing here is a
//! constant in code: the values live in `data/poverty-standards.json` ([`STANDARDS_JSON`],
//! embedded), and a server can parse a corrected file with [`StandardSet::parse`] and ship its
//! text to devices. Every value that is not confirmed in published sources carries
//! `provisional: true`; [`StandardSet::provisional_values`] lists them.
//!
//! The wire form of the standards is their JSON text: a server ships the file it loaded, and
//! each end parses (and checks) it. The parsed types are deliberately not `Serialize`, so they
//! cannot be handed to the binary codec, which cannot carry the file's tagged indicator list.
//!
//! The indicator list is data too, but each indicator's derivation from the survey answers is
//! code ([`crate::indicators`]); the data picks which indicators a standard uses and their
//! parameters (ages, floor area, which water sources are safe …). An indicator the code does not
//! know is a parse error, so a corrected file can never silently drop one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use crate::areas::Settlement;
use crate::household::{
    Date, HouseDurability, InformationDevice, Latrine, Qualification, WasteHandling, WaterSource,
};

/// The embedded standards: ND 07/2021 (2022–2026) and ND 351/2025 (2027–2030).
pub const STANDARDS_JSON: &str = include_str!("../data/poverty-standards.json");

/// The data format this build reads.
pub const STANDARDS_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StandardError {
    #[error("tệp chuẩn nghèo không đọc được / the standards file is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("tệp chuẩn nghèo định dạng {got}, bản này đọc định dạng {expected} / the standards file has format {got}; this build reads format {expected}")]
    UnsupportedFormat { got: u32, expected: u32 },
    #[error("chuẩn '{id}' xuất hiện hai lần hoặc không có mã / standard id '{id}' is empty or appears twice")]
    DuplicateId { id: String },
    #[error("chuẩn '{a}' và '{b}' có thời gian áp dụng chồng lấn / standards '{a}' and '{b}' apply on overlapping dates")]
    OverlappingPeriods { a: String, b: String },
    #[error("chuẩn '{standard}': {field} {problem} / standard '{standard}': {field} {problem}")]
    BadValue {
        standard: String,
        field: String,
        problem: &'static str,
    },
    #[error("chuẩn '{standard}': chỉ số '{indicator}' xuất hiện hai lần / standard '{standard}': indicator '{indicator}' appears twice")]
    DuplicateIndicator { standard: String, indicator: String },
}

/// Every standard the system knows, each with the dates it applies.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandardSet {
    pub format: u32,
    #[serde(default)]
    pub note: String,
    pub standards: Vec<Standard>,
}

/// One poverty standard.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standard {
    /// Stable id stored with every classification, e.g. `ND07-2021`.
    pub id: String,
    pub name: String,
    /// The legal instrument and article that set it.
    pub legal_reference: String,
    /// First day a review's reference date may fall on to use this standard.
    pub effective_from: Date,
    /// Last day, inclusive; `None` while it applies with no end set.
    #[serde(default)]
    pub effective_until: Option<Date>,
    /// Income line per person per month, VND ("từ X trở xuống" is ≤ X).
    pub income_line_vnd: ByArea<u64>,
    /// Upper bound of the average-living band per person per month, VND, inclusive; `None`
    /// where the standard's band is not known yet.
    pub average_living_upper_vnd: ByArea<Option<u64>>,
    /// Deprivations that make a household at or below the income line poor.
    pub deprivation_threshold: DeprivationThreshold,
    /// Working age, used by the employment and dependents indicators.
    pub working_age: WorkingAge,
    /// Forms B1/B2: the score A line, points per deprivation and the score B threshold.
    pub field_scoring: FieldScoring,
    /// The deprivation indicators in form order.
    pub indicators: Vec<IndicatorSpec>,
}

/// A value that differs between rural and urban areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByArea<T> {
    pub rural: T,
    pub urban: T,
    /// Set when the values await confirmation by an official.
    #[serde(default)]
    pub provisional: bool,
}

impl<T: Copy> ByArea<T> {
    pub fn get(&self, settlement: Settlement) -> T {
        match settlement {
            Settlement::Rural => self.rural,
            Settlement::Urban => self.urban,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeprivationThreshold {
    /// At least this many deprivations ("từ 3 chỉ số trở lên").
    pub count: u32,
    #[serde(default)]
    pub provisional: bool,
}

/// Working age: `min_age <= age < below_age_*`, in whole years at the reference date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingAge {
    pub min_age: u32,
    pub below_age_male: u32,
    pub below_age_female: u32,
    #[serde(default)]
    pub provisional: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldScoring {
    /// Poor or near-poor only when score A is at most this ("từ X điểm trở xuống").
    pub score_a_line: ByArea<u32>,
    /// Score B: points per deprived indicator.
    pub points_per_deprivation: u32,
    /// Poor when score B is at least this.
    pub score_b_threshold: u32,
    #[serde(default)]
    pub provisional: bool,
}

/// One indicator a standard uses, with its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct IndicatorSpec {
    #[serde(flatten)]
    pub rule: IndicatorRule,
    /// Set when the threshold awaits confirmation by an official.
    #[serde(default)]
    pub provisional: bool,
    #[serde(default)]
    pub note: Option<String>,
}

/// How an indicator is decided, with the parameters the standard sets. The derivation itself is
/// in [`crate::indicators`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "indicator", rename_all = "snake_case")]
pub enum IndicatorRule {
    /// A working-age member is unemployed or works for wages without a labour contract.
    Employment,
    /// Dependents are more than `more_than_percent` of the members. A dependent is a child
    /// under `child_below_age`, a member past working age, or a member with a disability or
    /// severe illness (or every member when the household has no working capacity).
    Dependents {
        child_below_age: u32,
        more_than_percent: u32,
    },
    /// A child under `child_below_age` is stunted or underweight.
    Nutrition { child_below_age: u32 },
    /// A member aged `min_age` or over has no health insurance.
    HealthInsurance { min_age: u32 },
    /// A member in one of the age bands is not studying and lacks the band's qualification.
    AdultEducation { bands: Vec<EducationBand> },
    /// A child with `from_age <= age < below_age` is not in school.
    ChildSchooling { from_age: u32, below_age: u32 },
    /// The dwelling's durability is one of `deprived`.
    HousingQuality { deprived: Vec<HouseDurability> },
    /// Floor area per person is below `min_m2_per_person` (exactly that much is not deprived).
    FloorArea { min_m2_per_person: u32 },
    /// The domestic water source is not one of `safe`.
    Water { safe: Vec<WaterSource> },
    /// The latrine is not one of `hygienic`.
    Latrine { hygienic: Vec<Latrine> },
    /// No member uses the internet (sử dụng dịch vụ viễn thông).
    TelecomUse,
    /// None of `devices`, and no village loudspeaker where `loudspeaker_counts`.
    InformationDevices {
        devices: Vec<InformationDevice>,
        loudspeaker_counts: bool,
    },
    /// The household has no internet access.
    InternetAccess,
    /// No member uses digital services.
    DigitalServices,
    /// Household waste is handled in none of the `adequate` ways.
    HouseholdWaste { adequate: Vec<WasteHandling> },
}

/// One age band of the adult-education indicator: `from_age <= age < below_age`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EducationBand {
    pub from_age: u32,
    pub below_age: u32,
    /// The least qualification that meets the band (in [`Qualification`]'s order, so
    /// `upper_secondary` is also met by vocational training or higher).
    pub requires: Qualification,
}

/// Which indicator, independent of its parameters: what a [`crate::classify::Deprivation`]
/// names and reports count by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndicatorId {
    Employment,
    Dependents,
    Nutrition,
    HealthInsurance,
    AdultEducation,
    ChildSchooling,
    HousingQuality,
    FloorArea,
    Water,
    Latrine,
    TelecomUse,
    InformationDevices,
    InternetAccess,
    DigitalServices,
    HouseholdWaste,
}

/// The basic social services the indicators measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Employment,
    Health,
    Education,
    Housing,
    WaterAndSanitation,
    Information,
}

impl Service {
    pub fn label_vi(self) -> &'static str {
        match self {
            Service::Employment => "việc làm",
            Service::Health => "y tế",
            Service::Education => "giáo dục",
            Service::Housing => "nhà ở",
            Service::WaterAndSanitation => "nước sinh hoạt và vệ sinh",
            Service::Information => "thông tin",
        }
    }
}

impl IndicatorId {
    pub fn label_vi(self) -> &'static str {
        match self {
            IndicatorId::Employment => "việc làm",
            IndicatorId::Dependents => "người phụ thuộc trong hộ",
            IndicatorId::Nutrition => "dinh dưỡng",
            IndicatorId::HealthInsurance => "bảo hiểm y tế",
            IndicatorId::AdultEducation => "trình độ giáo dục của người lớn",
            IndicatorId::ChildSchooling => "tình trạng đi học của trẻ em",
            IndicatorId::HousingQuality => "chất lượng nhà ở",
            IndicatorId::FloorArea => "diện tích nhà ở bình quân đầu người",
            IndicatorId::Water => "nguồn nước sinh hoạt",
            IndicatorId::Latrine => "nhà tiêu hợp vệ sinh",
            IndicatorId::TelecomUse => "sử dụng dịch vụ viễn thông",
            IndicatorId::InformationDevices => "phương tiện phục vụ tiếp cận thông tin",
            IndicatorId::InternetAccess => "tiếp cận internet",
            IndicatorId::DigitalServices => "sử dụng dịch vụ số",
            IndicatorId::HouseholdWaste => "xử lý rác thải sinh hoạt",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            IndicatorId::Employment => "employment",
            IndicatorId::Dependents => "dependents",
            IndicatorId::Nutrition => "nutrition",
            IndicatorId::HealthInsurance => "health insurance",
            IndicatorId::AdultEducation => "adult education",
            IndicatorId::ChildSchooling => "children's schooling",
            IndicatorId::HousingQuality => "housing quality",
            IndicatorId::FloorArea => "floor area per person",
            IndicatorId::Water => "domestic water",
            IndicatorId::Latrine => "hygienic latrine",
            IndicatorId::TelecomUse => "telecom service use",
            IndicatorId::InformationDevices => "information devices",
            IndicatorId::InternetAccess => "internet access",
            IndicatorId::DigitalServices => "digital service use",
            IndicatorId::HouseholdWaste => "household waste",
        }
    }

    pub fn service(self) -> Service {
        match self {
            IndicatorId::Employment | IndicatorId::Dependents => Service::Employment,
            IndicatorId::Nutrition | IndicatorId::HealthInsurance => Service::Health,
            IndicatorId::AdultEducation | IndicatorId::ChildSchooling => Service::Education,
            IndicatorId::HousingQuality | IndicatorId::FloorArea => Service::Housing,
            IndicatorId::Water | IndicatorId::Latrine | IndicatorId::HouseholdWaste => {
                Service::WaterAndSanitation
            }
            IndicatorId::TelecomUse
            | IndicatorId::InformationDevices
            | IndicatorId::InternetAccess
            | IndicatorId::DigitalServices => Service::Information,
        }
    }

    /// The data file's name for it.
    pub fn code(self) -> &'static str {
        match self {
            IndicatorId::Employment => "employment",
            IndicatorId::Dependents => "dependents",
            IndicatorId::Nutrition => "nutrition",
            IndicatorId::HealthInsurance => "health_insurance",
            IndicatorId::AdultEducation => "adult_education",
            IndicatorId::ChildSchooling => "child_schooling",
            IndicatorId::HousingQuality => "housing_quality",
            IndicatorId::FloorArea => "floor_area",
            IndicatorId::Water => "water",
            IndicatorId::Latrine => "latrine",
            IndicatorId::TelecomUse => "telecom_use",
            IndicatorId::InformationDevices => "information_devices",
            IndicatorId::InternetAccess => "internet_access",
            IndicatorId::DigitalServices => "digital_services",
            IndicatorId::HouseholdWaste => "household_waste",
        }
    }
}

impl IndicatorRule {
    pub fn id(&self) -> IndicatorId {
        match self {
            IndicatorRule::Employment => IndicatorId::Employment,
            IndicatorRule::Dependents { .. } => IndicatorId::Dependents,
            IndicatorRule::Nutrition { .. } => IndicatorId::Nutrition,
            IndicatorRule::HealthInsurance { .. } => IndicatorId::HealthInsurance,
            IndicatorRule::AdultEducation { .. } => IndicatorId::AdultEducation,
            IndicatorRule::ChildSchooling { .. } => IndicatorId::ChildSchooling,
            IndicatorRule::HousingQuality { .. } => IndicatorId::HousingQuality,
            IndicatorRule::FloorArea { .. } => IndicatorId::FloorArea,
            IndicatorRule::Water { .. } => IndicatorId::Water,
            IndicatorRule::Latrine { .. } => IndicatorId::Latrine,
            IndicatorRule::TelecomUse => IndicatorId::TelecomUse,
            IndicatorRule::InformationDevices { .. } => IndicatorId::InformationDevices,
            IndicatorRule::InternetAccess => IndicatorId::InternetAccess,
            IndicatorRule::DigitalServices => IndicatorId::DigitalServices,
            IndicatorRule::HouseholdWaste { .. } => IndicatorId::HouseholdWaste,
        }
    }
}

impl StandardSet {
    /// The embedded standards.
    pub fn embedded() -> Result<StandardSet, StandardError> {
        StandardSet::parse(STANDARDS_JSON)
    }

    /// Parses and checks a standards file.
    pub fn parse(text: &str) -> Result<StandardSet, StandardError> {
        let set: StandardSet =
            serde_json::from_str(text).map_err(|e| StandardError::Json(e.to_string()))?;
        set.check()?;
        Ok(set)
    }

    fn check(&self) -> Result<(), StandardError> {
        if self.format != STANDARDS_FORMAT {
            return Err(StandardError::UnsupportedFormat {
                got: self.format,
                expected: STANDARDS_FORMAT,
            });
        }
        let mut ids = BTreeSet::new();
        for standard in &self.standards {
            if standard.id.trim().is_empty() || !ids.insert(standard.id.as_str()) {
                return Err(StandardError::DuplicateId {
                    id: standard.id.clone(),
                });
            }
            standard.check()?;
        }
        for (i, a) in self.standards.iter().enumerate() {
            for b in &self.standards[i + 1..] {
                let overlap = a
                    .effective_until
                    .is_none_or(|until| b.effective_from <= until)
                    && b.effective_until
                        .is_none_or(|until| a.effective_from <= until);
                if overlap {
                    return Err(StandardError::OverlappingPeriods {
                        a: a.id.clone(),
                        b: b.id.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The standard in force on the review's reference date, if any.
    pub fn for_date(&self, reference_date: Date) -> Option<&Standard> {
        self.standards.iter().find(|s| s.applies_on(reference_date))
    }

    /// A standard by id, e.g. to show an old classification with the standard it used.
    pub fn get(&self, id: &str) -> Option<&Standard> {
        self.standards.iter().find(|s| s.id == id)
    }

    /// Every value marked provisional, as `standard id: field`, for the administrator's page.
    pub fn provisional_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.standards {
            let mut mark = |marked: bool, what: &str| {
                if marked {
                    out.push(format!("{}: {what}", s.id));
                }
            };
            mark(s.income_line_vnd.provisional, "income_line_vnd");
            mark(
                s.average_living_upper_vnd.provisional,
                "average_living_upper_vnd",
            );
            mark(s.deprivation_threshold.provisional, "deprivation_threshold");
            mark(s.working_age.provisional, "working_age");
            mark(
                s.field_scoring.provisional || s.field_scoring.score_a_line.provisional,
                "field_scoring",
            );
            for spec in &s.indicators {
                mark(
                    spec.provisional,
                    &format!("indicators.{}", spec.rule.id().code()),
                );
            }
        }
        out
    }
}

impl Standard {
    pub fn applies_on(&self, date: Date) -> bool {
        self.effective_from <= date && self.effective_until.is_none_or(|until| date <= until)
    }

    /// The indicator ids this standard uses, in form order.
    pub fn indicator_ids(&self) -> impl Iterator<Item = IndicatorId> + '_ {
        self.indicators.iter().map(|spec| spec.rule.id())
    }

    fn check(&self) -> Result<(), StandardError> {
        let bad = |field: &str, problem: &'static str| StandardError::BadValue {
            standard: self.id.clone(),
            field: field.to_string(),
            problem,
        };
        if self
            .effective_until
            .is_some_and(|until| until < self.effective_from)
        {
            return Err(bad(
                "effective_until",
                "trước ngày bắt đầu / is before effective_from",
            ));
        }
        for settlement in [Settlement::Rural, Settlement::Urban] {
            let line = self.income_line_vnd.get(settlement);
            if line == 0 {
                return Err(bad("income_line_vnd", "phải lớn hơn 0 / must be above 0"));
            }
            if self
                .average_living_upper_vnd
                .get(settlement)
                .is_some_and(|upper| upper <= line)
            {
                return Err(bad(
                    "average_living_upper_vnd",
                    "phải lớn hơn chuẩn nghèo / must be above the income line",
                ));
            }
        }
        if self.deprivation_threshold.count == 0 {
            return Err(bad(
                "deprivation_threshold",
                "phải lớn hơn 0 / must be above 0",
            ));
        }
        let age = &self.working_age;
        if age.min_age >= age.below_age_male || age.min_age >= age.below_age_female {
            return Err(bad(
                "working_age",
                "tuổi bắt đầu phải nhỏ hơn tuổi kết thúc / min_age must be below the upper ages",
            ));
        }
        if self.field_scoring.points_per_deprivation == 0 {
            return Err(bad(
                "field_scoring.points_per_deprivation",
                "phải lớn hơn 0 / must be above 0",
            ));
        }
        if self.indicators.is_empty() {
            return Err(bad("indicators", "trống / is empty"));
        }
        let mut seen = BTreeSet::new();
        for spec in &self.indicators {
            let id = spec.rule.id();
            if !seen.insert(id) {
                return Err(StandardError::DuplicateIndicator {
                    standard: self.id.clone(),
                    indicator: id.code().into(),
                });
            }
            let field = format!("indicators.{}", id.code());
            let problem = match &spec.rule {
                IndicatorRule::Dependents {
                    child_below_age,
                    more_than_percent,
                } => (*child_below_age == 0 || *more_than_percent > 100)
                    .then_some("tham số ngoài khoảng / has a parameter out of range"),
                IndicatorRule::Nutrition { child_below_age } => (*child_below_age == 0)
                    .then_some("tuổi phải lớn hơn 0 / age must be above 0"),
                IndicatorRule::AdultEducation { bands } => (bands.is_empty()
                    || bands.iter().any(|b| b.from_age >= b.below_age))
                .then_some("khoảng tuổi sai / has an empty or reversed age band"),
                IndicatorRule::ChildSchooling {
                    from_age,
                    below_age,
                } => (from_age >= below_age)
                    .then_some("khoảng tuổi sai / has a reversed age band"),
                IndicatorRule::FloorArea { min_m2_per_person } => (*min_m2_per_person == 0)
                    .then_some("diện tích phải lớn hơn 0 / area must be above 0"),
                IndicatorRule::InformationDevices { devices, .. } => devices
                    .contains(&InformationDevice::VillageLoudspeaker)
                    .then_some(
                        "loa truyền thanh đặt bằng loudspeaker_counts / set the loudspeaker with loudspeaker_counts",
                    ),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(bad(&field, problem));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Date {
        text.parse().expect("valid date")
    }

    fn set() -> StandardSet {
        StandardSet::embedded().expect("the embedded standards load")
    }

    #[test]
    fn the_standard_is_chosen_by_reference_date() {
        let set = set();
        let id = |d: &str| set.for_date(day(d)).map(|s| s.id.as_str());
        assert_eq!(id("2021-12-31"), None);
        assert_eq!(id("2022-01-01"), Some("ND07-2021"));
        assert_eq!(id("2026-12-31"), Some("ND07-2021"));
        assert_eq!(id("2027-01-01"), Some("ND351-2025"));
        assert_eq!(id("2030-12-31"), Some("ND351-2025"));
        assert_eq!(id("2031-01-01"), None);
    }

    #[test]
    fn the_embedded_values_match_the_legal_texts() {
        let set = set();
        let nd07 = set.get("ND07-2021").expect("present");
        assert_eq!(nd07.income_line_vnd.get(Settlement::Rural), 1_500_000);
        assert_eq!(nd07.income_line_vnd.get(Settlement::Urban), 2_000_000);
        assert_eq!(nd07.average_living_upper_vnd.rural, Some(2_250_000));
        assert_eq!(nd07.average_living_upper_vnd.urban, Some(3_000_000));
        assert_eq!(nd07.deprivation_threshold.count, 3);
        assert_eq!(nd07.field_scoring.score_a_line.rural, 140);
        assert_eq!(nd07.field_scoring.score_a_line.urban, 175);
        assert_eq!(nd07.field_scoring.points_per_deprivation, 10);
        assert_eq!(nd07.field_scoring.score_b_threshold, 30);
        assert_eq!(nd07.indicators.len(), 12);
        assert!(nd07
            .indicator_ids()
            .any(|i| i == IndicatorId::InformationDevices));

        let nd351 = set.get("ND351-2025").expect("present");
        assert_eq!(nd351.income_line_vnd.get(Settlement::Rural), 2_200_000);
        assert_eq!(nd351.income_line_vnd.get(Settlement::Urban), 2_800_000);
        assert_eq!(nd351.average_living_upper_vnd.rural, None);
        assert!(nd351.average_living_upper_vnd.provisional);
        assert_eq!(nd351.deprivation_threshold.count, 3);
        let ids: Vec<IndicatorId> = nd351.indicator_ids().collect();
        assert!(!ids.contains(&IndicatorId::InformationDevices));
        for added in [
            IndicatorId::DigitalServices,
            IndicatorId::InternetAccess,
            IndicatorId::HouseholdWaste,
        ] {
            assert!(ids.contains(&added), "{added:?}");
        }
    }

    #[test]
    fn unconfirmed_values_are_marked_provisional() {
        let set = set();
        let provisional = set.provisional_values();
        for expected in [
            "ND351-2025: average_living_upper_vnd",
            "ND351-2025: field_scoring",
            "ND07-2021: working_age",
            "ND07-2021: indicators.employment",
            "ND351-2025: indicators.household_waste",
        ] {
            assert!(
                provisional.iter().any(|p| p == expected),
                "{expected} in {provisional:?}"
            );
        }
        for confirmed in [
            "ND07-2021: income_line_vnd",
            "ND351-2025: income_line_vnd",
            "ND07-2021: average_living_upper_vnd",
            "ND07-2021: deprivation_threshold",
        ] {
            assert!(!provisional.iter().any(|p| p == confirmed), "{confirmed}");
        }
        // Every indicator threshold of both standards is partly or not confirmed.
        for s in &set.standards {
            assert!(s.indicators.iter().all(|i| i.provisional), "{}", s.id);
        }
    }

    #[test]
    fn a_corrected_file_is_checked() {
        let overlapping = STANDARDS_JSON.replace("\"2027-01-01\"", "\"2026-06-01\"");
        assert!(matches!(
            StandardSet::parse(&overlapping),
            Err(StandardError::OverlappingPeriods { .. })
        ));
        let unknown_indicator = STANDARDS_JSON.replacen(
            "\"indicator\": \"telecom_use\"",
            "\"indicator\": \"telepathy\"",
            1,
        );
        assert!(matches!(
            StandardSet::parse(&unknown_indicator),
            Err(StandardError::Json(_))
        ));
        let bad_band = STANDARDS_JSON.replacen("2250000", "1400000", 1);
        assert!(matches!(
            StandardSet::parse(&bad_band),
            Err(StandardError::BadValue { .. })
        ));
        let corrected =
            STANDARDS_JSON.replacen("\"min_m2_per_person\": 8", "\"min_m2_per_person\": 9", 1);
        let set = StandardSet::parse(&corrected).expect("a corrected value parses");
        let floor = set.standards[0]
            .indicators
            .iter()
            .find_map(|i| match i.rule {
                IndicatorRule::FloorArea { min_m2_per_person } => Some(min_m2_per_person),
                _ => None,
            });
        assert_eq!(floor, Some(9));
    }
}
