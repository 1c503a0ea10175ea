//! The one codec: bincode 1.3.3 with varint integers, a byte limit on every decode, and
//! trailing bytes rejected. Nothing else in the workspace names bincode.
//!
//! Every encoded message starts with its protocol version as two little-endian bytes, so an
//! unknown version is recognised before the body is read, and a newer server can keep the old
//! body decoders beside the new ones.
//!
//! Over HTTP a message of [`COMPRESS_FROM_BYTES`] or more may travel compressed, as the
//! `Content-Encoding` [`CONTENT_CODING`] ([`compress`] a request, [`compress_reply`] a reply,
//! [`decompress`] either); the limit of a decode applies to the message as it is after
//! decompression.

pub mod packed;
pub mod packed_push;
pub mod pull_page;

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

use crate::sync::PROTOCOL_VERSION;

/// Protocol versions this build decodes.
pub const SUPPORTED_VERSIONS: &[u16] = &[PROTOCOL_VERSION];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("thông điệp rỗng / the message is empty: send a version and a body")]
    Empty,
    #[error("thông điệp dài {got} byte, vượt giới hạn {limit} / the message is {got} bytes, over the limit of {limit}: send fewer items per request")]
    TooLarge { got: usize, limit: usize },
    #[error("phiên bản giao thức {got} không được hỗ trợ / protocol version {got} is not supported (this build reads {supported:?}): update the field app, or the server if the app is newer")]
    UnsupportedVersion { got: u16, supported: Vec<u16> },
    #[error("thông điệp bị cắt cụt / the message is truncated: it ends before its last field; resend it whole")]
    Truncated,
    #[error(
        "thông điệp có byte thừa ở cuối / the message has trailing bytes after its last field"
    )]
    TrailingBytes,
    #[error("thông điệp không đọc được / the message is malformed: {0}")]
    Malformed(String),
}

/// The wire format: bincode with varint integers, little-endian.
fn wire() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
}

/// Decoding a whole message: at most `limit` bytes, and nothing after its last field.
fn options(limit: usize) -> impl Options {
    wire().with_limit(limit as u64).reject_trailing_bytes()
}

/// What [`encode`] starts with: room for most values (a classification is about 850 bytes),
/// so that one is not grown from empty through every size as it is written (about a tenth of
/// encoding and packing a classification).
const ENCODE_CAPACITY: usize = 1024;

/// Encodes a message with the current protocol version in front.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCODE_CAPACITY);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    encode_body_into(&mut out, message);
    out
}

/// Appends a value's encoding without the version: a part of a message built piece by piece
/// ([`pull_page`]).
fn encode_body_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serializing our own in-memory types into a Vec cannot fail: no I/O, no size limit. No
    // limit at all, rather than the largest: with one, bincode walks the message twice, once
    // to size it against the limit (a third of a field map's encoding time).
    if let Err(error) = wire().with_no_limit().serialize_into(out, value) {
        unreachable!("encoding an in-memory message failed: {error}");
    }
}

/// Reads a value from the front of `rest` and moves `rest` past it: a part of a message read
/// piece by piece ([`pull_page`]).
fn decode_part<T: DeserializeOwned>(rest: &mut &[u8]) -> Result<T, CodecError> {
    wire()
        .with_limit(rest.len() as u64)
        .allow_trailing_bytes()
        .deserialize_from(rest)
        .map_err(|error| classify(*error))
}

/// Decodes a message of at most `limit` bytes, version prefix included.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    let body = body(bytes, limit)?;
    // The limit bounds what bincode may read. What a length prefix may make it preallocate is
    // bounded by the messages themselves: their lists decode through [`bounded_vec`].
    options(body.len())
        .deserialize(body)
        .map_err(|error| classify(*error))
}

/// Decodes a whole message body (after its version) as `T`, which may borrow from it.
fn decode_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, CodecError> {
    options(body.len())
        .deserialize(body)
        .map_err(|error| classify(*error))
}

/// The body of a message of at most `limit` bytes, after its version, once the version is
/// known to be one this build reads.
pub(crate) fn body(bytes: &[u8], limit: usize) -> Result<&[u8], CodecError> {
    let (version, body) = versioned(bytes, limit)?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CodecError::UnsupportedVersion {
            got: version,
            supported: SUPPORTED_VERSIONS.to_vec(),
        });
    }
    Ok(body)
}

/// The version a message of at most `limit` bytes starts with, and its body after it,
/// whichever the version.
pub(crate) fn versioned(bytes: &[u8], limit: usize) -> Result<(u16, &[u8]), CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            got: bytes.len(),
            limit,
        });
    }
    match bytes {
        [] => Err(CodecError::Empty),
        [_] => Err(CodecError::Truncated),
        [lo, hi, body @ ..] => Ok((u16::from_le_bytes([*lo, *hi]), body)),
    }
}

