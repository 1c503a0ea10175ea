//! Encoded values at rest, packed with zstd and a fixed dictionary.
//!
//! Both stores keep protocol values in their rows (field maps, classifications, mutations). A
//! household's field map repeats its field paths and a classification its reason texts, and
//! one value is too short for zstd to find much on its own, so values are compressed against a
//! dictionary trained on typical encoded values ([`ROW_DICTIONARY_2`]). A 4.2 KB field map
//! packs to about 500 bytes, an 810-byte classification to about 155.
//!
//! A packed value is one tag byte and its body: [`PLAIN`] (the value as it is, for short
//! values and for any that would not shrink), or a zstd frame made with the dictionary the tag
//! names, its decompressed size in the frame header: [`DICTIONARY_2`], which [`pack`] writes,
//! or [`DICTIONARY_1`], which earlier builds wrote. The tag names the dictionary, so rows
//! packed with one stay readable when a later build adds another: **a dictionary never
//! changes** once rows are packed with it (`rows_packed_with_dictionary_N_stay_readable`
//! checks a value packed when each was made).
//!
//! Dictionary 2 is trained (`bench row-dictionary`), so it carries entropy tables as well as
//! content and a frame does not build its own: against dictionary 1, raw content, a field map
//! packs in 7.4 µs instead of 12.2 and unpacks in 2.4 µs instead of 4.7, to 505 bytes instead
//! of 611 (`bench`'s households of seed 42).

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe::CParameter;

use super::{CodecError, MAX_WINDOW_LOG};

/// The value follows as it is.
pub const PLAIN: u8 = 0;
/// A zstd frame made with [`ROW_DICTIONARY_1`] follows (written by earlier builds).
pub const DICTIONARY_1: u8 = 1;
/// A zstd frame made with [`ROW_DICTIONARY_2`] follows.
pub const DICTIONARY_2: u8 = 2;

/// Dictionary 1: a raw-content zstd dictionary, the concatenation of encoded values of
/// generated households. Frozen: see the module docs. Only read now.
pub const ROW_DICTIONARY_1: &[u8] = include_bytes!("row_dictionary_1.bin");
/// Dictionary 2: a zstd dictionary trained on the encoded field maps, classifications and
/// create mutations of generated households (`bench row-dictionary` wrote it). Frozen.
pub const ROW_DICTIONARY_2: &[u8] = include_bytes!("row_dictionary_2.bin");

/// Values shorter than this are kept as they are: the frame header would eat the gain.
pub const PACK_FROM_BYTES: usize = 96;
/// zstd level 1 on both ends: within 5% of level 3's size on rows, and with dictionary 2 it
/// packs a field map quicker (7.4 µs) than level -1 did with dictionary 1 (8.9 µs), which a
/// device used to pack the households a pull brings. Lower levels pack no quicker with it.
const LEVEL: i32 = 1;

fn encoder_dictionary() -> Option<&'static EncoderDictionary<'static>> {
    static DICTIONARY: OnceLock<Option<EncoderDictionary<'static>>> = OnceLock::new();
    DICTIONARY
        .get_or_init(|| EncoderDictionary::try_copy(ROW_DICTIONARY_2, LEVEL).ok())
        .as_ref()
}

/// The dictionary a tag names, as its place among the decoders and its bytes, if this build
/// knows it.
fn dictionary_of(tag: u8) -> Option<(usize, &'static [u8])> {
    match tag {
        DICTIONARY_1 => Some((0, ROW_DICTIONARY_1)),
        DICTIONARY_2 => Some((1, ROW_DICTIONARY_2)),
        _ => None,
    }
}

