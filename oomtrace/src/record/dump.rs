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
//! path: written before the first event naming that memcg, so replays elsewhere show paths),
//! 7 symbol (u64 LE kernel address · UTF-8 `name+0xoff`: written before the first allocation
//! stack naming that address, which the event keeps raw, so replays name the frames as the
//! recording host's /proc/kallsyms did), 8 drained (u64 LE: CLOCK_MONOTONIC ns of a live
//! tick, written after a full read of the ring buffer: every kernel record stamped before
//! then that was not lost is before this record, so a replay judges time there as live did;
//! format 3).
//!
//! Records are appended and flushed as they come; every record is framed and checksummed, so a
//! `kill -9`, a full disk or a power cut leaves a file that reads up to its last complete record.
//! A reader reports where and what went wrong and keeps what it could read: damage in a gzip
//! dump is located in the compressed file and every record decompressed before it is kept; the
//! header is recognized strictly (never another record taken for it); no length field makes it
//! allocate more than the bytes actually there, and memcg paths are bounded ([`MAX_MEMCG_PATH`],
//! [`MAX_MEMCG_RECORDS`], [`MAX_MEMCG_BYTES`]).

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Read, Write},
    path::Path,
};

use flate2::{Compression, Decompress, FlushDecompress, Status, write::GzEncoder};
use serde_json::Value;

pub(crate) const MAGIC: &[u8; 8] = b"OOMTRDMP";
/// 1: kernel events only; death was read from the last thread entering exit.
/// 2: also the events userspace observes (`GroupExited`: the process finished exiting, which
///    is death; `PreExisting`), and a `death` key in the header. `report` judges a format-1
///    dump the old way and says so.
/// 3: also a drained record at each of the recorder's ticks (a full read of the ring): a
///    replay judges time only there, as `watch` did. Dumps without them (format 2, or ones
///    not written by a live recorder) are judged at each record's time, as before.
pub(crate) const FORMAT_VERSION: u32 = 3;
/// No record is larger than this; a longer length field is corruption.
pub(crate) const MAX_RECORD: u32 = 16 << 20;

pub(crate) const T_HEADER: u8 = 1;
pub(crate) const T_EVENT: u8 = 2;
pub(crate) const T_LOST: u8 = 3;
pub(crate) const T_SUMMARY: u8 = 4;
pub(crate) const T_END: u8 = 5;
pub(crate) const T_MEMCG: u8 = 6;
pub(crate) const T_SYMBOL: u8 = 7;
pub(crate) const T_DRAINED: u8 = 8;

/// One record read back (the header is read apart: [`Reader::header`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Raw kernel event bytes (decode with `Event::decode`).
    Event(Vec<u8>),
    Lost(u64),
    Summary(Value),
    End(u64),
    Memcg(u64, String),
    /// A kernel address and its name (`name+0xoff`).
    Symbol(u64, String),
    /// A live tick after a full read of the ring buffer, at this CLOCK_MONOTONIC ns.
    Drained(u64),
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
        let file = crate::record::outfile::create_new(path)?;
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
    pub(crate) fn record(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
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

    pub(crate) fn symbol(&mut self, addr: u64, name: &str) -> io::Result<()> {
        let mut p = addr.to_le_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        self.record(T_SYMBOL, &p)
    }

    pub fn lost(&mut self, total: u64) -> io::Result<()> {
        self.record(T_LOST, &total.to_le_bytes())
    }

    /// A live tick at `now_ns`, after a full read of the ring buffer (see [`Record::Drained`]).
    pub fn drained(&mut self, now_ns: u64) -> io::Result<()> {
        self.record(T_DRAINED, &now_ns.to_le_bytes())
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
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }

    /// Bytes written before compression.
    pub(crate) fn bytes(&self) -> u64 {
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
    /// The header record (the first one) is missing or damaged: the replay goes on without
    /// it, so wall-clock times and the recorded options are unknown.
    #[error(
        "no usable header record at byte {offset}: {what}; replayed without it (wall-clock \
         times and recorded options unknown)"
    )]
    Header { offset: u64, what: String },
    /// The gzip layer is damaged: `offset` is a byte of the compressed file. Every record
    /// decompressed before that point was read.
    #[error("gzip stream corrupt at byte {offset} of the compressed file: {what}")]
    Gzip { offset: u64, what: String },
}

