//! What a device decodes from a server (or from whatever answers in its place): a push reply
//! or a pull page, under the response limit. The first byte chooses which.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::{decode, encode};
use protocol::sync::{PullResponse, PushReply, MAX_RESPONSE_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(reply) = decode::<PushReply>(body, MAX_RESPONSE_BYTES) {
            let again: PushReply = decode(&encode(&reply), MAX_RESPONSE_BYTES).expect("round trip");
            assert_eq!(again, reply);
        }
    } else if let Ok(page) = decode::<PullResponse>(body, MAX_RESPONSE_BYTES) {
        let again: PullResponse = decode(&encode(&page), MAX_RESPONSE_BYTES).expect("round trip");
        assert_eq!(again, page);
        for change in &page.changes {
            let _ = protocol::fields::unflatten(&change.fields);
        }
    }
});
