//! The record read straight from its entries, without the tree or serde, for a field map as
//! the codec writes a household's: paths in ascending order, each one the record has, each
//! leaf of its field's type, members keyed by hyphenated ids. Building the tree and walking it
//! with serde was nearly half of reading a pushed record (the largest part of the server's
//! work in a first push); read this way, a record reads in 11.6 µs instead of 15.6.
//!
//! [`read`] gives up (`None`) at anything else, and the caller reads the map through the tree
//! instead, which gives the error or the record. So this reader need not know every shape
//! serde accepts, only never accept one differently: where it returns a record, it is the
//! record the tree gives (`tree`'s tests hold them together on every path with every kind of
//! value). A field added to [`Household`] must be added here too, or the struct literals below
//! do not compile; a path left out here would only be read the slow way.
//!
//! Paths are matched as bytes, and a path taken here is UTF-8 without a check of its own: each
//! part of it is a name matched here, a member's id (checked when the member is finished) or a
//! B1 question (checked as text). So a pushed record's paths, about 90 of them, are not each
//! checked as UTF-8 when it is read in one pass (`encoded::read_household_as_written`).

use serde::de::value::{BorrowedStrDeserializer, Error as ValueError};
use serde::Deserialize;

use super::{FieldValue, LeafRef};
use crate::household::{
    ChildNutrition, Date, Dwelling, Employment, GeoPoint, Household, HouseholdFlags,
    IncomeEvidence, Member, PovertyCauses, Qualification, Relationship, ReviewRound, RoundKind,
    Sex, VoidMark, VoidReason,
};
use crate::{HouseholdId, MemberId};

/// The length of a member's id as paths key it (`Uuid`'s hyphenated form). Ids of one length
/// sort as the paths that carry them do, so members come out in the tree's order.
const MEMBER_KEY_BYTES: usize = 36;

/// Reads a household from its entries, given in strictly ascending path order (as a map
/// iterates, and as the codec writes one), or `None` where the tree must read it (see the
/// module documentation), as at a leaf that `leaf_ok` refuses.
pub(super) fn read<'a>(
    entries: impl IntoIterator<Item = (&'a str, LeafRef<'a>)>,
    leaf_ok: impl Fn(&str, LeafRef<'_>) -> bool,
) -> Option<Household> {
    let mut parts = Parts::default();
    let mut previous: Option<&str> = None;
    for (path, leaf) in entries {
        debug_assert!(
            previous.is_none_or(|previous| previous < path),
            "{path} after {previous:?}"
        );
        previous = Some(path);
        if !leaf_ok(path, leaf) {
            return None;
        }
        parts.put(path.as_bytes(), leaf)?;
    }
    parts.finish()
}

/// A group that may be absent, a null leaf, or fields of its own.
#[derive(Default)]
enum Group<T> {
    #[default]
    Absent,
    Null,
    Fields(T),
}

impl<T: Default> Group<T> {
    /// The group's fields, made on the first of them; `None` after a null leaf.
    fn fields(&mut self) -> Option<&mut T> {
        if let Group::Absent = self {
            *self = Group::Fields(T::default());
        }
        match self {
            Group::Fields(fields) => Some(fields),
            _ => None,
        }
    }

    /// The group as a null leaf: only before any of its fields (which sort after it).
    fn null(&mut self) -> Option<()> {
        match self {
            Group::Absent => {
                *self = Group::Null;
                Some(())
            }
            _ => None,
        }
    }
}

/// What the entries held so far, field by field.
#[derive(Default)]
pub(super) struct Parts<'a> {
    id: Option<HouseholdId>,
    year: Option<u16>,
    kind: Option<RoundKind>,
    commune_code: Option<String>,
    village: Option<String>,
    address: Option<String>,
    gps: Group<(Option<f64>, Option<f64>)>,
    head_member_id: Option<MemberId>,
    members: Vec<Member>,
    /// The member being read: its key in the paths (checked when the member is finished).
    member: Option<(&'a [u8], MemberParts)>,
    flags: HouseholdFlags,
    income: IncomeEvidence,
    dwelling: Dwelling,
    causes_of_poverty: PovertyCauses,
    support_needs: Vec<String>,
    void: Group<(Option<VoidReason>, Option<String>)>,
}

