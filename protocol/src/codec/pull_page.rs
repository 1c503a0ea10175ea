//! The pull page: the largest message there is, and nearly all of it field maps.
//!
//! Both ends hold maps encoded ([`EncodedFields`]), so a page moves each map's entries in and
//! out rather than decoding and encoding the map again. A page starts with its layout where
//! other messages start with the protocol version.
//!
//! # Layout 2 (what [`encode`] writes)
//! The households of a page have nearly the same paths; only the member ids inside them
//! differ. So the page writes each distinct path once, with a member id cut out of it (a
//! *template*), and each distinct sequence of templates once (a *shape*). A household is its
//! shape's number and its ids. Its values go into their templates' *columns*, since values of
//! one question compress far better side by side than among other questions' answers:
//! ```text
//! page      = templates shapes columns ids changes rest
//! templates = count { before:text after:option<text> }    path = before ++ id ++ after
//! shapes    = count { entries:count { template [slot] } }  slot: which of the change's ids
//! columns   = one per template { bytes:count { value } }   values in the changes' order
//! ids       = bytes:count { 16 bytes }                     each change's own id, then its slots'
//! changes   = count { seq_step rev shape slots:count review in_conflict }
//! rest      = next_cursor more outcomes left_scope scope
//! ```
//! - Numbers are the codec's varints. A seq is written as its step from the change before (the
//!   first from 0), wrapping: seqs rise through a page, so a step takes a byte.
//! - The ids lie side by side: ids made close in time share their first bytes.
//! - A value is a `FieldValue` as the codec writes it (variants 0 to 5), or a tag that stands
//!   for one. `HOUSEHOLD_ID` is the household's own id as text. `ID_IN_SLOT` and a slot is
//!   one of its ids as text. `DATE` and two bytes is a date as text (`YYYY-MM-DD`). `DIGITS`,
//!   a count and a number is a text of 8 to 19 digits (an ID card's number) in 4 to 8 bytes.
//!   `REPEATED` and a number is a value written in full earlier in the same column: answers
//!   repeat, and the number takes a byte where the text took ten or twenty.
//! - Only a uuid in its canonical text (lowercase, hyphenated) is cut out of a path or a
//!   value, so what is put back is the same bytes.
//! - A page that would need more than `MAX_TEMPLATES`, `MAX_SHAPES` or
//!   `MAX_SHAPE_ENTRIES` is written in layout 1 instead, so that what a page makes a device
//!   hold is bounded by these and not only by the page's length.
//!
//! # Layout 1 (read, from servers before layout 2)
//! `codec::encode(&page)`: each map as its codec bytes, in its change.
//!
//! # Reading
//! [`decode`] reads either layout and puts every map back as it was sent: its codec bytes,
//! checked by the same scan as any other ([`EncodedFields::from_codec_bytes`]). A layout-2 page
//! puts back at most [`MAX_RESPONSE_BYTES`] of maps, the most a layout-1 page that a device
//! accepts could hold, so a template used many times cannot make a small page large.
//!
//! # Size
//! The bench's commune, 5,000 households in pages of 500, takes 386 bytes a household in
//! layout 2 and 4,236 in layout 1. Compressed for the wire, that is 167 and 453 bytes; in
//! pages of 1,000, 158 (`bench page-sizes`).

use fxhash::FxHashMap as HashMap;
use serde::Deserialize;
use uuid::Uuid;

use super::{body, bounded_vec, decode_part, encode_body_into, versioned, CodecError};
use crate::access::Scope;
use crate::fields::{checked_value_len, EncodedFields};
use crate::sync::{
    HouseholdChange, MutationOutcome, PullResponse, ReviewState, MAX_RESPONSE_BYTES,
    PROTOCOL_VERSION,
};
use crate::HouseholdId;

/// The layout this build writes, in place of a protocol version.
pub const LAYOUT: u16 = 2;
/// The layouts this build reads.
const LAYOUTS: &[u16] = &[PROTOCOL_VERSION, LAYOUT];
/// A uuid as canonical text.
const ID_TEXT_BYTES: usize = 36;
/// A date as text: `YYYY-MM-DD`.
const DATE_TEXT_BYTES: usize = 10;
/// `FieldValue::Text`'s variant number.
const TEXT: u8 = 4;
/// A value that is the household's own id as text.
const HOUSEHOLD_ID: u8 = 6;
/// A value that is one of the household's ids as text; its slot follows.
const ID_IN_SLOT: u8 = 7;
/// A value written in full earlier in the page under the same template; its number follows.
const REPEATED: u8 = 8;
/// Most templates in a layout-2 page, shapes, and entries of all its shapes together: a page
/// of survey records has about a hundred templates and a few shapes of about a hundred
/// entries. A page that would need more is written in layout 1, so that what a page makes
/// the device hold is bounded by these and not only by its length.
const MAX_TEMPLATES: usize = 1 << 16;
const MAX_SHAPES: usize = 1 << 16;
const MAX_SHAPE_ENTRIES: usize = 1 << 20;
/// No template: `follows` before a template has been followed.
const NO_TEMPLATE: u32 = u32::MAX;
/// A value that is a date as text (`YYYY-MM-DD`, from 1900 on); its day follows as two bytes
/// (see [`date_in_text`]).
const DATE: u8 = 9;
/// A value that is a long number as text (an ID card's or a phone's, [`DIGITS_TEXT`] digits);
/// its number of digits follows as a byte, then the number in as few bytes as that many
/// digits need ([`bytes_for_digits`]).
const DIGITS: u8 = 10;
/// The texts of digits written as numbers: 8 digits or more (shorter ones repeat, and are
/// written as they are the first time), up to 19, which fit in 8 bytes.
const DIGITS_TEXT: std::ops::RangeInclusive<usize> = 8..=19;
/// Most values of one template that a later value may repeat: numbers below 251 take a byte.
const MAX_REPEATABLE: usize = 250;

/// A change's fields before its map, in layout 1.
#[derive(Deserialize)]
struct Head {
    seq: u64,
    household_id: HouseholdId,
    rev: u32,
}

/// A change's fields after its map.
#[derive(Deserialize)]
struct Tail {
    review: ReviewState,
    in_conflict: bool,
}

