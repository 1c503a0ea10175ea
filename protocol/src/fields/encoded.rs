//! A field map carried as its codec bytes ([`EncodedFields`]), checked and read by a scan of
//! those bytes rather than decoded.

use std::cmp::Ordering;
use std::fmt;

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{FieldMap, FieldValue, Leaf, MAX_LIST_DEPTH};
use crate::codec::{self, CodecError};
use crate::household::Household;

/// A field map as the protocol codec encodes it (`codec::encode(&map)`), held without being
/// decoded.
///
/// A pull page moves each household's map from the registry's row to the device's row, and
/// neither end needs the map itself to do that. Decoding ~90 owned paths and values and
/// encoding them again was most of what a pulled household cost either end; a scan that checks
/// the bytes costs a tenth of that ([`codec::pull_page`] copies them in and out of the page).
/// Inside any message it is a field map, byte for byte, so the messages that carry one are
/// the same as when they carried a `FieldMap`.
///
/// Every way of making one leaves the bytes exactly as `codec::encode` writes the map they
/// decode to: paths in strictly ascending order, each number in its shortest form. So equal
/// bytes are equal maps.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedFields(Vec<u8>);

impl EncodedFields {
    pub fn encode(fields: &FieldMap) -> EncodedFields {
        EncodedFields(codec::encode(fields))
    }

    /// Takes the codec bytes of a field map, as a store keeps them. Bytes that do not decode
    /// as a field map are an error. Bytes that decode but not as `codec::encode` writes that
    /// map (paths out of order or repeated, numbers in a longer form) are written again.
    pub fn from_codec_bytes(bytes: Vec<u8>) -> Result<EncodedFields, CodecError> {
        let body = codec::body(&bytes, bytes.len())?;
        let scan = scan_field_map(body)?;
        if scan.len < body.len() {
            return Err(CodecError::TrailingBytes);
        }
        EncodedFields::as_encode_writes(bytes, scan.canonical)
    }

    /// Takes a map's codec bytes from a caller that built them from parts it checked as a scan
    /// checks them, and found as `codec::encode` writes the map: paths UTF-8 and strictly
    /// ascending, every value checked by [`checked_value_len`] and in its shortest form, counts
    /// and lengths as the codec writes them. `codec::pull_page` builds maps so, from paths and
    /// values it checks once a page, not once a map.
    pub(crate) fn from_checked_parts(bytes: Vec<u8>) -> EncodedFields {
        EncodedFields(bytes)
    }

    /// Reads the field map at the front of `body` (a message's bytes after its version) and
    /// says how many bytes it took.
    pub(crate) fn read_from(body: &[u8]) -> Result<(EncodedFields, usize), CodecError> {
        let scan = scan_field_map(body)?;
        let map = body.get(..scan.len).ok_or(CodecError::Truncated)?;
        let mut bytes = Vec::with_capacity(VERSION_BYTES + map.len());
        bytes.extend_from_slice(&crate::sync::PROTOCOL_VERSION.to_le_bytes());
        bytes.extend_from_slice(map);
        Ok((
            EncodedFields::as_encode_writes(bytes, scan.canonical)?,
            scan.len,
        ))
    }

    /// Scanned codec bytes of a map, kept when they are as `codec::encode` writes the map
    /// (`canonical`), else decoded and written again.
    fn as_encode_writes(bytes: Vec<u8>, canonical: bool) -> Result<EncodedFields, CodecError> {
        if canonical {
            return Ok(EncodedFields(bytes));
        }
        codec::decode(&bytes, bytes.len()).map(|fields: FieldMap| EncodedFields::encode(&fields))
    }

    /// The map itself.
    pub fn decode(&self) -> Result<FieldMap, CodecError> {
        codec::decode(&self.0, self.0.len())
    }

