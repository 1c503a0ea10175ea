//! The deprivation indicators, derived from the survey answers: the enumerator records ages,
//! insurance, schooling, the dwelling …, never the indicators themselves.
//!
//! Each indicator of a [`Standard`] comes out as one [`Finding`]:
//! - [`Finding::Deprived`] with a reason in Vietnamese and English naming the members and the
//!   answers that made it so ("thành viên Nguyễn Văn A, 34 tuổi, không có bảo hiểm y tế / member
//!   Nguyễn Văn A, 34, no health insurance");
//! - [`Finding::NotDeprived`];
//! - [`Finding::Unknown`] when an answer it needs is missing, naming the answers.
//!
//! Missing answers are never guessed, but they only matter when they could change the result:
//! one member without insurance makes the household deprived whatever the other members'
//! unanswered questions say, and the dependents share is decided when even the unknown members
//! could not tip it over (or under) the line. An empty list of information devices means "none"
//! only when the household record says the question was asked.
//!
//! Ages are whole years at the review's reference date, from each member's date of birth.
//! Members are considered in id order, so the result does not depend on the order of the list.

use std::fmt::{self, Write};

use serde::{Deserialize, Serialize};

use crate::household::{
    ChildNutrition, Date, Employment, HouseDurability, Household, InformationDevice, Latrine,
    Member, Qualification, Sex, WasteHandling, WaterSource,
};
use crate::standards::{IndicatorId, IndicatorRule, IndicatorSpec, Standard, WorkingAge};
use crate::MemberId;

/// An indicator the household is deprived in, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprivation {
    pub indicator: IndicatorId,
    /// Vietnamese, then " / ", then English; the members and answers that decided it.
    pub reason: String,
    /// The members whose answers made the household deprived (empty for household-level
    /// indicators such as the dwelling), so reports can count children's deprivations.
    pub members: Vec<MemberId>,
}

/// An indicator that could not be derived, and the answers it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndicatorGap {
    pub indicator: IndicatorId,
    /// Each missing answer, Vietnamese / English ("thành viên Trần Thị B, 7 tuổi – bảo hiểm y
    /// tế / member Trần Thị B, 7 – health insurance").
    pub missing: Vec<String>,
}

/// One indicator's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    Deprived(Deprivation),
    NotDeprived,
    Unknown(IndicatorGap),
}

/// Every indicator of a standard, split by result, in the standard's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    pub deprivations: Vec<Deprivation>,
    pub not_deprived: Vec<IndicatorId>,
    pub gaps: Vec<IndicatorGap>,
}

/// Whether a classification's texts (reasons, what is missing, the rule that decided) are
/// written, or left empty where only the decision is wanted: a store that keeps the decision
/// and rebuilds the texts when they are read. Nothing else depends on them, so both give the
/// same decision (`decide_is_classify_without_its_texts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Texts {
    Written,
    Left,
}

impl Texts {
    /// `text()` when texts are written, else an empty string (which does not allocate).
    pub(crate) fn make(self, text: impl FnOnce() -> String) -> String {
        match self {
            Texts::Written => text(),
            Texts::Left => String::new(),
        }
    }
}

/// Derives every indicator of `standard` for `household` as of `reference_date`.
pub fn assess(household: &Household, standard: &Standard, reference_date: Date) -> Assessment {
    assess_with(household, standard, reference_date, Texts::Written)
}

/// [`assess`], its texts written or left empty.
pub(crate) fn assess_with(
    household: &Household,
    standard: &Standard,
    reference_date: Date,
    texts: Texts,
) -> Assessment {
    // Most indicators find no deprivation: their list is sized for all of them, not grown.
    let mut out = Assessment {
        not_deprived: Vec::with_capacity(standard.indicators.len()),
        ..Assessment::default()
    };
    let people = people_of(household, reference_date);
    for spec in &standard.indicators {
        match derive_for(household, &people, spec, &standard.working_age, texts) {
            Finding::Deprived(deprivation) => out.deprivations.push(deprivation),
            Finding::NotDeprived => out.not_deprived.push(spec.rule.id()),
            Finding::Unknown(gap) => out.gaps.push(gap),
        }
    }
    out
}

