//! A pull request as the server's pull endpoint receives it, under its body limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::{decode, encode};
use protocol::sync::{PullRequest, MAX_PULL_REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode::<PullRequest>(data, MAX_PULL_REQUEST_BYTES) else {
        return;
    };
    let again: PullRequest =
        decode(&encode(&request), MAX_PULL_REQUEST_BYTES).expect("round trip");
    assert_eq!(again, request);
});
