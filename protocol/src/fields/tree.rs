//! [`super::unflatten`] without `serde_json::Value`: the paths are split into a tree that
//! borrows them, and the record deserializes straight from the tree.
//!
//! It reads a field map exactly as going through JSON did (`super::through_json`, the old way,
//! is kept in the tests to hold this one to it): the same tree, the same errors for paths
//! that clash, members keyed by id turned into a list with their ids put back, and every leaf
//! handed to serde as `serde_json::Value` hands it (non-negative integers as unsigned, texts
//! as strings, lists as sequences, `Null` as unit or `None`). Checking a pushed record was a
//! tenth of the server's work in a first push, most of it building and dropping JSON values.

use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer};
use serde::de::{
    self, Deserialize, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};
use serde::forward_to_deserialize_any;

use super::{check_leaf_ref, FieldError, FieldMap, FieldValue, LeafRef, KEYED_LISTS};
use crate::household::Household;

/// The paths of a field map as a tree of their segments. The nodes live in an arena (the root
/// first), so that the node a path was put in can be kept for the next: paths come in order,
/// and most are a sibling of the one before.
struct Tree<'a> {
    nodes: Vec<Children<'a>>,
}

/// A node's children by segment, in segment order (as a map of them iterates). A sorted list
/// rather than a map: paths come in order, so a segment nearly always goes after the ones
/// before, and building a map of the ~90 paths of a household was half of `unflatten`.
#[derive(Default)]
struct Children<'a>(Vec<(&'a str, Child<'a>)>);

/// Nodes a household's tree is expected to have: the record, its groups, and its members.
const NODES_EXPECTED: usize = 16;
/// Children a node is expected to have at most.
const CHILDREN_EXPECTED: usize = 24;

impl<'a> Children<'a> {
    fn sized() -> Children<'a> {
        Children(Vec::with_capacity(CHILDREN_EXPECTED))
    }

    /// Where `part` is, or where it goes.
    fn find(&self, part: &str) -> Result<usize, usize> {
        match self.0.last() {
            None => Err(0),
            Some((last, _)) if *last < part => Err(self.0.len()),
            Some(_) => self.0.binary_search_by(|(key, _)| (*key).cmp(part)),
        }
    }

    fn get(&self, part: &str) -> Option<&Child<'a>> {
        self.find(part).ok().map(|at| &self.0[at].1)
    }

    /// Puts `child` at `part`, unless something is there already: then `false`.
    fn insert_new(&mut self, part: &'a str, child: Child<'a>) -> bool {
        match self.find(part) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, (part, child));
                true
            }
        }
    }

    fn iter(&self) -> ChildrenIter<'_, 'a> {
        self.0.iter()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

type ChildrenIter<'t, 'a> = std::slice::Iter<'t, (&'a str, Child<'a>)>;

#[derive(Clone, Copy)]
enum Child<'a> {
    Leaf(LeafRef<'a>),
    /// A node, by its place in the arena.
    Node(usize),
}

pub(super) fn unflatten(fields: &FieldMap) -> Result<Household, FieldError> {
    unflatten_entries_with(
        fields
            .iter()
            .map(|(path, value)| (path.as_str(), LeafRef::of(value))),
        Leaves::ToCheck,
    )
}

/// Whether the leaves of the entries given to [`unflatten_entries_with`] were checked
/// ([`super::check_leaf`]) already.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Leaves {
    ToCheck,
    Checked,
}

/// [`unflatten`] for a map given as its entries in ascending path order, with no path twice,
/// checking each leaf only if `leaves` says it was not.
///
/// A map as the codec writes a household's is read without the tree ([`super::direct`]);
/// the tree reads any other, and gives the error.
pub(super) fn unflatten_entries_with<'a>(
    fields: impl Iterator<Item = (&'a str, LeafRef<'a>)> + Clone,
    leaves: Leaves,
) -> Result<Household, FieldError> {
    let leaf_ok = |path: &str, leaf: LeafRef<'_>| {
        leaves == Leaves::Checked || check_leaf_ref(path, leaf).is_ok()
    };
    if let Some(household) = super::direct::read(fields.clone(), leaf_ok) {
        return Ok(household);
    }
    unflatten_through_tree(fields, leaves)
}

