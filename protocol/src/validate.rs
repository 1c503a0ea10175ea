//! The schema rules a household must pass before the registry accepts it.
//!
//! Each problem names where it is (the household or the member, by name) and what to do, in
//! Vietnamese with English beside, because the enumerator reads it on the device.

use std::collections::HashSet;

use crate::areas::{AreaError, AreaRegistry, Village};
use crate::fields::{self, FieldMap};
use crate::household::{Date, Household, Relationship};

/// Most members in one household.
pub const MAX_MEMBERS: usize = 60;
/// Most fields in one household record.
pub const MAX_FIELDS: usize = 4_000;

/// One problem with a household.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Problems joined into one reason for a rejection.
pub fn reason(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.0.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rebuilds and checks a record given as fields.
pub fn household_from_fields(fields: &FieldMap, today: Date) -> Result<Household, Vec<Problem>> {
    if fields.len() > MAX_FIELDS {
        return Err(vec![Problem(format!(
            "bản ghi có {} trường, tối đa {MAX_FIELDS} / the record has {} fields, at most {MAX_FIELDS}",
            fields.len(),
            fields.len()
        ))]);
    }
    let household = fields::unflatten(fields).map_err(|e| vec![Problem(e.to_string())])?;
    check(&household, today)?;
    Ok(household)
}

/// [`household_from_fields`], and the commune must be in the area registry's code set.
pub fn household_from_fields_with_areas(
    fields: &FieldMap,
    today: Date,
    areas: &AreaRegistry,
) -> Result<Household, Vec<Problem>> {
    if fields.len() > MAX_FIELDS {
        return household_from_fields(fields, today);
    }
    let household = fields::unflatten(fields).map_err(|e| vec![Problem(e.to_string())])?;
    check_with_areas(&household, today, areas)?;
    Ok(household)
}

/// [`check`], and the household's village must belong to a commune of the area registry: an
/// unknown commune code is a problem that names the code.
pub fn check_with_areas(
    household: &Household,
    today: Date,
    areas: &AreaRegistry,
) -> Result<(), Vec<Problem>> {
    let mut problems = check(household, today).err().unwrap_or_default();
    match Village::of(areas, household) {
        // A malformed code and an empty village name are `check`'s problems already.
        Ok(_) | Err(AreaError::MalformedCommuneCode { .. } | AreaError::EmptyVillageName) => {}
        Err(error) => problems.push(Problem(error.to_string())),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks a household against the survey's rules as of `today`. The commune code's shape is
/// checked here; [`check_with_areas`] also looks it up in the code set.
pub fn check(household: &Household, today: Date) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |text: String| problems.push(Problem(text));

    if household.commune_code.len() != 5
        || !household.commune_code.bytes().all(|b| b.is_ascii_digit())
    {
        problem(format!(
            "mã xã '{}' phải có 5 chữ số / the commune code '{}' must be 5 digits (GSO code)",
            household.commune_code, household.commune_code
        ));
    }
    if household.village.trim().is_empty() {
        problem("thiếu thôn / the village is missing".to_string());
    }
    if !(2020..=2100).contains(&household.round.year) {
        problem(format!(
            "năm rà soát {} không hợp lệ / review year {} is out of range",
            household.round.year, household.round.year
        ));
    }
    if household.members.is_empty() {
        problem(
            "hộ chưa có thành viên nào / the household has no members: add at least the head"
                .to_string(),
        );
    }
    if household.members.len() > MAX_MEMBERS {
        problem(format!(
            "hộ có {} thành viên, tối đa {MAX_MEMBERS} / {} members, at most {MAX_MEMBERS}",
            household.members.len(),
            household.members.len()
        ));
    }
    match household.head() {
        None => problem(
            "thiếu chủ hộ / the head of household is missing: choose which member heads it"
                .to_string(),
        ),
        Some(head) if head.relationship != Relationship::Head => problem(format!(
            "chủ hộ {} phải có quan hệ 'chủ hộ' / the head {} must have relationship 'head'",
            head.full_name, head.full_name
        )),
        Some(_) => {}
    }
    let mut seen_ids = HashSet::with_capacity(household.members.len());
    for member in &household.members {
        let name = if member.full_name.trim().is_empty() {
            "(chưa có tên / no name)"
        } else {
            &member.full_name
        };
        if member.full_name.trim().is_empty() {
            problem("một thành viên chưa có họ tên / a member has no full name".to_string());
        }
        if !seen_ids.insert(member.id) {
            problem(format!(
                "thành viên {name} bị trùng mã / member {name} appears twice"
            ));
        }
        if member.date_of_birth > today {
            problem(format!(
                "thành viên {name}: ngày sinh {} ở tương lai / member {name}: date of birth {} is in the future",
                member.date_of_birth, member.date_of_birth
            ));
        }
        if member.date_of_birth.year < 1890 {
            problem(format!(
                "thành viên {name}: ngày sinh {} quá xa / member {name}: date of birth {} is implausible",
                member.date_of_birth, member.date_of_birth
            ));
        }
        if let Some(id) = &member.personal_id {
            if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
                problem(format!(
                    "thành viên {name}: số CCCD phải có 12 chữ số / member {name}: the personal ID number must be 12 digits"
                ));
            }
        }
    }
    for key in household.income.b1_answers.keys() {
        if key.is_empty() || key.contains('.') {
            problem(format!(
                "mã câu hỏi B1 '{key}' không hợp lệ / B1 question code '{key}' is invalid"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::flatten;

    fn today() -> Date {
        Date::new(2025, 10, 1).expect("valid")
    }

    #[test]
    fn a_sample_household_passes() {
        let household = crate::fields::tests_support::sample();
        assert_eq!(
            household_from_fields(&flatten(&household), today()).map(|_| ()),
            Ok(())
        );
    }

    #[test]
    fn a_member_born_in_the_future_and_a_missing_head_are_named() {
        let mut household = crate::fields::tests_support::sample();
        household.members[0].date_of_birth = Date::new(2030, 1, 1).expect("valid");
        household.head_member_id = None;
        let problems = check(&household, today()).expect_err("invalid");
        let text = reason(&problems);
        assert!(
            text.contains("Nguyễn Văn Ánh: date of birth 2030-01-01 is in the future"),
            "{text}"
        );
        assert!(text.contains("head of household is missing"), "{text}");
    }

    #[test]
    fn an_unknown_commune_is_named_once() {
        let areas = AreaRegistry::embedded().expect("areas load");
        let mut household = crate::fields::tests_support::sample();
        household.commune_code = "00004".into();
        assert_eq!(check_with_areas(&household, today(), &areas), Ok(()));
        household.commune_code = "99999".into();
        assert_eq!(check(&household, today()), Ok(()));
        let problems = check_with_areas(&household, today(), &areas).expect_err("unknown");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .0
                .contains("commune code '99999' is not in the 2025 code set"),
            "{}",
            problems[0]
        );
        let fields = flatten(&household);
        assert!(household_from_fields_with_areas(&fields, today(), &areas).is_err());
        household.commune_code = "123".into();
        let problems = check_with_areas(&household, today(), &areas).expect_err("malformed");
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