/// The page's fields after its changes, with the same limits on their lists.
#[derive(Deserialize)]
struct Rest {
    next_cursor: u64,
    more: bool,
    #[serde(deserialize_with = "bounded_vec")]
    outcomes: Vec<MutationOutcome>,
    #[serde(deserialize_with = "bounded_vec")]
    left_scope: Vec<HouseholdId>,
    scope: Scope,
}

/// A path with at most one id cut out of it: `before`, the id, `after`; or `before` alone.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Template<'a> {
    before: &'a [u8],
    after: Option<&'a [u8]>,
}

/// Splits a path at its first segment that is a uuid in canonical text.
fn template_of(path: &[u8]) -> (Template<'_>, Option<Uuid>) {
    let mut start = 0;
    for segment in path.split(|byte| *byte == b'.') {
        let end = start + segment.len();
        if let Some(id) = canonical_id(segment) {
            let template = Template {
                before: &path[..start],
                after: Some(&path[end..]),
            };
            return (template, Some(id));
        }
        start = end + 1;
    }
    let whole = Template {
        before: path,
        after: None,
    };
    (whole, None)
}

/// The uuid that `text` is in its canonical text, and only then: the text written back from
/// the uuid is the same bytes.
fn canonical_id(text: &[u8]) -> Option<Uuid> {
    if text.len() != ID_TEXT_BYTES {
        return None;
    }
    let id = Uuid::try_parse_ascii(text).ok()?;
    let mut canonical = [0u8; ID_TEXT_BYTES];
    (id.hyphenated().encode_lower(&mut canonical).as_bytes() == text).then_some(id)
}

/// The day a value holds as a date in text, `YYYY-MM-DD` (as `Date` writes itself), numbered
/// from 1900-01-01 in months of 31 days: any month and day of two digits, 01 to 12 and 01 to
/// 31, so that every such text, a real date or not, is written back the same. Years from 1900
/// to 2076 fit in two bytes; other texts are written as they are.
fn date_in_text(value: &[u8]) -> Option<u16> {
    let text = value.strip_prefix(&[TEXT, DATE_TEXT_BYTES as u8])?;
    let [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = *text else {
        return None;
    };
    let digits = [y1, y2, y3, y4, m1, m2, d1, d2];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |digits: &[u8]| {
        digits
            .iter()
            .fold(0u32, |number, digit| number * 10 + u32::from(digit - b'0'))
    };
    let (year, month, day) = (
        number(&digits[..4]),
        number(&digits[4..6]),
        number(&digits[6..]),
    );
    if !(1900..).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    u16::try_from((year - 1900) * 372 + (month - 1) * 31 + (day - 1)).ok()
}

/// The number a value holds as a text of [`DIGITS_TEXT`] digits, leading zeros and all, with
/// its number of digits.
fn digits_in_text(value: &[u8]) -> Option<(usize, u64)> {
    let (&len, text) = value.strip_prefix(&[TEXT])?.split_first()?;
    let len = usize::from(len);
    if !DIGITS_TEXT.contains(&len) || text.len() != len || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = text
        .iter()
        .fold(0u64, |number, digit| number * 10 + u64::from(digit - b'0'));
    Some((len, number))
}

/// The bytes a number of `digits` decimal digits takes: the fewest whose values reach 10^digits.
fn bytes_for_digits(digits: usize) -> usize {
    let limit = 10u128.pow(digits as u32);
    (1..=16)
        .find(|bytes| 1u128 << (8 * bytes) >= limit)
        .unwrap_or(16)
}

/// The text of `number` in exactly `digits` digits, or `None` when it has more.
fn digits_text(digits: usize, mut number: u64) -> Option<ShortText> {
    let mut text = ShortText {
        bytes: [b'0'; ID_TEXT_BYTES],
        len: digits,
    };
    for digit in text.bytes[..digits].iter_mut().rev() {
        *digit = b'0' + (number % 10) as u8;
        number /= 10;
    }
    (number == 0).then_some(text)
}

/// The text of a day [`date_in_text`] numbered.
fn date_text(day: u16) -> [u8; DATE_TEXT_BYTES] {
    let day = u32::from(day);
    let (year, month, day) = (1900 + day / 372, day % 372 / 31 + 1, day % 31 + 1);
    let mut text = *b"0000-00-00";
    for (at, mut number, width) in [(0, year, 4), (5, month, 2), (8, day, 2)] {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (number % 10) as u8;
            number /= 10;
        }
    }
    text
}

/// The id a value holds as canonical text, as the codec writes a `FieldValue::Text`.
fn id_in_text(value: &[u8]) -> Option<Uuid> {
    canonical_id(value.strip_prefix(&[TEXT, ID_TEXT_BYTES as u8])?)
}

/// Whether a value written in full joins its template's repeatable values, of which there are
/// `held`: values of three bytes or more (a repeat takes two), while there is room. Both ends
/// keep the tables by this rule.
fn is_repeatable(value: &[u8], held: usize) -> bool {
    value.len() >= 3 && held < MAX_REPEATABLE
}

/// The slot of `id` among a household's ids, taking the next one for an id not seen yet.
fn slot_of(ids: &mut Vec<Uuid>, id: Uuid) -> u64 {
    let slot = match ids.iter().position(|known| *known == id) {
        Some(slot) => slot,
        None => {
            ids.push(id);
            ids.len() - 1
        }
    };
    slot as u64
}

