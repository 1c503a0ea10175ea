//! A household seen as a flat map of field paths to scalar values.
//!
//! Sync, merge and history all work on this view: a mutation is a list of
//! [`FieldChange`]s, and two devices' edits merge field by field. Paths are dot-separated
//! (`address`, `dwelling.floor_area_m2`, `income.b1_answers.Q3`). Members are keyed by their
//! id (`members.<uuid>.full_name`), never by position, so members added on two devices both
//! survive. A member exists while any of its leaves does; removing a member removes its leaves.
//!
//! Both conversions go through serde, so they follow the struct. [`flatten`] goes through
//! `serde_json::Value`; [`unflatten`] deserializes the record straight from a tree of the
//! paths (`tree`), which reads every map as going through JSON did (`through_json`, kept in
//! the tests as the oracle). A map as the codec writes a household's is read without the tree
//! (`direct`), field by field, and the tree reads any other: a field added to [`Household`]
//! is added there too (the compiler asks for it).

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use crate::household::Household;

mod direct;
mod encoded;
#[cfg(test)]
mod through_json;
mod tree;
pub use encoded::EncodedFields;
pub(crate) use encoded::{checked_value_len, decode_entries, read_household_as_written};

/// Collections of objects that are keyed by their `id` field in paths.
const KEYED_LISTS: &[&str] = &["members"];

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 200;
/// Longest text value accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 2_000;
/// Most items in a list value.
pub const MAX_LIST_ITEMS: usize = 64;

/// Lists nest at most this deep in a decoded value; deeper is a decode error. A record's lists
/// hold plain values (`check_leaf`), but a rejected mutation is kept with whatever it carried, so
/// decoding allows a few levels. Decoding recurses once per level: without a bound, a message
/// of a few hundred kilobytes of nested lists would overflow the stack of whoever reads it.
pub const MAX_LIST_DEPTH: usize = 8;

/// A leaf value of the record. Its `Deserialize` is written out (below) to bound the nesting
/// of lists; the variants and their order are the wire format.
#[derive(Clone, Debug, Serialize)]
pub enum FieldValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<FieldValue>),
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FieldValue, D::Error> {
        ValueSeed { depth: 0 }.deserialize(deserializer)
    }
}

/// The variants of [`FieldValue`], as serde names them.
const VALUE_VARIANTS: &[&str] = &["Null", "Bool", "Int", "Float", "Text", "List"];

#[derive(Deserialize)]
#[serde(variant_identifier)]
enum ValueKind {
    Null,
    Bool,
    Int,
    Float,
    Text,
    List,
}

/// Reads a value inside `depth` lists.
#[derive(Clone, Copy)]
struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = FieldValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<FieldValue, D::Error> {
        deserializer.deserialize_enum("FieldValue", VALUE_VARIANTS, self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = FieldValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field value")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<FieldValue, A::Error> {
        let (kind, variant) = data.variant::<ValueKind>()?;
        match kind {
            ValueKind::Null => variant.unit_variant().map(|()| FieldValue::Null),
            ValueKind::Bool => variant.newtype_variant().map(FieldValue::Bool),
            ValueKind::Int => variant.newtype_variant().map(FieldValue::Int),
            ValueKind::Float => variant.newtype_variant().map(FieldValue::Float),
            ValueKind::Text => variant.newtype_variant().map(FieldValue::Text),
            ValueKind::List if self.depth >= MAX_LIST_DEPTH => Err(de::Error::custom(format!(
                "danh sách lồng quá {MAX_LIST_DEPTH} tầng / lists nest more than {MAX_LIST_DEPTH} deep"
            ))),
            ValueKind::List => variant
                .newtype_variant_seed(ListSeed {
                    depth: self.depth + 1,
                })
                .map(FieldValue::List),
        }
    }
}

/// Reads a list at `depth`, its items as they arrive (as `codec::bounded_vec`: the length
/// prefix is not trusted for the allocation).
struct ListSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Vec<FieldValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Vec<FieldValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of field values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(item) = seq.next_element_seed(ValueSeed { depth: self.depth })? {
            items.push(item);
        }
        Ok(items)
    }
}