    /// The text at `path`, read in place; `None` when the map has no text there.
    pub fn text(&self, path: &str) -> Option<&str> {
        // The bytes were checked when this was made, so the walk to `path` only skips: it
        // compares paths as bytes (the order of UTF-8 text) and checks no text on the way.
        let mut scanner = Scanner::new(self.body());
        for _ in 0..scanner.varint().ok()? {
            let at = scanner.text_bytes().ok()?;
            let text = scanner.value(0, false).ok()?;
            // Paths are in order (see the type's docs): past `path`, it is not there.
            match at.cmp(path.as_bytes()) {
                Ordering::Less => {}
                Ordering::Equal => return text.and_then(|text| std::str::from_utf8(text).ok()),
                Ordering::Greater => return None,
            }
        }
        None
    }

    /// The map's entries in order, each path with its value's codec bytes: for a page that lays
    /// maps out its own way (`codec::pull_page`).
    pub(crate) fn entries(&self) -> Entries<'_> {
        let mut scanner = Scanner::new(self.body());
        // The bytes were checked when this was made; a count that does not read is no entries.
        let left = scanner.varint().unwrap_or(0);
        Entries { scanner, left }
    }

    /// The codec bytes, as `codec::encode` writes the map.
    pub fn codec_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The map's bytes inside a message: the codec bytes without the version.
    pub(crate) fn body(&self) -> &[u8] {
        self.0.get(VERSION_BYTES..).unwrap_or_default()
    }
}

/// The protocol version in front of every encoded value.
const VERSION_BYTES: usize = 2;

/// A text's variant, in `FieldValue`'s order.
const TEXT: u64 = 4;

impl Default for EncodedFields {
    fn default() -> EncodedFields {
        EncodedFields::encode(&FieldMap::new())
    }
}

impl fmt::Debug for EncodedFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decode() {
            Ok(fields) => f.debug_tuple("EncodedFields").field(&fields).finish(),
            Err(error) => write!(f, "EncodedFields({} bytes: {error})", self.0.len()),
        }
    }
}

/// Through serde (any format, and any message but the pull page, which copies the bytes), an
/// encoded map is decoded and encoded like the map.
impl Serialize for EncodedFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.decode()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EncodedFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EncodedFields, D::Error> {
        FieldMap::deserialize(deserializer).map(|fields| EncodedFields::encode(&fields))
    }
}

/// A field map's codec bytes (at most `limit` long, version in front) decoded into its entries
/// in the order the bytes hold them, each made into what the caller keeps by `entry`, as
/// `codec::decode` decodes a list of paths and values, with the same kinds of error; and
/// whether the bytes are exactly as `codec::encode` writes the map they make (paths strictly
/// ascending, every number in its shortest form). One pass does both: a scan, then serde's
/// decode, had each walked a pushed record, and together they were a sixth of the server's
/// work on it.
///
/// The paths are handed over as they lie in `bytes` (checked as UTF-8): a caller that keeps
/// them copies them, one that only reads the record does not.
pub(crate) fn decode_entries<'a, T>(
    bytes: &'a [u8],
    limit: usize,
    mut entry: impl FnMut(&'a str, Leaf<'a>) -> T,
) -> Result<(Vec<T>, bool), CodecError> {
    let body = codec::body(bytes, limit)?;
    let mut scanner = Scanner::new(body);
    let count = scanner.varint()?;
    // Each entry takes at least two bytes: a claimed count beyond them allocates no more.
    let mut entries =
        Vec::with_capacity(usize::try_from(count).map_or(0, |n| n.min(body.len() / 2)));
    let mut previous: Option<&[u8]> = None;
    for _ in 0..count {
        let path = scanner.text_bytes()?;
        if previous.is_some_and(|previous| previous >= path) {
            scanner.canonical = false;
        }
        previous = Some(path);
        let path = std::str::from_utf8(path).map_err(|_| malformed("a text is not UTF-8"))?;
        entries.push(entry(path, scanner.leaf()?));
    }
    if scanner.at < body.len() {
        return Err(CodecError::TrailingBytes);
    }
    Ok((entries, scanner.canonical))
}