/// The dictionary a tag names, prepared for reading, if this build knows it.
fn decoder_dictionary(tag: u8) -> Option<&'static DecoderDictionary<'static>> {
    static DICTIONARIES: [OnceLock<Option<DecoderDictionary<'static>>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let (index, bytes) = dictionary_of(tag)?;
    DICTIONARIES[index]
        .get_or_init(|| DecoderDictionary::try_copy(bytes).ok())
        .as_ref()
}

thread_local! {
    // A context per thread: making one with a prepared dictionary costs more than packing a row.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    // One per dictionary, in `dictionary_of`'s places.
    static DECOMPRESSORS: [RefCell<Option<Decompressor<'static>>>; 2] =
        const { [RefCell::new(None), RefCell::new(None)] };
}

/// Packs an encoded value for a row: compressed with dictionary 2 when that makes it shorter.
pub fn pack(value: &[u8]) -> Vec<u8> {
    let compressed = (value.len() >= PACK_FROM_BYTES)
        .then(|| compress(value))
        .flatten()
        .filter(|frame| frame.len() + 1 < value.len());
    let (tag, body) = match &compressed {
        Some(frame) => (DICTIONARY_2, frame.as_slice()),
        None => (PLAIN, value),
    };
    let mut packed = Vec::with_capacity(1 + body.len());
    packed.push(tag);
    packed.extend_from_slice(body);
    packed
}

fn compress(value: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            let mut compressor =
                Compressor::with_prepared_dictionary(encoder_dictionary()?).ok()?;
            // The tag names the dictionary: the frame need not repeat its id.
            compressor
                .set_parameter(CParameter::DictIdFlag(false))
                .ok()?;
            *cell = Some(compressor);
        }
        cell.as_mut()?.compress(value).ok()
    })
}

fn decompress(tag: u8, frame: &[u8], size: usize) -> std::io::Result<Vec<u8>> {
    let (index, _) = dictionary_of(tag)
        .ok_or_else(|| std::io::Error::other(format!("tag {tag} names no dictionary")))?;
    DECOMPRESSORS.with(|cells| {
        let mut cell = cells[index].borrow_mut();
        let decompressor = match &mut *cell {
            Some(decompressor) => decompressor,
            empty => empty.insert(new_decompressor(tag)?),
        };
        decompressor.decompress(frame, size)
    })
}

fn new_decompressor(tag: u8) -> std::io::Result<Decompressor<'static>> {
    let dictionary = decoder_dictionary(tag)
        .ok_or_else(|| std::io::Error::other(format!("dictionary {tag} does not load")))?;
    let mut decompressor = Decompressor::with_prepared_dictionary(dictionary)?;
    decompressor.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))?;
    Ok(decompressor)
}

/// The length a value [`pack`] made unpacks to, read from its header without unpacking it.
pub fn unpacked_len(packed: &[u8]) -> Result<usize, CodecError> {
    match packed.split_first() {
        None => Err(CodecError::Empty),
        Some((&PLAIN, value)) => Ok(value.len()),
        Some((&(tag @ DICTIONARY_1 | tag @ DICTIONARY_2), frame)) => {
            match zstd::zstd_safe::get_frame_content_size(frame) {
                Ok(Some(size)) => Ok(usize::try_from(size).unwrap_or(usize::MAX)),
                Ok(None) => Err(corrupt(format!(
                    "the frame after tag {tag} does not say its size"
                ))),
                Err(_) => Err(corrupt("the frame header is damaged".into())),
            }
        }
        Some((&tag, _)) => Err(corrupt(format!(
            "tag {tag} names no dictionary this build knows"
        ))),
    }
}

fn corrupt(problem: String) -> CodecError {
    CodecError::Malformed(format!(
        "giá trị nén hỏng / the packed value is corrupt: {problem}"
    ))
}