#[derive(Default)]
struct MemberParts {
    full_name: Option<String>,
    sex: Option<Sex>,
    date_of_birth: Option<Date>,
    personal_id: Option<String>,
    relationship: Option<Relationship>,
    ethnicity: Option<String>,
    in_school: Option<bool>,
    qualification: Option<Qualification>,
    employment: Option<Employment>,
    has_pension: Option<bool>,
    health_insurance: Option<bool>,
    disability_or_severe_illness: Option<bool>,
    child_nutrition: Option<ChildNutrition>,
}

impl<'a> Parts<'a> {
    pub(super) fn put(&mut self, path: &'a [u8], leaf: LeafRef<'_>) -> Option<()> {
        // By group first: a household's ~90 paths, each compared with a dozen names at most.
        // The first dot is a few bytes in: a plain loop finds it sooner than `memchr` would.
        let Some(dot) = path.iter().position(|&byte| byte == b'.') else {
            return self.put_plain(path, leaf);
        };
        let (group, field) = (&path[..dot], &path[dot + 1..]);
        match group {
            b"members" => self.put_member(field, leaf),
            b"round" => self.put_round(field, leaf),
            b"gps" => self.put_gps(field, leaf),
            b"flags" => self.put_flag(field, leaf),
            b"income" => self.put_income(field, leaf),
            b"dwelling" => self.put_dwelling(field, leaf),
            b"causes_of_poverty" => self.put_cause(field, leaf),
            b"void" => self.put_void(field, leaf),
            _ => None,
        }
    }

    /// A path of one segment.
    fn put_plain(&mut self, path: &[u8], leaf: LeafRef<'_>) -> Option<()> {
        match path {
            b"id" => self.id = Some(named(leaf)?),
            b"commune_code" => self.commune_code = Some(string(leaf)?),
            b"village" => self.village = Some(string(leaf)?),
            b"address" => self.address = Some(string(leaf)?),
            b"head_member_id" => self.head_member_id = optional(leaf, named)?,
            b"support_needs" => self.support_needs = list(leaf, string)?,
            // Optional groups as a null leaf: only before any of their fields, which sort
            // after it.
            b"gps" => {
                null(leaf)?;
                self.gps.null()?;
            }
            b"void" => {
                null(leaf)?;
                self.void.null()?;
            }
            _ => return None,
        }
        Some(())
    }

    fn put_round(&mut self, field: &[u8], leaf: LeafRef<'_>) -> Option<()> {
        match field {
            b"year" => self.year = Some(unsigned(leaf)?),
            b"kind" => self.kind = Some(named(leaf)?),
            _ => return None,
        }
        Some(())
    }

    fn put_gps(&mut self, field: &[u8], leaf: LeafRef<'_>) -> Option<()> {
        match field {
            b"lat" => self.gps.fields()?.0 = Some(float(leaf)?),
            b"lon" => self.gps.fields()?.1 = Some(float(leaf)?),
            _ => return None,
        }
        Some(())
    }

    fn put_flag(&mut self, field: &[u8], leaf: LeafRef<'_>) -> Option<()> {
        let flags = &mut self.flags;
        let flag = match field {
            b"revolutionary_contributor" => &mut flags.revolutionary_contributor,
            b"social_protection_beneficiary" => &mut flags.social_protection_beneficiary,
            b"no_working_capacity" => &mut flags.no_working_capacity,
            b"farming_forestry_fishery_salt" => &mut flags.farming_forestry_fishery_salt,
            _ => return None,
        };
        *flag = boolean(leaf)?;
        Some(())
    }

    fn put_income(&mut self, field: &[u8], leaf: LeafRef<'_>) -> Option<()> {
        if let Some(question) = field.strip_prefix(b"b1_answers.") {
            if question.is_empty() || question.contains(&b'.') {
                return None;
            }
            // The one part of a path matched against no name: it must be text of its own.
            let question = std::str::from_utf8(question).ok()?;
            self.income
                .b1_answers
                .insert(question.to_owned(), string(leaf)?);
            return Some(());
        }
        match field {
            b"estimated_per_person_vnd" => {
                self.income.estimated_per_person_vnd = optional(leaf, unsigned)?
            }
            _ => return None,
        }
        Some(())
    }

