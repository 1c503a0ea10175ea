//! A value from a store's row (`protocol::codec::packed`): unpacked under its limit, then
//! decoded as a field map. Nothing may panic, and nothing may unpack past the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::{decode, packed};
use protocol::fields::FieldMap;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = packed::unpack(data, LIMIT) {
        assert!(value.len() <= LIMIT);
        let _ = decode::<FieldMap>(&value, LIMIT);
    }
});