/// Encodes a page in layout 2, or in layout 1 when it would take more templates or shapes
/// than a layout-2 page may hold.
pub fn encode(page: &PullResponse) -> Vec<u8> {
    let mut templates: HashMap<Template<'_>, u32> = HashMap::default();
    let mut template_list: Vec<Template<'_>> = Vec::new();
    // Per template, the values written in full so far, by their number.
    let mut repeatable: Vec<HashMap<&[u8], u64>> = Vec::new();
    let mut shapes: HashMap<Vec<u32>, u32> = HashMap::default();
    // Each shape with its number of entries (its templates; slots follow some of them).
    let mut shape_list: Vec<(Vec<u32>, usize)> = Vec::new();
    let mut changes = Vec::with_capacity(
        page.changes
            .iter()
            .map(|change| change.fields.body().len() / 8 + 64)
            .sum(),
    );
    // One change's shape (each template, and after a template with an id cut out, its slot),
    // ids and values.
    let mut shape: Vec<u32> = Vec::new();
    let mut ids: Vec<Uuid> = Vec::new();
    // Per template, the one that followed it in the last map that had it; and the first.
    let mut follows: Vec<u32> = Vec::new();
    let mut first_template = NO_TEMPLATE;
    // The last id cut out of a path, as text and as read: a member's paths follow each other.
    let mut last_id: Option<(&[u8], Uuid)> = None;
    let mut last_shape = 0u32;
    let mut last_seq = 0u64;
    // The households' ids and their members', side by side: ids made close in time share
    // their first bytes.
    let mut id_stream: Vec<u8> = Vec::with_capacity(page.changes.len() * 80);
    // Per template, its values in the page's order: values of one path compress better side
    // by side than among other paths' values.
    let mut columns: Vec<Vec<u8>> = Vec::new();
    for change in &page.changes {
        shape.clear();
        ids.clear();
        // The template before this entry's, in this change.
        let mut before_this: Option<u32> = None;
        let mut entries = 0;
        for (path, value) in change.fields.entries() {
            entries += 1;
            // Maps of a page mostly follow each other path for path, so the template that came
            // after the previous one last time is tried first, without hashing the path.
            let predicted = match before_this {
                None => first_template,
                Some(number) => follows[number as usize],
            };
            let known = template_list.get(predicted as usize).and_then(|template| {
                let rest = path.strip_prefix(template.before)?;
                match template.after {
                    None => rest.is_empty().then_some((predicted, None)),
                    Some(after) => {
                        let text = rest.strip_suffix(after)?;
                        let id = match last_id {
                            Some((last, id)) if last == text => id,
                            _ => canonical_id(text)?,
                        };
                        Some((predicted, Some((text, id))))
                    }
                }
            });
            let (number, id) = known.unwrap_or_else(|| {
                let (template, id) = template_of(path);
                let next = template_list.len() as u32;
                let number = *templates.entry(template).or_insert_with(|| {
                    template_list.push(template);
                    repeatable.push(HashMap::default());
                    follows.push(NO_TEMPLATE);
                    columns.push(Vec::new());
                    next
                });
                let id = id.map(|id| (&path[template.before.len()..][..ID_TEXT_BYTES], id));
                (number, id)
            });
            match before_this {
                None => first_template = number,
                Some(before) => follows[before as usize] = number,
            }
            before_this = Some(number);
            shape.push(number);
            if let Some((text, id)) = id {
                shape.push(slot_of(&mut ids, id) as u32);
                last_id = Some((text, id));
            }
            let values = &mut columns[number as usize];
            if let Some(day) = date_in_text(value) {
                values.push(DATE);
                values.extend_from_slice(&day.to_le_bytes());
                continue;
            }
            if let Some((digits, as_number)) = digits_in_text(value) {
                values.extend_from_slice(&[DIGITS, digits as u8]);
                values.extend_from_slice(&as_number.to_le_bytes()[..bytes_for_digits(digits)]);
                continue;
            }
            match id_in_text(value) {
                Some(id) if id == change.household_id => values.push(HOUSEHOLD_ID),
                Some(id) => {
                    values.push(ID_IN_SLOT);
                    encode_body_into(values, &slot_of(&mut ids, id));
                }
                None => {
                    let table = &mut repeatable[number as usize];
                    if let Some(index) = table.get(value) {
                        values.push(REPEATED);
                        encode_body_into(values, index);
                    } else {
                        if is_repeatable(value, table.len()) {
                            table.insert(value, table.len() as u64);
                        }
                        values.extend_from_slice(value);
                    }
                }
            }
        }
        let same_as_last = shape_list
            .get(last_shape as usize)
            .is_some_and(|(last, _)| *last == shape);
        let number = match same_as_last {
            true => last_shape,
            false => match shapes.get(shape.as_slice()) {
                Some(number) => *number,
                None => {
                    let number = shape_list.len() as u32;
                    shapes.insert(shape.clone(), number);
                    shape_list.push((shape.clone(), entries));
                    number
                }
            },
        };
        last_shape = number;
        // Seqs rise through a page: each is written as its step from the one before.
        let seq_step = change.seq.wrapping_sub(last_seq);
        last_seq = change.seq;
        encode_body_into(
            &mut changes,
            &(&seq_step, &change.rev, &number, &(ids.len() as u64)),
        );
        encode_body_into(&mut changes, &(&change.review, &change.in_conflict));
        id_stream.extend_from_slice(change.household_id.as_bytes());
        for id in &ids {
            id_stream.extend_from_slice(id.as_bytes());
        }
    }

    if template_list.len() > MAX_TEMPLATES
        || shape_list.len() > MAX_SHAPES
        || shape_list.iter().map(|(_, entries)| entries).sum::<usize>() > MAX_SHAPE_ENTRIES
    {
        return super::encode(page);
    }

    let column_bytes: usize = columns.iter().map(|column| column.len() + 4).sum();
    let mut out = Vec::with_capacity(changes.len() + column_bytes + id_stream.len() + 8192);
    out.extend_from_slice(&LAYOUT.to_le_bytes());
    encode_body_into(&mut out, &(template_list.len() as u64));
    for template in &template_list {
        // Cut from a path at dots, so UTF-8 text, written as the codec writes text.
        encode_body_into(&mut out, &(template.before, template.after));
    }
    encode_body_into(&mut out, &(shape_list.len() as u64));
    for (shape, entries) in &shape_list {
        encode_body_into(&mut out, &(*entries as u64));
        for number in shape {
            encode_body_into(&mut out, number);
        }
    }
    for column in &columns {
        encode_body_into(&mut out, &(column.len() as u64));
        out.extend_from_slice(column);
    }
    encode_body_into(&mut out, &(id_stream.len() as u64));
    out.extend_from_slice(&id_stream);
    encode_body_into(&mut out, &(page.changes.len() as u64));
    out.extend_from_slice(&changes);
    encode_body_into(
        &mut out,
        &(
            &page.next_cursor,
            &page.more,
            &page.outcomes,
            &page.left_scope,
            &page.scope,
        ),
    );
    out
}