/// A memcg path longer than this (Linux's PATH_MAX) is a damaged record.
pub const MAX_MEMCG_PATH: usize = 4096;
/// At most this many memcg records are kept from one dump...
pub const MAX_MEMCG_RECORDS: u64 = 1 << 16;
/// A kernel symbol name (with its offset and module) longer than this is a damaged record.
pub(crate) const MAX_SYMBOL_NAME: usize = 1024;
/// At most this many symbol records are kept from one dump.
pub(crate) const MAX_SYMBOL_RECORDS: u64 = 1 << 16;
/// ... and at most this many bytes of their paths.
pub(crate) const MAX_MEMCG_BYTES: u64 = 16 << 20;
/// A header or summary record (JSON) larger than this is a damaged record.
pub(crate) const MAX_JSON_RECORD: usize = 1 << 20;

/// Why a gzip stream stopped: where (a byte of the compressed input) and what; `cut` when the
/// input simply ends (a recorder killed mid-write), not damage.
#[derive(Debug, Clone)]
struct GzFault {
    at: u64,
    what: String,
    cut: bool,
}

impl std::fmt::Display for GzFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gzip stream at byte {}: {}", self.at, self.what)
    }
}

impl std::error::Error for GzFault {}

impl GzFault {
    fn io(&self) -> io::Error {
        let kind = match self.cut {
            true => io::ErrorKind::UnexpectedEof,
            false => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self.clone())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GzState {
    Header,
    Body,
    Trailer,
    Done,
}

/// A gzip decoder (one member or several concatenated) that hands over every byte it
/// decompressed before damage, then fails with where (in the compressed input) and why.
/// flate2's `GzDecoder` drops the output of the read that failed and only says "corrupt
/// deflate stream", so one flipped bit used to lose a whole dump.
struct Gunzip<R> {
    inner: R,
    inflate: Decompress,
    state: GzState,
    crc: crc32fast::Hasher,
    size: u32,
    /// Compressed bytes consumed so far.
    at: u64,
    members: u64,
    /// Sticky: once failed, every read returns this.
    failed: Option<GzFault>,
}

impl<R: BufRead> Gunzip<R> {
    fn new(inner: R) -> Gunzip<R> {
        Gunzip {
            inner,
            inflate: Decompress::new(false),
            state: GzState::Header,
            crc: crc32fast::Hasher::new(),
            size: 0,
            at: 0,
            members: 0,
            failed: None,
        }
    }

    fn fault(&self, at: u64, what: impl Into<String>, cut: bool) -> GzFault {
        GzFault {
            at,
            what: what.into(),
            cut,
        }
    }

    /// The next compressed byte, `None` at the end of the input.
    fn byte(&mut self) -> Result<Option<u8>, GzFault> {
        let at = self.at;
        let buf = self.inner.fill_buf().map_err(|e| GzFault {
            at,
            what: format!("reading: {e}"),
            cut: false,
        })?;
        let Some(&b) = buf.first() else {
            return Ok(None);
        };
        self.inner.consume(1);
        self.at += 1;
        Ok(Some(b))
    }

    fn need(&mut self, what: &str) -> Result<u8, GzFault> {
        self.byte()?
            .ok_or_else(|| self.fault(self.at, format!("cut inside {what}"), true))
    }

    /// Reads a member header; `false` at a clean end of input after the last member.
    fn header(&mut self) -> Result<bool, GzFault> {
        let start = self.at;
        let Some(id1) = self.byte()? else {
            return match self.members {
                0 => Err(self.fault(start, "empty input", true)),
                _ => Ok(false),
            };
        };
        let id2 = self.need("the gzip header")?;
        if [id1, id2] != [0x1f, 0x8b] {
            let what = match self.members {
                0 => "not a gzip stream".to_string(),
                n => format!("the bytes after gzip member {n} are not another gzip member"),
            };
            return Err(self.fault(start, what, false));
        }
        let method = self.need("the gzip header")?;
        if method != 8 {
            return Err(self.fault(
                start,
                format!("compression method {method} is not deflate"),
                false,
            ));
        }
        let flags = self.need("the gzip header")?;
        if flags & 0xe0 != 0 {
            return Err(self.fault(
                start,
                format!("reserved header flags set ({flags:#04x})"),
                false,
            ));
        }
        for _ in 0..6 {
            self.need("the gzip header")?; // mtime, extra flags, OS
        }
        if flags & 0x04 != 0 {
            let len =
                u16::from_le_bytes([self.need("the gzip header")?, self.need("the gzip header")?]);
            for _ in 0..len {
                self.need("the gzip header's extra field")?;
            }
        }
        for (flag, what) in [
            (0x08, "the gzip header's file name"),
            (0x10, "the gzip header's comment"),
        ] {
            if flags & flag != 0 {
                while self.need(what)? != 0 {}
            }
        }
        if flags & 0x02 != 0 {
            self.need("the gzip header")?;
            self.need("the gzip header")?;
        }
        self.inflate.reset(false);
        self.crc = crc32fast::Hasher::new();
        self.size = 0;
        self.members += 1;
        Ok(true)
    }

    fn trailer(&mut self) -> Result<(), GzFault> {
        let start = self.at;
        let mut t = [0u8; 8];
        for b in &mut t {
            *b = self.need("the gzip trailer")?;
        }
        let (crc, size) = (
            u32::from_le_bytes([t[0], t[1], t[2], t[3]]),
            u32::from_le_bytes([t[4], t[5], t[6], t[7]]),
        );
        let computed = std::mem::take(&mut self.crc).finalize();
        if crc != computed {
            let what = format!(
                "CRC-32 mismatch at the end of member {} (stored {crc:#010x}, computed \
                 {computed:#010x}): some decompressed data is wrong",
                self.members
            );
            return Err(self.fault(start, what, false));
        }
        if size != self.size {
            let what = format!(
                "length mismatch at the end of member {} (stored {size}, decompressed {})",
                self.members, self.size
            );
            return Err(self.fault(start, what, false));
        }
        Ok(())
    }

    /// Inflates into `buf`; `Ok(0)` only when the member's data ended (or no progress).
    fn body(&mut self, buf: &mut [u8]) -> Result<usize, GzFault> {
        let at = self.at;
        let input = self.inner.fill_buf().map_err(|e| GzFault {
            at,
            what: format!("reading: {e}"),
            cut: false,
        })?;
        let eof = input.is_empty();
        let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
        let res = self.inflate.decompress(input, buf, FlushDecompress::None);
        let consumed = (self.inflate.total_in() - in0) as usize;
        let produced = (self.inflate.total_out() - out0) as usize;
        self.inner.consume(consumed);
        self.at += consumed as u64;
        self.crc.update(&buf[..produced]);
        self.size = self.size.wrapping_add(produced as u32);
        match res {
            Ok(Status::StreamEnd) => self.state = GzState::Trailer,
            Err(e) => self.failed = Some(self.fault(self.at, format!("deflate data: {e}"), false)),
            Ok(_) if produced == 0 && eof => {
                self.failed = Some(self.fault(self.at, "cut inside the deflate data", true));
            }
            Ok(_) if produced == 0 && consumed == 0 => {
                self.failed = Some(self.fault(self.at, "deflate data: no progress", false));
            }
            Ok(_) => {}
        }
        Ok(produced)
    }
}

impl<R: BufRead> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(f) = &self.failed {
                return Err(f.io());
            }
            let step = match self.state {
                GzState::Done => return Ok(0),
                GzState::Header => self.header().map(|more| {
                    self.state = if more { GzState::Body } else { GzState::Done };
                    0
                }),
                GzState::Trailer => self.trailer().map(|()| {
                    self.state = GzState::Header;
                    0
                }),
                GzState::Body => self.body(buf),
            };
            match step {
                // What was decompressed before a failure is handed over first.
                Ok(n) if n > 0 => return Ok(n),
                Ok(_) => {}
                Err(f) => self.failed = Some(f),
            }
        }
    }
}