/// [`unflatten_entries_with`] through the tree: any map, and the error for one that is not a
/// household.
fn unflatten_through_tree<'a>(
    fields: impl Iterator<Item = (&'a str, LeafRef<'a>)>,
    leaves: Leaves,
) -> Result<Household, FieldError> {
    // Sized for a household, so that the lists are not grown entry by entry (that was an
    // eighth of `unflatten`): a few dozen nodes, none with more than a few dozen children.
    let mut nodes = Vec::with_capacity(NODES_EXPECTED);
    nodes.push(Children::sized());
    let mut tree = Tree { nodes };
    let mut parent = None;
    for (path, value) in fields {
        if leaves == Leaves::ToCheck {
            check_leaf_ref(path, value)?;
        }
        parent = Some(tree.insert(path, value, parent)?);
    }
    let household = Household::deserialize(Value::Node(Node {
        tree: &tree,
        children: &tree.nodes[0],
        root: true,
    }));
    household.map_err(|error| FieldError::Shape(error.0))
}

impl<'a> Tree<'a> {
    /// As `insert_path` through JSON: the same checks, in the same order, with the same
    /// errors. `parent` is the previous path's parent (its path and node): a sibling of that
    /// path starts there, since the segments before were checked and made nodes already.
    /// Returns this path's parent.
    fn insert(
        &mut self,
        path: &'a str,
        value: LeafRef<'a>,
        parent: Option<(&'a str, usize)>,
    ) -> Result<(&'a str, usize), FieldError> {
        let invalid = |problem: &str| FieldError::Invalid {
            path: path.to_string(),
            problem: problem.to_string(),
        };
        let sibling = parent.and_then(|(parent, node)| {
            let last = path.strip_prefix(parent)?.strip_prefix('.')?;
            (!parent.is_empty() && !last.contains('.')).then_some((node, last))
        });
        // Most paths are a sibling of the one before: their last segment goes straight in.
        if let Some((node, last)) = sibling {
            return self.insert_leaf(path, node, last, value);
        }
        let mut node = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                return self.insert_leaf(path, node, part, value);
            }
            if part.is_empty() {
                return Err(invalid(
                    "đường dẫn có đoạn rỗng / the path has an empty segment",
                ));
            }
            node = match self.nodes[node].get(part) {
                Some(Child::Node(child)) => *child,
                Some(Child::Leaf(_)) => {
                    return Err(invalid(
                        "nằm dưới một giá trị đơn / sits under a plain value",
                    ))
                }
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Children::sized());
                    self.nodes[node].insert_new(part, Child::Node(child));
                    child
                }
            };
        }
        // `split` yields at least one part, and the last one returns above.
        Err(invalid(
            "đường dẫn có đoạn rỗng / the path has an empty segment",
        ))
    }

    /// Puts `path`'s value at its last segment `part`, under `node`. Returns its parent, as
    /// [`Self::insert`] does.
    fn insert_leaf(
        &mut self,
        path: &'a str,
        node: usize,
        part: &'a str,
        value: LeafRef<'a>,
    ) -> Result<(&'a str, usize), FieldError> {
        let invalid = |problem: &str| FieldError::Invalid {
            path: path.to_string(),
            problem: problem.to_string(),
        };
        if part.is_empty() {
            return Err(invalid(
                "đường dẫn có đoạn rỗng / the path has an empty segment",
            ));
        }
        if !self.nodes[node].insert_new(part, Child::Leaf(value)) {
            return Err(invalid(
                "trùng với một nhóm trường / clashes with a group of fields",
            ));
        }
        let parent = path.get(..path.len() - part.len()).unwrap_or_default();
        Ok((parent.strip_suffix('.').unwrap_or(parent), node))
    }
}

