//! Properties of the three-way merge (`protocol::merge::three_way`), checked on generated
//! records: merging is deterministic; a change merged twice equals once; a field changed by
//! only one side is never a conflict; a field changed by both sides to different values always
//! is. Failing cases shrink and are kept by proptest under `proptest-regressions/`.

use proptest::prelude::*;
use protocol::fields::{apply, FieldChange, FieldMap, FieldValue};
use protocol::merge::three_way;

/// A few plain paths and the void mark's, so that the same path is often chosen on both sides.
const PATHS: &[&str] = &[
    "address",
    "income",
    "members.a.name",
    "members.b.name",
    "void.reason",
];

fn is_void(path: &str) -> bool {
    path == "void" || path.starts_with("void.")
}

fn value() -> impl Strategy<Value = Option<FieldValue>> {
    prop_oneof![
        Just(None),
        (0i64..3).prop_map(|n| Some(FieldValue::Int(n))),
        prop::sample::select(vec!["x", "y"]).prop_map(|s| Some(FieldValue::Text(s.to_string()))),
    ]
}

/// A record: each path absent or holding one of a few values.
fn record() -> impl Strategy<Value = FieldMap> {
    prop::collection::vec(value(), PATHS.len()).prop_map(|values| {
        PATHS
            .iter()
            .zip(values)
            .filter_map(|(path, value)| value.map(|v| (path.to_string(), v)))
            .collect()
    })
}

/// Changes to some of the paths, each path at most once, in path order.
fn changes() -> impl Strategy<Value = Vec<FieldChange>> {
    prop::collection::vec(prop::option::of(value()), PATHS.len()).prop_map(|picked| {
        PATHS
            .iter()
            .zip(picked)
            .filter_map(|(path, value)| {
                value.map(|value| FieldChange {
                    path: path.to_string(),
                    value,
                })
            })
            .collect()
    })
}

fn changed_paths(from: &FieldMap, to: &FieldMap) -> Vec<String> {
    PATHS
        .iter()
        .filter(|path| from.get(**path) != to.get(**path))
        .map(|path| path.to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn merging_is_deterministic(base in record(), theirs in record(), mine in changes()) {
        let first = three_way(&base, &theirs, &mine);
        let second = three_way(&base.clone(), &theirs.clone(), &mine.clone());
        prop_assert_eq!(first, second);
    }

    #[test]
    fn a_change_merged_twice_equals_once(base in record(), theirs in record(), mine in changes()) {
        let once = three_way(&base, &theirs, &mine);
        let mut after_once = theirs.clone();
        apply(&mut after_once, &once.apply);

        let again = three_way(&base, &after_once, &mine);
        let mut after_twice = after_once.clone();
        apply(&mut after_twice, &again.apply);
        prop_assert_eq!(&after_twice, &after_once);
        prop_assert!(again.apply.is_empty(), "the replay applied {:?}", again.apply);
        // The replay reports the same fields in conflict, with the same values.
        prop_assert_eq!(again.conflicts, once.conflicts);
    }

    #[test]
    fn a_field_changed_by_one_side_only_is_never_a_conflict(
        base in record(),
        theirs_new in record(),
        mine in changes(),
    ) {
        // The other side changes only paths the device leaves alone; the void mark, a change
        // to the whole record, is left out on both sides.
        let mine: Vec<FieldChange> = mine
            .into_iter()
            .filter(|change| !is_void(&change.path))
            .filter(|change| base.get(&change.path) != change.value.as_ref())
            .collect();
        let mut theirs = base.clone();
        for path in PATHS {
            if is_void(path) || mine.iter().any(|change| change.path == *path) {
                continue;
            }
            match theirs_new.get(*path) {
                Some(value) => theirs.insert(path.to_string(), value.clone()),
                None => theirs.remove(*path),
            };
        }
        let plan = three_way(&base, &theirs, &mine);
        prop_assert!(plan.conflicts.is_empty(), "conflicts: {:?}", plan.conflicts);
        let mut merged = theirs.clone();
        apply(&mut merged, &plan.apply);
        for change in &mine {
            prop_assert_eq!(merged.get(&change.path), change.value.as_ref());
        }
        for path in changed_paths(&base, &theirs) {
            prop_assert_eq!(merged.get(&path), theirs.get(&path));
        }
    }

    #[test]
    fn only_the_device_changed_anything_so_nothing_conflicts(base in record(), mine in changes()) {
        // With the registry still at the base, even a void applies cleanly.
        let plan = three_way(&base, &base, &mine);
        prop_assert!(plan.conflicts.is_empty());
        prop_assert!(!plan.others_changed);
        let mut merged = base.clone();
        apply(&mut merged, &plan.apply);
        let mut intended = base.clone();
        apply(&mut intended, &mine);
        prop_assert_eq!(merged, intended);
    }

    #[test]
    fn a_field_changed_by_both_sides_to_different_values_always_conflicts(
        base in record(),
        theirs in record(),
        mine in changes(),
    ) {
        let plan = three_way(&base, &theirs, &mine);
        for change in &mine {
            let (was, now, wanted) = (base.get(&change.path), theirs.get(&change.path), change.value.as_ref());
            if now != was && wanted != was && wanted != now {
                let conflict = plan.conflicts.iter().find(|c| c.path == change.path);
                prop_assert!(conflict.is_some(), "{} was changed on both sides: {:?}", change.path, plan);
                let conflict = conflict.expect("checked");
                prop_assert_eq!(conflict.theirs.as_ref(), now);
                prop_assert_eq!(conflict.mine.as_ref(), wanted);
                prop_assert!(!plan.apply.iter().any(|a| a.path == change.path));
            }
        }
    }
}