/// The household a field map's codec bytes make, read in one pass as a device writes a new
/// household's record: `Some` only where the bytes are exactly as `codec::encode` writes the
/// map, it holds at most `max_entries` entries, every leaf is within the limits
/// [`check_leaf_ref`](super::check_leaf_ref) checks, and the direct reader takes every entry.
/// Anything else is `None`, and the caller reads the map through [`decode_entries`], which
/// gives the error or the same household.
///
/// One pass, where a pushed record was decoded into a list of entries, the list checked, then
/// read: and a path is not checked as UTF-8 here, since the direct reader takes only paths made
/// of names it knows, a member's id and a B1 question it checks itself (see
/// [`super::direct`]).
pub(crate) fn read_household_as_written(
    bytes: &[u8],
    limit: usize,
    max_entries: usize,
) -> Option<Household> {
    let body = codec::body(bytes, limit).ok()?;
    let mut scanner = Scanner::new(body);
    let count = scanner.varint().ok()?;
    if count > u64::try_from(max_entries).ok()? {
        return None;
    }
    let mut parts = super::direct::Parts::default();
    let mut previous: Option<&[u8]> = None;
    for _ in 0..count {
        let path = scanner.text_bytes().ok()?;
        if previous.is_some_and(|previous| previous >= path) {
            return None;
        }
        previous = Some(path);
        let leaf = scanner.leaf().ok()?;
        if !super::leaf_within_limits(path, leaf.as_ref()) {
            return None;
        }
        parts.put(path, leaf.as_ref())?;
    }
    if scanner.at < body.len() || !scanner.canonical {
        return None;
    }
    parts.finish()
}

fn owned_text(bytes: &[u8]) -> Result<String, CodecError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| malformed("a text is not UTF-8"))
}

/// A map's entries, walked without checking again (see [`EncodedFields::entries`]).
pub(crate) struct Entries<'a> {
    scanner: Scanner<'a>,
    left: u64,
}

impl<'a> Iterator for Entries<'a> {
    /// A path's bytes (UTF-8) and its value's codec bytes.
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let path = self.scanner.text_bytes().ok()?;
        let start = self.scanner.at;
        self.scanner.value(0, false).ok()?;
        let value = self.scanner.bytes.get(start..self.scanner.at)?;
        Some((path, value))
    }
}

/// How many bytes the `FieldValue` at the front of `bytes` takes, checked as a scan of a map
/// checks its values (texts are UTF-8, yes/no bytes are 0 or 1, lists nest at most
/// [`MAX_LIST_DEPTH`]), and whether its numbers are in their shortest form.
pub(crate) fn checked_value_len(bytes: &[u8]) -> Result<(usize, bool), CodecError> {
    let mut scanner = Scanner::new(bytes);
    scanner.value(0, true)?;
    Ok((scanner.at, scanner.canonical))
}

/// What a scan found: the map's length in bytes, and whether it is as `codec::encode` writes
/// it.
struct Scan {
    len: usize,
    canonical: bool,
}

/// Checks that `body` starts with a field map as bincode reads it (the codec's options:
/// varint integers), accepting what bincode accepts, except lists nested past
/// [`MAX_LIST_DEPTH`] as `FieldValue` refuses them.
fn scan_field_map(body: &[u8]) -> Result<Scan, CodecError> {
    let mut scanner = Scanner::new(body);
    let mut previous: Option<&str> = None;
    // Each entry takes at least two bytes: a claimed count larger than the bytes runs out of
    // them, it allocates nothing.
    for _ in 0..scanner.varint()? {
        let path = scanner.text()?;
        if previous.is_some_and(|previous| previous >= path) {
            scanner.canonical = false;
        }
        previous = Some(path);
        scanner.value(0, true)?;
    }
    Ok(Scan {
        len: scanner.at,
        canonical: scanner.canonical,
    })
}

