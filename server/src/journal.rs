//! The registry's journal: an append-only, checksummed file holding every write the registry
//! committed, so that a damaged sled store costs a rebuild rather than a province's data.
//!
//! # What a record holds
//! One record per commit (one per accepted push): its number (1, 2, 3 … without gaps), the
//! server's time, and the commit's writes exactly as they go to sled, key and value bytes. A
//! replay applies the same bytes, so a registry rebuilt from the journal is the registry, byte
//! for byte, whatever the merge engine, the reference data or the clock would say today.
//!
//! # Order of writes
//! The registry appends the record and syncs it to disk (`sync_data`) before it applies the
//! batch to sled; the push is answered only after sled's flush. So every acknowledged push is
//! in the journal. The batch also stores the record's number in the registry (`mjournal`). On
//! open, records past that number are commits that were journaled but not flushed before a
//! crash (with group commit, several can be in flight): never acknowledged, and replayed into
//! sled, as if the server had committed them and the replies had been lost.
//!
//! # File format (`DIR/journal/registry.journal`)
//! An 8-byte magic `HOJRNL01`, then records: payload length (u32, big-endian), CRC-32 (IEEE) of
//! the payload (u32, big-endian), payload. A payload: format byte `1`, number (u64), time in
//! Unix milliseconds (i64), write count (u32), then per write: key (u32 length + bytes), a tag
//! (1 insert, 0 remove) and for an insert the value (u32 length + bytes).
//!
//! The registry keeps its large rows only here and refers to them by their offset in the file
//! ([`value_positions`]), so a record, once written, is never moved or rewritten.
//!
//! A crash in the middle of an append leaves a torn last record (short, or with a bad
//! checksum); it was never acknowledged, and opening the journal cuts it off. A bad record
//! followed by more data is damage, not a torn append, and is reported, never skipped.
//! Every length is checked against the bytes actually there before anything is allocated.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The journal's folder inside a data directory.
pub const JOURNAL_DIR: &str = "journal";
/// The journal file's name inside [`JOURNAL_DIR`].
pub const JOURNAL_FILE: &str = "registry.journal";
const MAGIC: &[u8; 8] = b"HOJRNL01";
const FORMAT: u8 = 1;
const HEADER: u64 = 8;
/// Largest payload accepted on reading: far above any commit a push under the body limit can
/// make, and a bound on what a damaged length can make us allocate.
pub const MAX_RECORD_BYTES: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The cause is part of the message and not an error source: a chain printed whole
    /// (`{:#}`) would say it twice.
    #[error("the journal at {path} cannot be read or written: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a registry journal (its first bytes are not the journal's mark)")]
    NotAJournal { path: PathBuf },
    #[error("the journal at {path} is damaged at byte {offset}: {problem}; later records follow, so this is not a torn append")]
    Damaged {
        path: PathBuf,
        offset: u64,
        problem: String,
    },
}

/// One write of a commit: a key and its new value, or `None` for a removal.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// One commit, as journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// 1, 2, 3 … in commit order.
    pub number: u64,
    /// When the server committed it, in Unix milliseconds.
    pub at_ms: i64,
    pub writes: Vec<Write>,
}

/// A record read back from the file, with the offset its header starts at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub offset: u64,
    pub record: Record,
}

impl Located {
    /// Where each write's value lies in the file (see [`value_positions`]).
    pub fn value_positions(&self) -> Vec<Option<u64>> {
        value_positions(self.offset, &self.record.writes)
    }
}

/// For a record whose header starts at `record_offset`, the file offset of each write's value
/// bytes (`None` for a removal): the registry keeps large rows only here and refers to them by
/// position, so this follows the layout `encode_record` writes.
pub fn value_positions(record_offset: u64, writes: &[Write]) -> Vec<Option<u64>> {
    // Header (length, checksum), then format, number, time and write count.
    let mut at = record_offset + 8 + 1 + 8 + 8 + 4;
    writes
        .iter()
        .map(|(key, value)| {
            at += 4 + key.len() as u64 + 1;
            value.as_ref().map(|value| {
                at += 4;
                let here = at;
                at += value.len() as u64;
                here
            })
        })
        .collect()
}

