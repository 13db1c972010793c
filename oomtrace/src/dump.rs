//! The dump format of `oomtrace record`, read back by `oomtrace report`.
//!
//! ```text
//! file    = MAGIC (8 bytes "OOMTRDMP") · version (u32 LE) · record*      (optionally gzip'd whole)
//! record  = len (u32 LE, bytes of body) · crc32 (u32 LE, of body) · body
//! body    = type (u8) · payload
//! ```
//! Types: 1 header (JSON: tool and format version, host, kernel, boot id, attach plan, options,
//! the monotonic → wall-clock reference), 2 event (the kernel's record bytes, as the ring buffer
//! carried them), 3 lost (u64 LE: events lost so far), 4 summary (JSON, periodic and closing),
//! 5 end (u64 LE: CLOCK_MONOTONIC ns when recording stopped cleanly), 6 memcg (u64 LE id · UTF-8
//! path: written before the first event naming that memcg, so replays elsewhere show paths).
//!
//! Records are appended and flushed as they come; every record is framed and checksummed, so a
//! `kill -9`, a full disk or a power cut leaves a file that reads up to its last complete record.
//! A reader reports where and what went wrong and keeps what it could read.

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::Path,
};

use flate2::{Compression, read::MultiGzDecoder, write::GzEncoder};
use serde_json::Value;

pub const MAGIC: &[u8; 8] = b"OOMTRDMP";
/// 1: kernel events only; death was read from the last thread entering exit.
/// 2: also the events userspace observes (`GroupExited`: the process finished exiting, which
///    is death; `PreExisting`), and a `death` key in the header. `report` judges a format-1
///    dump the old way and says so.
pub const FORMAT_VERSION: u32 = 2;
/// No record is larger than this; a longer length field is corruption.
pub const MAX_RECORD: u32 = 16 << 20;

pub const T_HEADER: u8 = 1;
pub const T_EVENT: u8 = 2;
pub const T_LOST: u8 = 3;
pub const T_SUMMARY: u8 = 4;
pub const T_END: u8 = 5;
pub const T_MEMCG: u8 = 6;

/// One record read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Header(Value),
    /// Raw kernel event bytes (decode with `Event::decode`).
    Event(Vec<u8>),
    Lost(u64),
    Summary(Value),
    End(u64),
    Memcg(u64, String),
}

enum Sink {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

/// Appends records to a dump file.
pub struct Writer {
    sink: Sink,
    file: File,
    bytes: u64,
}

impl Writer {
    /// Creates (or truncates) `path` with mode 0600 — dumps name processes — and writes the
    /// magic, the version and the header record.
    pub fn create(path: &Path, compress: bool, header: &Value) -> io::Result<Writer> {
        // Created new, never through a link, never over an existing file (see `outfile`).
        let file = crate::outfile::create_new(path)?;
        let buffered = BufWriter::new(file.try_clone()?);
        let sink = if compress {
            Sink::Gzip(GzEncoder::new(buffered, Compression::fast()))
        } else {
            Sink::Plain(buffered)
        };
        let mut w = Writer {
            sink,
            file,
            bytes: 0,
        };
        w.write_raw(MAGIC)?;
        w.write_raw(&FORMAT_VERSION.to_le_bytes())?;
        w.record(T_HEADER, header.to_string().as_bytes())?;
        w.flush()?;
        Ok(w)
    }

    fn write_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.bytes += b.len() as u64;
        match &mut self.sink {
            Sink::Plain(w) => w.write_all(b),
            Sink::Gzip(w) => w.write_all(b),
        }
    }

    /// Writes one framed record.
    pub fn record(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let mut body = Vec::with_capacity(1 + payload.len());
        body.push(kind);
        body.extend_from_slice(payload);
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        self.write_raw(&frame)
    }

    pub fn event(&mut self, raw: &[u8]) -> io::Result<()> {
        self.record(T_EVENT, raw)
    }

