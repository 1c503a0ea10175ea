//! A push request as the server's push endpoint receives it: decoded under the push body
//! limit, then checked for shape. Nothing may panic; whatever decodes must encode back to
//! something that decodes to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::{decode, encode};
use protocol::sync::{PushRequest, MAX_PUSH_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode::<PushRequest>(data, MAX_PUSH_BYTES) else {
        return;
    };
    let _ = server::merge_engine::validate_push(&request);
    let again: PushRequest = decode(&encode(&request), MAX_PUSH_BYTES).expect("round trip");
    assert_eq!(again, request);
});
