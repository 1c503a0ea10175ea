//! A household JSON file, as `ho add --json FILE` / `ho edit --json FILE` read one (the file
//! parse, then the record's trip through fields that every save makes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::fields;
use protocol::household::{Date, Household};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(household) = serde_json::from_value::<Household>(value) else {
        return;
    };
    let today = Date::new(2025, 10, 1).expect("a date");
    let _ = protocol::validate::check(&household, today);
    let map = fields::flatten(&household);
    for (path, value) in &map {
        let _ = fields::check_leaf(path, value);
    }
    let _ = fields::unflatten(&map);
});