/// Decodes a page of at most `limit` bytes, in either layout.
pub fn decode(bytes: &[u8], limit: usize) -> Result<PullResponse, CodecError> {
    match versioned(bytes, limit)? {
        (LAYOUT, rest) => decode_layout_2(rest),
        (version, _) if version != PROTOCOL_VERSION => Err(CodecError::UnsupportedVersion {
            got: version,
            supported: LAYOUTS.to_vec(),
        }),
        _ => decode_layout_1(body(bytes, limit)?),
    }
}

fn malformed(what: &str) -> CodecError {
    CodecError::Malformed(format!("trang kéo / pull page: {what}"))
}

/// A template as read, with its column: the values of the page's households not read yet, and
/// those written in full so far that a later one may repeat.
struct ReadTemplate<'a> {
    before: &'a [u8],
    after: Option<&'a [u8]>,
    column: &'a [u8],
    repeatable: Vec<&'a [u8]>,
}

/// One entry of a shape: its template, and which of the change's ids goes into its path
/// ([`NO_SLOT`] for none).
struct ShapeEntry {
    template: u32,
    slot: u32,
}

/// A shape entry's slot for a template with no id cut out.
const NO_SLOT: u32 = u32::MAX;

/// A value as read: its codec bytes, or an id that goes back in as text.
enum Value<'a> {
    Full(&'a [u8]),
    /// A text of at most 36 bytes made from a tag: an id, a date, digits.
    Text(ShortText),
}

/// A text of at most [`ID_TEXT_BYTES`], the longest a tag makes.
#[derive(Clone, Copy)]
struct ShortText {
    bytes: [u8; ID_TEXT_BYTES],
    len: usize,
}

impl ShortText {
    fn of(text: &[u8]) -> ShortText {
        let mut bytes = [0u8; ID_TEXT_BYTES];
        let len = text.len().min(ID_TEXT_BYTES);
        bytes[..len].copy_from_slice(&text[..len]);
        ShortText { bytes, len }
    }

    fn text(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Value<'_> {
    /// Its length in the map put back.
    fn len(&self) -> usize {
        match self {
            Value::Full(value) => value.len(),
            Value::Text(text) => text.len + 2,
        }
    }
}

/// Reads the count of a list, refusing one over `most`, and the room to make for it up front:
/// a few, the rest as they arrive (as `bounded_vec` does).
fn read_count(rest: &mut &[u8], most: usize, what: &str) -> Result<(usize, usize), CodecError> {
    let count: u64 = decode_part(rest)?;
    match usize::try_from(count) {
        Ok(count) if count <= most => Ok((count, count.min(16))),
        _ => Err(malformed(&format!("{what}: {count}, over {most}"))),
    }
}

/// Reads bytes written with their length in front, as the codec writes text.
fn read_bytes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let len: u64 = decode_part(rest)?;
    let len = usize::try_from(len).map_err(|_| CodecError::Truncated)?;
    let bytes = rest.get(..len).ok_or(CodecError::Truncated)?;
    *rest = &rest[len..];
    Ok(bytes)
}