    pub fn memcg(&mut self, id: u64, path: &str) -> io::Result<()> {
        let mut p = id.to_le_bytes().to_vec();
        p.extend_from_slice(path.as_bytes());
        self.record(T_MEMCG, &p)
    }

    pub fn lost(&mut self, total: u64) -> io::Result<()> {
        self.record(T_LOST, &total.to_le_bytes())
    }

    pub fn summary(&mut self, summary: &Value) -> io::Result<()> {
        self.record(T_SUMMARY, summary.to_string().as_bytes())
    }

    /// Pushes buffered records to the file (a sync flush for gzip: readable up to here).
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }

    /// Flushes and asks the disk to keep it (power cuts).
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }

    /// Bytes written before compression.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the end record and closes the file.
    pub fn finish(mut self, end_ns: u64) -> io::Result<()> {
        self.record(T_END, &end_ns.to_le_bytes())?;
        match self.sink {
            Sink::Plain(mut w) => w.flush()?,
            Sink::Gzip(w) => {
                w.finish()?.flush()?;
            }
        }
        self.file.sync_data()
    }
}

/// Why reading stopped early or skipped something: what, and at which byte of the
/// (decompressed) stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpProblem {
    /// Not a dump at all.
    #[error("not an oomtrace dump (bad magic)")]
    BadMagic,
    /// Written by a newer format.
    #[error("dump format version {0} is newer than this oomtrace reads ({FORMAT_VERSION})")]
    Version(u32),
    /// The stream ends inside a record: the recorder was killed or the disk filled.
    #[error("truncated at byte {offset}: {what}")]
    Truncated { offset: u64, what: String },
    /// A record's checksum or framing is wrong.
    #[error("corrupt record at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
}

enum Source {
    Plain(BufReader<File>),
    Gzip(Box<BufReader<MultiGzDecoder<BufReader<File>>>>),
    Memory(io::Cursor<Vec<u8>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(r) => r.read(buf),
            Source::Gzip(r) => r.read(buf),
            Source::Memory(r) => r.read(buf),
        }
    }
}

/// Reads records one by one; problems are collected, never panics.
pub struct Reader {
    src: Source,
    offset: u64,
    pub problems: Vec<DumpProblem>,
    done: bool,
    /// Whether an end record was seen (a clean stop).
    pub clean_end: bool,
}

/// Reads until `buf` is full or the stream ends; returns how much was read (errors of a cut
/// compressed stream count as its end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

impl Reader {
    pub fn open(path: &Path) -> io::Result<Reader> {
        let mut file = File::open(path)?;
        let mut magic = [0u8; 2];
        let n = file.read(&mut magic)?;
        drop(file);
        let file = File::open(path)?;
        let src = if n == 2 && magic == [0x1f, 0x8b] {
            Source::Gzip(Box::new(BufReader::with_capacity(
                1 << 16,
                MultiGzDecoder::new(BufReader::new(file)),
            )))
        } else {
            Source::Plain(BufReader::with_capacity(1 << 16, file))
        };
        Ok(Reader::start(src))
    }

    /// A reader over bytes in memory (tests).
    pub fn from_bytes(bytes: Vec<u8>) -> Reader {
        Reader::start(Source::Memory(io::Cursor::new(bytes)))
    }