/// Decodes a list without trusting its length prefix for the allocation: room for what the
/// prefix claims up to [`UP_FRONT_BYTES`], and the rest grows as items actually arrive, so a
/// message claiming billions of items in a few bytes is refused having allocated little more
/// than it is long. (serde preallocates up to 1 MiB for any claimed length.) Every `Vec` in a
/// message carries `#[serde(deserialize_with = "crate::codec::bounded_vec")]`.
pub fn bounded_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Bounded<T>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let most = (UP_FRONT_BYTES / std::mem::size_of::<T>().max(1)).max(16);
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(most));
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_seq(Bounded(std::marker::PhantomData))
}

/// Most bytes a list reserves for its claimed length before its items arrive: room for a
/// household's ~90 field changes and a push's 200 mutations, so that they are not copied as
/// they grow (about 2% of the server's work in a first push from 50 devices, with the page
/// faults of the fresh memory). A lying prefix costs at most this much per list being read.
const UP_FRONT_BYTES: usize = 16 * 1024;

/// The HTTP content coding of a compressed message (`Content-Encoding`, `Accept-Encoding`).
pub const CONTENT_CODING: &str = "zstd";
/// Messages shorter than this travel as they are: compression would save a few bytes at most.
pub const COMPRESS_FROM_BYTES: usize = 1024;
/// The zstd level of a request (a push): level 1. A push's field changes repeat whole paths,
/// which every level finds; on pages of whole maps (layout 1) level 1 came out as small as
/// level 3 (429 and 430 bytes a household) in four fifths of the time.
const REQUEST_LEVEL: i32 = 1;
/// The zstd level of a reply (a pull page): level 3. A layout-2 page ([`pull_page`]) has no
/// repeated paths left; its columns of values gain from the longer search: 158 bytes a
/// household where level 1 gives 172, for about half a microsecond more a household (`bench
/// page-sizes`, pages of 1,000).
const REPLY_LEVEL: i32 = 3;
/// The largest match window a compressed message may ask the decoder for (2 MiB, what level 3
/// uses), so that a small hostile frame cannot make it allocate the 128 MiB zstd allows.
const MAX_WINDOW_LOG: u32 = 21;

/// Compresses an encoded request for the wire, or `None` when it is short enough to send as
/// it is (or when compressing it would not make it shorter).
pub fn compress(message: &[u8]) -> Option<Vec<u8>> {
    compress_at(message, REQUEST_LEVEL)
}

/// Compresses an encoded reply for the wire, as [`compress`] does a request.
pub fn compress_reply(message: &[u8]) -> Option<Vec<u8>> {
    compress_at(message, REPLY_LEVEL)
}

fn compress_at(message: &[u8], level: i32) -> Option<Vec<u8>> {
    if message.len() < COMPRESS_FROM_BYTES {
        return None;
    }
    let mut compressor = zstd::bulk::Compressor::new(level).ok()?;
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::WindowLog(MAX_WINDOW_LOG))
        .ok()?;
    let compressed = compressor.compress(message).ok()?;
    (compressed.len() < message.len()).then_some(compressed)
}

/// Decompresses a message that came with `Content-Encoding: zstd`, refusing one that would
/// grow past `limit` bytes: it stops reading at the limit and never reserves more than the
/// limit, so a small body that would expand to gigabytes costs no more than `limit`.
pub fn decompress(compressed: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    use std::io::Read;
    let malformed = |error: std::io::Error| {
        CodecError::Malformed(format!(
            "nội dung nén zstd hỏng / the zstd body is corrupt: {error}"
        ))
    };
    // A frame that states its size (as `compress` writes them) is decompressed in one pass
    // into a buffer of that size: streamed in chunks, a push's 900 KB were copied twice and
    // the buffer regrown on the way. A frame that lies about its size fails; a frame that
    // states none, or more frames after it, are streamed.
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(compressed) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > limit {
            return Err(CodecError::TooLarge { got: size, limit });
        }
        let frame = zstd::zstd_safe::find_frame_compressed_size(compressed).ok();
        if frame == Some(compressed.len()) {
            let mut decompressor = zstd::bulk::Decompressor::new().map_err(malformed)?;
            decompressor
                .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))
                .map_err(malformed)?;
            let message = decompressor
                .decompress(compressed, size)
                .map_err(malformed)?;
            if message.len() != size {
                return Err(CodecError::Malformed(format!(
                    "nội dung nén zstd hỏng / the zstd body is corrupt: it states {size} bytes and holds {}",
                    message.len()
                )));
            }
            return Ok(message);
        }
    }
    let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(malformed)?;
    decoder.window_log_max(MAX_WINDOW_LOG).map_err(malformed)?;
    // Grown by hand rather than by `read_to_end`, whose doubling could reserve twice the limit.
    let mut message: Vec<u8> = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(message),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(malformed(error)),
        };
        let len = message.len() + read;
        if len > limit {
            return Err(CodecError::TooLarge { got: len, limit });
        }
        if len > message.capacity() {
            let grown = message.capacity().saturating_mul(2).clamp(len, limit);
            message.reserve_exact(grown - message.len());
        }
        message.extend_from_slice(&chunk[..read]);
    }
}

