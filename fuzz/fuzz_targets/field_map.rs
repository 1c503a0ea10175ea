//! A field map (a registry revision, a pulled household) turned back into a survey record and
//! checked, and two of them merged with a list of changes: the paths every sync carries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::decode;
use protocol::fields::{self, FieldChange, FieldMap};
use protocol::household::Date;
use protocol::merge;
use protocol::sync::MAX_PUSH_BYTES;

fuzz_target!(|data: &[u8]| {
    let Ok((base, theirs, changes)) =
        decode::<(FieldMap, FieldMap, Vec<FieldChange>)>(data, MAX_PUSH_BYTES)
    else {
        return;
    };
    let today = Date::new(2025, 10, 1).expect("a date");
    for map in [&base, &theirs] {
        if let Ok(household) = fields::unflatten(map) {
            let _ = protocol::validate::check(&household, today);
            // A record that came from a map flattens back to a map that rebuilds it.
            let back = fields::unflatten(&fields::flatten(&household)).expect("flattened record rebuilds");
            assert_eq!(back, household);
        }
        let _ = protocol::validate::household_from_fields(map, today);
    }
    let plan = merge::three_way(&base, &theirs, &changes);
    for applied in &plan.apply {
        assert!(changes.iter().any(|c| c.path == applied.path));
    }
    let _ = merge::everything_conflicts(&base, &theirs, &changes);
});
