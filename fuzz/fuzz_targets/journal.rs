//! A registry journal file as `server rebuild` and every server start read it: a damaged
//! file is an error, never a panic, and no length in it is trusted before it is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = server::journal::parse(data) {
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.number, index as u64 + 1);
        }
    }
});
