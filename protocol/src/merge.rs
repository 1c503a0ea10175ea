//! The three-way field merge: a device's changes, made on top of `base`, laid over the
//! registry's current record `theirs`.
//!
//! For each field the device changed:
//! - the registry already holds the device's value: nothing to do;
//! - the registry still holds the base value: the change applies;
//! - otherwise both sides changed it to different values: a conflict. The registry keeps its
//!   value and the device's value is kept in the conflict record.
//!
//! Voiding is a change to the whole household: a void (or an undo of one) made on either side
//! while the other side changed anything conflicts with every change of the device, so that a
//! voided household is never silently resurrected and an edit is never silently buried.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::fields::{FieldChange, FieldMap, FieldValue};

/// One field changed on both sides to different values. `None` means the field is absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictField {
    pub path: String,
    pub base: Option<FieldValue>,
    pub theirs: Option<FieldValue>,
    pub mine: Option<FieldValue>,
}

/// What to do with a device's changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergePlan {
    /// Changes to lay over `theirs`.
    pub apply: Vec<FieldChange>,
    /// Fields the device changed that someone else changed differently since `base`.
    pub conflicts: Vec<ConflictField>,
    /// Someone else changed fields since `base` that the device did not: the outcome is a
    /// merge rather than a plain application.
    pub others_changed: bool,
}

fn is_void_path(path: &str) -> bool {
    path == "void" || path.starts_with("void.")
}

/// Plans the merge of `changes` (made against `base`) over `theirs`. Pure and deterministic.
pub fn three_way(base: &FieldMap, theirs: &FieldMap, changes: &[FieldChange]) -> MergePlan {
    let mut plan = MergePlan::default();
    // Only changes that would alter the registry's record matter.
    let effective: Vec<&FieldChange> = changes
        .iter()
        .filter(|change| theirs.get(&change.path) != change.value.as_ref())
        .collect();
    let mine_sets = |path: &str, value: Option<&FieldValue>| {
        changes
            .iter()
            .rev()
            .find(|change| change.path == path)
            .is_some_and(|change| change.value.as_ref() == value)
    };
    let mut theirs_changed_void = false;
    let mut theirs_changed_other = false;
    for (path, was, now) in side_by_side(base, theirs) {
        if was != now && !mine_sets(path, now) {
            plan.others_changed = true;
            if is_void_path(path) {
                theirs_changed_void = true;
            } else {
                theirs_changed_other = true;
            }
        }
    }
    let mine_changes_void = effective.iter().any(|change| is_void_path(&change.path));
    let whole_record_conflict = (mine_changes_void
        && (theirs_changed_void || theirs_changed_other))
        || (theirs_changed_void && !effective.is_empty());

    for change in effective {
        let was = base.get(&change.path);
        let now = theirs.get(&change.path);
        if now == was && !whole_record_conflict {
            plan.apply.push(change.clone());
        } else {
            plan.conflicts.push(ConflictField {
                path: change.path.clone(),
                base: was.cloned(),
                theirs: now.cloned(),
                mine: change.value.clone(),
            });
        }
    }
    plan
}

/// Every path of either map with its value in each, in path order: one walk over both maps
/// instead of two lookups per path (a merge compares two records of ~90 paths).
fn side_by_side<'m>(
    a: &'m FieldMap,
    b: &'m FieldMap,
) -> impl Iterator<Item = (&'m str, Option<&'m FieldValue>, Option<&'m FieldValue>)> {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((in_a, _)), Some((in_b, _))) => in_a.cmp(in_b),
        };
        Some(match order {
            Ordering::Less => a
                .next()
                .map(|(path, value)| (path.as_str(), Some(value), None))?,
            Ordering::Greater => b
                .next()
                .map(|(path, value)| (path.as_str(), None, Some(value)))?,
            Ordering::Equal => {
                let (path, in_a) = a.next()?;
                let (_, in_b) = b.next()?;
                (path.as_str(), Some(in_a), Some(in_b))
            }
        })
    })
}

/// The fallback when a merge would leave a record that does not fit the form (for example a
/// member removed on one side and renamed on the other): every effective change becomes a
/// conflict, so the registry keeps a well-formed record and the device's values are kept.
pub fn everything_conflicts(
    base: &FieldMap,
    theirs: &FieldMap,
    changes: &[FieldChange],
) -> MergePlan {
    let mut plan = three_way(base, theirs, changes);
    let applied = std::mem::take(&mut plan.apply);
    plan.conflicts
        .extend(applied.into_iter().map(|change| ConflictField {
            base: base.get(&change.path).cloned(),
            theirs: theirs.get(&change.path).cloned(),
            mine: change.value,
            path: change.path,
        }));
    plan.conflicts.sort_by(|a, b| a.path.cmp(&b.path));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> FieldMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), FieldValue::Text(v.to_string())))
            .collect()
    }

    fn set(path: &str, value: &str) -> FieldChange {
        FieldChange {
            path: path.into(),
            value: Some(FieldValue::Text(value.into())),
        }
    }

    #[test]
    fn different_fields_merge_and_same_field_conflicts() {
        let base = map(&[("a", "1"), ("b", "1"), ("void", "")]);
        let theirs = map(&[("a", "2"), ("b", "1"), ("void", "")]);
        let plan = three_way(&base, &theirs, &[set("b", "3")]);
        assert_eq!(plan.apply, vec![set("b", "3")]);
        assert!(plan.conflicts.is_empty());
        assert!(plan.others_changed);

        let plan = three_way(&base, &theirs, &[set("a", "3")]);
        assert!(plan.apply.is_empty());
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].theirs, Some(FieldValue::Text("2".into())));
        assert_eq!(plan.conflicts[0].mine, Some(FieldValue::Text("3".into())));

        let plan = three_way(&base, &theirs, &[set("a", "2")]);
        assert_eq!(
            plan,
            MergePlan::default(),
            "the same value on both sides is no conflict"
        );
    }

    #[test]
    fn void_against_any_edit_conflicts() {
        let base = map(&[("a", "1"), ("void", "")]);
        let edited = map(&[("a", "2"), ("void", "")]);
        let plan = three_way(&base, &edited, &[set("void", "duplicate")]);
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.apply.is_empty());

        let voided = map(&[("a", "1"), ("void", "duplicate")]);
        let plan = three_way(&base, &voided, &[set("a", "9")]);
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.apply.is_empty());
    }

    proptest::proptest! {
        /// Walking both maps side by side visits every path of either once, in order, with
        /// the value each map holds there.
        #[test]
        fn side_by_side_is_every_path_with_both_values(
            a in proptest::collection::btree_map("[a-d.]{1,3}", 0i64..3, 0..12),
            b in proptest::collection::btree_map("[a-d.]{1,3}", 0i64..3, 0..12),
        ) {
            let (a, b): (FieldMap, FieldMap) = (
                a.into_iter().map(|(k, v)| (k, FieldValue::Int(v))).collect(),
                b.into_iter().map(|(k, v)| (k, FieldValue::Int(v))).collect(),
            );
            let walked: Vec<_> = side_by_side(&a, &b).collect();
            let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let looked_up: Vec<_> = paths
                .into_iter()
                .map(|path| (path.as_str(), a.get(path), b.get(path)))
                .collect();
            proptest::prop_assert_eq!(walked, looked_up);
        }
    }
}
