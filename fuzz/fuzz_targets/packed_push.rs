//! A packed push as the server's push endpoint receives it (`Content-Type`
//! `application/x-packed-push`): each mutation unpacked and decoded under the push body limit,
//! the records it may keep read without their changes, then checked for shape. Nothing may
//! panic; given their changes back, the mutations are those the push holds read whole, and
//! whatever reads must pack and read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::packed_push;
use protocol::sync::MAX_PUSH_BYTES;
use server::merge_engine::{unpack_push, validate_push};

fuzz_target!(|data: &[u8]| {
    let Ok((mut request, kept)) = unpack_push(data) else {
        return;
    };
    kept.give_back(&mut request)
        .expect("a kept record's changes decode");
    let whole = packed_push::decode(data, MAX_PUSH_BYTES)
        .and_then(|push| packed_push::request(&push))
        .expect("what the server reads, reads whole");
    assert_eq!(request, whole);
    let _ = validate_push(&request);
    let (mut again, kept) =
        unpack_push(&packed_push::encode_request(&request)).expect("round trip");
    kept.give_back(&mut again).expect("round trip");
    assert_eq!(again, request);
});