fn decode_layout_2(mut rest: &[u8]) -> Result<PullResponse, CodecError> {
    let (count, room) = read_count(&mut rest, MAX_TEMPLATES, "paths")?;
    let mut templates = Vec::with_capacity(room);
    for _ in 0..count {
        let before = read_bytes(&mut rest)?;
        let after = match decode_part::<u8>(&mut rest)? {
            0 => None,
            1 => Some(read_bytes(&mut rest)?),
            _ => return Err(malformed("a path's end is neither there nor absent")),
        };
        // A path is a template's two parts around an id (ASCII): UTF-8 when both parts are.
        let utf8 = |part: &[u8]| std::str::from_utf8(part).is_ok();
        if !utf8(before) || !after.is_none_or(utf8) {
            return Err(malformed("a path is not UTF-8 text"));
        }
        templates.push(ReadTemplate {
            before,
            after,
            column: &[],
            repeatable: Vec::new(),
        });
    }
    let (count, room) = read_count(&mut rest, MAX_SHAPES, "shapes")?;
    let mut shapes: Vec<Vec<ShapeEntry>> = Vec::with_capacity(room);
    let mut shape_entries = 0usize;
    for _ in 0..count {
        let (entries, room) = read_count(&mut rest, MAX_SHAPE_ENTRIES - shape_entries, "entries")?;
        shape_entries += entries;
        let mut shape = Vec::with_capacity(room);
        for _ in 0..entries {
            let template: u32 = decode_part(&mut rest)?;
            let keyed = templates
                .get(template as usize)
                .ok_or_else(|| malformed("a shape names a path that is not in the page"))?
                .after
                .is_some();
            let slot = match keyed {
                true => decode_part::<u32>(&mut rest)?.min(NO_SLOT - 1),
                false => NO_SLOT,
            };
            shape.push(ShapeEntry { template, slot });
        }
        shapes.push(shape);
    }
    for template in &mut templates {
        template.column = read_bytes(&mut rest)?;
    }

    // Bytes of maps put back so far, against `MAX_RESPONSE_BYTES`.
    let mut put_back = 0usize;
    // No value read so far has a number in a longer form than it needs. A value written in
    // full goes into the maps that repeat it, so this holds for the page so far, not a map.
    let mut in_shortest_form = true;
    let mut ids: Vec<[u8; ID_TEXT_BYTES]> = Vec::new();
    let mut id_stream = read_bytes(&mut rest)?;
    let mut next_id = || -> Result<[u8; 16], CodecError> {
        let (id, after) = id_stream
            .split_first_chunk::<16>()
            .ok_or_else(|| malformed("the page has fewer ids than its households name"))?;
        id_stream = after;
        Ok(*id)
    };
    let mut last_seq = 0u64;
    let (count, room) = read_count(&mut rest, usize::MAX, "households")?;
    let mut changes = Vec::with_capacity(room);
    for _ in 0..count {
        let (seq_step, rev, shape, id_count): (u64, u32, u32, u64) = decode_part(&mut rest)?;
        let seq = last_seq.wrapping_add(seq_step);
        last_seq = seq;
        let household_id = Uuid::from_bytes(next_id()?);
        let shape = shapes
            .get(shape as usize)
            .ok_or_else(|| malformed("a household names a shape that is not in the page"))?;
        let mut household_text = [0u8; ID_TEXT_BYTES];
        household_id.hyphenated().encode_lower(&mut household_text);
        ids.clear();
        for _ in 0..id_count {
            let mut text = [0u8; ID_TEXT_BYTES];
            Uuid::from_bytes(next_id()?)
                .hyphenated()
                .encode_lower(&mut text);
            ids.push(text);
        }
        let id_in = |slot: u64| {
            usize::try_from(slot)
                .ok()
                .and_then(|slot| ids.get(slot))
                .copied()
                .ok_or_else(|| malformed("a path or a value names an id the household lacks"))
        };

        let mut map = Vec::with_capacity(4096);
        let mut previous_path: Option<std::ops::Range<usize>> = None;
        let mut in_order = true;
        map.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        encode_body_into(&mut map, &(shape.len() as u64));
        for entry in shape {
            let template = &mut templates[entry.template as usize];
            let id = match entry.slot {
                NO_SLOT => None,
                slot => Some(id_in(u64::from(slot))?),
            };
            let column = &mut template.column;
            let (&tag, after_tag) = column
                .split_first()
                .ok_or_else(|| malformed("a path has fewer values than households"))?;
            let value = match tag {
                HOUSEHOLD_ID => {
                    *column = after_tag;
                    Value::Text(ShortText::of(&household_text))
                }
                ID_IN_SLOT => {
                    *column = after_tag;
                    Value::Text(ShortText::of(&id_in(decode_part(column)?)?))
                }
                DATE => {
                    let (day, after) = after_tag
                        .split_first_chunk::<2>()
                        .ok_or(CodecError::Truncated)?;
                    *column = after;
                    Value::Text(ShortText::of(&date_text(u16::from_le_bytes(*day))))
                }
                DIGITS => {
                    let (&digits, after) = after_tag.split_first().ok_or(CodecError::Truncated)?;
                    let digits = usize::from(digits);
                    if !DIGITS_TEXT.contains(&digits) {
                        return Err(malformed("a number as text has too few or too many digits"));
                    }
                    let bytes = bytes_for_digits(digits);
                    let number = after.get(..bytes).ok_or(CodecError::Truncated)?;
                    *column = &after[bytes..];
                    let mut little_endian = [0u8; 8];
                    little_endian[..bytes].copy_from_slice(number);
                    let text = digits_text(digits, u64::from_le_bytes(little_endian)).ok_or_else(
                        || malformed("a number as text has more digits than it says"),
                    )?;
                    Value::Text(text)
                }
                REPEATED => {
                    *column = after_tag;
                    let index: u64 = decode_part(column)?;
                    let value = usize::try_from(index)
                        .ok()
                        .and_then(|index| template.repeatable.get(index))
                        .ok_or_else(|| malformed("a value repeats one the page has not sent"))?;
                    Value::Full(value)
                }
                _ => {
                    let (len, shortest) = checked_value_len(column)?;
                    in_shortest_form &= shortest;
                    let value = column.get(..len).ok_or(CodecError::Truncated)?;
                    *column = &column[value.len()..];
                    if is_repeatable(value, template.repeatable.len()) {
                        template.repeatable.push(value);
                    }
                    Value::Full(value)
                }
            };

            let after = template.after.unwrap_or_default();
            let path_len = template.before.len() + id.map_or(0, |id| id.len()) + after.len();
            let grown = put_back
                .saturating_add(map.len())
                .saturating_add(path_len + value.len() + 9);
            if grown > MAX_RESPONSE_BYTES {
                return Err(CodecError::TooLarge {
                    got: grown,
                    limit: MAX_RESPONSE_BYTES,
                });
            }
            encode_body_into(&mut map, &(path_len as u64));
            let path_at = map.len();
            map.extend_from_slice(template.before);
            if let Some(id) = id {
                map.extend_from_slice(&id);
            }
            map.extend_from_slice(after);
            let path = path_at..map.len();
            in_order &= previous_path.is_none_or(|previous| map[previous] < map[path.clone()]);
            previous_path = Some(path);
            match value {
                Value::Full(value) => map.extend_from_slice(value),
                Value::Text(text) => {
                    map.extend_from_slice(&[TEXT, text.len as u8]);
                    map.extend_from_slice(text.text());
                }
            }
        }
        put_back += map.len();
        // Every part was checked as it was read: a map in order of parts in their shortest
        // form is as `codec::encode` writes it. Any other is written again, as a scan would.
        let fields = match in_order && in_shortest_form {
            true => EncodedFields::from_checked_parts(map),
            false => EncodedFields::from_codec_bytes(map)?,
        };
        let tail: Tail = decode_part(&mut rest)?;
        changes.push(HouseholdChange {
            seq,
            household_id,
            rev,
            fields,
            review: tail.review,
            in_conflict: tail.in_conflict,
        });
    }
    if templates.iter().any(|template| !template.column.is_empty()) {
        return Err(malformed("a path has more values than households"));
    }
    if !id_stream.is_empty() {
        return Err(malformed("the page has more ids than its households name"));
    }
    finish(changes, rest)
}

/// Layout 1: `codec::encode(&page)`, each map copied out after a scan.
fn decode_layout_1(mut rest: &[u8]) -> Result<PullResponse, CodecError> {
    let (count, room) = read_count(&mut rest, usize::MAX, "households")?;
    let mut changes = Vec::with_capacity(room);
    for _ in 0..count {
        let head: Head = decode_part(&mut rest)?;
        let (fields, len) = EncodedFields::read_from(rest)?;
        rest = rest.get(len..).ok_or(CodecError::Truncated)?;
        let tail: Tail = decode_part(&mut rest)?;
        changes.push(HouseholdChange {
            seq: head.seq,
            household_id: head.household_id,
            rev: head.rev,
            fields,
            review: tail.review,
            in_conflict: tail.in_conflict,
        });
    }
    finish(changes, rest)
}

