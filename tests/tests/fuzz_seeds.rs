//! Seeds for the fuzz targets in `fuzz/`, made from real messages of a real exchange, and a
//! bounded mutation fuzzer over the same decoders that runs in every test run (libFuzzer does
//! not). `WRITE_FUZZ_CORPUS=1 cargo test -p tests fuzz_seeds` writes the seeds to
//! `fuzz/corpus/<target>/seed-N`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client_core::Store;
use protocol::codec::{decode, encode, packed, packed_push, pull_page};
use protocol::fields::{self, FieldChange, FieldMap};
use protocol::household::{Date, Household, VoidMark, VoidReason};
use protocol::sync::{
    PullRequest, PullResponse, PushReply, PushRequest, MAX_PULL_REQUEST_BYTES, MAX_PUSH_BYTES,
    MAX_RESPONSE_BYTES,
};
use server::AppState;
use uuid::Uuid;

use crate::simulation::Rng;
use crate::util::household;

type Seeds = BTreeMap<&'static str, Vec<Vec<u8>>>;

fn push_of(store: &Store) -> PushRequest {
    PushRequest {
        device_id: store.device_id().expect("meta").expect("set up"),
        mutations: store.pending().expect("outbox"),
    }
}

fn pull_of(store: &Store, cursor: u64) -> PullRequest {
    PullRequest {
        device_id: store.device_id().expect("meta").expect("set up"),
        cursor,
        limit: 500,
        outcomes_from: 1,
    }
}

fn with_tag(tag: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(body);
    out
}

