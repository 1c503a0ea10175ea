//! `bench page-sizes`: the bytes of a commune's pull pages in each layout, raw and compressed as
//! they travel, and the time to write and read them; no server, no device. What chose the pull
//! page's layout and its zstd level (`protocol::codec::pull_page`).

use std::time::Instant;

use anyhow::Context;
use protocol::access::Scope;
use protocol::codec::{self, pull_page};
use protocol::fields::{flatten, EncodedFields};
use protocol::sync::{HouseholdChange, PullResponse, ReviewState, MAX_RESPONSE_BYTES};

use crate::gen::Generator;

/// Rounds of encoding and decoding every page, for the times.
const ROUNDS: usize = 10;

pub fn run(households: usize, page: usize, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        households > 0 && page > 0,
        "--households and --page must be at least 1"
    );
    let generator = Generator::new(seed, households)?;
    let changes: Vec<HouseholdChange> = (0..households)
        .map(|index| {
            let household = generator.household(index);
            HouseholdChange {
                seq: index as u64 + 1,
                household_id: household.id,
                rev: 1,
                fields: EncodedFields::encode(&flatten(&household)),
                review: ReviewState::Submitted,
                in_conflict: false,
            }
        })
        .collect();
    let pages: Vec<PullResponse> = changes
        .chunks(page)
        .map(|chunk| PullResponse {
            changes: chunk.to_vec(),
            next_cursor: chunk.last().map_or(0, |change| change.seq),
            more: true,
            outcomes: Vec::new(),
            left_scope: Vec::new(),
            scope: Scope::Communes(vec![generator.commune_of(0).to_string()]),
        })
        .collect();

    let layout_1: Vec<Vec<u8>> = pages.iter().map(codec::encode).collect();
    let layout_2: Vec<Vec<u8>> = pages.iter().map(pull_page::encode).collect();
    for (encoded, page) in layout_2.iter().zip(&pages) {
        let read = pull_page::decode(encoded, MAX_RESPONSE_BYTES).context("reading layout 2")?;
        anyhow::ensure!(
            read == *page,
            "a layout-2 page did not read back as written"
        );
    }
    let per_household = |bytes: usize| bytes as f64 / households as f64;
    let sizes = |encoded: &[Vec<u8>], compress: fn(&[u8]) -> Option<Vec<u8>>| {
        let raw: usize = encoded.iter().map(Vec::len).sum();
        let compressed: usize = encoded
            .iter()
            .map(|bytes| compress(bytes).map_or(bytes.len(), |c| c.len()))
            .sum();
        (per_household(raw), per_household(compressed))
    };
    println!("{households} households of seed {seed} in pages of {page}, bytes a household:");
    println!("layout  raw     zstd 1 (requests)  zstd 3 (replies)");
    for (name, encoded) in [("1", &layout_1), ("2", &layout_2)] {
        let (raw, at_1) = sizes(encoded, codec::compress);
        let (_, at_3) = sizes(encoded, codec::compress_reply);
        println!("{name:<7} {raw:<7.0} {at_1:<18.0} {at_3:.0}");
    }

    let micros_per_household =
        |started: Instant| started.elapsed().as_secs_f64() * 1e6 / (households * ROUNDS) as f64;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        for page in &pages {
            std::hint::black_box(pull_page::encode(page));
        }
    }
    let encode_2 = micros_per_household(started);
    let decode = |encoded: &[Vec<u8>]| -> anyhow::Result<f64> {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            for bytes in encoded {
                std::hint::black_box(pull_page::decode(bytes, MAX_RESPONSE_BYTES)?);
            }
        }
        Ok(micros_per_household(started))
    };
    let (decode_1, decode_2) = (decode(&layout_1)?, decode(&layout_2)?);
    let started = Instant::now();
    for _ in 0..ROUNDS {
        for bytes in &layout_2 {
            std::hint::black_box(codec::compress_reply(bytes));
        }
    }
    let compress_2 = micros_per_household(started);
    println!(
        "µs a household: layout 2 written {encode_2:.1}, compressed {compress_2:.1}, read \
         {decode_2:.1}; layout 1 read {decode_1:.1}"
    );
    Ok(())
}