/// A byte source: plain, or gzip (recognized by its magic) decoded by [`Gunzip`]. Buffered
/// either way: [`Reader::next_frame`] parses a record in place when its buffer holds it whole.
fn source<R: BufRead + Send + 'static>(mut r: R) -> Box<dyn BufRead + Send> {
    let gzip = r.fill_buf().is_ok_and(|b| b.starts_with(&[0x1f, 0x8b]));
    if gzip {
        Box::new(BufReader::with_capacity(1 << 16, Gunzip::new(r)))
    } else {
        Box::new(r)
    }
}

/// Reads records one by one; problems are collected, never panics.
pub struct Reader {
    src: Box<dyn BufRead + Send>,
    offset: u64,
    /// The payload of the last frame read (reused: no allocation per record).
    payload: Vec<u8>,
    pub problems: Vec<DumpProblem>,
    done: bool,
    /// Whether an end record was seen (a clean stop).
    pub clean_end: bool,
    /// The header record, if the first record is one and is intact (see [`Reader::header`]).
    header: Option<Value>,
    /// A record read while looking for the header that is not one: handed out first.
    pending: Option<Record>,
    memcgs: u64,
    memcg_bytes: u64,
    memcgs_dropped: u64,
    symbols: u64,
    /// A fresh checksum, copied for each record: `Hasher::new` looks up the CPU's features
    /// each time (1.3 % of a replay's instructions).
    crc: crc32fast::Hasher,
}