/// Real messages: two devices create, edit the same household into a conflict, send an
/// invalid record and void one; every request, reply, page, record and journal on the way.
fn seeds() -> Seeds {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let server_dir = dir.path().join("server");
    let state = AppState::open(&server_dir).expect("registry");
    let open_device = |name: &str| {
        let store = Store::open(&dir.path().join(name)).expect("store");
        store.setup("http://seed", Uuid::now_v7()).expect("setup");
        store
    };
    let (lan, minh) = (open_device("lan"), open_device("minh"));
    let mut seeds = Seeds::new();
    let mut add =
        |target: &'static str, bytes: Vec<u8>| seeds.entry(target).or_default().push(bytes);

    let mut first = household("Lò Văn Sơn", "Bản Mường");
    let second = household("Hà Thị Lan", "Bản Mường");
    add(
        "household_json",
        serde_json::to_vec_pretty(&first).expect("json"),
    );
    add(
        "household_json",
        r#"{"round": {"year": 2025, "kind": "periodic"}, "commune_code": "00004",
            "village": "Thôn Đông", "address": "Số 3",
            "members": [{"full_name": "Nguyễn Văn Ánh", "sex": "male",
                         "date_of_birth": "1980-05-02", "relationship": "head"}]}"#
            .as_bytes()
            .to_vec(),
    );
    lan.save_household(&first).expect("save");
    lan.save_household(&second).expect("save");

    // Each request and its answer, recorded; then the device syncs for real (its push is a
    // replay by then, answered with the stored outcomes).
    let sync = |store: &Store, add: &mut dyn FnMut(&'static str, Vec<u8>)| {
        let push = push_of(store);
        if !push.mutations.is_empty() {
            add("push_request", encode(&push));
            add("packed_push", packed_push::encode_request(&push));
            if let Some(compressed) = protocol::codec::compress(&encode(&push)) {
                add("compressed_body", with_tag(0, compressed));
            }
            let reply = rt.block_on(state.push(push)).expect("push");
            add("device_reply", with_tag(0, encode(&reply)));
        }
        let pull = pull_of(store, store.cursor().expect("cursor"));
        add("pull_request", encode(&pull));
        let page = rt.block_on(state.pull(pull)).expect("pull");
        // The page as servers write it (layout 2) and as earlier ones did (layout 1).
        add("device_reply", with_tag(1, pull_page::encode(&page)));
        add("device_reply", with_tag(1, encode(&page)));
        if let Some(compressed) = protocol::codec::compress(&pull_page::encode(&page)) {
            add("compressed_body", with_tag(1, compressed));
        }
        rt.block_on(client_core::sync(store, &Direct(&state), |_| {}))
            .expect("sync");
    };
    sync(&lan, &mut add);
    sync(&minh, &mut add);

    // Both edit the same field: a conflict. Then an invalid record: a rejection.
    let mut theirs = first.clone();
    theirs.address = "Số 9".into();
    minh.save_household(&theirs).expect("save");
    first.address = "Số 11".into();
    first.members[0].full_name = "Lò Văn Sơn Hai".into();
    lan.save_household(&first).expect("save");
    sync(&minh, &mut add);
    sync(&lan, &mut add);
    let mut invalid = second.clone();
    invalid.village = " ".into();
    lan.save_household(&invalid).expect("save");
    lan.void_household(
        second.id,
        VoidMark {
            reason: VoidReason::Duplicate,
            note: "ghi trùng".into(),
        },
    )
    .expect("void");
    sync(&lan, &mut add);
    add(
        "device_reply",
        with_tag(0, encode(&PushReply::SeqGap { expected: 7 })),
    );

    let base = fields::flatten(&household("Quàng Văn Pọm", "Bản Mường"));
    let mut edited: Household = fields::unflatten(&base).expect("record");
    edited.address = "Số 2".into();
    let theirs_map = fields::flatten(&edited);
    let changes: Vec<FieldChange> = fields::diff(&base, &theirs_map);
    add("field_map", encode(&(base.clone(), theirs_map, changes)));
    add(
        "field_map",
        encode(&(FieldMap::new(), base.clone(), Vec::<FieldChange>::new())),
    );
    // Values as the stores pack them in rows: a field map, and a short one left plain.
    add("packed_value", packed::pack(&encode(&base)));
    add("packed_value", packed::pack(&encode(&FieldMap::new())));
    // A value packed with dictionary 1 by an earlier build (`packed`'s own test holds it).
    let dictionary_1 = "0128b52ffd2087bd0100887368e1bb8b20486f612c42e1baa36e203b0a00111e4b\
                        4095640a24698cdf5c8294a091e5e3ad9801d33bfbf02d9685f39c0377531c20";
    add(
        "packed_value",
        (0..dictionary_1.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&dictionary_1[at..at + 2], 16).expect("hex"))
            .collect(),
    );

    drop(state);
    let journal = std::fs::read(server::journal::Journal::path_in(&server_dir)).expect("journal");
    add("journal", journal);
    seeds
}

/// The server in process, for seeding.
struct Direct<'a>(&'a AppState);

impl client_core::Transport for Direct<'_> {
    async fn send(
        &self,
        request: &client_core::Request,
    ) -> Result<client_core::Response, client_core::TransportError> {
        let refused = |error: server::AppError| client_core::TransportError::Refused {
            status: 400,
            message: error.to_string(),
        };
        match request {
            client_core::Request::Push(push) => Ok(client_core::Response::Push(
                self.0
                    .push(push.request().expect("a batch decodes"))
                    .await
                    .map_err(refused)?,
            )),
            client_core::Request::Pull(pull) => Ok(client_core::Response::Pull(
                self.0.pull(pull.clone()).await.map_err(refused)?,
            )),
        }
    }
}