/// The page's fields after its changes, and nothing after them.
fn finish(changes: Vec<HouseholdChange>, mut rest: &[u8]) -> Result<PullResponse, CodecError> {
    let page: Rest = decode_part(&mut rest)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(PullResponse {
        changes,
        next_cursor: page.next_cursor,
        more: page.more,
        outcomes: page.outcomes,
        left_scope: page.left_scope,
        scope: page.scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::fields::tests_support::sample;
    use crate::fields::{flatten, FieldMap, FieldValue};
    use crate::sync::Outcome;

    /// Household `n`'s map, with member ids of its own and a second member; or, `small`, three
    /// of its fields.
    fn fields_of(n: u128, small: bool) -> FieldMap {
        let mut household = sample();
        household.id = Uuid::from_u128(n);
        let head = Uuid::from_u128(n << 8 | 1);
        household.members[0].id = head;
        household.head_member_id = Some(head);
        let mut second = household.members[0].clone();
        second.id = Uuid::from_u128(n << 8 | 2);
        second.full_name = format!("Trần Thị Bích {n}");
        household.members.push(second);
        let mut fields = flatten(&household);
        if small {
            fields
                .retain(|path, _| ["commune_code", "village", "gps.lat"].contains(&path.as_str()));
        }
        fields.insert("address".into(), FieldValue::Text(format!("Số {n}")));
        fields
    }

    fn change(n: u128, small: bool, review: ReviewState) -> HouseholdChange {
        HouseholdChange {
            seq: 300 + n as u64,
            household_id: Uuid::from_u128(n),
            rev: n as u32,
            fields: EncodedFields::encode(&fields_of(n, small)),
            review,
            in_conflict: n % 2 == 0,
        }
    }

    /// A page of three changes.
    fn page_of(small: bool) -> PullResponse {
        PullResponse {
            changes: vec![
                change(1, small, ReviewState::Submitted),
                change(2, small, ReviewState::Approved),
                change(
                    70_000,
                    small,
                    ReviewState::Returned {
                        comment: "Thiếu số CCCD của chủ hộ".into(),
                    },
                ),
            ],
            next_cursor: 70_300,
            more: true,
            outcomes: vec![MutationOutcome {
                seq: 9,
                household_id: Uuid::from_u128(1),
                outcome: Outcome::Rejected {
                    reason: "ngoài địa bàn / outside your areas".into(),
                },
            }],
            left_scope: vec![Uuid::from_u128(5)],
            scope: Scope::Communes(vec!["00004".into()]),
        }
    }

    fn empty_page() -> PullResponse {
        PullResponse {
            changes: Vec::new(),
            ..page_of(true)
        }
    }

    /// A page of one household with `fields` as its map.
    fn page_with_map(fields: &FieldMap) -> PullResponse {
        PullResponse {
            changes: vec![HouseholdChange {
                fields: EncodedFields::encode(fields),
                ..change(1, true, ReviewState::Submitted)
            }],
            ..empty_page()
        }
    }

    /// A map of `texts`, at the paths `{prefix}0`, `{prefix}1`…
    fn texts_at(prefix: &str, texts: &[&str]) -> FieldMap {
        texts
            .iter()
            .enumerate()
            .map(|(n, text)| (format!("{prefix}{n}"), FieldValue::Text(text.to_string())))
            .collect()
    }

    #[test]
    fn pages_read_back_as_written_and_layout_1_as_the_generic_codec_reads_it() {
        for page in [page_of(false), page_of(true), empty_page()] {
            let bytes = encode(&page);
            assert_eq!(bytes[..2], LAYOUT.to_le_bytes());
            assert_eq!(decode(&bytes, bytes.len()), Ok(page.clone()));
            assert_eq!(
                decode(&bytes, bytes.len() - 1),
                Err(CodecError::TooLarge {
                    got: bytes.len(),
                    limit: bytes.len() - 1
                })
            );
            // A page from a server before layout 2.
            let layout_1 = codec::encode(&page);
            assert_eq!(decode(&layout_1, layout_1.len()), Ok(page.clone()));
        }
        // Other versions are named, with the layouts this build reads.
        let mut later = encode(&page_of(true));
        later[..2].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(
            decode(&later, usize::MAX),
            Err(CodecError::UnsupportedVersion {
                got: 3,
                supported: vec![1, 2]
            })
        );
    }

    #[test]
    fn ids_are_cut_out_only_in_their_canonical_text_and_put_back_the_same() {
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00ab);
        let lower = id.hyphenated().to_string();
        let upper = lower.to_uppercase();
        let cut = |path: &str| template_of(path.as_bytes()).1;
        assert_eq!(cut(&format!("members.{lower}.full_name")), Some(id));
        assert_eq!(cut(&format!("members.{lower}")), Some(id));
        assert_eq!(cut(&format!("{lower}.x.{lower}")), Some(id));
        assert_eq!(cut(&format!("members.{upper}.full_name")), None);
        assert_eq!(cut(&format!("members.{}.x", id.simple())), None);
        assert_eq!(cut(&format!("members.x{lower}.x")), None);
        assert_eq!(cut("address"), None);
        // Paths and values of each kind: the household's id, another id, an id in other text.
        let text = |text: &str| FieldValue::Text(text.into());
        let mut fields = FieldMap::new();
        for path in [
            format!("members.{lower}.full_name"),
            format!("members.{lower}"),
            format!("{lower}.x.{lower}"),
            format!("members.{upper}.full_name"),
            format!("members.x{lower}.x"),
            format!("members.{lower}.{lower}"),
            "a..b.".to_string(),
            String::new(),
        ] {
            fields.insert(path, text("Hộ nghèo"));
        }
        fields.insert("id".into(), text(&lower));
        fields.insert("head".into(), text(&Uuid::from_u128(3).to_string()));
        fields.insert("upper".into(), text(&upper));
        fields.insert("list".into(), FieldValue::List(vec![text(&lower)]));
        let change = |household: u128| HouseholdChange {
            seq: 1,
            household_id: Uuid::from_u128(household),
            rev: 1,
            fields: EncodedFields::encode(&fields),
            review: ReviewState::Submitted,
            in_conflict: false,
        };
        let page = PullResponse {
            changes: vec![change(id.as_u128()), change(9)],
            ..empty_page()
        };
        let bytes = encode(&page);
        assert_eq!(decode(&bytes, usize::MAX), Ok(page));
    }

    #[test]
    fn dates_in_text_are_written_as_their_day_and_put_back_the_same() {
        let value = |text: &str| codec::encode(&FieldValue::Text(text.into()))[2..].to_vec();
        for day in 0..=u16::MAX {
            let text = date_text(day);
            let text = std::str::from_utf8(&text).expect("ASCII");
            assert_eq!(date_in_text(&value(text)), Some(day), "{text}");
        }
        assert_eq!(date_in_text(&value("1900-01-01")), Some(0));
        assert_eq!(date_in_text(&value("1980-05-02")), Some(29_885));
        assert_eq!(date_in_text(&value("2076-12-31")), None);
        for other in [
            "1899-12-31",
            "2023-13-01",
            "2023-00-10",
            "2023-01-32",
            "20x3-01-01",
            "2023/01/01",
            "2023-01-011",
            "+023-01-01",
        ] {
            assert_eq!(date_in_text(&value(other)), None, "{other}");
        }
        // In a page, each of them reads back as it was.
        let fields = texts_at(
            "d",
            &[
                "1980-05-02",
                "2023-02-31",
                "1899-12-31",
                "9999-99-99",
                "2023-1-1",
            ],
        );
        let page = page_with_map(&fields);
        assert_eq!(decode(&encode(&page), usize::MAX), Ok(page));
    }

    #[test]
    fn long_numbers_in_text_are_written_as_numbers_and_put_back_the_same() {
        let value = |text: &str| codec::encode(&FieldValue::Text(text.into()))[2..].to_vec();
        assert_eq!(
            digits_in_text(&value("001080012345")),
            Some((12, 1_080_012_345))
        );
        assert_eq!(bytes_for_digits(8), 4);
        assert_eq!(bytes_for_digits(12), 5);
        assert_eq!(bytes_for_digits(19), 8);
        for other in [
            "1234567",
            "12345678901234567890",
            "0012-3456",
            "１２３４５６７８",
            "",
        ] {
            assert_eq!(digits_in_text(&value(other)), None, "{other}");
        }
        let fields = texts_at(
            "p",
            &[
                "001080012345",
                "00000000",
                "99999999",
                "9999999999999999999",
                "0000000000000000000",
                "1234567",
                "12345678901234567890",
            ],
        );
        let page = page_with_map(&fields);
        let bytes = encode(&page);
        assert_eq!(decode(&bytes, usize::MAX), Ok(page));
        // A number with more digits than its count says is refused: 10^8 in 8 digits.
        let page = page_with_map(&texts_at("p", &["12345678"]));
        let mut bytes = encode(&page);
        let at = bytes
            .windows(6)
            .position(|window| window == [DIGITS, 8, 0x4e, 0x61, 0xbc, 0x00])
            .expect("12345678 as a number");
        bytes[at + 2..at + 6].copy_from_slice(&100_000_000u32.to_le_bytes());
        assert!(matches!(
            decode(&bytes, usize::MAX),
            Err(CodecError::Malformed(m)) if m.contains("more digits")
        ));
    }

    #[test]
    fn a_page_of_households_compresses_to_under_half_of_layout_1() {
        let page = PullResponse {
            changes: (1..=200u128)
                .map(|n| change(n * 104_729, false, ReviewState::Submitted))
                .collect(),
            ..empty_page()
        };
        let bytes = encode(&page);
        assert_eq!(decode(&bytes, usize::MAX), Ok(page.clone()));
        let layout_2 = codec::compress(&bytes).expect("compresses");
        let layout_1 = codec::compress(&codec::encode(&page)).expect("compresses");
        assert!(
            layout_2.len() * 2 < layout_1.len(),
            "layout 2: {} bytes, layout 1: {} bytes",
            layout_2.len(),
            layout_1.len()
        );
    }

    #[test]
    fn a_value_repeats_only_what_its_template_has_sent_in_full() {
        // More distinct values of one path than a table holds, each sent twice.
        let changes: Vec<HouseholdChange> = (0..2 * (MAX_REPEATABLE as u128 + 20))
            .map(|n| {
                let mut fields = FieldMap::new();
                let value = n % (MAX_REPEATABLE as u128 + 20);
                fields.insert("address".into(), FieldValue::Text(format!("Số {value}")));
                fields.insert("village".into(), FieldValue::Text(format!("Số {value}")));
                HouseholdChange {
                    fields: EncodedFields::encode(&fields),
                    ..change(n + 1, true, ReviewState::Submitted)
                }
            })
            .collect();
        let page = PullResponse {
            changes,
            ..empty_page()
        };
        let bytes = encode(&page);
        assert_eq!(decode(&bytes, usize::MAX), Ok(page));
        // A repeat of a number the table does not hold is refused.
        let small = encode(&page_of(true));
        let at = small
            .windows(2)
            .rposition(|pair| pair[0] == REPEATED && pair[1] == 0)
            .expect("the small page repeats a value");
        let mut beyond = small.clone();
        beyond[at + 1] = 200;
        assert!(matches!(
            decode(&beyond, usize::MAX),
            Err(CodecError::Malformed(m)) if m.contains("repeats")
        ));
    }

    #[test]
    fn damaged_pages_are_refused_or_read_as_a_page_that_writes_itself_back() {
        // Small maps: the scan of a whole map is checked byte by byte in `fields::encoded`.
        let bytes = encode(&page_of(true));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], usize::MAX).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode(&trailing, usize::MAX),
            Err(CodecError::TrailingBytes)
        );
        for at in 2..bytes.len() {
            for byte in [0, 1, 3, 6, 7, 8, 9, 10, 0x24, 0x7f, 0xfb, 0xfd, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] = byte;
                if let Ok(page) = decode(&damaged, usize::MAX) {
                    // Each map is as `codec::encode` writes it, however it was sent.
                    for change in &page.changes {
                        let map = change.fields.decode().expect("a map read decodes");
                        assert_eq!(change.fields, EncodedFields::encode(&map), "byte {at}");
                    }
                    assert_eq!(
                        decode(&encode(&page), usize::MAX),
                        Ok(page),
                        "byte {at} set to {byte}"
                    );
                }
            }
        }
    }

    #[test]
    fn maps_sent_out_of_order_or_in_longer_forms_are_put_back_as_encode_writes_them() {
        // Paths "a" and "b" in either order, with 24 under "a" in its shortest form ([48]) or
        // as a marker and two bytes ([251, 48, 0]).
        let page_with = |paths: [&str; 2], number: &[u8]| {
            let mut bytes = LAYOUT.to_le_bytes().to_vec();
            encode_body_into(&mut bytes, &2u64);
            for path in paths {
                encode_body_into(&mut bytes, &(path, None::<String>));
            }
            encode_body_into(&mut bytes, &(1u64, 2u64, 0u32, 1u32));
            for path in paths {
                let value: Vec<u8> = match path {
                    "a" => [&[2u8][..], number].concat(),
                    _ => vec![1, 0],
                };
                encode_body_into(&mut bytes, &(value.len() as u64));
                bytes.extend(value);
            }
            encode_body_into(&mut bytes, &16u64);
            bytes.extend(Uuid::from_u128(1).as_bytes());
            encode_body_into(&mut bytes, &(1u64, 1u64, 1u32, 0u32, 0u64));
            encode_body_into(&mut bytes, &(ReviewState::Submitted, false));
            let rest = empty_page();
            encode_body_into(
                &mut bytes,
                &(
                    rest.next_cursor,
                    rest.more,
                    &rest.outcomes,
                    &rest.left_scope,
                    &rest.scope,
                ),
            );
            decode(&bytes, usize::MAX).expect("reads")
        };
        let mut expected = FieldMap::new();
        expected.insert("a".into(), FieldValue::Int(24));
        expected.insert("b".into(), FieldValue::Bool(false));
        let expected = EncodedFields::encode(&expected);
        for (paths, number) in [
            (["a", "b"], &[48u8][..]),
            (["b", "a"], &[48]),
            (["a", "b"], &[251, 48, 0]),
            (["b", "a"], &[251, 48, 0]),
        ] {
            let page = page_with(paths, number);
            assert_eq!(page.changes[0].fields, expected, "{paths:?} {number:?}");
        }
    }

    #[test]
    fn damaged_layout_1_pages_are_read_as_the_generic_codec_reads_them() {
        let bytes = codec::encode(&page_of(true));
        for at in 2..bytes.len() {
            for byte in [0, 1, 3, 0x7f, 0xfb, 0xfd, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] = byte;
                let generic = codec::decode::<PullResponse>(&damaged, usize::MAX);
                assert_eq!(
                    decode(&damaged, usize::MAX).ok(),
                    generic.ok(),
                    "byte {at} set to {byte}"
                );
            }
        }
    }

    #[test]
    fn a_small_page_cannot_put_back_more_than_a_device_accepts() {
        // One template of 60 KB, and a shape using it 10,000 times: 600 MB of paths from a page
        // of about 80 KB.
        let mut bytes = LAYOUT.to_le_bytes().to_vec();
        encode_body_into(&mut bytes, &1u64);
        encode_body_into(&mut bytes, &("p".repeat(60_000), None::<String>));
        encode_body_into(&mut bytes, &(1u64, 10_000u64));
        bytes.extend(std::iter::repeat_n(0u8, 10_000));
        encode_body_into(&mut bytes, &10_000u64);
        bytes.extend(std::iter::repeat_n(0u8, 10_000));
        encode_body_into(&mut bytes, &16u64);
        bytes.extend(Uuid::from_u128(1).as_bytes());
        encode_body_into(&mut bytes, &(1u64, 1u64, 1u32, 0u32, 0u64));
        let limit = 1 << 20;
        assert!(bytes.len() < limit);
        assert!(matches!(
            decode(&bytes, limit),
            Err(CodecError::TooLarge {
                limit: MAX_RESPONSE_BYTES,
                ..
            })
        ));
        // Claims past the caps, names that are not in the page, and values left over are refused
        // as such.
        let refused = |parts: &dyn Fn(&mut Vec<u8>), expected: &str| {
            let mut bytes = LAYOUT.to_le_bytes().to_vec();
            parts(&mut bytes);
            match decode(&bytes, limit) {
                Err(CodecError::Malformed(message)) => {
                    assert!(message.contains(expected), "{message}")
                }
                other => panic!("{expected}: {other:?}"),
            }
        };
        refused(
            &|bytes| encode_body_into(bytes, &(MAX_TEMPLATES as u64 + 1)),
            "paths: 65537, over 65536",
        );
        refused(
            &|bytes| encode_body_into(bytes, &(0u64, MAX_SHAPES as u64 + 1)),
            "shapes: 65537",
        );
        refused(
            &|bytes| encode_body_into(bytes, &(0u64, 1u64, MAX_SHAPE_ENTRIES as u64 + 1)),
            "entries: 1048577",
        );
        refused(
            &|bytes| encode_body_into(bytes, &(0u64, 1u64, 1u64, 5u32)),
            "path that is not in the page",
        );
        refused(
            &|bytes| {
                encode_body_into(bytes, &(1u64, "a", None::<String>, 0u64, 2u64, [0u8, 0]));
                encode_body_into(bytes, &16u64);
                bytes.extend(Uuid::from_u128(1).as_bytes());
                encode_body_into(bytes, &(1u64, 1u64, 1u32, 4u32, 0u64));
            },
            "shape that is not in the page",
        );
        refused(
            &|bytes| {
                encode_body_into(bytes, &(1u64, "a", None::<String>, 1u64, 1u64, 0u32));
                encode_body_into(bytes, &(2u64, [0u8, 0], 0u64, 0u64));
            },
            "more values than households",
        );
    }

    #[test]
    fn a_page_past_the_caps_is_written_in_layout_1() {
        let fields: FieldMap = (0..MAX_TEMPLATES + 1)
            .map(|n| (format!("income.b1_answers.Q{n}"), FieldValue::Null))
            .collect();
        let page = page_with_map(&fields);
        let bytes = encode(&page);
        assert_eq!(bytes, codec::encode(&page));
        assert_eq!(decode(&bytes, usize::MAX), Ok(page));
    }
}
