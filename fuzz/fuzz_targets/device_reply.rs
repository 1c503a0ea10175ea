//! What a device decodes from a server (or from whatever answers in its place): a push reply
//! or a pull page, under the response limit. The first byte chooses which.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::{decode, encode, pull_page};
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
    } else {
        // The device reads pages with `pull_page`, which must read a layout-1 page as the
        // generic decoder reads it, and write back any page it reads.
        let page = pull_page::decode(body, MAX_RESPONSE_BYTES);
        if !body.starts_with(&pull_page::LAYOUT.to_le_bytes()) {
            let generic = decode::<PullResponse>(body, MAX_RESPONSE_BYTES);
            assert_eq!(page.as_ref().ok(), generic.as_ref().ok());
        }
        let Ok(page) = page else { return };
        let again = pull_page::decode(&pull_page::encode(&page), MAX_RESPONSE_BYTES);
        assert_eq!(again.as_ref(), Ok(&page));
        for change in &page.changes {
            // A map read from a page is as `codec::encode` writes it.
            let map = change.fields.decode().expect("a map read decodes");
            assert_eq!(change.fields, protocol::fields::EncodedFields::encode(&map));
            let _ = protocol::fields::unflatten(&map);
        }
    }
});