fn malformed(what: &str) -> CodecError {
    CodecError::Malformed(format!("bảng trường / field map: {what}"))
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    canonical: bool,
}

impl<'a> Scanner<'a> {
    fn new(bytes: &'a [u8]) -> Scanner<'a> {
        Scanner {
            bytes,
            at: 0,
            canonical: true,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let taken = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or(CodecError::Truncated)?;
        self.at += n;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        self.take(N)?.try_into().map_err(|_| CodecError::Truncated)
    }

    /// bincode's varint: one byte up to 250, else a marker and 2, 4 or 8 little-endian bytes.
    fn varint(&mut self) -> Result<u64, CodecError> {
        let (value, shortest_from) = match self.array::<1>()?[0] {
            small @ 0..=250 => return Ok(u64::from(small)),
            251 => (u64::from(u16::from_le_bytes(self.array()?)), 251),
            252 => (u64::from(u32::from_le_bytes(self.array()?)), 1 << 16),
            253 => (u64::from_le_bytes(self.array()?), 1 << 32),
            _ => return Err(malformed("a number is out of range")),
        };
        if value < shortest_from {
            self.canonical = false;
        }
        Ok(value)
    }

    fn text(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.text_bytes()?).map_err(|_| malformed("a text is not UTF-8"))
    }

    /// A text's bytes, not checked as UTF-8.
    fn text_bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = usize::try_from(self.varint()?).map_err(|_| CodecError::Truncated)?;
        self.take(len)
    }

