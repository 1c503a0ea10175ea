//! A registry journal file as `server rebuild` and every server start read it: a damaged
//! file is an error, never a panic, and no length in it is trusted before it is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = server::journal::parse(data) {
        for (index, entry) in records.iter().enumerate() {
            assert_eq!(entry.record.number, index as u64 + 1);
            // Where a value is said to lie, it lies: the registry reads rows from there.
            for ((_, value), at) in entry.record.writes.iter().zip(entry.value_positions()) {
                if let (Some(value), Some(at)) = (value, at) {
                    let at = at as usize;
                    assert_eq!(data.get(at..at + value.len()), Some(value.as_slice()));
                }
            }
        }
    }
});
