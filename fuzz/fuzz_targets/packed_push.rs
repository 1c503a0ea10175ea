//! A packed push as the server's push endpoint receives it (`Content-Type`
//! `application/x-packed-push`): each mutation unpacked and decoded under the push body limit,
//! then checked for shape. Nothing may panic; whatever reads must pack and read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::packed_push;
use server::merge_engine::{unpack_push, validate_push};

fuzz_target!(|data: &[u8]| {
    let Ok((request, _)) = unpack_push(data) else {
        return;
    };
    let _ = validate_push(&request);
    let (again, _) = unpack_push(&packed_push::encode_request(&request)).expect("round trip");
    assert_eq!(again, request);
});