fn classify(error: bincode::ErrorKind) -> CodecError {
    match error {
        bincode::ErrorKind::Io(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            CodecError::Truncated
        }
        bincode::ErrorKind::SizeLimit => CodecError::Truncated,
        bincode::ErrorKind::Custom(ref text) if text.contains("bytes remaining") => {
            CodecError::TrailingBytes
        }
        other => CodecError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{PullRequest, PushRequest};
    use uuid::Uuid;

    fn pull() -> PullRequest {
        PullRequest {
            device_id: Uuid::from_u128(7),
            cursor: 42,
            limit: 100,
            outcomes_from: 1,
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let bytes = encode(&pull());
        assert_eq!(decode::<PullRequest>(&bytes, 1024), Ok(pull()));
        assert_eq!(decode::<PullRequest>(&[], 1024), Err(CodecError::Empty));
        assert_eq!(
            decode::<PullRequest>(&bytes[..bytes.len() - 1], 1024),
            Err(CodecError::Truncated)
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            decode::<PullRequest>(&long, 1024),
            Err(CodecError::TrailingBytes)
        );
        assert!(matches!(
            decode::<PullRequest>(&bytes, 4),
            Err(CodecError::TooLarge { .. })
        ));
        let mut future = bytes.clone();
        future[0] = 99;
        assert!(matches!(
            decode::<PullRequest>(&future, 1024),
            Err(CodecError::UnsupportedVersion { got: 99, .. })
        ));
    }

    #[test]
    fn a_lying_length_prefix_does_not_allocate() {
        // A push claiming four billion mutations in a few bytes.
        let mut bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.extend_from_slice(&[0xfc, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode::<PushRequest>(&bytes, 1024).is_err());
    }

    #[test]
    fn compressed_messages_round_trip_within_their_limit() {
        assert_eq!(
            compress(&encode(&pull())),
            None,
            "a short message travels as it is"
        );
        let message = "Nguyễn Thị Hoa, thôn Bản Mường; ".repeat(200).into_bytes();
        let compressed = compress(&message).expect("a long, repetitive message compresses");
        assert!(
            compressed.len() * 5 < message.len(),
            "{} bytes",
            compressed.len()
        );
        assert_eq!(decompress(&compressed, message.len()), Ok(message.clone()));
        assert!(matches!(
            decompress(&compressed, message.len() - 1),
            Err(CodecError::TooLarge { limit, .. }) if limit == message.len() - 1
        ));
    }

    #[test]
    fn a_compressed_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to a few kilobytes; the decoder stops after the limit.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let bomb = zstd::bulk::compress(&zeros, 3).expect("compress");
        assert!(bomb.len() < 64 * 1024);
        assert!(matches!(
            decompress(&bomb, 1024 * 1024),
            Err(CodecError::TooLarge {
                limit: 1_048_576,
                ..
            })
        ));
    }

    #[test]
    fn a_corrupt_or_greedy_frame_is_refused() {
        let message = "hộ cận nghèo ".repeat(500).into_bytes();
        let mut compressed = compress(&message).expect("compresses");
        let last = compressed.len() - 1;
        compressed[last] ^= 0xff;
        compressed.truncate(last - 2);
        assert!(matches!(
            decompress(&compressed, 1 << 20),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decompress(b"not zstd", 1 << 20),
            Err(CodecError::Malformed(_))
        ));
        // A frame that asks for a 128 MiB window: streamed, it is refused. One that states its
        // size is decompressed into a buffer of that size, which the limit bounds.
        let mut greedy = zstd::bulk::Compressor::new(3).expect("compressor");
        greedy
            .set_parameter(zstd::zstd_safe::CParameter::WindowLog(27))
            .expect("window");
        greedy
            .set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(
                true,
            ))
            .expect("long");
        let big = vec![7u8; 8 * 1024 * 1024];
        let sized = greedy.compress(&big).expect("compress");
        assert_eq!(decompress(&sized, 16 * 1024 * 1024).as_ref(), Ok(&big));
        assert!(matches!(
            decompress(&sized, 4 * 1024 * 1024),
            Err(CodecError::TooLarge { .. })
        ));
        greedy
            .set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
            .expect("no size");
        let unsized_frame = greedy.compress(&big).expect("compress");
        assert!(matches!(
            decompress(&unsized_frame, 16 * 1024 * 1024),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn frames_with_or_without_their_size_decompress_alike() {
        let message = "Nguyễn Văn An, xã Tân Lập; ".repeat(300).into_bytes();
        let sized = compress(&message).expect("compresses");
        let mut compressor = zstd::bulk::Compressor::new(1).expect("compressor");
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
            .expect("no size");
        let unsized_frame = compressor.compress(&message).expect("compress");
        let mut two_frames = sized.clone();
        two_frames.extend_from_slice(&sized);
        let twice = [message.as_slice(), message.as_slice()].concat();
        for (frame, expected) in [
            (&sized, &message),
            (&unsized_frame, &message),
            (&two_frames, &twice),
        ] {
            assert_eq!(decompress(frame, 1 << 20).as_ref(), Ok(expected));
            assert!(matches!(
                decompress(frame, expected.len() - 1),
                Err(CodecError::TooLarge { .. })
            ));
        }
    }
}