    fn put_dwelling(&mut self, field: &[u8], leaf: LeafRef<'_>) -> Option<()> {
        let dwelling = &mut self.dwelling;
        match field {
            b"durability" => dwelling.durability = optional(leaf, named)?,
            b"floor_area_m2" => dwelling.floor_area_m2 = optional(leaf, unsigned)?,
            b"water_source" => dwelling.water_source = optional(leaf, named)?,
            b"latrine" => dwelling.latrine = optional(leaf, named)?,
            b"internet_use" => dwelling.internet_use = optional(leaf, boolean)?,
            b"information_devices" => dwelling.information_devices = list(leaf, named)?,
            b"waste_handling" => dwelling.waste_handling = optional(leaf, named)?,
            b"information_devices_asked" => dwelling.information_devices_asked = boolean(leaf)?,
            b"internet_access" => dwelling.internet_access = optional(leaf, boolean)?,
            b"digital_services_use" => dwelling.digital_services_use = optional(leaf, boolean)?,
            _ => return None,
        }
        Some(())
    }

    fn put_cause(&mut self, field: &[u8], leaf: LeafRef<'_>) -> Option<()> {
        let causes = &mut self.causes_of_poverty;
        let cause = match field {
            b"other" => {
                causes.other = optional(leaf, string)?;
                return Some(());
            }
            b"no_production_land" => &mut causes.no_production_land,
            b"no_capital" => &mut causes.no_capital,
            b"no_labour" => &mut causes.no_labour,
            b"no_tools" => &mut causes.no_tools,
            b"no_know_how" => &mut causes.no_know_how,
            b"no_skills" => &mut causes.no_skills,
            b"illness_or_accident" => &mut causes.illness_or_accident,
            _ => return None,
        };
        *cause = boolean(leaf)?;
        Some(())
    }

    fn put_void(&mut self, field: &[u8], leaf: LeafRef<'_>) -> Option<()> {
        match field {
            b"reason" => self.void.fields()?.0 = Some(named(leaf)?),
            b"note" => self.void.fields()?.1 = Some(string(leaf)?),
            _ => return None,
        }
        Some(())
    }

    /// One of a member's paths, after `members.`: its id, a dot, its field.
    fn put_member(&mut self, rest: &'a [u8], leaf: LeafRef<'_>) -> Option<()> {
        let key = rest.get(..MEMBER_KEY_BYTES)?;
        let field = rest[MEMBER_KEY_BYTES..].strip_prefix(b".")?;
        match &self.member {
            Some((current, _)) if *current == key => {}
            // A member's paths come together, members in the order of their keys.
            Some((current, _)) if *current > key => return None,
            _ => {
                self.finish_member()?;
                self.member = Some((key, MemberParts::default()));
            }
        }
        let (_, member) = self.member.as_mut()?;
        match field {
            b"full_name" => member.full_name = Some(string(leaf)?),
            b"sex" => member.sex = Some(named(leaf)?),
            b"date_of_birth" => member.date_of_birth = Some(text(leaf)?.parse().ok()?),
            b"personal_id" => member.personal_id = optional(leaf, string)?,
            b"relationship" => member.relationship = Some(named(leaf)?),
            b"ethnicity" => member.ethnicity = optional(leaf, string)?,
            b"in_school" => member.in_school = optional(leaf, boolean)?,
            b"qualification" => member.qualification = optional(leaf, named)?,
            b"employment" => member.employment = optional(leaf, named)?,
            b"has_pension" => member.has_pension = optional(leaf, boolean)?,
            b"health_insurance" => member.health_insurance = optional(leaf, boolean)?,
            b"disability_or_severe_illness" => {
                member.disability_or_severe_illness = optional(leaf, boolean)?
            }
            b"child_nutrition" => member.child_nutrition = optional(leaf, named)?,
            _ => return None,
        }
        Some(())
    }