/// A record as the file holds it: its header (the payload's length and checksum), then the
/// payload, made in one buffer. A push's batch is a few hundred kilobytes, and copying the
/// payload behind its header into a second buffer was a copy, and a fresh allocation, a commit.
fn encode_record(number: u64, at_ms: i64, writes: &[Write]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        8 + 21
            + writes
                .iter()
                .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>(),
    );
    // The header, filled in once the payload is written.
    out.extend_from_slice(&[0; 8]);
    out.push(FORMAT);
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(&len32(writes.len()).to_be_bytes());
    for (key, value) in writes {
        out.extend_from_slice(&len32(key.len()).to_be_bytes());
        out.extend_from_slice(key);
        match value {
            Some(value) => {
                out.push(1);
                out.extend_from_slice(&len32(value.len()).to_be_bytes());
                out.extend_from_slice(value);
            }
            None => out.push(0),
        }
    }
    let (header, payload) = out.split_at_mut(8);
    header[..4].copy_from_slice(&len32(payload.len()).to_be_bytes());
    header[4..].copy_from_slice(&crc32(payload).to_be_bytes());
    out
}

impl Record {
    /// Decodes a payload whose checksum has been verified.
    pub fn decode(payload: &[u8]) -> Result<Record, String> {
        let mut reader = Reader { rest: payload };
        let format = reader.u8()?;
        if format != FORMAT {
            return Err(format!("record format {format} is unknown to this build"));
        }
        let number = u64::from_be_bytes(reader.array()?);
        let at_ms = i64::from_be_bytes(reader.array()?);
        let count = u32::from_be_bytes(reader.array()?) as usize;
        // Every write takes at least 5 bytes: a count the payload cannot hold is damage, caught
        // before anything is allocated for it.
        if count > reader.rest.len() / 5 {
            return Err(format!("{count} writes cannot fit in the record"));
        }
        let mut writes = Vec::with_capacity(count);
        for _ in 0..count {
            let key = reader.blob()?.to_vec();
            let value = match reader.u8()? {
                0 => None,
                1 => Some(reader.blob()?.to_vec()),
                tag => return Err(format!("unknown write tag {tag}")),
            };
            writes.push((key, value));
        }
        if !reader.rest.is_empty() {
            return Err(format!("{} bytes after the last write", reader.rest.len()));
        }
        Ok(Record {
            number,
            at_ms,
            writes,
        })
    }
}

fn len32(len: usize) -> u32 {
    // A commit is built from a push under the body limit; nothing in it nears 4 GiB.
    u32::try_from(len).unwrap_or(u32::MAX)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("the record ends early".to_string());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| "the record ends early".to_string())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn blob(&mut self) -> Result<&'a [u8], String> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        self.take(len)
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), the checksum of zip and PNG, by
/// `crc32fast` (already in the tree through sled), which uses the CPU's carry-less multiply: a
/// bytewise table loop took a tenth of the server's CPU on a push.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// The number of the last record in the file; 0 when it has none.
    last: u64,
    len: u64,
}

/// What opening the journal found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Records in the journal.
    pub records: u64,
    /// Bytes of a torn last record that were cut off.
    pub torn_bytes: u64,
}