/// Derives one indicator.
pub fn derive(
    household: &Household,
    spec: &IndicatorSpec,
    working_age: &WorkingAge,
    reference_date: Date,
) -> Finding {
    let people = people_of(household, reference_date);
    derive_for(household, &people, spec, working_age, Texts::Written)
}

/// The household's members with their ages on `reference_date`, in member-id order, so that
/// the reasons read the same whatever order a device or the server holds the members in (the
/// server rebuilds the list from field paths keyed by id).
fn people_of(household: &Household, reference_date: Date) -> Vec<Person<'_>> {
    let mut people: Vec<Person<'_>> = household
        .members
        .iter()
        .map(|member| Person::new(member, reference_date))
        .collect();
    people.sort_by_key(|person| person.member.id);
    people
}

/// [`derive`] with the household's people already counted ([`people_of`]): a standard's
/// indicators share them.
fn derive_for(
    household: &Household,
    people: &[Person<'_>],
    spec: &IndicatorSpec,
    working_age: &WorkingAge,
    texts: Texts,
) -> Finding {
    let id = Indicator {
        id: spec.rule.id(),
        texts,
    };
    let dwelling = &household.dwelling;
    match &spec.rule {
        IndicatorRule::Employment => per_member(id, people, |p| {
            if !working_age.contains(p.age, p.member.sex) {
                return Check::Fine;
            }
            match p.member.employment {
                Some(Employment::Unemployed) => Check::Deprived(("thất nghiệp", "unemployed")),
                Some(Employment::WageWithoutContract) => Check::Deprived((
                    "làm công ăn lương không có hợp đồng lao động",
                    "works for wages without a labour contract",
                )),
                Some(_) => Check::Fine,
                None => Check::Unknown(vec![("việc làm", "employment")]),
            }
        }),
        IndicatorRule::Dependents {
            child_below_age,
            more_than_percent,
        } => dependents(
            id,
            people,
            household.flags.no_working_capacity,
            working_age,
            i64::from(*child_below_age),
            *more_than_percent,
        ),
        IndicatorRule::Nutrition { child_below_age } => per_member(id, people, |p| {
            if p.age >= i64::from(*child_below_age) {
                return Check::Fine;
            }
            match p.member.child_nutrition {
                Some(ChildNutrition::Stunted) => {
                    Check::Deprived(("suy dinh dưỡng thể thấp còi", "stunted"))
                }
                Some(ChildNutrition::Underweight) => {
                    Check::Deprived(("suy dinh dưỡng thể nhẹ cân", "underweight"))
                }
                Some(ChildNutrition::Normal) => Check::Fine,
                None => Check::Unknown(vec![("tình trạng dinh dưỡng", "nutrition status")]),
            }
        }),
        IndicatorRule::HealthInsurance { min_age } => per_member(id, people, |p| {
            if p.age < i64::from(*min_age) {
                return Check::Fine;
            }
            match p.member.health_insurance {
                Some(false) => Check::Deprived(("không có bảo hiểm y tế", "no health insurance")),
                Some(true) => Check::Fine,
                None => Check::Unknown(vec![("bảo hiểm y tế", "health insurance")]),
            }
        }),
        IndicatorRule::AdultEducation { bands } => per_member_owned(id, people, |p| {
            let Some(band) = bands
                .iter()
                .find(|b| i64::from(b.from_age) <= p.age && p.age < i64::from(b.below_age))
            else {
                return OwnedCheck::Fine;
            };
            let studying = p.member.in_school;
            let qualification = p.member.qualification;
            if studying == Some(true) || qualification.is_some_and(|q| q >= band.requires) {
                return OwnedCheck::Fine;
            }
            if studying == Some(false) && qualification.is_some() {
                let (vi, en) = qualification_label(band.requires);
                return OwnedCheck::Deprived((
                    texts.make(|| text!("không đi học và chưa tốt nghiệp {vi}")),
                    texts.make(|| text!("not studying and has not completed {en}")),
                ));
            }
            let mut missing = Vec::new();
            if studying.is_none() {
                missing.push(("đang đi học", "in school"));
            }
            if qualification.is_none() {
                missing.push(("trình độ học vấn", "qualification"));
            }
            OwnedCheck::Unknown(missing)
        }),
        IndicatorRule::ChildSchooling {
            from_age,
            below_age,
        } => per_member(id, people, |p| {
            if p.age < i64::from(*from_age) || p.age >= i64::from(*below_age) {
                return Check::Fine;
            }
            match p.member.in_school {
                Some(false) => Check::Deprived(("không đi học", "not in school")),
                Some(true) => Check::Fine,
                None => Check::Unknown(vec![("đang đi học", "in school")]),
            }
        }),
        IndicatorRule::HousingQuality { deprived } => match dwelling.durability {
            None => household_gap(id, ("mức độ kiên cố của nhà", "house durability")),
            Some(d) if deprived.contains(&d) => {
                let (vi, en) = durability_label(d);
                household_deprived(
                    id,
                    format_args!("nhà ở {vi}"),
                    format_args!("the dwelling is {en}"),
                )
            }
            Some(_) => Finding::NotDeprived,
        },
        IndicatorRule::FloorArea { min_m2_per_person } => {
            floor_area(id, dwelling.floor_area_m2, people.len(), *min_m2_per_person)
        }
        IndicatorRule::Water { safe } => match dwelling.water_source {
            None => household_gap(id, ("nguồn nước sinh hoạt", "water source")),
            Some(source) if !safe.contains(&source) => {
                let (vi, en) = water_label(source);
                household_deprived(
                    id,
                    format_args!("không có nguồn nước sinh hoạt hợp vệ sinh (đang dùng {vi})"),
                    format_args!("no safe domestic water (uses {en})"),
                )
            }
            Some(_) => Finding::NotDeprived,
        },
        IndicatorRule::Latrine { hygienic } => match dwelling.latrine {
            None => household_gap(id, ("loại nhà tiêu", "latrine")),
            Some(latrine) if !hygienic.contains(&latrine) => {
                let (vi, en) = latrine_label(latrine);
                household_deprived(
                    id,
                    format_args!("không có nhà tiêu hợp vệ sinh ({vi})"),
                    format_args!("no hygienic latrine ({en})"),
                )
            }
            Some(_) => Finding::NotDeprived,
        },
        IndicatorRule::TelecomUse => yes_no(
            id,
            dwelling.internet_use,
            ("sử dụng internet", "internet use"),
            (
                "không thành viên nào sử dụng internet",
                "no member uses the internet",
            ),
        ),
        IndicatorRule::InformationDevices {
            devices,
            loudspeaker_counts,
        } => {
            let owned = &dwelling.information_devices;
            let has_device = devices.iter().any(|d| owned.contains(d));
            let hears_loudspeaker =
                *loudspeaker_counts && owned.contains(&InformationDevice::VillageLoudspeaker);
            if has_device || hears_loudspeaker {
                Finding::NotDeprived
            } else if !owned.is_empty() || dwelling.information_devices_asked {
                household_deprived(
                    id,
                    format_args!(
                        "không có điện thoại, tivi, radio, máy tính và không nghe được loa truyền thanh"
                    ),
                    format_args!("no phone, TV, radio or computer and no village loudspeaker"),
                )
            } else {
                household_gap(
                    id,
                    ("phương tiện tiếp cận thông tin", "information devices"),
                )
            }
        }
        IndicatorRule::InternetAccess => yes_no(
            id,
            dwelling.internet_access,
            ("kết nối internet của hộ", "household internet access"),
            ("hộ không có kết nối internet", "no internet access"),
        ),
        IndicatorRule::DigitalServices => yes_no(
            id,
            dwelling.digital_services_use,
            ("sử dụng dịch vụ số", "digital service use"),
            (
                "không thành viên nào sử dụng dịch vụ số",
                "no member uses digital services",
            ),
        ),
        IndicatorRule::HouseholdWaste { adequate } => match dwelling.waste_handling {
            None => household_gap(id, ("cách xử lý rác thải sinh hoạt", "waste handling")),
            Some(handling) if !adequate.contains(&handling) => {
                let (vi, en) = waste_label(handling);
                household_deprived(
                    id,
                    format_args!("rác thải sinh hoạt không được thu gom, xử lý ({vi})"),
                    format_args!("household waste is not collected or treated ({en})"),
                )
            }
            Some(_) => Finding::NotDeprived,
        },
    }
}

/// A member with their age at the reference date.
struct Person<'a> {
    member: &'a Member,
    age: i64,
}