    /// Adds the member being read, if any, to the list: only with every field it must have.
    fn finish_member(&mut self) -> Option<()> {
        let Some((key, parts)) = self.member.take() else {
            return Some(());
        };
        self.members.push(Member {
            id: named(LeafRef::Text(std::str::from_utf8(key).ok()?))?,
            full_name: parts.full_name?,
            sex: parts.sex?,
            date_of_birth: parts.date_of_birth?,
            personal_id: parts.personal_id,
            relationship: parts.relationship?,
            ethnicity: parts.ethnicity,
            in_school: parts.in_school,
            qualification: parts.qualification,
            employment: parts.employment,
            has_pension: parts.has_pension,
            health_insurance: parts.health_insurance,
            disability_or_severe_illness: parts.disability_or_severe_illness,
            child_nutrition: parts.child_nutrition,
        });
        Some(())
    }

    pub(super) fn finish(mut self) -> Option<Household> {
        self.finish_member()?;
        let gps = match self.gps {
            Group::Absent | Group::Null => None,
            Group::Fields((lat, lon)) => Some(GeoPoint {
                lat: lat?,
                lon: lon?,
            }),
        };
        let void = match self.void {
            Group::Absent | Group::Null => None,
            Group::Fields((reason, note)) => Some(VoidMark {
                reason: reason?,
                note: note.unwrap_or_default(),
            }),
        };
        Some(Household {
            id: self.id?,
            round: ReviewRound {
                year: self.year?,
                kind: self.kind?,
            },
            commune_code: self.commune_code?,
            village: self.village?,
            address: self.address?,
            gps,
            head_member_id: self.head_member_id,
            members: self.members,
            flags: self.flags,
            income: self.income,
            dwelling: self.dwelling,
            causes_of_poverty: self.causes_of_poverty,
            support_needs: self.support_needs,
            void,
        })
    }
}

fn text<'a>(leaf: LeafRef<'a>) -> Option<&'a str> {
    match leaf {
        LeafRef::Text(text) => Some(text),
        LeafRef::Value(FieldValue::Text(text)) => Some(text),
        LeafRef::Value(_) => None,
    }
}

fn string(leaf: LeafRef<'_>) -> Option<String> {
    text(leaf).map(str::to_owned)
}

fn null(leaf: LeafRef<'_>) -> Option<()> {
    matches!(leaf, LeafRef::Value(FieldValue::Null)).then_some(())
}

fn boolean(leaf: LeafRef<'_>) -> Option<bool> {
    match leaf {
        LeafRef::Value(FieldValue::Bool(value)) => Some(*value),
        _ => None,
    }
}

/// A non-negative integer that fits (serde reads no other number into an unsigned field).
fn unsigned<T: TryFrom<u64>>(leaf: LeafRef<'_>) -> Option<T> {
    match leaf {
        LeafRef::Value(FieldValue::Int(value)) => T::try_from(u64::try_from(*value).ok()?).ok(),
        _ => None,
    }
}

/// A number, as serde reads one into an `f64`: an integer converted.
fn float(leaf: LeafRef<'_>) -> Option<f64> {
    match leaf {
        LeafRef::Value(FieldValue::Float(value)) => Some(*value),
        LeafRef::Value(FieldValue::Int(value)) => Some(*value as f64),
        _ => None,
    }
}

/// A value read from its text by serde itself (an enum's variant by name, a UUID), so that
/// the names and forms accepted are exactly the tree's.
fn named<'a, T: Deserialize<'a>>(leaf: LeafRef<'a>) -> Option<T> {
    T::deserialize(BorrowedStrDeserializer::<ValueError>::new(text(leaf)?)).ok()
}

/// An optional field: `Some(None)` for a null leaf.
fn optional<'a, T>(leaf: LeafRef<'a>, read: fn(LeafRef<'a>) -> Option<T>) -> Option<Option<T>> {
    match leaf {
        LeafRef::Value(FieldValue::Null) => Some(None),
        leaf => read(leaf).map(Some),
    }
}

/// A list of plain items, each read by `read`.
fn list<'a, T>(leaf: LeafRef<'a>, read: fn(LeafRef<'a>) -> Option<T>) -> Option<Vec<T>> {
    match leaf {
        LeafRef::Value(FieldValue::List(items)) => {
            items.iter().map(|item| read(LeafRef::of(item))).collect()
        }
        _ => None,
    }
}