/// What serde reports: a message, as `serde_json` words it.
#[derive(Debug)]
struct ShapeError(String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

impl de::Error for ShapeError {
    fn custom<T: fmt::Display>(message: T) -> ShapeError {
        ShapeError(message.to_string())
    }
}

/// A group of paths: a struct, a map, or at the root `members` keyed by id.
#[derive(Clone, Copy)]
struct Node<'t, 'a> {
    tree: &'t Tree<'a>,
    children: &'t Children<'a>,
    /// The record itself, where `members` is a keyed list.
    root: bool,
}

/// One member, keyed by `id` in its paths: its fields with the id put back.
#[derive(Clone, Copy)]
struct Member<'t, 'a> {
    id: &'a str,
    node: Node<'t, 'a>,
}

/// A value in the tree, as it deserializes.
#[derive(Clone, Copy)]
enum Value<'t, 'a> {
    Leaf(LeafRef<'a>),
    Node(Node<'t, 'a>),
    /// A keyed list's items, by id.
    Keyed(&'t Tree<'a>, &'t Children<'a>),
    Member(Member<'t, 'a>),
    /// A member's id, from its paths.
    Id(&'a str),
}

impl<'t, 'a> Value<'t, 'a> {
    fn of(tree: &'t Tree<'a>, child: &Child<'a>) -> Value<'t, 'a> {
        match *child {
            Child::Leaf(value) => Value::Leaf(value),
            Child::Node(index) => Value::Node(Node {
                tree,
                children: &tree.nodes[index],
                root: false,
            }),
        }
    }
}

/// A node's entries, for serde's map access. A member's node ends with its id: a field `id`
/// among its paths is not the member's, the id is the one in the paths (as JSON's unflatten
/// overwrote it).
struct Entries<'t, 'a> {
    node: Node<'t, 'a>,
    entries: ChildrenIter<'t, 'a>,
    /// The member's id, still to come.
    member_id: Option<&'a str>,
    value: Option<Value<'t, 'a>>,
}

impl<'t, 'a> Entries<'t, 'a> {
    fn of(node: Node<'t, 'a>, member_id: Option<&'a str>) -> Entries<'t, 'a> {
        Entries {
            node,
            entries: node.children.iter(),
            member_id,
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = ShapeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ShapeError> {
        let tree = self.node.tree;
        for (key, child) in self.entries.by_ref() {
            if self.member_id.is_some() && *key == "id" {
                continue;
            }
            self.value = Some(match child {
                Child::Node(index) if self.node.root && KEYED_LISTS.contains(key) => {
                    Value::Keyed(tree, &tree.nodes[*index])
                }
                child => Value::of(tree, child),
            });
            return seed
                .deserialize(BorrowedStrDeserializer::new(key))
                .map(Some);
        }
        let Some(id) = self.member_id.take() else {
            return Ok(None);
        };
        self.value = Some(Value::Id(id));
        seed.deserialize(BorrowedStrDeserializer::new("id"))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ShapeError> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(de::Error::custom("a value asked for before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() + usize::from(self.member_id.is_some()))
    }
}

/// A keyed list's items in id order (ids are UUIDv7 made on devices: creation order).
struct Items<'t, 'a> {
    tree: &'t Tree<'a>,
    items: ChildrenIter<'t, 'a>,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = ShapeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ShapeError> {
        let Some((id, child)) = self.items.next() else {
            return Ok(None);
        };
        let item = match *child {
            Child::Node(index) => Value::Member(Member {
                id,
                node: Node {
                    tree: self.tree,
                    children: &self.tree.nodes[index],
                    root: false,
                },
            }),
            leaf => Value::of(self.tree, &leaf),
        };
        seed.deserialize(item).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A list value's items.
struct ListItems<'a> {
    items: std::slice::Iter<'a, FieldValue>,
}

impl<'de> SeqAccess<'de> for ListItems<'de> {
    type Error = ShapeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ShapeError> {
        match self.items.next() {
            Some(item) => seed.deserialize(Value::Leaf(LeafRef::of(item))).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

impl<'de> de::Deserializer<'de> for Value<'_, 'de> {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self {
            Value::Node(node) => visitor.visit_map(Entries::of(node, None)),
            Value::Member(member) => visitor.visit_map(Entries::of(member.node, Some(member.id))),
            Value::Keyed(tree, items) => visitor.visit_seq(Items {
                tree,
                items: items.iter(),
            }),
            Value::Id(id) => visitor.visit_borrowed_str(id),
            Value::Leaf(LeafRef::Text(text)) => visitor.visit_borrowed_str(text),
            Value::Leaf(LeafRef::Value(leaf)) => match leaf {
                FieldValue::Null => visitor.visit_unit(),
                FieldValue::Bool(b) => visitor.visit_bool(*b),
                // As a JSON number holds it: non-negative integers are unsigned.
                FieldValue::Int(i) => match u64::try_from(*i) {
                    Ok(n) => visitor.visit_u64(n),
                    Err(_) => visitor.visit_i64(*i),
                },
                FieldValue::Float(x) => visitor.visit_f64(*x),
                FieldValue::Text(text) => visitor.visit_borrowed_str(text),
                FieldValue::List(items) => visitor.visit_seq(ListItems {
                    items: items.iter(),
                }),
            },
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self {
            Value::Leaf(LeafRef::Value(FieldValue::Null)) => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        match self {
            // A unit variant, as JSON writes it: its name.
            Value::Leaf(LeafRef::Text(text)) => visitor.visit_enum(text.into_deserializer()),
            Value::Leaf(LeafRef::Value(FieldValue::Text(text))) => {
                visitor.visit_enum(text.as_str().into_deserializer())
            }
            Value::Id(id) => visitor.visit_enum(id.into_deserializer()),
            // A variant with data, as JSON writes it: an object of one entry.
            Value::Node(node) if node.children.len() != 1 => Err(de::Error::invalid_value(
                Unexpected::Map,
                &"map with a single key",
            )),
            Value::Node(node) => {
                visitor.visit_enum(MapAccessDeserializer::new(Entries::of(node, None)))
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::super::through_json;
    use super::*;
    use crate::fields::flatten;
    use crate::fields::tests_support::sample;

    /// Both ways read `fields` alike: the same record, or errors of the same kind (the same
    /// error when it is about a path).
    ///
    /// Returns whether the map was read without the tree ([`super::super::direct`]); the tree
    /// is held to JSON on every map, whichever way `unflatten` took.
    fn agree(fields: &FieldMap, what: &str) -> bool {
        let through_json = through_json::unflatten(fields);
        for read in [
            &unflatten_through_tree(entries(fields), Leaves::ToCheck),
            &unflatten(fields),
        ] {
            match (read, &through_json) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
                (Err(FieldError::Shape(_)), Err(FieldError::Shape(_))) => {}
                (a, b) => assert_eq!(a, b, "{what}"),
            }
        }
        read_directly_as_the_tree_reads(fields, what)
    }

    fn entries(fields: &FieldMap) -> impl Iterator<Item = (&str, LeafRef<'_>)> + Clone {
        fields
            .iter()
            .map(|(path, value)| (path.as_str(), LeafRef::of(value)))
    }

    /// Where the direct reader reads `fields`, it reads what the tree reads. Returns whether
    /// it read them.
    fn read_directly_as_the_tree_reads(fields: &FieldMap, what: &str) -> bool {
        let read_directly = super::super::direct::read(entries(fields), |path, leaf| {
            check_leaf_ref(path, leaf).is_ok()
        });
        // A pushed record is read from its codec bytes in one pass: the same, wherever it reads.
        let in_one_pass = super::super::read_household_as_written(
            &crate::codec::encode(fields),
            usize::MAX,
            fields.len(),
        );
        assert_eq!(in_one_pass, read_directly, "{what}, read in one pass");
        if let Some(household) = &read_directly {
            let through_tree = unflatten_through_tree(entries(fields), Leaves::ToCheck);
            assert_eq!(
                Ok(household),
                through_tree.as_ref(),
                "{what}, read directly"
            );
        }
        read_directly.is_some()
    }

    fn values() -> Vec<FieldValue> {
        vec![
            FieldValue::Null,
            FieldValue::Bool(true),
            FieldValue::Int(-1),
            FieldValue::Int(5),
            FieldValue::Float(1.5),
            FieldValue::Float(21.0),
            FieldValue::Text("x".into()),
            FieldValue::Text("periodic".into()),
            FieldValue::Text("moved_away".into()),
            FieldValue::Text("2001-02-03".into()),
            FieldValue::Text("0190aaaa-0000-7000-8000-000000000001".into()),
            FieldValue::List(Vec::new()),
            FieldValue::List(vec![FieldValue::Text("smartphone".into())]),
            FieldValue::List(vec![FieldValue::Float(21.0), FieldValue::Float(105.5)]),
        ]
    }

    #[test]
    fn reads_every_map_as_going_through_json_did() {
        let mut household = sample();
        household.void = Some(crate::household::VoidMark {
            reason: crate::household::VoidReason::MovedAway,
            note: "Chuyển vào Nam".into(),
        });
        let mut read_directly = 0;
        let mut maps = 0;
        for record in [sample(), household] {
            let fields = flatten(&record);
            assert_eq!(unflatten(&fields), Ok(record.clone()));
            assert!(
                agree(&fields, "the record"),
                "a whole record is read directly"
            );
            let member = format!("members.{}", record.members[0].id);
            let paths: Vec<String> = fields
                .keys()
                .cloned()
                .chain(
                    [
                        "colour",
                        "address.street",
                        "gps",
                        "void",
                        "void.reason",
                        "members",
                        "income.b1_answers",
                        "income.b1_answers.Q9",
                        "round.kind.periodic",
                        "dwelling..floor_area_m2",
                        ".address",
                        "address.",
                        // Segments that sort before a group's paths ('-' before '.'):
                        // they come first and the group is put before them.
                        "dwelling-x",
                        "income-x.y",
                        "members-x",
                    ]
                    .map(String::from),
                )
                .chain([
                    member.clone(),
                    format!("{member}.id"),
                    format!("{member}.nickname"),
                    format!("{member}-x"),
                    "members.not-a-uuid.full_name".to_string(),
                ])
                .collect();
            for path in &paths {
                let mut without = fields.clone();
                if without.remove(path).is_some() {
                    maps += 1;
                    read_directly += usize::from(agree(&without, &format!("without {path}")));
                }
                for value in values() {
                    let mut changed = fields.clone();
                    changed.insert(path.clone(), value.clone());
                    maps += 1;
                    read_directly += usize::from(agree(&changed, &format!("{path} = {value:?}")));
                }
            }
            // An enum as an object: of one variant, and of two.
            let mut as_object = fields.clone();
            as_object.remove("round.kind");
            as_object.insert("round.kind.monthly".into(), FieldValue::Null);
            agree(&as_object, "round.kind as an object");
            as_object.insert("round.kind.periodic".into(), FieldValue::Null);
            agree(&as_object, "round.kind as an object of two variants");
        }
        // The direct reader took a good share of the maps, not only the whole records.
        assert!(
            read_directly > maps / 20 && read_directly < maps,
            "{read_directly} of {maps} read directly"
        );
        println!("{read_directly} of {maps} maps read directly");
    }

    #[test]
    fn children_are_kept_in_segment_order_whatever_order_they_come_in() {
        let value = FieldValue::Null;
        let mut children = Children::default();
        for part in ["dwelling", "address", "members", "dwelling-x", "age"] {
            assert!(
                children.insert_new(part, Child::Leaf(LeafRef::of(&value))),
                "{part}"
            );
        }
        assert!(!children.insert_new("address", Child::Node(1)));
        let order: Vec<&str> = children.iter().map(|(part, _)| *part).collect();
        assert_eq!(
            order,
            ["address", "age", "dwelling", "dwelling-x", "members"]
        );
        assert!(matches!(children.get("dwelling-x"), Some(Child::Leaf(_))));
        assert!(children.get("income").is_none());
        assert_eq!(children.len(), 5);
    }

    /// A record with `members` members, its gps and void mark present or not, as a map.
    fn record_with(members: usize, gps: bool, void: bool) -> FieldMap {
        let mut household = sample();
        let first = household.members[0].clone();
        for n in 1..members {
            let mut member = first.clone();
            member.id =
                uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0100 + n as u128);
            member.full_name = format!("Thành viên {n}");
            member.child_nutrition = Some(crate::household::ChildNutrition::Stunted);
            household.members.push(member);
        }
        if members == 0 {
            household.members.clear();
            household.head_member_id = None;
        }
        if !gps {
            household.gps = None;
        }
        if void {
            household.void = Some(crate::household::VoidMark {
                reason: crate::household::VoidReason::Duplicate,
                note: String::new(),
            });
        }
        flatten(&household)
    }

    proptest::proptest! {
        /// Any few edits of a record: the direct reader, where it reads one, reads what the
        /// tree reads. (JSON is not the oracle here: it dropped a member given as a plain
        /// value, which the tree refuses.)
        #[test]
        fn the_direct_reader_reads_any_edited_record_as_the_tree_does(
            members in 0usize..4,
            gps: bool,
            void: bool,
            edits in proptest::collection::vec((0usize..1_000, proptest::option::of(0usize..1_000)), 0..5),
        ) {
            let mut fields = record_with(members, gps, void);
            let member = "members.01900000-0000-7000-8000-000000000001";
            let extra = [
                "gps", "gps.lat", "gps.lon", "void", "void.reason", "void.note", "members",
                "head_member_id", "income.b1_answers.Q7", "income.b1_answers", "round",
                "flags", "dwelling.waste_handling", "causes_of_poverty.other", "id",
                "members.01900000-0000-7000-8000-000000000101.sex",
                "members.01900000-0000-7000-8000-00000000010A.full_name",
                "members.{01900000-0000-7000-8000-000000000001}.full_name",
            ];
            let mut paths: Vec<String> = fields.keys().cloned().collect();
            paths.extend(extra.iter().map(|path| path.to_string()));
            paths.push(format!("{member}.id"));
            paths.push(format!("{member}.personal_id"));
            let mut pool = values();
            pool.extend([
                FieldValue::Int(2025),
                FieldValue::Int(70_000),
                FieldValue::Int(i64::from(u32::MAX) + 1),
                FieldValue::Bool(false),
                FieldValue::Text("male".into()),
                FieldValue::Text("head".into()),
                FieldValue::Text("duplicate".into()),
                FieldValue::Text("collected".into()),
                FieldValue::List(vec![FieldValue::Text("radio".into()), FieldValue::Text("tv".into())]),
                FieldValue::List(vec![FieldValue::Null]),
            ]);
            for (path, value) in edits {
                let path = &paths[path % paths.len()];
                match value {
                    None => {
                        fields.remove(path);
                    }
                    Some(value) => {
                        fields.insert(path.clone(), pool[value % pool.len()].clone());
                    }
                }
            }
            read_directly_as_the_tree_reads(&fields, "edited");
        }
    }

    #[test]
    fn records_as_devices_write_them_are_read_directly() {
        for members in 0..4 {
            for gps in [false, true] {
                for void in [false, true] {
                    let fields = record_with(members, gps, void);
                    assert!(agree(&fields, "a record"), "{members} {gps} {void}");
                }
            }
        }
    }

    #[test]
    fn an_empty_map_and_a_bare_one_are_refused_alike() {
        agree(&FieldMap::new(), "empty");
        let mut members_only = FieldMap::new();
        members_only.insert(
            "members.a.full_name".into(),
            FieldValue::Text("Lò Văn Páo".into()),
        );
        agree(&members_only, "a member and nothing else");
    }
}