    /// The value of a map's entry, its text borrowed: [`Self::owned_value`] otherwise.
    fn leaf(&mut self) -> Result<Leaf<'a>, CodecError> {
        match self.varint()? {
            TEXT => self.text().map(Leaf::Text),
            variant => self.owned_value_of(variant, 0).map(Leaf::Value),
        }
    }

    /// The `FieldValue` at the front, inside `depth` lists, as `FieldValue`'s `Deserialize`
    /// reads it from the codec: the same values, refused for the same faults.
    fn owned_value(&mut self, depth: usize) -> Result<FieldValue, CodecError> {
        let variant = self.varint()?;
        self.owned_value_of(variant, depth)
    }

    /// [`Self::owned_value`] once its variant is read.
    fn owned_value_of(&mut self, variant: u64, depth: usize) -> Result<FieldValue, CodecError> {
        // The variant, in `FieldValue`'s order.
        Ok(match variant {
            0 => FieldValue::Null,
            1 => match self.array::<1>()?[0] {
                0 => FieldValue::Bool(false),
                1 => FieldValue::Bool(true),
                _ => return Err(malformed("a yes/no value is neither")),
            },
            // bincode's signed varint: zigzag, so that small negative numbers stay short.
            2 => {
                let zigzag = self.varint()?;
                FieldValue::Int((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
            }
            3 => FieldValue::Float(f64::from_le_bytes(self.array()?)),
            TEXT => FieldValue::Text(owned_text(self.text_bytes()?)?),
            5 => {
                if depth >= MAX_LIST_DEPTH {
                    return Err(malformed("lists nest too deep"));
                }
                let count = self.varint()?;
                // As `codec::bounded_vec`: the length prefix is not trusted for the allocation.
                let mut items = Vec::with_capacity(usize::try_from(count).map_or(0, |n| n.min(16)));
                for _ in 0..count {
                    items.push(self.owned_value(depth + 1)?);
                }
                FieldValue::List(items)
            }
            _ => return Err(malformed("a value of an unknown kind")),
        })
    }

    /// A `FieldValue` inside `depth` lists; its text's bytes when it is one. `check` checks
    /// what a scan must (yes/no bytes, UTF-8); a map already scanned is only walked.
    fn value(&mut self, depth: usize, check: bool) -> Result<Option<&'a [u8]>, CodecError> {
        // The variant, in `FieldValue`'s order.
        match self.varint()? {
            0 => {}
            1 => {
                if self.array::<1>()?[0] > 1 && check {
                    return Err(malformed("a yes/no value is neither"));
                }
            }
            2 => {
                self.varint()?;
            }
            3 => {
                self.take(8)?;
            }
            4 => {
                let text = self.text_bytes()?;
                if check {
                    std::str::from_utf8(text).map_err(|_| malformed("a text is not UTF-8"))?;
                }
                return Ok(Some(text));
            }
            5 => {
                if depth >= MAX_LIST_DEPTH {
                    return Err(malformed("lists nest too deep"));
                }
                for _ in 0..self.varint()? {
                    self.value(depth + 1, check)?;
                }
            }
            _ => return Err(malformed("a value of an unknown kind")),
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::tests_support::sample;
    use crate::fields::{flatten, FieldValue};

    fn every_kind_of_value() -> FieldMap {
        let mut fields = flatten(&sample());
        fields.insert("a.null".into(), FieldValue::Null);
        fields.insert("a.float".into(), FieldValue::Float(-0.0));
        fields.insert("a.int".into(), FieldValue::Int(i64::MIN));
        fields.insert("a.big".into(), FieldValue::Int(70_000));
        fields.insert(
            "a.list".into(),
            FieldValue::List(vec![
                FieldValue::Text("Hộ nghèo".into()),
                FieldValue::Bool(false),
                FieldValue::List(vec![FieldValue::Int(7)]),
            ]),
        );
        fields
    }

    /// A field map's codec bytes, written entry by entry: `(path, value)` in the given order.
    fn written_by_hand(entries: &[(&str, FieldValue)]) -> Vec<u8> {
        let mut bytes = codec::encode(&(entries.len() as u64));
        for (path, value) in entries {
            bytes.extend(&codec::encode(path)[VERSION_BYTES..]);
            bytes.extend(&codec::encode(value)[VERSION_BYTES..]);
        }
        bytes
    }

    #[test]
    fn encoded_and_decoded_maps_are_the_same_bytes() {
        let fields = every_kind_of_value();
        let encoded = EncodedFields::encode(&fields);
        assert_eq!(encoded.decode(), Ok(fields.clone()));
        // Inside a message, the encoded map is the map: either decodes as the other.
        assert_eq!(codec::encode(&encoded), codec::encode(&fields));
        let back: Result<EncodedFields, _> = codec::decode(&codec::encode(&fields), usize::MAX);
        assert_eq!(back, Ok(encoded.clone()));
        let back: Result<FieldMap, _> = codec::decode(&codec::encode(&encoded), usize::MAX);
        assert_eq!(back, Ok(fields.clone()));
        assert_eq!(
            EncodedFields::from_codec_bytes(codec::encode(&fields)),
            Ok(encoded.clone())
        );
        assert_eq!(
            EncodedFields::read_from(encoded.body()),
            Ok((encoded.clone(), encoded.body().len()))
        );
        assert_eq!(encoded.text("village"), Some("Thôn Đông"));
        assert_eq!(encoded.text("commune_code"), Some("00004"));
        assert_eq!(encoded.text("a.int"), None);
        assert_eq!(encoded.text("no.such.path"), None);
        assert_eq!(encoded.text("zzz"), None);
        // Every path reads what the decoded map holds there, and every path between two of
        // them reads nothing.
        for (path, value) in &fields {
            let expected = match value {
                crate::fields::FieldValue::Text(text) => Some(text.as_str()),
                _ => None,
            };
            assert_eq!(encoded.text(path), expected, "{path}");
            assert_eq!(encoded.text(&format!("{path}\0")), None, "{path}");
        }
        assert!(format!("{encoded:?}").contains("Thôn Đông"));
        assert_eq!(EncodedFields::default().decode(), Ok(FieldMap::new()));
    }

    #[test]
    fn a_map_not_as_encode_writes_it_is_written_again() {
        let village = |name: &str| FieldValue::Text(name.into());
        // Out of order, with a path twice: the last value is the map's, as decoding keeps it.
        let bytes = written_by_hand(&[
            ("village", village("Thôn Bắc")),
            ("address", village("Số 1")),
            ("village", village("Thôn Nam")),
        ]);
        let as_map: FieldMap = codec::decode(&bytes, usize::MAX).expect("decodes");
        assert_eq!(as_map.len(), 2);
        let encoded = EncodedFields::from_codec_bytes(bytes.clone()).expect("reads");
        assert_eq!(encoded, EncodedFields::encode(&as_map));
        assert_eq!(encoded.text("village"), Some("Thôn Nam"));
        assert_eq!(
            EncodedFields::read_from(&bytes[VERSION_BYTES..]),
            Ok((encoded, bytes.len() - VERSION_BYTES))
        );
        // A number in a longer form than it needs: 5 as a marker and two bytes.
        let mut long_form = written_by_hand(&[("a", FieldValue::Int(5))]);
        let at = long_form.len() - 1;
        long_form.splice(at.., [251, 10, 0]);
        let as_map: FieldMap = codec::decode(&long_form, usize::MAX).expect("decodes");
        assert_eq!(as_map.get("a"), Some(&FieldValue::Int(5)));
        assert_eq!(
            EncodedFields::from_codec_bytes(long_form),
            Ok(EncodedFields::encode(&as_map))
        );
    }

    /// A map's bytes with one byte more after the map.
    fn with_a_byte_after(whole: &[u8]) -> Vec<u8> {
        let mut bytes = whole.to_vec();
        bytes.push(0);
        bytes
    }

    /// A map of one entry whose value is a list in a list in a list … 100,000 deep.
    fn nested_too_deep() -> Vec<u8> {
        let mut deep = written_by_hand(&[("a", FieldValue::Null)]);
        deep.pop();
        for _ in 0..100_000 {
            deep.extend([5, 1]);
        }
        deep.push(0);
        deep
    }

    fn pair(path: &str, value: Leaf<'_>) -> (String, FieldValue) {
        (path.to_owned(), value.into_owned())
    }

    /// A map's entries as serde decodes them: what [`decode_entries`] must match.
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct SerdeEntries(
        #[serde(deserialize_with = "crate::codec::bounded_vec")] Vec<(String, FieldValue)>,
    );

    /// [`decode_entries`] against serde's decode of the same bytes: the same entries, or an
    /// error of the same kind; and, when they decode, the scan's verdict on their form.
    fn decodes_as_serde_does(bytes: &[u8]) -> Result<(), String> {
        let ours = decode_entries(bytes, usize::MAX, pair);
        let serde: Result<SerdeEntries, _> = codec::decode(bytes, usize::MAX);
        match (&ours, &serde) {
            (Ok((entries, canonical)), Ok(SerdeEntries(expected))) => {
                let body = codec::body(bytes, usize::MAX).map_err(|e| e.to_string())?;
                let scan = scan_field_map(body).map_err(|e| e.to_string())?;
                if entries != expected || *canonical != scan.canonical {
                    return Err(format!(
                        "{ours:?} against {serde:?}, scan {}",
                        scan.canonical
                    ));
                }
            }
            (Err(a), Err(b)) if std::mem::discriminant(a) == std::mem::discriminant(b) => {}
            _ => return Err(format!("{ours:?} against {serde:?}")),
        }
        Ok(())
    }

    #[test]
    fn a_map_decodes_into_its_entries_in_one_pass_as_serde_decodes_it() {
        let fields = every_kind_of_value();
        let whole = EncodedFields::encode(&fields).codec_bytes().to_vec();
        let (entries, canonical) = decode_entries(&whole, usize::MAX, pair).expect("decodes");
        assert!(canonical);
        assert_eq!(entries.into_iter().collect::<FieldMap>(), fields);
        // Every cut, and every byte changed, decodes as serde decodes it.
        for cut in 0..=whole.len() {
            assert_eq!(decodes_as_serde_does(&whole[..cut]), Ok(()), "cut at {cut}");
        }
        for at in VERSION_BYTES..whole.len() {
            for byte in [
                0, 1, 2, 3, 4, 5, 6, 0x7f, 0xc3, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
            ] {
                let mut bytes = whole.clone();
                bytes[at] = byte;
                assert_eq!(
                    decodes_as_serde_does(&bytes),
                    Ok(()),
                    "byte {at} set to {byte}"
                );
            }
        }
        // Entries out of order, and a number in a longer form, decode but are not as
        // `codec::encode` writes them.
        let reversed: Vec<(String, FieldValue)> = fields.clone().into_iter().rev().collect();
        let bytes = written_by_hand(
            &reversed
                .iter()
                .map(|(p, v)| (p.as_str(), v.clone()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(decodes_as_serde_does(&bytes), Ok(()));
        assert_eq!(
            decode_entries(&bytes, usize::MAX, pair).map(|(_, canonical)| canonical),
            Ok(false)
        );
        let mut long_count = whole[..VERSION_BYTES].to_vec();
        let count = u16::try_from(fields.len()).expect("a short map");
        long_count.push(251);
        long_count.extend(count.to_le_bytes());
        long_count.extend(&whole[VERSION_BYTES + 1..]);
        assert_eq!(decodes_as_serde_does(&long_count), Ok(()));
        assert_eq!(
            decode_entries(&long_count, usize::MAX, pair).map(|(_, canonical)| canonical),
            Ok(false)
        );
        // Trailing bytes, lists nested past the bound, and a claimed count far beyond the
        // bytes (which must not allocate for it).
        assert_eq!(
            decode_entries(&with_a_byte_after(&whole), usize::MAX, pair),
            Err(CodecError::TrailingBytes)
        );
        let deep = nested_too_deep();
        assert!(matches!(
            decode_entries(&deep, usize::MAX, pair),
            Err(CodecError::Malformed(m)) if m.contains("nest")
        ));
        let mut huge = whole[..VERSION_BYTES].to_vec();
        huge.push(253);
        huge.extend(u64::MAX.to_le_bytes());
        assert_eq!(
            decode_entries(&huge, usize::MAX, pair),
            Err(CodecError::Truncated)
        );
        assert_eq!(decodes_as_serde_does(&huge), Ok(()));
    }

    #[test]
    fn bytes_that_are_not_a_field_map_are_refused_as_decoding_refuses_them() {
        let whole = EncodedFields::encode(&every_kind_of_value())
            .codec_bytes()
            .to_vec();
        // Every cut of a good map, and every byte of it changed, agrees with decoding: the
        // scan accepts exactly what decoding accepts.
        for cut in 0..whole.len() {
            let bytes = whole[..cut].to_vec();
            assert!(
                EncodedFields::from_codec_bytes(bytes).is_err(),
                "cut at {cut}"
            );
        }
        for at in VERSION_BYTES..whole.len() {
            for byte in [0, 1, 2, 5, 0x7f, 0xfb, 0xfe, 0xff] {
                let mut bytes = whole.clone();
                bytes[at] = byte;
                let decoded: Result<FieldMap, _> = codec::decode(&bytes, usize::MAX);
                let read = EncodedFields::from_codec_bytes(bytes);
                assert_eq!(
                    read.as_ref().ok().map(EncodedFields::decode),
                    decoded.as_ref().ok().map(|fields| Ok(fields.clone())),
                    "byte {at} set to {byte}"
                );
            }
        }
        assert_eq!(
            EncodedFields::from_codec_bytes(with_a_byte_after(&whole)),
            Err(CodecError::TrailingBytes)
        );
        let deep = nested_too_deep();
        assert!(matches!(
            EncodedFields::from_codec_bytes(deep),
            Err(CodecError::Malformed(m)) if m.contains("nest")
        ));
    }
}