impl PartialEq for FieldValue {
    fn eq(&self, other: &FieldValue) -> bool {
        match (self, other) {
            (FieldValue::Null, FieldValue::Null) => true,
            (FieldValue::Bool(a), FieldValue::Bool(b)) => a == b,
            (FieldValue::Int(a), FieldValue::Int(b)) => a == b,
            // Bitwise, so that equality is reflexive and merges are deterministic.
            (FieldValue::Float(a), FieldValue::Float(b)) => a.to_bits() == b.to_bits(),
            (FieldValue::Text(a), FieldValue::Text(b)) => a == b,
            (FieldValue::List(a), FieldValue::List(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for FieldValue {}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Null => write!(f, "(trống)"),
            FieldValue::Bool(b) => write!(f, "{}", if *b { "có/yes" } else { "không/no" }),
            FieldValue::Int(n) => write!(f, "{n}"),
            FieldValue::Float(x) => write!(f, "{x}"),
            FieldValue::Text(s) => write!(f, "{s}"),
            FieldValue::List(items) => {
                let shown: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", shown.join(", "))
            }
        }
    }
}

/// The whole record, path to leaf value, in path order.
pub type FieldMap = BTreeMap<String, FieldValue>;

/// One field set to a new value, or removed (`None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    pub value: Option<FieldValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("trường '{path}' không hợp lệ / field '{path}' is invalid: {problem}")]
    Invalid { path: String, problem: String },
    #[error("bản ghi không đúng cấu trúc / the record does not fit the survey form: {0}")]
    Shape(String),
}

/// Flattens a household into its field map.
pub fn flatten(household: &Household) -> FieldMap {
    let value = serde_json::to_value(household).unwrap_or(Value::Null);
    let mut out = FieldMap::new();
    flatten_into("", &value, &mut out);
    out
}

fn flatten_into(prefix: &str, value: &Value, out: &mut FieldMap) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = join(prefix, key);
                if KEYED_LISTS.contains(&path.as_str()) {
                    if let Value::Array(items) = child {
                        for item in items {
                            flatten_keyed_item(&path, item, out);
                        }
                        continue;
                    }
                }
                flatten_into(&path, child, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), leaf(other));
        }
    }
}

fn flatten_keyed_item(list_path: &str, item: &Value, out: &mut FieldMap) {
    let Value::Object(fields) = item else { return };
    let Some(Value::String(id)) = fields.get("id") else {
        return;
    };
    let item_path = join(list_path, id);
    for (key, child) in fields {
        if key != "id" {
            flatten_into(&join(&item_path, key), child, out);
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn leaf(value: &Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::Null,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::Text(s.clone()),
        Value::Array(items) => FieldValue::List(items.iter().map(leaf).collect()),
        // Objects are never leaves: flatten_into descends into them.
        Value::Object(_) => FieldValue::Null,
    }
}

/// Rebuilds a household from its field map; a map that does not fit the form is an error
/// naming the first field that does not fit.
pub fn unflatten(fields: &FieldMap) -> Result<Household, FieldError> {
    tree::unflatten(fields)
}

/// [`unflatten`] for a map given as its entries in strictly ascending path order (as a map
/// iterates), borrowed from wherever they lie, whose every leaf passed [`check_leaf`] already.
pub(crate) fn unflatten_checked_entries<'a>(
    entries: impl Iterator<Item = (&'a str, LeafRef<'a>)> + Clone,
) -> Result<Household, FieldError> {
    tree::unflatten_entries_with(entries, tree::Leaves::Checked)
}

/// A leaf as a pushed record is read: a text borrowed from the map's bytes, any other value
/// owned. A record's values are mostly texts (names, answers, dates, ids), and most are read
/// into something other than a `String`: allocating each only to drop it was a twentieth of
/// reading a record.
#[derive(Debug)]
pub(crate) enum Leaf<'a> {
    Text(&'a str),
    Value(FieldValue),
}

impl<'a> Leaf<'a> {
    pub(crate) fn into_owned(self) -> FieldValue {
        match self {
            Leaf::Text(text) => FieldValue::Text(text.to_owned()),
            Leaf::Value(value) => value,
        }
    }

    pub(crate) fn as_ref(&self) -> LeafRef<'_> {
        match self {
            Leaf::Text(text) => LeafRef::Text(text),
            Leaf::Value(value) => LeafRef::of(value),
        }
    }
}