/// The body of each fuzz target, without libFuzzer: decoding never panics, and whatever
/// decodes survives a round trip.
fn exercise(target: &str, data: &[u8]) {
    match target {
        "push_request" => {
            if let Ok(request) = decode::<PushRequest>(data, MAX_PUSH_BYTES) {
                let _ = server::merge_engine::validate_push(&request);
                assert_eq!(
                    decode::<PushRequest>(&encode(&request), MAX_PUSH_BYTES),
                    Ok(request)
                );
            }
        }
        "packed_push" => {
            // A push as the server reads one sent packed: every mutation unpacked, the records
            // it may keep read without their changes. Given them back, the mutations are the
            // push read whole, and they pack and read back the same.
            let read_back = |bytes: &[u8]| {
                let (mut request, kept) = server::merge_engine::unpack_push(bytes).ok()?;
                kept.give_back(&mut request)
                    .expect("a kept record's changes decode");
                Some(request)
            };
            if let Some(request) = read_back(data) {
                let whole = packed_push::decode(data, MAX_PUSH_BYTES)
                    .and_then(|push| packed_push::request(&push));
                assert_eq!(whole.as_ref(), Ok(&request));
                let _ = server::merge_engine::validate_push(&request);
                assert_eq!(
                    read_back(&packed_push::encode_request(&request)),
                    Some(request)
                );
            }
        }
        "pull_request" => {
            if let Ok(request) = decode::<PullRequest>(data, MAX_PULL_REQUEST_BYTES) {
                assert_eq!(
                    decode::<PullRequest>(&encode(&request), MAX_PULL_REQUEST_BYTES),
                    Ok(request)
                );
            }
        }
        "device_reply" => {
            let Some((which, body)) = data.split_first() else {
                return;
            };
            if which & 1 == 0 {
                if let Ok(reply) = decode::<PushReply>(body, MAX_RESPONSE_BYTES) {
                    assert_eq!(
                        decode::<PushReply>(&encode(&reply), MAX_RESPONSE_BYTES),
                        Ok(reply)
                    );
                }
            } else {
                // The device reads pages with `pull_page`, which must read a layout-1 page as
                // the generic decoder reads it, and write back any page it reads.
                let page = pull_page::decode(body, MAX_RESPONSE_BYTES);
                if !body.starts_with(&pull_page::LAYOUT.to_le_bytes()) {
                    assert_eq!(
                        page.as_ref().ok(),
                        decode::<PullResponse>(body, MAX_RESPONSE_BYTES)
                            .ok()
                            .as_ref()
                    );
                }
                let Ok(page) = page else { return };
                for change in &page.changes {
                    // A map read from a page is as `codec::encode` writes it.
                    let map = change.fields.decode().expect("a map read decodes");
                    assert_eq!(change.fields, fields::EncodedFields::encode(&map));
                    let _ = fields::unflatten(&map);
                }
                assert_eq!(
                    pull_page::decode(&pull_page::encode(&page), MAX_RESPONSE_BYTES),
                    Ok(page)
                );
            }
        }
        "field_map" => {
            let Ok((base, theirs, changes)) =
                decode::<(FieldMap, FieldMap, Vec<FieldChange>)>(data, MAX_PUSH_BYTES)
            else {
                return;
            };
            let today = Date::new(2025, 10, 1).expect("a date");
            for map in [&base, &theirs] {
                if let Ok(record) = fields::unflatten(map) {
                    let _ = protocol::validate::check(&record, today);
                    assert_eq!(fields::unflatten(&fields::flatten(&record)), Ok(record));
                }
            }
            let plan = protocol::merge::three_way(&base, &theirs, &changes);
            assert!(plan
                .apply
                .iter()
                .all(|applied| changes.iter().any(|c| c.path == applied.path)));
        }
        "household_json" => {
            if let Ok(record) = serde_json::from_slice::<Household>(data) {
                let map = fields::flatten(&record);
                let _ = fields::unflatten(&map);
            }
        }
        "compressed_body" => {
            // A zstd body, as the server reads a push (tag 0) or a device a pull page (tag 1).
            let Some((which, body)) = data.split_first() else {
                return;
            };
            let limit = if which & 1 == 0 {
                MAX_PUSH_BYTES
            } else {
                MAX_RESPONSE_BYTES
            };
            if let Ok(message) = protocol::codec::decompress(body, limit) {
                assert!(message.len() <= limit);
                if which & 1 == 0 {
                    let _ = decode::<PushRequest>(&message, limit);
                } else {
                    let _ = pull_page::decode(&message, limit);
                }
            }
        }
        "packed_value" => {
            // A value from a store's row: unpacked under its limit, then decoded.
            const LIMIT: usize = 1 << 20;
            if let Ok(value) = packed::unpack(data, LIMIT) {
                assert!(value.len() <= LIMIT);
                if let Ok(map) = decode::<FieldMap>(&value, LIMIT) {
                    assert_eq!(
                        packed::unpack(&packed::pack(&encode(&map)), LIMIT),
                        Ok(encode(&map))
                    );
                }
            }
        }
        "journal" => {
            if let Ok(records) = server::journal::parse(data) {
                for (index, entry) in records.iter().enumerate() {
                    assert_eq!(entry.record.number, index as u64 + 1);
                    // Where a value is said to lie, it lies: the registry reads rows from there.
                    for ((_, value), at) in entry.record.writes.iter().zip(entry.value_positions())
                    {
                        if let (Some(value), Some(at)) = (value, at) {
                            let at = at as usize;
                            assert_eq!(data.get(at..at + value.len()), Some(value.as_slice()));
                        }
                    }
                }
            }
        }
        other => panic!("no target {other}"),
    }
}