impl<'a> Person<'a> {
    fn new(member: &'a Member, on: Date) -> Person<'a> {
        Person {
            member,
            age: age_on(member.date_of_birth, on),
        }
    }

    fn name(&self) -> &str {
        let name = self.member.full_name.trim();
        if name.is_empty() {
            "(chưa có tên / no name)"
        } else {
            name
        }
    }

    /// "thành viên Nguyễn Văn A, 34 tuổi" and "member Nguyễn Văn A, 34".
    fn who(&self) -> (String, String) {
        let (mut vi, mut en) = (String::new(), String::new());
        self.write_who(&mut vi, &mut en);
        (vi, en)
    }

    /// [`Self::who`], written at the end of `vi` and `en`.
    fn write_who(&self, vi: &mut String, en: &mut String) {
        let _ = write!(vi, "thành viên {}, {} tuổi", self.name(), self.age);
        let _ = write!(en, "member {}, {}", self.name(), self.age);
    }
}

/// Whole years from `born` to `on`, without overflow whatever the dates.
pub fn age_on(born: Date, on: Date) -> i64 {
    let mut age = i64::from(on.year) - i64::from(born.year);
    if (on.month, on.day) < (born.month, born.day) {
        age -= 1;
    }
    age
}

impl WorkingAge {
    fn below(&self, sex: Sex) -> i64 {
        i64::from(match sex {
            Sex::Male => self.below_age_male,
            Sex::Female => self.below_age_female,
        })
    }