impl Journal {
    /// The journal file inside a data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(JOURNAL_DIR).join(JOURNAL_FILE)
    }

    /// Opens (or creates) the journal of a data directory, cutting off a torn last record.
    /// Reads only the record headers and checks the last record's checksum, so opening costs
    /// little even for a long journal; [`read_all`] checks every record.
    pub fn open(data_dir: &Path) -> Result<(Journal, Opened), JournalError> {
        let path = Journal::path_in(data_dir);
        let io = |source| JournalError::Io {
            path: path.clone(),
            error: source,
        };
        std::fs::create_dir_all(data_dir.join(JOURNAL_DIR)).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        if file_len < HEADER {
            // New, or torn while its mark was being written: start it afresh.
            file.set_len(0).map_err(io)?;
            file.write_all(MAGIC).map_err(io)?;
            file.sync_all().map_err(io)?;
            sync_dir(&data_dir.join(JOURNAL_DIR)).map_err(io)?;
            let journal = Journal {
                path: path.clone(),
                file,
                last: 0,
                len: HEADER,
            };
            return Ok((
                journal,
                Opened {
                    records: 0,
                    torn_bytes: file_len,
                },
            ));
        }
        check_magic(&mut file, &path)?;
        let mut offset = HEADER;
        let mut last = 0u64;
        let mut last_at = HEADER;
        let mut valid_end = HEADER;
        let mut torn = false;
        while offset < file_len {
            let Some((payload_len, crc)) = read_header(&mut file, offset, file_len).map_err(io)?
            else {
                torn = true;
                break;
            };
            let end = offset + 8 + u64::from(payload_len);
            if payload_len > MAX_RECORD_BYTES || end > file_len {
                torn = true;
                break;
            }
            if end == file_len {
                // The last record: its checksum tells a torn append from a whole one.
                let payload = read_at(&mut file, offset + 8, payload_len).map_err(io)?;
                if crc32(&payload) != crc {
                    torn = true;
                    break;
                }
                match Record::decode(&payload) {
                    Ok(record) => last = record.number,
                    Err(problem) => {
                        return Err(JournalError::Damaged {
                            path,
                            offset,
                            problem,
                        })
                    }
                }
            } else {
                last += 1;
            }
            last_at = offset;
            offset = end;
            valid_end = end;
        }
        if torn {
            file.set_len(valid_end).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let records = count_records(&mut file, valid_end).map_err(io)?;
        if records > 0 && last != records {
            return Err(JournalError::Damaged {
                path,
                offset: last_at,
                problem: format!(
                    "the last record is number {last}, but the journal holds {records} records"
                ),
            });
        }
        let journal = Journal {
            path,
            file,
            last: records,
            len: valid_end,
        };
        Ok((
            journal,
            Opened {
                records,
                torn_bytes: file_len - valid_end,
            },
        ))
    }

    /// The number of the last record; 0 for an empty journal.
    pub fn last(&self) -> u64 {
        self.last
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the next record will start: give it to [`value_positions`] before appending.
    pub fn end(&self) -> u64 {
        self.len
    }

    /// Appends the next record and syncs it to disk. Returns its number.
    pub fn append(&mut self, at_ms: i64, writes: &[Write]) -> Result<u64, JournalError> {
        let number = self.last + 1;
        let bytes = encode_record(number, at_ms, writes);
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            error: source,
        };
        self.file.write_all(&bytes).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.len += bytes.len() as u64;
        self.last = number;
        Ok(number)
    }

    /// The records numbered above `after`, read back from the file, each checksum checked.
    pub fn records_after(&mut self, after: u64) -> Result<Vec<Located>, JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            error: source,
        };
        let mut records = Vec::new();
        let mut offset = HEADER;
        let mut number = 0u64;
        while offset < self.len {
            let Some((len, crc)) = read_header(&mut self.file, offset, self.len).map_err(io)?
            else {
                break;
            };
            number += 1;
            if number > after {
                let payload = read_at(&mut self.file, offset + 8, len).map_err(io)?;
                let damaged = |problem: String| JournalError::Damaged {
                    path: self.path.clone(),
                    offset,
                    problem,
                };
                if crc32(&payload) != crc {
                    return Err(damaged("checksum mismatch".to_string()));
                }
                let record = Record::decode(&payload).map_err(damaged)?;
                if record.number != number {
                    return Err(damaged(format!(
                        "record number {} where {number} was due",
                        record.number
                    )));
                }
                records.push(Located { offset, record });
            }
            offset += 8 + u64::from(len);
        }
        Ok(records)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // Makes the new file's name durable; on platforms where a folder cannot be opened this
    // way, the file's own sync is what there is.
    match File::open(dir) {
        Ok(handle) => handle.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

fn check_magic(file: &mut File, path: &Path) -> Result<(), JournalError> {
    let mut magic = [0u8; 8];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut magic))
        .map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            error: source,
        })?;
    if &magic != MAGIC {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The record header at `offset`, or `None` when fewer than 8 bytes are left.
fn read_header(file: &mut File, offset: u64, file_len: u64) -> std::io::Result<Option<(u32, u32)>> {
    if file_len - offset < 8 {
        return Ok(None);
    }
    let mut header = [0u8; 8];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut header)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    Ok(Some((len, crc)))
}

fn read_at(file: &mut File, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
    let mut payload = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut payload)?;
    Ok(payload)
}

fn count_records(file: &mut File, end: u64) -> std::io::Result<u64> {
    let mut offset = HEADER;
    let mut count = 0;
    while offset < end {
        let Some((len, _)) = read_header(file, offset, end)? else {
            break;
        };
        offset += 8 + u64::from(len);
        count += 1;
    }
    Ok(count)
}