/// One random mutation: flip, overwrite with an extreme byte, cut, insert or duplicate.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        data.push(rng.next_u64() as u8);
        return;
    }
    let at = rng.below(data.len());
    match rng.below(6) {
        0 => data[at] ^= 1 << rng.below(8),
        1 => data[at] = *rng.pick(&[0x00, 0xff, 0xfb, 0xfc, 0xfd, 0x7f, 0x80]),
        2 => data.truncate(at),
        3 => data.insert(at, rng.next_u64() as u8),
        4 => {
            // A run of 0xff: a huge varint length or count.
            let run = 1 + rng.below(9);
            for offset in 0..run {
                if at + offset < data.len() {
                    data[at + offset] = 0xff;
                }
            }
        }
        _ => {
            let end = (at + 1 + rng.below(32)).min(data.len());
            let piece = data[at..end].to_vec();
            let to = rng.below(data.len());
            data.splice(to..to, piece);
        }
    }
}

#[test]
fn fuzz_seeds_decode_and_mutations_never_panic() {
    let seeds = seeds();
    let targets = [
        "push_request",
        "packed_push",
        "pull_request",
        "device_reply",
        "field_map",
        "household_json",
        "journal",
        "compressed_body",
        "packed_value",
    ];
    for target in targets {
        assert!(
            seeds.get(target).is_some_and(|s| !s.is_empty()),
            "no seeds for {target}"
        );
    }
    if std::env::var("WRITE_FUZZ_CORPUS").is_ok() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (target, items) in &seeds {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).expect("corpus folder");
            for (n, bytes) in items.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{n}")), bytes).expect("write seed");
            }
        }
    }
    // Every seed is a valid input of its target.
    for (target, items) in &seeds {
        for bytes in items {
            exercise(target, bytes);
        }
    }
    // A bounded mutation fuzzer: a fixed budget of mutated inputs per target, seeded so that
    // a failure replays (FUZZ_SEED, FUZZ_ITERATIONS).
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    let mut rng = Rng::new(seed);
    let began = Instant::now();
    let mut runs = 0usize;
    for (target, items) in &seeds {
        for _ in 0..iterations {
            let mut data = rng.pick(items).clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut data);
            }
            let started = Instant::now();
            exercise(target, &data);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{target}: one input took {:?} (FUZZ_SEED={seed})",
                started.elapsed()
            );
            runs += 1;
        }
    }
    println!(
        "fuzz seeds: {runs} mutated inputs in {:.1} s, none panicked (FUZZ_SEED={seed})",
        began.elapsed().as_secs_f64()
    );
}
