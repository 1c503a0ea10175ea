//! The household survey record, as `../shared/domain.md` describes it.
//!
//! The record is the enumerator's answers, not the classification: the class is computed from
//! these answers and stored beside each revision, so that it never becomes a field two devices
//! can disagree about. Every optional answer is `Option`, so that "not asked yet" is distinct
//! from "no".

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::{HouseholdId, MemberId};

/// One household in one review round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Household {
    pub id: HouseholdId,
    pub round: ReviewRound,
    /// Official 5-digit GSO code of the commune, ward or special zone.
    pub commune_code: String,
    /// The village or residential group (thôn, tổ dân phố, bản, ấp): no national code exists,
    /// so the commune manages its own names.
    pub village: String,
    pub address: String,
    #[serde(default)]
    pub gps: Option<GeoPoint>,
    /// Which member heads the household; must name a member of `members`.
    #[serde(default)]
    pub head_member_id: Option<MemberId>,
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub flags: HouseholdFlags,
    #[serde(default)]
    pub income: IncomeEvidence,
    #[serde(default)]
    pub dwelling: Dwelling,
    #[serde(default)]
    pub causes_of_poverty: PovertyCauses,
    #[serde(default)]
    pub support_needs: Vec<String>,
    /// Set when the household is voided (a duplicate, moved away, recorded by mistake). A voided
    /// household is a tombstone: it keeps its history, syncs like any change, and clearing the
    /// mark undoes it.
    #[serde(default)]
    pub void: Option<VoidMark>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRound {
    pub year: u16,
    pub kind: RoundKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundKind {
    /// The yearly review, 1 September to 14 December.
    Periodic,
    /// A review on a household's request during the year.
    Monthly,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HouseholdFlags {
    /// Người có công với cách mạng.
    pub revolutionary_contributor: bool,
    /// Receives regular social-protection allowances.
    pub social_protection_beneficiary: bool,
    /// No member has working capacity.
    pub no_working_capacity: bool,
    /// Main occupation in farming, forestry, fishery or salt making (the policy subclass).
    pub farming_forestry_fishery_salt: bool,
}

/// How income is evidenced: a direct estimate, or form B1 answers scored into score A.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncomeEvidence {
    /// Estimated income per person per month, in VND.
    pub estimated_per_person_vnd: Option<u64>,
    /// Form B1 answers, question code to answer code; kept raw so score A can be recomputed
    /// when a point table is corrected.
    pub b1_answers: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dwelling {
    pub durability: Option<HouseDurability>,
    /// Total floor area in whole square metres.
    pub floor_area_m2: Option<u32>,
    pub water_source: Option<WaterSource>,
    pub latrine: Option<Latrine>,
    /// Some member used the internet in the last month.
    pub internet_use: Option<bool>,
    /// Information devices the household has (phone, tv, radio, computer) or a village loudspeaker.
    pub information_devices: Vec<InformationDevice>,
    /// Household waste handling, asked from the 2027 standard on.
    pub waste_handling: Option<WasteHandling>,
    /// The devices question was asked, so an empty `information_devices` means "none" rather
    /// than "not asked yet".
    #[serde(default)]
    pub information_devices_asked: bool,
    /// The household has internet access (fixed or mobile), asked from the 2027 standard on.
    #[serde(default)]
    pub internet_access: Option<bool>,
    /// Some member uses digital services (online public services, digital payments), asked
    /// from the 2027 standard on.
    #[serde(default)]
    pub digital_services_use: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HouseDurability {
    /// Kiên cố.
    Durable,
    /// Bán kiên cố.
    SemiDurable,
    /// Thiếu kiên cố.
    LessDurable,
    /// Đơn sơ.
    Makeshift,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaterSource {
    PipedWater,
    ProtectedWell,
    ProtectedSpring,
    Rainwater,
    BottledOrPurchased,
    UnprotectedWell,
    UnprotectedSpring,
    SurfaceWater,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latrine {
    FlushOrPourFlush,
    VentilatedPit,
    DoubleVault,
    UnhygienicPit,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InformationDevice {
    Smartphone,
    Phone,
    Television,
    Radio,
    Computer,
    VillageLoudspeaker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WasteHandling {
    Collected,
    SortedAndTreated,
    BurnedOrBuried,
    Dumped,
}

/// The eight causes of poverty of form B2.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PovertyCauses {
    pub no_production_land: bool,
    pub no_capital: bool,
    pub no_labour: bool,
    pub no_tools: bool,
    pub no_know_how: bool,
    pub no_skills: bool,
    pub illness_or_accident: bool,
    pub other: Option<String>,
}

/// The mark that voids a household.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoidMark {
    pub reason: VoidReason,
    #[serde(default)]
    pub note: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoidReason {
    Duplicate,
    MovedAway,
    CreatedByMistake,
    Other,
}

impl VoidReason {
    pub fn label_vi(self) -> &'static str {
        match self {
            VoidReason::Duplicate => "trùng lặp / duplicate",
            VoidReason::MovedAway => "đã chuyển đi / moved away",
            VoidReason::CreatedByMistake => "tạo nhầm / created by mistake",
            VoidReason::Other => "lý do khác / other",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: MemberId,
    pub full_name: String,
    pub sex: Sex,
    pub date_of_birth: Date,
    /// Căn cước công dân: 12 digits.
    #[serde(default)]
    pub personal_id: Option<String>,
    pub relationship: Relationship,
    #[serde(default)]
    pub ethnicity: Option<String>,
    /// Currently attending school or a training course.
    #[serde(default)]
    pub in_school: Option<bool>,
    #[serde(default)]
    pub qualification: Option<Qualification>,
    #[serde(default)]
    pub employment: Option<Employment>,
    #[serde(default)]
    pub has_pension: Option<bool>,
    #[serde(default)]
    pub health_insurance: Option<bool>,
    #[serde(default)]
    pub disability_or_severe_illness: Option<bool>,
    /// For children under 16 only.
    #[serde(default)]
    pub child_nutrition: Option<ChildNutrition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Male,
    Female,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relationship {
    Head,
    Spouse,
    Child,
    Parent,
    Grandchild,
    Sibling,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Qualification {
    None,
    Primary,
    LowerSecondary,
    UpperSecondary,
    Vocational,
    CollegeOrUniversity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Employment {
    /// Works for wages with a labour contract.
    WageWithContract,
    /// Works for wages without a labour contract.
    WageWithoutContract,
    SelfEmployed,
    Unemployed,
    /// Studying, retired, homemaker, unable to work.
    NotInLabourForce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildNutrition {
    Normal,
    Stunted,
    Underweight,
}

/// A calendar date, written `YYYY-MM-DD` everywhere it is shown or stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// A checked constructor: `None` for a day that does not exist.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }

    /// The date `days` days after 1970-01-01 (Howard Hinnant's civil-from-days).
    pub fn from_unix_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// The calendar date in Vietnam at the given Unix milliseconds. Vietnam keeps one time
    /// zone, UTC+7, without daylight saving, so both ends agree on "today" whatever zone their
    /// clocks are set to.
    pub fn in_vietnam_at_ms(unix_ms: i64) -> Date {
        const VIETNAM_OFFSET_SECS: i64 = 7 * 3600;
        let secs = unix_ms.div_euclid(1000).saturating_add(VIETNAM_OFFSET_SECS);
        Date::from_unix_days(secs.div_euclid(86_400))
    }

    /// Whole years of age on `on`, for someone born on `self`.
    pub fn age_on(self, on: Date) -> i32 {
        let mut age = on.year - self.year;
        if (on.month, on.day) < (self.month, self.day) {
            age -= 1;
        }
        age
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::str::FromStr for Date {
    type Err = String;

    fn from_str(text: &str) -> Result<Date, String> {
        let bad = || format!("'{text}' is not a date: write YYYY-MM-DD, e.g. 1984-03-27");
        let mut parts = text.splitn(3, '-');
        let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        let day: u8 = d.parse().map_err(|_| bad())?;
        Date::new(year, month, day).ok_or_else(bad)
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Date, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Household {
    /// The member who heads the household, if `head_member_id` names one.
    pub fn head(&self) -> Option<&Member> {
        let head = self.head_member_id?;
        self.members.iter().find(|member| member.id == head)
    }

    pub fn is_voided(&self) -> bool {
        self.void.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_unix_days() {
        assert_eq!(
            Date::from_unix_days(0),
            Date::new(1970, 1, 1).expect("valid")
        );
        assert_eq!(
            Date::from_unix_days(19_723),
            Date::new(2024, 1, 1).expect("valid")
        );
        assert_eq!(
            Date::from_unix_days(20_513),
            Date::new(2026, 3, 1).expect("valid")
        );
        assert_eq!(
            "2024-02-29".parse::<Date>(),
            Ok(Date {
                year: 2024,
                month: 2,
                day: 29
            })
        );
        assert!("2023-02-29".parse::<Date>().is_err());
        assert!("2023-2-1".parse::<Date>().is_err());
    }

    #[test]
    fn age_counts_whole_years() {
        let born = Date::new(2019, 9, 1).expect("valid");
        assert_eq!(born.age_on(Date::new(2025, 8, 31).expect("valid")), 5);
        assert_eq!(born.age_on(Date::new(2025, 9, 1).expect("valid")), 6);
    }
}
