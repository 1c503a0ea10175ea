//! Decoders reject lengths larger than the input before allocating: a message whose length
//! prefixes claim billions of items, in a few bytes, is refused having allocated about as much
//! as it is long. A test binary of its own, because it counts every allocation of the process.

use protocol::codec::decode;
use protocol::fields::FieldMap;
use protocol::sync::{
    PullResponse, PushRequest, MAX_PUSH_BYTES, MAX_RESPONSE_BYTES, PROTOCOL_VERSION,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated while decoding `bytes` as `T` (the decode must fail).
fn allocated_by<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    bytes: &[u8],
    limit: usize,
) -> usize {
    let region = Region::new(GLOBAL);
    let started = std::time::Instant::now();
    let result = decode::<T>(bytes, limit);
    let elapsed = started.elapsed();
    let stats = region.change();
    assert!(result.is_err(), "a lying message decoded: {result:?}");
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "took {elapsed:?}"
    );
    stats.bytes_allocated
}

fn lying(prefix: &[u8], count: &[u8]) -> Vec<u8> {
    let mut bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
    bytes.extend_from_slice(prefix);
    bytes.extend_from_slice(count);
    bytes
}

#[test]
fn a_push_claiming_four_billion_mutations_in_twenty_bytes_allocates_nothing_big() {
    // A device id (a 16-byte length-prefixed uuid), then a varint count of 2^32 - 1.
    let mut prefix = vec![16u8];
    prefix.extend_from_slice(&[7u8; 16]);
    let bytes = lying(&prefix, &[0xfc, 0xff, 0xff, 0xff, 0xff]);
    assert!(bytes.len() <= 24);
    let allocated = allocated_by::<PushRequest>(&bytes, MAX_PUSH_BYTES);
    assert!(
        allocated < 64 * 1024,
        "allocated {allocated} bytes for a {}-byte push",
        bytes.len()
    );
}

#[test]
fn other_lying_counts_allocate_nothing_big() {
    // 2^64 - 1 field-map entries; a string of 2^32 bytes; a pull page of 2^32 changes.
    let huge = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let cases: Vec<(&str, usize)> = vec![
        (
            "field map",
            allocated_by::<FieldMap>(&lying(&[], &huge), MAX_PUSH_BYTES),
        ),
        (
            "text",
            allocated_by::<String>(&lying(&[], &[0xfc, 0, 0, 0, 1]), MAX_PUSH_BYTES),
        ),
        (
            "pull page",
            allocated_by::<PullResponse>(
                &lying(&[], &[0xfc, 0xff, 0xff, 0xff, 0xff]),
                MAX_RESPONSE_BYTES,
            ),
        ),
    ];
    for (what, allocated) in cases {
        assert!(allocated < 64 * 1024, "{what}: allocated {allocated} bytes");
    }
}

#[test]
fn a_layout_2_page_with_lying_counts_allocates_nothing_big() {
    use protocol::codec::{pull_page, CodecError};
    let layout = pull_page::LAYOUT.to_le_bytes();
    let count = [0xfc, 0xff, 0xff, 0xff, 0xff];
    // Each of the page's counts in turn (templates, shapes, the ids' bytes, households…)
    // claims 2^32, those before it zero.
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for zeros_before in 0..5 {
        let mut bytes = layout.to_vec();
        bytes.extend(std::iter::repeat_n(0u8, zeros_before));
        bytes.extend_from_slice(&count);
        cases.push(bytes);
    }
    for bytes in cases {
        let region = Region::new(GLOBAL);
        let result = pull_page::decode(&bytes, MAX_RESPONSE_BYTES);
        let allocated = region.change().bytes_allocated;
        assert!(
            matches!(
                result,
                Err(CodecError::Truncated | CodecError::Malformed(_))
            ),
            "{bytes:?}: {result:?}"
        );
        assert!(
            allocated < 64 * 1024,
            "{bytes:?}: allocated {allocated} bytes"
        );
    }
}