/// One frame read: where it starts, its type and whether its checksum holds; its payload is
/// in [`Reader::payload`] until the next frame is read.
#[derive(Clone, Copy)]
struct Frame {
    at: u64,
    kind: u8,
    crc_ok: bool,
}

/// What [`Reader::next_borrowed`] hands out: an event's bytes, borrowed from the reader until
/// the next call (the replay decodes them at once: no copy, no allocation), or any other record.
#[derive(Debug, PartialEq)]
pub(crate) enum Next<'a> {
    Event(&'a [u8]),
    Record(Record),
}

/// Reads until `buf` is full or the stream ends; returns how much was read and the error
/// that ended it early, if any.
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

fn type_name(kind: u8) -> String {
    match kind {
        T_HEADER => "header".into(),
        T_EVENT => "event".into(),
        T_LOST => "lost".into(),
        T_SUMMARY => "summary".into(),
        T_END => "end".into(),
        T_MEMCG => "memcg".into(),
        T_SYMBOL => "symbol".into(),
        T_DRAINED => "drained".into(),
        other => format!("type-{other}"),
    }
}

/// The header record: who recorded the dump, where, and with what attach plan and options.
/// Written by `record`, read by `report`; every field but `version` and `clock` may be absent
/// from dumps of older versions (and reads as its default). `plan` and `environment` are kept
/// as recorded (they are shown, not interpreted, except through [`Header::attached`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Header {
    /// [`FORMAT_VERSION`] of the writer (absent before format 2: treated as 1).
    pub(crate) format: Option<u32>,
    /// oomtrace's version.
    pub(crate) version: String,
    pub(crate) hostname: String,
    pub(crate) kernel: String,
    pub(crate) boot_id: Option<String>,
    /// One entry per hook, as `watch --json`'s plan line has it.
    pub(crate) plan: Option<Value>,
    pub(crate) environment: Option<Value>,
    /// The page size in kB (memory sizes in events are in pages).
    pub(crate) page_kb: Option<u64>,
    pub options: HeaderOptions,
    /// How death was observed: `{"pidfd": true}` or `{"pidfd": false, "error": …}`; absent
    /// in format 1 (death taken at the last thread entering exit).
    pub(crate) death: Option<Death>,
    /// The recording kernel's gfp flag names (absent before they were recorded: replays
    /// decode with the built-in table then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gfp_names: Option<crate::kernel::gfp::GfpNames>,
    pub(crate) clock: HeaderClock,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HeaderOptions {
    pub timeout_ns: Option<u64>,
    pub(crate) release_timeout_ns: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Death {
    pub(crate) pidfd: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct HeaderClock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC when recording began (event times are monotonic).
    pub(crate) realtime_offset_ns: i64,
    pub(crate) monotonic_ns_at_start: Option<u64>,
}

impl Header {
    /// The typed view of a header record [`Reader::header`] accepted; a field of an unexpected
    /// type reads as its default rather than losing the whole header.
    pub(crate) fn from_value(v: &Value) -> Header {
        fn take<T: serde::de::DeserializeOwned + Default>(v: &Value, k: &str) -> T {
            v.get(k)
                .and_then(|f| serde_json::from_value(f.clone()).ok())
                .unwrap_or_default()
        }
        serde_json::from_value(v.clone()).unwrap_or_else(|_| Header {
            format: take(v, "format"),
            version: take(v, "version"),
            hostname: take(v, "hostname"),
            kernel: take(v, "kernel"),
            boot_id: take(v, "boot_id"),
            plan: take(v, "plan"),
            environment: take(v, "environment"),
            page_kb: take(v, "page_kb"),
            options: take(v, "options"),
            death: take(v, "death"),
            gfp_names: take(v, "gfp_names"),
            clock: take(v, "clock"),
        })
    }

    /// Whether the dump recorded its attach plan (older dumps did not).
    pub(crate) fn has_plan(&self) -> bool {
        self.plan.as_ref().is_some_and(Value::is_array)
    }

    /// Whether `hook` attached when the dump was recorded; `None` without a recorded plan.
    pub(crate) fn attached(&self, hook: &str) -> Option<bool> {
        let plan = self.plan.as_ref()?.as_array()?;
        Some(
            plan.iter()
                .find(|h| h["hook"] == hook)
                .is_some_and(|h| !h["attach"].is_null()),
        )
    }

    pub(crate) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The header's required fields, as every oomtrace that wrote dumps wrote them.
fn check_header(v: &Value) -> Result<(), String> {
    if !v.is_object() {
        return Err("the header JSON is not an object".into());
    }
    if !v["version"].is_string() {
        return Err("the header has no `version`".into());
    }
    if v["clock"]["realtime_offset_ns"].as_i64().is_none() {
        return Err("the header has no `clock.realtime_offset_ns`".into());
    }
    Ok(())
}

impl Reader {
    pub fn open(path: &Path) -> io::Result<Reader> {
        let file = File::open(path)?;
        Ok(Reader::start(source(BufReader::with_capacity(
            1 << 16,
            file,
        ))))
    }

    /// A reader over bytes in memory, plain or gzip'd.
    pub fn from_bytes(bytes: Vec<u8>) -> Reader {
        Reader::start(source(io::Cursor::new(bytes)))
    }

    fn start(src: Box<dyn BufRead + Send>) -> Reader {
        let mut r = Reader {
            src,
            offset: 0,
            payload: Vec::new(),
            problems: Vec::new(),
            done: false,
            clean_end: false,
            header: None,
            pending: None,
            memcgs: 0,
            memcg_bytes: 0,
            memcgs_dropped: 0,
            symbols: 0,
            crc: crc32fast::Hasher::new(),
        };
        let mut head = [0u8; 12];
        let (n, err) = read_full(&mut r.src, &mut head);
        r.offset = n as u64;
        if let Some(e) = err.filter(|e| gz_fault(e).is_some_and(|f| !f.cut)) {
            r.stop_on::<()>(0, "in the file header", Some(e));
            return r;
        }
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
            return r;
        }
        r.read_header();
        r
    }

    /// The header record: the first record, of the header type, intact, a JSON object with
    /// `version` and `clock.realtime_offset_ns`. Anything else is a [`DumpProblem::Header`],
    /// and a record that is not a header is not taken for one (it is read as what it is).
    pub fn header(&self) -> Option<&Value> {
        self.header.as_ref()
    }

    fn read_header(&mut self) {
        let Some(f) = self.next_frame() else {
            return;
        };
        let at = f.at;
        let what = if !f.crc_ok {
            format!(
                "the first record ({} bytes) fails its checksum: the header is damaged (skipped)",
                self.payload.len() + 1
            )
        } else if f.kind != T_HEADER {
            let what = format!(
                "the first record is a{} {} record, not the header",
                if f.kind == T_EVENT || f.kind == T_END {
                    "n"
                } else {
                    ""
                },
                type_name(f.kind)
            );
            self.pending = self.owned_record_of(f);
            what
        } else if self.payload.len() > MAX_JSON_RECORD {
            format!(
                "header JSON of {} bytes (at most {MAX_JSON_RECORD})",
                self.payload.len()
            )
        } else {
            match serde_json::from_slice::<Value>(&self.payload) {
                Err(e) => format!("unreadable header JSON: {e}"),
                Ok(v) => match check_header(&v) {
                    Ok(()) => {
                        self.header = Some(v);
                        return;
                    }
                    Err(e) => e,
                },
            }
        };
        self.problems.push(DumpProblem::Header { offset: at, what });
    }

    /// The next framed record with its checksum checked (its payload in `self.payload`), or
    /// `None` when reading stops (the reason is in `problems`).
    fn next_frame(&mut self) -> Option<Frame> {
        if self.done {
            return None;
        }
        let at = self.offset;
        // The common case: the buffer holds the whole record, which is checked and copied from
        // there (no read loop, no allocation).
        if let Ok(buf) = self.src.fill_buf()
            && let Some((frame, rest)) = buf.split_first_chunk::<8>()
        {
            let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if len != 0
                && len <= MAX_RECORD
                && let Some(body) = rest.get(..len as usize)
            {
                let mut hasher = self.crc.clone();
                hasher.update(body);
                let crc_ok = hasher.finalize() == crc;
                let kind = body[0];
                self.payload.clear();
                self.payload.extend_from_slice(&body[1..]);
                self.src.consume(8 + len as usize);
                self.offset += 8 + u64::from(len);
                return Some(Frame { at, kind, crc_ok });
            }
        }
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
            return self.stop_on(at, "inside a record header", err);
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if len == 0 || len > MAX_RECORD {
            self.problems.push(DumpProblem::Corrupt {
                offset: at,
                what: format!("impossible record length {len}; nothing after it can be trusted"),
            });
            self.done = true;
            return None;
        }
        let mut kind = [0u8; 1];
        let (n0, err) = read_full(&mut self.src, &mut kind);
        // The payload grows with what is actually there: a length field alone allocates nothing.
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        payload.reserve((len as usize - 1).min(1 << 16));
        let (n1, err) = match (n0, err) {
            (1, None) => match (&mut self.src)
                .take(u64::from(len) - 1)
                .read_to_end(&mut payload)
            {
                Ok(k) => (k, None),
                Err(e) => (payload.len(), Some(e)),
            },
            (_, err) => (0, err),
        };
        let n = n0 + n1;
        self.offset += n as u64;
        let mut hasher = self.crc.clone();
        hasher.update(&kind);
        hasher.update(&payload);
        self.payload = payload;
        if n < len as usize {
            return self.stop_on(at, &format!("record of {len} bytes has {n}"), err);
        }
        Some(Frame {
            at,
            kind: kind[0],
            crc_ok: hasher.finalize() == crc,
        })
    }

    /// The next record, or `None` at the end (check `problems` for why it ended).
    pub fn next_record(&mut self) -> Option<Record> {
        Some(match self.next_borrowed()? {
            Next::Event(raw) => Record::Event(raw.to_vec()),
            Next::Record(r) => r,
        })
    }

    /// The next record, an event's bytes borrowed (see [`Next`]), or `None` at the end (check
    /// `problems` for why it ended).
    pub(crate) fn next_borrowed(&mut self) -> Option<Next<'_>> {
        if let Some(r) = self.pending.take() {
            return Some(Next::Record(r));
        }
        loop {
            let f = self.next_frame()?;
            if !f.crc_ok {
                // The frame length is plausible: skip this record and go on.
                let len = self.payload.len() + 1;
                self.corrupt(
                    f.at,
                    &format!("checksum mismatch in a {len}-byte record (skipped)"),
                );
                continue;
            }
            if f.kind == T_HEADER {
                self.corrupt(f.at, "a second header record (ignored)");
                continue;
            }
            if f.kind == T_EVENT {
                return Some(Next::Event(&self.payload));
            }
            if let Some(r) = self.owned_record_of(f) {
                return Some(Next::Record(r));
            }
        }
    }

    /// The record an intact frame holds (its payload in `self.payload`), owned.
    fn owned_record_of(&mut self, f: Frame) -> Option<Record> {
        let payload = std::mem::take(&mut self.payload);
        let r = self.record_of(f, &payload);
        self.payload = payload;
        r
    }

    /// The record an intact frame holds, or `None` (and a problem) if its payload is wrong.
    fn record_of(&mut self, f: Frame, payload: &[u8]) -> Option<Record> {
        let Frame { at, kind, .. } = f;
        let u64_of = |p: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(p.try_into().ok()?)) };
        let wrong_size = |this: &mut Reader| {
            let what = format!(
                "{} record of {} bytes, expected 9 (skipped)",
                type_name(kind),
                payload.len() + 1
            );
            this.corrupt(at, &what);
            None
        };
        match kind {
            T_HEADER | T_SUMMARY if payload.len() > MAX_JSON_RECORD => {
                let what = format!(
                    "{} JSON of {} bytes (at most {MAX_JSON_RECORD}; skipped)",
                    type_name(kind),
                    payload.len()
                );
                self.corrupt(at, &what);
                None
            }
            // A header here is one `read_header` found out of place; `next_record` never
            // asks for one.
            T_HEADER => None,
            T_SUMMARY => match serde_json::from_slice::<Value>(payload) {
                Ok(v) => Some(Record::Summary(v)),
                Err(e) => {
                    self.corrupt(at, &format!("unreadable JSON: {e}"));
                    None
                }
            },
            T_EVENT => Some(Record::Event(payload.to_vec())),
            T_LOST => match u64_of(payload) {
                Some(n) => Some(Record::Lost(n)),
                None => wrong_size(self),
            },
            T_END => match u64_of(payload) {
                Some(t) => {
                    self.clean_end = true;
                    Some(Record::End(t))
                }
                None => wrong_size(self),
            },
            T_DRAINED => match u64_of(payload) {
                Some(t) => Some(Record::Drained(t)),
                None => wrong_size(self),
            },
            T_MEMCG => self.memcg(at, payload),
            T_SYMBOL => self.symbol(at, payload),
            other => {
                self.corrupt(at, &format!("unknown record type {other} (skipped)"));
                None
            }
        }
    }

    /// A memcg record within the bounds: a path of at most [`MAX_MEMCG_PATH`] bytes, and at
    /// most [`MAX_MEMCG_RECORDS`] records and [`MAX_MEMCG_BYTES`] of paths kept per dump.
    fn memcg(&mut self, at: u64, payload: &[u8]) -> Option<Record> {
        let Some((id, path)) = payload.split_first_chunk::<8>() else {
            let len = payload.len() + 1;
            self.corrupt(
                at,
                &format!("memcg record of {len} bytes has no 8-byte id (skipped)"),
            );
            return None;
        };
        if path.len() > MAX_MEMCG_PATH {
            let what = format!(
                "memcg record with a path of {} bytes (at most {MAX_MEMCG_PATH}; skipped)",
                path.len()
            );
            self.corrupt(at, &what);
            return None;
        }
        if self.memcgs >= MAX_MEMCG_RECORDS
            || self.memcg_bytes + path.len() as u64 > MAX_MEMCG_BYTES
        {
            if self.memcgs_dropped == 0 {
                let what = format!(
                    "more than {MAX_MEMCG_RECORDS} memcg records or {} MiB of memcg paths: \
                     this and later memcg records are dropped (their memcgs show by id)",
                    MAX_MEMCG_BYTES >> 20
                );
                self.corrupt(at, &what);
            }
            self.memcgs_dropped += 1;
            return None;
        }
        self.memcgs += 1;
        self.memcg_bytes += path.len() as u64;
        Some(Record::Memcg(
            u64::from_le_bytes(*id),
            String::from_utf8_lossy(path).into_owned(),
        ))
    }

    /// A symbol record within its bounds ([`MAX_SYMBOL_NAME`] bytes, [`MAX_SYMBOL_RECORDS`]
    /// kept per dump: later frames show as addresses).
    fn symbol(&mut self, at: u64, payload: &[u8]) -> Option<Record> {
        let Some((addr, name)) = payload.split_first_chunk::<8>() else {
            self.corrupt(at, "symbol record has no 8-byte address (skipped)");
            return None;
        };
        if name.len() > MAX_SYMBOL_NAME {
            self.corrupt(at, "symbol record with an overlong name (skipped)");
            return None;
        }
        if self.symbols >= MAX_SYMBOL_RECORDS {
            if self.symbols == MAX_SYMBOL_RECORDS {
                self.corrupt(
                    at,
                    &format!(
                        "more than {MAX_SYMBOL_RECORDS} symbol records: later ones are \
                         dropped (their frames show as addresses)"
                    ),
                );
            }
            self.symbols = MAX_SYMBOL_RECORDS + 1;
            return None;
        }
        self.symbols += 1;
        Some(Record::Symbol(
            u64::from_le_bytes(*addr),
            String::from_utf8_lossy(name).into_owned(),
        ))
    }

    fn corrupt(&mut self, offset: u64, what: &str) {
        self.problems.push(DumpProblem::Corrupt {
            offset,
            what: what.to_string(),
        });
    }

    /// Stops reading at `at` because of `err` (or the end of the input): damage in the gzip
    /// layer is reported as such, anything else as a truncation.
    fn stop_on<T>(&mut self, at: u64, what: &str, err: Option<io::Error>) -> Option<T> {
        self.done = true;
        let problem = match err.as_ref().and_then(gz_fault) {
            Some(f) if !f.cut => DumpProblem::Gzip {
                offset: f.at,
                what: format!(
                    "{}; the records before byte {at} of the decompressed stream were read",
                    f.what
                ),
            },
            Some(f) => DumpProblem::Truncated {
                offset: at,
                what: format!("{what} (the gzip stream is {}, at byte {})", f.what, f.at),
            },
            None => DumpProblem::Truncated {
                offset: at,
                what: match err {
                    Some(e) => format!("{what} ({e})"),
                    None => what.to_string(),
                },
            },
        };
        self.problems.push(problem);
        None
    }
}

/// The gzip fault inside an I/O error, if that is what it is.
fn gz_fault(e: &io::Error) -> Option<&GzFault> {
    e.get_ref()?.downcast_ref::<GzFault>()
}

#[cfg(test)]
mod tests;