    fn start(mut src: Source) -> Reader {
        let mut r = Reader {
            src: Source::Memory(io::Cursor::new(Vec::new())),
            offset: 0,
            problems: Vec::new(),
            done: false,
            clean_end: false,
        };
        let mut head = [0u8; 12];
        let (n, _) = read_full(&mut src, &mut head);
        r.src = src;
        r.offset = n as u64;
        if n < 12 || &head[..8] != MAGIC {
            r.problems.push(if n >= 8 && &head[..8] == MAGIC {
                DumpProblem::Truncated {
                    offset: n as u64,
                    what: "in the file header".into(),
                }
            } else {
                DumpProblem::BadMagic
            });
            r.done = true;
            return r;
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if version > FORMAT_VERSION {
            r.problems.push(DumpProblem::Version(version));
            r.done = true;
        }
        r
    }

    /// The next record, or `None` at the end (check `problems` for why it ended).
    pub fn next_record(&mut self) -> Option<Record> {
        loop {
            if self.done {
                return None;
            }
            let at = self.offset;
            let mut frame = [0u8; 8];
            let (n, err) = read_full(&mut self.src, &mut frame);
            self.offset += n as u64;
            if n == 0 && err.is_none() {
                self.done = true;
                if !self.clean_end {
                    self.problems.push(DumpProblem::Truncated {
                        offset: at,
                        what: "no end record: the recorder did not stop cleanly".into(),
                    });
                }
                return None;
            }
            if n < 8 {
                return self.stop_truncated(at, "inside a record header", err);
            }
            let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if len == 0 || len > MAX_RECORD {
                self.problems.push(DumpProblem::Corrupt {
                    offset: at,
                    what: format!(
                        "impossible record length {len}; nothing after it can be trusted"
                    ),
                });
                self.done = true;
                return None;
            }
            // Type byte and payload are read apart so the payload is the one allocation.
            let mut kind = [0u8; 1];
            let (n0, err) = read_full(&mut self.src, &mut kind);
            let mut payload = vec![0u8; len as usize - 1];
            let (n1, err) = if n0 == 1 {
                read_full(&mut self.src, &mut payload)
            } else {
                (0, err)
            };
            let n = n0 + n1;
            self.offset += n as u64;
            if n < len as usize {
                return self.stop_truncated(at, &format!("record of {len} bytes has {n}"), err);
            }
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&kind);
            hasher.update(&payload);
            if hasher.finalize() != crc {
                // The frame length is plausible: skip this record and go on.
                self.problems.push(DumpProblem::Corrupt {
                    offset: at,
                    what: format!("checksum mismatch in a {len}-byte record (skipped)"),
                });
                continue;
            }
            let u64_of = |p: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(p.try_into().ok()?)) };
            let rec = match kind[0] {
                T_HEADER | T_SUMMARY => match serde_json::from_slice::<Value>(&payload) {
                    Ok(v) if kind[0] == T_HEADER => Some(Record::Header(v)),
                    Ok(v) => Some(Record::Summary(v)),
                    Err(e) => {
                        self.corrupt(at, &format!("unreadable JSON: {e}"));
                        None
                    }
                },
                T_EVENT => Some(Record::Event(payload)),
                T_LOST => u64_of(&payload).map(Record::Lost),
                T_MEMCG if payload.len() >= 8 => Some(Record::Memcg(
                    u64_of(&payload[..8]).unwrap_or(0),
                    String::from_utf8_lossy(&payload[8..]).into_owned(),
                )),
                T_END => u64_of(&payload).map(|t| {
                    self.clean_end = true;
                    Record::End(t)
                }),
                other => {
                    self.corrupt(at, &format!("unknown record type {other} (skipped)"));
                    None
                }
            };
            if let Some(r) = rec {
                return Some(r);
            }
        }
    }

    fn corrupt(&mut self, offset: u64, what: &str) {
        self.problems.push(DumpProblem::Corrupt {
            offset,
            what: what.to_string(),
        });
    }

    fn stop_truncated(&mut self, at: u64, what: &str, err: Option<io::Error>) -> Option<Record> {
        let what = match err {
            Some(e) => format!("{what} ({e})"),
            None => what.to_string(),
        };
        self.problems
            .push(DumpProblem::Truncated { offset: at, what });
        self.done = true;
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scratch::ScratchDir;

    fn sample(compress: bool) -> Vec<u8> {
        let scratch = ScratchDir::new("dump");
        let dir = scratch.join("sample.dump");
        let mut w = Writer::create(&dir, compress, &json!({"format": 1, "host": "h"})).unwrap();
        for i in 0..50u8 {
            w.event(&[i; 60]).unwrap();
        }
        w.lost(3).unwrap();
        w.summary(&json!({"kills": 1})).unwrap();
        w.finish(99).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&dir).unwrap().permissions(),
        ) & 0o777;
        assert_eq!(mode, 0o600, "dumps name processes: owner-only");
        std::fs::read(&dir).unwrap()
    }

    fn read_all(r: &mut Reader) -> Vec<Record> {
        std::iter::from_fn(|| r.next_record()).collect()
    }

    #[test]
    fn round_trip_plain_and_gzip() {
        for compress in [false, true] {
            let mut r = Reader::from_bytes(sample(compress));
            if compress {
                // from_bytes does not decompress; go through a file like users do.
                let scratch = ScratchDir::new("dump-gz");
                let path = scratch.join("sample.dump.gz");
                std::fs::write(&path, sample(true)).unwrap();
                r = Reader::open(&path).unwrap();
            }
            let recs = read_all(&mut r);
            assert_eq!(recs.len(), 1 + 50 + 3, "compress={compress}");
            assert!(matches!(&recs[0], Record::Header(h) if h["host"] == "h"));
            assert_eq!(recs[1], Record::Event(vec![0; 60]));
            assert_eq!(recs[51], Record::Lost(3));
            assert_eq!(recs[53], Record::End(99));
            assert!(r.problems.is_empty(), "{:?}", r.problems);
            assert!(r.clean_end);
        }
    }

    #[test]
    fn a_cut_dump_reads_up_to_its_last_complete_record() {
        let full = sample(false);
        // Cut inside the 11th event record.
        let cut = 12 + (8 + 1 + 23) + 10 * (8 + 61) + 20;
        let mut r = Reader::from_bytes(full[..cut].to_vec());
        let recs = read_all(&mut r);
        assert_eq!(recs.len(), 1 + 10);
        assert!(
            matches!(&r.problems[..], [DumpProblem::Truncated { .. }]),
            "{:?}",
            r.problems
        );
        assert!(!r.clean_end);
    }

    #[test]
    fn a_corrupted_record_is_skipped_and_located() {
        let mut bytes = sample(false);
        let third_event = 12 + (8 + 1 + 23) + 2 * (8 + 61);
        bytes[third_event + 30] ^= 0xff;
        let mut r = Reader::from_bytes(bytes);
        let recs = read_all(&mut r);
        assert_eq!(recs.len(), 1 + 49 + 3);
        assert_eq!(
            r.problems,
            [DumpProblem::Corrupt {
                offset: third_event as u64,
                what: "checksum mismatch in a 61-byte record (skipped)".into()
            }]
        );
    }

    #[test]
    fn not_a_dump() {
        let mut r = Reader::from_bytes(b"hello world, not a dump".to_vec());
        assert!(r.next_record().is_none());
        assert_eq!(r.problems, [DumpProblem::BadMagic]);
        let mut future = sample(false);
        future[8] = 9;
        let mut r = Reader::from_bytes(future);
        assert!(r.next_record().is_none());
        assert_eq!(r.problems, [DumpProblem::Version(9)]);
    }

    /// Random cuts and corruptions: never a panic, always a located problem or a clean read.
    #[test]
    fn random_cuts_and_corruptions_never_panic() {
        let full = sample(false);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut bytes = full.clone();
            match next() % 3 {
                0 => bytes.truncate((next() as usize) % full.len()),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % bytes.len();
                        bytes[i] = next() as u8;
                    }
                }
                _ => {
                    let i = (next() as usize) % bytes.len();
                    bytes.truncate(i);
                    bytes.extend((0..next() % 64).map(|_| next() as u8));
                }
            }
            let mut r = Reader::from_bytes(bytes.clone());
            let recs = read_all(&mut r);
            assert!(recs.len() <= 54);
            if bytes != full {
                let intact = r.problems.is_empty() && r.clean_end && recs.len() == 54;
                assert!(
                    !intact || bytes.len() >= full.len(),
                    "damage went unnoticed"
                );
            }
            for p in &r.problems {
                if let DumpProblem::Truncated { offset, .. } | DumpProblem::Corrupt { offset, .. } =
                    p
                {
                    assert!(*offset <= bytes.len() as u64);
                }
            }
        }
    }
}
