//! A zstd-compressed sync body, as the server reads a push (first byte even) or a device reads a
//! pull page (first byte odd): decompressed under the message's limit, then decoded. Nothing may
//! panic, and nothing may decompress past the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::{decode, decompress, pull_page};
use protocol::sync::{PushRequest, MAX_PUSH_BYTES, MAX_RESPONSE_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    let push = which & 1 == 0;
    let limit = if push { MAX_PUSH_BYTES } else { MAX_RESPONSE_BYTES };
    let Ok(message) = decompress(body, limit) else {
        return;
    };
    assert!(message.len() <= limit);
    if push {
        if let Ok(request) = decode::<PushRequest>(&message, limit) {
            let _ = server::merge_engine::validate_push(&request);
        }
    } else {
        let _ = pull_page::decode(&message, limit);
    }
});