/// Unpacks a value [`pack`] made, refusing one that would be longer than `limit` bytes before
/// allocating for it.
pub fn unpack(packed: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let malformed = |problem: String| {
        CodecError::Malformed(format!(
            "giá trị nén hỏng / the packed value is corrupt: {problem}"
        ))
    };
    match packed.split_first() {
        None => Err(CodecError::Empty),
        Some((&PLAIN, value)) if value.len() > limit => Err(CodecError::TooLarge {
            got: value.len(),
            limit,
        }),
        Some((&PLAIN, value)) => Ok(value.to_vec()),
        Some((&(tag @ DICTIONARY_1 | tag @ DICTIONARY_2), frame)) => {
            let size = match zstd::zstd_safe::get_frame_content_size(frame) {
                Ok(Some(size)) => size,
                Ok(None) => return Err(malformed("the frame does not say its size".into())),
                Err(_) => return Err(malformed("the frame header is damaged".into())),
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > limit {
                return Err(CodecError::TooLarge { got: size, limit });
            }
            let value =
                decompress(tag, frame, size).map_err(|error| malformed(error.to_string()))?;
            if value.len() == size {
                Ok(value)
            } else {
                Err(malformed(format!(
                    "{} bytes where the header says {size}",
                    value.len()
                )))
            }
        }
        Some((&tag, _)) => Err(malformed(format!(
            "tag {tag} names no dictionary this build knows"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value both golden frames hold: paths, names and reason texts, as rows have them.
    const GOLDEN_VALUE: &str = "dwelling.floor_area_m2 members.full_name Nguyễn Thị Hoa, thôn \
                                Bản Mường; không có bảo hiểm y tế / no health insurance";

    /// A golden frame, packed when its dictionary was made, read back today.
    fn unpack_golden(hex: &str) -> Result<Vec<u8>, CodecError> {
        let packed: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
            .collect();
        unpack(&packed, 1024)
    }

    // If one of these fails, its dictionary changed and every stored row packed with it is
    // unreadable: restore the dictionary and add a new one instead.
    #[test]
    fn rows_packed_with_dictionary_1_stay_readable() {
        let golden = "0128b52ffd2087bd0100887368e1bb8b20486f612c42e1baa36e203b0a00111e4b\
                      4095640a24698cdf5c8294a091e5e3ad9801d33bfbf02d9685f39c0377531c20";
        assert_eq!(unpack_golden(golden), Ok(GOLDEN_VALUE.as_bytes().to_vec()));
    }

    #[test]
    fn rows_packed_with_dictionary_2_stay_readable() {
        let golden = "0228b52ffd2087b501007868e1bb8b42e1baa36e203b6e6f20200cfc1888605df0\
                      62dc06443818694958aa84801989c643190b8e9605c97280f301256071f04f";
        assert_eq!(unpack_golden(golden), Ok(GOLDEN_VALUE.as_bytes().to_vec()));
    }

    #[test]
    fn both_dictionaries_load() {
        assert!(encoder_dictionary().is_some());
        assert!(decoder_dictionary(DICTIONARY_1).is_some());
        assert!(decoder_dictionary(DICTIONARY_2).is_some());
        assert!(decoder_dictionary(3).is_none());
    }

    #[test]
    fn values_round_trip_and_short_ones_stay_plain() {
        let short = b"Submitted".to_vec();
        assert_eq!(pack(&short)[0], PLAIN);
        assert_eq!(unpack(&pack(&short), 100), Ok(short.clone()));
        let long = "members.0193a1b2-0000-7000-8000-000000000001.full_name Nguyễn Thị Hoa; "
            .repeat(20)
            .into_bytes();
        let packed = pack(&long);
        assert_eq!(packed[0], DICTIONARY_2);
        assert!(packed.len() * 5 < long.len(), "{} bytes", packed.len());
        assert_eq!(unpack(&packed, long.len()), Ok(long.clone()));
    }

    #[test]
    fn damaged_or_oversized_values_are_errors() {
        let long = "thôn Bản Mường, xã Mường Lát; ".repeat(40).into_bytes();
        let packed = pack(&long);
        assert!(matches!(
            unpack(&packed, long.len() - 1),
            Err(CodecError::TooLarge { .. })
        ));
        assert_eq!(unpack(&[], 10), Err(CodecError::Empty));
        assert!(matches!(
            unpack(&[9, 1, 2], 10),
            Err(CodecError::Malformed(_))
        ));
        for cut in [2, 5, packed.len() / 2, packed.len() - 1] {
            assert!(unpack(&packed[..cut], long.len()).is_err(), "cut at {cut}");
        }
        let mut flipped = packed.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x55;
        // A flipped byte inside the frame either fails or yields other bytes of the same
        // length; it never panics. (Rows carry their own checksums in the journal.)
        if let Ok(value) = unpack(&flipped, long.len()) {
            assert_eq!(value.len(), long.len());
        }
    }
}