    /// `min_age <= age < below_age` for the member's sex.
    pub fn contains(&self, age: i64, sex: Sex) -> bool {
        i64::from(self.min_age) <= age && age < self.below(sex)
    }
}

/// The indicator a finding is about, and whether its texts are written.
#[derive(Clone, Copy)]
struct Indicator {
    id: IndicatorId,
    texts: Texts,
}

enum Check {
    Fine,
    Deprived((&'static str, &'static str)),
    Unknown(Vec<(&'static str, &'static str)>),
}

enum OwnedCheck {
    Fine,
    Deprived((String, String)),
    Unknown(Vec<(&'static str, &'static str)>),
}

fn per_member(
    id: Indicator,
    people: &[Person<'_>],
    check: impl Fn(&Person<'_>) -> Check,
) -> Finding {
    per_member_owned(id, people, |p| match check(p) {
        Check::Fine => OwnedCheck::Fine,
        Check::Deprived((vi, en)) => {
            OwnedCheck::Deprived((id.texts.make(|| vi.into()), id.texts.make(|| en.into())))
        }
        Check::Unknown(missing) => OwnedCheck::Unknown(missing),
    })
}

/// "Some member is deprived": deprived as soon as one member is, unknown only if no member is
/// and some member's answer is missing.
fn per_member_owned(
    id: Indicator,
    people: &[Person<'_>],
    check: impl Fn(&Person<'_>) -> OwnedCheck,
) -> Finding {
    // The reason in each language, "who, why" per deprived member, joined by "; ", written
    // straight into one string each: a household is classified at every revision (on the
    // server, inside every push).
    let mut reason_vi = String::new();
    let mut reason_en = String::new();
    let mut members = Vec::new();
    let mut missing = Vec::new();
    for person in people {
        // Who a member is is written only for a reason: most members are fine.
        match check(person) {
            OwnedCheck::Fine => {}
            OwnedCheck::Deprived(_) if id.texts == Texts::Left => members.push(person.member.id),
            OwnedCheck::Deprived((vi, en)) => {
                if members.is_empty() {
                    reason_vi.reserve(160);
                    reason_en.reserve(96);
                } else {
                    reason_vi.push_str("; ");
                    reason_en.push_str("; ");
                }
                person.write_who(&mut reason_vi, &mut reason_en);
                reason_vi.push_str(", ");
                reason_vi.push_str(&vi);
                reason_en.push_str(", ");
                reason_en.push_str(&en);
                members.push(person.member.id);
            }
            OwnedCheck::Unknown(items) if id.texts == Texts::Left => {
                missing.extend(items.iter().map(|_| String::new()));
            }
            OwnedCheck::Unknown(items) => {
                let (who_vi, who_en) = person.who();
                for (vi, en) in items {
                    missing.push(text!("{who_vi} – {vi} / {who_en} – {en}"));
                }
            }
        }
    }
    if !members.is_empty() {
        if id.texts == Texts::Written {
            reason_vi.push_str(" / ");
            reason_vi.push_str(&reason_en);
        }
        Finding::Deprived(Deprivation {
            indicator: id.id,
            reason: reason_vi,
            members,
        })
    } else if !missing.is_empty() {
        Finding::Unknown(IndicatorGap {
            indicator: id.id,
            missing,
        })
    } else {
        Finding::NotDeprived
    }
}

fn dependents(
    id: Indicator,
    people: &[Person<'_>],
    no_working_capacity: bool,
    working_age: &WorkingAge,
    child_below_age: i64,
    more_than_percent: u32,
) -> Finding {
    if people.is_empty() {
        return household_gap(id, ("thành viên của hộ", "the household's members"));
    }
    let total = people.len() as u64;
    let mut dependents = Vec::new();
    let mut unknown = Vec::new();
    for person in people {
        let dependent = no_working_capacity
            || person.age < child_below_age
            || person.age >= working_age.below(person.member.sex)
            || person.member.disability_or_severe_illness == Some(true);
        if dependent {
            dependents.push(person.member.id);
        } else if person.member.disability_or_severe_illness.is_none() {
            unknown.push(person);
        }
    }
    let over = |count: usize| count as u64 * 100 > u64::from(more_than_percent) * total;
    if over(dependents.len()) {
        let count = dependents.len();
        Finding::Deprived(Deprivation {
            indicator: id.id,
            reason: id.texts.make(|| text!(
                "{count}/{total} thành viên là người phụ thuộc, trên {more_than_percent}% / {count} of {total} members are dependents, more than {more_than_percent}%"
            )),
            members: dependents,
        })
    } else if over(dependents.len() + unknown.len()) {
        Finding::Unknown(IndicatorGap {
            indicator: id.id,
            missing: unknown
                .iter()
                .map(|person| {
                    id.texts.make(|| {
                        let (who_vi, who_en) = person.who();
                        text!(
                            "{who_vi} – khuyết tật hoặc bệnh nặng / {who_en} – disability or severe illness"
                        )
                    })
                })
                .collect(),
        })
    } else {
        Finding::NotDeprived
    }
}

fn floor_area(id: Indicator, area: Option<u32>, people: usize, min_per_person: u32) -> Finding {
    let Some(area) = area else {
        return household_gap(id, ("diện tích nhà ở", "floor area"));
    };
    if people == 0 {
        return household_gap(id, ("thành viên của hộ", "the household's members"));
    }
    let people = people as u64;
    let area = u64::from(area);
    if area >= u64::from(min_per_person) * people {
        return Finding::NotDeprived;
    }
    let tenths = area * 10 / people;
    let (whole, tenth) = (tenths / 10, tenths % 10);
    household_deprived(
        id,
        format_args!(
            "diện tích nhà ở {area} m² cho {people} người, {whole},{tenth} m²/người, dưới {min_per_person} m²/người"
        ),
        format_args!(
            "floor area {area} m² for {people} people, {whole}.{tenth} m² per person, below {min_per_person}"
        ),
    )
}

fn yes_no(
    id: Indicator,
    answer: Option<bool>,
    question: (&'static str, &'static str),
    deprived: (&'static str, &'static str),
) -> Finding {
    match answer {
        None => household_gap(id, question),
        Some(false) => household_deprived(
            id,
            format_args!("{}", deprived.0),
            format_args!("{}", deprived.1),
        ),
        Some(true) => Finding::NotDeprived,
    }
}

/// A deprivation of the household as a whole: "vi / en", written once.
fn household_deprived(id: Indicator, vi: fmt::Arguments<'_>, en: fmt::Arguments<'_>) -> Finding {
    Finding::Deprived(Deprivation {
        indicator: id.id,
        reason: id.texts.make(|| text!("{vi} / {en}")),
        members: Vec::new(),
    })
}

fn household_gap(id: Indicator, (vi, en): (&str, &str)) -> Finding {
    Finding::Unknown(IndicatorGap {
        indicator: id.id,
        missing: vec![id.texts.make(|| text!("hộ – {vi} / household – {en}"))],
    })
}

fn qualification_label(q: Qualification) -> (&'static str, &'static str) {
    match q {
        Qualification::None => ("bậc học nào", "any schooling"),
        Qualification::Primary => ("tiểu học", "primary school"),
        Qualification::LowerSecondary => ("trung học cơ sở", "lower secondary school"),
        Qualification::UpperSecondary => (
            "trung học phổ thông hoặc học nghề",
            "upper secondary school or vocational training",
        ),
        Qualification::Vocational => ("trình độ nghề", "vocational training"),
        Qualification::CollegeOrUniversity => ("cao đẳng, đại học", "college or university"),
    }
}

fn durability_label(d: HouseDurability) -> (&'static str, &'static str) {
    match d {
        HouseDurability::Durable => ("kiên cố", "durable"),
        HouseDurability::SemiDurable => ("bán kiên cố", "semi-durable"),
        HouseDurability::LessDurable => ("thiếu kiên cố", "less durable"),
        HouseDurability::Makeshift => ("đơn sơ", "makeshift"),
    }
}

fn water_label(source: WaterSource) -> (&'static str, &'static str) {
    match source {
        WaterSource::PipedWater => ("nước máy", "piped water"),
        WaterSource::ProtectedWell => ("giếng được bảo vệ", "a protected well"),
        WaterSource::ProtectedSpring => ("nguồn khe, mó được bảo vệ", "a protected spring"),
        WaterSource::Rainwater => ("nước mưa", "rainwater"),
        WaterSource::BottledOrPurchased => ("nước đóng bình, nước mua", "bottled or bought water"),
        WaterSource::UnprotectedWell => ("giếng không được bảo vệ", "an unprotected well"),
        WaterSource::UnprotectedSpring => {
            ("nguồn khe, mó không được bảo vệ", "an unprotected spring")
        }
        WaterSource::SurfaceWater => ("nước sông, suối, ao, hồ", "surface water"),
        WaterSource::Other => ("nguồn khác", "another source"),
    }
}

fn latrine_label(latrine: Latrine) -> (&'static str, &'static str) {
    match latrine {
        Latrine::FlushOrPourFlush => ("tự hoại, bán tự hoại", "flush or pour-flush"),
        Latrine::VentilatedPit => ("hố xí thông hơi", "ventilated pit"),
        Latrine::DoubleVault => ("hai ngăn", "double vault"),
        Latrine::UnhygienicPit => ("hố xí không hợp vệ sinh", "an unhygienic pit"),
        Latrine::None => ("không có nhà tiêu", "none"),
    }
}

fn waste_label(handling: WasteHandling) -> (&'static str, &'static str) {
    match handling {
        WasteHandling::Collected => ("được thu gom", "collected"),
        WasteHandling::SortedAndTreated => ("phân loại và xử lý", "sorted and treated"),
        WasteHandling::BurnedOrBuried => ("đốt hoặc chôn", "burned or buried"),
        WasteHandling::Dumped => ("vứt ra môi trường", "dumped"),
    }
}