/// A leaf borrowed, however it is held: a text as its `str`, any other value as itself.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LeafRef<'a> {
    Text(&'a str),
    Value(&'a FieldValue),
}

impl<'a> LeafRef<'a> {
    pub(crate) fn of(value: &'a FieldValue) -> LeafRef<'a> {
        match value {
            FieldValue::Text(text) => LeafRef::Text(text),
            value => LeafRef::Value(value),
        }
    }
}

/// Whether a leaf at `path` passes [`check_leaf_ref`], without making its error.
pub(crate) fn leaf_within_limits(path: &[u8], leaf: LeafRef<'_>) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_BYTES
        && match leaf {
            LeafRef::Text(text) => text.len() <= MAX_TEXT_BYTES,
            LeafRef::Value(value) => check_value(value, 0).is_ok(),
        }
}

/// [`check_leaf`] for a borrowed leaf: the same verdict, and the same error.
pub(crate) fn check_leaf_ref(path: &str, leaf: LeafRef<'_>) -> Result<(), FieldError> {
    match leaf {
        _ if leaf_within_limits(path.as_bytes(), leaf) => Ok(()),
        LeafRef::Value(value) => check_leaf(path, value),
        // Past a limit: the error as the owned value has it.
        LeafRef::Text(text) => check_leaf(path, &FieldValue::Text(text.to_owned())),
    }
}

/// Checks the size limits of one leaf.
pub fn check_leaf(path: &str, value: &FieldValue) -> Result<(), FieldError> {
    let invalid = |problem: String| FieldError::Invalid {
        path: path.chars().take(MAX_PATH_BYTES).collect(),
        problem,
    };
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(invalid(format!(
            "đường dẫn dài 1–{MAX_PATH_BYTES} byte / a path is 1 to {MAX_PATH_BYTES} bytes"
        )));
    }
    check_value(value, 0).map_err(invalid)
}

fn check_value(value: &FieldValue, depth: usize) -> Result<(), String> {
    match value {
        FieldValue::Text(s) if s.len() > MAX_TEXT_BYTES => Err(format!(
            "văn bản dài {} byte, tối đa {MAX_TEXT_BYTES} / text of {} bytes, at most {MAX_TEXT_BYTES}",
            s.len(),
            s.len()
        )),
        FieldValue::Float(x) if !x.is_finite() => {
            Err("số không hữu hạn / a number must be finite".to_string())
        }
        FieldValue::List(items) => {
            if depth > 0 {
                return Err("danh sách lồng nhau / lists do not nest".to_string());
            }
            if items.len() > MAX_LIST_ITEMS {
                return Err(format!(
                    "danh sách có {} mục, tối đa {MAX_LIST_ITEMS} / {} items, at most {MAX_LIST_ITEMS}",
                    items.len(),
                    items.len()
                ));
            }
            items.iter().try_for_each(|item| check_value(item, depth + 1))
        }
        _ => Ok(()),
    }
}

/// The changes that turn `old` into `new`, in path order.
pub fn diff(old: &FieldMap, new: &FieldMap) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    for (path, value) in new {
        if old.get(path) != Some(value) {
            changes.push(FieldChange {
                path: path.clone(),
                value: Some(value.clone()),
            });
        }
    }
    for path in old.keys() {
        if !new.contains_key(path) {
            changes.push(FieldChange {
                path: path.clone(),
                value: None,
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

/// Applies changes in order.
pub fn apply(fields: &mut FieldMap, changes: &[FieldChange]) {
    // A record made from nothing (a create) by changes in path order, as `diff` writes them:
    // each path once and removals removing nothing, so the map is built in one pass where
    // inserting one by one searches the tree every time.
    if fields.is_empty() && changes.windows(2).all(|pair| pair[0].path < pair[1].path) {
        *fields = changes
            .iter()
            .filter_map(|change| {
                let value = change.value.as_ref()?;
                Some((change.path.clone(), value.clone()))
            })
            .collect();
        return;
    }
    for change in changes {
        match &change.value {
            Some(value) => fields.insert(change.path.clone(), value.clone()),
            None => fields.remove(&change.path),
        };
    }
}

/// The member id named by a `members.<id>.…` path, if it is one.
pub fn member_of_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("members.")?;
    Some(rest.split('.').next().unwrap_or(rest))
}

/// A filled-in sample household for unit tests of this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::household::*;
    use uuid::Uuid;

    pub(crate) fn sample() -> Household {
        let head = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        Household {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa),
            round: ReviewRound {
                year: 2025,
                kind: RoundKind::Periodic,
            },
            commune_code: "00004".into(),
            village: "Thôn Đông".into(),
            address: "Số 3, ngõ 12".into(),
            gps: Some(GeoPoint {
                lat: 21.0285,
                lon: 105.8542,
            }),
            head_member_id: Some(head),
            members: vec![Member {
                id: head,
                full_name: "Nguyễn Văn Ánh".into(),
                sex: Sex::Male,
                date_of_birth: Date::new(1980, 5, 2).expect("valid"),
                personal_id: Some("001080012345".into()),
                relationship: Relationship::Head,
                ethnicity: Some("Kinh".into()),
                in_school: Some(false),
                qualification: Some(Qualification::LowerSecondary),
                employment: Some(Employment::WageWithoutContract),
                has_pension: Some(false),
                health_insurance: Some(true),
                disability_or_severe_illness: Some(false),
                child_nutrition: None,
            }],
            flags: HouseholdFlags::default(),
            income: IncomeEvidence {
                estimated_per_person_vnd: Some(1_200_000),
                b1_answers: [("Q1".to_string(), "2".to_string())].into(),
            },
            dwelling: Dwelling {
                durability: Some(HouseDurability::LessDurable),
                floor_area_m2: Some(24),
                information_devices: vec![InformationDevice::Phone],
                ..Dwelling::default()
            },
            causes_of_poverty: PovertyCauses::default(),
            support_needs: vec!["vay vốn".into()],
            void: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;
    use crate::household::*;
    use uuid::Uuid;

    #[test]
    fn a_borrowed_leaf_is_checked_as_its_owned_value_is() {
        let long_path = "a".repeat(MAX_PATH_BYTES + 1);
        let long_text = "ư".repeat(MAX_TEXT_BYTES / 2 + 1);
        let paths = ["", "a", "address", &long_path[..MAX_PATH_BYTES], &long_path];
        let texts = [
            "",
            "Lò Văn Páo",
            &long_text[..MAX_TEXT_BYTES],
            &long_text[..MAX_TEXT_BYTES + 2],
        ];
        for path in paths {
            for text in texts {
                let owned = FieldValue::Text(text.to_owned());
                assert_eq!(
                    check_leaf_ref(path, LeafRef::Text(text)),
                    check_leaf(path, &owned),
                    "{} bytes at a path of {}",
                    text.len(),
                    path.len()
                );
                assert_eq!(
                    check_leaf_ref(path, LeafRef::of(&owned)),
                    check_leaf(path, &owned)
                );
                assert_eq!(Leaf::Text(text).into_owned(), owned);
            }
            for value in [
                FieldValue::Null,
                FieldValue::Float(f64::NAN),
                FieldValue::Int(3),
            ] {
                assert_eq!(
                    check_leaf_ref(path, LeafRef::of(&value)),
                    check_leaf(path, &value)
                );
            }
        }
    }

    #[test]
    fn flatten_round_trips_and_keys_members_by_id() {
        let household = sample();
        let fields = flatten(&household);
        let name_path = format!("members.{}.full_name", household.members[0].id);
        assert_eq!(
            fields.get(&name_path),
            Some(&FieldValue::Text("Nguyễn Văn Ánh".into()))
        );
        assert_eq!(
            fields.get("income.b1_answers.Q1"),
            Some(&FieldValue::Text("2".into()))
        );
        assert_eq!(unflatten(&fields), Ok(household));
    }

    #[test]
    fn diff_then_apply_reaches_the_new_record() {
        let old = sample();
        let mut new = old.clone();
        new.address = "Số 5".into();
        new.gps = None;
        new.members.push(Member {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002),
            full_name: "Trần Thị Bình".into(),
            relationship: Relationship::Spouse,
            sex: Sex::Female,
            ..old.members[0].clone()
        });
        let (old_fields, new_fields) = (flatten(&old), flatten(&new));
        let mut patched = old_fields.clone();
        apply(&mut patched, &diff(&old_fields, &new_fields));
        assert_eq!(patched, new_fields);
        assert_eq!(unflatten(&patched), Ok(new));
    }

    #[test]
    fn values_decode_from_both_codecs_and_deep_lists_are_refused_not_a_stack_overflow() {
        let value = FieldValue::List(vec![
            FieldValue::Null,
            FieldValue::Bool(true),
            FieldValue::Int(-3),
            FieldValue::Float(0.5),
            FieldValue::Text("Hộ cận nghèo".into()),
            FieldValue::List(vec![FieldValue::Int(1)]),
        ]);
        let bytes = crate::codec::encode(&value);
        assert_eq!(crate::codec::decode(&bytes, usize::MAX), Ok(value.clone()));
        let json = serde_json::to_string(&value).expect("to JSON");
        assert_eq!(
            serde_json::from_str::<FieldValue>(&json).expect("from JSON"),
            value
        );
        // Lists in lists, `MAX_LIST_DEPTH` deep and then far deeper: variant 5 (List) and one
        // item, over and over, around a Null.
        let nested = |depth: usize| {
            let mut bytes = crate::sync::PROTOCOL_VERSION.to_le_bytes().to_vec();
            for _ in 0..depth {
                bytes.extend([5u8, 1]);
            }
            bytes.push(0);
            crate::codec::decode::<FieldValue>(&bytes, usize::MAX)
        };
        assert!(nested(MAX_LIST_DEPTH).is_ok());
        for depth in [MAX_LIST_DEPTH + 1, 400_000] {
            assert!(
                matches!(nested(depth), Err(crate::codec::CodecError::Malformed(m)) if m.contains("nest")),
                "{depth}"
            );
        }
    }

    #[test]
    fn unknown_and_misplaced_fields_are_errors() {
        let mut fields = flatten(&sample());
        fields.insert("colour".into(), FieldValue::Text("red".into()));
        assert!(matches!(unflatten(&fields), Err(FieldError::Shape(m)) if m.contains("colour")));
        let mut fields = flatten(&sample());
        fields.insert("address.street".into(), FieldValue::Text("x".into()));
        assert!(unflatten(&fields).is_err());
    }
}
