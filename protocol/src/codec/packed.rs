//! Encoded values at rest, packed with zstd and a fixed dictionary.
//!
//! Both stores keep protocol values in their rows (field maps, classifications, mutations). A
//! household's field map repeats its field paths and a classification its reason texts, and
//! one value is too short for zstd to find much on its own, so values are compressed against a
//! dictionary of typical encoded values: field maps, a mutation and classifications
//! ([`ROW_DICTIONARY_1`]). A 4.2 KB field map packs to about 610 bytes, a 850-byte
//! classification to about 190.
//!
//! A packed value is one tag byte and its body: [`PLAIN`] (the value as it is, for short
//! values and for any that would not shrink) or [`DICTIONARY_1`] (a zstd frame made with
//! dictionary 1, its decompressed size in the frame header). The tag names the dictionary, so
//! rows packed with this one stay readable when a later build adds another: **dictionary 1
//! never changes** (`rows_packed_with_dictionary_1_stay_readable` checks a value packed when
//! it was made).

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::{CodecError, MAX_WINDOW_LOG};

/// The value follows as it is.
pub const PLAIN: u8 = 0;
/// A zstd frame made with [`ROW_DICTIONARY_1`] follows.
pub const DICTIONARY_1: u8 = 1;

/// Dictionary 1: a raw-content zstd dictionary, the concatenation of encoded values of
/// generated households (`bench row-dictionary` wrote it). Frozen: see the module docs.
pub const ROW_DICTIONARY_1: &[u8] = include_bytes!("row_dictionary_1.bin");

/// Values shorter than this are kept as they are: the frame header would eat the gain.
pub const PACK_FROM_BYTES: usize = 96;
/// How hard [`pack_with`] compresses. Every level makes the same kind of frame with the same
/// dictionary, so unpacking does not depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    /// zstd level 1: within 5% of level 3's size on rows, and the writer does it under its
    /// lock. The registry packs so: its disk use is a target.
    Registry,
    /// zstd level -1: a household's field map in 7.4 µs where level 1 takes 10.8, for 6% more
    /// bytes (651 against 614; `bench`'s households). A device packs so: it packs every
    /// household a pull brings, and its store of a commune is a few megabytes either way.
    Device,
}

impl Effort {
    fn level(self) -> i32 {
        match self {
            Effort::Registry => 1,
            Effort::Device => -1,
        }
    }

    fn index(self) -> usize {
        match self {
            Effort::Registry => 0,
            Effort::Device => 1,
        }
    }
}

fn encoder_dictionary(effort: Effort) -> Option<&'static EncoderDictionary<'static>> {
    static DICTIONARIES: [OnceLock<Option<EncoderDictionary<'static>>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    DICTIONARIES[effort.index()]
        .get_or_init(|| EncoderDictionary::try_copy(ROW_DICTIONARY_1, effort.level()).ok())
        .as_ref()
}

fn decoder_dictionary() -> Option<&'static DecoderDictionary<'static>> {
    static DICTIONARY: OnceLock<Option<DecoderDictionary<'static>>> = OnceLock::new();
    DICTIONARY
        .get_or_init(|| DecoderDictionary::try_copy(ROW_DICTIONARY_1).ok())
        .as_ref()
}

thread_local! {
    // A context per thread: making one with a prepared dictionary costs more than packing a row.
    static COMPRESSORS: [RefCell<Option<Compressor<'static>>>; 2] =
        const { [RefCell::new(None), RefCell::new(None)] };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Packs an encoded value for a registry row: compressed with dictionary 1 when that makes it
/// shorter.
pub fn pack(value: &[u8]) -> Vec<u8> {
    pack_with(value, Effort::Registry)
}

/// Packs an encoded value as [`pack`] does, with the given effort.
pub fn pack_with(value: &[u8], effort: Effort) -> Vec<u8> {
    let compressed = (value.len() >= PACK_FROM_BYTES)
        .then(|| compress(value, effort))
        .flatten()
        .filter(|frame| frame.len() + 1 < value.len());
    let (tag, body) = match &compressed {
        Some(frame) => (DICTIONARY_1, frame.as_slice()),
        None => (PLAIN, value),
    };
    let mut packed = Vec::with_capacity(1 + body.len());
    packed.push(tag);
    packed.extend_from_slice(body);
    packed
}

fn compress(value: &[u8], effort: Effort) -> Option<Vec<u8>> {
    COMPRESSORS.with(|cells| {
        let mut cell = cells[effort.index()].borrow_mut();
        if cell.is_none() {
            let dictionary = encoder_dictionary(effort)?;
            *cell = Some(Compressor::with_prepared_dictionary(dictionary).ok()?);
        }
        cell.as_mut()?.compress(value).ok()
    })
}

fn decompress(frame: &[u8], size: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let decompressor = match &mut *cell {
            Some(decompressor) => decompressor,
            empty => empty.insert(new_decompressor()?),
        };
        decompressor.decompress(frame, size)
    })
}

fn new_decompressor() -> std::io::Result<Decompressor<'static>> {
    let dictionary =
        decoder_dictionary().ok_or_else(|| std::io::Error::other("dictionary 1 does not load"))?;
    let mut decompressor = Decompressor::with_prepared_dictionary(dictionary)?;
    decompressor.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))?;
    Ok(decompressor)
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
        Some((&DICTIONARY_1, frame)) => {
            let size = match zstd::zstd_safe::get_frame_content_size(frame) {
                Ok(Some(size)) => size,
                Ok(None) => return Err(malformed("the frame does not say its size".into())),
                Err(_) => return Err(malformed("the frame header is damaged".into())),
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > limit {
                return Err(CodecError::TooLarge { got: size, limit });
            }
            let value = decompress(frame, size).map_err(|error| malformed(error.to_string()))?;
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

    #[test]
    fn rows_packed_with_dictionary_1_stay_readable() {
        // Packed when dictionary 1 was made. If this fails, dictionary 1 changed and every
        // stored row packed with it is unreadable: restore it and add a dictionary 2 instead.
        let golden = "0128b52ffd2087bd0100887368e1bb8b20486f612c42e1baa36e203b0a00111e4b\
                      4095640a24698cdf5c8294a091e5e3ad9801d33bfbf02d9685f39c0377531c20";
        let packed: Vec<u8> = (0..golden.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&golden[at..at + 2], 16).expect("hex"))
            .collect();
        let value = "dwelling.floor_area_m2 members.full_name Nguyễn Thị Hoa, thôn Bản Mường; \
                     không có bảo hiểm y tế / no health insurance";
        assert_eq!(unpack(&packed, 1024), Ok(value.as_bytes().to_vec()));
    }

    #[test]
    fn dictionary_1_loads_both_ways() {
        assert!(encoder_dictionary(Effort::Registry).is_some());
        assert!(encoder_dictionary(Effort::Device).is_some());
        assert!(decoder_dictionary().is_some());
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
        assert_eq!(packed[0], DICTIONARY_1);
        assert!(packed.len() * 5 < long.len(), "{} bytes", packed.len());
        assert_eq!(unpack(&packed, long.len()), Ok(long.clone()));
        // A device's rows, packed with less effort, unpack the same way.
        let quick = pack_with(&long, Effort::Device);
        assert_eq!(quick[0], DICTIONARY_1);
        assert!(quick.len() * 5 < long.len(), "{} bytes", quick.len());
        assert_eq!(unpack(&quick, long.len()), Ok(long.clone()));
        assert_eq!(pack_with(&short, Effort::Device)[0], PLAIN);
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
