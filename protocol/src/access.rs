//! Which households a user may see and change: a user's areas, as both ends understand them.
//!
//! The server decides access on every request and every household; it also sends the caller's
//! [`Scope`] with every pull page, so that a device whose user was reassigned drops what it
//! may no longer hold and pulls what it may now see (see `client-core::sync`).
//!
//! Villages have no national code (see [`crate::areas`]), so a village is its commune's code
//! and its name, and names are compared with [`same_village`]: case, surrounding spaces and
//! runs of spaces do not matter.

use serde::{Deserialize, Serialize};

use crate::areas::{AreaRegistry, Village};

/// The households a user may see and change, by where they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// An enumerator: the villages assigned to them.
    Villages(#[serde(deserialize_with = "crate::codec::bounded_vec")] Vec<Village>),
    /// A supervisor: the communes assigned to them (5-digit GSO codes).
    Communes(#[serde(deserialize_with = "crate::codec::bounded_vec")] Vec<String>),
    /// An administrator of one province (2-digit GSO code).
    Province(String),
    /// An administrator of the whole country.
    Everything,
}

impl Scope {
    /// Is a household recorded in `commune_code` and `village` inside the scope? A record
    /// without a commune or a village is inside only [`Scope::Everything`].
    pub fn contains(
        &self,
        commune_code: Option<&str>,
        village: Option<&str>,
        areas: &AreaRegistry,
    ) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Province(province) => commune_code
                .and_then(|code| areas.commune(code).ok())
                .is_some_and(|commune| commune.province_code == *province),
            Scope::Communes(communes) => {
                commune_code.is_some_and(|code| communes.iter().any(|c| c == code))
            }
            Scope::Villages(villages) => match (commune_code, village) {
                (Some(code), Some(name)) => villages
                    .iter()
                    .any(|v| v.commune_code == code && same_village(&v.name, name)),
                _ => false,
            },
        }
    }

    /// Does this scope hold every place `other` holds?
    pub fn includes(&self, other: &Scope, areas: &AreaRegistry) -> bool {
        let in_province = |province: &str, commune: &str| {
            areas
                .commune(commune)
                .is_ok_and(|c| c.province_code == province)
        };
        match (self, other) {
            (Scope::Everything, _) => true,
            (_, Scope::Everything) => false,
            (Scope::Province(mine), Scope::Province(theirs)) => mine == theirs,
            (Scope::Province(mine), Scope::Communes(communes)) => {
                communes.iter().all(|c| in_province(mine, c))
            }
            (Scope::Province(mine), Scope::Villages(villages)) => {
                villages.iter().all(|v| in_province(mine, &v.commune_code))
            }
            (Scope::Communes(_), Scope::Province(_)) | (Scope::Villages(_), Scope::Province(_)) => {
                false
            }
            (Scope::Communes(mine), Scope::Communes(theirs)) => {
                theirs.iter().all(|c| mine.contains(c))
            }
            (Scope::Communes(mine), Scope::Villages(villages)) => {
                villages.iter().all(|v| mine.contains(&v.commune_code))
            }
            (Scope::Villages(_), Scope::Communes(theirs)) => theirs.is_empty(),
            (Scope::Villages(mine), Scope::Villages(theirs)) => theirs.iter().all(|v| {
                mine.iter()
                    .any(|m| m.commune_code == v.commune_code && same_village(&m.name, &v.name))
            }),
        }
    }

    /// No place at all: a user with no areas assigned.
    pub fn is_empty(&self) -> bool {
        match self {
            Scope::Villages(villages) => villages.is_empty(),
            Scope::Communes(communes) => communes.is_empty(),
            Scope::Province(_) | Scope::Everything => false,
        }
    }
}

/// The form a village name is compared in: trimmed, runs of whitespace made one space,
/// lower case.
pub fn village_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Do two village names name the same village?
pub fn same_village(a: &str, b: &str) -> bool {
    village_key(a) == village_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn village(commune: &str, name: &str) -> Village {
        Village {
            commune_code: commune.to_string(),
            name: name.to_string(),
        }
    }

    #[test]
    fn each_kind_of_scope_holds_its_places() {
        let areas = AreaRegistry::embedded().expect("embedded areas");
        let hanoi_ward = "00004";
        let province = areas.province_of(hanoi_ward).expect("known").code.clone();
        let other_province = areas
            .provinces()
            .find(|p| p.code != province)
            .expect("34 provinces")
            .code
            .clone();
        let elsewhere = areas
            .communes_of(&other_province)
            .next()
            .expect("communes")
            .code
            .clone();

        let enumerator = Scope::Villages(vec![village(hanoi_ward, "Thôn  Đông ")]);
        assert!(enumerator.contains(Some(hanoi_ward), Some("thôn đông"), &areas));
        assert!(!enumerator.contains(Some(hanoi_ward), Some("Thôn Tây"), &areas));
        assert!(!enumerator.contains(Some(&elsewhere), Some("Thôn Đông"), &areas));
        assert!(!enumerator.contains(None, Some("Thôn Đông"), &areas));

        let supervisor = Scope::Communes(vec![hanoi_ward.to_string()]);
        assert!(supervisor.contains(Some(hanoi_ward), Some("any"), &areas));
        assert!(!supervisor.contains(Some(&elsewhere), Some("any"), &areas));

        let admin = Scope::Province(province.clone());
        assert!(admin.contains(Some(hanoi_ward), None, &areas));
        assert!(!admin.contains(Some(&elsewhere), None, &areas));
        assert!(!admin.contains(Some("99999"), None, &areas));
        assert!(Scope::Everything.contains(None, None, &areas));

        assert!(Scope::Villages(vec![]).is_empty());
        assert!(!admin.is_empty());
    }

    #[test]
    fn inclusion_tells_a_grown_scope_from_a_shrunk_one() {
        let areas = AreaRegistry::embedded().expect("embedded areas");
        let province = areas.province_of("00004").expect("known").code.clone();
        let one = Scope::Villages(vec![village("00004", "Thôn Đông")]);
        let two = Scope::Villages(vec![
            village("00004", "THÔN ĐÔNG"),
            village("00004", "Thôn Tây"),
        ]);
        assert!(two.includes(&one, &areas));
        assert!(!one.includes(&two, &areas));
        let commune = Scope::Communes(vec!["00004".to_string()]);
        assert!(commune.includes(&two, &areas));
        assert!(!two.includes(&commune, &areas));
        assert!(two.includes(&Scope::Communes(vec![]), &areas));
        let admin = Scope::Province(province);
        assert!(admin.includes(&commune, &areas));
        assert!(!commune.includes(&admin, &areas));
        assert!(Scope::Everything.includes(&admin, &areas));
        assert!(!admin.includes(&Scope::Everything, &areas));
    }
}