/// Every record of a data directory's journal, each checksum and number checked. A torn last
/// record is left out (it was never acknowledged); damage anywhere else is an error. The whole
/// journal is held in memory: [`for_each`] reads one record at a time.
pub fn read_all(data_dir: &Path) -> Result<Vec<Located>, JournalError> {
    let mut records = Vec::new();
    for_each(data_dir, |entry| {
        records.push(entry);
        Ok::<(), JournalError>(())
    })?;
    Ok(records)
}

/// Reads a data directory's journal one record at a time, as [`read_all`] checks them, and
/// hands each to `each`: a rebuild or a check of a province's journal needs one record in
/// memory, not the journal. Returns how many records there were.
pub fn for_each<E: From<JournalError>>(
    data_dir: &Path,
    each: impl FnMut(Located) -> Result<(), E>,
) -> Result<u64, E> {
    let path = Journal::path_in(data_dir);
    let io = |source| JournalError::Io {
        path: path.clone(),
        error: source,
    };
    let file = File::open(&path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    read_records(reader, len, each).map_err(|error| match error {
        ReadError::Io(source) => E::from(io(source)),
        ReadError::NotAJournal => E::from(JournalError::NotAJournal { path: path.clone() }),
        ReadError::Damaged(offset, problem) => E::from(JournalError::Damaged {
            path: path.clone(),
            offset,
            problem,
        }),
        ReadError::Stopped(error) => error,
    })
}

/// Parses a whole journal file. The error names the offset of the damage (`None`: the mark).
pub fn parse(bytes: &[u8]) -> Result<Vec<Located>, (Option<u64>, String)> {
    let mut records = Vec::new();
    let read = read_records(bytes, bytes.len() as u64, |entry| {
        records.push(entry);
        Ok::<(), std::convert::Infallible>(())
    });
    match read {
        Ok(_) => Ok(records),
        Err(ReadError::NotAJournal) => Err((None, "no journal mark".to_string())),
        Err(ReadError::Damaged(offset, problem)) => Err((Some(offset), problem)),
        Err(ReadError::Io(error)) => Err((None, error.to_string())),
        Err(ReadError::Stopped(never)) => match never {},
    }
}

/// Why reading records stopped early.
enum ReadError<E> {
    Io(std::io::Error),
    NotAJournal,
    Damaged(u64, String),
    /// The caller's own error, from handling a record.
    Stopped(E),
}

/// Reads the records of a journal of `len` bytes from `reader`, checking each, and hands each
/// to `each`. A torn last record ends the journal; damage before it is an error.
fn read_records<E>(
    mut reader: impl Read,
    len: u64,
    mut each: impl FnMut(Located) -> Result<(), E>,
) -> Result<u64, ReadError<E>> {
    if len < HEADER {
        return Ok(0);
    }
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(ReadError::Io)?;
    if &magic != MAGIC {
        return Err(ReadError::NotAJournal);
    }
    let mut at = HEADER;
    let mut count = 0u64;
    while at < len {
        let rest = len - at;
        if rest < 8 {
            break; // a torn header
        }
        let mut header = [0u8; 8];
        reader.read_exact(&mut header).map_err(ReadError::Io)?;
        let payload_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if rest - 8 < u64::from(payload_len) {
            break; // a torn payload
        }
        // The length is within the bytes the file has, so this allocates no more than that.
        let mut payload = vec![0u8; payload_len as usize];
        reader.read_exact(&mut payload).map_err(ReadError::Io)?;
        let is_last = 8 + u64::from(payload_len) == rest;
        if crc32(&payload) != crc {
            if is_last {
                break; // a torn append that happened to reach the full length
            }
            return Err(ReadError::Damaged(at, "checksum mismatch".to_string()));
        }
        let record = Record::decode(&payload).map_err(|problem| ReadError::Damaged(at, problem))?;
        let expected = count + 1;
        if record.number != expected {
            return Err(ReadError::Damaged(
                at,
                format!("record number {} where {expected} was due", record.number),
            ));
        }
        each(Located { offset: at, record }).map_err(ReadError::Stopped)?;
        count += 1;
        at += 8 + u64::from(payload_len);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(n: u8) -> Vec<Write> {
        vec![(vec![b'h', n], Some(vec![n; 40])), (vec![b'm', b'x'], None)]
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_append_and_read_back_across_reopens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, opened) = Journal::open(dir.path()).expect("open");
        assert_eq!(opened.records, 0);
        assert_eq!(journal.append(7, &writes(1)).expect("append"), 1);
        assert_eq!(journal.append(8, &writes(2)).expect("append"), 2);
        drop(journal);
        let (mut journal, opened) = Journal::open(dir.path()).expect("reopen");
        assert_eq!((opened.records, opened.torn_bytes), (2, 0));
        assert_eq!(journal.append(9, &writes(3)).expect("append"), 3);
        let records = read_all(dir.path()).expect("read");
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].record.writes, writes(2));
        assert_eq!(records[2].record.at_ms, 9);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_at_every_length() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _) = Journal::open(dir.path()).expect("open");
        journal.append(1, &writes(1)).expect("append");
        journal.append(2, &writes(2)).expect("append");
        drop(journal);
        let path = Journal::path_in(dir.path());
        let whole = std::fs::read(&path).expect("read");
        let first_end = 8 + 8 + u32::from_be_bytes(whole[8..12].try_into().expect("4")) as usize;
        for cut in first_end..whole.len() {
            std::fs::write(&path, &whole[..cut]).expect("write");
            let (journal, opened) = Journal::open(dir.path()).expect("a torn tail opens");
            assert_eq!(journal.last(), 1, "cut at {cut}");
            assert_eq!(opened.torn_bytes, (cut - first_end) as u64);
            assert_eq!(read_all(dir.path()).expect("read").len(), 1);
        }
        // A whole-length last record with a bad checksum is torn too.
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        std::fs::write(&path, &flipped).expect("write");
        let (journal, _) = Journal::open(dir.path()).expect("opens");
        assert_eq!(journal.last(), 1);
    }

    #[test]
    fn damage_before_the_last_record_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _) = Journal::open(dir.path()).expect("open");
        journal.append(1, &writes(1)).expect("append");
        journal.append(2, &writes(2)).expect("append");
        drop(journal);
        let path = Journal::path_in(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            read_all(dir.path()),
            Err(JournalError::Damaged { offset: 8, .. })
        ));
        std::fs::write(&path, b"not a journal at all").expect("write");
        assert!(matches!(
            Journal::open(dir.path()),
            Err(JournalError::NotAJournal { .. })
        ));
    }

    #[test]
    fn records_after_a_number_and_lying_lengths() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _) = Journal::open(dir.path()).expect("open");
        for n in 1..=4 {
            journal.append(i64::from(n), &writes(n)).expect("append");
        }
        let after = journal.records_after(2).expect("read");
        assert_eq!(
            after.iter().map(|r| r.record.number).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(after[1].record.writes, writes(4));
        assert!(journal.records_after(4).expect("read").is_empty());
        // A payload claiming four billion writes in a few bytes allocates nothing for them.
        let mut lying = vec![FORMAT];
        lying.extend_from_slice(&[0; 16]);
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Record::decode(&lying).is_err());
    }

    #[test]
    fn value_positions_point_at_the_values_in_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _) = Journal::open(dir.path()).expect("open");
        let mut expected = Vec::new();
        for n in 1..=3u8 {
            let writes = vec![
                (vec![b'r', n], Some(vec![n; 10 * usize::from(n)])),
                (vec![b'm'; usize::from(n)], None),
                (vec![b'k', n, n], Some(vec![n + 100; 3])),
            ];
            let positions = value_positions(journal.end(), &writes);
            journal.append(0, &writes).expect("append");
            expected.push(positions);
        }
        let bytes = std::fs::read(Journal::path_in(dir.path())).expect("read");
        let located = read_all(dir.path()).expect("read");
        assert_eq!(
            journal.records_after(0).expect("read again"),
            located,
            "the readers locate records alike"
        );
        assert_eq!(parse(&bytes), Ok(located.clone()));
        // A record's handler can stop the reading with its own error.
        let mut seen = 0;
        let stopped = for_each(dir.path(), |_| {
            seen += 1;
            Err(JournalError::NotAJournal {
                path: PathBuf::from("stop"),
            })
        });
        assert!(
            matches!(stopped, Err(JournalError::NotAJournal { path }) if path == Path::new("stop"))
        );
        assert_eq!(seen, 1);
        for (entry, positions) in located.iter().zip(&expected) {
            assert_eq!(&entry.value_positions(), positions);
            for ((_, value), position) in entry.record.writes.iter().zip(positions) {
                match (value, position) {
                    (Some(value), Some(at)) => {
                        let at = *at as usize;
                        assert_eq!(&bytes[at..at + value.len()], value.as_slice());
                    }
                    (None, None) => {}
                    other => panic!("a value and its position disagree: {other:?}"),
                }
            }
        }
    }
}
